//! The OCI runtime spec (`config.json`) of a container, built the way dockerd builds it
//! (moby `oci/defaults.go`, `daemon/oci_linux.go`, `oci/caps`, `oci/devices_linux.go`):
//! Docker's default capability set, mounts, masked and read-only paths, device cgroup rules and
//! seccomp profile, adjusted by the container's settings; plus user resolution against the
//! container's `/etc/passwd` and `/etc/group` (libcontainer/user) and `--device` parsing.
//!
//! `build_spec` reads a few facts about the host (the last capability the kernel knows, the
//! kernel version, swap accounting, which network sysctls exist, the nodes of `--device` paths);
//! everything else is a pure function of [`SpecInput`].

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::Value;

use super::seccomp::{self, KernelVersion, LinuxSeccomp, SeccompError};

/// The runtime-spec version written into `ociVersion` (what runc 1.1 reports).
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Where `--init` binds the init binary inside the container.
pub const INIT_PATH_IN_CONTAINER: &str = "/sbin/docker-init";

/// Default size of `/dev/shm` (Docker's `--shm-size` default).
pub const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;

/// Docker's minimum memory limit (`linuxMinMemory`).
const MIN_MEMORY: i64 = 6 * 1024 * 1024;

/// Highest uid/gid libcontainer accepts.
const MAX_ID: i64 = (1 << 31) - 1;

// ----------------------------------------------------------------------------------------------
// Input types
// ----------------------------------------------------------------------------------------------

/// Everything about one container that goes into its runtime spec.
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    /// Container id (64 hex).
    pub id: String,
    /// Final argv (entrypoint and cmd already merged).
    pub args: Vec<String>,
    /// Final environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// Working directory; "/" when empty.
    pub cwd: String,
    pub user: ResolvedUser,
    pub terminal: bool,
    /// Absolute path of the mounted rootfs.
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    pub hostname: String,
    pub domainname: String,
    pub privileged: bool,
    /// "NET_ADMIN", "CAP_NET_ADMIN", "net_admin" or "ALL".
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// "no-new-privileges[:|=bool]", "seccomp=unconfined|builtin|<profile json>", "apparmor=…",
    /// "label=…" (the last two accepted and ignored: no AppArmor/SELinux here).
    pub security_opt: Vec<String>,
    pub devices: Vec<DeviceMapping>,
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    /// Ignored, as by Docker 25 and runc 1.1 (kernel memory limits are gone).
    #[allow(dead_code)]
    pub kernel_memory: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    /// None = no limit set; ≤ 0 = unlimited (-1); > 0 = the limit.
    pub pids_limit: Option<i64>,
    pub oom_kill_disable: bool,
    pub blkio_weight: u16,
    /// e.g. "/berth/<id>" (cgroupfs driver).
    pub cgroups_path: String,
    /// Extra mounts (volumes, binds, tmpfs, /etc/hosts, …); they replace default mounts with the
    /// same destination.
    pub mounts: Vec<MountSpec>,
    pub netns: Namespace,
    pub pid_mode: Namespace,
    pub ipc_mode: Namespace,
    pub uts_host: bool,
    pub sysctls: BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    /// Bytes; ≤ 0 means Docker's default, 64 MiB.
    pub shm_size: i64,
    /// `--init`: this static binary is bound at /sbin/docker-init and runs the command.
    pub init_path: Option<PathBuf>,
    pub oom_score_adj: i32,
    /// Overrides; None = Docker's defaults (none when privileged).
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
}

/// A user resolved against the container's passwd/group files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The runtime spec's `additionalGids`, as Docker fills it: the primary gid first, then the
    /// supplementary groups the user is a member of (only when no group was given explicitly).
    pub additional_gids: Vec<u32>,
}

/// One `--device` mapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    /// Some combination of r, w and m.
    pub cgroup_permissions: String,
}

/// One mount as the runtime spec takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSpec {
    pub destination: String,
    /// The mount type: "bind", "tmpfs", …
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// How a container gets one of its namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Namespace {
    /// A new namespace of its own.
    #[default]
    New,
    /// The host's namespace (no entry in the spec).
    Host,
    /// Join the namespace at this path (e.g. /proc/<pid>/ns/net, /run/berth/netns/<id>).
    Path(PathBuf),
}

/// One `--ulimit name=soft[:hard]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// Parsed `--security-opt` values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    pub no_new_privileges: bool,
    /// "unconfined", "builtin" or a profile's JSON content.
    pub seccomp: Option<String>,
    pub apparmor: Option<String>,
    pub labels: Vec<String>,
}

/// Spec building errors, worded as dockerd words them.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    /// libcontainer capitalises this one (`GetAdditionalGroups`).
    #[error("Unable to find group {0}: no matching entries in group file")]
    NoSuchAdditionalGroup(String),
    #[error("uids and gids must be in range 0-{MAX_ID}")]
    IdRange,
    #[error("unable to read {path}: {reason}")]
    ReadUserDb { path: String, reason: String },
    #[error("error gathering device information while adding custom device {path:?}: {reason}")]
    Device { path: String, reason: String },
    /// `--device` syntax errors ("bad format for path: …", "bad mode specified: …",
    /// "… is not an absolute path", "invalid device specification: …").
    #[error("{0}")]
    InvalidDevice(String),
    #[error("unknown capability: {0:?}")]
    UnknownCapability(String),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Any other invalid setting (Docker's InvalidParameter, HTTP 400).
    #[error("{0}")]
    InvalidParameter(String),
}

// ----------------------------------------------------------------------------------------------
// Host facts
// ----------------------------------------------------------------------------------------------

/// The facts about the host that change the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// /proc/sys/kernel/cap_last_cap: capabilities 0..=this exist.
    pub cap_last_cap: u32,
    /// The engine's own bounding set (CapBnd of /proc/self/status): a container cannot get a
    /// capability the engine lacks, so `--privileged` and `--cap-add ALL` stop there.
    pub cap_bounding: u64,
    pub kernel: KernelVersion,
    /// Swap limits can be set (memory.memsw.* on cgroup v1).
    pub swap_limit: bool,
    /// The sysctl net.ipv4.ping_group_range exists.
    pub ping_group_range: bool,
    /// The sysctl net.ipv4.ip_unprivileged_port_start exists.
    pub unprivileged_port_start: bool,
    /// Where the host's device nodes are (for `--privileged`): "/dev".
    pub dev_dir: PathBuf,
}

impl HostInfo {
    /// Probe this host.
    pub fn detect() -> HostInfo {
        let cap_last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .map_or(LAST_KNOWN_CAP, |n| n.min(LAST_KNOWN_CAP));
        let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let swap_limit = if v2 {
            true
        } else {
            Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
        };
        let cap_bounding = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|st| {
                st.lines()
                    .find_map(|l| l.strip_prefix("CapBnd:"))
                    .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            })
            .unwrap_or(u64::MAX);
        HostInfo {
            cap_last_cap,
            cap_bounding,
            kernel: KernelVersion::current().unwrap_or(KernelVersion(5, 10, 0)),
            swap_limit,
            ping_group_range: Path::new("/proc/sys/net/ipv4/ping_group_range").exists(),
            unprivileged_port_start: Path::new("/proc/sys/net/ipv4/ip_unprivileged_port_start")
                .exists(),
            dev_dir: PathBuf::from("/dev"),
        }
    }

    /// This host's facts, probed once.
    pub fn get() -> &'static HostInfo {
        static HOST: OnceLock<HostInfo> = OnceLock::new();
        HOST.get_or_init(HostInfo::detect)
    }
}

// ----------------------------------------------------------------------------------------------
// Capabilities
// ----------------------------------------------------------------------------------------------

/// Capability names by number (linux/capability.h).
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The highest capability number this module knows a name for.
pub const LAST_KNOWN_CAP: u32 = CAP_NAMES.len() as u32 - 1;

/// Docker's default capability set, in Docker's order.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The name of capability number `n` ("CAP_CHOWN" for 0).
pub fn cap_name(n: u32) -> Option<String> {
    CAP_NAMES.get(n as usize).map(|s| (*s).to_string())
}

/// The number of a capability name ("CAP_CHOWN" → 0).
pub fn cap_number(name: &str) -> Option<u32> {
    CAP_NAMES.iter().position(|c| *c == name).map(|i| i as u32)
}

/// All capabilities 0..=last_cap (what `--privileged` and `--cap-add ALL` give).
pub fn all_caps(last_cap: u32) -> Vec<String> {
    (0..=last_cap.min(LAST_KNOWN_CAP))
        .filter_map(cap_name)
        .collect()
}

/// What `--privileged` and `--cap-add ALL` give on this host: every capability the kernel
/// knows that the engine itself holds in its bounding set.
pub fn available_caps(host: &HostInfo) -> Vec<String> {
    all_caps(host.cap_last_cap)
        .into_iter()
        .filter(|c| cap_number(c).is_some_and(|n| host.cap_bounding & (1u64 << n) != 0))
        .collect()
}

/// [`available_caps`] of this host (the capability set of a privileged container or exec).
#[allow(dead_code)] // API for `exec --privileged`
pub fn privileged_caps() -> Vec<String> {
    available_caps(HostInfo::get())
}

/// The bit mask of a capability set, as /proc/<pid>/status shows it (CapEff etc.).
#[allow(dead_code)] // API for tests and diagnostics
pub fn caps_mask(caps: &[String]) -> u64 {
    caps.iter()
        .filter_map(|c| cap_number(c))
        .fold(0, |m, n| m | (1u64 << n))
}

/// Upper-case, add the CAP_ prefix, check the name (moby `NormalizeLegacyCapabilities`).
fn normalize_caps(caps: &[String], last_cap: u32) -> Result<Vec<String>, SpecError> {
    let valid = all_caps(last_cap);
    caps.iter()
        .map(|c| {
            let up = c.trim().to_ascii_uppercase();
            if up == "ALL" {
                return Ok(up);
            }
            let name = if up.starts_with("CAP_") {
                up
            } else {
                format!("CAP_{up}")
            };
            if valid.contains(&name) {
                Ok(name)
            } else {
                Err(SpecError::UnknownCapability(name))
            }
        })
        .collect()
}

/// The container's capability set (moby `TweakCapabilities` over the default set).
pub fn tweak_capabilities(
    adds: &[String],
    drops: &[String],
    privileged: bool,
    host: &HostInfo,
) -> Result<Vec<String>, SpecError> {
    if privileged {
        return Ok(available_caps(host));
    }
    let last_cap = host.cap_last_cap;
    let basics = DEFAULT_CAPS.iter().map(|s| (*s).to_string());
    if adds.is_empty() && drops.is_empty() {
        return Ok(basics.collect());
    }
    let drop = normalize_caps(drops, last_cap)?;
    let add = normalize_caps(adds, last_cap)?;
    let all = "ALL".to_string();
    let caps: Vec<String> = if add.contains(&all) {
        available_caps(host)
            .into_iter()
            .filter(|c| !drop.contains(c))
            .collect()
    } else if drop.contains(&all) {
        add
    } else {
        basics.filter(|c| !drop.contains(c)).chain(add).collect()
    };
    // Docker keeps duplicates (e.g. --cap-add CHOWN); they mean nothing, so drop them.
    let mut seen = HashSet::new();
    Ok(caps
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect())
}

// ----------------------------------------------------------------------------------------------
// Security options
// ----------------------------------------------------------------------------------------------

/// Go's strconv.ParseBool.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parse `--security-opt` values as dockerd's `parseSecurityOpt` does.
pub fn parse_security_opts(opts: &[String]) -> Result<SecurityOptions, SpecError> {
    let mut out = SecurityOptions::default();
    for opt in opts {
        if opt == "no-new-privileges" {
            out.no_new_privileges = true;
            continue;
        }
        if opt == "disable" {
            out.labels.push("disable".into());
            continue;
        }
        let kv = if opt.contains('=') {
            opt.split_once('=')
        } else {
            opt.split_once(':')
        };
        let Some((k, v)) = kv else {
            return Err(SpecError::InvalidParameter(format!(
                "invalid --security-opt 1: {opt:?}"
            )));
        };
        match k {
            "label" => out.labels.push(v.to_string()),
            "apparmor" => out.apparmor = Some(v.to_string()),
            "seccomp" => out.seccomp = Some(v.to_string()),
            "no-new-privileges" => {
                out.no_new_privileges = parse_go_bool(v).ok_or_else(|| {
                    SpecError::InvalidParameter(format!("invalid --security-opt 2: {opt:?}"))
                })?;
            }
            _ => {
                return Err(SpecError::InvalidParameter(format!(
                    "invalid --security-opt 2: {opt:?}"
                )))
            }
        }
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------------
// Devices
// ----------------------------------------------------------------------------------------------

/// r, w and m, each at most once, not empty (Docker's `validDeviceMode`).
fn valid_device_mode(mode: &str) -> bool {
    let mut seen = [false; 3];
    !mode.is_empty()
        && mode.chars().all(|c| {
            let i = match c {
                'r' => 0,
                'w' => 1,
                'm' => 2,
                _ => return false,
            };
            !std::mem::replace(&mut seen[i], true)
        })
}

/// Parse `--device host[:container][:perms]` (docker CLI `ValidateDevice` + `parseDevice`).
#[allow(dead_code)] // API: the Engine API sends devices already parsed
pub fn parse_device(s: &str) -> Result<DeviceMapping, SpecError> {
    let bad = SpecError::InvalidDevice;
    if s.matches(':').count() > 2 {
        return Err(bad(format!("bad format for path: {s}")));
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts[0].is_empty() {
        return Err(bad(format!("bad format for path: {s}")));
    }
    let src = parts[0].to_string();
    let (dst, perms) = match parts.as_slice() {
        [_] => (src.clone(), "rwm".to_string()),
        [_, second] if valid_device_mode(second) => (src.clone(), (*second).to_string()),
        [_, second] => ((*second).to_string(), "rwm".to_string()),
        [_, second, third] => {
            if !valid_device_mode(third) {
                return Err(bad(format!("bad mode specified: {third}")));
            }
            let dst = if second.is_empty() {
                src.clone()
            } else {
                (*second).to_string()
            };
            (dst, (*third).to_string())
        }
        _ => return Err(bad(format!("invalid device specification: {s}"))),
    };
    if !dst.starts_with('/') {
        return Err(bad(format!("{dst} is not an absolute path")));
    }
    Ok(DeviceMapping {
        path_on_host: src,
        path_in_container: clean_path(&dst),
        cgroup_permissions: perms,
    })
}

/// A device node on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostDevice {
    kind: &'static str,
    major: i64,
    minor: i64,
    file_mode: u32,
    uid: u32,
    gid: u32,
}

/// glibc's gnu_dev_major/gnu_dev_minor.
fn dev_major(dev: u64) -> i64 {
    (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff)) as i64
}
fn dev_minor(dev: u64) -> i64 {
    (((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff)) as i64
}

/// lstat a path: Ok(None) when it exists but is not a character or block device.
fn device_at(path: &Path) -> io::Result<Option<HostDevice>> {
    let md = std::fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Ok(None);
    };
    Ok(Some(HostDevice {
        kind,
        major: dev_major(md.rdev()),
        minor: dev_minor(md.rdev()),
        file_mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
    }))
}

/// Go's wording of an errno ("no such file or directory").
fn go_error_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::EACCES) => "permission denied".into(),
        Some(libc::EPERM) => "operation not permitted".into(),
        Some(libc::ENOTDIR) => "not a directory".into(),
        Some(libc::ELOOP) => "too many levels of symbolic links".into(),
        Some(libc::ENAMETOOLONG) => "file name too long".into(),
        _ => {
            let s = e.to_string();
            let s = s.split(" (os error").next().unwrap_or(&s).to_string();
            let mut c = s.chars();
            match c.next() {
                Some(f) => f.to_lowercase().chain(c).collect(),
                None => s,
            }
        }
    }
}

fn linux_device(d: &HostDevice, path: String) -> LinuxDevice {
    LinuxDevice {
        path,
        kind: d.kind.to_string(),
        major: d.major,
        minor: d.minor,
        file_mode: Some(d.file_mode),
        uid: Some(d.uid),
        gid: Some(d.gid),
    }
}

fn device_rule(d: &HostDevice, access: &str) -> DeviceCgroup {
    DeviceCgroup {
        allow: true,
        kind: Some(d.kind.to_string()),
        major: Some(d.major),
        minor: Some(d.minor),
        access: access.to_string(),
    }
}

/// moby `DevicesFromPath`: the device node (following a symlink), or every device under a
/// directory; with the cgroup rules allowing them.
fn devices_from_path(
    on_host: &str,
    in_container: &str,
    perms: &str,
) -> Result<(Vec<LinuxDevice>, Vec<DeviceCgroup>), SpecError> {
    let mut resolved = PathBuf::from(on_host);
    if let Ok(md) = std::fs::symlink_metadata(on_host) {
        if md.file_type().is_symlink() {
            if let Ok(p) = std::fs::canonicalize(on_host) {
                resolved = p;
            }
        }
    }
    let err = |reason: String| SpecError::Device {
        path: on_host.to_string(),
        reason,
    };
    match device_at(&resolved) {
        Ok(Some(d)) => Ok((
            vec![linux_device(&d, in_container.to_string())],
            vec![device_rule(&d, perms)],
        )),
        Err(e) => Err(err(go_error_text(&e))),
        Ok(None) => {
            let mut devs = Vec::new();
            let mut rules = Vec::new();
            if resolved.is_dir() {
                let mut found = Vec::new();
                walk_devices(&resolved, &mut found);
                for (path, d) in found {
                    let rel = path.strip_prefix(&resolved).unwrap_or(&path);
                    let dest = Path::new(in_container)
                        .join(rel)
                        .to_string_lossy()
                        .into_owned();
                    devs.push(linux_device(&d, dest));
                    rules.push(device_rule(&d, perms));
                }
            }
            if devs.is_empty() {
                Err(err("not a device node".into()))
            } else {
                Ok((devs, rules))
            }
        }
    }
}

/// Every device node under `dir`, recursively, errors ignored (sorted for stable output).
fn walk_devices(dir: &Path, out: &mut Vec<(PathBuf, HostDevice)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_dir() => walk_devices(&p, out),
            Ok(_) => {
                if let Ok(Some(d)) = device_at(&p) {
                    out.push((p, d));
                }
            }
            Err(_) => {}
        }
    }
}

/// The host's devices for `--privileged` (containerd `HostDevices`): everything under /dev but
/// pts, shm, fd, mqueue, .lxc, .lxd-mounts, .udev and console.
fn host_devices(dir: &Path) -> Vec<LinuxDevice> {
    fn walk(dir: &Path, out: &mut Vec<LinuxDevice>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Ok(md) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if md.is_dir() {
                if !matches!(
                    name.as_str(),
                    "pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev"
                ) {
                    walk(&p, out);
                }
                continue;
            }
            if name == "console" {
                continue;
            }
            if let Ok(Some(d)) = device_at(&p) {
                out.push(linux_device(&d, p.to_string_lossy().into_owned()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    if dir != Path::new("/dev") {
        // Tests point dev_dir elsewhere; paths in the container are always under /dev.
        for d in &mut out {
            if let Ok(rel) = Path::new(&d.path).strip_prefix(dir) {
                d.path = Path::new("/dev").join(rel).to_string_lossy().into_owned();
            }
        }
    }
    out
}

/// runc's always-allowed devices (libcontainer/specconv `AllowedDevices`), listed explicitly.
fn default_device_rules() -> Vec<DeviceCgroup> {
    let r = |kind: &str, major: Option<i64>, minor: Option<i64>, access: &str| DeviceCgroup {
        allow: true,
        kind: Some(kind.to_string()),
        major,
        minor,
        access: access.to_string(),
    };
    vec![
        r("c", None, None, "m"),
        r("b", None, None, "m"),
        r("c", Some(1), Some(3), "rwm"),    // /dev/null
        r("c", Some(1), Some(8), "rwm"),    // /dev/random
        r("c", Some(1), Some(7), "rwm"),    // /dev/full
        r("c", Some(5), Some(0), "rwm"),    // /dev/tty
        r("c", Some(1), Some(5), "rwm"),    // /dev/zero
        r("c", Some(1), Some(9), "rwm"),    // /dev/urandom
        r("c", Some(5), Some(1), "rwm"),    // /dev/console
        r("c", Some(136), None, "rwm"),     // /dev/pts/*
        r("c", Some(5), Some(2), "rwm"),    // /dev/ptmx
        r("c", Some(10), Some(200), "rwm"), // /dev/net/tun
    ]
}

// ----------------------------------------------------------------------------------------------
// Users
// ----------------------------------------------------------------------------------------------

/// Join `path` onto `root` resolving symlinks as if `root` were "/" (never escaping it).
pub fn scoped_join(root: &Path, path: &str) -> PathBuf {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = Path::new(path)
        .components()
        .filter_map(component_name)
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        let is_link = std::fs::symlink_metadata(&candidate)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && links < 255 {
            links += 1;
            if let Ok(target) = std::fs::read_link(&candidate) {
                if target.is_absolute() {
                    resolved.clear();
                }
                let parts: Vec<OsString> = target.components().filter_map(component_name).collect();
                for p in parts.into_iter().rev() {
                    pending.push_front(p);
                }
                continue;
            }
        }
        resolved.push(part);
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    out
}

fn component_name(c: Component<'_>) -> Option<OsString> {
    match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        _ => None,
    }
}

struct PasswdEntry {
    name: String,
    uid: i64,
    gid: i64,
}

struct GroupEntry {
    name: String,
    gid: i64,
    members: Vec<String>,
}

fn db_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    db_lines(text)
        .filter_map(|f| {
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3).and_then(|g| g.trim().parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    db_lines(text)
        .filter_map(|f| {
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn read_optional(path: &Path) -> Result<Option<String>, SpecError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e)
            if matches!(e.kind(), io::ErrorKind::NotFound)
                || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(SpecError::ReadUserDb {
            path: path.display().to_string(),
            reason: go_error_text(&e),
        }),
    }
}

fn check_id(id: i64) -> Result<u32, SpecError> {
    if (0..=MAX_ID).contains(&id) {
        Ok(id as u32)
    } else {
        Err(SpecError::IdRange)
    }
}

/// Resolve `user` ("", "name", "uid", "name:group", "uid:gid", "name:gid", …) against the
/// container's /etc/passwd and /etc/group, as Docker does (libcontainer/user `GetExecUser`).
/// Missing files are fine for numeric ids.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, SpecError> {
    let passwd = read_optional(&scoped_join(rootfs, "/etc/passwd"))?;
    let group = read_optional(&scoped_join(rootfs, "/etc/group"))?;
    resolve_user_from(user, passwd.as_deref(), group.as_deref())
}

/// [`resolve_user`] over the passwd and group contents (None = file missing).
pub fn resolve_user_from(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let mut fields = spec.split(':');
    let user_arg = fields.next().unwrap_or("");
    let group_arg = fields.next().unwrap_or("");
    let uid_num = user_arg.parse::<i64>().ok();
    let gid_num = group_arg.parse::<i64>().ok();

    let users = passwd.map(parse_passwd).unwrap_or_default();
    let found = users.iter().find(|u| match (user_arg.is_empty(), uid_num) {
        (true, _) => u.uid == 0,
        (false, Some(n)) => u.uid == n,
        (false, None) => u.name == user_arg,
    });
    let (mut uid, mut gid, matched) = (0i64, 0i64, found.map(|u| u.name.as_str()));
    if let Some(u) = found {
        uid = u.uid;
        gid = u.gid;
    } else if !user_arg.is_empty() {
        uid = uid_num.ok_or_else(|| SpecError::NoSuchUser(user_arg.to_string()))?;
        check_id(uid)?;
    }

    let mut sgids = Vec::new();
    if !group_arg.is_empty() || matched.is_some() {
        let groups = group.map(parse_group).unwrap_or_default();
        if group_arg.is_empty() {
            let name = matched.unwrap_or_default();
            sgids = groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.gid)
                .collect();
        } else {
            let found = groups.iter().find(|g| match gid_num {
                Some(n) => g.gid == n,
                None => g.name == group_arg,
            });
            gid = match found {
                Some(g) => g.gid,
                None => {
                    let n = gid_num.ok_or_else(|| SpecError::NoSuchGroup(group_arg.to_string()))?;
                    check_id(n)?;
                    n
                }
            };
        }
    }
    let uid = check_id(uid)?;
    let gid = check_id(gid)?;
    let mut additional_gids = vec![gid];
    for g in sgids {
        additional_gids.push(check_id(g)?);
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// `HostConfig.GroupAdd` resolved against the container's /etc/group, as Docker does
/// (libcontainer/user `GetAdditionalGroups`): a name or gid found in the file gives that group's
/// gid; a number not in the file is used as is; anything else is an error.
pub fn resolve_additional_groups(rootfs: &Path, groups: &[String]) -> Result<Vec<u32>, SpecError> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let text = read_optional(&scoped_join(rootfs, "/etc/group"))?;
    resolve_additional_groups_from(groups, text.as_deref())
}

/// [`resolve_additional_groups`] over the group file's contents (None = file missing).
pub fn resolve_additional_groups_from(
    wanted: &[String],
    group: Option<&str>,
) -> Result<Vec<u32>, SpecError> {
    let entries = group.map(parse_group).unwrap_or_default();
    let mut out: Vec<u32> = Vec::new();
    for ag in wanted {
        let ag = ag.trim();
        let gid = match entries
            .iter()
            .find(|g| g.name == ag || g.gid.to_string() == ag)
        {
            Some(g) => check_id(g.gid)?,
            None => {
                let n: i64 = ag
                    .parse()
                    .map_err(|_| SpecError::NoSuchAdditionalGroup(ag.to_string()))?;
                check_id(n)?
            }
        };
        if !out.contains(&gid) {
            out.push(gid);
        }
    }
    Ok(out)
}

// ----------------------------------------------------------------------------------------------
// Output types (runtime-spec config.json)
// ----------------------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    oci_version: String,
    process: Process,
    root: Root,
    #[serde(skip_serializing_if = "String::is_empty")]
    hostname: String,
    mounts: Vec<Mount>,
    linux: Linux,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    terminal: bool,
    user: User,
    args: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    cwd: String,
    capabilities: Capabilities,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rlimits: Vec<Rlimit>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    no_new_privileges: bool,
    oom_score_adj: i32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct User {
    uid: u32,
    gid: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct Capabilities {
    bounding: Vec<String>,
    effective: Vec<String>,
    permitted: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Rlimit {
    #[serde(rename = "type")]
    kind: String,
    hard: u64,
    soft: u64,
}

#[derive(Debug, Serialize)]
struct Root {
    path: PathBuf,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Mount {
    destination: String,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    source: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    options: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Linux {
    resources: Resources,
    #[serde(skip_serializing_if = "String::is_empty")]
    cgroups_path: String,
    namespaces: Vec<NamespaceEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<LinuxDevice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seccomp: Option<LinuxSeccomp>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    sysctl: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    masked_paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    readonly_paths: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    rootfs_propagation: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Resources {
    devices: Vec<DeviceCgroup>,
    memory: Memory,
    cpu: Cpu,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<Pids>,
    #[serde(rename = "blockIO")]
    block_io: BlockIo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct DeviceCgroup {
    allow: bool,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    major: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minor: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    access: String,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Memory {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap: Option<i64>,
    #[serde(rename = "disableOOMKiller")]
    disable_oom_killer: bool,
}

#[derive(Debug, Default, Serialize)]
struct Cpu {
    shares: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    cpus: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    mems: String,
}

#[derive(Debug, Serialize)]
struct Pids {
    limit: i64,
}

#[derive(Debug, Default, Serialize)]
struct BlockIo {
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct LinuxDevice {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    major: i64,
    minor: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_mode: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
}

#[derive(Debug, Serialize)]
struct NamespaceEntry {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
}

// ----------------------------------------------------------------------------------------------
// Building
// ----------------------------------------------------------------------------------------------

/// Docker's masked paths.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, kind: &str, source: &str, options: &[&str]) -> Mount {
    Mount {
        destination: dest.into(),
        kind: kind.into(),
        source: source.into(),
        options: options.iter().map(|s| (*s).to_string()).collect(),
    }
}

/// Docker's default mounts (oci/defaults.go), /dev/shm sized.
fn default_mounts(shm_size: i64) -> Vec<Mount> {
    let mut shm = mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777"],
    );
    shm.options.push(format!("size={shm_size}"));
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        shm,
    ]
}

/// Go's path.Clean for absolute container paths.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn path_depth(p: &str) -> usize {
    clean_path(p).split('/').filter(|s| !s.is_empty()).count()
}

/// Defaults, overridden by caller mounts with the same destination (and everything under /dev
/// when the caller mounts /dev); caller mounts sorted parents first; read-only rootfs and
/// privileged adjustments (moby `WithMounts`).
fn build_mounts(input: &SpecInput, init: Option<&Path>) -> Vec<Mount> {
    let shm_size = if input.shm_size > 0 {
        input.shm_size
    } else {
        DEFAULT_SHM_SIZE
    };
    let user_dests: HashSet<String> = input
        .mounts
        .iter()
        .map(|m| clean_path(&m.destination))
        .collect();
    let user_dev = user_dests.contains("/dev");

    let mut defaults = default_mounts(shm_size);
    if let Some(path) = init {
        defaults.push(Mount {
            destination: INIT_PATH_IN_CONTAINER.into(),
            kind: "bind".into(),
            source: path.to_string_lossy().into_owned(),
            options: vec!["bind".into(), "ro".into()],
        });
    }
    defaults.retain(|m| {
        let under_user_dev = user_dev && m.destination.starts_with("/dev/");
        !under_user_dev && !user_dests.contains(&m.destination)
    });
    if input.readonly_rootfs {
        for m in &mut defaults {
            let exempt = matches!(
                m.destination.as_str(),
                "/proc" | "/dev/pts" | "/dev/shm" | "/dev/mqueue" | "/dev"
            );
            if !exempt && !m.options.iter().any(|o| o == "ro") {
                m.options.push("ro".into());
            }
        }
    }
    if input.privileged {
        for m in &mut defaults {
            if m.destination == "/sys" || m.kind == "cgroup" {
                m.options.retain(|o| o != "ro");
            }
        }
    }

    let mut user: Vec<Mount> = input
        .mounts
        .iter()
        .map(|m| {
            let mut options = m.options.clone();
            if m.kind == "bind" && !options.iter().any(|o| o == "bind" || o == "rbind") {
                options.insert(0, "rbind".into());
            }
            Mount {
                destination: clean_path(&m.destination),
                kind: m.kind.clone(),
                source: m.source.clone(),
                options,
            }
        })
        .collect();
    user.sort_by_key(|m| path_depth(&m.destination));
    defaults.extend(user);
    defaults
}

fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<Rlimit>, SpecError> {
    const NAMES: [&str; 15] = [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    ];
    ulimits
        .iter()
        .map(|u| {
            let name = u.name.to_ascii_lowercase();
            if !NAMES.contains(&name.as_str()) {
                return Err(SpecError::InvalidParameter(format!(
                    "invalid ulimit type: {}",
                    u.name
                )));
            }
            if u.soft > u.hard {
                return Err(SpecError::InvalidParameter(format!(
                    "ulimit soft limit must be less than or equal to hard limit: {} > {}",
                    u.soft, u.hard
                )));
            }
            // Go's uint64(int64): -1 (unlimited) becomes RLIM_INFINITY.
            Ok(Rlimit {
                kind: format!("RLIMIT_{}", name.to_ascii_uppercase()),
                hard: u.hard as u64,
                soft: u.soft as u64,
            })
        })
        .collect()
}

fn memory(input: &SpecInput, host: &HostInfo) -> Result<Memory, SpecError> {
    if input.memory > 0 && input.memory < MIN_MEMORY {
        return Err(SpecError::InvalidParameter(
            "Minimum memory limit allowed is 6MB".into(),
        ));
    }
    if input.memory > 0 && input.memory_swap > 0 && input.memory_swap < input.memory {
        return Err(SpecError::InvalidParameter(
            "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
        ));
    }
    if input.memory > 0 && input.memory_reservation > input.memory {
        return Err(SpecError::InvalidParameter(
            "Minimum memory limit can not be less than memory reservation limit, see usage".into(),
        ));
    }
    // dockerd: a memory limit without a swap setting allows as much swap again.
    let swap = if input.memory > 0 && input.memory_swap == 0 {
        input.memory * 2
    } else {
        input.memory_swap
    };
    Ok(Memory {
        limit: (input.memory > 0).then_some(input.memory),
        reservation: (input.memory_reservation > 0).then_some(input.memory_reservation),
        swap: (swap > 0 && host.swap_limit).then_some(swap),
        disable_oom_killer: input.oom_kill_disable,
    })
}

fn cpu(input: &SpecInput) -> Result<Cpu, SpecError> {
    if input.cpu_shares < 0 {
        return Err(SpecError::InvalidParameter(
            "shares: invalid argument".into(),
        ));
    }
    if input.nano_cpus > 0 && input.cpu_period > 0 {
        return Err(SpecError::InvalidParameter(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set".into(),
        ));
    }
    if input.nano_cpus > 0 && input.cpu_quota > 0 {
        return Err(SpecError::InvalidParameter(
            "Conflicting options: Nano CPUs and CPU Quota cannot both be set".into(),
        ));
    }
    let mut cpu = Cpu {
        shares: input.cpu_shares as u64,
        cpus: input.cpuset_cpus.clone(),
        mems: input.cpuset_mems.clone(),
        ..Cpu::default()
    };
    if input.nano_cpus > 0 {
        const PERIOD: i64 = 100_000; // 100ms in µs
        cpu.period = Some(PERIOD as u64);
        cpu.quota = Some(input.nano_cpus * PERIOD / 1_000_000_000);
    }
    if input.cpu_period != 0 {
        cpu.period = Some(input.cpu_period as u64);
    }
    if input.cpu_quota != 0 {
        cpu.quota = Some(input.cpu_quota);
    }
    Ok(cpu)
}

fn namespace_entry(kind: &'static str, ns: &Namespace) -> Option<NamespaceEntry> {
    match ns {
        Namespace::New => Some(NamespaceEntry { kind, path: None }),
        Namespace::Path(p) => Some(NamespaceEntry {
            kind,
            path: Some(p.clone()),
        }),
        Namespace::Host => None,
    }
}

/// The container's `config.json`, probing this host for the facts in [`HostInfo`].
pub fn build_spec(input: &SpecInput) -> Result<Value, SpecError> {
    build_spec_with_host(input, HostInfo::get())
}

/// [`build_spec`] with the host facts given.
pub fn build_spec_with_host(input: &SpecInput, host: &HostInfo) -> Result<Value, SpecError> {
    if input.args.is_empty() || input.args[0].is_empty() {
        return Err(SpecError::InvalidParameter("No command specified".into()));
    }
    if !input.rootfs.is_absolute() {
        return Err(SpecError::InvalidParameter(format!(
            "rootfs of container {} must be an absolute path: {}",
            input.id,
            input.rootfs.display()
        )));
    }
    let cwd = if input.cwd.is_empty() {
        "/".to_string()
    } else {
        input.cwd.clone()
    };
    if !cwd.starts_with('/') {
        return Err(SpecError::InvalidParameter(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let security = parse_security_opts(&input.security_opt)?;
    let caps = tweak_capabilities(&input.cap_add, &input.cap_drop, input.privileged, host)?;

    // --init only makes sense as PID 1 of a PID namespace of the container's own.
    let init = input
        .init_path
        .as_deref()
        .filter(|_| input.pid_mode == Namespace::New);
    let mut args = input.args.clone();
    if init.is_some() {
        args.splice(0..0, [INIT_PATH_IN_CONTAINER.to_string(), "--".to_string()]);
    }

    let seccomp = match security.seccomp.as_deref() {
        Some("unconfined") => None,
        _ if input.privileged => None,
        None | Some("builtin") | Some("") => seccomp::default_for_caps(&caps, host.kernel)?,
        Some(body) => seccomp::to_runtime_spec(&seccomp::parse_profile(body)?, &caps, host.kernel)?,
    };

    // Devices.
    let mut devices = Vec::new();
    let mut device_rules;
    if input.privileged {
        devices = host_devices(&host.dev_dir);
        for d in &input.devices {
            if d.path_on_host == d.path_in_container {
                continue; // already there through /dev
            }
            let (devs, _) = devices_from_path(&d.path_on_host, &d.path_in_container, "rwm")?;
            devices.extend(devs);
        }
        device_rules = vec![DeviceCgroup {
            allow: true,
            kind: None,
            major: None,
            minor: None,
            access: "rwm".into(),
        }];
    } else {
        device_rules = vec![DeviceCgroup {
            allow: false,
            kind: None,
            major: None,
            minor: None,
            access: "rwm".into(),
        }];
        device_rules.extend(default_device_rules());
        for d in &input.devices {
            let perms = if d.cgroup_permissions.is_empty() {
                "rwm"
            } else {
                d.cgroup_permissions.as_str()
            };
            if !valid_device_mode(perms) {
                return Err(SpecError::InvalidDevice(format!(
                    "bad mode specified: {perms}"
                )));
            }
            let dest = if d.path_in_container.is_empty() {
                &d.path_on_host
            } else {
                &d.path_in_container
            };
            let (devs, rules) = devices_from_path(&d.path_on_host, dest, perms)?;
            devices.extend(devs);
            device_rules.extend(rules);
        }
    }

    // Sysctls: domainname (there is no runtime-spec field runc 1.1 honours), Docker's network
    // defaults when the container has a network namespace of its own, then the user's.
    let mut sysctl = BTreeMap::new();
    if !input.domainname.is_empty() && !input.uts_host {
        sysctl.insert("kernel.domainname".to_string(), input.domainname.clone());
    }
    if input.netns != Namespace::Host {
        if host.ping_group_range {
            sysctl.insert(
                "net.ipv4.ping_group_range".to_string(),
                "0 2147483647".to_string(),
            );
        }
        if host.unprivileged_port_start {
            sysctl.insert(
                "net.ipv4.ip_unprivileged_port_start".to_string(),
                "0".to_string(),
            );
        }
    }
    sysctl.extend(input.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())));

    let namespaces: Vec<NamespaceEntry> = [
        Some(NamespaceEntry {
            kind: "mount",
            path: None,
        }),
        namespace_entry("network", &input.netns),
        (!input.uts_host).then_some(NamespaceEntry {
            kind: "uts",
            path: None,
        }),
        namespace_entry("pid", &input.pid_mode),
        namespace_entry("ipc", &input.ipc_mode),
    ]
    .into_iter()
    .flatten()
    .collect();

    let mounts = build_mounts(input, init);
    let propagation = if input
        .mounts
        .iter()
        .any(|m| m.options.iter().any(|o| o == "shared" || o == "rshared"))
    {
        "shared"
    } else if input
        .mounts
        .iter()
        .any(|m| m.options.iter().any(|o| o == "slave" || o == "rslave"))
    {
        "rslave"
    } else {
        ""
    };

    let (masked, readonly) = if input.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            DEFAULT_MASKED_PATHS
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| (*s).to_string())
                .collect(),
        )
    };

    let spec = Spec {
        oci_version: OCI_VERSION.into(),
        process: Process {
            terminal: input.terminal,
            user: User {
                uid: input.user.uid,
                gid: input.user.gid,
                additional_gids: input.user.additional_gids.clone(),
            },
            args,
            env: input.env.clone(),
            cwd,
            capabilities: Capabilities {
                bounding: caps.clone(),
                effective: caps.clone(),
                permitted: caps,
            },
            rlimits: rlimits(&input.ulimits)?,
            no_new_privileges: security.no_new_privileges,
            oom_score_adj: input.oom_score_adj,
        },
        root: Root {
            path: input.rootfs.clone(),
            readonly: input.readonly_rootfs,
        },
        hostname: if input.uts_host {
            String::new()
        } else {
            input.hostname.clone()
        },
        mounts,
        linux: Linux {
            resources: Resources {
                devices: device_rules,
                memory: memory(input, host)?,
                cpu: cpu(input)?,
                pids: input.pids_limit.map(|l| Pids {
                    limit: if l <= 0 { -1 } else { l },
                }),
                block_io: BlockIo {
                    weight: (input.blkio_weight != 0).then_some(input.blkio_weight),
                },
            },
            cgroups_path: input.cgroups_path.clone(),
            namespaces,
            devices,
            seccomp,
            sysctl,
            masked_paths: input.masked_paths.clone().unwrap_or(masked),
            readonly_paths: input.readonly_paths.clone().unwrap_or(readonly),
            rootfs_propagation: propagation.into(),
        },
    };
    serde_json::to_value(&spec)
        .map_err(|e| SpecError::InvalidParameter(format!("encoding the runtime spec: {e}")))
}

// ----------------------------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn host() -> HostInfo {
        HostInfo {
            cap_last_cap: 40,
            cap_bounding: (1u64 << 41) - 1,
            kernel: KernelVersion(6, 1, 0),
            swap_limit: true,
            ping_group_range: true,
            unprivileged_port_start: true,
            dev_dir: PathBuf::from("/dev"),
        }
    }

    fn input() -> SpecInput {
        SpecInput {
            id: "a".repeat(64),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            rootfs: PathBuf::from("/var/lib/berth/c/rootfs"),
            hostname: "abc".into(),
            cgroups_path: "/berth/x".into(),
            ..SpecInput::default()
        }
    }

    fn build(i: &SpecInput) -> Value {
        build_spec_with_host(i, &host()).expect("spec builds")
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn mount_of<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
        spec["mounts"]
            .as_array()?
            .iter()
            .find(|m| m["destination"] == dest)
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_spec_matches_docker() {
        let spec = build(&input());
        assert_eq!(spec["ociVersion"], "1.0.2-dev");
        let p = &spec["process"];
        assert_eq!(p["args"], json!(["sh", "-c", "true"]));
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(p["oomScoreAdj"], 0);
        assert!(
            p.get("terminal").is_none()
                && p.get("noNewPrivileges").is_none()
                && p.get("rlimits").is_none()
        );
        assert!(p.get("apparmorProfile").is_none());
        let caps = strings(&p["capabilities"]["bounding"]);
        assert_eq!(caps, s(&DEFAULT_CAPS));
        assert_eq!(
            p["capabilities"]["effective"],
            p["capabilities"]["bounding"]
        );
        assert_eq!(
            p["capabilities"]["permitted"],
            p["capabilities"]["bounding"]
        );
        assert!(
            p["capabilities"].get("inheritable").is_none()
                && p["capabilities"].get("ambient").is_none()
        );
        assert_eq!(caps_mask(&caps), 0x0000_0000_a804_25fb);
        assert_eq!(spec["root"], json!({"path": "/var/lib/berth/c/rootfs"}));
        assert_eq!(spec["hostname"], "abc");

        let dests: Vec<&str> = spec["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        assert_eq!(
            mount_of(&spec, "/dev/shm"),
            Some(
                &json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"]})
            )
        );
        assert_eq!(
            strings(&mount_of(&spec, "/sys").expect("sys")["options"]),
            s(&["nosuid", "noexec", "nodev", "ro"])
        );
        assert_eq!(
            mount_of(&spec, "/sys/fs/cgroup").expect("cgroup")["options"],
            json!(["ro", "nosuid", "noexec", "nodev"])
        );

        let l = &spec["linux"];
        assert_eq!(l["cgroupsPath"], "/berth/x");
        let ns: Vec<&str> = l["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .filter_map(|n| n["type"].as_str())
            .collect();
        assert_eq!(ns, ["mount", "network", "uts", "pid", "ipc"]);
        assert_eq!(strings(&l["maskedPaths"]), s(&DEFAULT_MASKED_PATHS));
        assert_eq!(strings(&l["readonlyPaths"]), s(&DEFAULT_READONLY_PATHS));
        assert_eq!(
            l["sysctl"],
            json!({"net.ipv4.ping_group_range": "0 2147483647", "net.ipv4.ip_unprivileged_port_start": "0"})
        );
        assert!(l.get("devices").is_none());
        let rules = l["resources"]["devices"].as_array().expect("rules");
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        assert!(rules.contains(&json!({"allow": true, "type": "c", "access": "m"})));
        assert!(rules.contains(&json!({"allow": true, "type": "b", "access": "m"})));
        for (maj, min) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (5, 0),
            (5, 1),
            (5, 2),
            (1, 8),
            (1, 9),
            (10, 200),
        ] {
            assert!(rules.contains(&json!({"allow": true, "type": "c", "major": maj, "minor": min, "access": "rwm"})), "{maj}:{min}");
        }
        assert!(rules.contains(&json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})));
        assert_eq!(l["resources"]["memory"], json!({"disableOOMKiller": false}));
        assert_eq!(l["resources"]["cpu"], json!({"shares": 0}));
        assert!(l["resources"].get("pids").is_none());
        assert_eq!(l["resources"]["blockIO"], json!({}));
        assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(l["seccomp"]["defaultErrnoRet"], 1);
    }

    #[test]
    fn capability_math() {
        let h = host();
        let t = |add: &[&str], drop: &[&str]| tweak_capabilities(&s(add), &s(drop), false, &h);
        let with_admin = t(&["NET_ADMIN"], &[]).expect("ok");
        assert_eq!(with_admin.len(), 15);
        assert_eq!(with_admin.last().map(String::as_str), Some("CAP_NET_ADMIN"));
        assert_eq!(t(&["cap_net_admin"], &[]).expect("ok"), with_admin);
        assert_eq!(t(&["Net_Admin"], &[]).expect("ok"), with_admin);
        let no_chown = t(&[], &["CHOWN", "cap_kill"]).expect("ok");
        assert!(!no_chown.contains(&"CAP_CHOWN".into()) && !no_chown.contains(&"CAP_KILL".into()));
        assert_eq!(no_chown.len(), 12);
        assert_eq!(t(&["CHOWN"], &[]).expect("ok").len(), 14, "no duplicates");
        let all = t(&["ALL"], &[]).expect("ok");
        assert_eq!(all.len(), 41);
        assert_eq!(caps_mask(&all), (1u64 << 41) - 1);
        let all_but = t(&["all"], &["SYS_ADMIN"]).expect("ok");
        assert_eq!(all_but.len(), 40);
        assert!(!all_but.contains(&"CAP_SYS_ADMIN".into()));
        assert_eq!(t(&["NET_RAW"], &["ALL"]).expect("ok"), s(&["CAP_NET_RAW"]));
        assert!(t(&[], &["ALL"]).expect("ok").is_empty());
        let err = t(&["FOO"], &[]).expect_err("unknown");
        assert_eq!(err.to_string(), "unknown capability: \"CAP_FOO\"");
        assert_eq!(
            t(&["CAP_FOO"], &[]).expect_err("unknown").to_string(),
            "unknown capability: \"CAP_FOO\""
        );
        // A kernel that stops at CAP_AUDIT_READ does not know CAP_BPF.
        let old = HostInfo {
            cap_last_cap: 37,
            ..host()
        };
        assert!(tweak_capabilities(&s(&["BPF"]), &[], false, &old).is_err());
        assert_eq!(
            tweak_capabilities(&[], &[], true, &old).expect("ok").len(),
            38
        );
        // An engine without CAP_SYS_RESOURCE (24) cannot hand it out with --privileged or ALL.
        let restricted = HostInfo {
            cap_bounding: ((1u64 << 41) - 1) & !(1u64 << 24),
            ..host()
        };
        let privileged = tweak_capabilities(&[], &[], true, &restricted).expect("ok");
        assert_eq!(privileged.len(), 40);
        assert!(!privileged.contains(&"CAP_SYS_RESOURCE".into()));
        let all = tweak_capabilities(&s(&["ALL"]), &[], false, &restricted).expect("ok");
        assert_eq!(caps_mask(&all), 0x0000_01ff_feff_ffff);
        assert_eq!(cap_name(21).as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(cap_name(41), None);
    }

    #[test]
    fn cap_add_sys_admin_opens_seccomp_mount() {
        let mut i = input();
        let has_mount = |spec: &Value| {
            spec["linux"]["seccomp"]["syscalls"]
                .as_array()
                .expect("rules")
                .iter()
                .any(|r| {
                    r["action"] == "SCMP_ACT_ALLOW"
                        && r.get("args").is_none()
                        && strings(&r["names"]).contains(&"mount".into())
                })
        };
        assert!(!has_mount(&build(&i)));
        i.cap_add = s(&["SYS_ADMIN"]);
        let spec = build(&i);
        assert!(has_mount(&spec));
        assert!(
            strings(&spec["process"]["capabilities"]["bounding"]).contains(&"CAP_SYS_ADMIN".into())
        );
    }

    #[test]
    fn security_opts() {
        let p = |v: &[&str]| parse_security_opts(&s(v));
        assert!(p(&["no-new-privileges"]).expect("ok").no_new_privileges);
        assert!(
            p(&["no-new-privileges:true"])
                .expect("ok")
                .no_new_privileges
        );
        assert!(p(&["no-new-privileges=1"]).expect("ok").no_new_privileges);
        assert!(
            !p(&["no-new-privileges=false"])
                .expect("ok")
                .no_new_privileges
        );
        assert_eq!(
            p(&["no-new-privileges=maybe"])
                .expect_err("bad")
                .to_string(),
            "invalid --security-opt 2: \"no-new-privileges=maybe\""
        );
        assert_eq!(
            p(&["bogus"]).expect_err("bad").to_string(),
            "invalid --security-opt 1: \"bogus\""
        );
        assert_eq!(
            p(&["foo=bar"]).expect_err("bad").to_string(),
            "invalid --security-opt 2: \"foo=bar\""
        );
        let o = p(&[
            "apparmor=unconfined",
            "label=disable",
            "seccomp={\"a\":\"b=c\"}",
        ])
        .expect("ok");
        assert_eq!(o.seccomp.as_deref(), Some("{\"a\":\"b=c\"}"));
        assert_eq!(o.apparmor.as_deref(), Some("unconfined"));

        let mut i = input();
        i.security_opt = s(&[
            "no-new-privileges:true",
            "apparmor=docker-default",
            "label=disable",
        ]);
        let spec = build(&i);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert!(spec["process"].get("apparmorProfile").is_none());
        i.security_opt = s(&["seccomp=unconfined"]);
        assert!(build(&i)["linux"].get("seccomp").is_none());
        i.security_opt = s(&[
            r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ]);
        assert_eq!(
            build(&i)["linux"]["seccomp"],
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]})
        );
        i.security_opt = s(&["seccomp={oops"]);
        let err = build_spec_with_host(&i, &host()).expect_err("bad profile");
        assert!(
            err.to_string()
                .starts_with("Decoding seccomp profile failed"),
            "{err}"
        );
    }

    #[test]
    fn resources_from_limits() {
        let mut i = input();
        i.nano_cpus = 1_500_000_000;
        i.memory = 256 * 1024 * 1024;
        i.memory_reservation = 128 * 1024 * 1024;
        i.cpu_shares = 512;
        i.cpuset_cpus = "0-1".into();
        i.cpuset_mems = "0".into();
        i.pids_limit = Some(100);
        i.blkio_weight = 300;
        i.oom_kill_disable = true;
        let r = &build(&i)["linux"]["resources"];
        assert_eq!(
            r["cpu"],
            json!({"shares": 512, "period": 100000, "quota": 150000, "cpus": "0-1", "mems": "0"})
        );
        assert_eq!(
            r["memory"],
            json!({"limit": 268435456, "reservation": 134217728, "swap": 536870912, "disableOOMKiller": true})
        );
        assert_eq!(r["pids"], json!({"limit": 100}));
        assert_eq!(r["blockIO"], json!({"weight": 300}));

        i.nano_cpus = 500_000_000;
        i.memory_swap = -1;
        i.pids_limit = Some(0);
        let r = &build(&i)["linux"]["resources"];
        assert_eq!(r["cpu"]["quota"], 50000);
        assert!(r["memory"].get("swap").is_none(), "-1 = unlimited swap");
        assert_eq!(r["pids"], json!({"limit": -1}));

        i.memory_swap = 300 * 1024 * 1024;
        assert_eq!(build(&i)["linux"]["resources"]["memory"]["swap"], 314572800);
        let mut no_swap = host();
        no_swap.swap_limit = false;
        let v = build_spec_with_host(&i, &no_swap).expect("ok");
        assert!(v["linux"]["resources"]["memory"].get("swap").is_none());

        let mut j = input();
        j.cpu_period = 50_000;
        j.cpu_quota = 25_000;
        assert_eq!(
            build(&j)["linux"]["resources"]["cpu"],
            json!({"shares": 0, "period": 50000, "quota": 25000})
        );
        j.nano_cpus = 1_000_000_000;
        assert!(build_spec_with_host(&j, &host()).is_err());
        let mut k = input();
        k.memory = 1024;
        assert_eq!(
            build_spec_with_host(&k, &host())
                .expect_err("too small")
                .to_string(),
            "Minimum memory limit allowed is 6MB"
        );
        k.memory = 0;
        k.cpu_shares = -1;
        assert!(build_spec_with_host(&k, &host()).is_err());
    }

    #[test]
    fn device_parsing() {
        let d = |s: &str| parse_device(s);
        assert_eq!(
            d("/dev/fuse").expect("ok"),
            DeviceMapping {
                path_on_host: "/dev/fuse".into(),
                path_in_container: "/dev/fuse".into(),
                cgroup_permissions: "rwm".into()
            }
        );
        assert_eq!(
            d("/dev/fuse:/dev/f2").expect("ok").path_in_container,
            "/dev/f2"
        );
        assert_eq!(d("/dev/fuse:r").expect("ok").cgroup_permissions, "r");
        assert_eq!(d("/dev/fuse:r").expect("ok").path_in_container, "/dev/fuse");
        let full = d("/dev/sda:/dev/xvdc:rw").expect("ok");
        assert_eq!(
            (
                full.path_in_container.as_str(),
                full.cgroup_permissions.as_str()
            ),
            ("/dev/xvdc", "rw")
        );
        assert_eq!(
            d("/dev/sda:/dev/xvdc:rx").expect_err("bad").to_string(),
            "bad mode specified: rx"
        );
        assert_eq!(
            d("/dev/sda:/dev/xvdc:rww").expect_err("bad").to_string(),
            "bad mode specified: rww"
        );
        assert_eq!(
            d("/dev/sda:xvdc").expect_err("bad").to_string(),
            "xvdc is not an absolute path"
        );
        assert_eq!(
            d(":/dev/x").expect_err("bad").to_string(),
            "bad format for path: :/dev/x"
        );
        assert_eq!(
            d("a:b:c:d").expect_err("bad").to_string(),
            "bad format for path: a:b:c:d"
        );
        assert_eq!(
            d("/dev/fuse:/dev//x/").expect("ok").path_in_container,
            "/dev/x"
        );
    }

    #[test]
    fn devices_in_spec() {
        let mut i = input();
        i.devices = vec![parse_device("/dev/null:/dev/mynull:rw").expect("ok")];
        let spec = build(&i);
        let dev = &spec["linux"]["devices"][0];
        assert_eq!(dev["path"], "/dev/mynull");
        assert_eq!(dev["type"], "c");
        assert_eq!(
            (dev["major"].as_i64(), dev["minor"].as_i64()),
            (Some(1), Some(3))
        );
        assert_eq!(dev["fileMode"], 0o666);
        assert_eq!(
            (dev["uid"].as_u64(), dev["gid"].as_u64()),
            (Some(0), Some(0))
        );
        let rules = spec["linux"]["resources"]["devices"]
            .as_array()
            .expect("rules");
        assert_eq!(
            rules.last(),
            Some(&json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}))
        );

        i.devices = vec![parse_device("/dev/nope").expect("ok")];
        let err = build_spec_with_host(&i, &host()).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "error gathering device information while adding custom device \"/dev/nope\": no such file or directory"
        );
        let tmp = tempfile::tempdir().expect("tmp");
        let file = tmp.path().join("plain");
        std::fs::write(&file, b"x").expect("write");
        i.devices = vec![parse_device(&file.to_string_lossy()).expect("ok")];
        let err = build_spec_with_host(&i, &host()).expect_err("not a device");
        assert!(err.to_string().ends_with(": not a device node"), "{err}");
    }

    #[test]
    fn privileged_differences() {
        let mut i = input();
        i.privileged = true;
        i.cap_drop = s(&["ALL"]); // ignored when privileged
        let spec = build(&i);
        let caps = strings(&spec["process"]["capabilities"]["bounding"]);
        assert_eq!(caps.len(), 41);
        assert_eq!(caps_mask(&caps), 0x0000_01ff_ffff_ffff);
        assert!(spec["linux"].get("seccomp").is_none());
        assert!(spec["linux"].get("maskedPaths").is_none());
        assert!(spec["linux"].get("readonlyPaths").is_none());
        assert_eq!(
            spec["linux"]["resources"]["devices"],
            json!([{"allow": true, "access": "rwm"}])
        );
        assert!(!strings(&mount_of(&spec, "/sys").expect("sys")["options"]).contains(&"ro".into()));
        assert!(
            !strings(&mount_of(&spec, "/sys/fs/cgroup").expect("cg")["options"])
                .contains(&"ro".into())
        );
        let devs = spec["linux"]["devices"].as_array().expect("host devices");
        assert!(devs
            .iter()
            .any(|d| d["path"] == "/dev/null" && d["major"] == 1 && d["minor"] == 3));
        assert!(devs.iter().all(|d| d["path"] != "/dev/console"
            && !d["path"].as_str().unwrap_or("").starts_with("/dev/pts/")));

        // Explicit overrides still apply.
        i.masked_paths = Some(s(&["/proc/kcore"]));
        assert_eq!(build(&i)["linux"]["maskedPaths"], json!(["/proc/kcore"]));
        let mut j = input();
        j.readonly_paths = Some(vec![]);
        assert!(build(&j)["linux"].get("readonlyPaths").is_none());
    }

    #[test]
    fn mounts_override_and_order() {
        let m = |dest: &str, kind: &str, src: &str, opts: &[&str]| MountSpec {
            destination: dest.into(),
            kind: kind.into(),
            source: src.into(),
            options: s(opts),
        };
        let mut i = input();
        i.shm_size = 1 << 20;
        i.mounts = vec![
            m("/data/sub/deeper", "bind", "/h/c", &["rbind", "ro"]),
            m("/data", "bind", "/h/a", &[]),
            m("/dev/shm", "bind", "/h/shm", &["rbind", "rprivate"]),
            m("/etc/hosts", "bind", "/h/hosts", &["rbind", "rprivate"]),
            m("/data/sub", "tmpfs", "tmpfs", &["size=1m"]),
        ];
        let spec = build(&i);
        let mounts = spec["mounts"].as_array().expect("mounts");
        let dests: Vec<&str> = mounts
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/data",
                "/dev/shm",
                "/etc/hosts",
                "/data/sub",
                "/data/sub/deeper"
            ]
        );
        assert_eq!(
            mount_of(&spec, "/dev/shm").expect("shm")["source"],
            "/h/shm"
        );
        assert_eq!(
            mount_of(&spec, "/data").expect("data")["options"],
            json!(["rbind"]),
            "bind gets rbind"
        );

        // A /dev of the caller's drops every default under /dev.
        let mut j = input();
        j.mounts = vec![m("/dev", "bind", "/dev", &["rbind"])];
        let dests: Vec<String> = build(&j)["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter_map(|m| m["destination"].as_str().map(String::from))
            .collect();
        assert_eq!(dests, s(&["/proc", "/sys", "/sys/fs/cgroup", "/dev"]));

        // Read-only rootfs: ro on defaults outside /proc and /dev, never on the caller's mounts.
        let mut k = input();
        k.readonly_rootfs = true;
        k.mounts = vec![m("/data", "bind", "/h/a", &["rbind"])];
        let spec = build(&k);
        assert_eq!(spec["root"]["readonly"], true);
        assert!(
            strings(&mount_of(&spec, "/sys/fs/cgroup").expect("cg")["options"])
                .contains(&"ro".into())
        );
        assert!(
            !strings(&mount_of(&spec, "/proc").expect("proc")["options"]).contains(&"ro".into())
        );
        assert!(
            !strings(&mount_of(&spec, "/dev/shm").expect("shm")["options"]).contains(&"ro".into())
        );
        assert!(
            !strings(&mount_of(&spec, "/data").expect("data")["options"]).contains(&"ro".into())
        );
    }

    #[test]
    fn init_namespaces_sysctls_rlimits() {
        let mut i = input();
        i.init_path = Some(PathBuf::from("/usr/bin/tini-static"));
        i.netns = Namespace::Path(PathBuf::from("/run/berth/netns/x"));
        i.ipc_mode = Namespace::Host;
        i.uts_host = true;
        i.domainname = "example.org".into();
        i.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "1024".into());
        i.sysctls.insert("kernel.msgmax".into(), "65536".into());
        i.ulimits = vec![
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048,
            },
            Ulimit {
                name: "core".into(),
                soft: -1,
                hard: -1,
            },
        ];
        i.terminal = true;
        i.cwd = "/work".into();
        i.oom_score_adj = 500;
        i.user = resolve_user_from("1000:1000", None, None).expect("numeric");
        let spec = build(&i);
        let p = &spec["process"];
        assert_eq!(
            p["args"],
            json!(["/sbin/docker-init", "--", "sh", "-c", "true"])
        );
        assert_eq!(
            mount_of(&spec, "/sbin/docker-init"),
            Some(
                &json!({"destination": "/sbin/docker-init", "type": "bind", "source": "/usr/bin/tini-static", "options": ["bind", "ro"]})
            )
        );
        assert_eq!(p["terminal"], true);
        assert_eq!(p["cwd"], "/work");
        assert_eq!(p["oomScoreAdj"], 500);
        assert_eq!(
            p["user"],
            json!({"uid": 1000, "gid": 1000, "additionalGids": [1000]})
        );
        assert_eq!(
            p["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
                   {"type": "RLIMIT_CORE", "soft": u64::MAX, "hard": u64::MAX}])
        );
        assert!(spec.get("hostname").is_none(), "UTS host: no hostname");
        let l = &spec["linux"];
        assert_eq!(
            l["namespaces"],
            json!([{"type": "mount"}, {"type": "network", "path": "/run/berth/netns/x"}, {"type": "pid"}])
        );
        assert_eq!(
            l["sysctl"],
            json!({"kernel.msgmax": "65536", "net.ipv4.ip_unprivileged_port_start": "1024",
                   "net.ipv4.ping_group_range": "0 2147483647"})
        );

        // --pid=host: no init, no pid namespace; --net=host: no network sysctls.
        let mut j = input();
        j.init_path = Some(PathBuf::from("/usr/bin/tini-static"));
        j.pid_mode = Namespace::Host;
        j.netns = Namespace::Host;
        j.domainname = "example.org".into();
        let spec = build(&j);
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "true"]));
        assert!(mount_of(&spec, "/sbin/docker-init").is_none());
        assert_eq!(
            spec["linux"]["namespaces"],
            json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}])
        );
        assert_eq!(
            spec["linux"]["sysctl"],
            json!({"kernel.domainname": "example.org"})
        );

        let mut k = input();
        k.ulimits = vec![Ulimit {
            name: "bogus".into(),
            soft: 1,
            hard: 1,
        }];
        assert_eq!(
            build_spec_with_host(&k, &host())
                .expect_err("bad")
                .to_string(),
            "invalid ulimit type: bogus"
        );
        k.ulimits = vec![Ulimit {
            name: "nofile".into(),
            soft: 10,
            hard: 1,
        }];
        assert!(build_spec_with_host(&k, &host()).is_err());
        let mut e = input();
        e.args.clear();
        assert_eq!(
            build_spec_with_host(&e, &host())
                .expect_err("no cmd")
                .to_string(),
            "No command specified"
        );
        let mut w = input();
        w.cwd = "rel".into();
        assert!(build_spec_with_host(&w, &host()).is_err());
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        # a comment\n\
        \n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n\
        bob:x:1001:100::/home/bob:/bin/sh\n\
        nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,alice\n\
        users:x:100:\n\
        alice:x:1000:\n\
        staff:x:50:alice,bob\n\
        nogroup:x:65534:\n";

    #[test]
    fn user_resolution() {
        let r = |spec: &str| resolve_user_from(spec, Some(PASSWD), Some(GROUP));
        let u = |uid, gid, g: &[u32]| ResolvedUser {
            uid,
            gid,
            additional_gids: g.to_vec(),
        };
        assert_eq!(r("").expect("root"), u(0, 0, &[0, 10]));
        assert_eq!(r("root").expect("root"), u(0, 0, &[0, 10]));
        assert_eq!(r("alice").expect("alice"), u(1000, 1000, &[1000, 10, 50]));
        assert_eq!(r("1000").expect("uid"), u(1000, 1000, &[1000, 10, 50]));
        assert_eq!(r("bob").expect("bob"), u(1001, 100, &[100, 50]));
        assert_eq!(
            r("alice:staff").expect("explicit group"),
            u(1000, 50, &[50])
        );
        assert_eq!(
            r("alice:4242").expect("numeric gid"),
            u(1000, 4242, &[4242])
        );
        assert_eq!(r("1000:users").expect("uid:name"), u(1000, 100, &[100]));
        assert_eq!(r("5000").expect("unknown uid"), u(5000, 0, &[0]));
        assert_eq!(
            r("5000:5000").expect("unknown uid:gid"),
            u(5000, 5000, &[5000])
        );
        assert_eq!(r("nobody").expect("nobody"), u(65534, 65534, &[65534]));
        assert_eq!(
            r("nobodyx").expect_err("no user").to_string(),
            "unable to find user nobodyx: no matching entries in passwd file"
        );
        assert_eq!(
            r("alice:nogroupx").expect_err("no group").to_string(),
            "unable to find group nogroupx: no matching entries in group file"
        );
        assert_eq!(
            r("-1").expect_err("range").to_string(),
            "uids and gids must be in range 0-2147483647"
        );
        assert!(r("1:99999999999").is_err());
        // No passwd/group files at all: numeric ids only.
        assert_eq!(
            resolve_user_from("", None, None).expect("root"),
            u(0, 0, &[0])
        );
        assert_eq!(
            resolve_user_from("42:43", None, None).expect("ids"),
            u(42, 43, &[43])
        );
        assert!(resolve_user_from("alice", None, None).is_err());
        assert!(resolve_user_from("1:staff", None, None).is_err());
    }

    #[test]
    fn user_resolution_from_rootfs() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).expect("etc");
        std::fs::create_dir_all(root.join("data")).expect("data");
        std::fs::write(root.join("data/passwd"), PASSWD).expect("passwd");
        // An absolute symlink must resolve inside the rootfs, not on the host.
        std::os::unix::fs::symlink("/data/passwd", root.join("etc/passwd")).expect("link");
        std::fs::write(root.join("etc/group"), GROUP).expect("group");
        assert_eq!(
            resolve_user(root, "alice").expect("alice"),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1000, 10, 50]
            }
        );
        let empty = tempfile::tempdir().expect("tmp");
        assert_eq!(resolve_user(empty.path(), "7:8").expect("numeric").uid, 7);
        assert!(resolve_user(empty.path(), "alice").is_err());
        // ../ cannot climb out of the root either.
        std::fs::remove_file(root.join("etc/passwd")).expect("rm");
        std::os::unix::fs::symlink("../../../../../../etc/shadow-nope", root.join("etc/passwd"))
            .expect("link");
        assert_eq!(
            scoped_join(root, "/etc/passwd"),
            root.join("etc/shadow-nope")
        );
    }

    #[test]
    fn additional_groups() {
        let group = "root:x:0:\nstaff:x:50:\nwheel:x:10:root\n";
        let g = |v: &[&str]| {
            resolve_additional_groups_from(&s(v), Some(group)).map_err(|e| e.to_string())
        };
        assert_eq!(g(&["1000", "1001"]), Ok(vec![1000, 1001]));
        assert_eq!(g(&["staff", "10", "50"]), Ok(vec![50, 10]));
        assert_eq!(
            g(&["nope"]),
            Err("Unable to find group nope: no matching entries in group file".into())
        );
        assert_eq!(
            resolve_additional_groups_from(&s(&["7"]), None).map_err(|e| e.to_string()),
            Ok(vec![7])
        );
    }

    #[test]
    fn dev_numbers() {
        // makedev(1, 3) and a large one (259:65536 → NVMe-ish partitions).
        assert_eq!((dev_major(0x103), dev_minor(0x103)), (1, 3));
        let makedev = |ma: u64, mi: u64| {
            ((ma & 0xfff) << 8) | ((ma & !0xfff) << 32) | (mi & 0xff) | ((mi & !0xff) << 12)
        };
        let dev = makedev(259, 65536);
        assert_eq!((dev_major(dev), dev_minor(dev)), (259, 65536));
    }
}
