//! Command-line flags (dockerd's names) and the resulting engine configuration.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "berthd",
    version,
    about = "Berth container engine (Docker Engine API v1.44)"
)]
pub struct Args {
    /// Daemon socket to listen on: unix:///path, or fd:// for sockets passed by systemd.
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/berth/docker.sock"
    )]
    pub host: Vec<String>,
    /// Root directory of persistent state.
    #[arg(long = "data-root", default_value = "/var/lib/berth")]
    pub data_root: PathBuf,
    /// Registry mirror for docker.io images (repeatable).
    #[arg(long = "registry-mirror")]
    pub registry_mirror: Vec<String>,
    /// Registry reached over plain HTTP (repeatable). Loopback registries always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// Path of the pid file.
    #[arg(short = 'p', long = "pidfile", default_value = "/run/berth/berthd.pid")]
    pub pidfile: PathBuf,
    /// Group owning the API socket.
    #[arg(short = 'G', long = "group", default_value = "berth")]
    pub group: String,
    /// Log level: debug, info, warn, error, fatal.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// OCI runtime binary.
    #[arg(long = "runtime", default_value = "runc", env = "BERTH_RUNTIME")]
    pub runtime: String,
    /// berth-shim binary (default: next to berthd, then $PATH).
    #[arg(long = "shim", env = "BERTH_SHIM_BIN")]
    pub shim: Option<PathBuf>,
    /// VM mode (docs/VM.md): berth-guest's socket to announce published ports to the host.
    #[arg(long = "port-announce")]
    pub port_announce: Option<PathBuf>,
}

/// A registry mirror: scheme + host[:port] (+ optional path prefix ignored).
#[derive(Debug, Clone)]
pub struct Mirror {
    pub host: String,
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub data_root: PathBuf,
    pub mirrors: Vec<Mirror>,
    pub insecure_registries: Vec<String>,
    pub pidfile: PathBuf,
    pub group: String,
    pub log_level: String,
    pub runtime: String,
    pub shim: Option<PathBuf>,
    pub port_announce: Option<PathBuf>,
}

impl Config {
    pub fn from_args(a: Args) -> anyhow::Result<Self> {
        let host = a.host.last().cloned().unwrap_or_default();
        let socket = match host.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            // Socket activation: the listener comes from systemd (LISTEN_FDS).
            _ if host == "fd://" => PathBuf::new(),
            _ => bail!("unsupported -H {host:?}: only unix:///path sockets and fd:// are served"),
        };
        let mut mirrors = Vec::new();
        for m in &a.registry_mirror {
            let u = url::Url::parse(m).with_context(|| format!("invalid --registry-mirror {m}"))?;
            let h = u
                .host_str()
                .with_context(|| format!("--registry-mirror {m} has no host"))?;
            let host = match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            };
            mirrors.push(Mirror {
                host,
                insecure: u.scheme() == "http",
            });
        }
        match a.log_level.as_str() {
            "debug" | "info" | "warn" | "error" | "fatal" | "trace" => {}
            other => bail!("invalid --log-level {other:?}"),
        }
        Ok(Self {
            socket,
            data_root: a.data_root,
            mirrors,
            insecure_registries: a.insecure_registry,
            pidfile: a.pidfile,
            group: a.group,
            log_level: a.log_level,
            runtime: a.runtime,
            shim: a.shim,
            port_announce: a.port_announce,
        })
    }

    pub fn log_filter(&self) -> String {
        let lvl = if self.log_level == "fatal" {
            "error"
        } else {
            &self.log_level
        };
        format!("{lvl},sqlx=warn,hyper=warn,reqwest=warn,h2=warn,rustls=warn")
    }

    /// Whether `registry` (host[:port]) is reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        if self.insecure_registries.iter().any(|r| r == registry) {
            return true;
        }
        if self
            .mirrors
            .iter()
            .any(|m| m.host == registry && m.insecure)
        {
            return true;
        }
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}
