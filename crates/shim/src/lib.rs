//! berth-shim: one process per container.
//!
//! The shim runs the OCI runtime (runc), owns the container's stdio or pty, writes the
//! container log in Docker's json-file format, reaps the container's init and records its
//! exit status. berthd talks to it over `<state-dir>/shim.sock`; the wire types live in
//! [`protocol`] and the async client (feature `client`) in `client`.

pub mod protocol;

#[cfg(feature = "client")]
pub mod client;
