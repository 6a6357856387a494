//! The host's Docker API socket in VM mode: every connection is piped to berthd in the guest
//! through vsock port 2375, framed by `berth_vsock_proto` so half-close survives the transport:
//! hijacked attach/exec streams and `docker run -i` stdin EOF behave as on the native socket.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;

use crate::hvsock;

/// Serve `listener` forever, relaying to guest port `port` through `vsock`.
pub async fn serve(listener: UnixListener, vsock: Arc<PathBuf>, port: u32) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let vsock = vsock.clone();
        tokio::spawn(async move {
            match hvsock::connect(&vsock, port).await {
                Ok(mut guest) => {
                    let _ = berth_vsock_proto::pipe(&mut client, &mut guest).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "engine in the VM unreachable");
                    // Answer in Docker's error shape so clients print words, not a reset.
                    let body = format!(
                        "{{\"message\":\"Berth's VM engine is not reachable: {}\"}}",
                        e.to_string().replace('"', "'")
                    );
                    let resp = format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut client, resp.as_bytes()).await;
                }
            }
        });
    }
}
