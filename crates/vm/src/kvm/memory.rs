//! Guest physical memory: the layout every part of the VMM agrees on, and the mmap-backed RAM
//! registered with KVM.
//!
//! ```text
//! 0x0000_0500  GDT (4 entries)            0x0000_0520  IDT (empty)
//! 0x0000_6000  PVH hvm_start_info         0x0000_6040  PVH module list (initrd)
//! 0x0000_7000  PVH memory map / bzImage zero page (boot_params)
//! 0x0000_8ff0  boot stack (grows down)    0x0000_9000  PML4, 0xa000 PDPTE, 0xb000 PDE
//! 0x0002_0000  kernel command line (4 KiB)
//! 0x0009_fc00  MP table (EBDA), reserved in the memory map
//! 0x0010_0000  high memory: the kernel (ELF p_paddr, normally 16 MiB; bzImage at 1 MiB)
//! ...          initrd, at the top of low RAM
//! 0xd000_0000  MMIO gap: virtio-mmio devices, 4 KiB each, up to 4 GiB (IOAPIC/LAPIC live there too)
//! 0x1_0000_0000 RAM above the gap, when the guest has more than 3.25 GiB
//! ```

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::hypervisor::{VmError, VmResult};

pub const BOOT_GDT_START: u64 = 0x500;
pub const BOOT_IDT_START: u64 = 0x520;
pub const PVH_INFO_START: u64 = 0x6000;
pub const PVH_MODLIST_START: u64 = 0x6040;
pub const MEMMAP_START: u64 = 0x7000;
/// bzImage boot: the zero page. Shares the page with the PVH memory map: only one protocol is used.
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
pub const CMDLINE_START: u64 = 0x2_0000;
pub const CMDLINE_MAX_SIZE: usize = 4096;
/// Extended BIOS data area: Linux scans it for the MP floating pointer.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of conventional memory; 0xa0000..0x100000 is the legacy VGA/BIOS hole.
pub const LOW_RAM_END: u64 = 0xa_0000;
pub const HIMEM_START: u64 = 0x10_0000;

/// 32-bit MMIO gap below 4 GiB (devices, IOAPIC 0xfec00000, LAPIC 0xfee00000).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// virtio-mmio devices sit at the start of the gap, one 4 KiB window each.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Legacy IRQs for virtio-mmio devices start after the serial port's (4).
pub const VIRTIO_IRQ_BASE: u32 = 5;

/// KVM's TSS needs three pages of guest-physical space that is not RAM; put them just below the
/// IOAPIC, inside the gap (what Firecracker and cloud-hypervisor do).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// The RAM ranges for a guest of `size` bytes: everything from 0, split around the MMIO gap.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Anonymous mmap-backed guest RAM of `size` bytes.
pub fn create_guest_memory(size: u64) -> VmResult<Arc<GuestMemoryMmap>> {
    // The boot structures below 1 MiB, the kernel at 1-16 MiB and an initrd need room.
    if size < 2 * HIMEM_START {
        return Err(VmError::Other(format!(
            "guest memory too small: {size} bytes"
        )));
    }
    GuestMemoryMmap::from_ranges(&ram_ranges(size))
        .map(Arc::new)
        .map_err(|e| VmError::Other(format!("allocating {size} bytes of guest memory: {e}")))
}

/// Hand every RAM region to KVM, one memory slot each.
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> VmResult<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| {
                VmError::Other(format!("guest memory region without host address: {e}"))
            })?;
        let entry = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap owned by `mem`, which the VMM keeps (in an Arc) for
        // as long as the VM and its vCPUs exist; KVM only accesses it while they run.
        unsafe { vm.set_user_memory_region(entry) }.map_err(|e| VmError::Io {
            what: format!("KVM_SET_USER_MEMORY_REGION slot {slot}"),
            source: e.into(),
        })?;
    }
    Ok(())
}

/// The end of RAM below the MMIO gap (exclusive): where the initrd goes, top-down.
pub fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    let end = mem.last_addr().raw_value() + 1;
    end.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
    }

    #[test]
    fn big_guest_skips_the_mmio_gap() {
        let r = ram_ranges(4 << 30);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[0].1 + r[1].1, 4 << 30);
    }

    #[test]
    fn low_ram_end_stops_at_the_gap() {
        let mem = create_guest_memory(64 << 20).expect("64 MiB");
        assert_eq!(low_ram_end(&mem), 64 << 20);
        assert!(create_guest_memory(4096).is_err());
    }
}
