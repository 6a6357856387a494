//! `berth volume create|ls|inspect|rm|prune`.

use crate::client::{self, daemon_err, exit, Target};
use crate::format::{self, Formatter};
use anyhow::Result;
use bollard::query_parameters as qp;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume
    Create(CreateArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes
    Inspect(InspectArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, default_value = "local")]
    driver: String,
    /// Set metadata for a volume
    #[arg(long = "label")]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Specify volume name
    #[arg(long = "name")]
    name_flag: Option<String>,
    /// [VOLUME]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Only display volume names
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// VOLUME...
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    force: bool,
    /// VOLUME...
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

fn kv(list: &[String]) -> HashMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Ask "Are you sure you want to continue? [y/N]" on stdin.
pub fn confirm(warning: &str) -> bool {
    use std::io::Write;
    print!("{warning}\nAre you sure you want to continue? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut s = String::new();
    if std::io::stdin().read_line(&mut s).is_err() {
        return false;
    }
    matches!(s.trim().to_lowercase().as_str(), "y" | "yes")
}

pub async fn run(t: &Target, c: VolumeCmd) -> Result<i32> {
    let d = t.connect()?;
    match c {
        VolumeCmd::Create(a) => {
            if let (Some(f), Some(n)) = (&a.name_flag, &a.name) {
                if f != n {
                    return Err(exit(1, "conflicting options: cannot specify a volume-name through both --name and as a positional arg".to_string()));
                }
            }
            let req = bollard::models::VolumeCreateRequest {
                name: a.name.or(a.name_flag),
                driver: Some(a.driver),
                driver_opts: Some(kv(&a.opt)),
                labels: Some(kv(&a.label)),
                ..Default::default()
            };
            let v = d
                .create_volume(req)
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            println!("{}", v.name);
            Ok(0)
        }
        VolumeCmd::Ls(a) => {
            let f = client::filters(&a.filter)?;
            let r = d
                .list_volumes(Some(
                    qp::ListVolumesOptionsBuilder::new().filters(&f).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let mut vols = r.volumes.unwrap_or_default();
            vols.sort_by(|a, b| a.name.cmp(&b.name));
            let rows: Vec<Value> = vols
                .iter()
                .map(|v| {
                    let mut labels: Vec<String> =
                        v.labels.iter().map(|(k, x)| format!("{k}={x}")).collect();
                    labels.sort();
                    let (size, links) = match &v.usage_data {
                        Some(u) => (
                            if u.size < 0 { "N/A".into() } else { format::human_size(u.size as f64) },
                            if u.ref_count < 0 { "N/A".into() } else { u.ref_count.to_string() },
                        ),
                        None => ("N/A".to_string(), "N/A".to_string()),
                    };
                    json!({
                        "Name": v.name, "Driver": v.driver,
                        "Scope": v.scope.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "local".into()),
                        "Mountpoint": v.mountpoint, "Labels": labels.join(","),
                        "Links": links, "Size": size,
                        "CreatedAt": v.created_at.clone().unwrap_or_default(),
                        "Availability": "N/A", "Group": "N/A", "Status": "N/A",
                    })
                })
                .collect();
            if a.quiet && a.format.is_none() {
                for r in &rows {
                    println!("{}", r["Name"].as_str().unwrap_or(""));
                }
                return Ok(0);
            }
            let fm = Formatter::new(
                a.format.as_deref().unwrap_or(""),
                "table {{.Driver}}\t{{.Name}}",
            )?;
            print!(
                "{}",
                fm.render(
                    &rows,
                    &[
                        ("Name", "VOLUME NAME"),
                        ("Driver", "DRIVER"),
                        ("Scope", "SCOPE"),
                        ("Mountpoint", "MOUNTPOINT"),
                        ("Labels", "LABELS"),
                        ("Links", "LINKS"),
                        ("Size", "SIZE"),
                        ("CreatedAt", "CREATED AT"),
                    ]
                )?
            );
            Ok(0)
        }
        VolumeCmd::Inspect(a) => {
            inspect_objects(t, "/volumes/", "volume", &a.names, a.format.as_deref()).await
        }
        VolumeCmd::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                let o = qp::RemoveVolumeOptionsBuilder::new().force(a.force).build();
                match d.remove_volume(n, Some(o)).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        if a.force && client::status_of(&e) == Some(404) {
                            println!("{n}");
                            continue;
                        }
                        eprintln!("{}", daemon_err(t, e, 1));
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        VolumeCmd::Prune(a) => {
            let warning = if a.all {
                "WARNING! This will remove all local volumes not used by at least one container."
            } else {
                "WARNING! This will remove anonymous local volumes not used by at least one container."
            };
            if !a.force && !confirm(warning) {
                return Ok(0);
            }
            let mut f = client::filters(&a.filter)?;
            if a.all {
                f.insert("all".into(), vec!["true".into()]);
            }
            let r = d
                .prune_volumes(Some(
                    qp::PruneVolumesOptionsBuilder::new().filters(&f).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let deleted = r.volumes_deleted.unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Volumes:");
                for v in deleted {
                    println!("{v}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                format::human_size(r.space_reclaimed.unwrap_or(0) as f64)
            );
            Ok(0)
        }
    }
}

/// `volume inspect` / `network inspect`: the engine's JSON, an array.
pub async fn inspect_objects(
    t: &Target,
    prefix: &str,
    kind: &str,
    names: &[String],
    format: Option<&str>,
) -> Result<i32> {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for n in names {
        let _ = kind;
        match client::get_json_or_msg(t, &format!("{prefix}{}", client::enc(n))).await {
            Ok(Ok(v)) => found.push(v),
            Ok(Err(msg)) => errors.push(format!("Error response from daemon: {msg}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    match format {
        Some(f) if !f.is_empty() && f != "json" => {
            for v in &found {
                println!("{}", format::render_one(f, v)?);
            }
        }
        _ => println!("{}", format::indent_json(&Value::Array(found))),
    }
    if !errors.is_empty() {
        return Err(exit(1, errors.join("\n")));
    }
    Ok(0)
}
