//! The QEMU backend: runs everywhere QEMU does, including the TCG emulation the tests use.
//! `-M microvm` with direct kernel boot, virtio-mmio devices, vsock through
//! `vhost-device-vsock` (whose Unix socket is the hybrid-vsock host end), 9p for the home
//! share, user-mode networking for containers' outbound traffic.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};

pub struct QemuBackend {
    /// `tcg`, `kvm`, `hvf` or a QEMU `-accel` list such as `kvm:tcg`.
    pub accel: String,
    children: Mutex<Option<(Child, Child)>>,
    stopping: Mutex<bool>,
}

impl QemuBackend {
    pub fn new(accel: impl Into<String>) -> Self {
        Self {
            accel: accel.into(),
            children: Mutex::new(None),
            stopping: Mutex::new(false),
        }
    }

    fn qemu_binary() -> &'static str {
        if cfg!(target_arch = "aarch64") {
            "qemu-system-aarch64"
        } else {
            "qemu-system-x86_64"
        }
    }

    /// The QEMU command line for `cfg` (without the program name). Public for tests and for
    /// `berth vm status --verbose`.
    /// No RTC: its IRQ 8 is the one microvm gives the fifth virtio-mmio device, and the guest
    /// sets its clock from `berth.time` anyway.
    pub fn args(&self, cfg: &VmConfig, vhost_socket: &Path) -> Vec<String> {
        let mem = cfg.memory_mib;
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&[
            "-M",
            "microvm,acpi=off,rtc=off,memory-backend=mem",
            "-accel",
        ]);
        a.push(self.accel_arg());
        a.extend(["-cpu".into(), "max".into()]);
        a.extend(["-smp".into(), cfg.cpus.max(1).to_string()]);
        a.extend(["-m".into(), format!("{mem}M")]);
        a.extend([
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        ]);
        // Modern (virtio 1.0) MMIO transports: the legacy ones lose the 9p/virtio-fs devices.
        a.extend(["-global".into(), "virtio-mmio.force-legacy=false".into()]);
        a.extend(
            ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.extend([
            "-serial".into(),
            format!("file:{}", cfg.console_log().display()),
        ]);
        a.extend(["-kernel".into(), cfg.kernel.display().to_string()]);
        a.extend(["-initrd".into(), cfg.initrd.display().to_string()]);
        a.extend(["-append".into(), kernel_cmdline(cfg)]);
        a.extend([
            "-drive".into(),
            format!(
                "id=data,file={},format=raw,if=none,cache=writeback,discard=unmap",
                cfg.data_disk.display()
            ),
            "-device".into(),
            "virtio-blk-device,drive=data".into(),
        ]);
        a.extend([
            "-chardev".into(),
            format!("socket,id=vsock,path={}", vhost_socket.display()),
            "-device".into(),
            "vhost-user-vsock-device,chardev=vsock".into(),
        ]);
        a.extend([
            "-netdev".into(),
            "user,id=net0".into(),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
        // Free page reporting: pages the guest frees go back to the host (idle VM memory).
        a.extend([
            "-device".into(),
            "virtio-balloon-device,free-page-reporting=on".into(),
        ]);
        if let Some(share) = &cfg.share {
            a.extend([
                "-fsdev".into(),
                format!("local,id=home,path={},security_model=none", share.display()),
                "-device".into(),
                "virtio-9p-device,fsdev=home,mount_tag=home".into(),
            ]);
        }
        a
    }

    fn accel_arg(&self) -> String {
        match self.accel.as_str() {
            // Multi-threaded TCG: one host thread per vCPU.
            "tcg" => "tcg,thread=multi".into(),
            other => other.into(),
        }
    }
}

/// Kernel command line: console, no reboot loop (`reboot=t` + QEMU `-no-reboot` makes a guest
/// reboot end QEMU), the measured boot-time savings from docs (one-vCPU-only ones only with one
/// vCPU), and the caller's `berth.*` parameters.
pub fn kernel_cmdline(cfg: &VmConfig) -> String {
    // `acpi=off`: microvm runs without ACPI tables (saves a probe and an error line).
    let mut c = String::from("console=ttyS0 reboot=t panic=-1 quiet loglevel=4 acpi=off");
    if let Some(khz) = host_tsc_khz() {
        c.push_str(&format!(" tsc_early_khz={khz}"));
    }
    if cfg.cpus <= 1 {
        c.push_str(" noreplace-smp");
    } else {
        // With several vCPUs under TCG the TSC looks unsynchronised and the clock would fall
        // back to 4 ms jiffies; QEMU's TSC is in fact one counter.
        c.push_str(" tsc=reliable");
    }
    if !cfg.cmdline.is_empty() {
        c.push(' ');
        c.push_str(&cfg.cmdline);
    }
    c
}

/// The host's TSC frequency in kHz, from /proc/cpuinfo ("cpu MHz"). Without it the early
/// clock falls back to a slow calibration under emulation.
fn host_tsc_khz() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = s
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// Where `vhost-device-vsock` is: `$BERTH_VHOST_VSOCK`, next to this program, Berth's lib
/// directory, the tools cache the test setup fills, then `$PATH`.
pub fn find_vhost_vsock() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_VHOST_VSOCK") {
        return Some(p.into());
    }
    let mut cands: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        cands.push(dir.join("vhost-device-vsock"));
    }
    cands.push("/usr/lib/berth/vhost-device-vsock".into());
    cands.push("/var/cache/berth-tools/bin/vhost-device-vsock".into());
    cands.extend(which("vhost-device-vsock"));
    cands.into_iter().find(|p| p.is_file())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let what = what.into();
    move |source| VmError::Io { what, source }
}

impl Hypervisor for QemuBackend {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn available(&self) -> VmResult<()> {
        if which(Self::qemu_binary()).is_none() {
            return Err(VmError::Unavailable(format!(
                "{} is not installed (Debian: apt-get install qemu-system-x86)",
                Self::qemu_binary()
            )));
        }
        if find_vhost_vsock().is_none() {
            return Err(VmError::Unavailable(
                "vhost-device-vsock is not installed (cargo install vhost-device-vsock --version 0.3.0, or set BERTH_VHOST_VSOCK)".into(),
            ));
        }
        Ok(())
    }

    fn start(&self, cfg: &VmConfig) -> VmResult<()> {
        self.available()?;
        let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((q, _)) = kids.as_mut() {
            if q.try_wait().ok().flatten().is_none() {
                return Err(VmError::AlreadyRunning(q.id()));
            }
        }
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = false;
        std::fs::create_dir_all(&cfg.state_dir).map_err(io("creating the VM state dir"))?;
        let vhu = cfg.state_dir.join("vhost-user.sock");
        let vsock = cfg.vsock_socket();
        for p in [&vhu, &vsock] {
            let _ = std::fs::remove_file(p);
        }
        let log = |name: &str| -> VmResult<Stdio> {
            Ok(File::create(cfg.state_dir.join(name))
                .map_err(io(format!("creating {name}")))?
                .into())
        };
        let vhost_bin = find_vhost_vsock()
            .ok_or_else(|| VmError::Unavailable("vhost-device-vsock not found".into()))?;
        let mut vhost = Command::new(&vhost_bin)
            .arg("--vm")
            .arg(format!(
                "guest-cid={},socket={},uds-path={}",
                cfg.guest_cid,
                vhu.display(),
                vsock.display()
            ))
            .stdin(Stdio::null())
            .stdout(log("vhost-device-vsock.log")?)
            .stderr(log("vhost-device-vsock.log")?)
            .spawn()
            .map_err(io(format!("starting {}", vhost_bin.display())))?;
        // QEMU connects to the device's socket at start-up: wait for it to exist.
        let t0 = Instant::now();
        while !vhu.exists() {
            if let Ok(Some(st)) = vhost.try_wait() {
                return Err(VmError::Other(format!(
                    "vhost-device-vsock exited at start ({st}); see {}",
                    cfg.state_dir.join("vhost-device-vsock.log").display()
                )));
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = vhost.kill();
                return Err(VmError::Other(
                    "vhost-device-vsock did not create its socket".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let qemu = Command::new(Self::qemu_binary())
            .args(self.args(cfg, &vhu))
            .stdin(Stdio::null())
            .stdout(log("qemu.log")?)
            .stderr(log("qemu.log")?)
            .spawn();
        let qemu = match qemu {
            Ok(q) => q,
            Err(e) => {
                let _ = vhost.kill();
                let _ = vhost.wait();
                return Err(io("starting QEMU")(e));
            }
        };
        let _ = std::fs::write(cfg.state_dir.join("qemu.pid"), qemu.id().to_string());
        *kids = Some((qemu, vhost));
        Ok(())
    }

    fn kill(&self, _cfg: &VmConfig) -> VmResult<()> {
        *self.stopping.lock().unwrap_or_else(|e| e.into_inner()) = true;
        let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some((mut q, mut v)) = kids.take() else {
            return Err(VmError::NotRunning);
        };
        let _ = q.kill();
        let _ = q.wait();
        let _ = v.kill();
        let _ = v.wait();
        Ok(())
    }

    fn state(&self, _cfg: &VmConfig) -> VmState {
        let mut kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let Some((q, v)) = kids.as_mut() else {
            return VmState::Stopped;
        };
        match q.try_wait() {
            Ok(None) => VmState::Running,
            Ok(Some(st)) => {
                // QEMU has ended: reap the vsock device with it.
                let _ = v.kill();
                let _ = v.wait();
                let asked = *self.stopping.lock().unwrap_or_else(|e| e.into_inner());
                if asked || st.success() {
                    VmState::Stopped
                } else {
                    VmState::Crashed
                }
            }
            Err(_) => VmState::Crashed,
        }
    }

    fn pid(&self, _cfg: &VmConfig) -> Option<u32> {
        let kids = self.children.lock().unwrap_or_else(|e| e.into_inner());
        kids.as_ref().map(|(q, _)| q.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VmConfig {
        VmConfig {
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline: "berth.net=user".into(),
            cpus: 1,
            memory_mib: 512,
            data_disk: "/d.img".into(),
            data_disk_gib: 8,
            share: Some("/home/u".into()),
            state_dir: "/s".into(),
            guest_cid: 3,
        }
    }

    #[test]
    fn command_line_has_every_device() {
        let a = QemuBackend::new("tcg").args(&cfg(), Path::new("/s/vhu.sock"));
        let s = a.join(" ");
        for want in [
            "-M microvm,acpi=off,rtc=off,memory-backend=mem",
            "-accel tcg,thread=multi",
            "memory-backend-memfd,id=mem,size=512M,share=on",
            "-serial file:/s/console.log",
            "-kernel /k -initrd /i",
            "file=/d.img,format=raw",
            "virtio-blk-device,drive=data",
            "socket,id=vsock,path=/s/vhu.sock",
            "vhost-user-vsock-device,chardev=vsock",
            "local,id=home,path=/home/u,security_model=none",
            "virtio-9p-device,fsdev=home,mount_tag=home",
            "-no-reboot",
            "virtio-balloon-device,free-page-reporting=on",
        ] {
            assert!(s.contains(want), "missing {want:?} in {s}");
        }
        let append = &a[a.iter().position(|x| x == "-append").unwrap() + 1];
        assert!(append.contains("reboot=t") && append.contains("noreplace-smp"));
        assert!(append.ends_with("berth.net=user"));
    }

    #[test]
    fn two_cpus_keep_smp_patching() {
        let mut c = cfg();
        c.cpus = 2;
        assert!(!kernel_cmdline(&c).contains("noreplace-smp"));
        assert!(kernel_cmdline(&c).contains("tsc=reliable"));
    }
}
