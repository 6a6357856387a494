//! The MMIO bus and the virtio-mmio transport (virtio 1.x, "version 2" register layout), which
//! turns the driver's register accesses into queue configuration and device activation.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::virtio::*;

/// "virt", little endian.
const MMIO_MAGIC_VALUE: u32 = 0x7472_6976;
const MMIO_VERSION: u32 = 2;
/// Vendor id of devices emulated by this VMM ("BRTH" would do; the value has no meaning to Linux).
const VENDOR_ID: u32 = 0x4854_5242;

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG_SPACE: u64 = 0x100;

/// Something on the MMIO bus.
pub trait MmioDevice: Send {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]);
    fn mmio_write(&mut self, offset: u64, data: &[u8]);
}

/// (base, length, device)
type BusEntry = (u64, u64, Arc<Mutex<dyn MmioDevice>>);

/// Address ranges to devices; looked up on every MMIO exit.
#[derive(Default)]
pub struct MmioBus {
    devices: Vec<BusEntry>,
}

impl MmioBus {
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<Mutex<dyn MmioDevice>>) {
        self.devices.push((base, len, device));
    }

    fn find(&self, addr: u64) -> Option<(u64, &Arc<Mutex<dyn MmioDevice>>)> {
        self.devices
            .iter()
            .find(|(base, len, _)| addr >= *base && addr - *base < *len)
            .map(|(base, _, d)| (addr - base, d))
    }

    /// Returns false when nothing is mapped at `addr` (the read then yields all ones).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                match dev.lock() {
                    Ok(mut d) => d.mmio_read(offset, data),
                    Err(_) => data.fill(0xff),
                }
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, dev)) => {
                if let Ok(mut d) = dev.lock() {
                    d.mmio_write(offset, data);
                }
                true
            }
            None => false,
        }
    }
}

fn le32(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.try_into().ok()?))
}

/// One virtio device behind the virtio-mmio register window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: Arc<GuestMemoryMmap>,
    interrupt: Arc<Interrupt>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    status: u32,
    activated: bool,
    config_generation: u32,
}

impl MmioTransport {
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: Arc<GuestMemoryMmap>,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        let queues = Self::fresh_queues(&device);
        MmioTransport {
            device,
            mem,
            interrupt,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            status: 0,
            activated: false,
            config_generation: 0,
        }
    }

    fn fresh_queues(device: &Arc<Mutex<dyn VirtioDevice>>) -> Vec<Queue> {
        let sizes: Vec<u16> = match device.lock() {
            Ok(d) => d.queue_max_sizes().to_vec(),
            Err(_) => Vec::new(),
        };
        // Queue::new only fails for sizes that are not a power of two; devices define theirs.
        sizes
            .into_iter()
            .filter_map(|s| Queue::new(s).ok())
            .collect()
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn is_activated(&self) -> bool {
        self.activated
    }

    fn with_device<R>(&self, f: impl FnOnce(&mut dyn VirtioDevice) -> R) -> Option<R> {
        match self.device.lock() {
            Ok(mut d) => Some(f(&mut *d)),
            Err(_) => None,
        }
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue configuration is only writable while the driver sets the device up.
    fn queue_config_allowed(&self) -> bool {
        self.status & DEVICE_FEATURES_OK != 0
            && self.status & DEVICE_DRIVER_OK == 0
            && self.status & DEVICE_FAILED == 0
    }

    fn reset(&mut self) {
        self.with_device(|d| d.reset());
        self.queues = Self::fresh_queues(&self.device);
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.activated = false;
        self.interrupt.ack(u32::MAX);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly = value & !self.status;
        self.status = value;
        if newly & DEVICE_FEATURES_OK != 0 {
            let features = self.driver_features;
            let offered = self.with_device(|d| d.device_features()).unwrap_or(0);
            // The driver may only accept offered features, and must accept VERSION_1.
            if features & !offered != 0 || features & VIRTIO_F_VERSION_1 == 0 {
                self.status &= !DEVICE_FEATURES_OK;
                return;
            }
            self.with_device(|d| d.ack_features(features));
        }
        if newly & DEVICE_DRIVER_OK != 0 && !self.activated {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let mem = self.mem.clone();
        let mut queues = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            if !q.is_valid(&*mem) {
                tracing::warn!("virtio-mmio: driver set DRIVER_OK with an invalid queue");
                self.status |= DEVICE_NEEDS_RESET;
                return;
            }
            // The device gets its own copy; the transport keeps the registers' view.
            match Queue::try_from(q.state()) {
                Ok(copy) => queues.push(copy),
                Err(e) => {
                    tracing::warn!("virtio-mmio: queue copy: {e}");
                    self.status |= DEVICE_NEEDS_RESET;
                    return;
                }
            }
        }
        let interrupt = self.interrupt.clone();
        match self.with_device(|d| d.activate(mem, queues, interrupt)) {
            Some(Ok(())) => self.activated = true,
            Some(Err(e)) => {
                tracing::warn!("virtio-mmio: activating the device: {e}");
                self.status |= DEVICE_NEEDS_RESET;
            }
            None => self.status |= DEVICE_NEEDS_RESET,
        }
    }
}

impl MmioDevice for MmioTransport {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            let off = offset - CONFIG_SPACE;
            if self.with_device(|d| d.read_config(off, data)).is_none() {
                data.fill(0);
            }
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            REG_MAGIC => MMIO_MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.with_device(|d| d.device_type()).unwrap_or(0),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => {
                let f = self.with_device(|d| d.device_features()).unwrap_or(0);
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            REG_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map(|q| u32::from(q.max_size()))
                .unwrap_or(0),
            REG_QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map(|q| u32::from(q.ready()))
                .unwrap_or(0),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            let off = offset - CONFIG_SPACE;
            self.with_device(|d| d.write_config(off, data));
            return;
        }
        let Some(v) = le32(data) else {
            return;
        };
        let config_ok = self.queue_config_allowed();
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => {
                if self.status & DEVICE_FEATURES_OK == 0 {
                    match self.driver_features_sel {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(v)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                        }
                        _ => {}
                    }
                }
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v as u16);
                }
            }
            REG_QUEUE_READY if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            REG_QUEUE_DESC_LOW if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_desc_table_address(Some(v), None);
                }
            }
            REG_QUEUE_DESC_HIGH if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_desc_table_address(None, Some(v));
                }
            }
            REG_QUEUE_DRIVER_LOW if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_avail_ring_address(Some(v), None);
                }
            }
            REG_QUEUE_DRIVER_HIGH if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_avail_ring_address(None, Some(v));
                }
            }
            REG_QUEUE_DEVICE_LOW if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_used_ring_address(Some(v), None);
                }
            }
            REG_QUEUE_DEVICE_HIGH if config_ok => {
                if let Some(q) = self.selected_queue() {
                    q.set_used_ring_address(None, Some(v));
                }
            }
            REG_QUEUE_NOTIFY => {
                if self.activated {
                    self.with_device(|d| d.queue_notify(v as u16));
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            _ => tracing::debug!("virtio-mmio: ignored write at {offset:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::VmResult;
    use vm_memory::GuestAddress;

    #[derive(Default)]
    struct Dummy {
        acked: u64,
        activated_with: Option<usize>,
        notified: Vec<u16>,
        resets: u32,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u32 {
            42
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16, 16]
        }
        fn device_features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1
        }
        fn ack_features(&mut self, f: u64) {
            self.acked = f;
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            read_config_bytes(&[1, 2, 3, 4, 5, 6, 7, 8], offset, data)
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(
            &mut self,
            _: Arc<GuestMemoryMmap>,
            queues: Vec<Queue>,
            _: Arc<Interrupt>,
        ) -> VmResult<()> {
            self.activated_with = Some(queues.len());
            Ok(())
        }
        fn queue_notify(&mut self, i: u16) {
            self.notified.push(i);
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    fn rd(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn wr(t: &mut MmioTransport, off: u64, v: u32) {
        t.mmio_write(off, &v.to_le_bytes());
    }

    #[test]
    fn driver_handshake_activates_the_device() {
        let mem = Arc::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem"),
        );
        let dev = Arc::new(Mutex::new(Dummy::default()));
        let irq = Arc::new(Interrupt::new(None));
        let mut t = MmioTransport::new(dev.clone(), mem, irq.clone());
        assert_eq!(rd(&mut t, REG_MAGIC), MMIO_MAGIC_VALUE);
        assert_eq!(rd(&mut t, REG_VERSION), 2);
        assert_eq!(rd(&mut t, REG_DEVICE_ID), 42);
        wr(&mut t, REG_STATUS, DEVICE_ACKNOWLEDGE | DEVICE_DRIVER);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1); // VERSION_1 is bit 32
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 1);
        wr(
            &mut t,
            REG_STATUS,
            DEVICE_ACKNOWLEDGE | DEVICE_DRIVER | DEVICE_FEATURES_OK,
        );
        assert_ne!(rd(&mut t, REG_STATUS) & DEVICE_FEATURES_OK, 0);
        for q in 0..2u32 {
            wr(&mut t, REG_QUEUE_SEL, q);
            assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 16);
            wr(&mut t, REG_QUEUE_NUM, 16);
            let base = 0x1000 * (q + 1) * 4;
            wr(&mut t, REG_QUEUE_DESC_LOW, base);
            wr(&mut t, REG_QUEUE_DRIVER_LOW, base + 0x100);
            wr(&mut t, REG_QUEUE_DEVICE_LOW, base + 0x200);
            wr(&mut t, REG_QUEUE_READY, 1);
            assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
        }
        wr(
            &mut t,
            REG_STATUS,
            DEVICE_ACKNOWLEDGE | DEVICE_DRIVER | DEVICE_FEATURES_OK | DEVICE_DRIVER_OK,
        );
        assert!(t.is_activated());
        wr(&mut t, REG_QUEUE_NOTIFY, 1);
        {
            let d = dev.lock().expect("lock");
            assert_eq!(d.acked, VIRTIO_F_VERSION_1);
            assert_eq!(d.activated_with, Some(2));
            assert_eq!(d.notified, vec![1]);
        }
        // Config space, byte-wise.
        let mut b = [0u8; 2];
        t.mmio_read(CONFIG_SPACE + 6, &mut b);
        assert_eq!(b, [7, 8]);
        // Interrupt status and ack.
        irq.signal_used_queue();
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INT_VRING);
        wr(&mut t, REG_INTERRUPT_ACK, INT_VRING);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
        // Reset.
        wr(&mut t, REG_STATUS, 0);
        assert!(!t.is_activated());
        assert_eq!(dev.lock().expect("lock").resets, 1);
    }

    #[test]
    fn features_without_version_1_are_refused() {
        let mem = Arc::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("mem"),
        );
        let dev = Arc::new(Mutex::new(Dummy::default()));
        let mut t = MmioTransport::new(dev, mem, Arc::new(Interrupt::new(None)));
        wr(&mut t, REG_STATUS, DEVICE_ACKNOWLEDGE | DEVICE_DRIVER);
        wr(&mut t, REG_DRIVER_FEATURES, 1);
        wr(
            &mut t,
            REG_STATUS,
            DEVICE_ACKNOWLEDGE | DEVICE_DRIVER | DEVICE_FEATURES_OK,
        );
        assert_eq!(rd(&mut t, REG_STATUS) & DEVICE_FEATURES_OK, 0);
    }

    #[test]
    fn bus_routes_by_address() {
        struct Echo(u8);
        impl MmioDevice for Echo {
            fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
                data.fill(self.0.wrapping_add(offset as u8));
            }
            fn mmio_write(&mut self, _: u64, data: &[u8]) {
                self.0 = data[0];
            }
        }
        let mut bus = MmioBus::default();
        bus.insert(0x1000, 0x100, Arc::new(Mutex::new(Echo(10))));
        let mut b = [0u8; 1];
        assert!(bus.read(0x1002, &mut b));
        assert_eq!(b[0], 12);
        assert!(bus.write(0x1000, &[20]));
        assert!(bus.read(0x1000, &mut b));
        assert_eq!(b[0], 20);
        assert!(!bus.read(0x1100, &mut b));
        assert_eq!(b[0], 0xff);
    }
}
