//! vsock port 1027: a shell in the VM for `berth vm ssh` (docs/VM.md). The host's first line
//! is a JSON request `{"tty":bool,"rows":N,"cols":N,"cmd":[...]}`; the command runs on a pty
//! (raw when `tty` is false, so its output is byte-exact). The stream is then framed like the
//! other relays (berth_vsock_proto), and after the end-of-data frame the guest sends the exit
//! code as a 4-byte big-endian integer.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::reaper::Reaper;
use crate::relay::read_line_limited;
use crate::vsock::{VsockListener, VsockStream};

pub const SHELL_PORT: u32 = 1027;

#[derive(Debug, Deserialize, PartialEq)]
pub struct Request {
    #[serde(default)]
    pub tty: bool,
    #[serde(default = "rows")]
    pub rows: u16,
    #[serde(default = "cols")]
    pub cols: u16,
    #[serde(default)]
    pub cmd: Vec<String>,
}
fn rows() -> u16 {
    24
}
fn cols() -> u16 {
    80
}

pub fn parse_request(line: &str) -> anyhow::Result<Request> {
    serde_json::from_str(line.trim()).context("bad shell request")
}

pub async fn serve(listener: VsockListener, reaper: Arc<Reaper>) {
    loop {
        let (vs, _cid) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("vsock {SHELL_PORT} accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let reaper = reaper.clone();
        tokio::spawn(async move {
            if let Err(e) = session(vs, reaper).await {
                tracing::warn!("shell session: {e:#}");
            }
        });
    }
}

fn openpty(rows: u16, cols: u16, raw: bool) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two fds into the out-parameters; the name and termios pointers may
    // be null; `ws` outlives the call.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("openpty");
    }
    // SAFETY: openpty succeeded, so both are open fds that we now own.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    if raw {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr read and write it for an open fd.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(s.as_raw_fd(), &mut t) == 0 {
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(s.as_raw_fd(), libc::TCSANOW, &t);
            }
        }
    }
    Ok((m, s))
}

async fn session(vs: VsockStream, reaper: Arc<Reaper>) -> anyhow::Result<()> {
    let mut vs = BufReader::new(vs);
    let req = parse_request(&read_line_limited(&mut vs, 8192).await?)?;
    let (master, slave) = openpty(req.rows, req.cols, !req.tty)?;
    let argv = if req.cmd.is_empty() {
        vec!["/bin/sh".to_string(), "-l".to_string()]
    } else {
        req.cmd.clone()
    };
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", crate::engine::PATH)
        .env("HOME", "/root")
        .env("TERM", if req.tty { "xterm-256color" } else { "dumb" })
        .env("PS1", "berth-vm# ")
        .env("DOCKER_HOST", "unix:///run/berth/docker.sock")
        .current_dir("/")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: between fork and exec only async-signal-safe calls: a new session, and the pty
    // (already stdin) as its controlling terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(0, libc::TIOCSCTTY as _, 0);
            Ok(())
        });
    }
    let (mut child, std_child) = reaper
        .spawn(&mut cmd)
        .with_context(|| format!("starting {}", argv[0]))?;
    drop(cmd); // closes our copies of the slave, so the master sees EIO once the child is gone
    drop(std_child);
    let m_read = tokio::fs::File::from(std::fs::File::from(master));
    let mut m_write = m_read.try_clone().await?;
    let mut m_read = m_read;
    let (mut vr, mut vw) = tokio::io::split(vs);
    // host → pty
    let input = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(len) = vr.read_u32().await {
            let len = len as usize;
            if len == 0 || len > buf.len() {
                break;
            }
            if vr.read_exact(&mut buf[..len]).await.is_err() {
                break;
            }
            if m_write.write_all(&buf[..len]).await.is_err() {
                break;
            }
            let _ = m_write.flush().await;
        }
    });
    // pty → host, until the child has exited and its output is drained (EIO on the master)
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match m_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                vw.write_all(&(n as u32).to_be_bytes()).await?;
                vw.write_all(&buf[..n]).await?;
            }
        }
    }
    let status = child.wait().await;
    input.abort();
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    vw.write_all(&0u32.to_be_bytes()).await?;
    vw.write_all(&code.to_be_bytes()).await?;
    vw.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = parse_request(r#"{"tty":true,"rows":40,"cols":120}"#).unwrap();
        assert_eq!(
            r,
            Request {
                tty: true,
                rows: 40,
                cols: 120,
                cmd: vec![]
            }
        );
        let r = parse_request(r#"{"cmd":["uname","-a"]}"#).unwrap();
        assert!(!r.tty && r.rows == 24 && r.cmd == ["uname", "-a"]);
        assert!(parse_request("nope").is_err());
    }
}
