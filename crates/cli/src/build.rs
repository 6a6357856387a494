//! `berth build`: tar the context (honouring .dockerignore), POST /build
//! (classic builder) and print its stream as docker does.

use crate::client::{daemon_err, exit, Target};
use anyhow::{Context as _, Result};
use berth_dockerignore::Ignore;
use bollard::query_parameters as qp;
use clap::Args;
use futures::StreamExt;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long = "tag")]
    tag: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    build_arg: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Set metadata for an image
    #[arg(long)]
    label: Vec<String>,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pull: bool,
    /// Remove intermediate containers after a successful build
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    rm: bool,
    /// Set the networking mode for the RUN instructions during build
    #[arg(long)]
    network: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// PATH
    path: PathBuf,
}

/// Tar the context directory, leaving out what .dockerignore excludes (the
/// Dockerfile and .dockerignore always go).
pub fn context_tar(dir: &Path, dockerfile: &str) -> Result<Vec<u8>> {
    let ignore = std::fs::read_to_string(dir.join(".dockerignore"))
        .map(|s| Ignore::parse(&s))
        .unwrap_or_else(|_| Ignore::parse(""));
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Deterministic);
    fn walk(
        b: &mut tar::Builder<Vec<u8>>,
        root: &Path,
        rel: &str,
        ignore: &Ignore,
        keep: &[&str],
    ) -> Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            let path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            let excluded = ignore.excluded(&path) && !keep.contains(&path.as_str());
            if ft.is_dir() {
                // An excluded directory may still hold re-included files.
                if !excluded {
                    b.append_dir(&path, e.path())?;
                }
                walk(b, root, &path, ignore, keep)?;
            } else if !excluded {
                b.append_path_with_name(e.path(), &path)
                    .with_context(|| format!("adding {path} to the build context"))?;
            }
        }
        Ok(())
    }
    walk(&mut b, dir, "", &ignore, &[dockerfile, ".dockerignore"])?;
    Ok(b.into_inner()?)
}

pub async fn build(t: &Target, a: BuildArgs) -> Result<i32> {
    let d = t.connect()?;
    // The same notice docker prints: this is the classic builder.
    eprintln!(
        "DEPRECATED: The legacy builder is deprecated and will be removed in a future release."
    );
    eprintln!("            Install the buildx component to build images with BuildKit:");
    eprintln!("            https://docs.docker.com/go/buildx/");
    eprintln!();
    if !a.path.is_dir() {
        return Err(exit(
            1,
            format!(
                "ERROR: unable to prepare context: path {:?} not found",
                a.path.display().to_string()
            ),
        ));
    }
    // The Dockerfile: relative to the context, or outside it (then sent along).
    let (dockerfile_name, extra) = match &a.file {
        None => ("Dockerfile".to_string(), None),
        Some(f) if f == "-" => {
            let mut s = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
            (".berth-dockerfile-stdin".to_string(), Some(s))
        }
        Some(f) => {
            let p = Path::new(f);
            let abs = if p.is_absolute() {
                p.to_path_buf()
            } else {
                std::env::current_dir()?.join(p)
            };
            let ctx = std::fs::canonicalize(&a.path)?;
            match std::fs::canonicalize(&abs).ok().and_then(|x| {
                x.strip_prefix(&ctx)
                    .ok()
                    .map(|r| r.to_string_lossy().to_string())
            }) {
                Some(rel) => (rel, None),
                None if !abs.exists() => {
                    return Err(exit(1, format!("unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: no such file or directory", abs.display())));
                }
                None => {
                    let data = std::fs::read(&abs).map_err(|e| {
                        exit(
                            1,
                            format!(
                                "ERROR: unable to prepare context: unable to read {}: {e}",
                                abs.display()
                            ),
                        )
                    })?;
                    (".berth-dockerfile-outside".to_string(), Some(data))
                }
            }
        }
    };
    let mut tar = context_tar(&a.path, &dockerfile_name)?;
    if let Some(data) = extra {
        // Re-open the archive and append the Dockerfile.
        let mut b = tar::Builder::new(Vec::new());
        let mut ar = tar::Archive::new(std::io::Cursor::new(tar));
        for e in ar.entries()? {
            let mut e = e?;
            let h = e.header().clone();
            let path = e.path()?.to_path_buf();
            b.append_data(&mut h.clone(), path, &mut e)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &dockerfile_name, data.as_slice())?;
        tar = b.into_inner()?;
    }
    let build_args: HashMap<String, String> = a
        .build_arg
        .iter()
        .filter_map(|kv| match kv.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(kv).ok().map(|v| (kv.clone(), v)),
        })
        .collect();
    let labels: HashMap<String, String> = a
        .label
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let mut o = qp::BuildImageOptionsBuilder::new()
        .dockerfile(&dockerfile_name)
        .q(a.quiet)
        .nocache(a.no_cache)
        .rm(a.rm)
        .buildargs(&build_args)
        .labels(&labels);
    if let Some(tg) = a.tag.first() {
        o = o.t(tg);
    }
    if let Some(tg) = &a.target {
        o = o.target(tg);
    }
    if let Some(n) = &a.network {
        o = o.networkmode(n);
    }
    if let Some(p) = &a.platform {
        o = o.platform(p);
    }
    if a.pull {
        o = o.pull("1");
    }
    if !a.quiet {
        // docker's progress line for the upload ("\r") and its closing status line ("\r\n")
        print!(
            "Sending build context to Docker daemon  {}\r\r\n",
            crate::format::human_size4(tar.len() as f64)
        );
    }
    let mut s = d.build_image(o.build(), None, Some(bollard::body_full(tar.into())));
    let mut image_id = None;
    let mut out = std::io::stdout();
    while let Some(item) = s.next().await {
        match item {
            Ok(info) => {
                if let Some(e) = info.error_detail {
                    // docker exits with the failing step's code
                    let code = e.code.filter(|c| *c > 0).unwrap_or(1) as i32;
                    return Err(exit(code, e.message.unwrap_or_default()));
                }
                if let Some(st) = info.stream {
                    if a.quiet {
                        if st.trim().starts_with("sha256:") {
                            image_id = Some(st.trim().to_string());
                        }
                    } else {
                        out.write_all(st.as_bytes())?;
                        out.flush()?;
                    }
                }
                if let Some(st) = info.status {
                    if !a.quiet {
                        match info.id {
                            Some(id) if !id.is_empty() => println!("{id}: {st}"),
                            _ => println!("{st}"),
                        }
                    }
                }
                if let Some(img) = info.aux {
                    if let Some(id) = img.id {
                        image_id = Some(id);
                    }
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                // bollard drops errorDetail.code; docker exits with it, and
                // the classic builder's message ends with it.
                let code = error
                    .rsplit_once("returned a non-zero code: ")
                    .and_then(|(_, c)| c.trim().parse::<i32>().ok())
                    .filter(|c| *c > 0)
                    .unwrap_or(1);
                return Err(exit(code, error));
            }
            Err(e) => return Err(daemon_err(t, e, 1)),
        }
    }
    let Some(id) = image_id else {
        return Ok(0);
    };
    for tg in a.tag.iter().skip(1) {
        let r = crate::image::Reference::parse(tg)?;
        let o = qp::TagImageOptionsBuilder::new()
            .repo(&r.repo())
            .tag(r.tag.as_deref().unwrap_or("latest"))
            .build();
        d.tag_image(&id, Some(o))
            .await
            .map_err(|e| daemon_err(t, e, 1))?;
        if !a.quiet {
            println!("Successfully tagged {}", r.familiar());
        }
    }
    if a.quiet {
        println!("{id}");
    }
    Ok(0)
}
