//! Direct kernel boot: load the kernel (ELF vmlinux, preferably through its PVH entry note, or a
//! bzImage), the initrd and the command line, write the boot information the entry protocol
//! expects (PVH `hvm_start_info`, or the Linux zero page), and compute the vCPU's initial
//! segments, page tables and registers.

use std::fs::File;
use std::path::Path;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{load_cmdline, BzImage, Error as LoaderError, KernelLoader};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::memory::*;
use crate::hypervisor::{VmError, VmResult};

/// What every Berth guest gets before the caller's parameters: the console on the serial port
/// the VMM emulates, reboot through the keyboard controller (the VMM's exit signal, there is no
/// ACPI), no PCI probing (devices are virtio-mmio).
pub const BASE_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// The 64-bit entry of a bzImage's protected-mode kernel is 0x200 past its load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryPoint {
    /// PVH: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh(GuestAddress),
    /// Linux 64-bit boot protocol: long mode, identity-mapped low memory, `rsi` = zero page.
    Linux64(GuestAddress),
}

/// Where the kernel's pieces ended up.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: EntryPoint,
    /// bzImage setup header (to copy into the zero page); `None` for an ELF kernel.
    pub setup_header: Option<setup_header>,
    pub kernel_end: u64,
}

fn loader_err(what: &str, e: impl std::fmt::Display) -> VmError {
    VmError::Other(format!("{what}: {e}"))
}

/// Load an ELF vmlinux (PVH entry when it has the note, else the 64-bit Linux entry) or, when
/// the file is not ELF, a bzImage.
pub fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> VmResult<LoadedKernel> {
    let mut file = File::open(path).map_err(|e| VmError::Io {
        what: format!("opening kernel {}", path.display()),
        source: e,
    })?;
    let himem = Some(GuestAddress(HIMEM_START));
    match Elf::load(mem, None, &mut file, himem) {
        Ok(res) => {
            let entry = match res.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => EntryPoint::Pvh(addr),
                _ => EntryPoint::Linux64(res.kernel_load),
            };
            Ok(LoadedKernel {
                entry,
                setup_header: None,
                kernel_end: res.kernel_end,
            })
        }
        Err(LoaderError::Elf(ElfError::InvalidElfMagicNumber)) => {
            let res = BzImage::load(mem, None, &mut file, himem)
                .map_err(|e| loader_err(&format!("loading kernel {}", path.display()), e))?;
            Ok(LoadedKernel {
                entry: EntryPoint::Linux64(GuestAddress(
                    res.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET,
                )),
                setup_header: res.setup_header,
                kernel_end: res.kernel_end,
            })
        }
        Err(e) => Err(loader_err(
            &format!("loading ELF kernel {}", path.display()),
            e,
        )),
    }
}

/// Copy the initrd to the top of low RAM (page aligned, below 2 GiB so any boot protocol
/// version can reach it), above the kernel. Returns its address and size.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    kernel_end: u64,
) -> VmResult<(GuestAddress, usize)> {
    let mut file = File::open(path).map_err(|e| VmError::Io {
        what: format!("opening initrd {}", path.display()),
        source: e,
    })?;
    let size = file
        .metadata()
        .map_err(|e| VmError::Io {
            what: format!("stat {}", path.display()),
            source: e,
        })?
        .len();
    let top = low_ram_end(mem).min(0x8000_0000);
    let start = top
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|&a| a >= kernel_end)
        .ok_or_else(|| {
            VmError::Other(format!(
                "initrd {} ({size} bytes) does not fit in guest memory above the kernel",
                path.display()
            ))
        })?;
    mem.read_exact_volatile_from(GuestAddress(start), &mut file, size as usize)
        .map_err(|e| loader_err(&format!("reading initrd {}", path.display()), e))?;
    Ok((GuestAddress(start), size as usize))
}

/// The full command line: `BASE_CMDLINE`, one `virtio_mmio.device=` per device (base, irq),
/// then the caller's parameters.
pub fn build_cmdline(extra: &str, mmio_devices: &[(u64, u32)]) -> VmResult<Cmdline> {
    let mut cmdline =
        Cmdline::new(CMDLINE_MAX_SIZE).map_err(|e| loader_err("kernel command line", e))?;
    cmdline
        .insert_str(BASE_CMDLINE)
        .map_err(|e| loader_err("kernel command line", e))?;
    for &(base, irq) in mmio_devices {
        cmdline
            .add_virtio_mmio_device(VIRTIO_MMIO_SIZE, GuestAddress(base), irq, None)
            .map_err(|e| loader_err("kernel command line (virtio-mmio device)", e))?;
    }
    let extra = extra.trim();
    if !extra.is_empty() {
        cmdline
            .insert_str(extra)
            .map_err(|e| loader_err(&format!("kernel command line {extra:?}"), e))?;
    }
    Ok(cmdline)
}

/// Write the command line at `CMDLINE_START`; returns its length including the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &Cmdline) -> VmResult<usize> {
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)
        .map_err(|e| loader_err("writing the kernel command line", e))?;
    let len = cmdline
        .as_cstring()
        .map_err(|e| loader_err("kernel command line", e))?
        .as_bytes_with_nul()
        .len();
    Ok(len)
}

/// The guest's physical memory map (e820 types): low RAM, the EBDA (MP table) reserved,
/// high RAM up to the gap, and RAM above 4 GiB.
pub fn memory_map(mem: &GuestMemoryMmap) -> Vec<(u64, u64, u32)> {
    let end = mem.last_addr().raw_value() + 1;
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, LOW_RAM_END - EBDA_START, E820_RESERVED),
    ];
    let low_end = end.min(MMIO_GAP_START);
    map.push((HIMEM_START, low_end - HIMEM_START, E820_RAM));
    if end > MMIO_GAP_END {
        map.push((MMIO_GAP_END, end - MMIO_GAP_END, E820_RAM));
    }
    map
}

/// PVH: `hvm_start_info` at `PVH_INFO_START`, the initrd as module 0, the memory map at
/// `MEMMAP_START`.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<(GuestAddress, usize)>,
) -> VmResult<()> {
    let memmap: Vec<hvm_memmap_table_entry> = memory_map(mem)
        .into_iter()
        .map(|(addr, size, type_)| hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        })
        .collect();
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    if initrd.is_some() {
        start_info.nr_modules = 1;
        start_info.modlist_paddr = PVH_MODLIST_START;
    }
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_INFO_START));
    if let Some((addr, size)) = initrd {
        params.set_modules(
            &[hvm_modlist_entry {
                paddr: addr.raw_value(),
                size: size as u64,
                ..Default::default()
            }],
            GuestAddress(PVH_MODLIST_START),
        );
    }
    params.set_sections(&memmap, GuestAddress(MEMMAP_START));
    PvhBootConfigurator::write_bootparams(&params, mem)
        .map_err(|e| loader_err("writing PVH start info", e))
}

/// Linux boot protocol: the zero page at `ZERO_PAGE_START`, from the bzImage's setup header
/// when there is one, else a minimal one (ELF vmlinux without PVH note).
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(GuestAddress, usize)>,
) -> VmResult<()> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        params.hdr.ramdisk_image = addr.raw_value() as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let map = memory_map(mem);
    if map.len() > params.e820_table.len() {
        return Err(VmError::Other("too many e820 entries".into()));
    }
    for (slot, (addr, size, type_)) in params.e820_table.iter_mut().zip(map.iter()) {
        *slot = boot_e820_entry {
            addr: *addr,
            size: *size,
            r#type: *type_,
        };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams(
        &BootParams::new(&params, GuestAddress(ZERO_PAGE_START)),
        mem,
    )
    .map_err(|e| loader_err("writing the zero page", e))
}

/// A GDT entry from flags, base and limit (the layout of the x86 segment descriptor).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((flags as u64 & 0x0000_f0ff) << 40)
}

/// The `kvm_segment` KVM wants for GDT entry `index`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

fn write_gdt(mem: &GuestMemoryMmap, gdt: &[u64; 4], sregs: &mut kvm_sregs) -> VmResult<()> {
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(|e| loader_err("writing the GDT", e))?;
    }
    // An empty IDT: nothing may fault before the kernel installs its own.
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|e| loader_err("writing the IDT", e))?;
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    Ok(())
}

/// PVH entry state: flat 32-bit segments, protection on, paging off.
pub fn setup_protected_mode(mem: &GuestMemoryMmap, sregs: &mut kvm_sregs) -> VmResult<()> {
    let gdt = [
        gdt_entry(0, 0, 0),
        gdt_entry(0xc09b, 0, 0xffff_ffff), // code, 32-bit, 4 GiB
        gdt_entry(0xc093, 0, 0xffff_ffff), // data
        gdt_entry(0x008b, 0, 0x67),        // TSS
    ];
    write_gdt(mem, &gdt, sregs)?;
    sregs.cr0 = X86_CR0_PE;
    sregs.cr4 = 0;
    sregs.efer = 0;
    Ok(())
}

/// Long mode: 64-bit code segment, identity-mapped first GiB (2 MiB pages), PAE + paging on.
pub fn setup_long_mode(mem: &GuestMemoryMmap, sregs: &mut kvm_sregs) -> VmResult<()> {
    let gdt = [
        gdt_entry(0, 0, 0),
        gdt_entry(0xa09b, 0, 0xfffff), // code, 64-bit
        gdt_entry(0xc093, 0, 0xfffff), // data
        gdt_entry(0x808b, 0, 0xfffff), // TSS
    ];
    write_gdt(mem, &gdt, sregs)?;
    let pt = |e| loader_err("writing the page tables", e);
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))
        .map_err(pt)?;
    mem.write_obj(PDE_START | 0x03, GuestAddress(PDPTE_START))
        .map_err(pt)?;
    for i in 0..512u64 {
        // Present, writable, 2 MiB page.
        mem.write_obj((i << 21) | 0x83, GuestAddress(PDE_START + i * 8))
            .map_err(pt)?;
    }
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    Ok(())
}

/// General registers at the entry point.
pub fn entry_regs(entry: EntryPoint) -> kvm_regs {
    match entry {
        EntryPoint::Pvh(addr) => kvm_regs {
            rflags: 0x2,
            rip: addr.raw_value(),
            rbx: PVH_INFO_START,
            ..Default::default()
        },
        EntryPoint::Linux64(addr) => kvm_regs {
            rflags: 0x2,
            rip: addr.raw_value(),
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_START,
            ..Default::default()
        },
    }
}

/// The x87/SSE state Linux expects at boot (control words at their reset values).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_flat_segments() {
        let code = segment_from_gdt(gdt_entry(0xa09b, 0, 0xfffff), 1);
        assert_eq!(code.selector, 8);
        assert_eq!((code.l, code.db, code.present, code.s), (1, 0, 1, 1));
        assert_eq!(code.type_, 0xb);
        assert_eq!(code.limit, 0xffff_ffff);
        assert_eq!(code.base, 0);
        let code32 = segment_from_gdt(gdt_entry(0xc09b, 0, 0xffff_ffff), 1);
        assert_eq!((code32.l, code32.db, code32.g), (0, 1, 1));
        let tss = segment_from_gdt(gdt_entry(0x008b, 0x1234_5678, 0x67), 3);
        assert_eq!(tss.base, 0x1234_5678);
        assert_eq!(tss.limit, 0x67);
        assert_eq!(tss.selector, 24);
        let null = segment_from_gdt(0, 0);
        assert_eq!(null.unusable, 1);
    }

    #[test]
    fn cmdline_has_base_devices_and_extra() {
        let c = build_cmdline(
            "berth.net=user berth.time=5",
            &[(VIRTIO_MMIO_BASE, VIRTIO_IRQ_BASE)],
        )
        .expect("cmdline");
        let s = c
            .as_cstring()
            .expect("cstring")
            .into_string()
            .expect("utf8");
        assert_eq!(
            s,
            "console=ttyS0 reboot=k panic=1 pci=off virtio_mmio.device=4K@0xd0000000:5 berth.net=user berth.time=5"
        );
    }

    #[test]
    fn pvh_start_info_points_at_cmdline_initrd_and_memmap() {
        let mem = create_guest_memory(64 << 20).expect("mem");
        write_pvh_start_info(&mem, Some((GuestAddress(0x300_0000), 1234))).expect("write");
        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).expect("read");
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.nr_modules, 1);
        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).expect("m");
        assert_eq!((module.paddr, module.size), (0x300_0000, 1234));
        assert_eq!(info.memmap_entries, 3);
        let hi: hvm_memmap_table_entry = mem
            .read_obj(GuestAddress(MEMMAP_START + 2 * 24))
            .expect("memmap");
        assert_eq!(
            (hi.addr, hi.size, hi.type_),
            (HIMEM_START, (64 << 20) - HIMEM_START, 1)
        );
    }

    #[test]
    fn zero_page_has_cmdline_initrd_and_e820() {
        let mem = create_guest_memory(64 << 20).expect("mem");
        write_zero_page(&mem, None, 42, Some((GuestAddress(0x200_0000), 99))).expect("write");
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).expect("read");
        let (ptr, size, img, rsz, entries) = (
            p.hdr.cmd_line_ptr,
            p.hdr.cmdline_size,
            p.hdr.ramdisk_image,
            p.hdr.ramdisk_size,
            p.e820_entries,
        );
        assert_eq!((ptr, size), (CMDLINE_START as u32, 42));
        assert_eq!((img, rsz), (0x200_0000, 99));
        assert_eq!(entries, 3);
        let magic = p.hdr.header;
        assert_eq!(magic, KERNEL_HDR_MAGIC);
    }

    #[test]
    fn long_mode_identity_maps_the_first_gib() {
        let mem = create_guest_memory(16 << 20).expect("mem");
        let mut sregs = kvm_sregs::default();
        setup_long_mode(&mem, &mut sregs).expect("setup");
        assert_eq!(sregs.cr3, PML4_START);
        assert_ne!(sregs.efer & EFER_LMA, 0);
        let pde5: u64 = mem.read_obj(GuestAddress(PDE_START + 5 * 8)).expect("pde");
        assert_eq!(pde5, (5 << 21) | 0x83);
        let gdt1: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).expect("gdt");
        assert_eq!(gdt1, gdt_entry(0xa09b, 0, 0xfffff));
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_ram() {
        let mem = create_guest_memory(16 << 20).expect("mem");
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("initrd");
        std::fs::write(&p, vec![7u8; 5000]).expect("write");
        let (addr, size) = load_initrd(&mem, &p, 0x20_0000).expect("load");
        assert_eq!(size, 5000);
        assert_eq!(addr.raw_value(), ((16 << 20) - 5000) & !0xfff);
        let mut b = [0u8; 1];
        mem.read_slice(&mut b, addr.unchecked_add(4999))
            .expect("read");
        assert_eq!(b[0], 7);
        // Above the kernel's end or not at all.
        assert!(load_initrd(&mem, &p, 16 << 20).is_err());
    }
}
