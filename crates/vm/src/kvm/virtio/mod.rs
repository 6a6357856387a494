//! virtio device model: the interface a device offers to its transport (virtio-mmio, see
//! `super::mmio`), the interrupt it raises, and the devices themselves.

pub mod block;
pub mod vsock;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::hypervisor::VmResult;

/// Feature bit: the modern (virtio 1.x) interface, the only one this VMM speaks.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const DEVICE_ACKNOWLEDGE: u32 = 1;
pub const DEVICE_DRIVER: u32 = 2;
pub const DEVICE_DRIVER_OK: u32 = 4;
pub const DEVICE_FEATURES_OK: u32 = 8;
pub const DEVICE_NEEDS_RESET: u32 = 64;
pub const DEVICE_FAILED: u32 = 128;

/// Interrupt status bits (virtio-mmio InterruptStatus).
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

/// A device's interrupt line plus the virtio-mmio InterruptStatus register behind it.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: Option<EventFd>,
    raised: AtomicU64,
}

impl Interrupt {
    /// `irqfd`: registered with KVM for the device's GSI; `None` in unit tests.
    pub fn new(irqfd: Option<EventFd>) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            irqfd,
            raised: AtomicU64::new(0),
        }
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.raised.fetch_add(1, Ordering::SeqCst);
        if let Some(fd) = &self.irqfd {
            if let Err(e) = fd.write(1) {
                tracing::warn!("virtio interrupt: {e}");
            }
        }
    }

    /// The device put buffers in a used ring.
    pub fn signal_used_queue(&self) {
        self.raise(INT_VRING)
    }

    /// The device's configuration space changed.
    pub fn signal_config_change(&self) {
        self.raise(INT_CONFIG)
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// The driver acknowledged these bits (InterruptACK).
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// How many times the interrupt was raised (tests, diagnostics).
    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::SeqCst)
    }
}

/// What a virtio device implements; the transport does feature negotiation, queue setup and
/// activation on the driver's behalf.
pub trait VirtioDevice: Send {
    /// virtio device id (19 = vsock, 2 = block, ...).
    fn device_type(&self) -> u32;
    /// Maximum size of each of the device's queues; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    fn device_features(&self) -> u64;
    /// The features the driver accepted (a subset of `device_features`).
    fn ack_features(&mut self, features: u64);
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// The driver set DRIVER_OK: the queues are configured and the device may use them.
    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> VmResult<()>;
    /// The driver notified queue `index` (it added buffers).
    fn queue_notify(&mut self, index: u16);
    /// The driver reset the device: drop the queues and any in-flight state.
    fn reset(&mut self);
}

/// Copy `data` into a config space `config` at `offset`, for `read_config` implementations;
/// out-of-range reads return zeroes.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let n = data.len().min(config.len() - start);
    data[..n].copy_from_slice(&config[start..start + n]);
}
