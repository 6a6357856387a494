//! `berth context use|rm|show` and `berth env`: make the docker CLI, compose
//! and SDKs reach Berth through a docker context named `berth`.

use crate::client::{Target, DEFAULT_SOCKET};
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

pub const NAME: &str = "berth";

#[derive(Subcommand, Debug)]
pub enum ContextCmd {
    /// Create (or update) the `berth` docker context and make it the current one
    Use(UseArgs),
    /// Remove the `berth` docker context (and stop using it)
    Rm,
    /// Show the docker context in use and its endpoint
    Show,
}

#[derive(Args, Debug)]
pub struct UseArgs {
    /// Engine socket for the context [env: BERTH_SOCKET; default /run/berth/docker.sock]
    #[arg(long)]
    socket: Option<String>,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// Print commands that undo the settings
    #[arg(short = 'u', long)]
    unset: bool,
}

pub fn docker_config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker")
}

fn meta_dir(name: &str) -> PathBuf {
    let digest = hex::encode(Sha256::digest(name.as_bytes()));
    docker_config_dir()
        .join("contexts")
        .join("meta")
        .join(digest)
}

fn read_config() -> Result<serde_json::Map<String, Value>> {
    let p = docker_config_dir().join("config.json");
    match std::fs::read(&p) {
        Ok(b) if !b.iter().all(u8::is_ascii_whitespace) => {
            let v: Value = serde_json::from_slice(&b)
                .with_context(|| format!("{} is not valid JSON", p.display()))?;
            Ok(v.as_object().cloned().unwrap_or_default())
        }
        Ok(_) => Ok(Default::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn write_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("path without a parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_config(cfg: serde_json::Map<String, Value>) -> Result<()> {
    let p = docker_config_dir().join("config.json");
    let mut s = serde_json::to_string_pretty(&Value::Object(cfg))?;
    s.push('\n');
    write_atomic(&p, s.as_bytes(), 0o600)
}

/// The docker host of the selected context, unless it is `default`.
pub fn current_context_host() -> Option<String> {
    let name = match std::env::var("DOCKER_CONTEXT") {
        Ok(n) if !n.is_empty() => n,
        _ => read_config()
            .ok()?
            .get("currentContext")?
            .as_str()?
            .to_string(),
    };
    if name.is_empty() || name == "default" {
        return None;
    }
    let meta: Value =
        serde_json::from_slice(&std::fs::read(meta_dir(&name).join("meta.json")).ok()?).ok()?;
    meta.pointer("/Endpoints/docker/Host")?
        .as_str()
        .map(str::to_string)
}

pub fn run(c: ContextCmd) -> Result<i32> {
    match c {
        ContextCmd::Use(a) => {
            let sock = a
                .socket
                .or_else(|| std::env::var("BERTH_SOCKET").ok())
                .unwrap_or_else(|| DEFAULT_SOCKET.into());
            let host = if sock.contains("://") {
                sock
            } else {
                format!("unix://{sock}")
            };
            let meta = json!({
                "Name": NAME,
                "Metadata": {"Description": "Berth"},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": false}},
            });
            let dir = meta_dir(NAME);
            write_atomic(
                &dir.join("meta.json"),
                serde_json::to_string(&meta)?.as_bytes(),
                0o644,
            )?;
            let mut cfg = read_config()?;
            cfg.insert("currentContext".into(), Value::String(NAME.into()));
            write_config(cfg)?;
            println!("{NAME}");
            eprintln!("Current context is now \"{NAME}\" ({host})");
            if std::env::var_os("DOCKER_HOST").is_some() {
                eprintln!("Warning: DOCKER_HOST is set and overrides the current context: run `unset DOCKER_HOST`");
            }
            Ok(0)
        }
        ContextCmd::Rm => {
            let dir = meta_dir(NAME);
            let existed = dir.exists();
            if existed {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
            let tls = docker_config_dir()
                .join("contexts")
                .join("tls")
                .join(dir.file_name().unwrap_or_default());
            let _ = std::fs::remove_dir_all(tls);
            let mut cfg = read_config()?;
            if cfg.get("currentContext").and_then(|v| v.as_str()) == Some(NAME) {
                cfg.remove("currentContext");
                write_config(cfg)?;
                eprintln!("Current context is now \"default\"");
            }
            if existed {
                println!("{NAME}");
            } else {
                eprintln!("context \"{NAME}\" does not exist");
            }
            Ok(0)
        }
        ContextCmd::Show => {
            let name = std::env::var("DOCKER_CONTEXT")
                .ok()
                .filter(|s| !s.is_empty())
                .or_else(|| {
                    read_config()
                        .ok()?
                        .get("currentContext")?
                        .as_str()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "default".into());
            println!("{name}\t{}", Target::resolve(None).host);
            Ok(0)
        }
    }
}

pub fn env(t: &Target, a: EnvArgs) -> Result<i32> {
    if a.unset {
        println!("unset DOCKER_HOST");
    } else {
        println!("export DOCKER_HOST={}", t.host);
    }
    Ok(0)
}
