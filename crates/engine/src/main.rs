//! berthd: the Berth container engine. Serves the Docker Engine API (v1.44) on a Unix socket.

// serde_json::json! of /info is deep.
#![recursion_limit = "256"]

mod api;
mod build;
mod config;
mod containers;
mod content;
mod daemon;
mod error;
mod events;
mod images;
mod networks;
mod store;
mod util;
mod volumes;

use anyhow::Context;
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let args = config::Args::parse();
    let cfg = config::Config::from_args(args)?;
    let filter =
        tracing_subscriber::EnvFilter::try_new(cfg.log_filter()).context("invalid --log-level")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Plain text in files and the VM console; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(daemon::run(cfg))
}
