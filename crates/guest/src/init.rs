//! Early PID 1 setup: a real root mount, the API filesystems, cgroups, console, clock,
//! hostname, sysctls and limits. Everything here is plain syscalls; nothing waits.

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use nix::mount::{mount, MsFlags};

/// One mount of the boot plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: String,
    /// Failure is logged, not fatal (the kernel may lack the filesystem).
    pub optional: bool,
}

impl MountSpec {
    fn new(source: &str, target: &str, fstype: &str, flags: MsFlags, data: &str) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            fstype: fstype.into(),
            flags,
            data: data.into(),
            optional: false,
        }
    }

    fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// Create the target and mount. An already mounted devtmpfs (CONFIG_DEVTMPFS_MOUNT) is fine.
    pub fn apply(&self) -> anyhow::Result<()> {
        if self.optional && self.target.starts_with("/sys/") && !Path::new(&self.target).exists() {
            // sysfs has the directory only when the kernel has the filesystem.
            return Ok(());
        }
        fs::create_dir_all(&self.target)
            .with_context(|| format!("creating the mount point {}", self.target))?;
        let data = (!self.data.is_empty()).then_some(self.data.as_str());
        match mount(
            Some(self.source.as_str()),
            self.target.as_str(),
            Some(self.fstype.as_str()),
            self.flags,
            data,
        ) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EBUSY) if self.fstype == "devtmpfs" => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "mounting {} ({}) at {} with {:?}",
                    self.source, self.fstype, self.target, self.data
                )
            }),
        }
    }
}

/// The API filesystems, in mount order.
pub fn base_mounts() -> Vec<MountSpec> {
    let nsuid = MsFlags::MS_NOSUID;
    let nodev = MsFlags::MS_NODEV;
    let noexec = MsFlags::MS_NOEXEC;
    vec![
        MountSpec::new("proc", "/proc", "proc", nsuid | nodev | noexec, ""),
        MountSpec::new("sysfs", "/sys", "sysfs", nsuid | nodev | noexec, ""),
        MountSpec::new("devtmpfs", "/dev", "devtmpfs", nsuid, "mode=0755"),
        MountSpec::new(
            "devpts",
            "/dev/pts",
            "devpts",
            nsuid | noexec,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ),
        MountSpec::new("shm", "/dev/shm", "tmpfs", nsuid | nodev, "mode=1777"),
        MountSpec::new(
            "mqueue",
            "/dev/mqueue",
            "mqueue",
            nsuid | nodev | noexec,
            "",
        )
        .optional(),
        MountSpec::new("tmpfs", "/run", "tmpfs", nsuid | nodev, "mode=0755"),
        MountSpec::new("tmpfs", "/tmp", "tmpfs", nsuid | nodev, "mode=1777"),
        MountSpec::new(
            "securityfs",
            "/sys/kernel/security",
            "securityfs",
            nsuid | nodev | noexec,
            "",
        )
        .optional(),
    ]
}

/// One cgroup v1 hierarchy: mounted at `/sys/fs/cgroup/<dir>` with `-o <dir>`, plus symlinks
/// named after each co-mounted controller (`cpu -> cpu,cpuacct`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupHierarchy {
    pub dir: String,
    pub links: Vec<String>,
}

/// Controllers mounted together, as systemd (and so Debian) does.
const COMOUNTED: &[&[&str]] = &[&["cpu", "cpuacct"], &["net_cls", "net_prio"]];

/// The v1 hierarchies for the enabled controllers listed in `/proc/cgroups`, in its order.
pub fn cgroup_plan(proc_cgroups: &str) -> Vec<CgroupHierarchy> {
    let enabled: Vec<&str> = proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                [name, _, _, "1", ..] => Some(*name),
                _ => None,
            },
        )
        .collect();
    let mut plan: Vec<CgroupHierarchy> = Vec::new();
    for &c in &enabled {
        if plan
            .iter()
            .any(|h| h.dir == c || h.links.iter().any(|l| l == c))
        {
            continue;
        }
        let group = COMOUNTED
            .iter()
            .find(|g| g.contains(&c))
            .map(|g| {
                g.iter()
                    .copied()
                    .filter(|x| enabled.contains(x))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_else(|| vec![c]);
        if group.len() > 1 {
            plan.push(CgroupHierarchy {
                dir: group.join(","),
                links: group.iter().map(|s| s.to_string()).collect(),
            });
        } else {
            plan.push(CgroupHierarchy {
                dir: c.to_string(),
                links: vec![],
            });
        }
    }
    plan
}

/// Root of the initramfs: `rootfs` cannot be pivoted away from, so runc's `pivot_root` fails
/// on it ("invalid argument"). Re-root onto a bind mount of it (which has a parent mount) so
/// containers can pivot normally. No copy is made.
pub fn reroot_if_initramfs() -> anyhow::Result<bool> {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let st = nix::sys::statfs::statfs("/").context("statfs /")?;
    let magic = st.filesystem_type().0 as i64;
    if magic != RAMFS_MAGIC && magic != TMPFS_MAGIC {
        return Ok(false);
    }
    let tmp = "/.berth-root";
    fs::create_dir_all(tmp).with_context(|| format!("creating {tmp}"))?;
    mount(
        Some("/"),
        tmp,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("bind-mounting / for the new root")?;
    nix::unistd::chdir(tmp).context("chdir to the new root")?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .context("moving the new root onto /")?;
    nix::unistd::chroot(".").context("chroot into the new root")?;
    nix::unistd::chdir("/").context("chdir /")?;
    // The mount point is now an ordinary empty directory of the new root.
    let _ = fs::remove_dir(tmp);
    Ok(true)
}

/// Mount the API filesystems, fix up /dev, and give PID 1 a console on fds 0-2.
pub fn mount_base() -> anyhow::Result<()> {
    for m in base_mounts() {
        match m.apply() {
            Ok(()) => {}
            Err(e) if m.optional => eprintln!("berth-guest: warning: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    // Console first, so the rest of the boot can be read.
    attach_console();
    dev_links();
    Ok(())
}

/// Without /dev/console in the initramfs the kernel starts init with no fds 0-2.
fn attach_console() {
    let open = |fd: i32| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok();
    if open(0) && open(1) && open(2) {
        return;
    }
    let Ok(console) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for fd in 0..=2 {
        if !open(fd) {
            // SAFETY: dup2 onto a free standard fd number; `console` stays a valid open fd for
            // the call and is closed by its own drop afterwards.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

fn dev_links() {
    // /dev/ptmx as the devpts instance's multiplexer (what runc and docker expect).
    let ptmx = Path::new("/dev/ptmx");
    let is_link = ptmx
        .symlink_metadata()
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    if !is_link {
        let _ = fs::remove_file(ptmx);
        let _ = std::os::unix::fs::symlink("pts/ptmx", ptmx);
    }
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/core", "/proc/kcore"),
    ] {
        if fs::symlink_metadata(link).is_err() {
            let _ = std::os::unix::fs::symlink(to, link);
        }
    }
}

/// Mount the cgroup v1 hierarchies (Debian's hybrid layout, without `name=systemd`) and cgroup2
/// at `/sys/fs/cgroup/unified`.
pub fn mount_cgroups() -> anyhow::Result<()> {
    let root = "/sys/fs/cgroup";
    MountSpec::new(
        "cgroup",
        root,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "mode=0755",
    )
    .apply()?;
    let proc_cgroups = fs::read_to_string("/proc/cgroups").context("reading /proc/cgroups")?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for h in cgroup_plan(&proc_cgroups) {
        let target = format!("{root}/{}", h.dir);
        if let Err(e) = MountSpec::new("cgroup", &target, "cgroup", flags, &h.dir).apply() {
            tracing::warn!("cgroup controller {}: {e:#}", h.dir);
            continue;
        }
        for l in &h.links {
            let _ = std::os::unix::fs::symlink(&h.dir, format!("{root}/{l}"));
        }
    }
    if let Err(e) = MountSpec::new(
        "cgroup2",
        &format!("{root}/unified"),
        "cgroup2",
        flags,
        "nsdelegate",
    )
    .apply()
    {
        tracing::warn!("cgroup2: {e:#}");
    }
    // Always 1 on recent kernels (the file may be gone or read-only); older ones need it.
    let _ = fs::write(format!("{root}/memory/memory.use_hierarchy"), "1");
    Ok(())
}

/// The kernel command line.
pub fn read_cmdline() -> String {
    fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

/// The time to set the clock to, if it needs setting. `host` is the host's clock when it
/// wrote the command line and `uptime` how long the kernel has been running (the host wrote
/// `berth.time` just before starting the VM): the right time is in `[host, host + uptime]`
/// give or take a little, and anything in there is left alone.
pub fn clock_correction(now: i64, host: i64, uptime: i64) -> Option<i64> {
    const SLACK: i64 = 2;
    if now >= host - SLACK && now <= host + uptime.max(0) + SLACK {
        None
    } else {
        Some(host + uptime.max(0))
    }
}

/// Set the clock from `berth.time` unless it is already about right.
pub fn set_clock(host_secs: i64) -> anyhow::Result<()> {
    use nix::time::{clock_gettime, clock_settime, ClockId};
    let now = clock_gettime(ClockId::CLOCK_REALTIME).context("reading the clock")?;
    let uptime = clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |t| t.tv_sec());
    let Some(to) = clock_correction(now.tv_sec(), host_secs, uptime) else {
        return Ok(());
    };
    let ts = nix::sys::time::TimeSpec::new(to, 0);
    clock_settime(ClockId::CLOCK_REALTIME, ts).context("setting the clock")?;
    tracing::info!(from = now.tv_sec(), to, "clock set from berth.time");
    Ok(())
}

pub const HOSTNAME: &str = "berth-vm";

/// Hostname plus /etc/hostname and /etc/hosts (when missing).
pub fn set_hostname() -> anyhow::Result<()> {
    nix::unistd::sethostname(HOSTNAME).context("sethostname")?;
    let _ = fs::write("/etc/hostname", format!("{HOSTNAME}\n"));
    if !Path::new("/etc/hosts").exists() {
        let _ = fs::write(
            "/etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
        );
    }
    Ok(())
}

/// (path under /proc/sys, value, required). Optional ones depend on kernel options.
pub const SYSCTLS: &[(&str, &str, bool)] = &[
    ("net/ipv4/ip_forward", "1", true),
    ("net/ipv6/conf/all/forwarding", "1", false),
    ("net/bridge/bridge-nf-call-iptables", "1", false),
    ("net/bridge/bridge-nf-call-ip6tables", "1", false),
    ("fs/inotify/max_user_watches", "524288", false),
    ("fs/inotify/max_user_instances", "8192", false),
];

pub fn set_sysctls() {
    for (path, value, required) in SYSCTLS {
        let p = format!("/proc/sys/{path}");
        if let Err(e) = fs::write(&p, value) {
            if *required {
                tracing::warn!("sysctl {path}={value}: {e}");
            } else {
                tracing::debug!("sysctl {path}={value}: {e}");
            }
        }
    }
}

/// Raise the open-file limit for everything started from here (docker's unit uses infinity).
pub fn raise_limits() {
    use nix::sys::resource::{setrlimit, Resource};
    let max = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, max, max) {
        tracing::warn!("raising RLIMIT_NOFILE: {e}");
    }
}

/// Create the runtime directories berthd and berth-guest use.
pub fn runtime_dirs() -> anyhow::Result<()> {
    for d in [
        "/run/berth",
        "/run/berth-guest",
        "/var/lib/berth",
        "/var/log",
    ] {
        fs::create_dir_all(d).with_context(|| format!("creating {d}"))?;
    }
    fs::set_permissions("/run/berth-guest", fs::Permissions::from_mode(0o755))
        .context("chmod /run/berth-guest")?;
    Ok(())
}

/// Write `text` to the console, bypassing the logger (for lines tests grep).
pub fn console_line(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{text}");
    let _ = e.flush();
}

/// Ensure this is PID 1: every step here would damage a normal system.
pub fn require_pid1() -> anyhow::Result<()> {
    if std::process::id() != 1 {
        bail!("berth-guest is the init of Berth's VM and must run as PID 1 (it mounts filesystems and powers the machine off)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t8\t1
cpu\t1\t8\t1
cpuacct\t2\t8\t1
blkio\t7\t8\t1
memory\t4\t32\t1
devices\t5\t8\t1
freezer\t6\t8\t1
net_cls\t0\t7\t1
perf_event\t0\t7\t1
net_prio\t0\t7\t1
hugetlb\t0\t7\t0
pids\t8\t8\t1
";

    #[test]
    fn cgroup_plan_comounts_like_debian() {
        let plan = cgroup_plan(DEBIAN_CGROUPS);
        let dirs: Vec<&str> = plan.iter().map(|h| h.dir.as_str()).collect();
        assert_eq!(
            dirs,
            [
                "cpuset",
                "cpu,cpuacct",
                "blkio",
                "memory",
                "devices",
                "freezer",
                "net_cls,net_prio",
                "perf_event",
                "pids"
            ]
        );
        assert_eq!(plan[1].links, ["cpu", "cpuacct"]);
        assert_eq!(plan[6].links, ["net_cls", "net_prio"]);
        assert!(plan[0].links.is_empty());
    }

    #[test]
    fn cgroup_plan_partial_groups() {
        // cpuacct disabled: cpu alone, no symlinks; net_prio without net_cls.
        let plan = cgroup_plan("cpu 0 1 1\ncpuacct 0 1 0\nnet_prio 0 1 1\nmemory 0 1 1\n");
        let dirs: Vec<&str> = plan.iter().map(|h| h.dir.as_str()).collect();
        assert_eq!(dirs, ["cpu", "net_prio", "memory"]);
        assert!(plan.iter().all(|h| h.links.is_empty()));
        assert!(cgroup_plan("").is_empty());
        assert!(cgroup_plan("garbage\n\n").is_empty());
    }

    #[test]
    fn base_mounts_order_and_options() {
        let m = base_mounts();
        let targets: Vec<&str> = m.iter().map(|m| m.target.as_str()).collect();
        let pos = |t: &str| targets.iter().position(|x| *x == t).expect(t);
        assert!(pos("/dev") < pos("/dev/pts") && pos("/dev") < pos("/dev/shm"));
        assert!(pos("/sys") < pos("/sys/kernel/security"));
        for t in [
            "/proc", "/sys", "/dev", "/dev/pts", "/dev/shm", "/run", "/tmp",
        ] {
            assert!(!m[pos(t)].optional, "{t} is required");
        }
        let pts = &m[pos("/dev/pts")];
        assert!(pts.data.contains("newinstance") && pts.data.contains("ptmxmode=0666"));
        assert!(m[pos("/sys/kernel/security")].optional);
    }

    #[test]
    fn clock() {
        // Host wrote 1000; the kernel has been up 4 s.
        assert_eq!(clock_correction(1003, 1000, 4), None);
        assert_eq!(clock_correction(999, 1000, 4), None);
        assert_eq!(clock_correction(1006, 1000, 4), None);
        assert_eq!(clock_correction(0, 1000, 4), Some(1004));
        assert_eq!(clock_correction(1007, 1000, 4), Some(1004));
        assert_eq!(clock_correction(997, 1000, 4), Some(1004));
        assert_eq!(clock_correction(5, 1000, -1), Some(1000));
    }

    #[test]
    fn ip_forward_is_required() {
        assert!(SYSCTLS.contains(&("net/ipv4/ip_forward", "1", true)));
    }
}
