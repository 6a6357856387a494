//! The one trait every VM backend implements, and the machine description they share.

use std::path::PathBuf;

/// What to boot and with which resources. Paths are on the host.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel image: x86_64 ELF vmlinux (PVH entry) or bzImage; arm64 raw `Image`. The QEMU
    /// backend picks its machine from this file's header (`qemu::GuestArch`).
    pub kernel: PathBuf,
    /// Initramfs (cpio, optionally compressed) holding berth-guest as /init.
    pub initrd: PathBuf,
    /// Extra kernel command line (berth.* parameters, see docs/VM.md).
    pub cmdline: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Raw data disk image (virtio-blk, /dev/vda in the guest); created sparse when missing.
    pub data_disk: PathBuf,
    pub data_disk_gib: u32,
    /// Read-only system disk (ext4 image of the guest's `/usr`: berthd, runc, libraries...),
    /// attached as a virtio-blk device with serial `berth-system`; berth-guest mounts it at
    /// `/usr`. `None` with an image whose initramfs holds everything (docs/VM.md).
    pub system_disk: Option<PathBuf>,
    /// Host folder shared into the guest (9p/virtio-fs tag `home`), mounted at the same path.
    pub share: Option<PathBuf>,
    /// Directory for the backend's runtime files (vsock socket, pid file, console log).
    pub state_dir: PathBuf,
    /// Guest vsock context id.
    pub guest_cid: u32,
}

impl VmConfig {
    /// The hybrid-vsock Unix socket (docs/VM.md): `CONNECT <port>\n` reaches a guest port;
    /// `<socket>_<port>` is where guest-initiated connections to host port `<port>` arrive.
    pub fn vsock_socket(&self) -> PathBuf {
        self.state_dir.join("vsock.sock")
    }
    /// The serial console's output.
    pub fn console_log(&self) -> PathBuf {
        self.state_dir.join("console.log")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    Stopped,
    Starting,
    Running,
    Stopping,
    /// The hypervisor process ended without being asked to.
    Crashed,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("this backend is not available on this host: {0}")]
    Unavailable(String),
    #[error("the VM is not running")]
    NotRunning,
    #[error("the VM is already running (pid {0})")]
    AlreadyRunning(u32),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

pub type VmResult<T> = std::result::Result<T, VmError>;

/// A hypervisor backend. `start` returns once the VM process runs (not when the guest is
/// ready: readiness is the control channel's `ready` message, see `crate::control`).
/// Backends keep their state in `cfg.state_dir` so a later process (the CLI after the app
/// started the VM) can find, stop and inspect a running VM.
pub trait Hypervisor: Send + Sync {
    /// Short name: "qemu", "kvm", "vz", "wsl".
    fn name(&self) -> &'static str;
    /// Whether this backend can run on this host now; `Err` says why not, in words.
    fn available(&self) -> VmResult<()>;
    /// Boot the VM described by `cfg`.
    fn start(&self, cfg: &VmConfig) -> VmResult<()>;
    /// Stop it hard (the clean path is the control channel's `shutdown` first).
    fn kill(&self, cfg: &VmConfig) -> VmResult<()>;
    fn state(&self, cfg: &VmConfig) -> VmState;
    /// The VM process id on the host, when there is one.
    fn pid(&self, cfg: &VmConfig) -> Option<u32>;
}
