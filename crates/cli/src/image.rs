//! Image commands: images, pull, push, tag, rmi, history, plus reference
//! parsing, registry credentials and Docker's JSON progress display.

use crate::client::{self, daemon_err, exit, Target};
use crate::format::{self, Formatter};
use anyhow::Result;
use bollard::auth::DockerCredentials;
use bollard::query_parameters as qp;
use clap::Args;
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::IsTerminal;

// ---------------------------------------------------------------------------
// References

pub struct Reference {
    /// registry domain, e.g. docker.io
    pub domain: String,
    /// repository path, e.g. library/busybox
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// distribution/reference's `splitDockerDomain`: the registry host and the rest, with
/// docker.io's `library/` for official images.
fn split_docker_domain(name: &str) -> (String, String) {
    let (domain, remainder) = match name.split_once('/') {
        Some((d, r))
            if d.contains('.') || d.contains(':') || d == "localhost" || d.to_lowercase() != d =>
        {
            (d.to_string(), r.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_string()
    } else {
        domain
    };
    let remainder = if domain == "docker.io" && !remainder.contains('/') {
        format!("library/{remainder}")
    } else {
        remainder
    };
    (domain, remainder)
}

/// distribution/reference's `ReferenceRegexp`: name, tag, digest.
fn reference_regex() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        let path = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
        let comp = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let host = format!(r"(?:{comp}(?:\.{comp})*|\[(?:[a-fA-F0-9:]+)\])");
        let name = format!(r"(?:{host}(?::[0-9]+)?/)?{path}(?:/{path})*");
        let tag = r"[\w][\w.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}";
        regex::Regex::new(&format!(r"^({name})(?::({tag}))?(?:@({digest}))?$"))
            .expect("reference regex")
    })
}

impl Reference {
    /// Docker's `reference.ParseNormalizedNamed`, with its error messages.
    pub fn parse(s: &str) -> Result<Reference> {
        let bad = |m: String| exit(1, m);
        let (domain, remainder) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or("");
        if remote.to_lowercase() != remote {
            return Err(bad(format!(
                "invalid reference format: repository name ({remote}) must be lowercase"
            )));
        }
        let full = format!("{domain}/{remainder}");
        let caps = reference_regex()
            .captures(&full)
            .ok_or_else(|| bad("invalid reference format".into()))?;
        let name = caps.get(1).map_or("", |m| m.as_str());
        if name.len() > 255 {
            return Err(bad(
                "repository name must not be more than 255 characters".into()
            ));
        }
        let tag = caps.get(2).map(|m| m.as_str().to_string());
        let digest = caps.get(3).map(|m| m.as_str().to_string());
        if let Some(d) = &digest {
            // go-digest's Parse: a known algorithm, and its length of lower-case hex
            let (alg, hex) = d.split_once(':').unwrap_or((d, ""));
            let len = match alg {
                "sha256" => 64,
                "sha384" => 96,
                "sha512" => 128,
                _ => return Err(bad("unsupported digest algorithm".into())),
            };
            if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(bad("invalid checksum digest format".into()));
            }
        }
        let path = name.get(domain.len() + 1..).unwrap_or_default().to_string();
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// repository name as given to the API (familiar form for docker.io)
    pub fn repo(&self) -> String {
        if self.domain == "docker.io" {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    pub fn full_repo(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// docker.io/library/busybox:latest
    pub fn full(&self) -> String {
        let mut s = self.full_repo();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// busybox:latest
    pub fn familiar(&self) -> String {
        let mut s = self.repo();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

/// Credentials for a registry from the docker config (`auths.<server>.auth`).
pub fn credentials(domain: &str) -> Option<DockerCredentials> {
    let p = crate::context::docker_config_dir().join("config.json");
    let cfg: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    let auths = cfg.get("auths")?.as_object()?;
    let keys: Vec<String> = if domain == "docker.io" {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
        ]
    } else {
        vec![
            domain.to_string(),
            format!("https://{domain}"),
            format!("http://{domain}"),
        ]
    };
    for k in keys {
        if let Some(a) = auths.get(&k) {
            let auth = a.get("auth").and_then(|x| x.as_str())?;
            use base64_decode::decode;
            let raw = decode(auth)?;
            let (u, p) = raw.split_once(':')?;
            return Some(DockerCredentials {
                username: Some(u.into()),
                password: Some(p.into()),
                serveraddress: Some(k),
                ..Default::default()
            });
        }
    }
    None
}

mod base64_decode {
    pub fn decode(s: &str) -> Option<String> {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let mut buf = 0u32;
        let mut bits = 0;
        for c in s.bytes() {
            if c == b'=' {
                break;
            }
            let v = T.iter().position(|&x| x == c)? as u32;
            buf = (buf << 6) | v;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((buf >> bits) as u8);
                buf &= (1 << bits) - 1;
            }
        }
        String::from_utf8(out).ok()
    }
}

// ---------------------------------------------------------------------------
// Docker's progress display (jsonmessage)

pub struct Progress {
    tty: bool,
    to_stderr: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    /// Layer ids in the order they appeared.
    order: Vec<String>,
    quiet: bool,
}

impl Progress {
    pub fn new(quiet: bool, to_stderr: bool) -> Self {
        let tty = if to_stderr {
            std::io::stderr().is_terminal()
        } else {
            std::io::stdout().is_terminal()
        };
        let multi = if to_stderr {
            MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
        } else {
            MultiProgress::new()
        };
        Progress {
            tty,
            to_stderr,
            multi,
            bars: HashMap::new(),
            order: Vec::new(),
            quiet,
        }
    }

    fn print(&self, s: &str) {
        if self.quiet {
            return;
        }
        if self.tty {
            let _ = self.multi.println(s);
        } else if self.to_stderr {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    }

    /// One message of the stream: id, status, progressDetail {current,total}.
    pub fn message(&mut self, id: Option<&str>, status: &str, current: i64, total: i64) {
        if self.quiet {
            return;
        }
        let has_progress = current > 0 || total > 0;
        match id.filter(|i| !i.is_empty()) {
            Some(id) if self.tty => {
                if !self.bars.contains_key(id) {
                    self.order.push(id.to_string());
                }
                let bar = self.bars.entry(id.to_string()).or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new(0));
                    b.set_style(
                        ProgressStyle::with_template("{prefix}: {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    b.set_prefix(id.to_string());
                    b
                });
                if has_progress && total > 0 {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg} [{bar:50}] {bytes}/{total_bytes}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_length(total as u64);
                    bar.set_position(current.max(0) as u64);
                } else {
                    bar.set_style(
                        ProgressStyle::with_template("{prefix}: {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                bar.set_message(status.to_string());
                bar.tick();
            }
            Some(id) => {
                // Plain output: no progress lines, as docker does off a terminal.
                if !has_progress {
                    self.print(&format!("{id}: {status}"));
                }
            }
            None => {
                self.finish_bars();
                self.print(status);
            }
        }
    }

    /// Replace the bars by their final lines (`<layer>: Pull complete`), in the order the
    /// layers appeared, so they stay on screen as docker's do.
    fn finish_bars(&mut self) {
        let mut bars: Vec<(String, ProgressBar)> = self.bars.drain().collect();
        bars.sort_by_key(|(_, b)| self.order.iter().position(|o| o == b.prefix().as_str()));
        self.order.clear();
        for (id, b) in bars {
            let last = b.message();
            b.finish_and_clear();
            let _ = self.multi.println(format!("{id}: {last}"));
        }
    }

    pub fn done(&mut self) {
        self.finish_bars();
    }
}

/// Pull `image`, showing progress; `quiet` prints nothing. Errors are docker's.
pub async fn pull_image(
    t: &Target,
    d: &bollard::Docker,
    image: &str,
    quiet: bool,
    to_stderr: bool,
    platform: Option<&str>,
    code: i32,
) -> Result<Reference> {
    let r = Reference::parse(image)?;
    let tag = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let mut opts = qp::CreateImageOptionsBuilder::new()
        .from_image(&r.repo())
        .tag(&tag);
    if let Some(p) = platform {
        opts = opts.platform(p);
    }
    let mut stream = d.create_image(Some(opts.build()), None, credentials(&r.domain));
    let mut prog = Progress::new(quiet, to_stderr);
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                let (cur, tot) = info
                    .progress_detail
                    .as_ref()
                    .map(|p| (p.current.unwrap_or(0), p.total.unwrap_or(0)))
                    .unwrap_or((0, 0));
                prog.message(
                    info.id.as_deref(),
                    info.status.as_deref().unwrap_or(""),
                    cur,
                    tot,
                );
            }
            Err(e) => {
                prog.done();
                return Err(daemon_err(t, e, code));
            }
        }
    }
    prog.done();
    Ok(r)
}

// ---------------------------------------------------------------------------
// Commands

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// NAME[:TAG|@DIGEST]
    image: String,
}

pub async fn pull(t: &Target, a: PullArgs) -> Result<i32> {
    let r = Reference::parse(&a.image)?;
    let d = t.connect()?;
    if r.tag.is_none() && r.digest.is_none() && !a.all_tags && !a.quiet {
        println!("Using default tag: latest");
    }
    let mut img = a.image.clone();
    if r.tag.is_none() && r.digest.is_none() {
        img.push_str(":latest");
    }
    let r = pull_image(t, &d, &img, a.quiet, false, a.platform.as_deref(), 1).await?;
    println!("{}", r.full());
    Ok(0)
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG]
    image: String,
}

pub async fn push(t: &Target, a: PushArgs) -> Result<i32> {
    let r = Reference::parse(&a.image)?;
    let mut path = format!("/images/{}/push", client::enc(&r.repo()));
    if !a.all_tags {
        if r.tag.is_none() && !a.quiet {
            println!("Using default tag: latest");
        }
        path.push_str(&format!(
            "?tag={}",
            client::enc(r.tag.as_deref().unwrap_or("latest"))
        ));
    }
    let creds = credentials(&r.domain).unwrap_or_default();
    let auth = json!({
        "username": creds.username, "password": creds.password,
        "serveraddress": creds.serveraddress.unwrap_or_else(|| r.domain.clone()),
    });
    let header = b64url(auth.to_string().as_bytes());
    let mut prog = Progress::new(a.quiet, false);
    let mut err: Option<String> = None;
    client::raw_stream_json(t, "POST", &path, &[("X-Registry-Auth", header)], |v| {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            err = Some(e.to_string());
            return Ok(());
        }
        let cur = v
            .pointer("/progressDetail/current")
            .and_then(|x| x.as_i64())
            .unwrap_or(0);
        let tot = v
            .pointer("/progressDetail/total")
            .and_then(|x| x.as_i64())
            .unwrap_or(0);
        if let Some(s) = v.get("status").and_then(|s| s.as_str()) {
            prog.message(v.get("id").and_then(|i| i.as_str()), s, cur, tot);
        }
        Ok(())
    })
    .await?;
    prog.done();
    if let Some(e) = err {
        return Err(exit(1, e));
    }
    if a.quiet {
        println!("{}", r.full());
    }
    Ok(0)
}

fn b64url(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
        let chars = [18, 12, 6, 0].map(|s| T[((n >> s) & 63) as usize] as char);
        let keep = c.len() + 1;
        for (i, ch) in chars.iter().enumerate() {
            out.push(if i < keep { *ch } else { '=' });
        }
    }
    out
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    source: String,
    /// TARGET_IMAGE[:TAG]
    target: String,
}

pub async fn tag(t: &Target, a: TagArgs) -> Result<i32> {
    // the API client's ImageTag: ParseAnyReference(source), ParseNormalizedNamed(target)
    let invalid = |s: &str, e: anyhow::Error| {
        exit(
            1,
            format!("Error parsing reference: {s:?} is not a valid repository/tag: {e}"),
        )
    };
    let is_hex64 =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let source_is_id =
        is_hex64(&a.source) || a.source.strip_prefix("sha256:").is_some_and(is_hex64);
    if !source_is_id {
        Reference::parse(&a.source).map_err(|e| invalid(&a.source, e))?;
    }
    let r = Reference::parse(&a.target).map_err(|e| invalid(&a.target, e))?;
    let d = t.connect()?;
    if r.digest.is_some() {
        return Err(exit(1, "refusing to create a tag with a digest reference"));
    }
    let opts = qp::TagImageOptionsBuilder::new()
        .repo(&r.repo())
        .tag(r.tag.as_deref().unwrap_or("latest"))
        .build();
    d.tag_image(&a.source, Some(opts))
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    no_prune: bool,
    /// IMAGE...
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn rmi(t: &Target, a: RmiArgs) -> Result<i32> {
    let d = t.connect()?;
    let mut failed = false;
    for img in &a.images {
        let opts = qp::RemoveImageOptionsBuilder::new()
            .force(a.force)
            .noprune(a.no_prune)
            .build();
        match d.remove_image(img, Some(opts), None).await {
            Ok(items) => {
                for it in items {
                    if let Some(u) = it.untagged {
                        println!("Untagged: {u}");
                    }
                    if let Some(x) = it.deleted {
                        println!("Deleted: {x}");
                    }
                }
            }
            Err(e) => {
                let e = daemon_err(t, e, 1);
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// IMAGE
    image: String,
}

pub async fn history(t: &Target, a: HistoryArgs) -> Result<i32> {
    let d = t.connect()?;
    let h = d
        .image_history(&a.image)
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    let rows: Vec<Value> = h
        .iter()
        .map(|x| {
            let id = if x.id == "<missing>" || x.id.is_empty() {
                "<missing>".to_string()
            } else if a.no_trunc {
                x.id.clone()
            } else {
                format::short_id(&x.id)
            };
            let created_by = x.created_by.replace('\t', " ");
            let created_by = if a.no_trunc {
                created_by
            } else {
                format::ellipsis(&created_by, 45)
            };
            let size = if a.human {
                format::human_size(x.size as f64)
            } else {
                x.size.to_string()
            };
            let created_since = if a.human {
                format::ago(x.created)
            } else {
                chrono::DateTime::from_timestamp(x.created, 0)
                    .map(|t| {
                        t.with_timezone(&chrono::Local)
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    })
                    .unwrap_or_default()
            };
            json!({
                "ID": id, "CreatedSince": created_since,
                "CreatedAt": chrono::DateTime::from_timestamp(x.created, 0).map(|t| t.with_timezone(&chrono::Local).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default(),
                "CreatedBy": created_by, "Size": size, "Comment": x.comment, "Tags": x.tags.join(", "),
            })
        })
        .collect();
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    let f = Formatter::new(
        a.format.as_deref().unwrap_or(""),
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
    )?;
    print!(
        "{}",
        f.render(
            &rows,
            &[
                ("ID", "IMAGE"),
                ("CreatedSince", "CREATED"),
                ("CreatedAt", "CREATED AT"),
                ("CreatedBy", "CREATED BY"),
                ("Size", "SIZE"),
                ("Comment", "COMMENT"),
                ("Tags", "TAGS"),
            ]
        )?
    );
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    all: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// [REPOSITORY[:TAG]]
    repository: Option<String>,
}

pub async fn images(t: &Target, a: ImagesArgs) -> Result<i32> {
    let d = t.connect()?;
    let mut filters = client::filters(&a.filter)?;
    if let Some(r) = &a.repository {
        filters
            .entry("reference".into())
            .or_default()
            .push(r.clone());
    }
    let opts = qp::ListImagesOptionsBuilder::new()
        .all(a.all)
        .filters(&filters)
        .digests(true)
        .build();
    let list = d
        .list_images(Some(opts))
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    let mut rows = Vec::new();
    for img in &list {
        let id = if a.no_trunc {
            img.id.clone()
        } else {
            format::short_id(&img.id)
        };
        let mut pairs: Vec<(String, String, String)> = Vec::new();
        let digest_for = |repo: &str| -> String {
            img.repo_digests
                .iter()
                .find_map(|rd| {
                    let (r, dg) = rd.split_once('@')?;
                    (r == repo).then(|| dg.to_string())
                })
                .unwrap_or_else(|| "<none>".into())
        };
        for rt in &img.repo_tags {
            if rt == "<none>:<none>" {
                continue;
            }
            let (repo, tag) = match rt.rfind(':') {
                Some(i) if !rt[i..].contains('/') => (&rt[..i], &rt[i + 1..]),
                _ => (rt.as_str(), "<none>"),
            };
            pairs.push((repo.to_string(), tag.to_string(), digest_for(repo)));
        }
        if pairs.is_empty() {
            // untagged: one row per digest, or <none> <none>
            let digs: Vec<(String, String)> = img
                .repo_digests
                .iter()
                .filter_map(|rd| {
                    rd.split_once('@')
                        .map(|(r, d)| (r.to_string(), d.to_string()))
                })
                .collect();
            if digs.is_empty() || !a.digests {
                pairs.push((
                    "<none>".into(),
                    "<none>".into(),
                    digs.first()
                        .map(|x| x.1.clone())
                        .unwrap_or_else(|| "<none>".into()),
                ));
            } else {
                for (r, dg) in digs {
                    pairs.push((r, "<none>".into(), dg));
                }
            }
        }
        for (repo, tag, digest) in pairs {
            rows.push(json!({
                "ID": id, "Repository": repo, "Tag": tag, "Digest": digest,
                "CreatedSince": format::ago(img.created),
                "CreatedAt": format::created_at(img.created),
                "Size": format::human_size(img.size as f64),
                "VirtualSize": format::human_size(img.size as f64),
                "SharedSize": if img.shared_size < 0 { "N/A".to_string() } else { format::human_size(img.shared_size as f64) },
                "UniqueSize": if img.shared_size < 0 { "N/A".to_string() } else { format::human_size((img.size - img.shared_size) as f64) },
                "Containers": if img.containers < 0 { "N/A".to_string() } else { img.containers.to_string() },
                "Labels": img.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            }));
        }
    }
    if a.quiet && a.format.is_none() {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    let default = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    let f = Formatter::new(a.format.as_deref().unwrap_or(""), default)?;
    print!(
        "{}",
        f.render(
            &rows,
            &[
                ("ID", "IMAGE ID"),
                ("Repository", "REPOSITORY"),
                ("Tag", "TAG"),
                ("Digest", "DIGEST"),
                ("CreatedSince", "CREATED"),
                ("CreatedAt", "CREATED AT"),
                ("Size", "SIZE"),
                ("VirtualSize", "VIRTUAL SIZE"),
                ("SharedSize", "SHARED SIZE"),
                ("UniqueSize", "UNIQUE SIZE"),
                ("Containers", "CONTAINERS"),
            ]
        )?
    );
    Ok(0)
}
