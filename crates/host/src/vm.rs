//! Settings → Virtual machine: the VM's state and resources (crates/vm's `settings.json` and
//! `state.json` under `~/.berth/vm`, shared with `berth vm`). The values apply at the VM's
//! next start, as Docker Desktop's resource settings do.

use serde_json::{json, Value};

use crate::error::{HostError, Result};

#[cfg(unix)]
pub fn status() -> Result<Value> {
    use berth_vm::supervisor::{Paths, StateFile, VmSettings};
    let paths = Paths::from_env();
    let settings = VmSettings::load(&paths);
    let st = StateFile::read(&paths);
    // "Exists" once it has been started once (it has a disk) or configured.
    let exists = paths.data_disk().exists() || paths.settings_file().exists();
    let image = berth_vm::supervisor::find_image(&paths, &settings);
    Ok(json!({
        "exists": exists,
        "state": st.as_ref().map(|s| s.effective_state()).unwrap_or(berth_vm::VmState::Stopped),
        "bootMs": st.as_ref().and_then(|s| s.boot_ms),
        "socket": paths.socket().display().to_string(),
        "ports": st.as_ref().map(|s| s.ports.clone()).unwrap_or_default(),
        "message": st.as_ref().and_then(|s| s.message.clone()),
        "image": image.as_ref().ok().map(|(k, _)| k.display().to_string()),
        "imageProblem": image.err().map(|e| e.to_string()),
        "settings": {
            "cpus": settings.cpus,
            "memoryMib": settings.memory_mib,
            "diskGib": settings.disk_gib,
        },
    }))
}

/// Save CPUs / memory / disk; checked against the host's CPUs and sane bounds.
#[cfg(unix)]
pub fn set(args: &Value) -> Result<Value> {
    use berth_vm::supervisor::{Paths, VmSettings};
    let paths = Paths::from_env();
    let mut s = VmSettings::load(&paths);
    let patch = args
        .get("settings")
        .ok_or_else(|| HostError::invalid("missing argument \"settings\""))?;
    let num = |k: &str| patch.get(k).and_then(Value::as_u64);
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if let Some(c) = num("cpus") {
        if c == 0 || c > host_cpus {
            return Err(HostError::invalid(format!(
                "CPUs must be between 1 and {host_cpus} (this machine's)"
            )));
        }
        s.cpus = c as u32;
    }
    if let Some(m) = num("memoryMib") {
        if !(512..=1 << 20).contains(&m) {
            return Err(HostError::invalid("memory must be at least 512 MiB"));
        }
        s.memory_mib = m as u32;
    }
    if let Some(d) = num("diskGib") {
        if !(4..=4096).contains(&d) {
            return Err(HostError::invalid(
                "the disk must be between 4 and 4096 GiB",
            ));
        }
        if paths.data_disk().exists() && d < u64::from(s.disk_gib) {
            return Err(HostError::invalid(
                "the VM's disk exists: it can grow, not shrink",
            ));
        }
        s.disk_gib = d as u32;
    }
    s.save(&paths)
        .map_err(|e| HostError::io(format!("cannot save the VM settings: {e:#}")))?;
    status()
}

#[cfg(not(unix))]
pub fn status() -> Result<Value> {
    Ok(
        json!({"exists": false, "state": "stopped", "settings": null,
              "imageProblem": "the VM backend for this platform is managed by the berth CLI"}),
    )
}

#[cfg(not(unix))]
pub fn set(_args: &Value) -> Result<Value> {
    Err(HostError::invalid(
        "VM settings are not available on this platform yet",
    ))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn settings_are_saved_and_checked() {
        let d = tempfile::tempdir().unwrap();
        // Only this test reads BERTH_HOME (nextest runs each test in its own process).
        std::env::set_var("BERTH_HOME", d.path());
        let st = status().unwrap();
        assert_eq!(st["exists"], false);
        assert_eq!(st["state"], "stopped");
        let st = set(&json!({"settings": {"cpus": 1, "memoryMib": 1024, "diskGib": 16}})).unwrap();
        assert_eq!(st["exists"], true);
        assert_eq!(
            st["settings"],
            json!({"cpus": 1, "memoryMib": 1024, "diskGib": 16})
        );
        // The CLI reads the same file.
        let s = berth_vm::supervisor::VmSettings::load(&berth_vm::supervisor::Paths::from_env());
        assert_eq!((s.cpus, s.memory_mib, s.disk_gib), (1, 1024, 16));
        let e = set(&json!({"settings": {"cpus": 100000}})).unwrap_err();
        assert!(
            e.message.contains("CPUs must be between 1 and"),
            "{}",
            e.message
        );
        let e = set(&json!({"settings": {"memoryMib": 100}})).unwrap_err();
        assert!(e.message.contains("512 MiB"));
    }
}
