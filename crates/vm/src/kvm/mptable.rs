//! Intel MP table (MultiProcessor Specification 1.4) in the EBDA. Without ACPI this is how Linux
//! learns about the CPUs, the IOAPIC and the legacy interrupt routing: without it only the boot
//! CPU comes up and interrupts go through the 8259 PIC alone.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::memory::{EBDA_START, LOW_RAM_END};
use crate::hypervisor::{VmError, VmResult};

pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
pub const IO_APIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
/// KVM's in-kernel IOAPIC has 24 pins.
const IOAPIC_PINS: u8 = 24;
const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;

/// The most CPUs whose entries fit between the EBDA start and the end of low memory.
pub const MAX_CPUS: u8 = 32;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// The floating pointer plus the configuration table, to be placed at `base`.
pub fn build(num_cpus: u8, base: u64) -> VmResult<Vec<u8>> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(VmError::Other(format!(
            "{num_cpus} vCPUs: the MP table supports 1 to {MAX_CPUS}"
        )));
    }
    let ioapic_id = num_cpus + 1;
    let mut entries: Vec<u8> = Vec::new();
    let mut count: u16 = 0;
    for cpu in 0..num_cpus {
        entries.push(0); // processor
        entries.push(cpu); // local APIC id
        entries.push(APIC_VERSION);
        entries.push(if cpu == 0 { 0x3 } else { 0x1 }); // enabled, BSP
        entries.extend_from_slice(&0x0600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]); // IOAPIC, enabled
    entries.extend_from_slice(&IO_APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        // INT, default polarity/trigger, ISA bus irq `pin` -> IOAPIC pin `pin`.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, pin, ioapic_id, pin]);
        count += 1;
    }
    // LINT0 = ExtINT (the PIC), LINT1 = NMI, on every local APIC.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_len = HEADER_LEN + entries.len();
    let total = FLOATING_LEN + table_len;
    if base + total as u64 > LOW_RAM_END {
        return Err(VmError::Other(
            "the MP table does not fit below 640 KiB".into(),
        ));
    }

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&(table_len as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"BERTH   ");
    header.extend_from_slice(b"BERTH-VMM   ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length/checksum, reserved
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&((base + FLOATING_LEN as u64) as u32).to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length 1 (x16 bytes), rev 1.4
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Write the MP table for `num_cpus` at the EBDA.
pub fn setup(mem: &GuestMemoryMmap, num_cpus: u8) -> VmResult<()> {
    let bytes = build(num_cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|e| VmError::Other(format!("writing the MP table: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn table_is_well_formed() {
        let t = build(2, EBDA_START).expect("build");
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let ptr = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as u64;
        assert_eq!(ptr, EBDA_START + 16);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        // 2 CPUs + bus + IOAPIC + 24 pins + 2 local interrupts.
        assert_eq!(count, 2 + 1 + 1 + 24 + 2);
        // First processor entry is the enabled BSP with APIC id 0.
        assert_eq!(&table[44..48], &[0, 0, APIC_VERSION, 3]);
        // Second is an enabled AP with APIC id 1.
        assert_eq!(&table[64..68], &[0, 1, APIC_VERSION, 1]);
    }

    #[test]
    fn cpu_count_is_bounded() {
        assert!(build(0, EBDA_START).is_err());
        assert!(build(MAX_CPUS, EBDA_START).is_ok());
        assert!(build(MAX_CPUS + 1, EBDA_START).is_err());
    }
}
