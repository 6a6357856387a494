//! TEMPORARY minimal spec builder (replaced by the full module with Docker's defaults).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}
#[derive(Debug, Clone, Default)]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}
#[derive(Debug, Clone, Default)]
pub struct MountSpec {
    pub destination: String,
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}
#[derive(Debug, Clone, Default)]
pub enum Namespace {
    #[default]
    New,
    Host,
    Path(PathBuf),
}
#[derive(Debug, Clone, Default)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}
#[derive(Debug, Clone, Default)]
pub struct SpecInput {
    pub id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ResolvedUser,
    pub terminal: bool,
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    pub hostname: String,
    pub domainname: String,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub devices: Vec<DeviceMapping>,
    pub memory: i64,
    pub memory_swap: i64,
    pub memory_reservation: i64,
    pub kernel_memory: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub pids_limit: Option<i64>,
    pub oom_kill_disable: bool,
    pub blkio_weight: u16,
    pub cgroups_path: String,
    pub mounts: Vec<MountSpec>,
    pub netns: Namespace,
    pub pid_mode: Namespace,
    pub ipc_mode: Namespace,
    pub uts_host: bool,
    pub sysctls: std::collections::BTreeMap<String, String>,
    pub ulimits: Vec<Ulimit>,
    pub shm_size: i64,
    pub init_path: Option<PathBuf>,
    pub oom_score_adj: i32,
    pub masked_paths: Option<Vec<String>>,
    pub readonly_paths: Option<Vec<String>>,
}

const CAPS: &[&str] = &[
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

pub fn cap_name(n: u32) -> Option<String> {
    CAPS.get(n as usize).map(|s| s.to_string())
}

pub fn resolve_user(_rootfs: &Path, user: &str) -> Result<ResolvedUser, SpecError> {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    Ok(ResolvedUser {
        uid: u.parse().unwrap_or(0),
        gid: g.parse().unwrap_or(0),
        additional_gids: vec![],
    })
}

pub fn build_spec(i: &SpecInput) -> Result<Value, SpecError> {
    let caps = [
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
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={}", i.shm_size)]}),
    ];
    for m in &i.mounts {
        mounts.push(json!({"destination": m.destination, "type": m.kind, "source": m.source, "options": m.options}));
    }
    let mut ns = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    match &i.netns {
        Namespace::New => ns.push(json!({"type": "network"})),
        Namespace::Path(p) => ns.push(json!({"type": "network", "path": p})),
        Namespace::Host => {}
    }
    let mut args = i.args.clone();
    if let Some(init) = &i.init_path {
        mounts.push(json!({"destination": "/sbin/docker-init", "type": "bind", "source": init, "options": ["rbind", "ro"]}));
        args.splice(0..0, ["/sbin/docker-init".to_string(), "--".to_string()]);
    }
    Ok(json!({
        "ociVersion": "1.0.2-dev",
        "process": {"terminal": i.terminal, "user": {"uid": i.user.uid, "gid": i.user.gid}, "args": args, "env": i.env, "cwd": i.cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps}, "noNewPrivileges": false},
        "root": {"path": i.rootfs, "readonly": i.readonly_rootfs},
        "hostname": i.hostname,
        "mounts": mounts,
        "linux": {"namespaces": ns, "cgroupsPath": i.cgroups_path, "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
    }))
}
