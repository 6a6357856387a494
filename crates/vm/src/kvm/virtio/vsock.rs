//! virtio-vsock device (id 19) whose host side is the hybrid-vsock Unix socket of docs/VM.md
//! (Firecracker's convention):
//!
//! - a host process connects to `<uds>` and writes `CONNECT <port>\n`; the device sends the
//!   guest an `OP_REQUEST` for that port from a fresh host port; when the guest answers
//!   `OP_RESPONSE` the host gets `OK <host port>\n` and the stream carries the connection's bytes;
//!   an `OP_RST` closes the Unix stream instead;
//! - a guest connection to host port P (CID 2) becomes a Unix connection to `<uds>_P`:
//!   `OP_RESPONSE` when it connects, `OP_RST` when nothing listens.
//!
//! Data flows as `OP_RW` packets with virtio-vsock's credit flow control: the host never sends
//! more than the guest advertised (`buf_alloc` minus what it has not consumed), and advertises
//! `CONN_BUF_ALLOC` bytes of its own, buffering what the Unix stream does not take at once.
//! Half-close maps to `OP_SHUTDOWN` (EOF on the Unix stream -> SHUTDOWN/SEND to the guest;
//! SHUTDOWN/SEND from the guest -> `shutdown(Write)` on the stream).
//!
//! Threads: the vCPU thread calls `queue_notify` (through the transport) and the event loop
//! (`run_event_loop`) waits on the Unix sockets; both go through the same `Mutex`. Nothing here
//! blocks: every socket is non-blocking and the loop polls without holding the lock.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{read_config_bytes, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::hypervisor::{VmError, VmResult};

pub const VIRTIO_ID_VSOCK: u32 = 19;
/// The host's context id, always.
pub const VSOCK_HOST_CID: u64 = 2;

pub const TYPE_STREAM: u16 = 1;
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

pub const RXQ: usize = 0;
pub const TXQ: usize = 1;
pub const EVQ: usize = 2;
const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 3] = [QUEUE_SIZE; 3];

/// What each connection advertises to the guest: bytes it may send before we consume them.
pub const CONN_BUF_ALLOC: u32 = 256 * 1024;
/// Largest payload accepted from, or put into, one packet.
pub const MAX_PKT_DATA: u32 = 64 * 1024;
/// Host ports handed to host-initiated connections start here (Firecracker's choice), far
/// from the ports guests listen on.
const LOCAL_PORT_BASE: u32 = 1 << 30;
/// The `CONNECT <port>\n` line is short; a longer one is a protocol error.
const MAX_CONNECT_LINE: usize = 32;

/// A vsock packet header, host-endian (the wire format is the packed little-endian
/// `virtio_vsock_hdr` that `virtio_vsock::packet` reads and writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl PacketHeader {
    fn of<B: BitmapSlice>(p: &VsockPacket<'_, B>) -> Self {
        PacketHeader {
            src_cid: p.src_cid(),
            dst_cid: p.dst_cid(),
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            len: p.len(),
            type_: p.type_(),
            op: p.op(),
            flags: p.flags(),
            buf_alloc: p.buf_alloc(),
            fwd_cnt: p.fwd_cnt(),
        }
    }

    fn store<B: BitmapSlice>(&self, p: &mut VsockPacket<'_, B>) {
        p.set_src_cid(self.src_cid)
            .set_dst_cid(self.dst_cid)
            .set_src_port(self.src_port)
            .set_dst_port(self.dst_port)
            .set_len(self.len)
            .set_type(self.type_)
            .set_op(self.op)
            .set_flags(self.flags)
            .set_buf_alloc(self.buf_alloc)
            .set_fwd_cnt(self.fwd_cnt);
    }

    /// The 44-byte wire form.
    pub fn to_bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Parse the wire form; `None` when `b` is shorter than a header.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; PKT_HEADER_SIZE] = b.get(..PKT_HEADER_SIZE)?.try_into().ok()?;
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().unwrap_or([0; 2]));
        Some(PacketHeader {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }
}

/// Parse `CONNECT <port>` (without the newline).
pub fn parse_connect_line(line: &[u8]) -> Option<u32> {
    let s = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let port = s.strip_prefix("CONNECT ")?;
    port.trim().parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Host-initiated: REQUEST sent, waiting for the guest's RESPONSE.
    Connecting,
    Established,
}

/// (host port, guest port)
type ConnKey = (u32, u32);

struct Connection {
    stream: UnixStream,
    state: ConnState,
    /// Bytes read from the Unix stream before the connection was up (after the CONNECT line).
    prefix: Vec<u8>,
    /// Host -> guest: bytes sent, and the guest's advertised window.
    tx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The Unix stream hit EOF; SHUTDOWN/SEND was sent.
    host_eof: bool,
    /// The guest will not receive any more.
    guest_shut_rcv: bool,
    /// Guest -> host: bytes not yet written to the stream.
    pending: VecDeque<u8>,
    /// Bytes of guest data written to the stream (what we advertise as `fwd_cnt`).
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    /// The guest will not send any more: shut the stream's write side once `pending` drains.
    guest_shut_send: bool,
    write_shut: bool,
}

impl Connection {
    fn new(stream: UnixStream, state: ConnState) -> Self {
        Connection {
            stream,
            state,
            prefix: Vec::new(),
            tx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            host_eof: false,
            guest_shut_rcv: false,
            pending: VecDeque::new(),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            guest_shut_send: false,
            write_shut: false,
        }
    }

    /// How many bytes the guest can take now.
    fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    fn wants_to_send(&self) -> bool {
        self.state == ConnState::Established
            && !self.host_eof
            && !self.guest_shut_rcv
            && self.peer_credit() > 0
    }

    /// Write as much of `pending` as the stream takes. Err: the stream is gone.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.pending.is_empty() {
            let (a, _) = self.pending.as_slices();
            match self.stream.write(a) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.pending.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.pending.is_empty() && self.guest_shut_send && !self.write_shut {
            self.write_shut = true;
            // The reader sees EOF: the half-close the Docker API's attach streams rely on.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }
}

/// A host client that connected to the Unix socket and has not finished its CONNECT line.
struct PendingHost {
    stream: UnixStream,
    line: Vec<u8>,
}

/// The connection table between guest vsock ports and host Unix sockets.
pub struct VsockMuxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    pending_hosts: Vec<PendingHost>,
    conns: HashMap<ConnKey, Connection>,
    /// Header-only packets waiting for an rx buffer.
    rx_ctrl: VecDeque<PacketHeader>,
    next_local_port: u32,
    /// Round-robin position for data packets, so one busy stream does not starve the others.
    rr_after: Option<ConnKey>,
}

impl VsockMuxer {
    /// Listen on `uds_path` (a stale socket file from a previous run is replaced).
    pub fn new(guest_cid: u64, uds_path: &Path) -> VmResult<Self> {
        let _ = std::fs::remove_file(uds_path);
        let listener = UnixListener::bind(uds_path).map_err(|e| VmError::Io {
            what: format!("listening on {}", uds_path.display()),
            source: e,
        })?;
        listener.set_nonblocking(true).map_err(|e| VmError::Io {
            what: "non-blocking vsock listener".into(),
            source: e,
        })?;
        Ok(VsockMuxer {
            guest_cid,
            uds_path: uds_path.to_path_buf(),
            listener,
            pending_hosts: Vec::new(),
            conns: HashMap::new(),
            rx_ctrl: VecDeque::new(),
            next_local_port: LOCAL_PORT_BASE,
            rr_after: None,
        })
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn header(&self, key: ConnKey, op: u16, flags: u32) -> PacketHeader {
        let fwd_cnt = self.conns.get(&key).map(|c| c.fwd_cnt.0).unwrap_or(0);
        PacketHeader {
            src_cid: VSOCK_HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: CONN_BUF_ALLOC,
            fwd_cnt,
        }
    }

    fn push_ctrl(&mut self, key: ConnKey, op: u16, flags: u32) {
        let h = self.header(key, op, flags);
        if let Some(c) = self.conns.get_mut(&key) {
            c.last_fwd_cnt_sent = c.fwd_cnt;
        }
        self.rx_ctrl.push_back(h);
    }

    fn reset(&mut self, key: ConnKey) {
        self.conns.remove(&key);
        self.push_ctrl(key, OP_RST, 0);
    }

    /// After guest data was written to a stream: tell the guest about freed space once a
    /// quarter of its window was consumed, so a sender blocked on credit resumes.
    fn maybe_credit_update(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        if (c.fwd_cnt - c.last_fwd_cnt_sent).0 >= CONN_BUF_ALLOC / 4 {
            self.push_ctrl(key, OP_CREDIT_UPDATE, 0);
        }
    }

    /// Whether there is anything to put in the rx queue right now, or maybe soon.
    pub fn has_rx(&self) -> bool {
        !self.rx_ctrl.is_empty() || self.conns.values().any(|c| c.wants_to_send())
    }

    /// A packet the guest sent (tx queue).
    pub fn handle_guest_packet(&mut self, h: &PacketHeader, data: &[u8]) {
        if h.type_ != TYPE_STREAM || h.src_cid != self.guest_cid || h.dst_cid != VSOCK_HOST_CID {
            if h.op != OP_RST {
                let key = (h.dst_port, h.src_port);
                self.push_ctrl(key, OP_RST, 0);
            }
            return;
        }
        let key: ConnKey = (h.dst_port, h.src_port);
        if !self.conns.contains_key(&key) {
            match h.op {
                OP_REQUEST => self.guest_connect(key, h),
                OP_RST => {}
                // Anything else for an unknown connection: tell the guest it is gone.
                _ => self.push_ctrl(key, OP_RST, 0),
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = Wrapping(h.fwd_cnt);
        }
        match h.op {
            OP_RESPONSE => self.guest_accepted(key),
            OP_RW => self.guest_data(key, data),
            OP_SHUTDOWN => self.guest_shutdown(key, h.flags),
            OP_RST => {
                // Dropping the stream closes it; a host client waiting for `OK` sees EOF.
                self.conns.remove(&key);
            }
            OP_CREDIT_REQUEST => self.push_ctrl(key, OP_CREDIT_UPDATE, 0),
            // The credit fields were taken above.
            OP_CREDIT_UPDATE => {}
            OP_REQUEST => {
                // A second REQUEST on a live connection: protocol error.
                self.reset(key);
            }
            _ => self.reset(key),
        }
    }

    /// The guest connects to host port `key.0`: reach `<uds>_<port>`.
    fn guest_connect(&mut self, key: ConnKey, h: &PacketHeader) {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.0));
        let stream = UnixStream::connect(&path).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match stream {
            Ok(s) => {
                let mut c = Connection::new(s, ConnState::Established);
                c.peer_buf_alloc = h.buf_alloc;
                c.peer_fwd_cnt = Wrapping(h.fwd_cnt);
                self.conns.insert(key, c);
                self.push_ctrl(key, OP_RESPONSE, 0);
            }
            Err(e) => {
                tracing::debug!("vsock: guest connect to host port {}: {e}", key.0);
                self.push_ctrl(key, OP_RST, 0);
            }
        }
    }

    fn guest_accepted(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.state != ConnState::Connecting {
            self.reset(key);
            return;
        }
        c.state = ConnState::Established;
        // Tiny and the first write on a fresh socket: it fits the socket buffer at once.
        let ok = format!("OK {}\n", key.0);
        if c.stream.write_all(ok.as_bytes()).is_err() {
            self.reset(key);
        }
    }

    fn guest_data(&mut self, key: ConnKey, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if c.state != ConnState::Established || c.guest_shut_send {
            return;
        }
        if c.pending.len() + data.len() > CONN_BUF_ALLOC as usize {
            // The guest ignored our window.
            tracing::warn!("vsock: guest overran the window on port {}", key.0);
            self.reset(key);
            return;
        }
        c.pending.extend(data);
        if c.flush().is_err() {
            self.reset(key);
            return;
        }
        self.maybe_credit_update(key);
    }

    fn guest_shutdown(&mut self, key: ConnKey, flags: u32) {
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        if flags & SHUTDOWN_RCV != 0 {
            c.guest_shut_rcv = true;
        }
        if flags & SHUTDOWN_SEND != 0 {
            c.guest_shut_send = true;
        }
        if c.flush().is_err() {
            self.reset(key);
            return;
        }
        self.maybe_close(key);
    }

    /// Both directions are finished: the guest closed (or shut both ways) and everything it
    /// sent reached the stream. The guest expects an RST to release its socket.
    fn maybe_close(&mut self, key: ConnKey) {
        let Some(c) = self.conns.get(&key) else {
            return;
        };
        let guest_done = c.guest_shut_rcv && c.guest_shut_send;
        let host_done = c.host_eof && c.guest_shut_send;
        if (guest_done || host_done) && c.pending.is_empty() {
            self.reset(key);
        }
    }

    /// The next packet for the guest: a control packet, else data from a stream that has some.
    /// `buf` receives the payload (at most its length); returns the header, whose `len` says
    /// how much of `buf` is used.
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<PacketHeader> {
        if let Some(h) = self.rx_ctrl.pop_front() {
            return Some(h);
        }
        let mut keys: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| c.wants_to_send())
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        if let Some(last) = self.rr_after {
            let split = keys.partition_point(|k| *k <= last);
            keys.rotate_left(split);
        }
        for key in keys {
            let Some(c) = self.conns.get_mut(&key) else {
                continue;
            };
            let max = buf.len().min(c.peer_credit() as usize);
            if max == 0 {
                continue;
            }
            let n = if !c.prefix.is_empty() {
                let n = max.min(c.prefix.len());
                buf[..n].copy_from_slice(&c.prefix[..n]);
                c.prefix.drain(..n);
                n
            } else {
                match c.stream.read(&mut buf[..max]) {
                    Ok(0) => {
                        c.host_eof = true;
                        self.rr_after = Some(key);
                        let flags = if c.guest_shut_send {
                            SHUTDOWN_SEND | SHUTDOWN_RCV
                        } else {
                            SHUTDOWN_SEND
                        };
                        let h = self.header(key, OP_SHUTDOWN, flags);
                        return Some(h);
                    }
                    Ok(n) => n,
                    Err(e)
                        if e.kind() == ErrorKind::WouldBlock
                            || e.kind() == ErrorKind::Interrupted =>
                    {
                        continue
                    }
                    Err(_) => {
                        self.conns.remove(&key);
                        return Some(self.header(key, OP_RST, 0));
                    }
                }
            };
            c.tx_cnt += Wrapping(n as u32);
            c.last_fwd_cnt_sent = c.fwd_cnt;
            self.rr_after = Some(key);
            let mut h = self.header(key, OP_RW, 0);
            h.len = n as u32;
            return Some(h);
        }
        None
    }

    /// Accept new host clients, read their CONNECT lines, flush buffered guest data. Called
    /// when the event loop's poll says something is ready; every step is non-blocking.
    pub fn handle_host_events(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_ok() {
                        self.pending_hosts.push(PendingHost {
                            stream: s,
                            line: Vec::new(),
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let hosts = std::mem::take(&mut self.pending_hosts);
        for mut ph in hosts {
            match read_connect_line(&mut ph) {
                LineState::Partial => self.pending_hosts.push(ph),
                LineState::Bad => {}
                LineState::Done(port, rest) => {
                    let local = self.alloc_local_port(port);
                    let key = (local, port);
                    let mut c = Connection::new(ph.stream, ConnState::Connecting);
                    c.prefix = rest;
                    self.conns.insert(key, c);
                    self.push_ctrl(key, OP_REQUEST, 0);
                }
            }
        }
        let keys: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.pending.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let failed = self.conns.get_mut(&key).map(|c| c.flush().is_err());
            if failed == Some(true) {
                self.reset(key);
                continue;
            }
            self.maybe_credit_update(key);
            self.maybe_close(key);
        }
    }

    fn alloc_local_port(&mut self, peer: u32) -> u32 {
        loop {
            let p = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(LOCAL_PORT_BASE);
            if !self.conns.contains_key(&(p, peer)) {
                return p;
            }
        }
    }

    /// The descriptors to poll: the listener and CONNECT-line readers for input, streams
    /// with data to send to the guest (`rx_room`: the guest posted rx buffers) and streams
    /// with buffered output.
    pub fn poll_fds(&self, rx_room: bool) -> Vec<libc::pollfd> {
        let mut fds = vec![libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        for ph in &self.pending_hosts {
            fds.push(libc::pollfd {
                fd: ph.stream.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in self.conns.values() {
            let mut events = 0;
            if rx_room && c.wants_to_send() {
                events |= libc::POLLIN;
            }
            if !c.pending.is_empty() {
                events |= libc::POLLOUT;
            }
            if events != 0 {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events,
                    revents: 0,
                });
            }
        }
        fds
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

enum LineState {
    Partial,
    Bad,
    /// The port, and bytes that followed the newline.
    Done(u32, Vec<u8>),
}

fn read_connect_line(ph: &mut PendingHost) -> LineState {
    let mut buf = [0u8; 64];
    loop {
        match ph.stream.read(&mut buf) {
            Ok(0) => return LineState::Bad,
            Ok(n) => {
                ph.line.extend_from_slice(&buf[..n]);
                if let Some(nl) = ph.line.iter().position(|b| *b == b'\n') {
                    let rest = ph.line.split_off(nl + 1);
                    return match parse_connect_line(&ph.line[..nl]) {
                        Some(port) => LineState::Done(port, rest),
                        None => {
                            let _ = ph.stream.write_all(b"ERR bad CONNECT line\n");
                            LineState::Bad
                        }
                    };
                }
                if ph.line.len() > MAX_CONNECT_LINE {
                    return LineState::Bad;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return LineState::Partial,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return LineState::Bad,
        }
    }
}

struct Active {
    mem: Arc<GuestMemoryMmap>,
    queues: Vec<Queue>,
    interrupt: Arc<Interrupt>,
}

/// The virtio-vsock device: config space (the guest CID), three queues (rx, tx, event), and
/// the muxer behind them.
pub struct VsockDevice {
    guest_cid: u64,
    acked_features: u64,
    muxer: VsockMuxer,
    active: Option<Active>,
    /// Wakes the event loop so it recomputes what to poll (new rx buffers, new data to flush).
    wake: EventFd,
    /// Reused for payloads between the Unix streams and guest memory.
    scratch: Vec<u8>,
}

impl VsockDevice {
    pub fn new(guest_cid: u32, uds_path: &Path) -> VmResult<Self> {
        let wake = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::Io {
            what: "vsock wake eventfd".into(),
            source: e,
        })?;
        Ok(VsockDevice {
            guest_cid: u64::from(guest_cid),
            acked_features: 0,
            muxer: VsockMuxer::new(u64::from(guest_cid), uds_path)?,
            active: None,
            wake,
            scratch: vec![0; MAX_PKT_DATA as usize],
        })
    }

    pub fn muxer(&self) -> &VsockMuxer {
        &self.muxer
    }

    /// Take the guest's packets from the tx queue to the muxer. Returns whether any buffer
    /// was used (the caller then interrupts the guest).
    pub fn process_tx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = active.mem.clone();
        let mut used = false;
        while let Some(mut chain) = active.queues[TXQ].pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            match VsockPacket::from_tx_virtq_chain(&*mem, &mut chain, MAX_PKT_DATA) {
                Ok(pkt) => {
                    let h = PacketHeader::of(&pkt);
                    let n = (h.len as usize).min(self.scratch.len());
                    let data = match pkt.data_slice() {
                        Some(s) if n > 0 => match s.read_slice(&mut self.scratch[..n], 0) {
                            Ok(()) => &self.scratch[..n],
                            Err(_) => &[][..],
                        },
                        _ => &[][..],
                    };
                    self.muxer.handle_guest_packet(&h, data);
                }
                Err(e) => tracing::debug!("vsock: bad tx packet: {e}"),
            }
            if let Err(e) = active.queues[TXQ].add_used(&*mem, head, 0) {
                tracing::warn!("vsock: tx add_used: {e}");
            }
            used = true;
        }
        used
    }

    /// Fill the guest's rx buffers with whatever the muxer has. Returns whether any was used.
    pub fn process_rx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mem = active.mem.clone();
        let mut used = false;
        while self.muxer.has_rx() {
            let Some(mut chain) = active.queues[RXQ].pop_descriptor_chain(&*mem) else {
                break;
            };
            let head = chain.head_index();
            let len = match VsockPacket::from_rx_virtq_chain(&*mem, &mut chain, MAX_PKT_DATA) {
                Ok(mut pkt) => {
                    let room = pkt
                        .data_slice()
                        .map(|s| s.len())
                        .unwrap_or(0)
                        .min(self.scratch.len());
                    match self.muxer.next_rx(&mut self.scratch[..room]) {
                        Some(h) => {
                            let n = h.len as usize;
                            if n > 0 {
                                if let Some(s) = pkt.data_slice() {
                                    if let Err(e) = s.write_slice(&self.scratch[..n], 0) {
                                        tracing::warn!("vsock: rx data: {e}");
                                    }
                                }
                            }
                            h.store(&mut pkt);
                            (PKT_HEADER_SIZE + n) as u32
                        }
                        None => {
                            // Every readable stream would have blocked: give the buffer back.
                            active.queues[RXQ].go_to_previous_position();
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("vsock: bad rx buffer: {e}");
                    0
                }
            };
            if let Err(e) = active.queues[RXQ].add_used(&*mem, head, len) {
                tracing::warn!("vsock: rx add_used: {e}");
            }
            used = true;
        }
        used
    }

    fn notify_guest(&mut self, queue: usize) {
        if let Some(a) = self.active.as_mut() {
            // Without EVENT_IDX this checks the driver's NO_INTERRUPT flag.
            if a.queues[queue].needs_notification(&*a.mem).unwrap_or(true) {
                a.interrupt.signal_used_queue();
            }
        }
    }

    /// One round of host-side work: sockets, then the rx queue.
    pub fn handle_host_events(&mut self) {
        self.muxer.handle_host_events();
        if self.process_rx() {
            self.notify_guest(RXQ);
        }
    }

    /// Whether the guest has posted rx buffers we have not used yet.
    fn rx_room(&self) -> bool {
        let Some(a) = self.active.as_ref() else {
            return false;
        };
        let q = &a.queues[RXQ];
        match q.avail_idx(&*a.mem, Ordering::Acquire) {
            Ok(idx) => idx.0 != q.next_avail(),
            Err(_) => false,
        }
    }

    /// The event loop: poll the Unix sockets (without holding the device lock), then handle
    /// what is ready. Runs until `stop`.
    pub fn run_event_loop(dev: Arc<Mutex<VsockDevice>>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let Some((mut fds, wake_fd)) = dev.lock().ok().map(|d| {
                let mut fds = d.muxer.poll_fds(d.rx_room());
                fds.push(libc::pollfd {
                    fd: d.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                (fds, d.wake.as_raw_fd())
            }) else {
                return;
            };
            // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd
            // structs for the duration of the call. A descriptor closed meanwhile by the vCPU
            // thread only yields POLLNVAL, after which the set is rebuilt.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
            if n <= 0 {
                continue;
            }
            if let Some(w) = fds.iter().find(|p| p.fd == wake_fd) {
                if w.revents != 0 {
                    if let Ok(d) = dev.lock() {
                        let _ = d.wake.read();
                    }
                }
            }
            let Ok(mut d) = dev.lock() else {
                return;
            };
            d.handle_host_events();
        }
    }

    fn wake_loop(&self) {
        let _ = self.wake.write(1);
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn device_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_vsock_config { le64 guest_cid; }
        read_config_bytes(&self.guest_cid.to_le_bytes(), offset, data)
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Read-only config space.
    }

    fn activate(
        &mut self,
        mem: Arc<GuestMemoryMmap>,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
    ) -> VmResult<()> {
        if queues.len() != QUEUE_SIZES.len() {
            return Err(VmError::Other(format!(
                "vsock needs {} queues, got {}",
                QUEUE_SIZES.len(),
                queues.len()
            )));
        }
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        self.wake_loop();
        Ok(())
    }

    fn queue_notify(&mut self, index: u16) {
        match index as usize {
            TXQ => {
                if self.process_tx() {
                    self.notify_guest(TXQ);
                }
                // tx may have produced replies (RESPONSE, RST, credit updates).
                if self.process_rx() {
                    self.notify_guest(RXQ);
                }
            }
            RXQ if self.process_rx() => self.notify_guest(RXQ),
            // Event queue buffers are only used for transport resets, which never happen.
            _ => {}
        }
        self.wake_loop();
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_through_bytes() {
        let h = PacketHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1234,
            dst_port: 1025,
            len: 5,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 4096,
            fwd_cnt: 7,
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), 44);
        assert_eq!(&b[20..24], &1025u32.to_le_bytes());
        assert_eq!(PacketHeader::from_bytes(&b), Some(h));
        assert_eq!(PacketHeader::from_bytes(&b[..40]), None);
    }

    #[test]
    fn connect_lines() {
        assert_eq!(parse_connect_line(b"CONNECT 2375"), Some(2375));
        assert_eq!(parse_connect_line(b"CONNECT 1026\r"), Some(1026));
        assert_eq!(parse_connect_line(b"connect 1"), None);
        assert_eq!(parse_connect_line(b"CONNECT x"), None);
        assert_eq!(parse_connect_line(b"CONNECT 99999999999"), None);
    }
}
