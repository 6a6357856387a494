//! Berth's VM, host side (docs/VM.md): the `Hypervisor` trait and its backends, the hybrid
//! vsock client, the Docker API relay and the published-port forwarder.
//!
//! The relay, control channel, QEMU backend and supervisor speak hybrid vsock over Unix
//! sockets (Linux, macOS). On Windows the host side of vsock is Hyper-V sockets: see
//! `windows.rs` and docs/VM-BACKENDS.md.

pub mod hypervisor;
pub use hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};

#[cfg(unix)]
pub mod control;
#[cfg(unix)]
pub mod hvsock;
#[cfg(unix)]
pub mod qemu;
#[cfg(unix)]
pub mod relay;
#[cfg(unix)]
pub mod supervisor;

/// Own VMM on KVM from rust-vmm crates.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub mod kvm;

/// Virtualization.framework (its Unix-side vsock bridge builds and is tested everywhere).
#[cfg(unix)]
pub mod macos;

/// WSL2 (its parsers build and are tested everywhere).
pub mod windows;
