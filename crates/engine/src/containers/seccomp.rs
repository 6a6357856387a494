//! Docker's seccomp profiles: the built-in default profile (moby `profiles/seccomp/default.json`,
//! kept as data in `seccomp_default.json`) and the conversion of a Docker-format profile (with
//! `archMap` and capability/arch/kernel conditional rules) into the runtime-spec `linux.seccomp`
//! object for one container, the way moby's `setupSeccomp` does it.

use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize};

/// Docker's default profile, in Docker's own profile format.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("seccomp_default.json");

/// Errors of profile decoding and conversion, worded as dockerd words them.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("Decoding seccomp profile failed: {0}")]
    Decode(String),
    #[error("'architectures' and 'archMap' were specified in the seccomp profile, use either 'architectures' or 'archMap'")]
    ArchitecturesAndArchMap,
    #[error(
        "'name' and 'names' were specified in the seccomp profile, use either 'name' or 'names'"
    )]
    NameAndNames,
    #[error("invalid kernel version {0:?} in seccomp profile")]
    KernelVersion(String),
}

/// A seccomp profile in Docker's format (a superset of the runtime-spec `linux.seccomp` object).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    #[serde(default)]
    pub default_action: String,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub listener_path: String,
    #[serde(default, deserialize_with = "null_default")]
    pub listener_metadata: String,
    #[serde(default, deserialize_with = "null_default")]
    pub architectures: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, deserialize_with = "null_default")]
    pub syscalls: Vec<SyscallRule>,
    #[serde(default, deserialize_with = "null_default")]
    pub flags: Vec<String>,
}

/// One `archMap` entry: a native architecture and the sub-architectures it can run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub sub_architectures: Vec<String>,
}

/// One syscall rule of a Docker-format profile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    #[serde(default, deserialize_with = "null_default")]
    pub name: String,
    #[serde(default, deserialize_with = "null_default")]
    pub names: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<Arg>,
    /// Documentation only; never part of the filter.
    #[allow(dead_code)]
    #[serde(default, deserialize_with = "null_default")]
    pub comment: String,
    #[serde(default, deserialize_with = "null_default")]
    pub includes: Filter,
    #[serde(default, deserialize_with = "null_default")]
    pub excludes: Filter,
}

/// Conditions of a rule: it applies when all `includes` hold and no `excludes` holds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, deserialize_with = "null_default")]
    pub caps: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub arches: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub min_kernel: String,
}

/// A syscall argument comparison (same shape in both formats).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub value_two: u64,
    pub op: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Go's encoding/json leaves a field at its zero value for `null`; serde would fail instead.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The runtime-spec `linux.seccomp` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSeccomp {
    pub default_action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub listener_path: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub listener_metadata: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<LinuxSyscall>,
}

/// One runtime-spec syscall rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSyscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
}

/// A kernel release as (major, minor, patch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32, pub u32);

impl KernelVersion {
    /// Parse "6.1.0-13-amd64", "4.8", "5.10.0+" and the like (as moby's `kernel.ParseRelease`).
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let mut parts = [0u32; 3];
        let mut seen = 0;
        for (i, piece) in s.trim().splitn(3, '.').enumerate() {
            let digits: String = piece.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            parts[i] = digits.parse().ok()?;
            seen = i + 1;
            if digits.len() != piece.len() {
                break;
            }
        }
        if seen < 2 {
            return None;
        }
        Some(KernelVersion(parts[0], parts[1], parts[2]))
    }

    /// The running kernel's version (from /proc/sys/kernel/osrelease).
    pub fn current() -> Option<KernelVersion> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        KernelVersion::parse(&release)
    }
}

/// The name moby uses for this machine's architecture in `includes.arches`/`excludes.arches`,
/// and the libseccomp name of its native architecture.
pub fn native_arch() -> (&'static str, &'static str) {
    if cfg!(target_arch = "x86_64") {
        ("amd64", "SCMP_ARCH_X86_64")
    } else if cfg!(target_arch = "aarch64") {
        ("arm64", "SCMP_ARCH_AARCH64")
    } else if cfg!(target_arch = "x86") {
        ("x86", "SCMP_ARCH_X86")
    } else if cfg!(target_arch = "arm") {
        ("arm", "SCMP_ARCH_ARM")
    } else if cfg!(target_arch = "s390x") {
        ("s390x", "SCMP_ARCH_S390X")
    } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
        ("ppc64le", "SCMP_ARCH_PPC64LE")
    } else if cfg!(target_arch = "powerpc64") {
        ("ppc64", "SCMP_ARCH_PPC64")
    } else if cfg!(target_arch = "riscv64") {
        ("riscv64", "SCMP_ARCH_RISCV64")
    } else {
        ("", "")
    }
}

/// Decode a Docker-format profile (the content given with `--security-opt seccomp=<file>`).
pub fn parse_profile(body: &str) -> Result<Profile, SeccompError> {
    serde_json::from_str(body).map_err(|e| SeccompError::Decode(e.to_string()))
}

/// Docker's default profile, decoded once.
pub fn default_profile() -> Result<&'static Profile, SeccompError> {
    static DEFAULT: OnceLock<Result<Profile, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| parse_profile(DEFAULT_PROFILE_JSON).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| SeccompError::Decode(e.clone()))
}

/// Convert `profile` into the runtime-spec object for a container whose bounding capability set
/// is `caps` (names with the `CAP_` prefix), on this machine's architecture and the kernel
/// `kernel`. `None` when the profile disables seccomp (no default action and no rules).
pub fn to_runtime_spec(
    profile: &Profile,
    caps: &[String],
    kernel: KernelVersion,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    let (arch, seccomp_arch) = native_arch();
    convert(profile, caps, kernel, arch, seccomp_arch)
}

/// The default profile converted for the capability set `caps` on this machine.
pub fn default_for_caps(
    caps: &[String],
    kernel: KernelVersion,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    to_runtime_spec(default_profile()?, caps, kernel)
}

fn kernel_at_least(kernel: KernelVersion, min: &str) -> Result<bool, SeccompError> {
    let min =
        KernelVersion::parse(min).ok_or_else(|| SeccompError::KernelVersion(min.to_string()))?;
    Ok(kernel >= min)
}

/// moby `setupSeccomp`, parameterised by architecture so that it can be tested for any.
fn convert(
    profile: &Profile,
    caps: &[String],
    kernel: KernelVersion,
    arch: &str,
    seccomp_arch: &str,
) -> Result<Option<LinuxSeccomp>, SeccompError> {
    if profile.default_action.is_empty() && profile.syscalls.is_empty() {
        return Ok(None);
    }
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err(SeccompError::ArchitecturesAndArchMap);
    }
    let mut out = LinuxSeccomp {
        default_action: profile.default_action.clone(),
        default_errno_ret: profile.default_errno_ret,
        architectures: profile.architectures.clone(),
        flags: profile.flags.clone(),
        listener_path: profile.listener_path.clone(),
        listener_metadata: profile.listener_metadata.clone(),
        syscalls: Vec::new(),
    };
    if !seccomp_arch.is_empty() {
        if let Some(m) = profile
            .arch_map
            .iter()
            .find(|m| m.architecture == seccomp_arch)
        {
            out.architectures.push(m.architecture.clone());
            out.architectures
                .extend(m.sub_architectures.iter().cloned());
        }
    }
    let has_cap = |c: &String| caps.iter().any(|have| have == c);
    for rule in &profile.syscalls {
        let ex = &rule.excludes;
        if ex.arches.iter().any(|a| a == arch) || ex.caps.iter().any(has_cap) {
            continue;
        }
        if !ex.min_kernel.is_empty() && kernel_at_least(kernel, &ex.min_kernel)? {
            continue;
        }
        let inc = &rule.includes;
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
            continue;
        }
        if !inc.caps.iter().all(has_cap) {
            continue;
        }
        if !inc.min_kernel.is_empty() && !kernel_at_least(kernel, &inc.min_kernel)? {
            continue;
        }
        if !rule.name.is_empty() && !rule.names.is_empty() {
            return Err(SeccompError::NameAndNames);
        }
        let names = if rule.name.is_empty() {
            rule.names.clone()
        } else {
            vec![rule.name.clone()]
        };
        out.syscalls.push(LinuxSyscall {
            names,
            action: rule.action.clone(),
            errno_ret: rule.errno_ret,
            args: rule.args.clone(),
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const DEFAULT_CAPS: &[&str] = &[
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

    fn allowed(sc: &LinuxSeccomp, name: &str) -> bool {
        sc.syscalls.iter().any(|r| {
            r.action == "SCMP_ACT_ALLOW" && r.args.is_empty() && r.names.iter().any(|n| n == name)
        })
    }

    fn rules_for<'a>(sc: &'a LinuxSeccomp, name: &str) -> Vec<&'a LinuxSyscall> {
        sc.syscalls
            .iter()
            .filter(|r| r.names.iter().any(|n| n == name))
            .collect()
    }

    const K: KernelVersion = KernelVersion(6, 1, 0);

    fn default_amd64(c: &[&str]) -> LinuxSeccomp {
        let p = default_profile().expect("built-in profile parses");
        convert(p, &caps(c), K, "amd64", "SCMP_ARCH_X86_64")
            .expect("converts")
            .expect("enabled")
    }

    #[test]
    fn default_profile_shape() {
        let sc = default_amd64(DEFAULT_CAPS);
        assert_eq!(sc.default_action, "SCMP_ACT_ERRNO");
        assert_eq!(sc.default_errno_ret, Some(1));
        assert_eq!(
            sc.architectures,
            vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        for name in [
            "read",
            "write",
            "execve",
            "openat",
            "futex",
            "clone3",
            "arch_prctl",
            "modify_ldt",
            "chroot",
        ] {
            assert!(!rules_for(&sc, name).is_empty(), "{name} has a rule");
        }
        for name in ["read", "execve", "arch_prctl", "ptrace", "chroot"] {
            assert!(allowed(&sc, name), "{name} allowed");
        }
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "kexec_load",
            "bpf",
            "iopl",
        ] {
            assert!(!allowed(&sc, name), "{name} must not be allowed by default");
        }
        // arm-only and s390-only rules are dropped on amd64.
        assert!(rules_for(&sc, "set_tls").is_empty());
        assert!(rules_for(&sc, "s390_runtime_instr").is_empty());
        // Without CAP_SYS_ADMIN: clone only without namespace flags, clone3 → ENOSYS.
        let clone = rules_for(&sc, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(
            clone[0].args,
            vec![Arg {
                index: 0,
                value: 0x7E02_0000,
                value_two: 0,
                op: "SCMP_CMP_MASKED_EQ".into()
            }]
        );
        let clone3 = rules_for(&sc, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action, "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0].errno_ret, Some(38));
        // personality only with the five safe personas; socket not for AF_VSOCK.
        assert_eq!(rules_for(&sc, "personality").len(), 5);
        let socket = rules_for(&sc, "socket");
        assert_eq!(socket[0].args[0].op, "SCMP_CMP_NE");
        assert_eq!(socket[0].args[0].value, 40);
    }

    #[test]
    fn sys_admin_opens_mount_and_namespaces() {
        let mut c = DEFAULT_CAPS.to_vec();
        c.push("CAP_SYS_ADMIN");
        let sc = default_amd64(&c);
        for name in [
            "mount",
            "umount2",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "sethostname",
        ] {
            assert!(allowed(&sc, name), "{name} allowed with CAP_SYS_ADMIN");
        }
        assert!(rules_for(&sc, "clone").iter().all(|r| r.args.is_empty()));
        assert!(rules_for(&sc, "clone3")
            .iter()
            .all(|r| r.action == "SCMP_ACT_ALLOW"));
    }

    #[test]
    fn capability_conditional_rules() {
        let table: &[(&str, &[&str])] = &[
            (
                "CAP_SYS_PTRACE",
                &["kcmp", "pidfd_getfd", "process_madvise"],
            ),
            (
                "CAP_SYS_MODULE",
                &["init_module", "finit_module", "delete_module"],
            ),
            ("CAP_SYS_BOOT", &["reboot"]),
            ("CAP_SYS_TIME", &["settimeofday", "clock_settime"]),
            ("CAP_SYS_NICE", &["mbind", "set_mempolicy"]),
            ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
            ("CAP_SYS_PACCT", &["acct"]),
            ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
            ("CAP_SYSLOG", &["syslog"]),
            ("CAP_BPF", &["bpf"]),
            ("CAP_PERFMON", &["perf_event_open"]),
            ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
        ];
        let base = default_amd64(DEFAULT_CAPS);
        for (cap, calls) in table {
            let mut c = DEFAULT_CAPS.to_vec();
            c.push(cap);
            let sc = default_amd64(&c);
            for call in *calls {
                assert!(!allowed(&base, call), "{call} not allowed without {cap}");
                assert!(allowed(&sc, call), "{call} allowed with {cap}");
            }
        }
        // chroot needs CAP_SYS_CHROOT, which is in the default set.
        let mut c = DEFAULT_CAPS.to_vec();
        c.retain(|x| *x != "CAP_SYS_CHROOT");
        assert!(!allowed(&default_amd64(&c), "chroot"));
    }

    #[test]
    fn min_kernel_and_arch_filters() {
        let p = default_profile().expect("parses");
        let old = convert(
            p,
            &caps(DEFAULT_CAPS),
            KernelVersion(4, 4, 0),
            "amd64",
            "SCMP_ARCH_X86_64",
        )
        .expect("ok")
        .expect("enabled");
        assert!(
            !allowed(&old, "ptrace"),
            "ptrace needs 4.8 without CAP_SYS_PTRACE"
        );
        let arm = convert(p, &caps(DEFAULT_CAPS), K, "arm64", "SCMP_ARCH_AARCH64")
            .expect("ok")
            .expect("enabled");
        assert_eq!(
            arm.architectures,
            vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
        );
        assert!(allowed(&arm, "set_tls"));
        assert!(!allowed(&arm, "arch_prctl"));
        let s390 = convert(p, &caps(DEFAULT_CAPS), K, "s390x", "SCMP_ARCH_S390X")
            .expect("ok")
            .expect("enabled");
        let clone = rules_for(&s390, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0].args[0].index, 1);
    }

    #[test]
    fn custom_profiles() {
        let p = parse_profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"name":"mkdir","action":"SCMP_ACT_ERRNO","args":null},
                            {"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":13,"includes":null}]}"#,
        )
        .expect("parses");
        let sc = convert(&p, &[], K, "amd64", "SCMP_ARCH_X86_64")
            .expect("ok")
            .expect("enabled");
        assert_eq!(sc.architectures, vec!["SCMP_ARCH_X86_64"]);
        assert_eq!(sc.syscalls[0].names, vec!["mkdir"]);
        assert_eq!(sc.syscalls[1].errno_ret, Some(13));
        let v = serde_json::to_value(&sc).expect("serialises");
        assert_eq!(
            v["syscalls"][0],
            serde_json::json!({"names":["mkdir"],"action":"SCMP_ACT_ERRNO"})
        );

        let empty = parse_profile("{}").expect("parses");
        assert!(convert(&empty, &[], K, "amd64", "SCMP_ARCH_X86_64")
            .expect("ok")
            .is_none());

        let both = parse_profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#)
            .expect("parses");
        assert!(matches!(
            convert(&both, &[], K, "amd64", "SCMP_ARCH_X86_64"),
            Err(SeccompError::ArchitecturesAndArchMap)
        ));
        let name_and_names =
            parse_profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ERRNO"}]}"#)
                .expect("parses");
        assert!(matches!(
            convert(&name_and_names, &[], K, "amd64", "SCMP_ARCH_X86_64"),
            Err(SeccompError::NameAndNames)
        ));
        let err = parse_profile("{not json").expect_err("bad json");
        assert!(err
            .to_string()
            .starts_with("Decoding seccomp profile failed: "));
    }

    #[test]
    fn kernel_version_parsing() {
        assert_eq!(
            KernelVersion::parse("6.1.0-13-amd64"),
            Some(KernelVersion(6, 1, 0))
        );
        assert_eq!(KernelVersion::parse("4.8"), Some(KernelVersion(4, 8, 0)));
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v669\n"),
            Some(KernelVersion(6, 18, 44))
        );
        assert_eq!(KernelVersion::parse("5.10+"), Some(KernelVersion(5, 10, 0)));
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert!(KernelVersion(4, 10, 0) > KernelVersion(4, 8, 0));
    }
}
