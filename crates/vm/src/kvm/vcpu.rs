//! vCPU setup (CPUID, local APIC, boot registers) and the run loop that turns KVM exits into
//! device accesses: port I/O for the UART and the few legacy ports Linux touches, MMIO for the
//! virtio devices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

use kvm_bindings::{kvm_lapic_state, kvm_sregs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use vm_memory::GuestMemoryMmap;

use super::boot::{self, EntryPoint};
use super::mmio::MmioBus;
use super::serial::SerialConsole;
use crate::hypervisor::{VmError, VmResult};

/// i8042 keyboard controller: a write of 0xfe to its command port pulses the CPU reset line,
/// which is how `reboot=k` guests (and the tests' tiny programs) end the VM.
const I8042_COMMAND_PORT: u16 = 0x64;
const I8042_DATA_PORT: u16 = 0x60;
const I8042_RESET_CMD: u8 = 0xfe;
/// POST diagnostic port; Linux writes it as an I/O delay.
const POST_PORT: u16 = 0x80;

/// Why a vCPU stopped running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuExitReason {
    /// `hlt` with no in-kernel interrupt controller to wake it (test guests).
    Halted,
    /// Triple fault or a KVM system event (power off / reset).
    Shutdown,
    /// The guest reset the machine through the keyboard controller.
    Reset,
    /// The VMM asked it to stop.
    Stopped,
}

/// The devices a vCPU's exits reach.
pub struct Devices {
    pub serial: Mutex<SerialConsole>,
    pub mmio: MmioBus,
}

impl Devices {
    /// An `out`; `Some` when the guest asked for the machine to end.
    pub fn pio_write(&self, port: u16, data: &[u8]) -> Option<VcpuExitReason> {
        if SerialConsole::handles(port) {
            if let Ok(mut s) = self.serial.lock() {
                s.pio_write(port, data);
            }
        } else if port == I8042_COMMAND_PORT && data.first() == Some(&I8042_RESET_CMD) {
            return Some(VcpuExitReason::Reset);
        } else if port != POST_PORT {
            tracing::trace!("kvm: ignored out {port:#x} <- {data:?}");
        }
        None
    }

    /// An `in`.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) {
        if SerialConsole::handles(port) {
            if let Ok(mut s) = self.serial.lock() {
                s.pio_read(port, data);
                return;
            }
        }
        match port {
            // Keyboard controller: no data, input buffer empty, so Linux does not wait on it.
            I8042_COMMAND_PORT | I8042_DATA_PORT => data.fill(0),
            // Nothing there: an open bus reads as all ones (this is also how Linux concludes
            // that COM2-4 and other legacy devices are absent).
            _ => data.fill(0xff),
        }
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal's only purpose is to make KVM_RUN return EINTR.
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

/// Install the (empty) handler for `kick_signal` once per process, so delivering it interrupts
/// KVM_RUN instead of killing the process.
pub fn install_kick_handler() -> VmResult<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        if let Err(e) = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler) {
            result = Err(VmError::Io {
                what: "installing the vCPU kick signal handler".into(),
                source: e.into(),
            });
        }
    });
    result
}

fn kvm_err(what: &str, e: kvm_ioctls::Error) -> VmError {
    VmError::Io {
        what: what.to_string(),
        source: e.into(),
    }
}

/// CPUID as KVM supports it, with this vCPU's APIC id and the vCPU count filled in.
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd, id: u8, count: u8) -> VmResult<()> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| kvm_err("KVM_GET_SUPPORTED_CPUID", e))?;
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                // EBX: initial APIC id (31:24), logical processor count (23:16), CLFLUSH size.
                entry.ebx = (u32::from(id) << 24) | (u32::from(count) << 16) | (8 << 8);
                // ECX bit 31: running under a hypervisor.
                entry.ecx |= 1 << 31;
                if count > 1 {
                    // EDX bit 28: HTT, the count above is valid.
                    entry.edx |= 1 << 28;
                }
            }
            // x2APIC topology: EDX is the x2APIC id.
            0xb => entry.edx = u32::from(id),
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| kvm_err("KVM_SET_CPUID2", e))
}

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, byte) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *byte as libc::c_char;
    }
}

/// Local APIC: LINT0 delivers ExtINT (the 8259 PIC), LINT1 NMI, as a BIOS would leave them.
pub fn setup_lapic(vcpu: &VcpuFd) -> VmResult<()> {
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const APIC_MODE_EXTINT: u32 = 0x7;
    const APIC_MODE_NMI: u32 = 0x4;
    let mut lapic = vcpu.get_lapic().map_err(|e| kvm_err("KVM_GET_LAPIC", e))?;
    let set_mode = |reg: u32, mode: u32| (reg & !0x700) | (mode << 8);
    let lvt0 = lapic_reg(&lapic, APIC_LVT0);
    set_lapic_reg(&mut lapic, APIC_LVT0, set_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(&lapic, APIC_LVT1);
    set_lapic_reg(&mut lapic, APIC_LVT1, set_mode(lvt1, APIC_MODE_NMI));
    vcpu.set_lapic(&lapic)
        .map_err(|e| kvm_err("KVM_SET_LAPIC", e))
}

/// Registers, segments and FPU of the boot vCPU at the kernel's entry point.
pub fn setup_boot_vcpu(vcpu: &VcpuFd, mem: &GuestMemoryMmap, entry: EntryPoint) -> VmResult<()> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(|e| kvm_err("KVM_GET_SREGS", e))?;
    match entry {
        EntryPoint::Pvh(_) => boot::setup_protected_mode(mem, &mut sregs)?,
        EntryPoint::Linux64(_) => boot::setup_long_mode(mem, &mut sregs)?,
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| kvm_err("KVM_SET_SREGS", e))?;
    vcpu.set_regs(&boot::entry_regs(entry))
        .map_err(|e| kvm_err("KVM_SET_REGS", e))?;
    vcpu.set_fpu(&boot::boot_fpu())
        .map_err(|e| kvm_err("KVM_SET_FPU", e))
}

/// Run a vCPU until the guest ends the machine, `stop` is set (and the thread kicked), or an
/// error.
pub fn run_vcpu(
    vcpu: &mut VcpuFd,
    devices: &Devices,
    stop: &AtomicBool,
) -> VmResult<VcpuExitReason> {
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(VcpuExitReason::Stopped);
        }
        match vcpu.run() {
            Ok(exit) => match exit {
                VcpuExit::IoOut(port, data) => {
                    if let Some(reason) = devices.pio_write(port, data) {
                        return Ok(reason);
                    }
                }
                VcpuExit::IoIn(port, data) => devices.pio_read(port, data),
                VcpuExit::MmioRead(addr, data) => {
                    if !devices.mmio.read(addr, data) {
                        tracing::trace!("kvm: MMIO read from unmapped {addr:#x}");
                    }
                }
                VcpuExit::MmioWrite(addr, data) => {
                    if !devices.mmio.write(addr, data) {
                        tracing::trace!("kvm: MMIO write to unmapped {addr:#x}");
                    }
                }
                VcpuExit::Hlt => return Ok(VcpuExitReason::Halted),
                VcpuExit::Shutdown | VcpuExit::SystemEvent(..) => {
                    return Ok(VcpuExitReason::Shutdown)
                }
                VcpuExit::Intr => {}
                VcpuExit::FailEntry(reason, cpu) => {
                    return Err(VmError::Other(format!(
                        "KVM entry failed: hardware reason {reason:#x} on cpu {cpu}"
                    )))
                }
                VcpuExit::InternalError => return Err(VmError::Other("KVM internal error".into())),
                other => return Err(VmError::Other(format!("unexpected KVM exit: {other:?}"))),
            },
            // A kick (EINTR) or a spurious wakeup: look at `stop` and go again.
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(kvm_err("KVM_RUN", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::serial::IrqTrigger;
    use super::*;

    #[test]
    fn legacy_ports() {
        let d = Devices {
            serial: Mutex::new(SerialConsole::new(
                Box::new(std::io::sink()),
                IrqTrigger::new(None),
            )),
            mmio: MmioBus::default(),
        };
        assert_eq!(d.pio_write(0x64, &[0xfe]), Some(VcpuExitReason::Reset));
        assert_eq!(d.pio_write(0x64, &[0x01]), None);
        assert_eq!(d.pio_write(0x80, &[0x01]), None);
        let mut b = [0u8; 1];
        d.pio_read(0x2f8, &mut b);
        assert_eq!(b[0], 0xff);
        d.pio_read(0x64, &mut b);
        assert_eq!(b[0], 0);
    }
}
