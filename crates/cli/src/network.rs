//! `berth network create|ls|inspect|rm|prune|connect|disconnect`.

use crate::client::{self, daemon_err, Target};
use crate::format::{self, Formatter};
use anyhow::Result;
use bollard::query_parameters as qp;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more networks
    Inspect(InspectArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Remove all unused networks
    Prune(PruneArgs),
    /// Connect a container to a network
    Connect(ConnectArgs),
    /// Disconnect a container from a network
    Disconnect(ConnectArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Driver to manage the Network
    #[arg(short = 'd', long, default_value = "bridge")]
    driver: String,
    /// Subnet in CIDR format that represents a network segment
    #[arg(long)]
    subnet: Vec<String>,
    /// IPv4 or IPv6 Gateway for the master subnet
    #[arg(long)]
    gateway: Vec<String>,
    /// Allocate container ip from a sub-range
    #[arg(long = "ip-range")]
    ip_range: Vec<String>,
    /// Restrict external access to the network
    #[arg(long)]
    internal: bool,
    /// Enable manual container attachment
    #[arg(long)]
    attachable: bool,
    /// Set metadata on a network
    #[arg(long)]
    label: Vec<String>,
    /// Set driver specific options
    #[arg(short = 'o', long = "opt")]
    opt: Vec<String>,
    /// Enable or disable IPv6 networking
    #[arg(long)]
    ipv6: bool,
    /// NETWORK
    name: String,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Provide filter values (e.g. "driver=bridge")
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Do not truncate the output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display network IDs
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Verbose output for diagnostics
    #[arg(short = 'v', long)]
    verbose: bool,
    /// NETWORK...
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Do not error if the network does not exist
    #[arg(short = 'f', long)]
    force: bool,
    /// NETWORK...
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Force the container to disconnect from a network (disconnect only)
    #[arg(short = 'f', long)]
    force: bool,
    /// Add network-scoped alias for the container (connect only)
    #[arg(long)]
    alias: Vec<String>,
    /// NETWORK
    network: String,
    /// CONTAINER
    container: String,
}

fn kv(list: &[String]) -> std::collections::HashMap<String, String> {
    list.iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub async fn run(t: &Target, c: NetworkCmd) -> Result<i32> {
    let d = t.connect()?;
    match c {
        NetworkCmd::Create(a) => {
            let mut ipam_config = Vec::new();
            for (i, s) in a.subnet.iter().enumerate() {
                let mut c = json!({"Subnet": s});
                if let Some(g) = a.gateway.get(i) {
                    c["Gateway"] = json!(g);
                }
                if let Some(r) = a.ip_range.get(i) {
                    c["IPRange"] = json!(r);
                }
                ipam_config.push(c);
            }
            let body = json!({
                "Name": a.name, "Driver": a.driver, "Internal": a.internal,
                "Attachable": a.attachable, "EnableIPv6": a.ipv6,
                "Labels": kv(&a.label), "Options": kv(&a.opt),
                "IPAM": {"Driver": "default", "Config": ipam_config},
            });
            let req: bollard::models::NetworkCreateRequest = serde_json::from_value(body)?;
            let r = d
                .create_network(req)
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            println!("{}", r.id);
            Ok(0)
        }
        NetworkCmd::Ls(a) => {
            let f = client::filters(&a.filter)?;
            let list = d
                .list_networks(Some(
                    qp::ListNetworksOptionsBuilder::new().filters(&f).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let mut rows: Vec<Value> = list
                .iter()
                .map(|n| {
                    let id = n.id.clone().unwrap_or_default();
                    let mut labels: Vec<String> = n
                        .labels
                        .as_ref()
                        .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                        .unwrap_or_default();
                    labels.sort();
                    json!({
                        "ID": if a.no_trunc { id.clone() } else { format::short_id(&id) },
                        "Name": n.name.clone().unwrap_or_default(),
                        "Driver": n.driver.clone().unwrap_or_default(),
                        "Scope": n.scope.clone().unwrap_or_default(),
                        "IPv6": n.enable_ipv6.unwrap_or(false).to_string(),
                        "Internal": n.internal.unwrap_or(false).to_string(),
                        "Labels": labels.join(","),
                        "CreatedAt": n.created.clone().unwrap_or_default(),
                    })
                })
                .collect();
            rows.sort_by(|x, y| x["Name"].as_str().cmp(&y["Name"].as_str()));
            if a.quiet && a.format.is_none() {
                for r in &rows {
                    println!("{}", r["ID"].as_str().unwrap_or(""));
                }
                return Ok(0);
            }
            let fm = Formatter::new(
                a.format.as_deref().unwrap_or(""),
                "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}",
            )?;
            print!(
                "{}",
                fm.render(
                    &rows,
                    &[
                        ("ID", "NETWORK ID"),
                        ("Name", "NAME"),
                        ("Driver", "DRIVER"),
                        ("Scope", "SCOPE"),
                        ("IPv6", "IPV6"),
                        ("Internal", "INTERNAL"),
                        ("Labels", "LABELS"),
                        ("CreatedAt", "CREATED AT"),
                    ]
                )?
            );
            Ok(0)
        }
        NetworkCmd::Inspect(a) => {
            let _ = a.verbose;
            crate::volume::inspect_objects(
                t,
                "/networks/",
                "network",
                &a.names,
                a.format.as_deref(),
            )
            .await
        }
        NetworkCmd::Rm(a) => {
            let mut failed = false;
            for n in &a.names {
                match d.remove_network(n).await {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        if a.force && client::status_of(&e) == Some(404) {
                            continue;
                        }
                        eprintln!("{}", daemon_err(t, e, 1));
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        NetworkCmd::Prune(a) => {
            if !a.force
                && !crate::volume::confirm(
                    "WARNING! This will remove all custom networks not used by at least one container.",
                )
            {
                return Ok(0);
            }
            let f = client::filters(&a.filter)?;
            let r = d
                .prune_networks(Some(
                    qp::PruneNetworksOptionsBuilder::new().filters(&f).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let deleted = r.networks_deleted.unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for n in deleted {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        NetworkCmd::Connect(a) => {
            let req: bollard::models::NetworkConnectRequest = serde_json::from_value(json!({
                "Container": a.container,
                "EndpointConfig": {"Aliases": a.alias},
            }))?;
            d.connect_network(&a.network, req)
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            Ok(0)
        }
        NetworkCmd::Disconnect(a) => {
            let req: bollard::models::NetworkDisconnectRequest =
                serde_json::from_value(json!({"Container": a.container, "Force": a.force}))?;
            d.disconnect_network(&a.network, req)
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            Ok(0)
        }
    }
}
