//! The KVM VMM's virtio-blk device over a real image file, driven with virtio-queue's mock
//! split queue the way Linux's driver lays requests out (header, data, status descriptors).
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::Arc;

use berth_vm::kvm::virtio::block::*;
use berth_vm::kvm::virtio::{Interrupt, VirtioDevice};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

struct Rig<'a> {
    mem: &'a GuestMemoryMmap,
    q: MockSplitQueue<'a, GuestMemoryMmap>,
    next: u16,
    seen: u16,
}

impl<'a> Rig<'a> {
    /// Queue one request: header, optional data (device-writable for reads), status byte.
    fn request(&mut self, kind: u32, sector: u64, data_len: u32, data_writable: bool) {
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&hdr, GuestAddress(HDR)).expect("hdr");
        self.mem
            .write_obj(0xffu8, GuestAddress(STATUS))
            .expect("status");
        let i = self.next;
        let mut descs = vec![RawDescriptor::from(Descriptor::new(HDR, 16, F_NEXT, i + 1))];
        if data_len > 0 {
            let flags = F_NEXT | if data_writable { F_WRITE } else { 0 };
            descs.push(RawDescriptor::from(Descriptor::new(
                DATA,
                data_len,
                flags,
                i + 2,
            )));
        }
        descs.push(RawDescriptor::from(Descriptor::new(STATUS, 1, F_WRITE, 0)));
        self.next += descs.len() as u16;
        self.q.add_desc_chains(&descs, i).expect("chain");
    }

    /// (used length, status byte) of the next completed request.
    fn completed(&mut self) -> (u32, u8) {
        let used = self.q.used();
        assert_ne!(used.idx().load(), self.seen, "a request completed");
        let elem = used
            .ring()
            .ref_at(usize::from(self.seen))
            .expect("elem")
            .load();
        self.seen += 1;
        let status: u8 = self.mem.read_obj(GuestAddress(STATUS)).expect("status");
        (elem.len(), status)
    }
}

#[test]
fn reads_writes_flushes_and_ids() {
    let dir = tempfile::tempdir().expect("tmp");
    let img = dir.path().join("data.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(1 << 20))
        .expect("image");
    let mem = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).expect("mem"),
    );
    let mut dev = BlockDevice::new(&img).expect("device");
    assert_eq!(dev.device_type(), 2);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), (1 << 20) / 512);
    assert_ne!(dev.device_features() & VIRTIO_BLK_F_FLUSH, 0);

    let mut rig = Rig {
        mem: &mem,
        q: MockSplitQueue::create(&*mem, GuestAddress(0x1_0000), 64),
        next: 0,
        seen: 0,
    };
    let irq = Arc::new(Interrupt::new(None));
    dev.activate(
        mem.clone(),
        vec![rig.q.create_queue().expect("queue")],
        irq.clone(),
    )
    .expect("activate");

    // Write sector 3.
    let mut payload = vec![0u8; 512];
    payload[..5].copy_from_slice(b"hello");
    mem.write_slice(&payload, GuestAddress(DATA)).expect("data");
    rig.request(VIRTIO_BLK_T_OUT, 3, 512, false);
    dev.queue_notify(0);
    assert_eq!(rig.completed(), (1, VIRTIO_BLK_S_OK));
    let on_disk = std::fs::read(&img).expect("read image");
    assert_eq!(&on_disk[3 * 512..3 * 512 + 5], b"hello");
    assert!(irq.raised() > 0);

    // Read it back into zeroed guest memory.
    mem.write_slice(&[0u8; 512], GuestAddress(DATA))
        .expect("zero");
    rig.request(VIRTIO_BLK_T_IN, 3, 512, true);
    dev.queue_notify(0);
    assert_eq!(rig.completed(), (513, VIRTIO_BLK_S_OK));
    let mut back = [0u8; 5];
    mem.read_slice(&mut back, GuestAddress(DATA)).expect("read");
    assert_eq!(&back, b"hello");

    rig.request(VIRTIO_BLK_T_FLUSH, 0, 0, false);
    dev.queue_notify(0);
    assert_eq!(rig.completed(), (1, VIRTIO_BLK_S_OK));

    rig.request(VIRTIO_BLK_T_GET_ID, 0, 20, true);
    dev.queue_notify(0);
    assert_eq!(rig.completed(), (21, VIRTIO_BLK_S_OK));
    let mut id = [0u8; 10];
    mem.read_slice(&mut id, GuestAddress(DATA)).expect("id");
    assert_eq!(&id, b"berth-data");

    // Past the end of the disk.
    rig.request(VIRTIO_BLK_T_IN, (1 << 20) / 512, 512, true);
    dev.queue_notify(0);
    assert_eq!(rig.completed().1, VIRTIO_BLK_S_IOERR);

    // Unknown request type.
    rig.request(99, 0, 0, false);
    dev.queue_notify(0);
    assert_eq!(rig.completed().1, VIRTIO_BLK_S_UNSUPP);
}
