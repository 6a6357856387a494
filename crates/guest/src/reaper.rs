//! PID 1 reaps every orphan. Children berth-guest itself starts (berthd, mke2fs, the debug
//! shell) are spawned through [`Reaper::spawn`], which registers their pid before the reaper can
//! see them exit, so their exit status goes to whoever waits for them instead of being
//! swallowed by the `waitpid(-1)` loop.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// A child started through the reaper.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    exit: oneshot::Receiver<ExitStatus>,
}

impl Child {
    /// Wait for the child to exit.
    pub async fn wait(&mut self) -> ExitStatus {
        match (&mut self.exit).await {
            Ok(s) => s,
            // The reaper went away: only at the very end; report a signal death.
            Err(_) => ExitStatus::from_raw(libc::SIGKILL),
        }
    }
}

#[derive(Default)]
pub struct Reaper {
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
}

impl Reaper {
    /// Install the SIGCHLD handler and start reaping. Call inside the runtime, before spawning.
    pub fn start() -> anyhow::Result<Arc<Self>> {
        let me = Arc::new(Self::default());
        let mut sigchld = signal(SignalKind::child()).context("installing the SIGCHLD handler")?;
        let r = me.clone();
        tokio::spawn(async move {
            loop {
                r.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(me)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Collect every exited child; statuses of registered children go to their waiter.
    pub fn reap(&self) {
        let mut waiting = self.lock();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid only writes the status through the valid pointer we pass.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                // 0: children left but none exited; -1: ECHILD (none) or EINTR (next SIGCHLD).
                break;
            }
            match waiting.remove(&pid) {
                Some(tx) => {
                    let _ = tx.send(ExitStatus::from_raw(status));
                }
                None => tracing::trace!(pid, status, "reaped an orphan"),
            }
        }
    }

    /// Spawn `cmd` with its pid registered before the reaper can collect it.
    pub fn spawn(&self, cmd: &mut Command) -> std::io::Result<(Child, std::process::Child)> {
        let mut waiting = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id() as i32;
        let (tx, rx) = oneshot::channel();
        waiting.insert(pid, tx);
        Ok((Child { pid, exit: rx }, child))
    }

    /// Run `cmd` to completion (stdio inherited: the console).
    pub async fn run(&self, cmd: &mut Command) -> anyhow::Result<ExitStatus> {
        let (mut c, _std) = self
            .spawn(cmd)
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        Ok(c.wait().await)
    }
}

/// Render an exit status the way people read them.
pub fn describe(s: ExitStatus) -> String {
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn registered_children_get_their_status() {
        let r = Reaper::start().unwrap();
        // Many short-lived children: each exits before or after registration, never lost.
        let mut waits = Vec::new();
        for i in 0..20 {
            let (c, _) = r
                .spawn(Command::new("sh").args(["-c", &format!("exit {i}")]))
                .unwrap();
            waits.push((i, c));
        }
        for (i, mut c) in waits {
            let s = tokio::time::timeout(std::time::Duration::from_secs(10), c.wait())
                .await
                .unwrap();
            assert_eq!(s.code(), Some(i));
        }
        let s = r
            .run(Command::new("sh").args(["-c", "kill -9 $$"]))
            .await
            .unwrap();
        assert_eq!(describe(s), "killed by signal 9");
        assert!(r
            .run(&mut Command::new("/nonexistent/binary"))
            .await
            .is_err());
    }
}
