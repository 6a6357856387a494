//! Optional timing notes for profiling: with `BERTH_SHIM_TIMING=<file>` in its environment
//! (berthd passes its own on), the shim appends `<unix µs> <id12> <event>` lines to that file
//! at each step of a container's life. Off (one branch per note) otherwise.

use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static SINK: OnceLock<Option<(std::path::PathBuf, String)>> = OnceLock::new();

/// Reads the environment once; `id` labels every line.
pub fn init(id: &str) {
    let _ = SINK.set(
        std::env::var_os("BERTH_SHIM_TIMING")
            .filter(|p| !p.is_empty())
            .map(|p| (p.into(), id[..id.len().min(12)].to_string())),
    );
}

/// Whether notes are written (to skip building their text otherwise).
pub fn enabled() -> bool {
    matches!(SINK.get(), Some(Some(_)))
}

pub fn note(event: &str) {
    let Some(Some((path, id))) = SINK.get() else {
        return;
    };
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(f, "{us} {id} {event}");
    }
}
