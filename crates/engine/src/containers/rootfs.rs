//! The container's root filesystem: overlayfs over the image's unpacked layers, with the
//! container's own upper dir kept across stop/start and removed with the container.

use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{EngineError, Result};

pub struct Rootfs {
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl Rootfs {
    pub fn new(container_dir: &Path) -> Self {
        Self {
            upper: container_dir.join("upper"),
            work: container_dir.join("work"),
            merged: container_dir.join("rootfs"),
        }
    }

    pub fn is_mounted(&self) -> bool {
        // An overlay mount has a device of its own: two stats instead of reading (and
        // parsing) the whole mount table.
        let parent = self.merged.parent().unwrap_or(&self.merged);
        match (std::fs::metadata(&self.merged), std::fs::metadata(parent)) {
            (Ok(m), Ok(p)) if m.dev() != p.dev() => true,
            (Ok(_), Ok(_)) => false,
            _ => is_mountpoint(&self.merged),
        }
    }

    /// Mount `lowers` (lowest first) under the container's upper dir. Idempotent.
    pub fn mount(&self, lowers: &[PathBuf]) -> Result<()> {
        self.mount_opts(lowers, false)
    }

    /// [`Rootfs::mount`]; `volatile` for a container whose writable layer does not outlive
    /// it (`--rm`): overlayfs then never syncs the upper filesystem, which its unmount
    /// otherwise does for the whole filesystem under the data root (podman does the same for
    /// `--rm`). Kernels without the option (< 5.10) mount without it.
    pub fn mount_opts(&self, lowers: &[PathBuf], volatile: bool) -> Result<()> {
        if self.is_mounted() {
            return Ok(());
        }
        for d in [&self.upper, &self.work, &self.merged] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(d)?;
        }
        let empty;
        let lowers = if lowers.is_empty() {
            // An image with no layers (FROM scratch): overlay needs a lower dir; give it an empty one.
            empty = [self.upper.with_file_name("empty")];
            std::fs::create_dir_all(&empty[0])?;
            &empty[..]
        } else {
            lowers
        };
        if volatile {
            // A volatile mount that was not cleanly unmounted (the host went down) leaves
            // `work/incompat/volatile`, and overlayfs refuses the dirs until it is gone.
            let _ = std::fs::remove_dir_all(self.work.join("incompat"));
            if self.mount_with(lowers, ",volatile").is_ok() {
                return Ok(());
            }
        }
        self.mount_with(lowers, "")
    }

    fn mount_with(&self, lowers: &[PathBuf], extra: &str) -> Result<()> {
        // overlayfs lists the top layer first.
        let lower: Vec<String> = lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}{extra}",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        );
        if opts.len() < 4000 {
            mount(
                Some("overlay"),
                &self.merged,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(|e| EngineError::Internal(format!("mounting rootfs: {e}")))?;
            return Ok(());
        }
        // Too long for one page: name the layers relative to their common parent and let
        // mount(8) resolve them from there.
        let parent = lowers[0]
            .parent()
            .ok_or_else(|| EngineError::internal("layer without parent dir"))?;
        let rel: Vec<String> = lowers
            .iter()
            .rev()
            .map(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}{extra}",
            rel.join(":"),
            self.upper.display(),
            self.work.display()
        );
        let st = std::process::Command::new("mount")
            .current_dir(parent)
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&self.merged)
            .status()?;
        if !st.success() {
            return Err(EngineError::internal(format!(
                "mounting rootfs with {} layers failed",
                lowers.len()
            )));
        }
        Ok(())
    }

    pub fn unmount(&self) -> Result<()> {
        // Not a mount point (EINVAL) or no such dir (ENOENT): nothing mounted.
        match umount2(&self.merged, MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EBUSY) => umount2(&self.merged, MntFlags::MNT_DETACH)
                .map_err(|e| EngineError::Internal(format!("unmounting rootfs: {e}"))),
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(EngineError::Internal(format!("unmounting rootfs: {e}"))),
        }
    }
}

/// Whether `p` is a mount point (its device differs from its parent's, or it is listed in
/// /proc/self/mountinfo).
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(p) else {
        return false;
    };
    let want = canon.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|s| {
            s.lines()
                .any(|l| l.split(' ').nth(4).map(unescape_mount) == Some(want.clone()))
        })
        .unwrap_or(false)
}

fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Resolve `path` inside `root` following symlinks without ever leaving `root`
/// (as Docker's symlink.FollowSymlinkInScope does).
pub fn resolve_in_root(root: &Path, path: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    let mut parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(String::from)
        .rev()
        .collect();
    let mut hops = 0;
    while let Some(part) = parts.pop() {
        if part == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&part);
        let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::symlink_metadata(&host) {
            Ok(md) if md.file_type().is_symlink() && hops < 40 => {
                hops += 1;
                if let Ok(target) = std::fs::read_link(&host) {
                    let t = target.to_string_lossy().into_owned();
                    if t.starts_with('/') {
                        out = PathBuf::from("/");
                    }
                    for p in t.split('/').filter(|p| !p.is_empty() && *p != ".").rev() {
                        parts.push(p.to_string());
                    }
                }
            }
            _ => out = candidate,
        }
    }
    root.join(out.strip_prefix("/").unwrap_or(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_stay_in_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/real", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", r.join("real/up")).unwrap();
        assert_eq!(resolve_in_root(r, "/abs/dir"), r.join("real/dir"));
        assert_eq!(resolve_in_root(r, "/real/up/etc"), r.join("etc"));
        assert_eq!(resolve_in_root(r, "../../x"), r.join("x"));
    }
}
