//! Typed errors the desktop shows to the user in words.
//!
//! Every failure of a command ends up as a [`HostError`]: a kind the UI can act
//! on (offer "Start engine" for `EngineUnreachable`, "Force delete" for
//! `Conflict`...) and the engine's own message, unchanged, because it is the
//! most precise explanation there is ("conflict: unable to delete ... image is
//! being used by running container ...").

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The engine's socket is missing or refuses connections.
    EngineUnreachable,
    /// 404 from the engine.
    NotFound,
    /// 409 from the engine: in use, name taken, running.
    Conflict,
    /// 400 from the engine.
    BadRequest,
    /// Any other error the engine reported (5xx, a stream error).
    Engine,
    /// The UI sent a command or arguments that make no sense.
    Invalid,
    /// A local failure (settings file, starting the engine, reading a log).
    Io,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct HostError {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

pub type Result<T, E = HostError> = std::result::Result<T, E>;

impl HostError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HostError {
            kind,
            message: message.into(),
            status: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::EngineUnreachable, message)
    }
    /// An error with the engine's HTTP status, classified the way Docker's
    /// clients do.
    pub fn from_status(status: u16, message: impl Into<String>) -> Self {
        let kind = match status {
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            400 => ErrorKind::BadRequest,
            _ => ErrorKind::Engine,
        };
        let mut message: String = message.into();
        if message.trim().is_empty() {
            message = format!("the engine answered with HTTP status {status}");
        }
        HostError {
            kind,
            message,
            status: Some(status),
        }
    }
    pub fn is_unreachable(&self) -> bool {
        self.kind == ErrorKind::EngineUnreachable
    }
}

/// Words for connection failures, which hyper reports as a chain of sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn looks_unreachable(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "connection refused",
        "no such file or directory",
        "connection reset",
        "broken pipe",
        "client error (connect)",
        "unexpected eof",
        "incomplete message",
        "error trying to connect",
    ]
    .iter()
    .any(|p| m.contains(p))
}

impl From<bollard::errors::Error> for HostError {
    fn from(e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => HostError::from_status(status_code, message),
            B::SocketNotFoundError(path) => HostError::unreachable(format!(
                "the engine is not running: its socket {path} does not exist"
            )),
            B::RequestTimeoutError => {
                HostError::new(ErrorKind::Engine, "the engine did not answer in time")
            }
            B::DockerStreamError { error } => HostError::new(ErrorKind::Engine, error),
            B::JsonDataError { message, .. } => HostError::new(
                ErrorKind::Engine,
                format!("the engine's answer could not be read: {message}"),
            ),
            other => {
                let msg = error_chain(&other);
                if looks_unreachable(&msg) {
                    let m = msg.to_ascii_lowercase();
                    let why = if m.contains("connection refused") {
                        "nothing answers on its socket (connection refused)".to_string()
                    } else if m.contains("no such file") {
                        "its socket does not exist".to_string()
                    } else if m.contains("reset")
                        || m.contains("broken pipe")
                        || m.contains("eof")
                        || m.contains("incomplete")
                    {
                        "the connection was cut (the engine stopped or restarted)".to_string()
                    } else {
                        msg.clone()
                    };
                    HostError::unreachable(format!("cannot reach the engine: {why}"))
                } else {
                    HostError::new(ErrorKind::Engine, msg)
                }
            }
        }
    }
}

impl From<std::io::Error> for HostError {
    fn from(e: std::io::Error) -> Self {
        HostError::io(e.to_string())
    }
}

impl From<serde_json::Error> for HostError {
    fn from(e: serde_json::Error) -> Self {
        HostError::invalid(format!("bad arguments: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(
            HostError::from_status(404, "No such container: x").kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            HostError::from_status(409, "in use").kind,
            ErrorKind::Conflict
        );
        assert_eq!(
            HostError::from_status(400, "bad").kind,
            ErrorKind::BadRequest
        );
        assert_eq!(HostError::from_status(500, "boom").kind, ErrorKind::Engine);
        assert_eq!(
            HostError::from_status(502, "").message,
            "the engine answered with HTTP status 502"
        );
    }

    #[test]
    fn bollard_errors_keep_the_engine_message() {
        let e: HostError = bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "conflict: unable to delete abc (must be forced) - image is being used by running container 123".into(),
        }
        .into();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert_eq!(e.status, Some(409));
        assert!(e
            .message
            .contains("image is being used by running container"));
        let e: HostError =
            bollard::errors::Error::SocketNotFoundError("/tmp/nope.sock".into()).into();
        assert!(e.is_unreachable());
        assert!(e.message.contains("/tmp/nope.sock"));
    }

    #[test]
    fn serializes_for_the_ui() {
        let e = HostError::from_status(404, "No such image: x");
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "not_found", "message": "No such image: x", "status": 404})
        );
        let e = HostError::invalid("missing id");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"kind": "invalid", "message": "missing id"})
        );
    }
}
