//! Wire protocol between berthd and berth-shim.
//!
//! Each connection to `<state-dir>/shim.sock` starts with one JSON line from the client
//! ([`Request`]); the shim answers with one JSON line ([`Response`]). For `attach` and `exec`
//! the connection then carries binary frames in Docker's stdcopy layout:
//! an 8-byte header `[stream, 0, 0, 0, len u32 BE]` followed by `len` bytes of payload.
//!
//! Shim → client: [`STREAM_STDOUT`], [`STREAM_STDERR`], and finally [`STREAM_EXIT`] with a
//! JSON [`ExitFrame`] payload, after which the shim closes the connection.
//! Client → shim: [`STREAM_STDIN`] data, [`STREAM_CLOSE_STDIN`] (empty payload) and
//! [`STREAM_RESIZE`] (payload: height u16 BE, width u16 BE).

use serde::{Deserialize, Serialize};

/// File name of the control socket inside the state dir.
pub const SOCKET_NAME: &str = "shim.sock";
/// File name of the exit record inside the state dir.
pub const EXIT_FILE: &str = "exit.json";
/// File name of the shim's own pid inside the state dir.
pub const SHIM_PID_FILE: &str = "shim.pid";
/// File name of the container init's pid (written by the runtime) inside the state dir.
pub const INIT_PID_FILE: &str = "init.pid";

/// Client → shim: stdin data.
pub const STREAM_STDIN: u8 = 0;
/// Shim → client: stdout data (all output when the container has a TTY).
pub const STREAM_STDOUT: u8 = 1;
/// Shim → client: stderr data.
pub const STREAM_STDERR: u8 = 2;
/// Shim → client: the process exited; payload is a JSON [`ExitFrame`]. Last frame.
pub const STREAM_EXIT: u8 = 3;
/// Client → shim: close the process's stdin (empty payload).
pub const STREAM_CLOSE_STDIN: u8 = 4;
/// Client → shim: resize the TTY; payload is height u16 BE, width u16 BE.
pub const STREAM_RESIZE: u8 = 5;

/// Largest frame payload either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
/// Largest request line the shim accepts.
pub const MAX_REQUEST: usize = 1 << 20;

/// Encodes a frame header.
pub fn frame_header(stream: u8, len: u32) -> [u8; 8] {
    let l = len.to_be_bytes();
    [stream, 0, 0, 0, l[0], l[1], l[2], l[3]]
}

/// Decodes a frame header into `(stream, len)`.
pub fn parse_header(h: &[u8; 8]) -> (u8, u32) {
    (h[0], u32::from_be_bytes([h[4], h[5], h[6], h[7]]))
}

/// Payload of a [`STREAM_RESIZE`] frame.
pub fn resize_payload(height: u16, width: u16) -> [u8; 4] {
    let h = height.to_be_bytes();
    let w = width.to_be_bytes();
    [h[0], h[1], w[0], w[1]]
}

/// Parses a [`STREAM_RESIZE`] payload into `(height, width)`.
pub fn parse_resize(p: &[u8]) -> Option<(u16, u16)> {
    match p {
        [h0, h1, w0, w1] => Some((
            u16::from_be_bytes([*h0, *h1]),
            u16::from_be_bytes([*w0, *w1]),
        )),
        _ => None,
    }
}

/// One request line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    State,
    Start,
    Attach {
        #[serde(default)]
        stdin: bool,
        #[serde(default)]
        stdout: bool,
        #[serde(default)]
        stderr: bool,
    },
    Resize {
        height: u16,
        width: u16,
    },
    Kill {
        signal: i32,
    },
    Pause,
    Resume,
    /// Answered once the container's process has exited. The shim may still be deleting the
    /// runtime's state then (it tells the exit first when the container has a PID namespace
    /// of its own); it keeps the answered connection open until it exits, after that delete.
    Wait,
    Exec {
        exec_id: String,
        /// An OCI runtime-spec `Process` object, handed to `runc exec --process`.
        process: serde_json::Value,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        stdin: bool,
    },
    ExecResize {
        exec_id: String,
        height: u16,
        width: u16,
    },
}

/// Container status as the shim sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited,
}

/// How the container's init ended; also the content of `<state-dir>/exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number for a signal death.
    pub exit_code: i32,
    /// The signal that killed the process, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339 time with nanoseconds, UTC.
    pub finished_at: String,
}

/// Payload of the final [`STREAM_EXIT`] frame of attach and exec streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitFrame {
    pub exit_code: i32,
    /// For exec: the runtime's error when the process could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One reply line. Fields not relevant to an op are omitted (`exit` is always present,
/// `null` when the container has not exited).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default)]
    pub exit: Option<ExitInfo>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }

    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

/// Docker's exit code for an exec that could not be started, from the runtime's message:
/// 127 when the executable does not exist, 126 otherwise (permission denied, not executable).
pub fn exec_error_code(msg: &str) -> i32 {
    if msg.contains("executable file not found") || msg.contains("no such file or directory") {
        127
    } else {
        126
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let h = frame_header(STREAM_STDERR, 0x01020304);
        assert_eq!(h, [2, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(parse_header(&h), (2, 0x01020304));
        assert_eq!(parse_resize(&resize_payload(30, 100)), Some((30, 100)));
        assert_eq!(parse_resize(&[1, 2]), None);
    }

    #[test]
    fn request_json() {
        let r: Request = serde_json::from_str(r#"{"op":"attach","stdout":true}"#).unwrap();
        assert_eq!(
            r,
            Request::Attach {
                stdin: false,
                stdout: true,
                stderr: false
            }
        );
        let r: Request = serde_json::from_str(r#"{"op":"kill","signal":15}"#).unwrap();
        assert_eq!(r, Request::Kill { signal: 15 });
        let s = serde_json::to_string(&Request::ExecResize {
            exec_id: "e".into(),
            height: 1,
            width: 2,
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"op":"exec_resize","exec_id":"e","height":1,"width":2}"#
        );
        let s = serde_json::to_string(&Response::ok()).unwrap();
        assert_eq!(s, r#"{"ok":true,"exit":null}"#);
    }
}
