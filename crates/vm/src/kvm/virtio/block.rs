//! virtio-blk device (id 2) over a raw image file: the guest's `/dev/vda`, Berth's data disk.
//!
//! Requests are served synchronously on the thread that notifies the queue (the vCPU's), with
//! positional reads and writes on the file; `flush` is `fdatasync`. Simple, and enough for one
//! disk whose writes the guest page cache batches.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{read_config_bytes, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::hypervisor::{VmError, VmResult};

pub const VIRTIO_ID_BLOCK: u32 = 2;
/// The device has a write cache the driver can flush.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const SECTOR_SIZE: u64 = 512;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// GET_ID answers with up to 20 bytes.
const ID_BYTES: usize = 20;
const QUEUE_SIZES: [u16; 1] = [256];
/// Largest single request accepted (the bounce buffer's bound).
const MAX_REQUEST: usize = 4 << 20;

struct Active {
    mem: Arc<GuestMemoryMmap>,
    queue: Queue,
    interrupt: Arc<Interrupt>,
}

pub struct BlockDevice {
    file: File,
    sectors: u64,
    id: [u8; ID_BYTES],
    active: Option<Active>,
}

impl BlockDevice {
    /// Open `path` read-write; its size (rounded down to sectors) is the disk's capacity.
    pub fn new(path: &Path) -> VmResult<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| VmError::Io {
                what: format!("opening disk {}", path.display()),
                source: e,
            })?;
        let len = file
            .metadata()
            .map_err(|e| VmError::Io {
                what: format!("stat {}", path.display()),
                source: e,
            })?
            .len();
        let mut id = [0u8; ID_BYTES];
        let name = b"berth-data";
        id[..name.len()].copy_from_slice(name);
        Ok(BlockDevice {
            file,
            sectors: len / SECTOR_SIZE,
            id,
            active: None,
        })
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.sectors
    }

    /// Serve one request; returns the bytes written into the chain (data + status).
    fn serve(&self, mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> u32 {
        let (Ok(mut reader), Ok(mut writer)) = (chain.clone().reader(mem), chain.writer(mem))
        else {
            return 0;
        };
        let mut header = [0u8; 16];
        if reader.read_exact(&mut header).is_err() || writer.available_bytes() == 0 {
            return 0;
        }
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        // The last writable byte is the status; the writable bytes before it are IN data.
        let data_room = writer.available_bytes() - 1;
        let (status, written) = match kind {
            VIRTIO_BLK_T_IN => match self.read_sectors(sector, data_room) {
                Some(buf) => match writer.write_all(&buf) {
                    Ok(()) => (VIRTIO_BLK_S_OK, buf.len()),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                },
                None => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_OUT => {
                let len = reader.available_bytes();
                let mut buf = vec![0u8; len.min(MAX_REQUEST)];
                let ok = len <= MAX_REQUEST
                    && reader.read_exact(&mut buf).is_ok()
                    && self.write_sectors(sector, &buf);
                (
                    if ok {
                        VIRTIO_BLK_S_OK
                    } else {
                        VIRTIO_BLK_S_IOERR
                    },
                    0,
                )
            }
            VIRTIO_BLK_T_FLUSH => match self.file.sync_data() {
                Ok(()) => (VIRTIO_BLK_S_OK, 0),
                Err(_) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_GET_ID => {
                let n = ID_BYTES.min(data_room);
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        // Skip any IN room not filled, so the status lands in the last byte.
        let filled = writer.bytes_written();
        let status_at = data_room.saturating_sub(filled);
        if status_at > 0 {
            let _ = writer.write_all(&vec![0u8; status_at]);
        }
        if writer.write_all(&[status]).is_err() {
            return 0;
        }
        (written + 1) as u32
    }

    /// Read `len` bytes at `sector`; `None` when out of range or on an I/O error.
    fn read_sectors(&self, sector: u64, len: usize) -> Option<Vec<u8>> {
        if len > MAX_REQUEST || !self.in_range(sector, len) {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, sector * SECTOR_SIZE)
            .ok()?;
        Some(buf)
    }

    fn write_sectors(&self, sector: u64, data: &[u8]) -> bool {
        self.in_range(sector, data.len())
            && self.file.write_all_at(data, sector * SECTOR_SIZE).is_ok()
    }

    fn in_range(&self, sector: u64, len: usize) -> bool {
        let sectors = (len as u64).div_ceil(SECTOR_SIZE);
        sector
            .checked_add(sectors)
            .is_some_and(|end| end <= self.sectors)
    }

    /// Serve everything in the queue; returns whether any request completed.
    pub fn process_queue(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = active.mem.clone();
        let mut done = Vec::new();
        while let Some(chain) = active.queue.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            done.push((head, chain));
        }
        let mut used = false;
        for (head, chain) in done {
            let len = self.serve(&mem, chain);
            if let Some(a) = self.active.as_mut() {
                if let Err(e) = a.queue.add_used(&*mem, head, len) {
                    tracing::warn!("virtio-blk add_used: {e}");
                }
                used = true;
            }
        }
        if used {
            if let Some(a) = self.active.as_mut() {
                if a.queue.needs_notification(&*mem).unwrap_or(true) {
                    a.interrupt.signal_used_queue();
                }
            }
        }
        used
    }
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config { le64 capacity; ... }: only the capacity is offered.
        read_config_bytes(&self.sectors.to_le_bytes(), offset, data)
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        mut queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> VmResult<()> {
        let queue = queues
            .pop()
            .filter(|_| queues.is_empty())
            .ok_or_else(|| VmError::Other("virtio-blk needs exactly one queue".into()))?;
        self.active = Some(Active {
            mem,
            queue,
            interrupt,
        });
        Ok(())
    }

    fn queue_notify(&mut self, _index: u16) {
        self.process_queue();
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
