//! The guest's vsock listeners: 2375 (Docker API → berthd's socket) and 1026 (published ports:
//! `tcp <port>` / `udp <port>` → 127.0.0.1:<port>). Both are plain byte pipes with half-close.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpStream, UdpSocket, UnixStream};

use crate::vsock::{VsockListener, VsockStream, CID_ANY};

pub const API_PORT: u32 = 2375;
pub const FORWARD_PORT: u32 = 1026;
pub const DOCKER_SOCK: &str = "/run/berth/docker.sock";

/// What a port-forward stream asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Tcp(u16),
    Udp(u16),
}

/// Parse the first line of a 1026 stream: `tcp 8080` / `udp 53` (newline already stripped or
/// not).
pub fn parse_target(line: &str) -> anyhow::Result<Target> {
    let line = line.trim_end_matches(['\n', '\r']);
    let Some((proto, port)) = line.split_once(' ') else {
        bail!("bad forward request {line:?}");
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("bad port in forward request {line:?}"))?;
    match proto {
        "tcp" => Ok(Target::Tcp(port)),
        "udp" => Ok(Target::Udp(port)),
        _ => bail!("bad protocol in forward request {line:?}"),
    }
}

/// A datagram framed for the stream: 2-byte big-endian length, then the payload.
pub fn encode_frame(payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let len = u16::try_from(payload.len()).context("datagram longer than 65535 bytes")?;
    let mut f = Vec::with_capacity(2 + payload.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(payload);
    Ok(f)
}

/// Read one framed datagram into `buf`; `None` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8; 65535],
) -> std::io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u16::from_be_bytes(len) as usize;
    r.read_exact(&mut buf[..n]).await?;
    Ok(Some(n))
}

/// Read a line of at most `max` bytes (without consuming anything after it).
pub async fn read_line_limited<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> anyhow::Result<String> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            bail!("stream ended before the request line");
        }
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            line.extend_from_slice(&buf[..i]);
            r.consume(i + 1);
            break;
        }
        let n = buf.len();
        line.extend_from_slice(buf);
        r.consume(n);
        if line.len() > max {
            bail!("request line too long");
        }
    }
    if line.len() > max {
        bail!("request line too long");
    }
    String::from_utf8(line).context("request line is not UTF-8")
}

/// Relay the host's framed vsock stream and a guest service (berthd's socket, a published
/// port) both ways with half-close; the framing is `berth_vsock_proto`'s (docs/VM.md).
pub async fn pipe<V, S>(vsock: &mut V, service: &mut S) -> std::io::Result<(u64, u64)>
where
    V: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    berth_vsock_proto::pipe(service, vsock).await
}

/// Serve vsock port 2375: each stream is relayed to berthd's API socket.
pub async fn serve_api(listener: VsockListener, socket: Arc<str>) {
    loop {
        let (mut vs, cid) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("vsock {API_PORT} accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut us = match UnixStream::connect(&*socket).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("API connection from CID {cid}: connecting to {socket}: {e}");
                    return;
                }
            };
            tracing::debug!("API connection from CID {cid}");
            match pipe(&mut vs, &mut us).await {
                Ok((up, down)) => {
                    tracing::debug!("API connection closed ({up} bytes in, {down} out)")
                }
                Err(e) => tracing::debug!("API relay ended: {e}"),
            }
        });
    }
}

/// Serve vsock port 1026: published-port connections from the host.
pub async fn serve_forward(listener: VsockListener) {
    loop {
        let (vs, cid) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("vsock {FORWARD_PORT} accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        tracing::debug!("forward connection from CID {cid}");
        tokio::spawn(async move {
            if let Err(e) = forward(vs).await {
                tracing::debug!("forward from CID {cid}: {e:#}");
            }
        });
    }
}

async fn forward(vs: VsockStream) -> anyhow::Result<()> {
    let mut vs = BufReader::new(vs);
    let line = read_line_limited(&mut vs, 64).await?;
    match parse_target(&line)? {
        Target::Tcp(port) => {
            let mut tcp = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .await
                .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
            let _ = tcp.set_nodelay(true);
            pipe(&mut vs, &mut tcp).await?;
        }
        Target::Udp(port) => {
            let u = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            u.connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .await
                .with_context(|| format!("connecting a UDP socket to 127.0.0.1:{port}"))?;
            udp(vs, u).await?;
        }
    }
    Ok(())
}

/// Datagrams both ways until the stream ends.
async fn udp<S: AsyncRead + AsyncWrite + Unpin>(s: S, u: UdpSocket) -> anyhow::Result<()> {
    let (mut r, mut w) = tokio::io::split(s);
    let up = async {
        let mut buf = Box::new([0u8; 65535]);
        while let Some(n) = read_frame(&mut r, &mut buf).await? {
            if let Err(e) = u.send(&buf[..n]).await {
                // Nothing listening yet (ICMP port unreachable): drop it, as UDP does.
                tracing::debug!("udp send: {e}");
            }
        }
        anyhow::Ok(())
    };
    let down = udp_down(&u, &mut w);
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

async fn udp_down<W: AsyncWrite + Unpin>(u: &UdpSocket, w: &mut W) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match u.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("udp recv: {e}");
                continue;
            }
        };
        w.write_all(&encode_frame(&buf[..n])?).await?;
    }
}

/// Bind the two listeners (fails when the kernel has no vsock transport).
pub fn bind() -> anyhow::Result<(VsockListener, VsockListener)> {
    let api = VsockListener::bind(CID_ANY, API_PORT)
        .with_context(|| format!("listening on vsock port {API_PORT}"))?;
    let fwd = VsockListener::bind(CID_ANY, FORWARD_PORT)
        .with_context(|| format!("listening on vsock port {FORWARD_PORT}"))?;
    Ok((api, fwd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("tcp 8080").unwrap(), Target::Tcp(8080));
        assert_eq!(parse_target("udp 53\n").unwrap(), Target::Udp(53));
        assert_eq!(parse_target("tcp 1\r\n").unwrap(), Target::Tcp(1));
        for bad in [
            "",
            "tcp",
            "tcp 0",
            "tcp 70000",
            "sctp 80",
            "tcp  80",
            "tcp -1",
            "TCP 80",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn frames() {
        assert_eq!(encode_frame(b"hi").unwrap(), [0, 2, b'h', b'i']);
        assert_eq!(encode_frame(b"").unwrap(), [0, 0]);
        let big = vec![7u8; 65535];
        let f = encode_frame(&big).unwrap();
        assert_eq!(&f[..2], &[0xff, 0xff]);
        assert!(encode_frame(&vec![0u8; 65536]).is_err());
    }

    #[tokio::test]
    async fn frame_round_trip() {
        let mut stream = Vec::new();
        for p in [&b"one"[..], b"", &[9u8; 300][..]] {
            stream.extend(encode_frame(p).unwrap());
        }
        let mut r = &stream[..];
        let mut buf = Box::new([0u8; 65535]);
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Some(3));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Some(0));
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), Some(300));
        assert_eq!(read_frame(&mut r, &mut buf).await.unwrap(), None);
        // Truncated payload is an error, not a clean end.
        let mut r = &[0u8, 5, 1, 2][..];
        assert!(read_frame(&mut r, &mut buf).await.is_err());
    }

    #[tokio::test]
    async fn request_line_keeps_the_rest() {
        let data = b"tcp 80\nGET / HTTP/1.0\r\n\r\n";
        let mut r = BufReader::with_capacity(4, &data[..]);
        assert_eq!(read_line_limited(&mut r, 64).await.unwrap(), "tcp 80");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"GET / HTTP/1.0\r\n\r\n");
        let long = [b'x'; 100];
        let mut r = BufReader::new(&long[..]);
        assert!(read_line_limited(&mut r, 64).await.is_err());
        let mut r = BufReader::new(&b"tcp 80"[..]);
        assert!(read_line_limited(&mut r, 64).await.is_err());
    }

    #[tokio::test]
    async fn tcp_forward_with_half_close() {
        // A TCP echo-until-EOF server on 127.0.0.1 stands for berthd's proxy; a socketpair
        // stands for the vsock stream.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.write_all(b"!").await.unwrap();
        });
        let (mut host, guest) = UnixStream::pair().unwrap();
        let task = tokio::spawn(async move {
            let mut g = BufReader::new(guest);
            let line = read_line_limited(&mut g, 64).await.unwrap();
            let Target::Tcp(p) = parse_target(&line).unwrap() else {
                panic!()
            };
            let mut tcp = TcpStream::connect(("127.0.0.1", p)).await.unwrap();
            pipe(&mut g, &mut tcp).await.unwrap();
        });
        host.write_all(format!("tcp {port}\n").as_bytes())
            .await
            .unwrap();
        // The host's end frames its client's bytes, as crates/vm does.
        let (mut client, mut client_end) = tokio::io::duplex(1024);
        let host_pipe =
            tokio::spawn(async move { berth_vsock_proto::pipe(&mut client_end, &mut host).await });
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"hello!");
        drop(client);
        task.await.unwrap();
        host_pipe.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn udp_forward() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut b = [0u8; 100];
            loop {
                let (n, peer) = server.recv_from(&mut b).await.unwrap();
                let mut reply = b[..n].to_vec();
                reply.reverse();
                server.send_to(&reply, peer).await.unwrap();
            }
        });
        let (mut host, guest) = UnixStream::pair().unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        u.connect(("127.0.0.1", port)).await.unwrap();
        let task = tokio::spawn(udp(guest, u));
        host.write_all(&encode_frame(b"abc").unwrap())
            .await
            .unwrap();
        let mut buf = Box::new([0u8; 65535]);
        let n = read_frame(&mut host, &mut buf).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"cba");
        drop(host);
        task.await.unwrap().unwrap();
    }
}
