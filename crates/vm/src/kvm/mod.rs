//! Berth's own VMM on KVM, from rust-vmm crates (x86_64 Linux hosts).
//!
//! - `memory`: guest RAM (vm-memory `GuestMemoryMmap`) and the physical layout;
//! - `boot`: kernel (ELF vmlinux through its PVH note, or bzImage), initrd, command line, PVH
//!   start info / zero page, GDT, page tables, entry registers (linux-loader);
//! - `mptable`: the MP table that tells Linux about the vCPUs and the IOAPIC;
//! - `serial`: the console UART (vm-superio) on port 0x3f8;
//! - `mmio` + `virtio`: the virtio-mmio transport, the data disk (virtio-blk over the raw
//!   image) and the vsock device (virtio-queue, virtio-vsock) whose host side is the
//!   hybrid-vsock Unix socket of docs/VM.md;
//! - `vcpu`: CPUID/LAPIC setup and the run loop.
//!
//! The VMM runs inside the calling process: `run_vm` blocks until the guest ends the machine,
//! and `KvmBackend::start` runs it on a thread, so a long-running VM needs that process to
//! stay alive (the pid file says which process it is). There is no virtio-net and no
//! 9p/virtio-fs device yet: see docs/VM-BACKENDS.md.

pub mod boot;
pub mod memory;
pub mod mmio;
pub mod mptable;
pub mod serial;
pub mod vcpu;
pub mod virtio;

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::thread::JoinHandleExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};
use boot::EntryPoint;
use mmio::{MmioBus, MmioTransport};
use serial::{IrqTrigger, SerialConsole, SERIAL_IRQ};
use vcpu::{Devices, VcpuExitReason};
use virtio::block::BlockDevice;
use virtio::vsock::VsockDevice;
use virtio::{Interrupt, VirtioDevice};

/// The only KVM API version there has ever been (KVM_GET_API_VERSION).
pub const KVM_API_VERSION: i32 = 12;
const PID_FILE: &str = "kvm.pid";

fn kvm_err(what: &str, e: kvm_ioctls::Error) -> VmError {
    VmError::Io {
        what: what.to_string(),
        source: e.into(),
    }
}

/// Open /dev/kvm and check what the VMM relies on.
pub fn open_kvm() -> VmResult<Kvm> {
    let kvm = Kvm::new().map_err(|e| {
        VmError::Unavailable(format!(
            "cannot open /dev/kvm: {} (is KVM enabled, and may this user use it?)",
            std::io::Error::from(e)
        ))
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(VmError::Unavailable(format!(
            "KVM API version {version}, expected {KVM_API_VERSION}"
        )));
    }
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::Pit2, "KVM_CAP_PIT2"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::Unavailable(format!("KVM lacks {name}")));
        }
    }
    Ok(kvm)
}

/// A VM with memory and nothing else yet: what `Vmm` builds on, and what tests run tiny guest
/// programs in.
pub struct Machine {
    pub kvm: Kvm,
    pub vm: VmFd,
    pub mem: Arc<GuestMemoryMmap>,
}

impl Machine {
    /// `irqchip`: create the in-kernel PIC/IOAPIC/LAPIC and PIT (Linux needs them; with them a
    /// `hlt` no longer exits to the VMM, so tiny test guests go without).
    pub fn new(mem_bytes: u64, irqchip: bool) -> VmResult<Machine> {
        let kvm = Kvm::new().map_err(|e| kvm_err("opening /dev/kvm", e))?;
        let vm = kvm.create_vm().map_err(|e| kvm_err("KVM_CREATE_VM", e))?;
        vm.set_tss_address(memory::KVM_TSS_ADDRESS as usize)
            .map_err(|e| kvm_err("KVM_SET_TSS_ADDR", e))?;
        if irqchip {
            vm.create_irq_chip()
                .map_err(|e| kvm_err("KVM_CREATE_IRQCHIP", e))?;
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit)
                .map_err(|e| kvm_err("KVM_CREATE_PIT2", e))?;
        }
        let mem = memory::create_guest_memory(mem_bytes)?;
        memory::register_memory(&vm, &mem)?;
        Ok(Machine { kvm, vm, mem })
    }

    pub fn create_vcpu(&self, id: u8) -> VmResult<VcpuFd> {
        self.vm
            .create_vcpu(u64::from(id))
            .map_err(|e| kvm_err("KVM_CREATE_VCPU", e))
    }

    /// An eventfd that raises `gsi` when written.
    pub fn irqfd(&self, gsi: u32) -> VmResult<EventFd> {
        let fd = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::Io {
            what: "eventfd".into(),
            source: e,
        })?;
        self.vm
            .register_irqfd(&fd, gsi)
            .map_err(|e| kvm_err("KVM_IRQFD", e))?;
        Ok(fd)
    }
}

/// A configured VM ready to run: kernel loaded, devices attached, vCPUs set up.
pub struct Vmm {
    machine: Machine,
    vcpus: Vec<VcpuFd>,
    devices: Arc<Devices>,
    vsock: Arc<Mutex<VsockDevice>>,
    entry: EntryPoint,
}

impl Vmm {
    /// Everything short of running: errors here (missing kernel, no KVM) are the caller's.
    pub fn build(cfg: &VmConfig) -> VmResult<Vmm> {
        open_kvm()?;
        let cpus = u8::try_from(cfg.cpus)
            .ok()
            .filter(|c| (1..=mptable::MAX_CPUS).contains(c))
            .ok_or_else(|| {
                VmError::Other(format!(
                    "{} vCPUs: this VMM supports 1 to {}",
                    cfg.cpus,
                    mptable::MAX_CPUS
                ))
            })?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| VmError::Io {
            what: format!("creating {}", cfg.state_dir.display()),
            source: e,
        })?;
        let machine = Machine::new(u64::from(cfg.memory_mib) << 20, true)?;
        let mem = machine.mem.clone();

        let kernel = boot::load_kernel(&mem, &cfg.kernel)?;
        let initrd = boot::load_initrd(&mem, &cfg.initrd, kernel.kernel_end)?;

        let console = File::create(cfg.console_log()).map_err(|e| VmError::Io {
            what: format!("creating {}", cfg.console_log().display()),
            source: e,
        })?;
        let serial = SerialConsole::new(
            Box::new(console),
            IrqTrigger::new(Some(machine.irqfd(SERIAL_IRQ)?)),
        );

        // virtio-mmio slots in order: the data disk first (so it is /dev/vda), then vsock.
        ensure_data_disk(cfg)?;
        let block: Arc<Mutex<dyn VirtioDevice>> =
            Arc::new(Mutex::new(BlockDevice::new(&cfg.data_disk)?));
        let vsock = Arc::new(Mutex::new(VsockDevice::new(
            cfg.guest_cid,
            &cfg.vsock_socket(),
        )?));
        let mut bus = MmioBus::default();
        let mut slots = Vec::new();
        let devices: [Arc<Mutex<dyn VirtioDevice>>; 2] = [block, vsock.clone()];
        for (i, dev) in devices.into_iter().enumerate() {
            let base = memory::VIRTIO_MMIO_BASE + i as u64 * memory::VIRTIO_MMIO_SIZE;
            let irq = memory::VIRTIO_IRQ_BASE + i as u32;
            let interrupt = Arc::new(Interrupt::new(Some(machine.irqfd(irq)?)));
            let transport = MmioTransport::new(dev, mem.clone(), interrupt);
            bus.insert(
                base,
                memory::VIRTIO_MMIO_SIZE,
                Arc::new(Mutex::new(transport)),
            );
            slots.push((base, irq));
        }

        let cmdline = boot::build_cmdline(&cfg.cmdline, &slots)?;
        let cmdline_len = boot::write_cmdline(&mem, &cmdline)?;
        match kernel.entry {
            EntryPoint::Pvh(_) => boot::write_pvh_start_info(&mem, Some(initrd))?,
            EntryPoint::Linux64(_) => {
                boot::write_zero_page(&mem, kernel.setup_header, cmdline_len, Some(initrd))?
            }
        }
        mptable::setup(&mem, cpus)?;

        let mut vcpus = Vec::with_capacity(cpus as usize);
        for id in 0..cpus {
            let fd = machine.create_vcpu(id)?;
            vcpu::setup_cpuid(&machine.kvm, &fd, id, cpus)?;
            vcpu::setup_lapic(&fd)?;
            // Application processors wait for the kernel's INIT/SIPI; only the BSP starts here.
            if id == 0 {
                vcpu::setup_boot_vcpu(&fd, &mem, kernel.entry)?;
            }
            vcpus.push(fd);
        }
        Ok(Vmm {
            machine,
            vcpus,
            devices: Arc::new(Devices {
                serial: Mutex::new(serial),
                mmio: bus,
            }),
            vsock,
            entry: kernel.entry,
        })
    }

    /// How the kernel will be entered (PVH or the 64-bit Linux protocol).
    pub fn entry(&self) -> EntryPoint {
        self.entry
    }

    /// Run until the guest resets/powers off or `stop` is set. The first vCPU to finish ends
    /// the machine: the others are kicked out of KVM_RUN.
    pub fn run(self, stop: Arc<AtomicBool>) -> VmResult<VcpuExitReason> {
        vcpu::install_kick_handler()?;
        let Vmm {
            machine,
            vcpus,
            devices,
            vsock,
            ..
        } = self;
        let loop_stop = Arc::new(AtomicBool::new(false));
        let event_loop = {
            let (dev, s) = (vsock.clone(), loop_stop.clone());
            std::thread::Builder::new()
                .name("berth-vsock".into())
                .spawn(move || VsockDevice::run_event_loop(dev, s))
                .map_err(|e| VmError::Io {
                    what: "spawning the vsock thread".into(),
                    source: e,
                })?
        };
        let (tx, rx) = mpsc::channel();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for (i, mut fd) in vcpus.into_iter().enumerate() {
            let (devices, vcpu_stop, tx) = (devices.clone(), stop.clone(), tx.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("berth-vcpu{i}"))
                .spawn(move || {
                    let r = vcpu::run_vcpu(&mut fd, &devices, &vcpu_stop);
                    let _ = tx.send(r);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop.store(true, Ordering::Release);
                    tracing::error!("spawning vCPU {i}: {e}");
                    break;
                }
            }
        }
        drop(tx);
        // The first vCPU to finish decides; an external `stop` ends the machine too. A guest
        // that never exits to the VMM only sees `stop` once it is kicked, hence the polling.
        let (first, reported) = loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(r) => break (r, 1),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break (Ok(VcpuExitReason::Stopped), 0)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if stop.load(Ordering::Acquire) {
                        break (Ok(VcpuExitReason::Stopped), 0);
                    }
                }
            }
        };
        stop.store(true, Ordering::Release);
        stop_threads(&threads, &rx, threads.len().saturating_sub(reported));
        for t in threads {
            let _ = t.join();
        }
        loop_stop.store(true, Ordering::Release);
        let _ = event_loop.join();
        drop(machine);
        first
    }
}

/// Kick vCPU threads until every one has reported back. Repeated because a kick that lands
/// between the `stop` check and KVM_RUN is lost.
fn stop_threads(
    threads: &[JoinHandle<()>],
    rx: &mpsc::Receiver<VmResult<VcpuExitReason>>,
    mut remaining: usize,
) {
    while remaining > 0 {
        for t in threads.iter().filter(|t| !t.is_finished()) {
            // SAFETY: the pthread handle belongs to a thread we spawned and have not joined
            // yet, so it is valid; the signal's handler does nothing.
            unsafe {
                libc::pthread_kill(t.as_pthread_t(), vcpu::kick_signal());
            }
        }
        match rx.recv_timeout(Duration::from_millis(10)) {
            Ok(_) => remaining -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Boot `cfg` and block until the VM ends (guest reset/power off, or `stop`).
pub fn run_vm(cfg: &VmConfig, stop: Arc<AtomicBool>) -> VmResult<VcpuExitReason> {
    Vmm::build(cfg)?.run(stop)
}

/// A VM this process runs.
struct Running {
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<VmState>>,
    thread: Option<JoinHandle<()>>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Running>> {
    static VMS: OnceLock<Mutex<HashMap<PathBuf, Running>>> = OnceLock::new();
    VMS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn pid_file(cfg: &VmConfig) -> PathBuf {
    cfg.state_dir.join(PID_FILE)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// `Hypervisor` over the in-process KVM VMM.
///
/// `start` builds the VM synchronously (so a bad kernel path or a missing /dev/kvm is reported
/// by `start`) and runs it on a thread of the calling process: the process must stay alive as
/// long as the VM should. `pid` is that process's id, recorded in `<state_dir>/kvm.pid` for
/// other processes; those can see the VM's state but not `kill` it (that would take the
/// hosting process down): they use the control channel's `shutdown`.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvmBackend;

impl KvmBackend {
    pub fn new() -> Self {
        KvmBackend
    }
}

impl Hypervisor for KvmBackend {
    fn name(&self) -> &'static str {
        "kvm"
    }

    fn available(&self) -> VmResult<()> {
        open_kvm().map(|_| ())
    }

    fn start(&self, cfg: &VmConfig) -> VmResult<()> {
        let mut vms = registry()
            .lock()
            .map_err(|_| VmError::Other("poisoned".into()))?;
        if let Some(r) = vms.get(&cfg.state_dir) {
            if r.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                return Err(VmError::AlreadyRunning(std::process::id()));
            }
        }
        if let Some(pid) = read_pid(&pid_file(cfg)) {
            if pid != std::process::id() && process_alive(pid) {
                return Err(VmError::AlreadyRunning(pid));
            }
        }
        let vmm = Vmm::build(cfg)?;
        std::fs::write(pid_file(cfg), format!("{}\n", std::process::id())).map_err(|e| {
            VmError::Io {
                what: format!("writing {}", pid_file(cfg).display()),
                source: e,
            }
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(VmState::Running));
        let thread = {
            let (stop, state, pid_path) = (stop.clone(), state.clone(), pid_file(cfg));
            std::thread::Builder::new()
                .name("berth-vmm".into())
                .spawn(move || {
                    let end = match vmm.run(stop) {
                        Ok(reason) => {
                            tracing::info!("kvm: VM ended ({reason:?})");
                            VmState::Stopped
                        }
                        Err(e) => {
                            tracing::error!("kvm: VM failed: {e}");
                            VmState::Crashed
                        }
                    };
                    if let Ok(mut s) = state.lock() {
                        *s = end;
                    }
                    let _ = std::fs::remove_file(pid_path);
                })
                .map_err(|e| VmError::Io {
                    what: "spawning the VMM thread".into(),
                    source: e,
                })?
        };
        vms.insert(
            cfg.state_dir.clone(),
            Running {
                stop,
                state,
                thread: Some(thread),
            },
        );
        Ok(())
    }

    fn kill(&self, cfg: &VmConfig) -> VmResult<()> {
        let taken = {
            let mut vms = registry()
                .lock()
                .map_err(|_| VmError::Other("poisoned".into()))?;
            vms.get_mut(&cfg.state_dir).and_then(|r| {
                r.stop.store(true, Ordering::Release);
                r.thread.take()
            })
        };
        if let Some(t) = taken {
            let _ = t.join();
            return Ok(());
        }
        match read_pid(&pid_file(cfg)) {
            Some(pid) if process_alive(pid) => Err(VmError::Other(format!(
                "the VM runs inside process {pid}; stop it there or through the control channel"
            ))),
            _ => Err(VmError::NotRunning),
        }
    }

    fn state(&self, cfg: &VmConfig) -> VmState {
        if let Ok(vms) = registry().lock() {
            if let Some(r) = vms.get(&cfg.state_dir) {
                if r.thread.as_ref().is_some_and(|t| !t.is_finished()) {
                    return if r.stop.load(Ordering::Acquire) {
                        VmState::Stopping
                    } else {
                        VmState::Running
                    };
                }
                return r.state.lock().map(|s| *s).unwrap_or(VmState::Crashed);
            }
        }
        match read_pid(&pid_file(cfg)) {
            Some(pid) if process_alive(pid) => VmState::Running,
            // A pid file without its process: the process died with the VM in it.
            Some(_) => VmState::Crashed,
            None => VmState::Stopped,
        }
    }

    fn pid(&self, cfg: &VmConfig) -> Option<u32> {
        match self.state(cfg) {
            VmState::Running | VmState::Stopping | VmState::Starting => {
                read_pid(&pid_file(cfg)).or(Some(std::process::id()))
            }
            _ => None,
        }
    }
}

/// Create the data disk, sparse, at its configured size when it does not exist yet (the guest
/// formats a blank disk on first boot).
fn ensure_data_disk(cfg: &VmConfig) -> VmResult<()> {
    if cfg.data_disk.exists() {
        return Ok(());
    }
    if let Some(dir) = cfg.data_disk.parent() {
        std::fs::create_dir_all(dir).map_err(|e| VmError::Io {
            what: format!("creating {}", dir.display()),
            source: e,
        })?;
    }
    let f = File::create(&cfg.data_disk).map_err(|e| VmError::Io {
        what: format!("creating {}", cfg.data_disk.display()),
        source: e,
    })?;
    f.set_len(u64::from(cfg.data_disk_gib) << 30)
        .map_err(|e| VmError::Io {
            what: format!("sizing {}", cfg.data_disk.display()),
            source: e,
        })
}
