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
