//! The VM supervisor: one host process per VM that owns the hypervisor, serves the host's
//! Docker API socket and the control channel, and records the VM's state for the CLI and the
//! desktop app (`state.json`). `berth vm start` runs it detached; `berth vm stop` signals it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::control::Control;
use crate::hypervisor::{Hypervisor, VmConfig, VmState};
use crate::{hvsock, relay};

/// Berth's per-user files (`~/.berth`, or `$BERTH_HOME`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    pub fn from_env() -> Self {
        let home = std::env::var_os("BERTH_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".berth")
            });
        Self { home }
    }
    pub fn vm_dir(&self) -> PathBuf {
        self.home.join("vm")
    }
    /// The Docker API socket the host's clients use in VM mode.
    pub fn socket(&self) -> PathBuf {
        self.home.join("run").join("docker.sock")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.vm_dir().join("run")
    }
    pub fn settings_file(&self) -> PathBuf {
        self.vm_dir().join("settings.json")
    }
    pub fn state_file(&self) -> PathBuf {
        self.vm_dir().join("state.json")
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.vm_dir().join("supervisor.log")
    }
    pub fn console_log(&self) -> PathBuf {
        self.state_dir().join("console.log")
    }
    pub fn data_disk(&self) -> PathBuf {
        self.vm_dir().join("data.img")
    }
}

/// VM settings, shared by the CLI and the desktop app's Settings (`settings.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct VmSettings {
    pub cpus: u32,
    pub memory_mib: u32,
    pub disk_gib: u32,
    /// Kernel and initramfs; empty = the installed image (see `find_image`).
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Shared into the VM at the same path; default: the user's home.
    pub share: Option<PathBuf>,
    pub registry_mirrors: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub log_level: String,
    /// QEMU accelerator: `kvm:tcg` (default), `tcg`, `hvf`.
    pub accel: String,
}

impl Default for VmSettings {
    fn default() -> Self {
        Self {
            cpus: 2,
            memory_mib: 2048,
            disk_gib: 64,
            kernel: None,
            initrd: None,
            share: std::env::var_os("HOME").map(PathBuf::from),
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            log_level: "info".into(),
            accel: "kvm:tcg".into(),
        }
    }
}

impl VmSettings {
    pub fn load(paths: &Paths) -> Self {
        std::fs::read(paths.settings_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
    pub fn save(&self, paths: &Paths) -> anyhow::Result<()> {
        std::fs::create_dir_all(paths.vm_dir())?;
        write_atomic(&paths.settings_file(), &serde_json::to_vec_pretty(self)?)
    }
}

/// What `state.json` says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct StateFile {
    pub state: Option<VmState>,
    pub supervisor_pid: u32,
    pub vm_pid: Option<u32>,
    pub backend: String,
    pub socket: PathBuf,
    pub started_at: String,
    /// Hypervisor launch to the guest's `ready`.
    pub boot_ms: Option<u64>,
    pub engine_version: Option<String>,
    pub ports: Vec<String>,
    /// Why the VM stopped when it was not asked to.
    pub message: Option<String>,
}

impl StateFile {
    pub fn read(paths: &Paths) -> Option<Self> {
        let s: Self = serde_json::from_slice(&std::fs::read(paths.state_file()).ok()?).ok()?;
        Some(s)
    }
    /// The state, corrected when the supervisor is gone without saying so (killed).
    pub fn effective_state(&self) -> VmState {
        let st = self.state.unwrap_or(VmState::Stopped);
        if matches!(st, VmState::Running | VmState::Starting | VmState::Stopping)
            && !pid_alive(self.supervisor_pid)
        {
            return VmState::Crashed;
        }
        st
    }
}

pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

/// The kernel and initramfs to boot: the settings', else `$BERTH_VM_IMAGE_DIR`, else the
/// installed image (`/usr/lib/berth/vm`), else `~/.berth/vm/image`. In a directory the kernel
/// is `Image` when there is one (an arm64 image: QEMU's virt machine and Virtualization.framework
/// boot the raw Image, not the ELF `vmlinux` beside it), else `vmlinux` (x86_64).
pub fn find_image(paths: &Paths, s: &VmSettings) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(k), Some(i)) = (&s.kernel, &s.initrd) {
        for f in [k, i] {
            if !f.is_file() {
                bail!("the VM image file {} does not exist", f.display());
            }
        }
        return Ok((k.clone(), i.clone()));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("BERTH_VM_IMAGE_DIR") {
        dirs.push(d.into());
    }
    dirs.push("/usr/lib/berth/vm".into());
    dirs.push(paths.vm_dir().join("image"));
    for d in &dirs {
        if let Some(found) = image_in(d) {
            return Ok(found);
        }
    }
    bail!(
        "no VM image found (looked in {}); build one with vm-image/build",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The kernel (`Image`, else `vmlinux`) and `initrd.img` of an image directory.
fn image_in(d: &Path) -> Option<(PathBuf, PathBuf)> {
    let i = d.join("initrd.img");
    let k = ["Image", "vmlinux"]
        .iter()
        .map(|k| d.join(k))
        .find(|k| k.is_file())?;
    i.is_file().then_some((k, i))
}

/// The read-only system disk of an image: `system.img` beside its initramfs (vm-image/build
/// puts the guest's `/usr` there and keeps only berth-guest in the initramfs), if any.
pub fn system_disk_for(initrd: &Path) -> Option<PathBuf> {
    Some(initrd.with_file_name("system.img")).filter(|p| p.is_file())
}

/// The guest's kernel parameters from the settings (docs/VM.md).
pub fn guest_cmdline(s: &VmSettings) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut c = format!("berth.time={now} berth.net=user berth.log={}", s.log_level);
    if let Some(sh) = &s.share {
        c.push_str(&format!(" berth.share={}", sh.display()));
    }
    if !s.registry_mirrors.is_empty() {
        c.push_str(&format!(" berth.mirror={}", s.registry_mirrors.join(",")));
    }
    if !s.insecure_registries.is_empty() {
        c.push_str(&format!(
            " berth.insecure={}",
            s.insecure_registries.join(",")
        ));
    }
    c
}

/// Run the VM in the foreground until it stops or this process is told to stop (SIGTERM or
/// SIGINT → clean guest shutdown). Returns an error when the VM ended without being asked.
pub async fn run(
    paths: Paths,
    settings: VmSettings,
    backend: Arc<dyn Hypervisor>,
) -> anyhow::Result<()> {
    if let Some(prev) = StateFile::read(&paths) {
        if prev.supervisor_pid != std::process::id()
            && pid_alive(prev.supervisor_pid)
            && prev.effective_state() != VmState::Stopped
        {
            bail!(
                "the VM is already running (supervisor pid {})",
                prev.supervisor_pid
            );
        }
    }
    backend.available().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (kernel, initrd) = find_image(&paths, &settings)?;
    std::fs::create_dir_all(paths.state_dir())?;
    std::fs::create_dir_all(paths.socket().parent().unwrap_or(Path::new("/")))?;
    let disk = paths.data_disk();
    if !disk.exists() {
        // Sparse: the guest formats it on first boot and it grows as it is used.
        let f =
            std::fs::File::create(&disk).with_context(|| format!("creating {}", disk.display()))?;
        f.set_len(u64::from(settings.disk_gib) << 30)?;
    }
    let system_disk = system_disk_for(&initrd);
    let cfg = VmConfig {
        kernel,
        initrd,
        cmdline: guest_cmdline(&settings),
        cpus: settings.cpus,
        memory_mib: settings.memory_mib,
        data_disk: disk,
        data_disk_gib: settings.disk_gib,
        system_disk,
        share: settings.share.clone().filter(|p| p.is_dir()),
        state_dir: paths.state_dir(),
        guest_cid: 3,
    };
    let mut state = StateFile {
        state: Some(VmState::Starting),
        supervisor_pid: std::process::id(),
        backend: backend.name().into(),
        socket: paths.socket(),
        started_at: chrono_now(),
        ..Default::default()
    };
    write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;

    // Host listeners exist before the guest can call them.
    let vsock = cfg.vsock_socket();
    let ctl_path = hvsock::host_listener_path(&vsock, hvsock::CONTROL_PORT);
    let _ = std::fs::remove_file(&ctl_path);
    let ctl_listener =
        UnixListener::bind(&ctl_path).with_context(|| format!("binding {}", ctl_path.display()))?;
    let control = Control::new(vsock.clone());
    let ctl_task = tokio::spawn(control.clone().serve(ctl_listener));
    let _ = std::fs::remove_file(paths.socket());
    let api = UnixListener::bind(paths.socket())
        .with_context(|| format!("binding {}", paths.socket().display()))?;
    let api_task = tokio::spawn(relay::serve(api, Arc::new(vsock.clone()), hvsock::API_PORT));

    let t0 = Instant::now();
    let started = {
        let b = backend.clone();
        let c = cfg.clone();
        tokio::task::spawn_blocking(move || b.start(&c)).await?
    };
    if let Err(e) = started {
        state.state = Some(VmState::Stopped);
        state.message = Some(e.to_string());
        write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;
        cleanup(&paths, &ctl_path);
        bail!("{e}");
    }
    state.vm_pid = backend.pid(&cfg);
    write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;
    tracing::info!(backend = backend.name(), pid = ?state.vm_pid, "VM started");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut status = control.status();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut stop_asked: Option<Instant> = None;
    let outcome = loop {
        tokio::select! {
            _ = term.recv() => { stop_asked.get_or_insert_with(Instant::now); }
            _ = int.recv() => { stop_asked.get_or_insert_with(Instant::now); }
            _ = status.changed() => {
                let s = status.borrow_and_update().clone();
                if s.ready.is_some() && state.boot_ms.is_none() {
                    state.boot_ms = Some(t0.elapsed().as_millis() as u64);
                    state.state = Some(VmState::Running);
                    tracing::info!(ms = state.boot_ms, "engine in the VM is ready");
                }
                state.engine_version = s.ready.clone().or(state.engine_version.take());
                state.ports = s.ports;
                write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;
                continue;
            }
            _ = tick.tick() => {}
        }
        if let Some(t) = stop_asked {
            if state.state != Some(VmState::Stopping) {
                state.state = Some(VmState::Stopping);
                write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;
                if !control.request_shutdown() {
                    tracing::warn!("no guest control connection: stopping the VM hard");
                    let _ = backend.kill(&cfg);
                }
            } else if t.elapsed() > Duration::from_secs(30) {
                tracing::warn!("the guest did not power off in 30 s: stopping the VM hard");
                let _ = backend.kill(&cfg);
            }
        }
        match backend.state(&cfg) {
            VmState::Running | VmState::Starting => {}
            VmState::Stopped if stop_asked.is_some() || powered_off_cleanly(&cfg) => break Ok(()),
            other => {
                let why = format!(
                    "the VM stopped unexpectedly ({other:?}); its console log is {}",
                    cfg.console_log().display()
                );
                break Err(why);
            }
        }
    };
    api_task.abort();
    ctl_task.abort();
    control.unbind_all().await;
    cleanup(&paths, &ctl_path);
    state.ports.clear();
    state.vm_pid = None;
    match outcome {
        Ok(()) => {
            state.state = Some(VmState::Stopped);
            state.message = None;
            write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;
            tracing::info!("VM stopped");
            Ok(())
        }
        Err(why) => {
            state.state = Some(VmState::Crashed);
            state.message = Some(why.clone());
            write_atomic(&paths.state_file(), &serde_json::to_vec_pretty(&state)?)?;
            bail!(why)
        }
    }
}

/// A guest that powers off on its own says so on its console; a kernel panic (which, with
/// `panic=-1` and `-no-reboot`, also ends QEMU with status 0) does not.
fn powered_off_cleanly(cfg: &VmConfig) -> bool {
    std::fs::read(cfg.console_log())
        .map(|b| {
            let tail = &b[b.len().saturating_sub(4096)..];
            String::from_utf8_lossy(tail).contains("powered off cleanly")
        })
        .unwrap_or(false)
}

fn cleanup(paths: &Paths, ctl: &Path) {
    let _ = std::fs::remove_file(paths.socket());
    let _ = std::fs::remove_file(ctl);
}

fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}", d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_defaults() {
        let d = tempfile::tempdir().unwrap();
        let p = Paths {
            home: d.path().into(),
        };
        assert_eq!(VmSettings::load(&p), VmSettings::default());
        let s = VmSettings {
            cpus: 1,
            memory_mib: 768,
            ..Default::default()
        };
        s.save(&p).unwrap();
        assert_eq!(VmSettings::load(&p), s);
    }

    #[test]
    fn image_dir_kernel_prefers_the_arm64_image() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        assert_eq!(image_in(p), None);
        std::fs::write(p.join("vmlinux"), b"k").unwrap();
        assert_eq!(image_in(p), None); // no initrd
        std::fs::write(p.join("initrd.img"), b"i").unwrap();
        assert_eq!(image_in(p), Some((p.join("vmlinux"), p.join("initrd.img"))));
        std::fs::write(p.join("Image"), b"k").unwrap();
        assert_eq!(image_in(p), Some((p.join("Image"), p.join("initrd.img"))));
    }

    #[test]
    fn cmdline_carries_settings() {
        let s = VmSettings {
            share: Some("/home/u".into()),
            registry_mirrors: vec!["http://10.0.2.2:5000".into()],
            insecure_registries: vec!["10.0.2.2:5000".into()],
            ..Default::default()
        };
        let c = guest_cmdline(&s);
        assert!(c.contains("berth.share=/home/u"));
        assert!(c.contains("berth.mirror=http://10.0.2.2:5000"));
        assert!(c.contains("berth.insecure=10.0.2.2:5000"));
        assert!(c.contains("berth.net=user"));
    }

    #[test]
    fn dead_supervisor_reads_as_crashed() {
        let s = StateFile {
            state: Some(VmState::Running),
            supervisor_pid: 0,
            ..Default::default()
        };
        assert_eq!(s.effective_state(), VmState::Crashed);
        let s = StateFile {
            state: Some(VmState::Running),
            supervisor_pid: std::process::id(),
            ..Default::default()
        };
        assert_eq!(s.effective_state(), VmState::Running);
    }
}
