//! Windows backend: WSL2, driven through `wsl.exe`.
//!
//! - the distribution `berth` is imported once from a rootfs tarball:
//!   `wsl --import berth <state_dir>\wsl <rootfs.tar> --version 2` (its disk is the
//!   `ext4.vhdx` WSL creates there, which is where Berth's data then lives);
//! - `start` runs berth-guest in it: `wsl -d berth -u root --exec /init berth.wsl=1 <berth.*>`.
//!   WSL owns PID 1 and the kernel (Microsoft's, with its own command line), so berth-guest gets
//!   its parameters as arguments and `berth.wsl=1` tells it not to act as init (no mounts of
//!   its own, no power-off); the process is kept as the VM's `pid`, its output is the console log;
//! - `kill` is `wsl --terminate berth`; `state` asks `wsl --list --running --quiet` (names are
//!   not localized, unlike `wsl -l -v`'s state column).
//!
//! `wsl.exe` writes UTF-16LE unless `WSL_UTF8=1` is set (which older builds ignore), so its
//! output is decoded either way (`decode_wsl_output`). The parsers and path helpers are plain
//! functions compiled and tested on every target; so is `WslBackend`, which runs whatever
//! program it is given as `wsl` (tests use a fake one). Only Windows has a real `wsl.exe`.
//!
//! # Hybrid vsock on Windows
//!
//! WSL2 runs in a Hyper-V utility VM, whose vsock is reached from the host with Hyper-V sockets
//! (`AF_HYPERV`, "HvSocket"): an address is a VM id plus a *service id* GUID, and vsock port P
//! maps to the service id `{P:08x}-facb-11e6-bd58-64006a7986d3` (`vsock_service_guid`; the
//! template Linux's `hv_sock` transport uses). So:
//!
//! - host → guest port P: `socket(AF_HYPERV, SOCK_STREAM, HV_PROTOCOL_RAW)` and `connect` to
//!   `SOCKADDR_HV { VmId: <the WSL VM's id>, ServiceId: vsock_service_guid(P) }`
//!   (`hvsock::connect`); in the guest, berth-guest listens on `AF_VSOCK` port P as usual;
//! - guest → host port P: the host `bind`s/`listen`s on `SOCKADDR_HV { VmId:
//!   HV_GUID_WILDCARD (or the VM id), ServiceId: vsock_service_guid(P) }`; the guest connects to
//!   CID 2 port P. Windows only lets a service id through once it is registered under
//!   `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Virtualization\GuestCommunicationServices\{id}`
//!   (an installer step, administrator rights);
//! - the hybrid-vsock Unix socket of docs/VM.md is then a bridge in the host process, as in the
//!   macOS backend (Windows has `AF_UNIX` sockets since 1803).
//!
//! Not done here: finding the WSL utility VM's id (it is not exposed by `wsl.exe`; the Host
//! Compute Service API lists it, `hcsdiag list` shows it to administrators), the registry
//! registration, the listener side and the bridge. `hvsock::connect` and the GUID derivation
//! are implemented; the latter is tested.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};

/// The WSL distribution Berth owns.
pub const DISTRO: &str = "berth";
const PID_FILE: &str = "wsl.pid";

/// `wsl.exe` output as text: UTF-16LE (with or without BOM) or, with `WSL_UTF8=1`, UTF-8.
pub fn decode_wsl_output(bytes: &[u8]) -> String {
    let utf16 = bytes.starts_with(&[0xff, 0xfe])
        || (bytes.len() >= 2
            && bytes.len() & 1 == 0
            && bytes.iter().skip(1).step_by(2).all(|b| *b == 0));
    if utf16 {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
            .trim_start_matches('\u{feff}')
            .replace('\0', "")
    } else {
        String::from_utf8_lossy(bytes).replace('\0', "")
    }
}

/// One line of `wsl -l -v`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WslDistro {
    pub name: String,
    /// As printed, possibly localized ("Running", "Stopped", "Wird ausgeführt", ...).
    pub state: String,
    pub version: u32,
    pub default: bool,
}

/// Parse `wsl -l -v`: a header line, then `[*] NAME STATE VERSION` per distribution. The
/// header and the state are localized, so the header is skipped by position, the name is the
/// first word (WSL names have no spaces), the version the last and the state what is between.
pub fn parse_wsl_list_verbose(text: &str) -> Vec<WslDistro> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .skip(1)
        .filter_map(|line| {
            let (default, rest) = match line.strip_prefix('*') {
                Some(r) => (true, r.trim_start()),
                None => (false, line),
            };
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() < 3 {
                return None;
            }
            let version = words[words.len() - 1].parse().ok()?;
            Some(WslDistro {
                name: words[0].to_string(),
                state: words[1..words.len() - 1].join(" "),
                version,
                default,
            })
        })
        .collect()
}

/// Parse `wsl -l -q` / `wsl -l --running -q`: one name per line.
pub fn parse_wsl_list_quiet(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A GUID, printed and parsed in the registry format (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guid {
    pub data1: u32,
    pub data2: u16,
    pub data3: u16,
    pub data4: [u8; 8],
}

impl Guid {
    pub fn parse(s: &str) -> Option<Guid> {
        let s = s.trim().trim_start_matches('{').trim_end_matches('}');
        let parts: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(lens).any(|(p, n)| p.len() != n) {
            return None;
        }
        let tail = format!("{}{}", parts[3], parts[4]);
        let mut data4 = [0u8; 8];
        for (i, b) in data4.iter_mut().enumerate() {
            *b = u8::from_str_radix(tail.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Guid {
            data1: u32::from_str_radix(parts[0], 16).ok()?,
            data2: u16::from_str_radix(parts[1], 16).ok()?,
            data3: u16::from_str_radix(parts[2], 16).ok()?,
            data4,
        })
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.data4;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.data1, self.data2, self.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
        )
    }
}

/// The Hyper-V socket service id for vsock port `port`: the port in the first field of the
/// vsock template GUID `00000000-facb-11e6-bd58-64006a7986d3`.
pub fn vsock_service_guid(port: u32) -> Guid {
    Guid {
        data1: port,
        data2: 0xfacb,
        data3: 0x11e6,
        data4: [0xbd, 0x58, 0x64, 0x00, 0x6a, 0x79, 0x86, 0xd3],
    }
}

/// The inverse: the vsock port a service id stands for, when it follows the template.
pub fn vsock_port_of(guid: &Guid) -> Option<u32> {
    let t = vsock_service_guid(0);
    (guid.data2 == t.data2 && guid.data3 == t.data3 && guid.data4 == t.data4).then_some(guid.data1)
}

/// A Windows path as WSL sees it: `C:\Users\me` -> `/mnt/c/Users/me` (automount's default
/// root). Paths without a drive letter are returned with forward slashes.
pub fn windows_to_wsl_path(p: &str) -> String {
    let b = p.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        let rest = p[2..].replace('\\', "/");
        let rest = rest.trim_start_matches('/');
        let drive = (b[0] as char).to_ascii_lowercase();
        if rest.is_empty() {
            format!("/mnt/{drive}")
        } else {
            format!("/mnt/{drive}/{rest}")
        }
    } else {
        p.replace('\\', "/")
    }
}

/// The rootfs tarball to import: `cfg.initrd` when it is a tar archive, else `rootfs.tar`
/// next to it (what the image recipe ships for WSL, as the initramfs is of no use there).
pub fn rootfs_tarball(cfg: &VmConfig) -> PathBuf {
    let name = cfg
        .initrd
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        cfg.initrd.clone()
    } else {
        cfg.initrd.with_file_name("rootfs.tar")
    }
}

/// Arguments for berth-guest inside WSL: `berth.wsl=1`, the caller's `berth.*` parameters with
/// the share as a WSL path (Windows drives are already mounted under /mnt, so no 9p) and
/// without QEMU's user networking (WSL sets up the network).
pub fn guest_args(cfg: &VmConfig) -> Vec<String> {
    let mut args = vec!["berth.wsl=1".to_string()];
    for p in cfg.cmdline.split_whitespace() {
        if p.starts_with("berth.net=") || p.starts_with("berth.share=") {
            continue;
        }
        args.push(p.to_string());
    }
    if let Some(share) = &cfg.share {
        args.push(format!(
            "berth.share={}",
            windows_to_wsl_path(&share.to_string_lossy())
        ));
        args.push("berth.sharefs=wsl".into());
    }
    args
}

/// `Hypervisor` over WSL2 (see the module documentation).
#[derive(Debug, Clone)]
pub struct WslBackend {
    wsl: PathBuf,
    distro: String,
}

impl Default for WslBackend {
    fn default() -> Self {
        WslBackend::new()
    }
}

/// berth-guest processes this process started, by state directory.
fn children() -> &'static Mutex<HashMap<PathBuf, Child>> {
    static CHILDREN: OnceLock<Mutex<HashMap<PathBuf, Child>>> = OnceLock::new();
    CHILDREN.get_or_init(|| Mutex::new(HashMap::new()))
}

impl WslBackend {
    pub fn new() -> Self {
        WslBackend {
            wsl: PathBuf::from("wsl.exe"),
            distro: DISTRO.to_string(),
        }
    }

    /// Use another `wsl` program (tests) and distribution name.
    pub fn with_command(wsl: impl Into<PathBuf>, distro: impl Into<String>) -> Self {
        WslBackend {
            wsl: wsl.into(),
            distro: distro.into(),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.wsl);
        c.env("WSL_UTF8", "1");
        #[cfg(windows)]
        {
            use std::os::windows::process::CommandExt;
            // No console window flashing up from a GUI app.
            const CREATE_NO_WINDOW: u32 = 0x0800_0000;
            c.creation_flags(CREATE_NO_WINDOW);
        }
        c
    }

    /// Run `wsl <args>` and return its decoded standard output.
    fn run(&self, args: &[&str]) -> VmResult<String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| VmError::Unavailable(format!("cannot run {}: {e}", self.wsl.display())))?;
        if !out.status.success() {
            let mut msg = decode_wsl_output(&out.stderr);
            if msg.trim().is_empty() {
                msg = decode_wsl_output(&out.stdout);
            }
            return Err(VmError::Other(format!(
                "wsl {}: {} ({})",
                args.join(" "),
                msg.trim(),
                out.status
            )));
        }
        Ok(decode_wsl_output(&out.stdout))
    }

    pub fn distros(&self) -> VmResult<Vec<WslDistro>> {
        self.run(&["--list", "--verbose"])
            .map(|t| parse_wsl_list_verbose(&t))
    }

    fn registered(&self) -> VmResult<bool> {
        Ok(parse_wsl_list_quiet(&self.run(&["--list", "--quiet"])?).contains(&self.distro))
    }

    fn running(&self) -> VmResult<bool> {
        Ok(
            parse_wsl_list_quiet(&self.run(&["--list", "--running", "--quiet"])?)
                .contains(&self.distro),
        )
    }

    /// `wsl --import <distro> <state_dir>/wsl <rootfs> --version 2`, once.
    fn ensure_imported(&self, cfg: &VmConfig) -> VmResult<()> {
        if self.registered()? {
            return Ok(());
        }
        let tar = rootfs_tarball(cfg);
        if !tar.exists() {
            return Err(VmError::Other(format!(
                "no WSL rootfs tarball at {}",
                tar.display()
            )));
        }
        let dir = cfg.state_dir.join("wsl");
        std::fs::create_dir_all(&dir).map_err(|e| VmError::Io {
            what: format!("creating {}", dir.display()),
            source: e,
        })?;
        let (dir, tar) = (dir.to_string_lossy(), tar.to_string_lossy());
        self.run(&["--import", &self.distro, &dir, &tar, "--version", "2"])
            .map(|_| ())
    }
}

fn pid_path(cfg: &VmConfig) -> PathBuf {
    cfg.state_dir.join(PID_FILE)
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl Hypervisor for WslBackend {
    fn name(&self) -> &'static str {
        "wsl"
    }

    fn available(&self) -> VmResult<()> {
        // `--status` fails when WSL (or its VM platform) is not installed.
        self.run(&["--status"]).map(|_| ()).map_err(|e| match e {
            VmError::Unavailable(m) => VmError::Unavailable(m),
            other => VmError::Unavailable(format!("WSL2 is not ready: {other}")),
        })
    }

    fn start(&self, cfg: &VmConfig) -> VmResult<()> {
        let mut kids = children()
            .lock()
            .map_err(|_| VmError::Other("poisoned".into()))?;
        if let Some(child) = kids.get_mut(&cfg.state_dir) {
            if matches!(child.try_wait(), Ok(None)) {
                return Err(VmError::AlreadyRunning(child.id()));
            }
        }
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| VmError::Io {
            what: format!("creating {}", cfg.state_dir.display()),
            source: e,
        })?;
        self.ensure_imported(cfg)?;
        let log = std::fs::File::create(cfg.console_log()).map_err(|e| VmError::Io {
            what: format!("creating {}", cfg.console_log().display()),
            source: e,
        })?;
        let log2 = log.try_clone().map_err(|e| VmError::Io {
            what: "console log".into(),
            source: e,
        })?;
        let child = self
            .command()
            .args(["-d", &self.distro, "-u", "root", "--exec", "/init"])
            .args(guest_args(cfg))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| VmError::Io {
                what: format!("starting {} in WSL", self.distro),
                source: e,
            })?;
        let mut f = std::fs::File::create(pid_path(cfg)).map_err(|e| VmError::Io {
            what: format!("writing {}", pid_path(cfg).display()),
            source: e,
        })?;
        let _ = writeln!(f, "{}", child.id());
        kids.insert(cfg.state_dir.clone(), child);
        Ok(())
    }

    fn kill(&self, cfg: &VmConfig) -> VmResult<()> {
        let was_running = self.running().unwrap_or(false);
        let terminated = self.run(&["--terminate", &self.distro]);
        let child = children()
            .lock()
            .ok()
            .and_then(|mut k| k.remove(&cfg.state_dir));
        let had_child = child.is_some();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(pid_path(cfg));
        match terminated {
            Ok(_) if was_running || had_child => Ok(()),
            Ok(_) => Err(VmError::NotRunning),
            Err(e) => Err(e),
        }
    }

    fn state(&self, cfg: &VmConfig) -> VmState {
        let running = match self.running() {
            Ok(r) => r,
            Err(_) => return VmState::Stopped,
        };
        let exited = children().lock().ok().and_then(|mut k| {
            k.get_mut(&cfg.state_dir)
                .map(|c| !matches!(c.try_wait(), Ok(None)))
        });
        match (running, exited) {
            // The distribution runs but our berth-guest ended: it crashed.
            (true, Some(true)) => VmState::Crashed,
            (true, _) => VmState::Running,
            // berth-guest still starting the distribution.
            (false, Some(false)) => VmState::Starting,
            // We started it and it ended without `kill`, or a pid file without a VM.
            (false, Some(true)) => VmState::Crashed,
            (false, None) if pid_path(cfg).exists() => VmState::Crashed,
            (false, None) => VmState::Stopped,
        }
    }

    fn pid(&self, cfg: &VmConfig) -> Option<u32> {
        match self.state(cfg) {
            VmState::Running | VmState::Starting => read_pid(&pid_path(cfg)),
            _ => None,
        }
    }
}

/// Hyper-V sockets (see the module documentation).
#[cfg(windows)]
pub mod hvsock {
    use std::io;
    use std::os::windows::io::{FromRawSocket, OwnedSocket, RawSocket};

    use windows_sys::core::GUID;
    use windows_sys::Win32::Networking::WinSock::{
        closesocket, connect as ws_connect, socket, WSAGetLastError, WSAStartup, AF_HYPERV,
        INVALID_SOCKET, SOCKADDR, SOCKET_ERROR, SOCK_STREAM, WSADATA,
    };
    use windows_sys::Win32::System::Hypervisor::{HV_PROTOCOL_RAW, SOCKADDR_HV};

    use super::{vsock_service_guid, Guid};

    fn win_guid(g: &Guid) -> GUID {
        GUID {
            data1: g.data1,
            data2: g.data2,
            data3: g.data3,
            data4: g.data4,
        }
    }

    /// The Hyper-V socket address of vsock port `port` in VM `vm_id`.
    pub fn address(vm_id: &Guid, port: u32) -> SOCKADDR_HV {
        SOCKADDR_HV {
            Family: AF_HYPERV,
            Reserved: 0,
            VmId: win_guid(vm_id),
            ServiceId: win_guid(&vsock_service_guid(port)),
        }
    }

    /// Connect to the guest's vsock port `port` in the Hyper-V VM `vm_id`.
    pub fn connect(vm_id: &Guid, port: u32) -> io::Result<OwnedSocket> {
        // SAFETY: WSADATA is a plain C struct for which all-zero bytes are a valid value.
        let mut data: WSADATA = unsafe { std::mem::zeroed() };
        // SAFETY: WSAStartup writes into `data`, a valid WSADATA; it is reference counted, so
        // calling it again in a process that already uses Winsock is harmless.
        let rc = unsafe { WSAStartup(0x0202, &mut data) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: plain socket creation; the result is checked below.
        let s = unsafe { socket(i32::from(AF_HYPERV), SOCK_STREAM, HV_PROTOCOL_RAW as i32) };
        if s == INVALID_SOCKET {
            // SAFETY: reads the calling thread's last Winsock error.
            return Err(io::Error::from_raw_os_error(unsafe { WSAGetLastError() }));
        }
        let addr = address(vm_id, port);
        // SAFETY: `addr` is a valid SOCKADDR_HV for the call's duration, and the length is
        // its size; `s` is the socket created above.
        let rc = unsafe {
            ws_connect(
                s,
                (&addr as *const SOCKADDR_HV).cast::<SOCKADDR>(),
                std::mem::size_of::<SOCKADDR_HV>() as i32,
            )
        };
        if rc == SOCKET_ERROR {
            // SAFETY: reads the calling thread's last Winsock error.
            let err = unsafe { WSAGetLastError() };
            // SAFETY: `s` is our socket, closed exactly once, and not used afterwards.
            unsafe { closesocket(s) };
            return Err(io::Error::from_raw_os_error(err));
        }
        // SAFETY: `s` is a connected socket nothing else owns.
        Ok(unsafe { OwnedSocket::from_raw_socket(s as RawSocket) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u8> {
        let mut v = vec![0xff, 0xfe];
        for u in s.encode_utf16() {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v
    }

    #[test]
    fn decodes_utf16_and_utf8() {
        assert_eq!(decode_wsl_output(&utf16("berth\r\n")), "berth\r\n");
        // Without BOM, as wsl.exe usually writes.
        assert_eq!(decode_wsl_output(&utf16("ab")[2..]), "ab");
        assert_eq!(decode_wsl_output("héllo\n".as_bytes()), "héllo\n");
    }

    #[test]
    fn parses_wsl_list_verbose() {
        let text = "  NAME                   STATE           VERSION\r\n\
                    * Ubuntu-22.04           Running         2\r\n\
                      berth                  Stopped         2\r\n\
                      legacy                 Stopped         1\r\n\r\n";
        let d = parse_wsl_list_verbose(&decode_wsl_output(&utf16(text)));
        assert_eq!(d.len(), 3);
        assert_eq!(
            d[0],
            WslDistro {
                name: "Ubuntu-22.04".into(),
                state: "Running".into(),
                version: 2,
                default: true
            }
        );
        assert_eq!(
            (d[1].name.as_str(), d[1].state.as_str(), d[1].default),
            ("berth", "Stopped", false)
        );
        assert_eq!(d[2].version, 1);
        // Localized: German header and a state with spaces.
        let de = "  NAME      ZUSTAND            VERSION\n* berth     Wird ausgeführt    2\n";
        let d = parse_wsl_list_verbose(de);
        assert_eq!(d[0].state, "Wird ausgeführt");
        assert_eq!(d[0].version, 2);
        assert!(parse_wsl_list_verbose("").is_empty());
    }

    #[test]
    fn parses_wsl_list_quiet() {
        let names = parse_wsl_list_quiet(&decode_wsl_output(&utf16("Ubuntu\r\nberth\r\n")));
        assert_eq!(names, vec!["Ubuntu".to_string(), "berth".to_string()]);
    }

    #[test]
    fn vsock_service_guids() {
        assert_eq!(
            vsock_service_guid(2375).to_string(),
            "00000947-facb-11e6-bd58-64006a7986d3"
        );
        assert_eq!(
            vsock_service_guid(1025).to_string(),
            "00000401-facb-11e6-bd58-64006a7986d3"
        );
        let g = Guid::parse("{00000402-FACB-11E6-BD58-64006A7986D3}").expect("parse");
        assert_eq!(g, vsock_service_guid(1026));
        assert_eq!(vsock_port_of(&g), Some(1026));
        let other = Guid::parse("e0e16197-dd56-4a10-9195-5ee7a155a838").expect("parse");
        assert_eq!(vsock_port_of(&other), None);
        assert_eq!(other.to_string(), "e0e16197-dd56-4a10-9195-5ee7a155a838");
        assert!(Guid::parse("not-a-guid").is_none());
        assert!(Guid::parse("0000040-facb-11e6-bd58-64006a7986d3").is_none());
    }

    #[test]
    fn windows_paths_map_to_mnt() {
        assert_eq!(windows_to_wsl_path(r"C:\Users\me"), "/mnt/c/Users/me");
        assert_eq!(windows_to_wsl_path(r"D:\"), "/mnt/d");
        assert_eq!(windows_to_wsl_path("/home/me"), "/home/me");
    }

    fn cfg(dir: &Path) -> VmConfig {
        VmConfig {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initramfs.cpio.gz"),
            cmdline: "berth.time=5 berth.net=user berth.share=C:\\Users\\me berth.log=info".into(),
            cpus: 2,
            memory_mib: 2048,
            data_disk: dir.join("data.img"),
            data_disk_gib: 8,
            system_disk: None,
            share: Some(PathBuf::from(r"C:\Users\me")),
            state_dir: dir.join("state"),
            guest_cid: 3,
        }
    }

    #[test]
    fn guest_arguments_and_rootfs() {
        let c = cfg(Path::new("/x"));
        assert_eq!(
            guest_args(&c),
            vec![
                "berth.wsl=1",
                "berth.time=5",
                "berth.log=info",
                "berth.share=/mnt/c/Users/me",
                "berth.sharefs=wsl"
            ]
        );
        assert_eq!(rootfs_tarball(&c), PathBuf::from("/x/rootfs.tar"));
        let mut t = c.clone();
        t.initrd = PathBuf::from("/y/berth-rootfs.tar.gz");
        assert_eq!(rootfs_tarball(&t), PathBuf::from("/y/berth-rootfs.tar.gz"));
    }

    /// A fake `wsl` (shell script) that logs its arguments and answers like wsl.exe, in
    /// UTF-16LE, from a state file: which distros exist and run.
    #[cfg(unix)]
    #[test]
    fn backend_drives_wsl_exe() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let d = dir.path();
        let script = d.join("wsl");
        // printf with \000 after each ASCII byte gives UTF-16LE.
        let body = format!(
            r#"#!/bin/sh
D="{d}"
echo "$@" >> "$D/calls"
case "$1" in
  --status) exit 0 ;;
  --list)
    if [ "$2" = "--running" ]; then
      [ -f "$D/running" ] && printf 'b\000e\000r\000t\000h\000\r\000\n\000'
      exit 0
    fi
    printf 'U\000b\000u\000n\000t\000u\000\r\000\n\000'
    [ -f "$D/imported" ] && printf 'b\000e\000r\000t\000h\000\r\000\n\000'
    exit 0 ;;
  --import) touch "$D/imported"; exit 0 ;;
  --terminate) rm -f "$D/running"; exit 0 ;;
  -d) touch "$D/running"; echo "berth-guest up"; exec sleep 30 ;;
esac
exit 1
"#,
            d = d.display()
        );
        std::fs::write(&script, body).expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let c = cfg(d);
        std::fs::write(d.join("rootfs.tar"), b"tar").expect("rootfs");

        let b = WslBackend::with_command(&script, "berth");
        assert_eq!(b.name(), "wsl");
        b.available().expect("available");
        assert_eq!(b.state(&c), VmState::Stopped);
        b.start(&c).expect("start");
        // The fake marks the distro running when its `-d` process starts.
        let mut state = b.state(&c);
        for _ in 0..200 {
            if state == VmState::Running {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            state = b.state(&c);
        }
        assert_eq!(state, VmState::Running);
        assert!(b.pid(&c).is_some());
        assert!(matches!(b.start(&c), Err(VmError::AlreadyRunning(_))));
        b.kill(&c).expect("kill");
        assert_eq!(b.state(&c), VmState::Stopped);
        assert_eq!(b.pid(&c), None);

        let calls = std::fs::read_to_string(d.join("calls")).expect("calls");
        let want_import = format!(
            "--import berth {} {} --version 2",
            c.state_dir.join("wsl").display(),
            d.join("rootfs.tar").display()
        );
        assert!(calls.lines().any(|l| l == want_import), "{calls}");
        assert!(
            calls.lines().any(|l| l
                == "-d berth -u root --exec /init berth.wsl=1 berth.time=5 berth.log=info berth.share=/mnt/c/Users/me berth.sharefs=wsl"),
            "{calls}"
        );
        assert!(calls.lines().any(|l| l == "--terminate berth"), "{calls}");
        let log = std::fs::read_to_string(c.console_log()).expect("log");
        assert!(log.contains("berth-guest up"));
        // A second start does not import again.
        b.start(&c).expect("start again");
        b.kill(&c).expect("kill again");
        let calls = std::fs::read_to_string(d.join("calls")).expect("calls");
        assert_eq!(calls.matches("--import").count(), 1);
        // Nothing running: kill says so.
        assert!(matches!(b.kill(&c), Err(VmError::NotRunning)));
    }
}
