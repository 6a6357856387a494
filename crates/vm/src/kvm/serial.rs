//! The guest console: a 16550 UART (vm-superio) on COM1, port 0x3f8, IRQ 4. Port I/O exits for
//! 0x3f8..0x3ff land here; transmitted bytes go to a writer (the console log file).

use std::io::{self, Write};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

pub const SERIAL_PORT_BASE: u16 = 0x3f8;
pub const SERIAL_PORT_LEN: u16 = 8;
pub const SERIAL_IRQ: u32 = 4;

/// Raises the UART's interrupt: an irqfd bound to IRQ 4, or nothing when the VM has no
/// in-kernel interrupt controller (the tiny test guests poll).
pub struct IrqTrigger(Option<EventFd>);

impl IrqTrigger {
    pub fn new(irqfd: Option<EventFd>) -> Self {
        IrqTrigger(irqfd)
    }
}

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        match &self.0 {
            Some(fd) => fd.write(1),
            None => Ok(()),
        }
    }
}

pub type ConsoleOut = Box<dyn Write + Send>;

pub struct SerialConsole {
    uart: Serial<IrqTrigger, NoEvents, ConsoleOut>,
}

impl SerialConsole {
    pub fn new(out: ConsoleOut, irq: IrqTrigger) -> Self {
        SerialConsole {
            uart: Serial::new(irq, out),
        }
    }

    /// Whether `port` is one of the UART's eight registers.
    pub fn handles(port: u16) -> bool {
        (SERIAL_PORT_BASE..SERIAL_PORT_BASE + SERIAL_PORT_LEN).contains(&port)
    }

    /// An `out` to the UART. Only byte-wide accesses exist on a 16550; wider ones write their
    /// low byte, as the hardware would see it.
    pub fn pio_write(&mut self, port: u16, data: &[u8]) {
        let (Some(&value), Some(offset)) = (data.first(), port.checked_sub(SERIAL_PORT_BASE))
        else {
            return;
        };
        if let Err(e) = self.uart.write(offset as u8, value) {
            // A full disk must not stop the guest: the console is best effort.
            tracing::debug!("serial console write: {e:?}");
        }
    }

    /// An `in` from the UART.
    pub fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let Some(offset) = port.checked_sub(SERIAL_PORT_BASE) else {
            return;
        };
        let value = self.uart.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    /// Keyboard input for the guest (a future `berth vm console`); returns how many bytes fit.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        let n = input.len().min(self.uart.fifo_capacity());
        self.uart.enqueue_raw_bytes(&input[..n]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
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

    #[test]
    fn transmitted_bytes_reach_the_writer() {
        let out = Shared::default();
        let mut s = SerialConsole::new(Box::new(out.clone()), IrqTrigger::new(None));
        for b in b"hi\n" {
            s.pio_write(SERIAL_PORT_BASE, &[*b]);
        }
        assert_eq!(&*out.0.lock().expect("lock"), b"hi\n");
        // Line status register: transmitter empty, so a polling driver keeps going.
        let mut lsr = [0u8];
        s.pio_read(SERIAL_PORT_BASE + 5, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60);
    }

    #[test]
    fn input_is_readable_from_the_data_register() {
        let mut s = SerialConsole::new(Box::new(io::sink()), IrqTrigger::new(None));
        assert_eq!(s.enqueue_input(b"x"), 1);
        let mut b = [0u8];
        s.pio_read(SERIAL_PORT_BASE, &mut b);
        assert_eq!(b[0], b'x');
    }
}
