//! `berth`: the bundled CLI of Berth. Engine control, docker context set-up,
//! diagnostics, and Docker's daily commands over the Docker Engine API.

mod build;
mod client;
mod container;
mod context;
mod doctor;
mod engine;
mod format;
mod image;
mod network;
mod system;
mod vm;
mod volume;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use client::Target;
use std::io::Write;

#[derive(Parser, Debug)]
#[command(
    name = "berth",
    version,
    about = "Berth: a Docker-compatible container manager",
    long_about = "Berth's command-line tool: start and stop the engine, set up the docker CLI to use it, \
diagnose problems, and run Docker's everyday commands against it.",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Daemon socket to connect to (unix:///path or tcp://host:port)
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    host: Option<String>,

    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start, stop and inspect the native Berth engine (berthd)
    #[command(subcommand)]
    Engine(engine::EngineCmd),
    /// Start, stop and inspect Berth's Linux VM and the engine inside it
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Check that the engine, runtime, registries and published ports work
    Doctor(doctor::DoctorArgs),
    /// Manage the `berth` docker context used by the docker CLI
    #[command(subcommand)]
    Context(context::ContextCmd),
    /// Print shell commands that point docker clients at Berth
    Env(context::EnvArgs),

    /// List containers
    Ps(container::PsArgs),
    /// Create and run a new container from an image
    Run(container::RunArgs),
    /// Create a new container
    Create(container::RunArgs),
    /// Start one or more stopped containers
    Start(container::StartArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Restart one or more containers
    Restart(container::StopArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Remove one or more containers
    Rm(container::RmArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// Execute a command in a running container
    Exec(container::ExecArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(container::StatsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(container::NamesArgs),
    /// Pause all processes within one or more containers
    Pause(container::NamesArgs),
    /// Unpause all processes within one or more containers
    Unpause(container::NamesArgs),
    /// List port mappings or a specific mapping for the container
    Port(container::PortArgs),
    /// Return low-level information on Docker objects
    Inspect(container::InspectArgs),

    /// List images
    Images(image::ImagesArgs),
    /// Download an image from a registry
    Pull(image::PullArgs),
    /// Upload an image to a registry
    Push(image::PushArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
    /// Remove one or more images
    Rmi(image::RmiArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),

    /// Manage volumes
    #[command(subcommand)]
    Volume(volume::VolumeCmd),
    /// Manage networks
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Manage Docker
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Show the Docker version information
    Version(system::VersionArgs),
    /// Display system-wide information
    Info(system::InfoArgs),

    /// Generate shell completions
    Completion {
        /// Shell: bash, zsh, fish (also elvish, powershell)
        shell: clap_complete::Shell,
    },
    /// Write man pages for berth and every subcommand into a directory
    Man {
        /// Output directory
        dir: std::path::PathBuf,
    },
}

/// docker's message for a missing or an extra argument (`'docker rm' requires at least 1
/// argument`), from the usage line clap renders for the subcommand; `None` for other errors.
fn arity_message(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind as K};
    match e.kind() {
        K::MissingRequiredArgument => {}
        // An extra positional value (an unknown flag stays clap's "unexpected argument").
        K::UnknownArgument => match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(a)) if !a.starts_with('-') => {}
            _ => return None,
        },
        _ => return None,
    }
    let usage = match e.get(ContextKind::Usage)? {
        ContextValue::StyledStr(s) => s.to_string(),
        _ => return None,
    };
    let line = usage
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage:"))?
        .trim();
    let mut words = Vec::new();
    let (mut min, mut max) = (0usize, Some(0usize));
    for t in line.split_whitespace() {
        let many = t.ends_with("...");
        let t = t.trim_end_matches("...");
        if t.starts_with('<') {
            min += 1;
        } else if t == "[OPTIONS]" {
            continue;
        } else if !t.starts_with('[') {
            words.push(t);
            continue;
        }
        max = if many { None } else { max.map(|m| m + 1) };
    }
    if words.len() < 2 {
        return None; // the top level: clap's message
    }
    let cmd = words.join(" ");
    let s = |n: usize| if n == 1 { "" } else { "s" };
    let need = match max {
        Some(m) if m == min => format!("requires {min} argument{}", s(min)),
        None => format!("requires at least {min} argument{}", s(min)),
        Some(m) if min == 0 => format!("requires at most {m} argument{}", s(m)),
        Some(m) => format!("requires at least {min} and at most {m} arguments"),
    };
    Some(format!(
        "berth: '{cmd}' {need}\n\nUsage:  {line}\n\nSee '{cmd} --help' for more information"
    ))
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if let Some(msg) = arity_message(&e) {
                // docker's wording for a wrong number of arguments, exit 1 as docker.
                eprintln!("{msg}");
                std::process::exit(1);
            }
            let _ = e.print();
            // docker: 0 for help, 1 for a missing argument, 125 for bad flags
            std::process::exit(match e.kind() {
                K::DisplayHelp
                | K::DisplayVersion
                | K::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                K::MissingRequiredArgument | K::MissingSubcommand => 1,
                _ => 125,
            });
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            if let Some(x) = e.downcast_ref::<client::Exit>() {
                if !x.msg.is_empty() {
                    eprintln!("{}", x.msg);
                }
                x.code
            } else {
                eprintln!("Error: {e:#}");
                1
            }
        }
    };
    let _ = std::io::stdout().flush();
    rt.shutdown_background();
    std::process::exit(code);
}

/// Runs the command; returns the exit code.
async fn run(cli: Cli) -> Result<i32> {
    let t = Target::resolve(cli.host.as_deref());
    match cli.cmd {
        Cmd::Engine(c) => engine::run(c).await,
        Cmd::Vm(c) => vm::run(c).await,
        Cmd::Doctor(a) => doctor::run(&t, a).await,
        Cmd::Context(c) => context::run(c),
        Cmd::Env(a) => context::env(&t, a),
        Cmd::Ps(a) => container::ps(&t, a).await,
        Cmd::Run(a) => container::run(&t, a, false).await,
        Cmd::Create(a) => container::run(&t, a, true).await,
        Cmd::Start(a) => container::start(&t, a).await,
        Cmd::Stop(a) => container::stop(&t, a, false).await,
        Cmd::Restart(a) => container::stop(&t, a, true).await,
        Cmd::Kill(a) => container::kill(&t, a).await,
        Cmd::Rm(a) => container::rm(&t, a).await,
        Cmd::Logs(a) => container::logs(&t, a).await,
        Cmd::Exec(a) => container::exec(&t, a).await,
        Cmd::Stats(a) => container::stats(&t, a).await,
        Cmd::Wait(a) => container::wait(&t, a).await,
        Cmd::Pause(a) => container::pause(&t, a, true).await,
        Cmd::Unpause(a) => container::pause(&t, a, false).await,
        Cmd::Port(a) => container::port(&t, a).await,
        Cmd::Inspect(a) => container::inspect(&t, a).await,
        Cmd::Images(a) => image::images(&t, a).await,
        Cmd::Pull(a) => image::pull(&t, a).await,
        Cmd::Push(a) => image::push(&t, a).await,
        Cmd::Tag(a) => image::tag(&t, a).await,
        Cmd::Rmi(a) => image::rmi(&t, a).await,
        Cmd::History(a) => image::history(&t, a).await,
        Cmd::Build(a) => build::build(&t, a).await,
        Cmd::Volume(c) => volume::run(&t, c).await,
        Cmd::Network(c) => network::run(&t, c).await,
        Cmd::System(c) => system::run(&t, c).await,
        Cmd::Version(a) => system::version(&t, a).await,
        Cmd::Info(a) => system::info(&t, a).await,
        Cmd::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "berth", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man { dir } => {
            man_pages(&dir)?;
            Ok(0)
        }
    }
}

fn man_pages(dir: &std::path::Path) -> Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fn walk(cmd: &clap::Command, prefix: &str, dir: &std::path::Path) -> Result<usize> {
        use anyhow::Context as _;
        let name = if prefix.is_empty() {
            cmd.get_name().to_string()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        let page = cmd.clone().name(leaked);
        let path = dir.join(format!("{name}.1"));
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        clap_mangen::Man::new(page).render(&mut f)?;
        let mut n = 1;
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            n += walk(sub, &name, dir)?;
        }
        Ok(n)
    }
    let mut cmd = Cli::command();
    cmd.build();
    let n = walk(&cmd, "", dir)?;
    eprintln!("wrote {n} man pages to {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn argument_counts_in_dockers_words() {
        let msg = |args: &[&str]| {
            let e = Cli::try_parse_from(args).expect_err("an error");
            arity_message(&e)
        };
        assert_eq!(
            msg(&["berth", "rm"])
                .as_deref()
                .and_then(|m| m.lines().next()),
            Some("berth: 'berth rm' requires at least 1 argument")
        );
        assert_eq!(
            msg(&["berth", "port"])
                .as_deref()
                .and_then(|m| m.lines().next()),
            Some("berth: 'berth port' requires at least 1 and at most 2 arguments")
        );
        assert_eq!(
            msg(&["berth", "port", "a", "b", "c"])
                .as_deref()
                .and_then(|m| m.lines().next()),
            Some("berth: 'berth port' requires at least 1 and at most 2 arguments")
        );
        let m = msg(&["berth", "tag", "a"]).expect("a message");
        assert!(
            m.starts_with("berth: 'berth tag' requires 2 arguments"),
            "{m}"
        );
        assert!(
            m.ends_with("See 'berth tag --help' for more information"),
            "{m}"
        );
        assert_eq!(msg(&["berth", "rm", "--bogus", "x"]), None);
    }

    #[test]
    fn docker_syntax_parses() {
        for args in [
            &[
                "berth", "run", "-it", "--rm", "-p", "8080:80", "-h", "box", "busybox", "sh", "-c",
                "ls -l",
            ][..],
            &["berth", "ps", "-a", "-q", "-n", "3", "--no-trunc"],
            &["berth", "-H", "unix:///x.sock", "images", "-q"],
            &["berth", "exec", "-it", "-u", "root", "c", "ls", "-la"],
            &["berth", "logs", "-f", "-t", "--tail", "5", "c"],
            &["berth", "stop", "-t", "3", "a", "b"],
            &["berth", "history", "-H=false", "busybox"],
            &["berth", "port", "web"],
            &["berth", "port", "web", "8080/tcp"],
            &[
                "berth",
                "run",
                "--rm",
                "--privileged",
                "--pid=host",
                "debian",
                "nsenter",
                "-t",
                "1",
                "-m",
            ],
            &["berth", "run", "--sig-proxy=false", "redis"],
            &["berth", "run", "--sig-proxy", "redis"],
        ] {
            Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }

    #[test]
    fn port_order_is_natural() {
        let mut v = vec![
            "9000/tcp -> 0.0.0.0:1",
            "81/udp -> 127.0.0.1:2",
            "8080/tcp -> [::]:10",
            "8080/tcp -> 0.0.0.0:9",
        ];
        v.sort_by(|a, b| container::natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "81/udp -> 127.0.0.1:2",
                "8080/tcp -> 0.0.0.0:9",
                "8080/tcp -> [::]:10",
                "9000/tcp -> 0.0.0.0:1",
            ]
        );
    }

    #[test]
    fn references_parse_as_docker_does() {
        use image::Reference;
        let r = Reference::parse("redis:7.2.3-alpine").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("docker.io", "library/redis", Some("7.2.3-alpine"))
        );
        let r = Reference::parse("localhost:5000/google-containers/ubuntu:19.23").unwrap();
        assert_eq!(
            (r.domain.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("localhost:5000", "google-containers/ubuntu", Some("19.23"))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("ubuntu@{d}")).unwrap();
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(d.as_str())));
        assert_eq!(Reference::parse("x:V1").unwrap().tag.as_deref(), Some("V1"));
        for (bad, msg) in [
            (
                "jadedjelly/Wit-demo:v2",
                "invalid reference format: repository name (jadedjelly/Wit-demo) must be lowercase",
            ),
            (
                "Redis",
                "invalid reference format: repository name (library/Redis) must be lowercase",
            ),
            ("redis:", "invalid reference format"),
            ("a b", "invalid reference format"),
        ] {
            let e = Reference::parse(bad).err().expect(bad);
            assert_eq!(e.to_string(), msg);
        }
    }
}
