//! A small rtnetlink client (NETLINK_ROUTE), enough for what berthd does to host networking:
//! links (bridge, veth pair with its peer made straight in a network namespace, up, master,
//! name, MAC address, namespace, delete), addresses and routes of either family, and network
//! namespaces made and entered the way iproute2 does (`/run/netns/<name>` bind mounts).
//!
//! No process is started: under emulation (the VM on TCG) each `ip` run costs 100–200 ms of
//! code translation, and natively a few ms each. Everything here is blocking but short (one
//! request and its acknowledgement on a local socket); callers run it on a blocking thread.
//! Operations inside a namespace use a socket opened from a short-lived thread that entered the
//! namespace (a netlink socket stays bound to the namespace it was created in), so no thread of
//! the process is ever left in another namespace.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

// <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>, <linux/veth.h>.
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
/// In an error message: TLVs (an extended-ack text) follow the original header.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// In an error message: the original request is not echoed, only its header.
const NLM_F_CAPPED: u16 = 0x100;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
#[allow(dead_code)]
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
/// IPv6: no duplicate address detection, so the address is usable at once (not "tentative").
const IFA_F_NODAD: u32 = 0x02;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;

const IFF_UP: u32 = 0x1;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;

/// What a netlink request failed with: the kernel's errno and, when it gave one, its
/// extended-ack text ("Nexthop has invalid gateway", ...).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}{}", std::io::Error::from_raw_os_error(*errno), ext.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel { errno: i32, ext: Option<String> },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The kernel's errno, for callers that treat one as fine (EEXIST, ENODEV, ...).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io(e) => e.raw_os_error(),
            Error::Invalid(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request being built: the netlink header, the family header, then attributes.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(kind: u16, flags: u16, family_header: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set when sent
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set when sent
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.extend_from_slice(family_header);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        let n = align4(self.buf.len());
        self.buf.resize(n, 0);
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        self.pad();
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(kind, &b)
    }

    /// Start a nested attribute; `raw` bytes (a family header) may open its payload.
    fn begin(&mut self, kind: u16, raw: &[u8]) -> &mut Self {
        self.pad();
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self.buf.extend_from_slice(raw);
        self
    }

    fn end(&mut self) -> &mut Self {
        self.pad();
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(&mut self, seq: u32) -> &[u8] {
        while !self.nests.is_empty() {
            self.end();
        }
        self.pad();
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }
}

fn ifinfomsg(family: u8, index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn ifaddrmsg(family: u8, prefix: u8, flags: u8, scope: u8, index: u32) -> [u8; IFADDRMSG_LEN] {
    let mut b = [0u8; IFADDRMSG_LEN];
    b[0] = family;
    b[1] = prefix;
    b[2] = flags;
    b[3] = scope;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

fn rtmsg(family: u8, dst_len: u8, table: u8, protocol: u8, scope: u8, kind: u8) -> [u8; RTMSG_LEN] {
    let mut b = [0u8; RTMSG_LEN];
    b[0] = family;
    b[1] = dst_len;
    b[4] = table;
    b[5] = protocol;
    b[6] = scope;
    b[7] = kind;
    b
}

fn family_of(a: &IpAddr) -> u8 {
    match a {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The attributes of one message (after its family header): (type without flags, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16_at(b, 0) as usize;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((u16_at(b, 2) & NLA_TYPE_MASK, &b[4..len]));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// Messages in one datagram: (type, flags, sequence, payload after the netlink header).
fn messages(mut b: &[u8]) -> Vec<(u16, u16, u32, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= NLMSG_HDRLEN {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        out.push((
            u16_at(b, 4),
            u16_at(b, 6),
            u32_at(b, 8),
            &b[NLMSG_HDRLEN..len],
        ));
        b = &b[align4(len).min(b.len())..];
    }
    out
}

/// The error of an NLMSG_ERROR payload (`None` for an acknowledgement).
fn parse_error(flags: u16, p: &[u8]) -> Option<Error> {
    if p.len() < 4 {
        return Some(Error::Invalid("short netlink error message".into()));
    }
    let code = i32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
    if code == 0 {
        return None;
    }
    let mut ext = None;
    if flags & NLM_F_ACK_TLVS != 0 && p.len() >= 4 + NLMSG_HDRLEN {
        // After the error code: the original message (only its header when capped), then TLVs.
        let orig_len = u32_at(p, 4) as usize;
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            align4(orig_len)
        };
        if let Some(tlvs) = p.get(4 + skip..) {
            ext = attrs(tlvs)
                .into_iter()
                .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
                .map(|(_, v)| {
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string()
                });
        }
    }
    Some(Error::Kernel {
        errno: -code,
        ext: ext.filter(|s| !s.is_empty()),
    })
}

/// A NETLINK_ROUTE socket, bound to the network namespace it was opened in.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        // SAFETY: fd is a freshly created descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a pointer to a live c_int and its size; failure (an old
        // kernel without extended acks) only loses the error texts.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                NETLINK_EXT_ACK,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        // SAFETY: sockaddr_nl is a plain C struct for which all-zero bytes are valid.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bind with a pointer to a live sockaddr_nl and its exact size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Self {
            fd,
            seq: std::process::id().wrapping_mul(7919),
        })
    }

    /// A socket in the network namespace at `path` (`/run/netns/<name>`, `/proc/<pid>/ns/net`),
    /// opened from a short-lived thread so no thread of ours stays in that namespace.
    pub fn in_netns(path: &Path) -> Result<Self> {
        let ns = open_ns(path)?;
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                Socket::open()
            })
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("netns thread panicked".into())))
        })
    }

    fn send(&mut self, m: &mut Msg) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let b = m.finish(seq);
        // SAFETY: sends `b.len()` bytes from a live buffer; the kernel is the destination
        // (unconnected netlink sockets send to port 0 by default).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(seq)
    }

    fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            // SAFETY: receives at most `buf.len()` bytes into a live, writable buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            return Ok(n as usize);
        }
    }

    /// Send a request and wait for its acknowledgement.
    fn request(&mut self, mut m: Msg) -> Result<()> {
        let seq = self.send(m.with_ack())?;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, flags, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                if kind == NLMSG_ERROR {
                    return match parse_error(flags, payload) {
                        None => Ok(()),
                        Some(e) => Err(e),
                    };
                }
            }
        }
    }

    /// Send a dump request; every reply message's payload (family header and attributes).
    fn dump(&mut self, mut m: Msg) -> Result<Vec<Vec<u8>>> {
        m.buf[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        let seq = self.send(&mut m)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, flags, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        return match parse_error(flags, payload) {
                            None => Ok(out),
                            Some(e) => Err(e),
                        }
                    }
                    NLMSG_NOOP => {}
                    _ => {
                        out.push(payload.to_vec());
                        if flags & NLM_F_MULTI == 0 {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    // ---- links ----

    /// The index of the link called `name`, or `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<i32>> {
        check_name(name)?;
        let mut m = Msg::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        let seq = self.send(&mut m)?;
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = self.recv(&mut buf)?;
            for (kind, flags, s, payload) in messages(&buf[..n]) {
                if s != seq {
                    continue;
                }
                if kind == NLMSG_ERROR {
                    return match parse_error(flags, payload) {
                        None => Ok(None),
                        Some(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
                        Some(e) => Err(e),
                    };
                }
                if kind == RTM_NEWLINK && payload.len() >= IFINFOMSG_LEN {
                    return Ok(Some(i32::from_ne_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ])));
                }
            }
        }
    }

    /// The names of every link (`ip -o link`).
    #[allow(dead_code)] // through link::link_names
    pub fn link_names(&mut self) -> Result<Vec<String>> {
        let m = Msg::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0, 0));
        let mut out = Vec::new();
        for p in self.dump(m)? {
            if p.len() < IFINFOMSG_LEN {
                continue;
            }
            if let Some((_, v)) = attrs(&p[IFINFOMSG_LEN..])
                .into_iter()
                .find(|(t, _)| *t == IFLA_IFNAME)
            {
                out.push(
                    String::from_utf8_lossy(v)
                        .trim_end_matches('\0')
                        .to_string(),
                );
            }
        }
        Ok(out)
    }

    fn index_of(&mut self, name: &str) -> Result<i32> {
        self.link_index(name)?.ok_or(Error::Kernel {
            errno: libc::ENODEV,
            ext: Some(format!("no link named {name}")),
        })
    }

    /// `ip link add NAME type bridge`.
    pub fn add_bridge(&mut self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, 0, 0),
        );
        m.attr_str(IFLA_IFNAME, name)
            .begin(IFLA_LINKINFO, &[])
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end();
        self.request(m)
    }

    /// A veth pair: `host` here (optionally enslaved to `master` and up), its peer `peer`
    /// made directly in the namespace `peer_ns` (an open namespace file; here when `None`)
    /// with MAC address `peer_mac` when given.
    pub fn add_veth(
        &mut self,
        host: &str,
        master: Option<i32>,
        up: bool,
        peer: &str,
        peer_ns: Option<&OwnedFd>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        check_name(host)?;
        check_name(peer)?;
        let flags = if up { IFF_UP } else { 0 };
        let mut m = Msg::new(
            RTM_NEWLINK,
            NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0, 0, flags, IFF_UP),
        );
        m.attr_str(IFLA_IFNAME, host);
        if let Some(mi) = master {
            m.attr_u32(IFLA_MASTER, mi as u32);
        }
        m.begin(IFLA_LINKINFO, &[])
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA, &[])
            .begin(VETH_INFO_PEER, &ifinfomsg(0, 0, 0, 0))
            .attr_str(IFLA_IFNAME, peer);
        if let Some(ns) = peer_ns {
            m.attr_u32(IFLA_NET_NS_FD, ns.as_raw_fd() as u32);
        }
        if let Some(mac) = peer_mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        m.end().end().end();
        self.request(m)
    }

    /// Change a link: any of up/down, master, new name, MAC address, namespace.
    pub fn set_link(&mut self, index: i32, change: &LinkChange) -> Result<()> {
        let (flags, mask) = match change.up {
            Some(true) => (IFF_UP, IFF_UP),
            Some(false) => (0, IFF_UP),
            None => (0, 0),
        };
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(0, index, flags, mask));
        if let Some(master) = change.master {
            m.attr_u32(IFLA_MASTER, master as u32);
        }
        if let Some(name) = &change.name {
            check_name(name)?;
            m.attr_str(IFLA_IFNAME, name);
        }
        if let Some(mac) = change.mac {
            m.attr(IFLA_ADDRESS, &mac);
        }
        if let Some(ns) = change.netns {
            m.attr_u32(IFLA_NET_NS_FD, ns as u32);
        }
        self.request(m)
    }

    /// `ip link del NAME`; a missing link is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<()> {
        check_name(name)?;
        let mut m = Msg::new(RTM_DELLINK, 0, &ifinfomsg(0, 0, 0, 0));
        m.attr_str(IFLA_IFNAME, name);
        match self.request(m) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()),
            r => r,
        }
    }

    // ---- addresses ----

    /// `ip addr replace ADDR/PREFIX dev INDEX` (IPv6 addresses without DAD, usable at once).
    pub fn add_addr(&mut self, index: i32, addr: IpAddr, prefix: u8) -> Result<()> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(Error::Invalid(format!("invalid prefix length {prefix}")));
        }
        let fam = family_of(&addr);
        let flags = if addr.is_ipv6() { IFA_F_NODAD } else { 0 };
        let mut m = Msg::new(
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_REPLACE,
            &ifaddrmsg(fam, prefix, flags as u8, RT_SCOPE_UNIVERSE, index as u32),
        );
        let o = octets(&addr);
        m.attr(IFA_LOCAL, &o).attr(IFA_ADDRESS, &o);
        if flags != 0 {
            m.attr_u32(IFA_FLAGS, flags);
        }
        self.request(m)
    }

    /// `ip addr del ADDR/PREFIX dev INDEX`; a missing address is not an error.
    #[allow(dead_code)] // through link::addr_del
    pub fn del_addr(&mut self, index: i32, addr: IpAddr, prefix: u8) -> Result<()> {
        let fam = family_of(&addr);
        let mut m = Msg::new(
            RTM_DELADDR,
            0,
            &ifaddrmsg(fam, prefix, 0, RT_SCOPE_UNIVERSE, index as u32),
        );
        let o = octets(&addr);
        m.attr(IFA_LOCAL, &o).attr(IFA_ADDRESS, &o);
        match self.request(m) {
            Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            r => r,
        }
    }

    /// The addresses of link `index` (both families): (address, prefix length).
    pub fn addrs(&mut self, index: i32) -> Result<Vec<(IpAddr, u8)>> {
        let m = Msg::new(RTM_GETADDR, 0, &ifaddrmsg(0, 0, 0, 0, 0));
        let mut out = Vec::new();
        for p in self.dump(m)? {
            if p.len() < IFADDRMSG_LEN || u32_at(&p, 4) as i32 != index {
                continue;
            }
            let (fam, prefix) = (p[0], p[1]);
            let a = attrs(&p[IFADDRMSG_LEN..]);
            // IFA_LOCAL is the address itself on point-to-point links; else IFA_ADDRESS is.
            let v = a
                .iter()
                .find(|(t, _)| *t == IFA_LOCAL)
                .or_else(|| a.iter().find(|(t, _)| *t == IFA_ADDRESS))
                .and_then(|(_, v)| ip_from(fam, v));
            if let Some(ip) = v {
                out.push((ip, prefix));
            }
        }
        Ok(out)
    }

    // ---- routes ----

    /// `ip route replace DST [via GW] [dev OIF]` in the main table. `dst` `None` is the
    /// default route; its family comes from `dst`, else from `gateway`.
    pub fn replace_route(
        &mut self,
        dst: Option<(IpAddr, u8)>,
        gateway: Option<IpAddr>,
        oif: Option<i32>,
    ) -> Result<()> {
        let fam = match (dst, gateway) {
            (Some((d, _)), _) => family_of(&d),
            (None, Some(g)) => family_of(&g),
            (None, None) => {
                return Err(Error::Invalid(
                    "a default route needs a gateway (or a destination's family)".into(),
                ))
            }
        };
        if let (Some((d, _)), Some(g)) = (dst, gateway) {
            if d.is_ipv4() != g.is_ipv4() {
                return Err(Error::Invalid(format!(
                    "route to {d} via {g}: address families differ"
                )));
            }
        }
        // A route with neither gateway nor device is not a route the kernel can use.
        let scope = if gateway.is_none() {
            RT_SCOPE_LINK
        } else {
            RT_SCOPE_UNIVERSE
        };
        let dst_len = dst.map_or(0, |(_, l)| l);
        let mut m = Msg::new(
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            &rtmsg(fam, dst_len, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST),
        );
        if let Some((d, _)) = dst {
            m.attr(RTA_DST, &octets(&d));
        }
        if let Some(g) = gateway {
            m.attr(RTA_GATEWAY, &octets(&g));
        }
        if let Some(i) = oif {
            m.attr_u32(RTA_OIF, i as u32);
        }
        self.request(m)
    }

    /// Unicast routes of every table for `family` (AF_INET / AF_INET6): (destination,
    /// prefix length); the default route is (unspecified, 0).
    pub fn routes(&mut self, family: u8) -> Result<Vec<(IpAddr, u8)>> {
        let m = Msg::new(RTM_GETROUTE, 0, &rtmsg(family, 0, 0, 0, 0, 0));
        let mut out = Vec::new();
        for p in self.dump(m)? {
            if p.len() < RTMSG_LEN || p[0] != family || p[7] != RTN_UNICAST {
                continue;
            }
            let dst_len = p[1];
            let a = attrs(&p[RTMSG_LEN..]);
            let dst = a
                .iter()
                .find(|(t, _)| *t == RTA_DST)
                .and_then(|(_, v)| ip_from(family, v))
                .unwrap_or(if family == libc::AF_INET6 as u8 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                });
            out.push((dst, dst_len));
        }
        Ok(out)
    }
}

impl Msg {
    fn with_ack(&mut self) -> &mut Self {
        let f = u16_at(&self.buf, 6) | NLM_F_ACK;
        self.buf[6..8].copy_from_slice(&f.to_ne_bytes());
        self
    }
}

/// What [`Socket::set_link`] changes; `None` fields are left alone.
#[derive(Debug, Default, Clone)]
pub struct LinkChange {
    pub up: Option<bool>,
    pub master: Option<i32>,
    pub name: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// Raw fd of an open namespace file to move the link into.
    pub netns: Option<i32>,
}

fn ip_from(family: u8, v: &[u8]) -> Option<IpAddr> {
    if family == libc::AF_INET as u8 && v.len() == 4 {
        Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
    } else if family == libc::AF_INET6 as u8 && v.len() == 16 {
        let mut o = [0u8; 16];
        o.copy_from_slice(v);
        Some(IpAddr::V6(Ipv6Addr::from(o)))
    } else {
        None
    }
}

/// Interface names: 1–15 bytes, no '/', no whitespace, no NUL (what the kernel accepts).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid interface name {name:?}")))
    }
}

/// "aa:bb:cc:dd:ee:ff" as 6 bytes.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || Error::Invalid(format!("invalid MAC address {s:?}"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

fn open_ns(path: &Path) -> Result<OwnedFd> {
    let f = fs::File::open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(OwnedFd::from(f))
}

/// An open namespace file, to pass as a veth peer's (or a moved link's) namespace.
pub fn open_netns(path: &Path) -> Result<OwnedFd> {
    open_ns(path)
}

/// Where named namespaces live, as iproute2 keeps them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `/run/netns` as iproute2 makes it: a shared mount point, so a namespace's bind mount
/// made here shows in (and its removal propagates to) mount namespaces copied later.
fn netns_dir() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let shared = || {
        mount(
            Some("none"),
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself first.
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            shared().map_err(|e| std::io::Error::from_raw_os_error(e as i32).into())
        }
        Err(e) => Err(std::io::Error::from_raw_os_error(e as i32).into()),
    }
}

/// `ip netns add NAME` plus `ip -n NAME link set lo up`: a new network namespace kept alive by
/// a bind mount at `/run/netns/NAME`. Made from a short-lived thread (unshare changes only the
/// calling thread's namespace).
pub fn netns_add(name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Invalid(format!("invalid namespace name {name:?}")));
    }
    netns_dir()?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    // The mount point; O_EXCL as iproute2 does, so two makers never share one.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let r = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            use nix::mount::{mount, MsFlags};
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            let tid = nix::unistd::gettid();
            let own = format!("/proc/self/task/{tid}/ns/net");
            mount(
                Some(own.as_str()),
                &path,
                Some("none"),
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                std::io::Error::new(
                    std::io::Error::from_raw_os_error(e as i32).kind(),
                    format!("bind-mounting {own} on {}: {e}", path.display()),
                )
            })?;
            // lo up, from inside (index 1 in a new namespace, but asked by name).
            let mut s = Socket::open()?;
            let lo = s.index_of("lo")?;
            s.set_link(
                lo,
                &LinkChange {
                    up: Some(true),
                    ..Default::default()
                },
            )
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Invalid("netns thread panicked".into())))
    });
    if let Err(e) = r {
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// `ip netns del NAME`: detach the bind mount and remove the file (the namespace goes once
/// nothing else holds it). A missing namespace is not an error.
pub fn netns_del(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::Invalid(format!("invalid namespace name {name:?}")));
    }
    let path = Path::new(NETNS_RUN_DIR).join(name);
    let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE, &ifinfomsg(0, 7, IFF_UP, IFF_UP));
        m.attr_str(IFLA_IFNAME, "br0")
            .begin(IFLA_LINKINFO, &[])
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end();
        let b = m.finish(42).to_vec();
        assert_eq!(u32_at(&b, 0) as usize, b.len());
        assert_eq!(b.len() % 4, 0);
        assert_eq!(u16_at(&b, 4), RTM_NEWLINK);
        assert_eq!(u16_at(&b, 6), NLM_F_CREATE | NLM_F_REQUEST);
        assert_eq!(u32_at(&b, 8), 42);
        assert_eq!(i32::from_ne_bytes([b[20], b[21], b[22], b[23]]), 7);
        let a = attrs(&b[NLMSG_HDRLEN + IFINFOMSG_LEN..]);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0], (IFLA_IFNAME, &b"br0\0"[..]));
        assert_eq!(a[1].0, IFLA_LINKINFO);
        // "bridge\0" is 7 bytes: 4 + 7 = 11, padded to 12 inside the nest.
        let inner = attrs(a[1].1);
        assert_eq!(inner, vec![(IFLA_INFO_KIND, &b"bridge\0"[..])]);
        assert_eq!(a[1].1.len(), 12);
    }

    #[test]
    fn nested_with_header() {
        let mut m = Msg::new(RTM_NEWLINK, 0, &ifinfomsg(0, 0, 0, 0));
        m.begin(VETH_INFO_PEER, &ifinfomsg(0, 0, 0, 0))
            .attr_str(IFLA_IFNAME, "eth0");
        let b = m.finish(1).to_vec();
        let a = attrs(&b[NLMSG_HDRLEN + IFINFOMSG_LEN..]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, VETH_INFO_PEER);
        let peer = attrs(&a[0].1[IFINFOMSG_LEN..]);
        assert_eq!(peer, vec![(IFLA_IFNAME, &b"eth0\0"[..])]);
        // The nested flag is set on the wire and masked off when read.
        assert_eq!(
            u16_at(&b, NLMSG_HDRLEN + IFINFOMSG_LEN + 2),
            VETH_INFO_PEER | NLA_F_NESTED
        );
    }

    #[test]
    fn errors() {
        let mut p = (-libc::EEXIST).to_ne_bytes().to_vec();
        p.extend_from_slice(&[0u8; 16]);
        let e = parse_error(0, &p).unwrap();
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(parse_error(0, &0i32.to_ne_bytes()).is_none());
        // Capped, with an extended-ack message.
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        let mut hdr = [0u8; 16];
        hdr[0..4].copy_from_slice(&40u32.to_ne_bytes());
        p.extend_from_slice(&hdr);
        let text = b"Nexthop has invalid gateway\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        let e = parse_error(NLM_F_ACK_TLVS | NLM_F_CAPPED, &p).unwrap();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert!(e.to_string().contains("Nexthop has invalid gateway"), "{e}");
    }

    #[test]
    fn names_and_macs() {
        assert!(check_name("berth0").is_ok());
        assert!(check_name("veth1234567890a").is_ok());
        assert!(check_name("veth1234567890ab").is_err());
        assert!(
            check_name("").is_err() && check_name("a/b").is_err() && check_name("a b").is_err()
        );
        assert_eq!(
            parse_mac("02:42:ac:11:00:02").unwrap(),
            [2, 0x42, 0xac, 0x11, 0, 2]
        );
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert!(parse_mac("02:42:ac:11:00:zz").is_err());
        assert!(parse_mac("002:42:ac:11:00:02").is_err());
    }

    #[test]
    fn parse_datagram() {
        let mut a = Msg::new(NLMSG_DONE, 0, &[0, 0, 0, 0]);
        let mut b = a.finish(5).to_vec();
        let mut c = Msg::new(RTM_NEWLINK, NLM_F_MULTI, &ifinfomsg(0, 3, 0, 0));
        b.extend_from_slice(c.finish(6));
        let m = messages(&b);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].0, m[0].2), (NLMSG_DONE, 5));
        assert_eq!((m[1].0, m[1].2), (RTM_NEWLINK, 6));
        assert_eq!(m[1].3.len(), IFINFOMSG_LEN);
        // Truncated input yields what is whole.
        assert_eq!(messages(&b[..b.len() - 1]).len(), 1);
    }

    /// The real thing, as root: a namespace, a bridge, a veth pair into the namespace with a
    /// MAC, addresses of both families, routes, then everything removed again.
    #[test]
    fn bridge_veth_netns_round_trip() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tag = format!("{:05}", std::process::id() % 100_000);
        let (br, host, ns) = (
            format!("nlb{tag}"),
            format!("nlv{tag}"),
            format!("nltest-{tag}"),
        );
        let mut s = Socket::open().unwrap();
        let _ = s.delete_link(&br);
        let _ = netns_del(&ns);
        s.add_bridge(&br).unwrap();
        assert!(s.add_bridge(&br).unwrap_err().errno() == Some(libc::EEXIST));
        let bi = s.link_index(&br).unwrap().unwrap();
        let gw = IpAddr::V4(Ipv4Addr::new(10, 250, 7, 1));
        s.add_addr(bi, gw, 24).unwrap();
        s.add_addr(bi, gw, 24).unwrap(); // replace: idempotent
        assert!(s.addrs(bi).unwrap().contains(&(gw, 24)));
        s.set_link(
            bi,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.link_names().unwrap().contains(&br));
        // A route to the bridge's subnet shows in the dump.
        assert!(s
            .routes(libc::AF_INET as u8)
            .unwrap()
            .contains(&(IpAddr::V4(Ipv4Addr::new(10, 250, 7, 0)), 24)));

        let path = netns_add(&ns).unwrap();
        assert!(
            netns_add(&ns).is_err(),
            "a second add of the same name fails (O_EXCL)"
        );
        let nsfd = open_netns(&path).unwrap();
        let mac = parse_mac("02:42:0a:fa:07:02").unwrap();
        s.add_veth(&host, Some(bi), true, "eth0", Some(&nsfd), Some(mac))
            .unwrap();
        assert!(s.link_index(&host).unwrap().is_some());
        assert!(s.link_index("eth0").unwrap().is_none_or(|i| i != bi));
        let mut c = Socket::in_netns(&path).unwrap();
        let names = c.link_names().unwrap();
        assert!(
            names.contains(&"lo".to_string()) && names.contains(&"eth0".to_string()),
            "{names:?}"
        );
        let ei = c.link_index("eth0").unwrap().unwrap();
        let a = IpAddr::V4(Ipv4Addr::new(10, 250, 7, 2));
        c.add_addr(ei, a, 24).unwrap();
        c.set_link(
            ei,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
        c.replace_route(None, Some(gw), None).unwrap();
        c.replace_route(None, Some(gw), None).unwrap(); // replace: idempotent
        let r4 = c.routes(libc::AF_INET as u8).unwrap();
        assert!(
            r4.contains(&(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            "{r4:?}"
        );
        if Path::new("/proc/sys/net/ipv6").exists() {
            let a6: IpAddr = "fd00:beef::2".parse().unwrap();
            c.add_addr(ei, a6, 64).unwrap();
            assert!(c.addrs(ei).unwrap().contains(&(a6, 64)));
            c.replace_route(None, Some("fd00:beef::1".parse().unwrap()), Some(ei))
                .unwrap();
            assert!(c
                .routes(libc::AF_INET6 as u8)
                .unwrap()
                .contains(&(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)));
            c.del_addr(ei, a6, 64).unwrap();
            c.del_addr(ei, a6, 64).unwrap();
        }
        // The MAC asked for, and a later change of it.
        c.set_link(
            ei,
            &LinkChange {
                mac: Some([2, 0x42, 10, 250, 7, 3]),
                ..Default::default()
            },
        )
        .unwrap();
        let err = c.replace_route(None, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))), None);
        assert!(err.is_err(), "an unreachable gateway is refused");

        s.delete_link(&host).unwrap();
        s.delete_link(&host).unwrap(); // absent: fine
        assert!(
            c.link_index("eth0").unwrap().is_none(),
            "the peer went with the host side"
        );
        drop(c);
        drop(nsfd);
        netns_del(&ns).unwrap();
        netns_del(&ns).unwrap();
        assert!(!path.exists());
        s.delete_link(&br).unwrap();
        assert!(s.link_index(&br).unwrap().is_none());
    }
}
