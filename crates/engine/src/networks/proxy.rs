//! Published ports: a userspace proxy per binding (TCP and UDP), bound before the container
//! starts so a taken port fails the start cleanly, and dropped when it stops.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub host_ip: IpAddr,
    /// 0 = choose a free port.
    pub host_port: u16,
    /// The end of a host port range (`8000-8010:80`): the first free port of the range is
    /// taken. Equal to `host_port` for a single port.
    pub host_port_end: u16,
    pub proto: String,
    pub container_port: u16,
}

/// Proxy tasks per container.
#[derive(Default)]
pub struct Proxies {
    tasks: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

/// Bound but not yet registered with any runtime: the forwarding runs on the proxy threads.
enum Bound {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

/// Listen backlog of a published TCP port, as Go's listener (docker-proxy) takes somaxconn.
const BACKLOG: u32 = 4096;

fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    // `listen` registers with the caller's runtime; `into_std` takes it back out.
    s.listen(BACKLOG)?.into_std()
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let u = std::net::UdpSocket::bind(addr)?;
    u.set_nonblocking(true)?;
    Ok(u)
}

/// The threads the published ports are forwarded on, each a single-threaded runtime of its
/// own; a listener and all its connections stay on one of them (round robin over listeners).
/// Off the engine's runtime, a port's traffic does not queue behind API work, and a connection's
/// wake-ups never hop between threads: the thread that epoll wakes is the one that runs the
/// task (the engine's work-stealing runtime woke a second worker per burst of events and moved
/// tasks across, which costs most under a loaded machine, when every wake-up waits for a CPU).
struct ProxyThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

fn proxy_runtime() -> Handle {
    static THREADS: OnceLock<ProxyThreads> = OnceLock::new();
    let t = THREADS.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let mut handles = Vec::new();
        for i in 0..n {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                break;
            };
            let h = rt.handle().clone();
            let spawned = std::thread::Builder::new()
                .name(format!("berth-proxy-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()));
            if spawned.is_ok() {
                handles.push(h);
            }
        }
        if handles.is_empty() {
            tracing::warn!("port proxy: no thread of its own, forwarding on the engine's runtime");
        }
        ProxyThreads {
            handles,
            next: AtomicUsize::new(0),
        }
    });
    if t.handles.is_empty() {
        return Handle::current();
    }
    let i = t.next.fetch_add(1, Ordering::Relaxed) % t.handles.len();
    t.handles[i].clone()
}

impl Proxies {
    /// Bind every binding, then start forwarding to `target`. Returns the bindings with the
    /// host ports actually bound. Nothing stays bound when one fails.
    pub async fn start(
        &self,
        container: &str,
        endpoint: &str,
        target: Ipv4Addr,
        bindings: &[Binding],
    ) -> Result<Vec<Binding>> {
        let mut bound = Vec::new();
        let mut out = Vec::new();
        for b in bindings {
            let mut r = Err(std::io::Error::from(std::io::ErrorKind::AddrInUse));
            for p in b.host_port..=b.host_port_end.max(b.host_port) {
                let addr = SocketAddr::new(b.host_ip, p);
                r = match b.proto.as_str() {
                    "udp" => bind_udp(addr).map(Bound::Udp),
                    _ => bind_tcp(addr).map(Bound::Tcp),
                };
                if r.is_ok() {
                    break;
                }
            }
            let s = r.map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                    "port is already allocated".to_string()
                } else {
                    e.to_string()
                };
                let port = if b.host_port_end > b.host_port {
                    format!("{}-{}", b.host_port, b.host_port_end)
                } else {
                    b.host_port.to_string()
                };
                EngineError::Internal(format!(
                    "driver failed programming external connectivity on endpoint {endpoint} ({container}): Bind for {}:{port} failed: {why}",
                    b.host_ip
                ))
            })?;
            let port = match &s {
                Bound::Tcp(l) => l.local_addr()?.port(),
                Bound::Udp(u) => u.local_addr()?.port(),
            };
            out.push(Binding {
                host_port: port,
                host_port_end: port,
                ..b.clone()
            });
            bound.push((s, b.container_port));
        }
        let mut tasks = Vec::new();
        for (s, cport) in bound {
            let dst = SocketAddr::new(IpAddr::V4(target), cport);
            // Registered with the reactor of the proxy thread it will run on.
            tasks.push(proxy_runtime().spawn(async move {
                let e = match s {
                    Bound::Tcp(l) => match TcpListener::from_std(l) {
                        Ok(l) => return tcp(l, dst).await,
                        Err(e) => e,
                    },
                    Bound::Udp(u) => match UdpSocket::from_std(u) {
                        Ok(u) => return udp(Arc::new(u), dst).await,
                        Err(e) => e,
                    },
                };
                tracing::warn!(%dst, error = %e, "port proxy: cannot register the socket");
            }));
        }
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(container.to_string())
            .or_default()
            .extend(tasks);
        Ok(out)
    }

    /// Stop forwarding; returns once the host ports are closed (a task's listener is dropped
    /// only when the aborted task has been reaped).
    pub async fn stop(&self, container: &str) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container);
        for t in tasks.unwrap_or_default() {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Accept and forward; the connections live in a JoinSet owned by this task, so aborting the
/// listener task (container stop) also closes every proxied connection, as docker-proxy exits.
async fn tcp(l: TcpListener, dst: SocketAddr) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            acc = l.accept() => {
                let Ok((inbound, _)) = acc else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                conns.spawn(forward(inbound, dst));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One proxied connection: TCP_NODELAY on both sides (as docker-proxy, being Go, has), one pump
/// per direction. A side's EOF half-closes the other side (`shutdown(SHUT_WR)`) and the other
/// direction carries on; an error in either direction closes both sockets.
async fn forward(inbound: TcpStream, dst: SocketAddr) {
    let _ = inbound.set_nodelay(true);
    let out = match connect(dst).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%dst, error = %e, "proxy: container port unreachable");
            return;
        }
    };
    if let Err(e) = tokio::try_join!(pump(&inbound, &out), pump(&out, &inbound)) {
        tracing::trace!(%dst, error = %e, "proxy: connection closed on error");
    }
}

/// How long a handshake with the container may take before the SYN is sent again, doubling per
/// attempt; after the last one the kernel's own retransmissions (1 s, 2 s, …) take over.
const SYN_RETRY: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(400),
];

/// Connect to the container. To a container on the local bridge the handshake takes
/// microseconds and has usually completed inside connect(2) already (then no trip through the
/// reactor is needed). When it has not after 100 ms, the SYN was dropped: the container's
/// listen queue was full (busybox httpd listens with a backlog of 9, and a forking server falls
/// behind under load). The kernel would send it again only after its initial RTO of 1 s, meant
/// for paths of unknown RTT, so a client behind the proxy (docker-proxy included) waits a whole
/// second; instead the attempt is dropped and a fresh SYN sent, after 100, 200, 400 ms. Closing
/// a socket still in SYN-SENT sends nothing the server's application can see (a late SYN-ACK
/// gets a reset; the server queues a connection only once the handshake's ACK arrives).
async fn connect(dst: SocketAddr) -> std::io::Result<TcpStream> {
    for wait in SYN_RETRY {
        let s = connect_started(dst)?;
        if s.peer_addr().is_ok() {
            return Ok(s);
        }
        if tokio::time::timeout(wait, s.writable()).await.is_ok() || s.peer_addr().is_ok() {
            return established(s);
        }
        tracing::trace!(%dst, ?wait, "proxy: no answer to the SYN, sending it again");
    }
    let s = connect_started(dst)?;
    s.writable().await?;
    established(s)
}

/// A connect that has finished: established, or refused/unreachable.
fn established(s: TcpStream) -> std::io::Result<TcpStream> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    s.peer_addr()?;
    Ok(s)
}

/// A non-blocking connect(2) to `dst`, started and not waited for.
fn connect_started(dst: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let fam = if dst.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        fam,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let r = match dst {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `fd` is a socket this function owns; the address is a fully initialised
            // sockaddr_in on the stack, passed with its own size, and connect(2) only reads it.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, with a fully initialised sockaddr_in6.
            unsafe {
                libc::connect(
                    fd.as_raw_fd(),
                    (&sa as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) {
            return Err(e);
        }
    }
    let s = TcpStream::from_std(std::net::TcpStream::from(fd))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// First reads of a direction go through this userspace buffer; small exchanges (requests,
/// short responses) never create a pipe.
const COPY_BUF: usize = 16 * 1024;

/// Copy `src` → `dst` until EOF on `src`, then half-close `dst`. Starts with read/write through
/// a buffer; a read that fills the buffer means a bulk transfer, and the rest goes through
/// splice(2) (unless the kernel refuses it for these sockets).
async fn pump(src: &TcpStream, dst: &TcpStream) -> std::io::Result<()> {
    use nix::sys::socket::{recv, MsgFlags};
    let sfd = src.as_raw_fd();
    let mut splice_ok = true;
    let mut bulk = false;
    let mut buf = Vec::new();
    loop {
        if bulk && splice_ok {
            match splice_pump(src, dst).await? {
                Spliced::Eof => break,
                Spliced::Unsupported => splice_ok = false,
            }
        }
        if buf.is_empty() {
            buf = vec![0u8; COPY_BUF];
        }
        let n = io_op(src, Interest::READABLE, || {
            Ok(recv(sfd, &mut buf, MsgFlags::empty())?)
        })
        .await?;
        if n == 0 {
            break;
        }
        send_all(dst, &buf[..n]).await?;
        bulk = n == buf.len();
        if bulk && splice_ok {
            buf = Vec::new();
        }
    }
    match nix::sys::socket::shutdown(dst.as_raw_fd(), nix::sys::socket::Shutdown::Write) {
        Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn send_all(s: &TcpStream, buf: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{send, MsgFlags};
    let fd = s.as_raw_fd();
    let mut off = 0;
    while off < buf.len() {
        match io_op(s, Interest::WRITABLE, || {
            Ok(send(fd, &buf[off..], MsgFlags::MSG_NOSIGNAL)?)
        })
        .await?
        {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            m => off += m,
        }
    }
    Ok(())
}

/// One non-blocking syscall on `s`, the way Go's netpoller (docker-proxy) does it: try it
/// first, and wait for tokio's readiness only when it says EAGAIN, so a request or response that
/// is already there costs no trip through the reactor. `f` must report EAGAIN only about `s`
/// (tokio then clears the readiness it cached for `s`).
async fn io_op(
    s: &TcpStream,
    interest: Interest,
    mut f: impl FnMut() -> std::io::Result<usize>,
) -> std::io::Result<usize> {
    use std::io::ErrorKind::{Interrupted, WouldBlock};
    loop {
        match f() {
            Err(e) if e.kind() == Interrupted => continue,
            Err(e) if e.kind() == WouldBlock => break,
            r => return r,
        }
    }
    loop {
        s.ready(interest).await?;
        match s.try_io(interest, &mut f) {
            Err(e) if matches!(e.kind(), WouldBlock | Interrupted) => continue,
            r => return r,
        }
    }
}

/// splice(2) without blocking (the sockets and the pipe are non-blocking anyway).
fn splice(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    // SAFETY: plain syscall on two descriptors the caller keeps open for the duration of the
    // call (borrowed sockets and the pump's own pipe); null offsets are what splice(2) wants for
    // sockets and pipes, and no memory of this process is read or written.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
        )
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

enum Spliced {
    Eof,
    /// splice(2) refused these descriptors (EINVAL, ENOSYS) or no pipe could be made; nothing
    /// is left in flight, the caller copies the rest.
    Unsupported,
}

/// `src` → pipe → `dst` with splice(2), as Go's io.Copy between TCP sockets does in
/// docker-proxy: the bytes never enter this process. The pipe is only filled when empty, so an
/// EAGAIN from the socket → pipe splice always means "socket drained" and one from the
/// pipe → socket splice always means "socket full", which is what tokio's readiness needs.
async fn splice_pump(src: &TcpStream, dst: &TcpStream) -> std::io::Result<Spliced> {
    use nix::fcntl::OFlag;
    // The default pipe (16 pages): a 1 MiB one (F_SETPIPE_SZ, as recent Go does) measured no
    // faster here, and counts against the user's pipe quota.
    let Ok((pr, pw)) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC) else {
        return Ok(Spliced::Unsupported);
    };
    let (sfd, dfd) = (src.as_raw_fd(), dst.as_raw_fd());
    // As much as the pipe takes.
    let cap = 1 << 20;
    let unsupported =
        |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS));
    loop {
        // socket → pipe (the pipe is empty here)
        let n = match io_op(src, Interest::READABLE, || splice(sfd, pw.as_raw_fd(), cap)).await {
            Ok(0) => return Ok(Spliced::Eof),
            Ok(n) => n,
            Err(e) if unsupported(&e) => return Ok(Spliced::Unsupported),
            Err(e) => return Err(e),
        };
        // pipe → socket, all of it
        let mut left = n;
        while left > 0 {
            match io_op(dst, Interest::WRITABLE, || {
                splice(pr.as_raw_fd(), dfd, left)
            })
            .await
            {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(m) => left -= m,
                Err(e) if unsupported(&e) => {
                    // Not seen with TCP sockets; move what is in flight by hand.
                    let mut b = vec![0u8; left];
                    let mut got = 0;
                    while got < left {
                        match nix::unistd::read(pr.as_raw_fd(), &mut b[got..])? {
                            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                            m => got += m,
                        }
                    }
                    send_all(dst, &b).await?;
                    return Ok(Spliced::Unsupported);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One upstream socket per client address; flows idle for 90 s are dropped. Flow tasks live
/// in a JoinSet owned by this task, so stopping the proxy ends them too.
async fn udp(sock: Arc<UdpSocket>, dst: SocketAddr) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Default::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, client) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = UdpSocket::bind("0.0.0.0:0").await else {
                    continue;
                };
                if u.connect(dst).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, u.clone());
                let (u2, s2, f2) = (u.clone(), sock.clone(), flows.clone());
                tasks.spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(90), u2.recv(&mut b)).await
                    {
                        let _ = s2.send_to(&b[..m], client).await;
                    }
                    f2.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Parse the record's PortBindings (+ PublishAllPorts over ExposedPorts) into bindings.
pub fn bindings_from(
    port_bindings: &HashMap<String, Option<Vec<bollard_stubs::models::PortBinding>>>,
    exposed: &[String],
    publish_all: bool,
) -> Result<Vec<Binding>> {
    let mut out = Vec::new();
    let bad = |s: &str| EngineError::invalid(format!("invalid port specification: \"{s}\""));
    let parse_key = |k: &str| -> Result<(u16, String)> {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let port: u16 = p.parse().map_err(|_| bad(p))?;
        if port == 0 {
            return Err(bad(p));
        }
        let proto = if proto.is_empty() { "tcp" } else { proto };
        if !matches!(proto, "tcp" | "udp" | "sctp") {
            return Err(EngineError::invalid(format!("invalid proto: {proto}")));
        }
        if proto == "sctp" {
            return Err(EngineError::invalid(
                "SCTP port publishing is not supported",
            ));
        }
        Ok((port, proto.to_string()))
    };
    for (k, v) in port_bindings {
        let (cport, proto) = parse_key(k)?;
        for pb in v.clone().unwrap_or_default() {
            let ip = pb
                .host_ip
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            let host_ip: IpAddr = ip
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| EngineError::invalid(format!("invalid IP address: {ip}")))?;
            let hp = pb.host_port.clone().unwrap_or_default();
            let (host_port, host_port_end) = if hp.is_empty() {
                (0, 0)
            } else {
                let (a, b) = hp.split_once('-').unwrap_or((&hp, &hp));
                let a: u16 = a.parse().map_err(|_| bad(&hp))?;
                let b: u16 = b.parse().map_err(|_| bad(&hp))?;
                if b < a {
                    return Err(bad(&hp));
                }
                (a, b)
            };
            out.push(Binding {
                host_ip,
                host_port,
                host_port_end,
                proto: proto.clone(),
                container_port: cport,
            });
        }
    }
    if publish_all {
        for k in exposed {
            let (cport, proto) = parse_key(k)?;
            if !out
                .iter()
                .any(|b| b.container_port == cport && b.proto == proto)
            {
                out.push(Binding {
                    host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    host_port: 0,
                    host_port_end: 0,
                    proto,
                    container_port: cport,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::PortBinding;

    fn pb(ip: &str, port: &str) -> Option<Vec<PortBinding>> {
        Some(vec![PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        }])
    }

    #[test]
    fn parses_bindings_ranges_and_rejects_bad_ports() {
        let mut m = HashMap::new();
        m.insert("80/tcp".to_string(), pb("127.0.0.1", "8000-8010"));
        m.insert("53/udp".to_string(), pb("", ""));
        let mut b = bindings_from(&m, &["9000/tcp".into()], true).unwrap();
        b.sort_by_key(|x| x.container_port);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[0].container_port, b[0].proto.as_str(), b[0].host_port),
            (53, "udp", 0)
        );
        assert_eq!((b[1].host_port, b[1].host_port_end), (8000, 8010));
        assert_eq!(b[1].host_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(b[2].container_port, 9000);

        let mut m = HashMap::new();
        m.insert("80/tcp".to_string(), pb("", "70000"));
        let e = bindings_from(&m, &[], false).unwrap_err().to_string();
        assert!(e.contains("invalid port specification: \"70000\""), "{e}");
        let mut m = HashMap::new();
        m.insert("99999/tcp".to_string(), None);
        assert!(bindings_from(&m, &[], false).is_err());
    }

    #[tokio::test]
    async fn taken_port_fails_and_frees_the_others() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tp = taken.local_addr().unwrap().port();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let bind = |p: u16| Binding {
            host_ip: lo,
            host_port: p,
            host_port_end: p,
            proto: "tcp".into(),
            container_port: 80,
        };
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fp = free.local_addr().unwrap().port();
        drop(free);
        let px = Proxies::default();
        let e = px
            .start("cid", "name", Ipv4Addr::LOCALHOST, &[bind(fp), bind(tp)])
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("port is already allocated"), "{e}");
        // The first binding was released with the failure.
        std::net::TcpListener::bind(("127.0.0.1", fp)).unwrap();
        let ok = px
            .start("cid", "name", Ipv4Addr::LOCALHOST, &[bind(0)])
            .await
            .unwrap();
        assert_ne!(ok[0].host_port, 0);
        px.stop("cid").await;
        std::net::TcpListener::bind(("127.0.0.1", ok[0].host_port)).unwrap();
    }

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    async fn proxied(px: &Proxies, id: &str, server: &TcpListener) -> u16 {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let b = Binding {
            host_ip: lo,
            host_port: 0,
            host_port_end: 0,
            proto: "tcp".into(),
            container_port: server.local_addr().unwrap().port(),
        };
        px.start(id, "name", Ipv4Addr::LOCALHOST, &[b])
            .await
            .unwrap()[0]
            .host_port
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_bulk_both_ways_small_exchanges_and_half_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let px = Proxies::default();
        let port = proxied(&px, "bulk", &server).await;
        let (up, down) = (pattern(3 << 20, 1), pattern(5 << 20 | 123, 7));
        let (up2, down2) = (up.clone(), down.clone());
        let srv = tokio::spawn(async move {
            // A small exchange first, then everything up to the client's half-close, then a
            // bulk answer after it: the client → server direction is already shut down.
            let (mut s, _) = server.accept().await.unwrap();
            let mut hello = [0u8; 5];
            s.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello, b"hello");
            s.write_all(b"world").await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert!(got == up2, "server got {} bytes", got.len());
            s.write_all(&down2).await.unwrap();
        });
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut world = [0u8; 5];
        c.read_exact(&mut world).await.unwrap();
        assert_eq!(&world, b"world");
        c.write_all(&up).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), c.read_to_end(&mut got))
            .await
            .expect("server's EOF reaches the client")
            .unwrap();
        assert!(got == down, "client got {} bytes", got.len());
        srv.await.unwrap();
        px.stop("bulk").await;
    }

    #[tokio::test]
    async fn refused_container_port_closes_the_client() {
        use tokio::io::AsyncReadExt;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cport = closed.local_addr().unwrap().port();
        drop(closed);
        let px = Proxies::default();
        let b = Binding {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: 0,
            host_port_end: 0,
            proto: "tcp".into(),
            container_port: cport,
        };
        let port = px
            .start("refused", "name", Ipv4Addr::LOCALHOST, &[b])
            .await
            .unwrap()[0]
            .host_port;
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        px.stop("refused").await;
    }

    #[tokio::test]
    async fn udp_round_trip() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let px = Proxies::default();
        let b = Binding {
            host_ip: "127.0.0.1".parse().unwrap(),
            host_port: 0,
            host_port_end: 0,
            proto: "udp".into(),
            container_port: server.local_addr().unwrap().port(),
        };
        let port = px
            .start("udp", "name", Ipv4Addr::LOCALHOST, &[b])
            .await
            .unwrap()[0]
            .host_port;
        let srv = tokio::spawn(async move {
            let mut b = [0u8; 64];
            let (n, from) = server.recv_from(&mut b).await.unwrap();
            server.send_to(&b[..n], from).await.unwrap();
        });
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"ping", ("127.0.0.1", port)).await.unwrap();
        let mut b = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut b))
            .await
            .expect("the answer comes back through the proxy")
            .unwrap();
        assert_eq!(&b[..n], b"ping");
        srv.await.unwrap();
        px.stop("udp").await;
    }

    #[tokio::test]
    async fn stop_closes_open_connections() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let px = Proxies::default();
        let port = proxied(&px, "stop", &server).await;
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (mut s, _) = server.accept().await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        px.stop("stop").await;
        // Both ends see the proxy's sockets close.
        let r = tokio::time::timeout(Duration::from_secs(5), c.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");
    }
}
