//! The QEMU backend: runs everywhere QEMU does, including the TCG emulation the tests use.
//! Direct kernel boot with virtio-mmio devices, vsock through `vhost-device-vsock` (whose Unix
//! socket is the hybrid-vsock host end), 9p for the home share, user-mode networking for
//! containers' outbound traffic.
//!
//! The machine follows the image's architecture, read from the kernel file ([`GuestArch`]):
//! x86_64 runs `qemu-system-x86_64 -M microvm`, arm64 runs `qemu-system-aarch64 -M virt`
//! (its raw `Image`; under TCG on any host, with KVM/HVF on an arm64 host).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};

pub struct QemuBackend {
    /// `tcg`, `kvm`, `hvf` or a list tried in order such as `kvm:tcg` (see `accel_args`).
    pub accel: String,
    children: Mutex<Option<(Child, Child)>>,
    stopping: Mutex<bool>,
}

impl QemuBackend {
    pub fn new(accel: impl Into<String>) -> Self {
        Self {
            accel: accel.into(),
            children: Mutex::new(None),
            stopping: Mutex::new(false),
        }
    }

    /// The QEMU command line for `cfg` (without the program name), for the architecture of
    /// its kernel (the host's when the file says nothing). Public for tests and for
    /// `berth vm status --verbose`.
    pub fn args(&self, cfg: &VmConfig, vhost_socket: &Path) -> Vec<String> {
        self.args_for(cfg, vhost_socket, GuestArch::of_config(cfg))
    }

    /// The QEMU command line for a guest of architecture `arch`.
    ///
    /// x86_64: `-M microvm` without RTC (its IRQ 8 is the one microvm gives the fifth
    /// virtio-mmio device, and the guest sets its clock from `berth.time` anyway).
    /// arm64: `-M virt` (PL011 console, GICv3 where the accelerator has it, the same
    /// virtio-mmio devices: virt has 32 transports).
    pub fn args_for(&self, cfg: &VmConfig, vhost_socket: &Path, arch: GuestArch) -> Vec<String> {
        let mem = cfg.memory_mib;
        let mut a: Vec<String> = Vec::new();
        let machine = match arch {
            GuestArch::X86_64 => "microvm,acpi=off,rtc=off,memory-backend=mem",
            GuestArch::Aarch64 => "virt,gic-version=max,memory-backend=mem",
        };
        a.extend(["-M".into(), machine.into()]);
        a.extend(self.accel_args(arch));
        a.extend(["-cpu".into(), self.cpu(arch).into()]);
        a.extend(["-smp".into(), cfg.cpus.max(1).to_string()]);
        a.extend(["-m".into(), format!("{mem}M")]);
        a.extend([
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        ]);
        // Modern (virtio 1.0) MMIO transports: the legacy ones lose the 9p/virtio-fs devices.
        a.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
        a.extend(
            ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.extend([
            "-serial".into(),
            format!("file:{}", cfg.console_log().display()),
        ]);
        a.extend(["-kernel".into(), cfg.kernel.display().to_string()]);
        a.extend(["-initrd".into(), cfg.initrd.display().to_string()]);
        a.extend(["-append".into(), kernel_cmdline_for(cfg, arch)]);
        // Devices in this order: microvm gives its virtio-mmio transports IRQs 12, 11, 10...
        // in order of creation, so the fifth device shares IRQ 8 with the CMOS RTC in the
        // guest's view (below): it must be one whose driver binds before rtc_cmos grabs the
        // line (virtio-blk, -net, -balloon: drivers/ links before drivers/rtc), never 9p or
        // vsock (net/ links later; the device then loses its interrupt and vanishes).
        a.extend([
            "-drive".into(),
            format!(
                "id=data,file={},format=raw,if=none,cache=writeback,discard=unmap",
                cfg.data_disk.display()
            ),
            "-device".into(),
            "virtio-blk-device,drive=data,serial=berth-data".into(),
        ]);
        a.extend([
            "-chardev".into(),
            format!("socket,id=vsock,path={}", vhost_socket.display()),
            "-device".into(),
            "vhost-user-vsock-device,chardev=vsock".into(),
        ]);
        if let Some(share) = &cfg.share {
            a.extend([
                "-fsdev".into(),
                format!("local,id=home,path={},security_model=none", share.display()),
                "-device".into(),
                "virtio-9p-device,fsdev=home,mount_tag=home".into(),
            ]);
        }
        if let Some(sys) = &cfg.system_disk {
            a.extend([
                "-drive".into(),
                format!(
                    "id=system,file={},format=raw,if=none,readonly=on",
                    sys.display()
                ),
                "-device".into(),
                "virtio-blk-device,drive=system,serial=berth-system".into(),
            ]);
        }
        a.extend([
            "-netdev".into(),
            "user,id=net0".into(),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
        // Free page reporting: pages the guest frees go back to the host (idle VM memory).
        a.extend([
            "-device".into(),
            "virtio-balloon-device,free-page-reporting=on".into(),
        ]);
        if arch == GuestArch::X86_64 {
            // A CMOS RTC, wired to an otherwise unused ISA IRQ. Without any RTC (microvm's
            // `rtc=off`) the kernel polls the absent chip's update-in-progress bit for 1 s in
            // timekeeping_init and again when rtc_cmos probes (measured: /init 1.9 s later).
            // microvm's own RTC (`rtc=on`) would drive IRQ 8, which is also the fifth
            // virtio-mmio transport's.
            a.extend(["-device".into(), "mc146818rtc,irq=15,base_year=2000".into()]);
        }
        a
    }

    /// Only TCG can run a guest of another architecture (an arm64 image on an x86_64 host):
    /// the configured accelerators apply to guests of the host's own architecture.
    fn tcg_only(&self, arch: GuestArch) -> bool {
        arch != GuestArch::host()
            || self
                .accel
                .split(':')
                .all(|a| a.split(',').next() == Some("tcg"))
    }

    /// `-accel` options. QEMU takes one accelerator per `-accel` and tries them in order, so
    /// the settings' `kvm:tcg` list (the `-machine accel=` syntax, which `-accel` rejects as
    /// "invalid accelerator kvm:tcg") becomes `-accel kvm -accel tcg,thread=multi`.
    fn accel_args(&self, arch: GuestArch) -> Vec<String> {
        let list: Vec<&str> = if self.tcg_only(arch) {
            vec!["tcg"]
        } else {
            self.accel.split(':').filter(|a| !a.is_empty()).collect()
        };
        list.into_iter()
            .flat_map(|a| {
                // Multi-threaded TCG: one host thread per vCPU.
                let a = if a == "tcg" { "tcg,thread=multi" } else { a };
                ["-accel".to_string(), a.to_string()]
            })
            .collect()
    }

    /// x86_64: `max` (the host's CPU under KVM, everything TCG emulates otherwise). arm64
    /// under TCG: `cortex-a72`, which boots to `ready` as fast as `max,pauth-impdef=on` and
    /// ~0.6 s faster than plain `max` (no emulated pointer authentication, SVE...); with
    /// KVM/HVF, `max` is the host's CPU.
    fn cpu(&self, arch: GuestArch) -> &'static str {
        match arch {
            GuestArch::X86_64 => "max",
            GuestArch::Aarch64 if self.tcg_only(arch) => "cortex-a72",
            GuestArch::Aarch64 => "max",
        }
    }
}

/// The architecture of a guest kernel: what machine, CPU and QEMU binary boot it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestArch {
    X86_64,
    Aarch64,
}

impl GuestArch {
    /// The architecture this program runs on (arm64 hosts: aarch64; everything else x86_64).
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Self::Aarch64
        } else {
            Self::X86_64
        }
    }

    /// The kernel's architecture from its first bytes: an ELF's `e_machine`, the arm64
    /// `Image` header's magic (`ARM\x64` at offset 56) or the x86 boot protocol's `HdrS`
    /// (bzImage, at 0x202). `None` when it is none of those.
    pub fn from_header(h: &[u8]) -> Option<Self> {
        if h.len() >= 20 && h.starts_with(b"\x7fELF") {
            // e_machine, in the file's byte order (EI_DATA: 1 little, 2 big endian).
            let m = [h[18], h[19]];
            let m = if h[5] == 2 {
                u16::from_be_bytes(m)
            } else {
                u16::from_le_bytes(m)
            };
            return match m {
                62 => Some(Self::X86_64),   // EM_X86_64
                183 => Some(Self::Aarch64), // EM_AARCH64
                _ => None,
            };
        }
        if h.get(56..60) == Some(b"ARM\x64") {
            return Some(Self::Aarch64);
        }
        if h.get(0x202..0x206) == Some(b"HdrS") {
            return Some(Self::X86_64);
        }
        None
    }

    /// The architecture of the kernel file at `path`, when its header says.
    pub fn of_kernel(path: &Path) -> Option<Self> {
        use std::io::Read;
        let mut h = Vec::with_capacity(0x210);
        File::open(path)
            .ok()?
            .take(0x210)
            .read_to_end(&mut h)
            .ok()?;
        Self::from_header(&h)
    }

    /// `cfg`'s kernel's architecture, else the host's.
    pub fn of_config(cfg: &VmConfig) -> Self {
        Self::of_kernel(&cfg.kernel).unwrap_or_else(Self::host)
    }

    pub fn qemu_binary(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86_64",
            Self::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The Debian package with [`Self::qemu_binary`].
    fn qemu_package(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86",
            Self::Aarch64 => "qemu-system-arm",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }
}

/// The kernel file QEMU boots for `kernel`: itself, except an arm64 ELF `vmlinux`, which
/// `-M virt` would start without the Linux boot protocol (no device tree: a silent hang).
/// Then the `Image` beside it (vm-image/build puts both in the image directory).
pub fn boot_kernel(kernel: &Path) -> VmResult<PathBuf> {
    let mut h = Vec::new();
    {
        use std::io::Read;
        File::open(kernel)
            .map_err(io(format!("opening the kernel {}", kernel.display())))?
            .take(20)
            .read_to_end(&mut h)
            .map_err(io(format!("reading the kernel {}", kernel.display())))?;
    }
    let elf_arm64 =
        h.starts_with(b"\x7fELF") && GuestArch::from_header(&h) == Some(GuestArch::Aarch64);
    if !elf_arm64 {
        return Ok(kernel.to_path_buf());
    }
    let image = kernel.with_file_name("Image");
    if GuestArch::of_kernel(&image) == Some(GuestArch::Aarch64) {
        return Ok(image);
    }
    Err(VmError::Other(format!(
        "{} is an arm64 ELF vmlinux, which QEMU's virt machine cannot boot as Linux; give the raw Image (vm-image/build --arch aarch64 prints KERNEL=.../Image)",
        kernel.display()
    )))
}

/// Kernel command line for `cfg`'s kernel (see [`kernel_cmdline_for`]).
pub fn kernel_cmdline(cfg: &VmConfig) -> String {
    kernel_cmdline_for(cfg, GuestArch::of_config(cfg))
}

/// Kernel command line: console, no reboot loop (`reboot=t` + QEMU `-no-reboot` makes a guest
/// reboot end QEMU), on x86_64 the measured boot-time savings from docs (one-vCPU-only ones
/// only with one vCPU), and the caller's `berth.*` parameters. arm64 (`-M virt`): the PL011
/// console, nothing x86-specific (no TSC, no SMP self-patching to skip); a guest reboot is
/// PSCI's SYSTEM_RESET, which `-no-reboot` also turns into QEMU's exit.
pub fn kernel_cmdline_for(cfg: &VmConfig, arch: GuestArch) -> String {
    if arch == GuestArch::Aarch64 {
        let mut c = String::from("console=ttyAMA0 reboot=t panic=-1 quiet loglevel=4");
        if !cfg.cmdline.is_empty() {
            c.push(' ');
            c.push_str(&cfg.cmdline);
        }
        return c;
    }
    // `acpi=off`: microvm runs without ACPI tables (saves a probe and an error line).
    let mut c = String::from("console=ttyS0 reboot=t panic=-1 quiet loglevel=4 acpi=off");
    if let Some(khz) = host_tsc_khz() {
        // `lpj`: the delay loop's loops per jiffy (TSC cycles per tick: the image's kernel has
        // HZ=250), so no CPU calibrates it; under TCG the secondary vCPU's calibration fails
        // and falls back to a slow one (~0.1 s).
        c.push_str(&format!(
            " tsc_early_khz={khz} lpj={}",
            khz * 1000 / KERNEL_HZ
        ));
    }
    if cfg.cpus <= 1 {
        c.push_str(" noreplace-smp");
    } else {
        // With several vCPUs under TCG the TSC looks unsynchronised and the clock would fall
        // back to 4 ms jiffies; QEMU's TSC is in fact one counter.
        c.push_str(" tsc=reliable");
    }
    if !cfg.cmdline.is_empty() {
        c.push(' ');
        c.push_str(&cfg.cmdline);
    }
    c
}

/// CONFIG_HZ of vm-image's x86_64 kernel (tinyconfig's default, kept by the fragment).
const KERNEL_HZ: u64 = 250;

/// The host's TSC frequency in kHz, from /proc/cpuinfo ("cpu MHz"). Without it the early
/// clock falls back to a slow calibration under emulation.
fn host_tsc_khz() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = s
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// Where `vhost-device-vsock` is: `$BERTH_VHOST_VSOCK`, next to this program, Berth's lib
/// directory, the tools cache the test setup fills, then `$PATH`.
pub fn find_vhost_vsock() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_VHOST_VSOCK") {
        return Some(p.into());
    }
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        cands.push(dir.join("vhost-device-vsock"));
    }
    cands.push("/usr/lib/berth/vhost-device-vsock".into());
    cands.push("/var/cache/berth-tools/bin/vhost-device-vsock".into());
    cands.extend(which("vhost-device-vsock"));
    cands.into_iter().find(|p| p.is_file())
}

fn qemu_installed(arch: GuestArch) -> VmResult<()> {
    if which(arch.qemu_binary()).is_none() {
        return Err(VmError::Unavailable(format!(
            "{} is not installed (Debian: apt-get install {})",
            arch.qemu_binary(),
            arch.qemu_package()
        )));
    }
    Ok(())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

impl Hypervisor for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn available(&self) -> VmResult<()> {
        qemu_installed(GuestArch::host())?;
        if find_vhost_vsock().is_none() {
            return Err(VmError::Unavailable(
                "vhost-device-vsock is not installed (cargo install vhost-device-vsock --version 0.3.0, or set BERTH_VHOST_VSOCK)".into(),
            ));
        }
        Ok(())
    }

    fn start(&self, cfg: &VmConfig) -> VmResult<()> {
        self.available()?;
        let arch = GuestArch::of_config(cfg);
        qemu_installed(arch)?;
        let cfg = &VmConfig {
            kernel: boot_kernel(&cfg.kernel)?,
            ..cfg.clone()
        };
        if arch != GuestArch::host() {
            tracing::info!(
                "the VM image is {}: booting it under TCG emulation on this {} host",
                arch.name(),
                GuestArch::host().name()
            );
        }
        let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((q, _)) = kids.as_mut() {
            if q.try_wait().ok().flatten().is_none() {
                return Err(VmError::AlreadyRunning(q.id()));
            }
        }
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = false;
        std::fs::create_dir_all(&cfg.state_dir).map_err(io("creating the VM state dir"))?;
        let vhu = cfg.state_dir.join("vhost-user.sock");
        let vsock = cfg.vsock_socket();
        for p in [&vhu, &vsock] {
            let _ = std::fs::remove_file(p);
        }
        let log = |name: &str| -> VmResult<Stdio> {
            Ok(File::create(cfg.state_dir.join(name))
                .map_err(io(format!("creating {name}")))?
                .into())
        };
        let vhost_bin = find_vhost_vsock()
            .ok_or_else(|| VmError::Unavailable("vhost-device-vsock not found".into()))?;
        let mut vhost = Command::new(&vhost_bin)
            .arg("--vm")
            .arg(format!(
                "guest-cid={},socket={},uds-path={}",
                cfg.guest_cid,
                vhu.display(),
                vsock.display()
            ))
            .stdin(Stdio::null())
            .stdout(log("vhost-device-vsock.log")?)
            .stderr(log("vhost-device-vsock.log")?)
            .spawn()
            .map_err(io(format!("starting {}", vhost_bin.display())))?;
        // QEMU connects to the device's socket at start-up: wait for it to exist.
        let t0 = Instant::now();
        while !vhu.exists() {
            if let Ok(Some(st)) = vhost.try_wait() {
                return Err(VmError::Other(format!(
                    "vhost-device-vsock exited at start ({st}); see {}",
                    cfg.state_dir.join("vhost-device-vsock.log").display()
                )));
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = vhost.kill();
                return Err(VmError::Other(
                    "vhost-device-vsock did not create its socket".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let qemu = Command::new(arch.qemu_binary())
            .args(self.args_for(cfg, &vhu, arch))
            .stdin(Stdio::null())
            .stdout(log("qemu.log")?)
            .stderr(log("qemu.log")?)
            .spawn();
        let qemu = match qemu {
            Ok(q) => q,
            Err(e) => {
                let _ = vhost.kill();
                let _ = vhost.wait();
                return Err(io("starting QEMU")(e));
            }
        };
        let _ = std::fs::write(cfg.state_dir.join("qemu.pid"), qemu.id().to_string());
        *kids = Some((qemu, vhost));
        Ok(())
    }

    fn kill(&self, _cfg: &VmConfig) -> VmResult<()> {
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some((mut q, mut v)) = kids.take() else {
            return Err(VmError::NotRunning);
        };
        let _ = q.kill();
        let _ = q.wait();
        let _ = v.kill();
        let _ = v.wait();
        Ok(())
    }

    fn state(&self, _cfg: &VmConfig) -> VmState {
        let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some((q, v)) = kids.as_mut() else {
            return VmState::Stopped;
        };
        match q.try_wait() {
            Ok(None) => VmState::Running,
            Ok(Some(st)) => {
                // QEMU has ended: reap the vsock device with it.
                let _ = v.kill();
                let _ = v.wait();
                let asked = *self.stopping.lock().unwrap_or_else(|e| e.into_inner());
                if asked || st.success() {
                    VmState::Stopped
                } else {
                    VmState::Crashed
                }
            }
            Err(_) => VmState::Crashed,
        }
    }

    fn pid(&self, _cfg: &VmConfig) -> Option<u32> {
        let kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        kids.as_ref().map(|(q, _)| q.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig {
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "berth.net=user".into(),
            cpus: 1,
            memory_mib: 512,
            data_disk: "/d.img".into(),
            data_disk_gib: 8,
            system_disk: None,
            share: Some("/home/u".into()),
            state_dir: "/s".into(),
            guest_cid: 3,
        }
    }

    #[test]
    fn command_line_has_every_device() {
        let a =
            QemuBackend::new("tcg").args_for(&cfg(), Path::new("/s/vhu.sock"), GuestArch::X86_64);
        let s = a.join(" ");
        for want in [
            "-M microvm,acpi=off,rtc=off,memory-backend=mem",
            "-accel tcg,thread=multi",
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-serial file:/s/console.log",
            "-kernel /k -initrd /i",
            "file=/d.img,format=raw",
            "virtio-blk-device,drive=data",
            "socket,id=vsock,path=/s/vhu.sock",
            "vhost-user-vsock-device,chardev=vsock",
            "local,id=home,path=/home/u,security_model=none",
            "virtio-9p-device,fsdev=home,mount_tag=home",
            "-no-reboot",
            "virtio-balloon-device,free-page-reporting=on",
        ] {
            assert!(s.contains(want), "missing {want:?} in {s}");
        }
        let append = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
        assert!(append.contains("reboot=t") && append.contains("noreplace-smp"));
        assert!(append.ends_with("berth.net=user"));
    }

    fn devices(a: &[String]) -> Vec<&str> {
        a.windows(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].split(',').next().unwrap_or(""))
            .collect()
    }

    #[test]
    fn system_disk_is_read_only_and_irq8_goes_to_a_driver_that_binds_before_rtc() {
        let mut c = cfg();
        c.system_disk = Some("/img/system.img".into());
        let a = QemuBackend::new("tcg").args_for(&c, Path::new("/s/vhu.sock"), GuestArch::X86_64);
        let s = a.join(" ");
        assert!(s.contains("id=system,file=/img/system.img,format=raw,if=none,readonly=on"));
        assert!(s.contains("virtio-blk-device,drive=system,serial=berth-system"));
        assert!(s.contains("mc146818rtc,irq=15"));
        // The fifth virtio-mmio device (IRQ 8, shared with the guest's rtc_cmos) is never 9p
        // or vsock, with or without the share and the system disk.
        for (share, sys) in [(true, true), (true, false), (false, true), (false, false)] {
            let mut c = cfg();
            c.share = share.then(|| "/home/u".into());
            c.system_disk = sys.then(|| "/img/system.img".into());
            let a =
                QemuBackend::new("tcg").args_for(&c, Path::new("/s/vhu.sock"), GuestArch::X86_64);
            let virtio: Vec<&str> = devices(&a)
                .into_iter()
                .filter(|d| d.starts_with("virtio") || d.starts_with("vhost"))
                .collect();
            assert_eq!(
                virtio[0], "virtio-blk-device",
                "the data disk stays /dev/vda"
            );
            if let Some(fifth) = virtio.get(4) {
                assert!(
                    [
                        "virtio-blk-device",
                        "virtio-net-device",
                        "virtio-balloon-device"
                    ]
                    .contains(fifth),
                    "{virtio:?}"
                );
            }
        }
        // arm64 has no CMOS RTC.
        let a = QemuBackend::new("tcg").args_for(&c, Path::new("/s/vhu.sock"), GuestArch::Aarch64);
        assert!(!a.join(" ").contains("mc146818rtc"));
    }

    #[test]
    fn two_cpus_keep_smp_patching() {
        let mut c = cfg();
        c.cpus = 2;
        let x86 = kernel_cmdline_for(&c, GuestArch::X86_64);
        assert!(!x86.contains("noreplace-smp"));
        assert!(x86.contains("tsc=reliable"));
    }

    fn value<'a>(a: &'a [String], flag: &str) -> &'a str {
        &a[a.iter().position(|x| x == flag).unwrap() + 1]
    }

    #[test]
    fn aarch64_command_line() {
        let mut c = cfg();
        c.cpus = 2;
        c.kernel = "/img/Image".into();
        // "kvm:tcg" is the default setting: it must not reach an emulated arm64 guest on an
        // x86_64 host.
        let a =
            QemuBackend::new("kvm:tcg").args_for(&c, Path::new("/s/vhu.sock"), GuestArch::Aarch64);
        let s = a.join(" ");
        assert_eq!(value(&a, "-M"), "virt,gic-version=max,memory-backend=mem");
        for want in [
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-smp 2",
            "-kernel /img/Image -initrd /i",
            "-serial file:/s/console.log",
            "virtio-mmio.force-legacy=false",
            "virtio-blk-device,drive=data",
            "socket,id=vsock,path=/s/vhu.sock",
            "vhost-user-vsock-device,chardev=vsock",
            "virtio-net-device,netdev=net0",
            "virtio-9p-device,fsdev=home,mount_tag=home",
            "virtio-balloon-device,free-page-reporting=on",
            "-no-reboot",
        ] {
            assert!(s.contains(want), "missing {want:?} in {s}");
        }
        assert!(!s.contains("microvm") && !s.contains("-pci"), "{s}");
        if GuestArch::host() == GuestArch::X86_64 {
            assert_eq!(value(&a, "-accel"), "tcg,thread=multi");
            assert_eq!(value(&a, "-cpu"), "cortex-a72");
        } else {
            assert!(s.contains("-accel kvm -accel tcg,thread=multi"), "{s}");
            assert_eq!(value(&a, "-cpu"), "max");
        }
        let append = value(&a, "-append");
        assert!(append.starts_with("console=ttyAMA0 "), "{append}");
        assert!(append.contains("reboot=t") && append.ends_with("berth.net=user"));
        for x86_only in ["ttyS0", "tsc", "noreplace-smp", "acpi=off"] {
            assert!(!append.contains(x86_only), "{x86_only} in {append}");
        }
        // Pure TCG asked for: the emulated CPU whatever the host.
        let a = QemuBackend::new("tcg").args_for(&c, Path::new("/s/vhu.sock"), GuestArch::Aarch64);
        assert_eq!(value(&a, "-accel"), "tcg,thread=multi");
        assert_eq!(value(&a, "-cpu"), "cortex-a72");
    }

    #[test]
    fn x86_64_guest_keeps_its_accelerator_on_an_x86_64_host() {
        if GuestArch::host() != GuestArch::X86_64 {
            return;
        }
        let a = QemuBackend::new("kvm:tcg").args_for(&cfg(), Path::new("/v"), GuestArch::X86_64);
        // One accelerator per -accel, tried in order ("-accel kvm:tcg" is an error).
        assert!(
            a.join(" ").contains("-accel kvm -accel tcg,thread=multi"),
            "{a:?}"
        );
        assert_eq!(a.iter().filter(|x| *x == "-accel").count(), 2);
        assert_eq!(value(&a, "-cpu"), "max");
        let a = QemuBackend::new("hvf").args_for(&cfg(), Path::new("/v"), GuestArch::X86_64);
        assert_eq!(value(&a, "-accel"), "hvf");
    }

    fn elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little endian
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    fn arm64_image() -> Vec<u8> {
        // arm64 Image header: code0/code1, text_offset, image_size, flags, res2-4, magic.
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&[0x4d, 0x5a, 0x40, 0xfa]); // "MZ" + nop (EFI stub)
        h[56..60].copy_from_slice(b"ARM\x64");
        h
    }

    fn bzimage() -> Vec<u8> {
        let mut h = vec![0u8; 0x300];
        h[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        h[0x202..0x206].copy_from_slice(b"HdrS");
        h
    }

    #[test]
    fn arch_from_kernel_header() {
        assert_eq!(GuestArch::from_header(&elf(62)), Some(GuestArch::X86_64));
        assert_eq!(GuestArch::from_header(&elf(183)), Some(GuestArch::Aarch64));
        assert_eq!(GuestArch::from_header(&elf(40)), None); // 32-bit ARM
        assert_eq!(
            GuestArch::from_header(&arm64_image()),
            Some(GuestArch::Aarch64)
        );
        assert_eq!(GuestArch::from_header(&bzimage()), Some(GuestArch::X86_64));
        assert_eq!(GuestArch::from_header(b""), None);
        assert_eq!(GuestArch::from_header(&[0u8; 0x300]), None);
        assert_eq!(GuestArch::X86_64.qemu_binary(), "qemu-system-x86_64");
        assert_eq!(GuestArch::Aarch64.qemu_binary(), "qemu-system-aarch64");
    }

    #[test]
    fn arch_of_config_reads_the_kernel_file() {
        let d = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.kernel = d.path().join("Image");
        std::fs::write(&c.kernel, arm64_image()).unwrap();
        assert_eq!(GuestArch::of_config(&c), GuestArch::Aarch64);
        let a = QemuBackend::new("tcg").args(&c, Path::new("/v"));
        assert!(value(&a, "-M").starts_with("virt,"));
        assert!(kernel_cmdline(&c).starts_with("console=ttyAMA0"));
        c.kernel = d.path().join("vmlinux");
        std::fs::write(&c.kernel, elf(62)).unwrap();
        assert_eq!(GuestArch::of_config(&c), GuestArch::X86_64);
        assert!(
            value(&QemuBackend::new("tcg").args(&c, Path::new("/v")), "-M").starts_with("microvm,")
        );
        // Unreadable or unknown: the host's architecture.
        c.kernel = d.path().join("missing");
        assert_eq!(GuestArch::of_config(&c), GuestArch::host());
    }

    #[test]
    fn arm64_vmlinux_boots_its_image() {
        let d = tempfile::tempdir().unwrap();
        let vmlinux = d.path().join("vmlinux");
        std::fs::write(&vmlinux, elf(183)).unwrap();
        // No Image beside it: an error that says what to give instead.
        let e = boot_kernel(&vmlinux).unwrap_err().to_string();
        assert!(
            e.contains("arm64 ELF vmlinux") && e.contains("Image"),
            "{e}"
        );
        std::fs::write(d.path().join("Image"), arm64_image()).unwrap();
        assert_eq!(boot_kernel(&vmlinux).unwrap(), d.path().join("Image"));
        // Anything else is booted as given.
        let x86 = d.path().join("x86");
        std::fs::write(&x86, elf(62)).unwrap();
        assert_eq!(boot_kernel(&x86).unwrap(), x86);
        let img = d.path().join("Image");
        assert_eq!(boot_kernel(&img).unwrap(), img);
        assert!(boot_kernel(&d.path().join("missing")).is_err());
    }
}
