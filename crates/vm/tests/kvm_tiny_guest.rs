//! The KVM VMM running real guest code: tiny hand-assembled programs that write "OK\n" to the
//! UART at 0x3f8 and halt, in real mode, in long mode (through the VMM's page tables and GDT),
//! and as a PVH "kernel" ELF booted through the full `Vmm` (loader, start info, cmdline,
//! irqchip, MP table, vsock device). Each test skips (prints why, passes) when /dev/kvm is
//! unusable here.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use berth_vm::kvm::boot::{self, EntryPoint};
use berth_vm::kvm::mmio::MmioBus;
use berth_vm::kvm::serial::{IrqTrigger, SerialConsole};
use berth_vm::kvm::vcpu::{self, Devices, VcpuExitReason};
use berth_vm::kvm::{open_kvm, Machine, Vmm};
use berth_vm::{Hypervisor, VmConfig, VmState};
use vm_memory::{Bytes, GuestAddress};

/// A console writer the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

fn kvm_usable() -> bool {
    match open_kvm() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: KVM unusable here: {e}");
            false
        }
    }
}

fn devices(out: &Captured) -> Devices {
    Devices {
        serial: Mutex::new(SerialConsole::new(
            Box::new(out.clone()),
            IrqTrigger::new(None),
        )),
        mmio: MmioBus::default(),
    }
}

/// mov al, c ; out dx, al — for each byte of `text`.
fn print(text: &[u8]) -> Vec<u8> {
    let mut code = Vec::new();
    for c in text {
        code.extend_from_slice(&[0xb0, *c, 0xee]);
    }
    code
}

const HLT: u8 = 0xf4;

#[test]
fn real_mode_guest_writes_ok_to_the_serial_port() {
    if !kvm_usable() {
        return;
    }
    let m = Machine::new(4 << 20, false).expect("machine");
    // mov dx, 0x3f8 (16-bit operand in real mode); print; hlt
    let mut code = vec![0xba, 0xf8, 0x03];
    code.extend(print(b"OK\n"));
    code.push(HLT);
    m.mem
        .write_slice(&code, GuestAddress(0x1000))
        .expect("code");
    let mut fd = m.create_vcpu(0).expect("vcpu");
    let mut sregs = fd.get_sregs().expect("sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    fd.set_sregs(&sregs).expect("set sregs");
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 0x2,
        ..Default::default()
    };
    fd.set_regs(&regs).expect("regs");
    let out = Captured::default();
    let reason = vcpu::run_vcpu(&mut fd, &devices(&out), &AtomicBool::new(false)).expect("run");
    assert_eq!(reason, VcpuExitReason::Halted);
    assert_eq!(out.bytes(), b"OK\n");
}

#[test]
fn long_mode_guest_runs_on_the_vmm_page_tables() {
    if !kvm_usable() {
        return;
    }
    let m = Machine::new(4 << 20, false).expect("machine");
    // 64-bit code at 1 MiB: mov dx, 0x3f8 (0x66 prefix: 16-bit operand); print; hlt
    let mut code = vec![0x66, 0xba, 0xf8, 0x03];
    code.extend(print(b"OK\n"));
    code.push(HLT);
    m.mem
        .write_slice(&code, GuestAddress(0x10_0000))
        .expect("code");
    let mut fd = m.create_vcpu(0).expect("vcpu");
    vcpu::setup_boot_vcpu(&fd, &m.mem, EntryPoint::Linux64(GuestAddress(0x10_0000)))
        .expect("boot state");
    let out = Captured::default();
    let reason = vcpu::run_vcpu(&mut fd, &devices(&out), &AtomicBool::new(false)).expect("run");
    assert_eq!(reason, VcpuExitReason::Halted);
    assert_eq!(out.bytes(), b"OK\n");
    // The guest really ran in long mode.
    let sregs = fd.get_sregs().expect("sregs");
    assert_ne!(sregs.efer & 0x400, 0, "EFER.LMA set");
    assert_eq!(sregs.cs.l, 1);
}

/// A minimal ELF64 "kernel": one PT_LOAD of `code` at `load`, and the Xen PVH note whose
/// 32-bit entry is `load`.
fn pvh_elf(code: &[u8], load: u64) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(load as u32).to_le_bytes());
    let code_off = 0x1000usize;

    let mut f = vec![0u8; code_off];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&load.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
    f[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    f[58..60].copy_from_slice(&64u16.to_le_bytes());

    let phdr = |f: &mut Vec<u8>, at: usize, typ: u32, off: u64, addr: u64, size: u64| {
        f[at..at + 4].copy_from_slice(&typ.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes()); // vaddr
        f[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes()); // paddr
        f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes()); // filesz
        f[at + 40..at + 48].copy_from_slice(&size.to_le_bytes()); // memsz
        f[at + 48..at + 56].copy_from_slice(&4u64.to_le_bytes());
    };
    phdr(&mut f, EHDR, 1, code_off as u64, load, code.len() as u64); // PT_LOAD
    phdr(
        &mut f,
        EHDR + PHDR,
        4,
        note_off as u64,
        0,
        note.len() as u64,
    ); // PT_NOTE
    f[note_off..note_off + note.len()].copy_from_slice(&note);
    f.extend_from_slice(code);
    f
}

/// 32-bit PVH entry code: check the start info (magic, one module = the initrd), print "OK",
/// the first byte of the command line and a newline, then reset through the i8042 (with an
/// in-kernel irqchip a `hlt` never leaves KVM). On a bad start info print "NO".
fn pvh_guest_code() -> Vec<u8> {
    let mut ok = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    ok.extend(print(b"OK\n"));
    ok.extend_from_slice(&[0x8b, 0x73, 0x18]); // mov esi, [ebx+0x18] (cmdline_paddr)
    ok.extend_from_slice(&[0x8a, 0x06]); // mov al, [esi]
    ok.push(0xee); // out dx, al
    ok.extend(print(b"\n"));
    ok.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, HLT]); // mov al, 0xfe; out 0x64, al; hlt

    let mut fail = vec![0x66, 0xba, 0xf8, 0x03];
    fail.extend(print(b"NO\n"));
    fail.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, HLT]);

    let mut code = Vec::new();
    code.extend_from_slice(&[0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33]); // cmp dword [ebx], magic
    code.extend_from_slice(&[0x75, 0x00]); // jne fail (patched)
    let jne1 = code.len() - 1;
    code.extend_from_slice(&[0x83, 0x7b, 0x0c, 0x01]); // cmp dword [ebx+0xc], 1
    code.extend_from_slice(&[0x75, 0x00]); // jne fail (patched)
    let jne2 = code.len() - 1;
    code.extend(ok);
    let fail_at = code.len();
    code.extend(fail);
    code[jne1] = (fail_at - (jne1 + 1)) as u8;
    code[jne2] = (fail_at - (jne2 + 1)) as u8;
    code
}

fn config(dir: &Path) -> VmConfig {
    let kernel = dir.join("vmlinux");
    std::fs::write(&kernel, pvh_elf(&pvh_guest_code(), 0x10_0000)).expect("kernel");
    let initrd = dir.join("initrd");
    std::fs::write(&initrd, b"not really a cpio").expect("initrd");
    VmConfig {
        kernel,
        initrd,
        cmdline: "berth.net=user".into(),
        cpus: 1,
        memory_mib: 32,
        data_disk: dir.join("data.img"),
        data_disk_gib: 1,
        system_disk: None,
        share: None,
        state_dir: dir.join("state"),
        guest_cid: 3,
    }
}

#[test]
fn pvh_elf_boots_through_the_full_vmm() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path());
    let vmm = Vmm::build(&cfg).expect("build");
    assert_eq!(vmm.entry(), EntryPoint::Pvh(GuestAddress(0x10_0000)));
    let reason = vmm.run(Arc::new(AtomicBool::new(false))).expect("run");
    assert_eq!(reason, VcpuExitReason::Reset);
    let console = std::fs::read(cfg.console_log()).expect("console log");
    // "c": the command line starts with boot::BASE_CMDLINE's "console=ttyS0".
    assert_eq!(console, b"OK\nc\n");
    assert!(boot::BASE_CMDLINE.starts_with('c'));
}

#[test]
fn backend_start_runs_the_vm_on_a_thread() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path());
    let backend = berth_vm::kvm::KvmBackend::new();
    assert_eq!(backend.name(), "kvm");
    backend.available().expect("available");
    backend.start(&cfg).expect("start");
    // The guest resets right away; wait for the VMM thread to notice.
    let mut state = backend.state(&cfg);
    for _ in 0..500 {
        if state == VmState::Stopped {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        state = backend.state(&cfg);
    }
    assert_eq!(state, VmState::Stopped);
    assert_eq!(backend.pid(&cfg), None);
    assert_eq!(std::fs::read(cfg.console_log()).expect("log"), b"OK\nc\n");
    // The sparse data disk was created at its size.
    assert_eq!(
        std::fs::metadata(&cfg.data_disk).expect("disk").len(),
        1 << 30
    );
    assert!(!cfg.state_dir.join("kvm.pid").exists());
}

#[test]
fn backend_start_reports_a_missing_kernel() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path());
    cfg.kernel = dir.path().join("nope");
    let err = berth_vm::kvm::KvmBackend::new()
        .start(&cfg)
        .expect_err("no kernel");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn backend_kill_stops_a_spinning_two_cpu_guest() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(dir.path());
    // jmp $ : never exits on its own; the AP sits in KVM_RUN waiting for a SIPI.
    std::fs::write(&cfg.kernel, pvh_elf(&[0xeb, 0xfe], 0x10_0000)).expect("kernel");
    cfg.cpus = 2;
    let backend = berth_vm::kvm::KvmBackend::new();
    backend.start(&cfg).expect("start");
    assert_eq!(backend.state(&cfg), VmState::Running);
    assert_eq!(backend.pid(&cfg), Some(std::process::id()));
    assert!(matches!(
        backend.start(&cfg),
        Err(berth_vm::VmError::AlreadyRunning(_))
    ));
    std::thread::sleep(std::time::Duration::from_millis(50));
    backend.kill(&cfg).expect("kill");
    assert_eq!(backend.state(&cfg), VmState::Stopped);
    assert_eq!(backend.pid(&cfg), None);
    assert!(!cfg.state_dir.join("kvm.pid").exists());
    assert!(matches!(
        backend.kill(&cfg),
        Err(berth_vm::VmError::NotRunning)
    ));
}

#[test]
fn guest_reaches_the_virtio_mmio_registers() {
    if !kvm_usable() {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path());
    let mut code = vec![0xa1, 0x00, 0x00, 0x00, 0xd0]; // mov eax, [slot 0 MagicValue]
    code.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    for _ in 0..3 {
        code.extend_from_slice(&[0xee, 0xc1, 0xe8, 0x08]); // out dx, al; shr eax, 8
    }
    code.push(0xee);
    code.extend_from_slice(&[0xa1, 0x08, 0x10, 0x00, 0xd0]); // mov eax, [slot 1 DeviceID]
    code.extend_from_slice(&[0x04, 0x30, 0xee]); // add al, '0'; out  (19 -> 'C')
                                                 // mov dword [slot 1 Status], ACKNOWLEDGE; read it back
    code.extend_from_slice(&[0xc7, 0x05, 0x70, 0x10, 0x00, 0xd0, 0x01, 0x00, 0x00, 0x00]);
    code.extend_from_slice(&[0xa1, 0x70, 0x10, 0x00, 0xd0]);
    code.extend_from_slice(&[0x04, 0x30, 0xee]);
    code.extend(print(b"\n"));
    code.extend_from_slice(&[0xb0, 0xfe, 0xe6, 0x64, HLT]);
    std::fs::write(&cfg.kernel, pvh_elf(&code, 0x10_0000)).expect("kernel");
    let reason = Vmm::build(&cfg)
        .expect("build")
        .run(Arc::new(AtomicBool::new(false)))
        .expect("run");
    assert_eq!(reason, VcpuExitReason::Reset);
    // "virt" magic of the data disk's slot, vsock's device id 19 ('0' + 19 = 'C'), status 1.
    assert_eq!(std::fs::read(cfg.console_log()).expect("log"), b"virtC1\n");
}
