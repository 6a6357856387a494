//! `docker cp` (archive HEAD/GET/PUT), `docker export` and `docker diff`.
//!
//! Copies go through the container's overlay root on the host (mounted for the duration when
//! the container is stopped). Not through `/proc/<pid>/root`: path canonicalization (tar's
//! unpack does it) would resolve that magic link to the host's root.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use super::rootfs::{resolve_in_root, Rootfs};
use super::{Container, ContainerService};
use crate::error::{EngineError, Result};

/// Keeps a stopped container's rootfs mounted while a copy runs.
pub struct RootGuard {
    pub root: PathBuf,
    unmount: Option<Rootfs>,
}

impl Drop for RootGuard {
    fn drop(&mut self) {
        if let Some(r) = self.unmount.take() {
            let _ = r.unmount();
        }
    }
}

/// Go's os.FileMode bits as Docker encodes them in the path stat header.
fn go_mode(md: &std::fs::Metadata) -> u32 {
    let ft = md.file_type();
    let mut m = md.mode() & 0o777;
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        m |= 1 << 31;
    }
    if ft.is_symlink() {
        m |= 1 << 27;
    }
    if ft.is_fifo() {
        m |= 1 << 25;
    }
    if ft.is_socket() {
        m |= 1 << 24;
    }
    if ft.is_block_device() {
        m |= 1 << 26;
    }
    if ft.is_char_device() {
        m |= (1 << 26) | (1 << 21);
    }
    if md.mode() & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if md.mode() & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if md.mode() & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

impl ContainerService {
    pub async fn root_for_copy(&self, c: &Arc<Container>) -> Result<RootGuard> {
        let r = c.rec.read().await.clone();
        let rootfs = Rootfs::new(&self.dir(&r.id));
        let was = rootfs.is_mounted();
        if !was {
            let lowers = self.images.layer_dirs(&r.image_id).await?;
            rootfs.mount(&lowers)?;
        }
        Ok(RootGuard {
            root: rootfs.merged.clone(),
            unmount: (!was).then_some(rootfs),
        })
    }

    /// The stat Docker sends in `X-Docker-Container-Path-Stat`, for `path` itself: as with
    /// dockerd, a symlink in the last component is not followed (`cp` copies the link; its
    /// `linkTarget` is where it resolves in the container) unless the path ends in `/` or
    /// `/.`.
    pub async fn path_stat(
        &self,
        c: &Arc<Container>,
        path: &str,
    ) -> Result<(RootGuard, PathBuf, Value)> {
        self.stat_in_root(c, path, false).await
    }

    async fn stat_in_root(
        &self,
        c: &Arc<Container>,
        path: &str,
        follow_last: bool,
    ) -> Result<(RootGuard, PathBuf, Value)> {
        let g = self.root_for_copy(c).await?;
        let name = c.rec.read().await.name.clone();
        let resolved = resolve_in_root(&g.root, path);
        let base = Path::new(path).file_name().filter(|_| {
            !follow_last && !path.ends_with('/') && !path.ends_with("/.") && !path.ends_with("..")
        });
        let host = match (base, Path::new(path).parent()) {
            (Some(b), Some(parent)) => {
                resolve_in_root(&g.root, &parent.display().to_string()).join(b)
            }
            _ => resolved.clone(),
        };
        let md = std::fs::symlink_metadata(&host).map_err(|_| {
            EngineError::NotFound(format!(
                "Could not find the file {path} in container {name}"
            ))
        })?;
        let link = if md.file_type().is_symlink() {
            let rel = resolved.strip_prefix(&g.root).unwrap_or(Path::new(""));
            format!("/{}", rel.display())
        } else {
            String::new()
        };
        let base = Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into());
        let mtime = chrono::DateTime::from_timestamp(md.mtime(), md.mtime_nsec() as u32)
            .map(crate::util::rfc3339_nano)
            .unwrap_or_default();
        let stat = json!({"name": base, "size": md.len(), "mode": go_mode(&md), "mtime": mtime, "linkTarget": link});
        Ok((g, host, stat))
    }

    /// A tar of `path` (a file or a directory, named by its base name) into `out`.
    pub fn archive_path(host: &Path, name_in_tar: &str, out: impl io::Write) -> io::Result<()> {
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let md = std::fs::symlink_metadata(host)?;
        if md.is_dir() {
            b.append_dir_all(name_in_tar, host)?;
        } else {
            b.append_path_with_name(host, name_in_tar)?;
        }
        b.into_inner()?.flush()
    }

    /// Extract a tar into the directory `path` of the container.
    pub async fn extract_into(
        &self,
        c: &Arc<Container>,
        path: &str,
        tar_path: PathBuf,
    ) -> Result<()> {
        // The destination is followed to the end, as dockerd's extraction does.
        let (g, host, _) = self.stat_in_root(c, path, true).await?;
        if !host.is_dir() {
            return Err(EngineError::invalid(format!(
                "extraction point is not a directory: {path}"
            )));
        }
        let res = tokio::task::spawn_blocking(move || -> io::Result<()> {
            let src = crate::content::layer::open_decompressed(&tar_path)?;
            let mut ar = tar::Archive::new(src);
            ar.set_preserve_permissions(true);
            ar.set_preserve_ownerships(true);
            ar.set_overwrite(true);
            ar.unpack(&host)
        })
        .await
        .map_err(EngineError::internal)?;
        drop(g);
        res.map_err(|e| EngineError::invalid(format!("extracting the archive: {e}")))
    }

    /// `docker diff`: Kind 0 modified, 1 added, 2 deleted, from the overlay upper dir.
    pub async fn changes(&self, c: &Arc<Container>) -> Result<Vec<Value>> {
        let r = c.rec.read().await.clone();
        let upper = Rootfs::new(&self.dir(&r.id)).upper;
        let lowers = self.images.layer_dirs(&r.image_id).await?;
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            // Returns whether anything was reported at or below `rel`. A directory that only
            // holds runc's mount-point stubs (/etc/hosts, /proc, ...) is not a change.
            fn walk(upper: &Path, rel: &Path, lowers: &[PathBuf], out: &mut Vec<Value>) -> bool {
                let Ok(rd) = std::fs::read_dir(upper.join(rel)) else {
                    return false;
                };
                let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
                names.sort();
                let mut any = false;
                for n in names {
                    let r = rel.join(&n);
                    let Ok(md) = std::fs::symlink_metadata(upper.join(&r)) else {
                        continue;
                    };
                    let path = format!("/{}", r.display());
                    let stub = (matches!(
                        path.as_str(),
                        "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
                    ) && md.is_file()
                        && md.len() == 0)
                        || (matches!(path.as_str(), "/proc" | "/sys" | "/dev") && md.is_dir());
                    if crate::content::layer::is_whiteout(&md) {
                        out.push(json!({"Path": path, "Kind": 2}));
                        any = true;
                        continue;
                    }
                    let in_lower = lowers
                        .iter()
                        .any(|l| std::fs::symlink_metadata(l.join(&r)).is_ok());
                    if md.is_dir() {
                        let pos = out.len();
                        let below = walk(upper, &r, lowers, out);
                        if below || (!in_lower && !stub) {
                            out.insert(
                                pos,
                                json!({"Path": path, "Kind": if in_lower { 0 } else { 1 }}),
                            );
                            any = true;
                        }
                    } else if !stub {
                        out.push(json!({"Path": path, "Kind": if in_lower { 0 } else { 1 }}));
                        any = true;
                    }
                }
                any
            }
            let _ = walk(&upper, Path::new(""), &lowers, &mut out);
            out
        })
        .await
        .map_err(EngineError::internal)
    }
}
