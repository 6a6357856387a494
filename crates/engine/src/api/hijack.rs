//! Hijacked connections for attach and exec: answer `101 UPGRADED` and hand the raw socket to
//! the service; for clients that send no `Upgrade` header, stream the output as a 200 body.

use std::future::Future;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

/// `multiplexed` selects the Content-Type (API ≥ 1.42 names the framed stream).
pub fn content_type(multiplexed: bool, v: super::ApiVersion) -> &'static str {
    if multiplexed && v.at_least(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    }
}

/// Take over the connection of `req` and run `f` on it.
pub fn hijack<F, Fut>(mut req: Request, ctype: &'static str, f: F) -> Response
where
    F: FnOnce(Box<dyn IoStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let wants_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| !v.is_empty());
    let on_upgrade = hyper::upgrade::on(&mut req);
    if wants_upgrade {
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(up) => f(Box::new(TokioIo::new(up))).await,
                Err(e) => tracing::debug!(error = %e, "upgrade failed"),
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONTENT_TYPE, ctype)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "tcp")
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    // No upgrade: output only, as a streamed body.
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(f(Box::new(ours)));
    let stream = tokio_util::io::ReaderStream::new(theirs);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ctype)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub trait IoStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> IoStream for T {}

// ----------------------------------------------------------------------------------------------
// WebSocket (RFC 6455) for `GET /containers/{id}/attach/ws`
// ----------------------------------------------------------------------------------------------

/// The GUID RFC 6455 appends to the client's key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Larger client frames close the connection (stdin comes in small pieces).
const WS_MAX_FRAME: u64 = 16 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn ws_accept(key: &str) -> String {
    use base64::Engine as _;
    let mut s = key.trim().as_bytes().to_vec();
    s.extend_from_slice(WS_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha1(&s))
}

/// SHA-1, only for the handshake's accept key (RFC 6455 §4.2.2; not a security use).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, b) in chunk.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// One server frame (never masked).
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Reads one client frame: (fin, opcode, unmasked payload); None at EOF or on a bad frame.
async fn ws_read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Option<(bool, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut hd = [0u8; 2];
    r.read_exact(&mut hd).await.ok()?;
    let (fin, opcode) = (hd[0] & 0x80 != 0, hd[0] & 0x0f);
    let masked = hd[1] & 0x80 != 0;
    let len = match hd[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await.ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > WS_MAX_FRAME {
        return None;
    }
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await.ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Some((fin, opcode, payload))
}

/// Answer a WebSocket handshake and run `f` on a byte stream whose reads are the client's
/// messages (text or binary) and whose writes each go out as one message (binary, or text
/// with `binary` false: dockerd sends binary frames from API 1.28 on). dockerd's websocket
/// attach never multiplexes: the caller writes raw output.
pub fn websocket<F, Fut>(mut req: Request, binary: bool, f: F) -> Response
where
    F: FnOnce(Box<dyn IoStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let hv = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let upgrade_ok = hv(header::UPGRADE)
        .split(',')
        .any(|t| t.trim() == "websocket")
        && hv(header::CONNECTION)
            .split(',')
            .any(|t| t.trim() == "upgrade");
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let (true, Some(key)) = (upgrade_ok, key) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"message": "not a websocket handshake"})),
        )
            .into_response();
    };
    if hv(header::SEC_WEBSOCKET_VERSION) != "13" {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::BAD_REQUEST.into_response());
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let up = match on_upgrade.await {
            Ok(up) => TokioIo::new(up),
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        ws_session(up, binary, f).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, ws_accept(&key))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Pumps between the upgraded connection and the byte stream handed to `f`.
async fn ws_session<S, F, Fut>(sock: S, binary: bool, f: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: FnOnce(Box<dyn IoStream>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let session = tokio::spawn(f(Box::new(theirs)));
    let (mut sr, sw) = tokio::io::split(sock);
    let sw = std::sync::Arc::new(tokio::sync::Mutex::new(sw));
    let (mut or, mut ow) = tokio::io::split(ours);
    let out_sw = sw.clone();
    let opcode = if binary { 2 } else { 1 };
    // Set once our close frame went out: the client's close then only acknowledges it.
    let closing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out_closing = closing.clone();
    // Output: each chunk the session writes is one message; its end starts the closing
    // handshake.
    let output = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match or.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let fr = ws_frame(opcode, &buf[..n]);
                    if out_sw.lock().await.write_all(&fr).await.is_err() {
                        return;
                    }
                }
            }
        }
        out_closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut w = out_sw.lock().await;
        let _ = w.write_all(&ws_frame(8, &1000u16.to_be_bytes())).await;
        let _ = w.flush().await;
    };
    // Input: message payloads become stdin; close, EOF or a bad frame end it.
    let in_sw = sw.clone();
    let input = async move {
        while let Some((_fin, op, payload)) = ws_read_frame(&mut sr).await {
            match op {
                0..=2 => {
                    // The session may be gone while the client still talks: drop it then.
                    let _ = ow.write_all(&payload).await;
                }
                8 => {
                    if !closing.load(std::sync::atomic::Ordering::SeqCst) {
                        let mut w = in_sw.lock().await;
                        let _ = w
                            .write_all(&ws_frame(8, &payload[..payload.len().min(2)]))
                            .await;
                    }
                    break;
                }
                9 => {
                    let _ = in_sw.lock().await.write_all(&ws_frame(10, &payload)).await;
                }
                _ => {}
            }
        }
        let _ = ow.shutdown().await;
    };
    tokio::pin!(output);
    tokio::pin!(input);
    tokio::select! {
        _ = &mut output => {
            let _ = session.await;
            // Give the client a moment to answer our close frame before the socket goes.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), &mut input).await;
        }
        // The client closed or went away: nobody reads what the session would write.
        _ = &mut input => session.abort(),
    }
    let _ = sw.lock().await.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_rfc6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(
            ws_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn sha1_vectors() {
        let hex = |b: [u8; 20]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(
            hex(sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(hex(sha1(&long)), "291e9a6c66994949b57ba5e650361e98fc36b1ba");
    }

    #[tokio::test]
    async fn frames_round_trip() {
        let f = ws_frame(2, &[7u8; 300]);
        assert_eq!(&f[..4], &[0x82, 126, 1, 44]);
        // A masked client frame.
        let key = [1u8, 2, 3, 4];
        let mut c = vec![0x81, 0x80 | 3];
        c.extend_from_slice(&key);
        c.extend(b"abc".iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        let mut r = &c[..];
        let (fin, op, p) = ws_read_frame(&mut r).await.expect("frame");
        assert!(fin);
        assert_eq!((op, p.as_slice()), (1, &b"abc"[..]));
    }
}
