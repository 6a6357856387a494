//! Settings → "Start Berth at login": the platform's autostart entry for the desktop app,
//! started hidden (`--hidden`: the tray icon only, no window).
//!
//! - Linux: an XDG autostart entry, `$XDG_CONFIG_HOME/autostart/berth.desktop`
//!   (`~/.config/autostart`), which GNOME, KDE, Xfce and others read at login.
//! - macOS: a LaunchAgent, `~/Library/LaunchAgents/dev.berth.desktop.plist`.
//! - Windows: the `HKCU\Software\Microsoft\Windows\CurrentVersion\Run` value `Berth`.

use std::path::{Path, PathBuf};

use crate::error::{HostError, Result};

/// Where the entry lives on this platform (Linux and macOS; Windows uses the registry).
pub fn entry_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if cfg!(target_os = "macos") {
        return home.map(|h| h.join("Library/LaunchAgents/dev.berth.desktop.plist"));
    }
    if cfg!(windows) {
        return None;
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")))
        .map(|c| c.join("autostart").join("berth.desktop"))
}

/// The XDG desktop entry that starts `exe` hidden at login.
pub fn desktop_entry(exe: &Path) -> String {
    format!(
        "[Desktop Entry]\nType=Application\nName=Berth\nComment=Containers, images, volumes and networks, from the tray\nExec=\"{}\" --hidden\nIcon=berth\nTerminal=false\nCategories=Development;\nX-GNOME-Autostart-enabled=true\n",
        exe.display()
    )
}

/// The LaunchAgent that starts `exe` hidden at login.
pub fn launch_agent(exe: &Path) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist version=\"1.0\"><dict>\n  <key>Label</key><string>dev.berth.desktop</string>\n  <key>ProgramArguments</key><array><string>{}</string><string>--hidden</string></array>\n  <key>RunAtLoad</key><true/>\n</dict></plist>\n",
        exe.display()
    )
}

pub fn is_enabled() -> bool {
    entry_path().is_some_and(|p| p.is_file())
}

/// Write or remove the entry for `exe` (the running app's binary).
pub fn set(enabled: bool, exe: &Path) -> Result<()> {
    if cfg!(windows) {
        return set_windows(enabled, exe);
    }
    let path = entry_path()
        .ok_or_else(|| HostError::io("no home directory: cannot set start at login"))?;
    if !enabled {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HostError::io(format!(
                "cannot remove {}: {e}",
                path.display()
            ))),
            _ => Ok(()),
        };
    }
    let body = if cfg!(target_os = "macos") {
        launch_agent(exe)
    } else {
        desktop_entry(exe)
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| HostError::io(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, body)
        .map_err(|e| HostError::io(format!("cannot write {}: {e}", path.display())))
}

fn set_windows(enabled: bool, exe: &Path) -> Result<()> {
    const KEY: &str = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Run";
    let mut cmd = std::process::Command::new("reg");
    if enabled {
        cmd.args(["add", KEY, "/v", "Berth", "/t", "REG_SZ", "/f", "/d"])
            .arg(format!("\"{}\" --hidden", exe.display()));
    } else {
        cmd.args(["delete", KEY, "/v", "Berth", "/f"]);
    }
    let out = cmd
        .output()
        .map_err(|e| HostError::io(format!("cannot run reg.exe: {e}")))?;
    if enabled && !out.status.success() {
        return Err(HostError::io(format!(
            "reg add failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn entry_starts_the_app_hidden() {
        let e = desktop_entry(Path::new("/usr/bin/berth-desktop"));
        assert!(e.starts_with("[Desktop Entry]\n"));
        assert!(e.contains("Exec=\"/usr/bin/berth-desktop\" --hidden\n"));
        assert!(e.contains("Type=Application\n"));
        let p = launch_agent(Path::new(
            "/Applications/Berth.app/Contents/MacOS/berth-desktop",
        ));
        assert!(p.contains("<string>--hidden</string>") && p.contains("RunAtLoad"));
    }
}
