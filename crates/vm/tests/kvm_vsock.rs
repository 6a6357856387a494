//! The KVM VMM's virtio-vsock device, driven from the guest side with virtio-queue's mock
//! split queues in real guest memory, and from the host side with real Unix sockets in the
//! hybrid-vsock convention (docs/VM.md). No KVM needed.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_vm::kvm::virtio::vsock::*;
use berth_vm::kvm::virtio::{Interrupt, VirtioDevice};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const GUEST_CID: u64 = 3;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const QLEN: u16 = 64;
const BUF: u32 = 0x1000;

/// The driver's side of the three queues, plus a bump allocator for packet buffers.
struct Driver<'a> {
    mem: &'a GuestMemoryMmap,
    rx: MockSplitQueue<'a, GuestMemoryMmap>,
    tx: MockSplitQueue<'a, GuestMemoryMmap>,
    rx_next: u16,
    tx_next: u16,
    rx_seen: u16,
    next_buf: u64,
    /// rx descriptor head index -> buffer address
    rx_bufs: Vec<(u16, u64)>,
}

impl<'a> Driver<'a> {
    fn new(mem: &'a GuestMemoryMmap) -> Self {
        Driver {
            mem,
            rx: MockSplitQueue::create(mem, GuestAddress(0x1_0000), QLEN),
            tx: MockSplitQueue::create(mem, GuestAddress(0x2_0000), QLEN),
            rx_next: 0,
            tx_next: 0,
            rx_seen: 0,
            next_buf: 0x10_0000,
            rx_bufs: Vec::new(),
        }
    }

    fn queues(&self, ev: &MockSplitQueue<'a, GuestMemoryMmap>) -> Vec<Queue> {
        vec![
            self.rx.create_queue().expect("rx"),
            self.tx.create_queue().expect("tx"),
            ev.create_queue().expect("ev"),
        ]
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let a = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(0x1000);
        a
    }

    /// Post `n` rx buffers, each one write-only descriptor for header + 4 KiB of data.
    fn post_rx(&mut self, n: u16) {
        for _ in 0..n {
            assert!(self.rx_next < QLEN / 2, "mock queue layout limit");
            let len = PKT_HEADER_SIZE_U32 + BUF;
            let addr = self.alloc(len);
            let d = RawDescriptor::from(Descriptor::new(addr, len, F_WRITE, 0));
            self.rx
                .add_desc_chains(&[d], self.rx_next)
                .expect("rx chain");
            self.rx_bufs.push((self.rx_next, addr));
            self.rx_next += 1;
        }
    }

    /// Queue a packet on tx: header and data in two descriptors when `split`, else one.
    fn send(&mut self, h: PacketHeader, data: &[u8], split: bool) {
        assert!(self.tx_next < QLEN / 2 - 1, "mock queue layout limit");
        let mut h = h;
        h.len = data.len() as u32;
        let hdr = h.to_bytes();
        if split && !data.is_empty() {
            let ha = self.alloc(hdr.len() as u32);
            let da = self.alloc(data.len() as u32);
            self.mem.write_slice(&hdr, GuestAddress(ha)).expect("hdr");
            self.mem.write_slice(data, GuestAddress(da)).expect("data");
            let i = self.tx_next;
            let descs = [
                RawDescriptor::from(Descriptor::new(ha, hdr.len() as u32, F_NEXT, i + 1)),
                RawDescriptor::from(Descriptor::new(da, data.len() as u32, 0, 0)),
            ];
            self.tx.add_desc_chains(&descs, i).expect("tx chain");
            self.tx_next += 2;
        } else {
            let total = hdr.len() + data.len();
            let a = self.alloc(total as u32);
            self.mem.write_slice(&hdr, GuestAddress(a)).expect("hdr");
            self.mem
                .write_slice(data, GuestAddress(a + hdr.len() as u64))
                .expect("data");
            let d = RawDescriptor::from(Descriptor::new(a, total as u32, 0, 0));
            self.tx
                .add_desc_chains(&[d], self.tx_next)
                .expect("tx chain");
            self.tx_next += 1;
        }
    }

    /// Packets the device put in the rx used ring since the last call.
    fn received(&mut self) -> Vec<(PacketHeader, Vec<u8>)> {
        let used = self.rx.used();
        let idx = used.idx().load();
        let mut out = Vec::new();
        while self.rx_seen != idx {
            let elem = used
                .ring()
                .ref_at(usize::from(self.rx_seen % QLEN))
                .expect("used elem")
                .load();
            self.rx_seen += 1;
            let addr = self
                .rx_bufs
                .iter()
                .find(|(i, _)| u32::from(*i) == elem.id())
                .map(|(_, a)| *a)
                .expect("known rx buffer");
            let mut hb = [0u8; 44];
            self.mem
                .read_slice(&mut hb, GuestAddress(addr))
                .expect("hdr");
            let h = PacketHeader::from_bytes(&hb).expect("header");
            assert_eq!(elem.len(), PKT_HEADER_SIZE_U32 + h.len, "used length");
            let mut data = vec![0u8; h.len as usize];
            self.mem
                .read_slice(&mut data, GuestAddress(addr + 44))
                .expect("data");
            out.push((h, data));
        }
        out
    }
}

const PKT_HEADER_SIZE_U32: u32 = 44;

fn guest_hdr(src_port: u32, dst_port: u32, op: u16) -> PacketHeader {
    PacketHeader {
        src_cid: GUEST_CID,
        dst_cid: VSOCK_HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 64 * 1024,
        fwd_cnt: 0,
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    uds: PathBuf,
    mem: Arc<GuestMemoryMmap>,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let uds = dir.path().join("vsock.sock");
    let mem = Arc::new(
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).expect("mem"),
    );
    Setup {
        _dir: dir,
        uds,
        mem,
    }
}

fn device(s: &Setup, drv: &Driver, irq: &Arc<Interrupt>) -> VsockDevice {
    let ev = MockSplitQueue::create(&*s.mem, GuestAddress(0x3_0000), QLEN);
    let mut dev = VsockDevice::new(GUEST_CID as u32, &s.uds).expect("device");
    assert_eq!(dev.device_type(), 19);
    let mut cid = [0u8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    dev.activate(s.mem.clone(), drv.queues(&ev), irq.clone())
        .expect("activate");
    dev
}

fn read_line(stream: &UnixStream) -> String {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("line");
    line
}

fn uds_port(uds: &Path, port: u32) -> PathBuf {
    let mut p = uds.as_os_str().to_owned();
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

#[test]
fn host_connect_to_guest_port_2375_round_trip() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    drv.post_rx(8);
    dev.queue_notify(RXQ as u16);

    // Host: CONNECT 2375, with the first request bytes right behind the line.
    let mut host = UnixStream::connect(&s.uds).expect("connect");
    host.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    host.write_all(b"CONNECT 2375\nGET /_ping").expect("write");
    dev.handle_host_events();

    // The guest gets a REQUEST from the host CID for its port 2375.
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let (req, _) = &got[0];
    assert_eq!(req.op, OP_REQUEST);
    assert_eq!(req.type_, TYPE_STREAM);
    assert_eq!((req.src_cid, req.dst_cid), (VSOCK_HOST_CID, GUEST_CID));
    assert_eq!(req.dst_port, 2375);
    assert!(req.src_port >= 1 << 30, "host-side port {}", req.src_port);
    assert_eq!(req.buf_alloc, CONN_BUF_ALLOC);
    assert!(irq.raised() > 0);
    let host_port = req.src_port;

    // Guest accepts: the host client reads OK <port>.
    drv.send(guest_hdr(2375, host_port, OP_RESPONSE), &[], false);
    dev.queue_notify(TXQ as u16);
    assert_eq!(read_line(&host), format!("OK {host_port}\n"));

    // The bytes that came with the CONNECT line reach the guest first.
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, OP_RW);
    assert_eq!(got[0].1, b"GET /_ping");

    // Guest -> host, header and payload in separate descriptors.
    drv.send(guest_hdr(2375, host_port, OP_RW), b"HTTP/1.1 200 OK", true);
    dev.queue_notify(TXQ as u16);
    let mut buf = [0u8; 15];
    host.read_exact(&mut buf).expect("read");
    assert_eq!(&buf, b"HTTP/1.1 200 OK");

    // Host -> guest.
    host.write_all(b"more").expect("write");
    dev.handle_host_events();
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let (h, data) = &got[0];
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RW, host_port, 2375));
    assert_eq!(data, b"more");

    // Host half-closes: the guest is told the host sends no more.
    host.shutdown(std::net::Shutdown::Write).expect("shutdown");
    dev.handle_host_events();
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.op, got[0].0.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));

    // The guest can still send after the host's half-close.
    drv.send(guest_hdr(2375, host_port, OP_RW), b"tail", false);
    dev.queue_notify(TXQ as u16);
    let mut buf = [0u8; 4];
    host.read_exact(&mut buf).expect("read tail");
    assert_eq!(&buf, b"tail");

    // The guest closes: the device answers RST and the host sees EOF.
    let mut bye = guest_hdr(2375, host_port, OP_SHUTDOWN);
    bye.flags = SHUTDOWN_RCV | SHUTDOWN_SEND;
    drv.send(bye, &[], false);
    dev.queue_notify(TXQ as u16);
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, OP_RST);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).expect("eof");
    assert!(rest.is_empty());
    assert_eq!(dev.muxer().connection_count(), 0);
}

#[test]
fn guest_rst_refuses_a_host_connect() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    drv.post_rx(4);
    let mut host = UnixStream::connect(&s.uds).expect("connect");
    host.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    host.write_all(b"CONNECT 1026\n").expect("write");
    dev.handle_host_events();
    let got = drv.received();
    assert_eq!(got[0].0.op, OP_REQUEST);
    let host_port = got[0].0.src_port;
    // Nothing listens on 1026 in the guest.
    drv.send(guest_hdr(1026, host_port, OP_RST), &[], false);
    dev.queue_notify(TXQ as u16);
    let mut rest = Vec::new();
    host.read_to_end(&mut rest).expect("eof");
    assert!(rest.is_empty(), "no OK line: {rest:?}");
}

#[test]
fn bad_connect_line_is_dropped() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    drv.post_rx(2);
    let mut host = UnixStream::connect(&s.uds).expect("connect");
    host.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    host.write_all(b"HELLO 2375\n").expect("write");
    dev.handle_host_events();
    assert!(drv.received().is_empty());
    let mut rest = String::new();
    host.read_to_string(&mut rest).expect("eof");
    assert!(rest.starts_with("ERR"), "{rest:?}");
}

#[test]
fn guest_connect_reaches_the_host_listener_on_uds_port() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    drv.post_rx(8);
    let listener = UnixListener::bind(uds_port(&s.uds, 1025)).expect("bind control");

    // berth-guest opens the control channel: REQUEST to host port 1025.
    drv.send(guest_hdr(40000, 1025, OP_REQUEST), &[], false);
    dev.queue_notify(TXQ as u16);
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let (resp, _) = &got[0];
    assert_eq!(resp.op, OP_RESPONSE);
    assert_eq!((resp.src_cid, resp.dst_cid), (VSOCK_HOST_CID, GUEST_CID));
    assert_eq!((resp.src_port, resp.dst_port), (1025, 40000));

    let (mut conn, _) = listener.accept().expect("accept");
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let ready = br#"{"type":"ready","version":"0.1.0"}"#;
    let mut line = ready.to_vec();
    line.push(b'\n');
    drv.send(guest_hdr(40000, 1025, OP_RW), &line, false);
    dev.queue_notify(TXQ as u16);
    assert_eq!(read_line(&conn).trim_end().as_bytes(), ready);

    // And the host's reply goes back.
    conn.write_all(b"{\"type\":\"shutdown\"}\n").expect("write");
    dev.handle_host_events();
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, OP_RW);
    assert_eq!(got[0].1, b"{\"type\":\"shutdown\"}\n");
}

#[test]
fn guest_connect_without_listener_gets_rst() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    drv.post_rx(2);
    drv.send(guest_hdr(40001, 4444, OP_REQUEST), &[], false);
    dev.queue_notify(TXQ as u16);
    let got = drv.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, OP_RST);
    assert_eq!((got[0].0.src_port, got[0].0.dst_port), (4444, 40001));
    // A stray RW for a connection that does not exist also gets RST.
    drv.send(guest_hdr(40002, 4445, OP_RW), b"x", false);
    dev.queue_notify(TXQ as u16);
    let got = drv.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, OP_RST);
}

#[test]
fn host_respects_the_guest_credit() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    drv.post_rx(8);
    let listener = UnixListener::bind(uds_port(&s.uds, 1025)).expect("bind");
    let mut req = guest_hdr(40000, 1025, OP_REQUEST);
    req.buf_alloc = 8; // the guest can only take 8 bytes
    drv.send(req, &[], false);
    dev.queue_notify(TXQ as u16);
    assert_eq!(drv.received()[0].0.op, OP_RESPONSE);
    let (mut conn, _) = listener.accept().expect("accept");
    conn.write_all(b"0123456789abcdefghij").expect("write");
    dev.handle_host_events();
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, b"01234567");
    // Nothing more until the guest has consumed it.
    dev.handle_host_events();
    assert!(drv.received().is_empty());
    let mut upd = guest_hdr(40000, 1025, OP_CREDIT_UPDATE);
    upd.buf_alloc = 8;
    upd.fwd_cnt = 8;
    drv.send(upd, &[], false);
    dev.queue_notify(TXQ as u16);
    dev.handle_host_events();
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, b"89abcdef");
    // A credit request (the guest still has no room) is answered with our window only.
    let mut creq = guest_hdr(40000, 1025, OP_CREDIT_REQUEST);
    creq.buf_alloc = 8;
    creq.fwd_cnt = 8;
    drv.send(creq, &[], false);
    dev.queue_notify(TXQ as u16);
    let got = drv.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.op, OP_CREDIT_UPDATE);
    assert_eq!(got[0].0.buf_alloc, CONN_BUF_ALLOC);
}

#[test]
fn no_rx_buffers_means_packets_wait() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let mut dev = device(&s, &drv, &irq);
    // No rx buffers posted: the RST for this bad request must wait for one.
    drv.send(guest_hdr(40001, 4444, OP_REQUEST), &[], false);
    dev.queue_notify(TXQ as u16);
    assert!(drv.received().is_empty());
    drv.post_rx(1);
    dev.queue_notify(RXQ as u16);
    let got = drv.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.op, OP_RST);
}

#[test]
fn event_loop_thread_serves_a_host_connect() {
    let s = setup();
    let mut drv = Driver::new(&s.mem);
    let irq = Arc::new(Interrupt::new(None));
    let dev = Arc::new(Mutex::new(device(&s, &drv, &irq)));
    drv.post_rx(4);
    let stop = Arc::new(AtomicBool::new(false));
    let t = {
        let (dev, stop) = (dev.clone(), stop.clone());
        std::thread::spawn(move || VsockDevice::run_event_loop(dev, stop))
    };
    let mut host = UnixStream::connect(&s.uds).expect("connect");
    host.write_all(b"CONNECT 2375\n").expect("write");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let _guard = dev.lock().expect("lock");
        got = drv.received();
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    t.join().expect("join");
    assert_eq!(got.len(), 1, "the loop delivered the REQUEST");
    assert_eq!((got[0].0.op, got[0].0.dst_port), (OP_REQUEST, 2375));
}
