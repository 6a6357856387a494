//! The shim is a child subreaper: every process it spawned (runc) and every process of the
//! container re-parented to it is reaped here, by one thread calling `waitpid(-1)`. Callers
//! wait for a particular pid's status through [`Reaper::wait`], never with `Child::wait`.
//!
//! With no child at all (`ECHILD`: before runc first runs, after the init exited), the thread
//! sleeps until [`Reaper::spawned`] says a child exists again, so a short-lived runc is
//! reaped the moment it exits rather than at the next tick of a polling loop.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Keeps at most this many statuses nobody asked for (grandchildren of runc and the like).
const MAX_UNCLAIMED: usize = 256;

#[derive(Default)]
pub struct Reaper {
    exited: Mutex<HashMap<i32, i32>>,
    cv: Condvar,
    /// Bumped by [`Reaper::spawned`]; the reaping thread waits on it while it has no child.
    spawns: Mutex<u64>,
    spawn_cv: Condvar,
}

impl Reaper {
    /// Starts the reaping thread.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let r = Arc::new(Reaper::default());
        let r2 = r.clone();
        crate::spawn_thread("reaper", move || r2.run())?;
        Ok(r)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, i32>> {
        self.exited.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the reaping thread that a child was just spawned.
    pub fn spawned(&self) {
        *self.spawns.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.spawn_cv.notify_all();
    }

    fn run(&self) {
        loop {
            // Read before waitpid: a spawn after this point changes it, so the wait below
            // cannot miss a child that appeared between ECHILD and the wait.
            let gen = *self.spawns.lock().unwrap_or_else(|e| e.into_inner());
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid only writes to the status integer we own.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid > 0 {
                let mut m = self.lock();
                if m.len() >= MAX_UNCLAIMED {
                    // Keep what someone may still be waiting for; drop the oldest unknowns.
                    let drop_pids: Vec<i32> = m.keys().copied().take(MAX_UNCLAIMED / 2).collect();
                    for p in drop_pids {
                        m.remove(&p);
                    }
                }
                m.insert(pid, status);
                drop(m);
                self.cv.notify_all();
                continue;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                // ECHILD: no child right now (before runc runs, after the init exited). A
                // child can only appear through a spawn of ours (orphans are re-parented to
                // us only while a child of ours is alive); the timeout is a safety net.
                let g = self.spawns.lock().unwrap_or_else(|e| e.into_inner());
                let _ = self
                    .spawn_cv
                    .wait_timeout_while(g, Duration::from_secs(1), |g| *g == gen);
            }
        }
    }

    /// Blocks until `pid` has been reaped and returns its raw wait status.
    pub fn wait(&self, pid: i32) -> i32 {
        let mut m = self.lock();
        loop {
            if let Some(s) = m.remove(&pid) {
                return s;
            }
            m = self.cv.wait(m).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`Reaper::wait`] but keeps the record, so [`Reaper::reaped`] stays true (used for
    /// the container's init, whose pid must never be signalled once reaped).
    pub fn wait_keep(&self, pid: i32) -> i32 {
        let mut m = self.lock();
        loop {
            if let Some(s) = m.get(&pid) {
                return *s;
            }
            m = self.cv.wait(m).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether `pid` has been reaped and its record not yet claimed by `wait`.
    pub fn reaped(&self, pid: i32) -> bool {
        self.lock().contains_key(&pid)
    }
}

/// Decodes a raw wait status into `(exit_code, signal)`; a signal death is 128 + signal.
pub fn decode_status(status: i32) -> (i32, Option<i32>) {
    if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        (128 + sig, Some(sig))
    } else {
        (255, None)
    }
}
