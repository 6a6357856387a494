//! Hybrid vsock, host side (docs/VM.md): a Unix socket on which `CONNECT <port>\n` opens a
//! stream to a guest port, answered `OK <n>\n`. Firecracker's convention; vhost-device-vsock
//! speaks it, and every backend exposes it, so the forwarding code is the same everywhere.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Well-known guest and host ports.
pub const API_PORT: u32 = 2375;
pub const CONTROL_PORT: u32 = 1025;
pub const FORWARD_PORT: u32 = 1026;

/// Open a stream to guest port `port` through the hybrid-vsock socket `sock`.
pub async fn connect(sock: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(sock).await?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Read the answer a byte at a time: what follows the newline already belongs to the stream.
    let mut line = Vec::with_capacity(16);
    let read = async {
        loop {
            let b = s.read_u8().await?;
            if b == b'\n' {
                break;
            }
            line.push(b);
            if line.len() > 64 {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "vsock CONNECT timed out",
            ))
        }
        // The device hangs up when nothing listens on that guest port.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => line.clear(),
        Ok(r) => r?,
    }
    let answer = String::from_utf8_lossy(&line);
    if !answer.starts_with("OK ") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("guest vsock port {port} refused the connection ({answer:?})"),
        ));
    }
    Ok(s)
}

/// The Unix socket where guest-initiated connections to host port `port` arrive.
pub fn host_listener_path(sock: &Path, port: u32) -> std::path::PathBuf {
    let mut p = sock.as_os_str().to_owned();
    p.push(format!("_{port}"));
    p.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A stand-in for the vsock device's host socket: answers CONNECT like vhost-device-vsock,
    /// then echoes, or refuses port 9.
    async fn device(path: std::path::PathBuf) {
        let l = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    let mut line = String::new();
                    r.read_line(&mut line).await.unwrap();
                    if line == "CONNECT 9\n" {
                        return;
                    }
                    // The answer and the first payload bytes in one write: the client must
                    // not swallow them.
                    r.get_mut().write_all(b"OK 1234\nhello").await.unwrap();
                    let mut rest = Vec::new();
                    r.read_to_end(&mut rest).await.unwrap();
                });
            }
        });
    }

    #[tokio::test]
    async fn connect_keeps_bytes_after_the_answer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("v.sock");
        device(p.clone()).await;
        let mut s = connect(&p, API_PORT).await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let err = connect(&p, 9).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn listener_path() {
        assert_eq!(
            host_listener_path(Path::new("/x/vsock.sock"), 1025),
            Path::new("/x/vsock.sock_1025")
        );
    }
}
