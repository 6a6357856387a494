//! The desktop app's settings file (JSON), written atomically.
//!
//! Location: `$BERTH_DESKTOP_CONFIG`, else `$XDG_CONFIG_HOME/berth/desktop.json`,
//! else `~/.config/berth/desktop.json`.  Unknown keys are kept when the file
//! is rewritten by an older app; missing keys take their defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{HostError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Settings {
    /// "system", "light" or "dark".
    pub theme: String,
    /// The engine to manage: `unix:///path` (or a bare path). Empty: `DOCKER_HOST`,
    /// else the default socket.
    pub docker_host: String,
    /// Start the engine when the app starts and finds it stopped.
    pub start_engine: bool,
    /// Start the app (hidden, in the tray) at login: `autostart` writes the platform's entry.
    pub start_at_login: bool,
    /// Hide the window to the tray instead of quitting when it is closed.
    pub close_to_tray: bool,
    /// Ask before deleting containers, images, volumes and networks.
    pub confirm_deletes: bool,
    /// berthd's log file, shown in Troubleshoot.
    pub engine_log: String,
    /// Everything else, kept as it was.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

pub const DEFAULT_SOCKET: &str = "/run/berth/docker.sock";
pub const DEFAULT_ENGINE_LOG: &str = "/var/log/berth/berthd.log";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            theme: "system".into(),
            docker_host: String::new(),
            start_engine: true,
            start_at_login: false,
            close_to_tray: true,
            confirm_deletes: true,
            engine_log: DEFAULT_ENGINE_LOG.into(),
            extra: Default::default(),
        }
    }
}

impl Settings {
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("BERTH_DESKTOP_CONFIG") {
            return PathBuf::from(p);
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        base.join("berth").join("desktop.json")
    }

    /// Reads the file; a missing file gives the defaults, a broken one an error
    /// (so the user learns about it instead of losing their settings).
    pub fn load(path: &Path) -> Result<Settings> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                HostError::io(format!(
                    "the settings file {} is not valid: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(e) => Err(HostError::io(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| HostError::io(format!("cannot create {}: {e}", dir.display())))?;
        let tmp = path.with_extension(format!("json.tmp{}", std::process::id()));
        let data = serde_json::to_vec_pretty(self).expect("settings serialize");
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                HostError::io(format!("cannot write {}: {e}", path.display()))
            })
    }

    /// Checks values the UI sends before they are saved.
    pub fn validate(&self) -> Result<()> {
        if !["system", "light", "dark"].contains(&self.theme.as_str()) {
            return Err(HostError::invalid(format!(
                "unknown theme {:?}",
                self.theme
            )));
        }
        let h = self.docker_host.trim();
        let known = ["unix://", "/", "tcp://", "http://"]
            .iter()
            .any(|p| h.starts_with(p));
        if !h.is_empty() && !known {
            return Err(HostError::invalid(format!(
                "engine address {h:?} must be unix:///path/to/socket, /path/to/socket or tcp://host:port"
            )));
        }
        Ok(())
    }
}

/// The engine address to use: the setting, else `DOCKER_HOST`, else the
/// default socket.  Returned as `unix:///...` or `tcp://...`.
pub fn resolve_docker_host(setting: &str, env: Option<&str>) -> String {
    let pick = |s: &str| -> Option<String> {
        let s = s.trim();
        if s.is_empty() {
            None
        } else if s.starts_with('/') {
            Some(format!("unix://{s}"))
        } else {
            Some(s.to_string())
        }
    };
    pick(setting)
        .or_else(|| env.and_then(pick))
        .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/desktop.json");
        let s = Settings::load(&p).unwrap();
        assert_eq!(s, Settings::default());
        let mut s2 = s.clone();
        s2.theme = "dark".into();
        s2.extra.insert("future".into(), serde_json::json!(1));
        s2.save(&p).unwrap();
        let back = Settings::load(&p).unwrap();
        assert_eq!(back, s2);
        assert_eq!(back.extra["future"], 1);
    }

    #[test]
    fn broken_file_is_an_error_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("desktop.json");
        std::fs::write(&p, "{nope").unwrap();
        let e = Settings::load(&p).unwrap_err();
        assert!(e.message.contains("is not valid"), "{}", e.message);
    }

    #[test]
    fn partial_file_takes_defaults() {
        let s: Settings = serde_json::from_str(r#"{"theme":"light"}"#).unwrap();
        assert_eq!(s.theme, "light");
        assert!(s.start_engine);
    }

    #[test]
    fn validation() {
        let mut s = Settings {
            theme: "pink".into(),
            ..Default::default()
        };
        assert!(s.validate().is_err());
        s.theme = "dark".into();
        s.docker_host = "ftp://x".into();
        assert!(s.validate().is_err());
        s.docker_host = "/tmp/d.sock".into();
        assert!(s.validate().is_ok());
    }

    #[test]
    fn docker_host_resolution() {
        assert_eq!(
            resolve_docker_host("", None),
            "unix:///run/berth/docker.sock"
        );
        assert_eq!(
            resolve_docker_host("", Some("unix:///tmp/a.sock")),
            "unix:///tmp/a.sock"
        );
        assert_eq!(
            resolve_docker_host("/tmp/b.sock", Some("unix:///tmp/a.sock")),
            "unix:///tmp/b.sock"
        );
        assert_eq!(
            resolve_docker_host("  ", Some("  ")),
            "unix:///run/berth/docker.sock"
        );
    }
}
