//! Framing for streams relayed over vsock (docs/VM.md).
//!
//! A relayed stream must keep TCP's half-close: `docker run -i` ends the container's stdin with
//! a half-close and still reads its output; an HTTP/1.0 server closes its side and the client
//! reads to EOF. vhost-device-vsock turns a half-close on either end into a full close, so the
//! host and the guest frame what they send: a 4-byte big-endian length, then that many bytes;
//! length 0 means "no more data in this direction". Both ends run the same [`pipe`].

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest payload of one frame.
pub const MAX_FRAME: usize = 256 << 10;

/// Relay between a plain stream (`raw`: the client on the host, the service in the guest) and
/// the framed vsock stream (`framed`), both ways, until both directions have ended. Returns the
/// bytes carried (raw → framed, framed → raw).
pub async fn pipe<R, F>(raw: &mut R, framed: &mut F) -> std::io::Result<(u64, u64)>
where
    R: AsyncRead + AsyncWrite + Unpin + ?Sized,
    F: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut rr, mut rw) = tokio::io::split(raw);
    let (mut fr, mut fw) = tokio::io::split(framed);
    let out = async {
        let mut buf = vec![0u8; MAX_FRAME];
        let mut total = 0u64;
        loop {
            // A reset on the plain side ends this direction like an EOF.
            let n = rr.read(&mut buf).await.unwrap_or_default();
            fw.write_all(&(n as u32).to_be_bytes()).await?;
            if n == 0 {
                fw.flush().await?;
                return Ok::<u64, std::io::Error>(total);
            }
            fw.write_all(&buf[..n]).await?;
            total += n as u64;
        }
    };
    let back = async {
        let mut buf = vec![0u8; MAX_FRAME];
        let mut total = 0u64;
        loop {
            // The other end went away without an end-of-data frame: same end.
            let len = fr.read_u32().await.unwrap_or_default() as usize;
            if len == 0 {
                let _ = rw.shutdown().await;
                return Ok::<u64, std::io::Error>(total);
            }
            if len > MAX_FRAME {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("vsock frame of {len} bytes (max {MAX_FRAME})"),
                ));
            }
            fr.read_exact(&mut buf[..len]).await?;
            rw.write_all(&buf[..len]).await?;
            rw.flush().await?;
            total += len as u64;
        }
    };
    let (a, b) = tokio::join!(out, back);
    Ok((a.unwrap_or(0), b?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// Host pipe ⇄ (a transport that only carries bytes) ⇄ guest pipe: a half-close of the
    /// client reaches the service, which still answers, and its close reaches the client.
    #[tokio::test]
    async fn half_close_crosses_both_pipes() {
        let (mut client, mut host_raw) = duplex(1024);
        let (mut host_framed, mut guest_framed) = duplex(1024);
        let (mut guest_raw, mut service) = duplex(1024);
        let host = tokio::spawn(async move { pipe(&mut host_raw, &mut host_framed).await });
        let guest = tokio::spawn(async move { pipe(&mut guest_raw, &mut guest_framed).await });

        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap(); // stdin EOF
        let mut got = Vec::new();
        service.read_to_end(&mut got).await.unwrap(); // the service sees the EOF
        assert_eq!(got, b"request");
        service.write_all(b"answer after EOF").await.unwrap();
        service.shutdown().await.unwrap();
        drop(service);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer after EOF");
        assert_eq!(host.await.unwrap().unwrap(), (7, 16));
        assert_eq!(guest.await.unwrap().unwrap(), (16, 7));
    }

    #[tokio::test]
    async fn a_vanished_peer_ends_the_stream() {
        let (mut client, mut raw) = duplex(64);
        let (mut framed, peer) = duplex(64);
        drop(peer);
        let t = tokio::spawn(async move { pipe(&mut raw, &mut framed).await });
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert!(back.is_empty());
        drop(client);
        let _ = t.await.unwrap();
    }
}
