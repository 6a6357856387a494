//! Shutdown: stop berthd, then every other process, sync, unmount the data disk and the share,
//! and leave (reboot with `reboot=t` + QEMU `-no-reboot` exits QEMU; power-off otherwise).

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::disk::DATA_ROOT;
use crate::init::console_line;

/// A one-shot shutdown request with its reason, shared by everything that can ask for it.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<Option<String>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// Ask for shutdown; the first reason wins.
    pub fn request(&self, reason: &str) {
        self.tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason.to_string());
                true
            } else {
                false
            }
        });
    }

    pub fn requested(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Resolves with the reason once shutdown is requested.
    pub async fn wait(&self) -> String {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            // The sender lives in `self`, so this only fails if it is dropped mid-wait.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Mount points to unmount for `roots`: those roots and everything below them, innermost
/// (most recently mounted) first. `mountinfo` is /proc/self/mountinfo.
pub fn unmount_order(mountinfo: &str, roots: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_octal)
        .filter(|mp| {
            roots.iter().any(|r| {
                let r = r.trim_end_matches('/');
                mp == r || mp.strip_prefix(r).is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .collect();
    v.reverse();
    // A path mounted twice appears twice; unmounting twice is right (stacked mounts).
    v
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// User processes other than PID 1 (kernel threads excluded).
fn user_processes() -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != 1)
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_is_user_process(&s))
                .unwrap_or(false)
        })
        .collect()
}

/// From a /proc/<pid>/stat line: not a kernel thread and not a zombie.
pub fn stat_is_user_process(stat: &str) -> Option<bool> {
    // The command is in parentheses and may contain anything; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3), f[6] = flags (field 9).
    let state = *f.first()?;
    let flags: u64 = f.get(6)?.parse().ok()?;
    Some(flags & libc::PF_KTHREAD as u64 == 0 && state != "Z" && state != "X")
}

/// Wait until no user process is left, for at most `max`.
async fn wait_for_no_processes(max: Duration) -> usize {
    let deadline = Instant::now() + max;
    loop {
        let n = user_processes().len();
        if n == 0 || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole sequence once berthd is stopped (the supervisor does that first). Never returns.
pub async fn power_off(reason: &str, share: Option<&str>) -> ! {
    tracing::info!("shutting down: {reason}");
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    let left = wait_for_no_processes(Duration::from_secs(5)).await;
    if left > 0 {
        tracing::warn!("{left} processes ignored SIGTERM: killing them");
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        wait_for_no_processes(Duration::from_secs(2)).await;
    }
    nix::unistd::sync();
    let clean = unmount_everything(share);
    nix::unistd::sync();
    if clean {
        console_line("berth-guest: powered off cleanly");
    } else {
        console_line("berth-guest: powering off (the data disk could not be unmounted cleanly)");
    }
    reboot_now()
}

/// Unmount what lives under the data root and the share; true when the data disk is no longer
/// mounted read-write.
fn unmount_everything(share: Option<&str>) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut roots = vec![DATA_ROOT];
    roots.extend(share);
    for mp in unmount_order(&mountinfo, &roots) {
        if let Err(e) = umount2(mp.as_str(), MntFlags::empty()) {
            if mp == DATA_ROOT {
                tracing::warn!("unmounting {mp}: {e}; remounting it read-only");
                if let Err(e) = nix::mount::mount(
                    None::<&str>,
                    DATA_ROOT,
                    None::<&str>,
                    MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                ) {
                    tracing::error!("remounting {DATA_ROOT} read-only: {e}");
                    return false;
                }
            } else {
                tracing::debug!("unmounting {mp}: {e}; detaching it");
                let _ = umount2(mp.as_str(), MntFlags::MNT_DETACH);
            }
        }
    }
    true
}

/// Reboot (QEMU exits under `-no-reboot`), else power off, else hang without exiting PID 1.
pub fn reboot_now() -> ! {
    use nix::sys::reboot::{reboot, RebootMode};
    let e = reboot(RebootMode::RB_AUTOBOOT);
    eprintln!("berth-guest: reboot failed ({e:?}); powering off");
    let e = reboot(RebootMode::RB_POWER_OFF);
    eprintln!("berth-guest: power off failed ({e:?})");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:20 / / rw - rootfs rootfs rw
23 22 0:21 / /proc rw - proc proc rw
30 22 254:0 / /var/lib/berth rw,noatime - ext4 /dev/vda rw
31 22 0:40 / /home/me rw - 9p home rw
40 30 0:50 / /var/lib/berth/overlay/abc/merged rw - overlay overlay rw
41 30 0:51 / /var/lib/berth/containers/x/shm rw - tmpfs shm rw
42 31 0:52 / /home/me/with\\040space rw - tmpfs t rw
43 22 0:53 / /var/lib/berthx rw - tmpfs t rw
";

    #[test]
    fn innermost_first() {
        assert_eq!(
            unmount_order(MOUNTINFO, &["/var/lib/berth", "/home/me/"]),
            [
                "/home/me/with space",
                "/var/lib/berth/containers/x/shm",
                "/var/lib/berth/overlay/abc/merged",
                "/home/me",
                "/var/lib/berth",
            ]
        );
        assert!(unmount_order(MOUNTINFO, &["/nothing"]).is_empty());
        assert!(unmount_order("", &["/var/lib/berth"]).is_empty());
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape_octal(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape_octal(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape_octal(r"/x\999"), r"/x\999");
    }

    #[test]
    fn stat_lines() {
        let user = "123 (berthd) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 8 0 50 0 0";
        assert_eq!(stat_is_user_process(user), Some(true));
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0";
        assert_eq!(stat_is_user_process(kthread), Some(false));
        let zombie = "9 (a) b) c) Z 1 9 9 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0";
        assert_eq!(stat_is_user_process(zombie), Some(false));
        assert_eq!(stat_is_user_process("garbage"), None);
    }

    #[tokio::test]
    async fn shutdown_first_reason_wins() {
        let s = Shutdown::new();
        assert!(!s.requested());
        let w = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.request("first");
        s.request("second");
        assert_eq!(w.await.unwrap(), "first");
        assert!(s.requested());
        assert_eq!(s.wait().await, "first");
    }
}
