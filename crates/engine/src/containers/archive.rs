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

/// Keeps a stopped container's rootfs mounted while a copy runs, and the container's volumes
/// and binds mounted in a private view of it (see [`MountView`]).
pub struct RootGuard {
    pub root: PathBuf,
    view: Option<MountView>,
    unmount: Option<Rootfs>,
    container: Option<Arc<Container>>,
}

impl Drop for RootGuard {
    fn drop(&mut self) {
        // The view's mounts sit on the rootfs: they go first.
        drop(self.view.take());
        let Some(r) = self.unmount.take() else { return };
        // A copy can outlive its request (a client that does not read the archive): the
        // container may have been started meanwhile on this very mount. Unmount only when no
        // lifecycle operation runs and the container is not up; otherwise the mount stays
        // theirs (start reuses a mounted rootfs; exit and rm unmount it).
        let Some(c) = self.container.take() else {
            let _ = r.unmount();
            return;
        };
        let Ok(_op) = c.op.try_lock() else { return };
        let down = c
            .rec
            .try_read()
            .map(|rec| {
                !rec.state.status.is_alive() && rec.state.status != super::Status::Restarting
            })
            .unwrap_or(false);
        if down {
            let _ = r.unmount();
        }
    }
}

/// The container's filesystem as its processes see it, for a copy: the rootfs bound on a
/// directory of its own, made private, with each volume and bind mounted at its destination,
/// as dockerd's `mountVolumes` does for `docker cp`. Private so that nothing propagates to
/// the rootfs mount a running container was made from, nor to the container.
struct MountView {
    dir: PathBuf,
    /// Mounted targets, in mount order (undone in reverse).
    mounted: Vec<PathBuf>,
}

impl Drop for MountView {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        for t in self.mounted.iter().rev() {
            if let Err(e) = umount2(t, MntFlags::MNT_DETACH) {
                tracing::warn!(target = %t.display(), error = %e, "unmounting a copy view");
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl MountView {
    fn new(merged: &Path, dir: PathBuf, mounts: &[super::MountPoint]) -> Result<Self> {
        use nix::mount::{mount, MsFlags};
        std::fs::create_dir_all(&dir)?;
        let mut view = MountView {
            dir: dir.clone(),
            mounted: Vec::new(),
        };
        let err = |what: &str, e: nix::errno::Errno| {
            EngineError::Internal(format!(
                "preparing the container's mounts for a copy: {what}: {e}"
            ))
        };
        mount(
            Some(merged),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err("rootfs", e))?;
        view.mounted.push(dir.clone());
        mount(
            None::<&str>,
            &dir,
            None::<&str>,
            MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| err("rootfs", e))?;
        // Parents before children, as dockerd sorts mounts by depth.
        let mut ms: Vec<&super::MountPoint> = mounts
            .iter()
            .filter(|m| m.kind != "tmpfs" && !m.source.is_empty())
            .collect();
        ms.sort_by_key(|m| Path::new(&m.destination).components().count());
        for m in ms {
            let src = Path::new(&m.source);
            let Ok(smd) = std::fs::metadata(src) else {
                tracing::warn!(source = %m.source, "mount source gone; not in the copy view");
                continue;
            };
            // Resolved inside the view, so a symlink in the image cannot point it outside.
            let target = resolve_in_root(&dir, &m.destination);
            if smd.is_dir() {
                std::fs::create_dir_all(&target)?;
            } else if std::fs::symlink_metadata(&target).is_err() {
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p)?;
                }
                std::fs::File::create(&target)?;
            }
            mount(
                Some(src),
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| err(&m.destination, e))?;
            view.mounted.push(target.clone());
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_PRIVATE | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(|e| err(&m.destination, e))?;
            if !m.rw {
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(|e| err(&m.destination, e))?;
            }
        }
        Ok(view)
    }
}

/// Numbers the copy views of this process (each copy gets a directory of its own).
static COPY_VIEWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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
    /// The container's filesystem for `docker cp`: its rootfs (mounted for the duration when
    /// the container is not running) with its volumes and binds where the container has them.
    pub async fn root_for_copy(&self, c: &Arc<Container>) -> Result<RootGuard> {
        self.root_for_copy_with(c, true).await
    }

    /// [`Self::root_for_copy`]; without `with_mounts`, the rootfs alone (`docker export`).
    pub async fn root_for_copy_with(
        &self,
        c: &Arc<Container>,
        with_mounts: bool,
    ) -> Result<RootGuard> {
        let r = c.rec.read().await.clone();
        let rootfs = Rootfs::new(&self.dir(&r.id));
        let was = rootfs.is_mounted();
        if !was {
            let lowers = self.images.layer_dirs(&r.image_id).await?;
            rootfs.mount(&lowers)?;
        }
        let mut g = RootGuard {
            root: rootfs.merged.clone(),
            view: None,
            unmount: (!was).then_some(rootfs),
            container: Some(c.clone()),
        };
        if with_mounts && r.mounts.iter().any(|m| m.kind != "tmpfs") {
            let n = COPY_VIEWS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Under /run, away from the container's directory: removing that (rm -rf) while
            // a copy runs must not reach into the volumes mounted here.
            let dir = self.run_dir().join("cp").join(format!(
                "{}-{}-{n}",
                &r.id[..r.id.len().min(12)],
                std::process::id()
            ));
            let merged = g.root.clone();
            let mounts = r.mounts.clone();
            // On error the partial view is undone by its Drop, then the guard's.
            let view = tokio::task::spawn_blocking(move || MountView::new(&merged, dir, &mounts))
                .await
                .map_err(EngineError::internal)??;
            g.root = view.dir.clone();
            g.view = Some(view);
        }
        Ok(g)
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
