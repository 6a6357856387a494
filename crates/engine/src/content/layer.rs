//! Layer tars: unpack into a directory overlayfs can use (whiteouts converted), and pack a
//! directory of changes back into a tar with Docker's whiteout files.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Counts and hashes the bytes that pass through: the uncompressed digest is the layer's DiffID.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Open a possibly-compressed layer tar (gzip detected by magic, else plain tar).
pub fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic)?;
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(0))?;
    let f = io::BufReader::with_capacity(256 * 1024, f);
    if n >= 2 && magic[0] == 0x1f && magic[1] == 0x8b {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else if n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd-compressed layers are not supported",
        ))
    } else {
        Ok(Box::new(f))
    }
}

/// Result of unpacking a layer.
pub struct Unpacked {
    pub diff_id: String,
    /// Bytes of regular-file content in the layer.
    pub size: u64,
}

/// Unpack the tar read from `src` into `dest` (which must exist), converting Docker whiteouts
/// into overlayfs ones. Returns the sha256 of the uncompressed stream.
pub fn unpack<R: Read>(src: R, dest: &Path) -> io::Result<Unpacked> {
    let mut hr = HashingReader {
        inner: src,
        hasher: Sha256::new(),
    };
    let mut size = 0u64;
    {
        let mut ar = tar::Archive::new(&mut hr);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(true);
        ar.set_overwrite(true);
        for entry in ar.entries()? {
            let mut e = entry?;
            let path = sanitize(&e.path()?)?;
            if path.as_os_str().is_empty() {
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parent = dest.join(path.parent().unwrap_or(Path::new("")));
            if name == OPAQUE {
                std::fs::create_dir_all(&parent)?;
                set_xattr(&parent, "trusted.overlay.opaque", b"y")?;
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                std::fs::create_dir_all(&parent)?;
                let target = parent.join(hidden);
                remove_any(&target)?;
                mknod(&target, libc::S_IFCHR, 0)?;
                continue;
            }
            let kind = e.header().entry_type();
            if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                let target = dest.join(&path);
                if let Some(p) = target.parent() {
                    std::fs::create_dir_all(p)?;
                }
                remove_any(&target)?;
                let mode = e.header().mode()? & 0o7777;
                let (ty, dev) = if kind.is_fifo() {
                    (libc::S_IFIFO, 0)
                } else {
                    let major = e.header().device_major()?.unwrap_or(0);
                    let minor = e.header().device_minor()?.unwrap_or(0);
                    let ty = if kind.is_character_special() {
                        libc::S_IFCHR
                    } else {
                        libc::S_IFBLK
                    };
                    (ty, libc::makedev(major, minor))
                };
                mknod(&target, ty | mode, dev)?;
                let uid = e.header().uid()? as u32;
                let gid = e.header().gid()? as u32;
                let _ = std::os::unix::fs::lchown(&target, Some(uid), Some(gid));
                continue;
            }
            if kind.is_file() || kind == tar::EntryType::Continuous {
                size += e.header().size().unwrap_or(0);
            }
            // A lower layer's file may stand where a directory is now wanted, or the reverse.
            let target = dest.join(&path);
            if let Ok(md) = std::fs::symlink_metadata(&target) {
                if !(kind.is_dir() && md.is_dir()) {
                    remove_any(&target)?;
                }
            }
            e.unpack_in(dest)?;
        }
    }
    // Read to EOF so trailing padding is hashed as the tar's digest covers it.
    io::copy(&mut hr, &mut io::sink())?;
    Ok(Unpacked {
        diff_id: format!("sha256:{}", hex::encode(hr.hasher.finalize())),
        size,
    })
}

fn sanitize(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("layer entry escapes the root: {}", p.display()),
                ))
            }
        }
    }
    Ok(out)
}

fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let c = cpath(p)?;
    let n = CString::new(name).map_err(|_| io::Error::other("bad xattr name"))?;
    // SAFETY: both strings are valid and NUL-terminated; value points to `value.len()` bytes.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = cpath(p).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings; buf is writable for buf.len() bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    Some(buf[..r as usize].to_vec())
}

/// Whether `md` is an overlayfs whiteout (a 0/0 character device).
pub fn is_whiteout(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Pack a directory of changes (an overlay upper dir or an unpacked layer) into a tar written to
/// `out`, turning overlay whiteouts back into Docker's `.wh.` files.
pub fn pack_dir<W: io::Write>(dir: &Path, out: W) -> io::Result<W> {
    pack_dir_filtered(dir, out, &|_, _| false)
}

/// As `pack_dir`, leaving out entries for which `skip(relative path, metadata)` is true.
pub fn pack_dir_filtered<W: io::Write>(
    dir: &Path,
    out: W,
    skip: &dyn Fn(&Path, &std::fs::Metadata) -> bool,
) -> io::Result<W> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    walk(&mut b, dir, Path::new(""), skip)?;
    b.into_inner()
}

fn walk<W: io::Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path, &std::fs::Metadata) -> bool,
) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.sort();
    if !rel.as_os_str().is_empty()
        && get_xattr(&dir, "trusted.overlay.opaque").as_deref() == Some(b"y")
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, rel.join(OPAQUE), io::empty())?;
    }
    for n in names {
        let r = rel.join(&n);
        let p = root.join(&r);
        let md = std::fs::symlink_metadata(&p)?;
        if skip(&r, &md) && !(md.is_dir() && std::fs::read_dir(&p)?.next().is_some()) {
            continue;
        }
        if is_whiteout(&md) {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(0);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let wh = format!("{WHITEOUT_PREFIX}{}", n.to_string_lossy());
            b.append_data(&mut h, rel.join(wh), io::empty())?;
            continue;
        }
        b.append_path_with_name(&p, &r)?;
        if md.is_dir() {
            walk(b, root, &r, skip)?;
        }
    }
    Ok(())
}

/// Passes bytes through to `out` as they are read.
struct TeeReader<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: io::Write> Read for TeeReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Hashes and counts what is written through it.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub size: u64,
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A locally made layer: unpacked into `dest` and gzip-compressed into `gz_path` in one pass.
pub struct Ingested {
    pub unpacked: Unpacked,
    pub blob_digest: String,
    pub blob_size: u64,
}

/// Ingest a layer tar (plain or gzip) made locally (import, load, commit, build): unpack it and
/// keep a gzip copy so it can be pushed and saved with a stable digest.
pub fn ingest(src: Box<dyn Read + Send>, dest: &Path, gz_path: &Path) -> io::Result<Ingested> {
    let f = std::fs::File::create(gz_path)?;
    let hw = HashingWriter {
        inner: io::BufWriter::new(f),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut gz = flate2::write::GzEncoder::new(hw, flate2::Compression::fast());
    let unpacked = {
        let tee = TeeReader {
            inner: src,
            out: &mut gz,
        };
        unpack(tee, dest)?
    };
    let mut hw = gz.finish()?;
    io::Write::flush(&mut hw)?;
    let f = hw.inner.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(Ingested {
        unpacked,
        blob_digest: format!("sha256:{}", hex::encode(hw.hasher.finalize())),
        blob_size: hw.size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpack_hashes_and_converts_whiteouts() {
        let data = tar_with(&[
            ("a/file", b"hello"),
            ("a/.wh.gone", b""),
            ("b/.wh..wh..opq", b""),
        ]);
        let d = tempfile::tempdir().unwrap();
        let u = unpack(io::Cursor::new(data.clone()), d.path()).unwrap();
        assert_eq!(u.diff_id, crate::util::sha256_digest(&data));
        assert_eq!(u.size, 5);
        assert_eq!(std::fs::read(d.path().join("a/file")).unwrap(), b"hello");
        let md = std::fs::symlink_metadata(d.path().join("a/gone")).unwrap();
        assert!(is_whiteout(&md));
        // Packing gives the Docker whiteout back.
        let packed = pack_dir(d.path(), Vec::new()).unwrap();
        let mut ar = tar::Archive::new(io::Cursor::new(packed));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&"a/.wh.gone".to_string()), "{names:?}");
        assert!(names.contains(&"a/file".to_string()));
    }

    #[test]
    fn rejects_escaping_paths() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        // set_path refuses "..", so write the name bytes directly.
        h.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"../evil");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let data = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        assert!(unpack(io::Cursor::new(data), d.path()).is_err());
    }
}
