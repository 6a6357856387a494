//! COPY and ADD: sources from the context, another stage, an image or (ADD) an http URL;
//! Docker's destination rules; the layer is written straight from the files, no container.

use std::collections::HashSet;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{short, ImageRoot, State, Worker};
use crate::error::{EngineError, Result};

/// What to do with one source.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A file (or a symlink inside a copied directory) written at `dst`.
    File,
    /// A directory: its contents go under `dst`.
    Dir,
    /// ADD of a local tar archive: unpacked under `dst`.
    Extract,
}

#[derive(Debug, Clone)]
struct Item {
    src: PathBuf,
    /// Absolute path in the image, clean, without a trailing slash ("" is the root).
    dst: String,
    kind: Kind,
}

/// `/a/./b/../c/` → `/a/c` (always absolute, no trailing slash except for the root).
pub(super) fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A glob component (`*`, `?`, `[...]`) as a regex for one path segment.
fn glob_regex(p: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    let mut in_class = false;
    for c in p.chars() {
        match c {
            '*' if !in_class => re.push_str("[^/]*"),
            '?' if !in_class => re.push_str("[^/]"),
            '[' if !in_class => {
                in_class = true;
                re.push('[');
            }
            ']' if in_class => {
                in_class = false;
                re.push(']');
            }
            '!' if in_class && re.ends_with('[') => re.push('^'),
            '\\' | '^' | '$' | '.' | '|' | '+' | '(' | ')' | '{' | '}' if !in_class => {
                re.push('\\');
                re.push(c);
            }
            c => re.push(c),
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

/// The paths `src` names under `root` (globs expanded, symlinks followed within `root`).
fn match_source(root: &Path, src: &str) -> Result<Vec<PathBuf>> {
    let rel = clean_abs(src);
    let rel = rel.trim_start_matches('/');
    if !has_glob(rel) {
        let p = crate::containers::rootfs::resolve_in_root(root, rel);
        return Ok(if p.exists() { vec![p] } else { vec![] });
    }
    let mut cur = vec![root.to_path_buf()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        if has_glob(comp) {
            let re = glob_regex(comp)
                .ok_or_else(|| EngineError::invalid(format!("invalid pattern: {src}")))?;
            for d in &cur {
                let Ok(rd) = std::fs::read_dir(d) else {
                    continue;
                };
                let mut v: Vec<PathBuf> = rd
                    .flatten()
                    .filter(|e| re.is_match(&e.file_name().to_string_lossy()))
                    .map(|e| e.path())
                    .collect();
                v.sort();
                next.extend(v);
            }
        } else {
            next.extend(
                cur.iter()
                    .map(|d| d.join(comp))
                    .filter(|p| p.exists() || p.is_symlink()),
            );
        }
        cur = next;
    }
    Ok(cur)
}

/// Content and metadata of the sources (not their mtimes): the COPY/ADD part of the cache key.
fn checksum(root: &Path, srcs: &[PathBuf]) -> io::Result<String> {
    let mut h = Sha256::new();
    for src in srcs {
        h.update(
            src.strip_prefix(root)
                .unwrap_or(src)
                .to_string_lossy()
                .as_bytes(),
        );
        h.update([0]);
        let mut stack = vec![(src.clone(), true)];
        while let Some((p, top)) = stack.pop() {
            // Top-level sources are followed when they are symlinks, as Docker does.
            let md = if top {
                std::fs::metadata(&p)?
            } else {
                std::fs::symlink_metadata(&p)?
            };
            h.update(
                p.strip_prefix(src)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(md.mode().to_le_bytes());
            h.update(md.uid().to_le_bytes());
            h.update(md.gid().to_le_bytes());
            if md.is_dir() {
                let mut v: Vec<PathBuf> =
                    std::fs::read_dir(&p)?.flatten().map(|e| e.path()).collect();
                v.sort();
                v.reverse();
                stack.extend(v.into_iter().map(|p| (p, false)));
            } else if md.file_type().is_symlink() {
                h.update(std::fs::read_link(&p)?.to_string_lossy().as_bytes());
            } else if md.is_file() {
                h.update(md.len().to_le_bytes());
                let mut f = std::fs::File::open(&p)?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
            h.update([1]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A tar archive ADD unpacks: gzip'd, or plain with the ustar magic.
fn is_archive(p: &Path) -> bool {
    let mut b = [0u8; 262];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let mut n = 0;
    while n < b.len() {
        match f.read(&mut b[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) || (n >= 262 && &b[257..262] == b"ustar")
}

/// Fetch an `http://` URL (ADD): a plain HTTP/1.0 GET, so no chunked encoding to undo.
async fn fetch_http(url: &str, out: &Path) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).map_err(|e| EngineError::invalid(format!("{url}: {e}")))?;
    let host = u
        .host_str()
        .ok_or_else(|| EngineError::invalid(format!("no host in {url}")))?
        .to_string();
    let port = u.port_or_known_default().unwrap_or(80);
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    let fail =
        |e: &dyn std::fmt::Display| EngineError::invalid(format!("failed to GET {url}: {e}"));
    let conn = tokio::net::TcpStream::connect((host.as_str(), port));
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(30), conn)
        .await
        .map_err(|e| fail(&e))?
        .map_err(|e| fail(&e))?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: berth-builder\r\nAccept: */*\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| fail(&e))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.map_err(|e| fail(&e))? == 0 || head.len() > 64 * 1024 {
            return Err(fail(&"malformed response"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        let reason = status.split_once(' ').map_or(status, |x| x.1);
        return Err(EngineError::invalid(format!(
            "failed to GET {url} with status {reason}"
        )));
    }
    let mut f = tokio::fs::File::create(out).await?;
    tokio::io::copy(&mut s, &mut f)
        .await
        .map_err(|e| fail(&e))?;
    f.flush().await?;
    Ok(())
}

/// The file name a URL downloads to (its last path segment).
fn url_file_name(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let name = u.path_segments()?.rfind(|s| !s.is_empty())?;
    Some(name.to_string())
}

/// Metadata for a directory entry the layer must carry: the image's own when it already has the
/// directory (so `/tmp` stays 1777), else 0755 owned by the --chown identity.
fn dir_header(image_root: Option<&Path>, rel: &str, owner: (u32, u32)) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    let existing = image_root.and_then(|r| {
        std::fs::symlink_metadata(r.join(rel))
            .ok()
            .filter(|m| m.is_dir())
    });
    match existing {
        Some(md) => {
            h.set_mode(md.mode() & 0o7777);
            h.set_uid(md.uid() as u64);
            h.set_gid(md.gid() as u64);
            h.set_mtime(md.mtime().max(0) as u64);
        }
        None => {
            h.set_mode(0o755);
            h.set_uid(owner.0 as u64);
            h.set_gid(owner.1 as u64);
            h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        }
    }
    h
}

struct LayerWriter<'a> {
    b: tar::Builder<io::BufWriter<std::fs::File>>,
    dirs: HashSet<String>,
    image_root: Option<&'a Path>,
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
}

impl LayerWriter<'_> {
    fn owner(&self) -> (u32, u32) {
        self.chown.unwrap_or((0, 0))
    }

    /// Entries for `rel` (relative, no slashes at the ends) and every parent of it.
    fn dir_and_parents(&mut self, rel: &str) -> io::Result<()> {
        let mut acc = String::new();
        for part in rel.split('/').filter(|s| !s.is_empty()) {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !self.dirs.insert(acc.clone()) {
                continue;
            }
            let mut h = dir_header(self.image_root, &acc, self.owner());
            self.b.append_data(&mut h, format!("{acc}/"), io::empty())?;
        }
        Ok(())
    }

    fn parents(&mut self, rel: &str) -> io::Result<()> {
        match rel.rsplit_once('/') {
            Some((parent, _)) => self.dir_and_parents(parent),
            None => Ok(()),
        }
    }

    /// One filesystem object from the source at `name` in the layer.
    fn entry(&mut self, p: &Path, name: &str, follow: bool) -> io::Result<()> {
        let md = if follow {
            std::fs::metadata(p)?
        } else {
            std::fs::symlink_metadata(p)?
        };
        let mut h = tar::Header::new_gnu();
        h.set_metadata(&md);
        let (u, g) = self.owner();
        h.set_uid(u as u64);
        h.set_gid(g as u64);
        if let Some(m) = self.chmod {
            h.set_mode(m);
        }
        if md.is_dir() {
            self.dirs.insert(name.to_string());
            self.b.append_data(&mut h, format!("{name}/"), io::empty())
        } else if md.file_type().is_symlink() {
            let target = std::fs::read_link(p)?;
            self.b.append_link(&mut h, name, &target)
        } else if md.is_file() {
            self.b.append_data(&mut h, name, std::fs::File::open(p)?)
        } else {
            // Devices, fifos and sockets in a context are not copied (as Docker).
            Ok(())
        }
    }

    fn item(&mut self, it: &Item) -> io::Result<()> {
        let dst = it.dst.trim_start_matches('/').to_string();
        match it.kind {
            Kind::File => {
                self.parents(&dst)?;
                self.entry(&it.src, &dst, true)
            }
            Kind::Dir => {
                self.dir_and_parents(&dst)?;
                let mut stack: Vec<PathBuf> = children(&it.src)?;
                while let Some(p) = stack.pop() {
                    let rel = p
                        .strip_prefix(&it.src)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned();
                    let name = if dst.is_empty() {
                        rel
                    } else {
                        format!("{dst}/{rel}")
                    };
                    self.entry(&p, &name, false)?;
                    if std::fs::symlink_metadata(&p)?.is_dir() {
                        stack.extend(children(&p)?);
                    }
                }
                Ok(())
            }
            Kind::Extract => {
                self.dir_and_parents(&dst)?;
                let rd = crate::content::layer::open_decompressed(&it.src)?;
                let mut ar = tar::Archive::new(rd);
                let under = |p: &Path| -> Option<String> {
                    let c = clean_abs(&p.to_string_lossy());
                    let c = c.trim_start_matches('/');
                    if c.is_empty() {
                        None
                    } else if dst.is_empty() {
                        Some(c.to_string())
                    } else {
                        Some(format!("{dst}/{c}"))
                    }
                };
                for e in ar.entries()? {
                    let mut e = e?;
                    let Some(name) = under(&e.path()?) else {
                        continue;
                    };
                    let mut h = e.header().clone();
                    let kind = e.header().entry_type();
                    if kind.is_hard_link() {
                        let target = e.link_name()?.map(|l| l.into_owned()).unwrap_or_default();
                        let target = under(&target).unwrap_or_default();
                        self.b.append_link(&mut h, &name, target)?;
                    } else if kind.is_symlink() {
                        let target = e.link_name()?.map(|l| l.into_owned()).unwrap_or_default();
                        self.b.append_link(&mut h, &name, target)?;
                    } else if kind.is_dir() {
                        self.dirs.insert(name.clone());
                        self.b
                            .append_data(&mut h, format!("{name}/"), io::empty())?;
                    } else if kind.is_file() || kind == tar::EntryType::Continuous {
                        self.b.append_data(&mut h, &name, &mut e)?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// A directory's entries, in reverse name order (for a stack that pops them in order).
fn children(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v.reverse();
    Ok(v)
}

fn write_layer(
    items: &[Item],
    image_root: Option<&Path>,
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
    out: &Path,
) -> io::Result<()> {
    let f = std::fs::File::create(out)?;
    let mut b = tar::Builder::new(io::BufWriter::new(f));
    b.follow_symlinks(false);
    let mut w = LayerWriter {
        b,
        dirs: HashSet::new(),
        image_root,
        chown,
        chmod,
    };
    for it in items {
        w.item(it)?;
    }
    w.b.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

/// A layer holding only directory `abs` and its parents (WORKDIR).
pub(super) fn write_dirs_layer(abs: &str, image_root: Option<&Path>, out: &Path) -> io::Result<()> {
    let f = std::fs::File::create(out)?;
    let mut w = LayerWriter {
        b: tar::Builder::new(io::BufWriter::new(f)),
        dirs: HashSet::new(),
        image_root,
        chown: None,
        chmod: None,
    };
    w.dir_and_parents(abs.trim_matches('/'))?;
    w.b.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

impl Worker {
    pub(super) async fn copy_step(
        &mut self,
        state: &mut State,
        ins: &super::Instruction,
    ) -> Result<()> {
        let cmd = ins.cmd.as_str();
        let words: Vec<String> = match ins.json_args() {
            Some(a) => a,
            None => crate::images::import::shell_words(&ins.args),
        };
        let words: Vec<String> = words
            .iter()
            .map(|w| self.expand(state, w))
            .collect::<Result<_>>()?;
        if words.len() < 2 {
            return Err(EngineError::invalid(format!(
                "{cmd} requires at least two arguments, but only one was provided. Destination could not be determined."
            )));
        }
        let (srcs, dest) = words.split_at(words.len() - 1);
        let raw = dest[0].clone();
        let dest_abs = if raw.starts_with('/') {
            clean_abs(&raw)
        } else {
            clean_abs(&format!("{}/{}", state.workdir(), raw))
        };
        let trailing = raw == "." || raw.ends_with('/') || raw.ends_with("/.");
        let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        // Where the sources come from: the context, another stage, an image, or a download.
        let mut _mount = None;
        let mut _download = None;
        let mut quick_key = None;
        let (root, from, srcs) = match ins.flags.get("from") {
            _ if !ins.heredocs.is_empty() => {
                // `COPY <<EOF /path`: each heredoc is a file named after its delimiter (its
                // text expanded unless the delimiter was quoted), mode 0644.
                let words: Vec<String> = ins
                    .heredocs
                    .iter()
                    .map(|h| format!("<<{}{}", if h.chomp { "-" } else { "" }, h.name))
                    .collect();
                if srcs.iter().any(|s| !words.contains(s)) || ins.flags.contains_key("from") {
                    return Err(EngineError::invalid(format!(
                        "{cmd}: heredoc sources cannot be mixed with files or --from"
                    )));
                }
                let dir = super::TempDir::new(self.svc.images.content.tmp_path())?;
                let mut names = Vec::new();
                for h in &ins.heredocs {
                    let text = if h.expand {
                        super::dockerfile::expand_text(&h.text(), &state.env_map())
                            .map_err(|e| EngineError::invalid(e.to_string()))?
                    } else {
                        h.text()
                    };
                    let file = dir.0.join(&h.name);
                    std::fs::write(&file, text)?;
                    std::fs::set_permissions(
                        &file,
                        std::os::unix::fs::PermissionsExt::from_mode(0o644),
                    )?;
                    names.push(h.name.clone());
                }
                let r = dir.0.clone();
                _download = Some(dir);
                (r, "file", names)
            }
            Some(f) if cmd == "COPY" => {
                let f = self.expand(state, f)?;
                let id = match self.stage_image(&f, true).await? {
                    Some(id) => id,
                    None => self.ensure_image(&f).await?,
                };
                // The source image's id stands for its content: a step seen with the same
                // parent, source image and arguments is reused without mounting anything (the
                // content checksum below needs the image mounted).
                let chown = match ins.flags.get("chown") {
                    Some(c) => self.expand(state, c)?,
                    None => String::new(),
                };
                let quick = self.cache_key(
                    state,
                    ins,
                    &format!("image:{id}:{chown}:{}", words.join("\0")),
                );
                if !self.opts.no_cache && self.opts.cache_from.is_empty() {
                    if let Some(hit) = self.cached_local(state, &quick).await? {
                        self.say(" ---> Using cache\n").await;
                        self.use_cached(state, &hit).await?;
                        self.say(format!(" ---> {}\n", short(&hit))).await;
                        return Ok(());
                    }
                }
                quick_key = Some(quick);
                let m = ImageRoot::mount(&self.svc, &id).await?;
                let r = m.path.clone();
                _mount = Some(m);
                (r, "multi", srcs.to_vec())
            }
            Some(_) => {
                return Err(EngineError::invalid(
                    "ADD does not support the --from flag: use COPY --from",
                ))
            }
            None if srcs.iter().any(|s| is_url(s)) => {
                if cmd == "COPY" {
                    return Err(EngineError::invalid("source can't be a URL for COPY"));
                }
                let dir = super::TempDir::new(self.svc.images.content.tmp_path())?;
                let mut names = Vec::new();
                for u in srcs {
                    if !is_url(u) {
                        return Err(EngineError::invalid(
                            "ADD of URLs and local files in one instruction is not supported",
                        ));
                    }
                    if u.starts_with("https://") {
                        return Err(EngineError::invalid(format!(
                            "ADD {u}: https downloads are not supported by this engine; fetch the file with RUN wget, or COPY it from the build context"
                        )));
                    }
                    // `ADD url /dir/` names the file after the URL; `ADD url /path` is the file.
                    let name = if trailing || srcs.len() > 1 {
                        url_file_name(u).ok_or_else(|| {
                            EngineError::invalid(format!("cannot determine filename from url: {u}"))
                        })?
                    } else {
                        dest_abs
                            .rsplit('/')
                            .next()
                            .unwrap_or("download")
                            .to_string()
                    };
                    self.say(format!("Downloading {u}\n")).await;
                    let file = dir.0.join(&name);
                    fetch_http(u, &file).await?;
                    // Downloads are 0600, as Docker makes them.
                    std::fs::set_permissions(
                        &file,
                        std::os::unix::fs::PermissionsExt::from_mode(0o600),
                    )?;
                    names.push(name);
                }
                let r = dir.0.clone();
                _download = Some(dir);
                (r, "file", names)
            }
            None => (self.context.clone(), "file", srcs.to_vec()),
        };
        let mut matched: Vec<PathBuf> = Vec::new();
        for s in &srcs {
            let m = match_source(&root, s)?;
            if m.is_empty() {
                return Err(EngineError::invalid(if has_glob(s) {
                    format!("{cmd} failed: no source files were specified")
                } else {
                    format!("{cmd} failed: file not found in build context or excluded by .dockerignore: stat {s}: file does not exist")
                }));
            }
            matched.extend(m);
        }
        if matched.len() > 1 && !trailing {
            return Err(EngineError::invalid(format!(
                "When using {cmd} with more than one source file, the destination must be a directory and end with a /"
            )));
        }
        let chown = match ins.flags.get("chown") {
            Some(c) => Some(self.resolve_owner(state, &self.expand(state, c)?).await?),
            None => None,
        };
        let chmod = match ins.flags.get("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| EngineError::invalid(format!("invalid chmod parameter: {m}")))?,
            ),
            None => None,
        };
        // Cache key: the instruction, and the content and metadata of every source.
        let (root2, matched2) = (root.clone(), matched.clone());
        let sum = tokio::task::spawn_blocking(move || checksum(&root2, &matched2))
            .await
            .map_err(EngineError::internal)?
            .map_err(|e| EngineError::Internal(format!("{cmd} failed: {e}")))?;
        let key = self.cache_key(
            state,
            ins,
            &format!("{sum}:{chown:?}:{chmod:?}:{}", words.join("\0")),
        );
        let what = if matched.len() == 1 && matched[0].is_dir() {
            "dir"
        } else {
            from
        };
        let created_by = format!("/bin/sh -c #(nop) {cmd} {what}:{} in {raw} ", &sum[..32]);
        let parent = state.image.clone();
        if let Some(id) = self.cached(state, &key, &created_by).await? {
            if let Some(q) = &quick_key {
                self.remember(parent.as_deref(), q, &id).await?;
            }
            self.say(" ---> Using cache\n").await;
            self.use_cached(state, &id).await?;
            self.say(format!(" ---> {}\n", short(&id))).await;
            return Ok(());
        }
        // The image so far, to follow symlinks in the destination and keep existing
        // directories' metadata.
        let image_root = match &state.image {
            Some(id) => Some(ImageRoot::mount(&self.svc, id).await?),
            None => None,
        };
        let ir = image_root.as_ref().map(|m| m.path.clone());
        let real = |abs: &str| -> String {
            match &ir {
                Some(r) => {
                    let p = crate::containers::rootfs::resolve_in_root(r, abs);
                    clean_abs(&p.strip_prefix(r).unwrap_or(&p).to_string_lossy())
                }
                None => abs.to_string(),
            }
        };
        let dest_real = real(&dest_abs);
        let dest_is_dir = trailing
            || ir
                .as_ref()
                .is_some_and(|r| r.join(dest_real.trim_start_matches('/')).is_dir());
        let join = |d: &str, n: &str| {
            if d == "/" {
                format!("/{n}")
            } else {
                format!("{d}/{n}")
            }
        };
        let mut items = Vec::new();
        for m in &matched {
            let md = std::fs::metadata(m).map_err(|e| {
                EngineError::invalid(format!("{cmd} failed: stat {}: {e}", m.display()))
            })?;
            let kind = if md.is_dir() {
                Kind::Dir
            } else if cmd == "ADD" && _download.is_none() && is_archive(m) {
                Kind::Extract
            } else {
                Kind::File
            };
            let dst = match kind {
                Kind::Dir | Kind::Extract => dest_real.clone(),
                Kind::File if dest_is_dir => {
                    let name = m
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    real(&join(&dest_abs, &name))
                }
                Kind::File => dest_real.clone(),
            };
            items.push(Item {
                src: m.clone(),
                dst,
                kind,
            });
        }
        let tmp = self.svc.images.content.tmp_path();
        let tmp2 = tmp.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_layer(&items, ir.as_deref(), chown, chmod, &tmp2)
        })
        .await
        .map_err(EngineError::internal)?;
        drop(image_root);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(EngineError::Internal(format!("{cmd} failed: {e}")));
        }
        let layer = self.svc.images.ingest_layer(tmp.clone()).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        let layer = layer?;
        self.commit(state, created_by, Some(layer.diff_id), &key)
            .await?;
        if let (Some(q), Some(id)) = (&quick_key, &state.image) {
            self.remember(parent.as_deref(), q, id).await?;
        }
        self.say(format!(
            " ---> {}\n",
            short(state.image.as_deref().unwrap_or_default())
        ))
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_abs("/app/./x/../y/"), "/app/y");
        assert_eq!(clean_abs("/"), "/");
        assert_eq!(clean_abs("/../.."), "/");
    }

    #[test]
    fn globs() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("src/a")).unwrap();
        for f in ["x.txt", "y.txt", "z.md", "src/a/1.c", "src/b.c"] {
            std::fs::write(r.join(f), f).unwrap();
        }
        let names = |p: &str| -> Vec<String> {
            match_source(r, p)
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(r).unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("*.txt"), vec!["x.txt", "y.txt"]);
        assert_eq!(names("./?.md"), vec!["z.md"]);
        assert_eq!(names("src/*/*.c"), vec!["src/a/1.c"]);
        assert_eq!(names("[xz].*"), vec!["x.txt", "z.md"]);
        assert_eq!(names("nope*"), Vec::<String>::new());
        assert_eq!(names("src"), vec!["src"]);
        // Content changes the checksum, mtime does not.
        let a = checksum(r, &[r.join("x.txt")]).unwrap();
        std::fs::write(r.join("x.txt"), "changed").unwrap();
        assert_ne!(a, checksum(r, &[r.join("x.txt")]).unwrap());
    }

    #[test]
    fn archives_are_detected_and_extracted_under_the_destination() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let tar_path = r.join("b.tar");
        {
            let mut b = tar::Builder::new(std::fs::File::create(&tar_path).unwrap());
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            b.append_data(&mut h, "./d/f.txt", &b"abc"[..]).unwrap();
            b.finish().unwrap();
        }
        std::fs::write(r.join("plain.txt"), "not a tar").unwrap();
        assert!(is_archive(&tar_path));
        assert!(!is_archive(&r.join("plain.txt")));
        let out = r.join("layer.tar");
        let items = vec![Item {
            src: tar_path,
            dst: "/opt".into(),
            kind: Kind::Extract,
        }];
        write_layer(&items, None, None, None, &out).unwrap();
        let mut ar = tar::Archive::new(std::fs::File::open(&out).unwrap());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["opt/", "opt/d/f.txt"]);
    }
}
