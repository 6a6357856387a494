//! Berth's VM, host side (docs/VM.md): the `Hypervisor` trait and its backends, the hybrid
//! vsock client, the Docker API relay and the published-port forwarder.

pub mod control;
pub mod hvsock;
pub mod hypervisor;
pub mod qemu;
pub mod relay;
pub mod supervisor;

pub use hypervisor::{Hypervisor, VmConfig, VmError, VmResult, VmState};
