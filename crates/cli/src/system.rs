//! `berth version`, `berth info`, `berth system df|prune|info|events`.

use crate::client::{self, daemon_err, exit, Target};
use crate::format::{self, Formatter};
use anyhow::Result;
use bollard::query_parameters as qp;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Show docker disk usage
    Df(DfArgs),
    /// Remove unused data
    Prune(PruneArgs),
    /// Display system-wide information
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Show detailed information on space usage
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    volumes: bool,
}

fn context_name() -> String {
    if std::env::var_os("DOCKER_HOST").is_some() {
        return "default".into();
    }
    match crate::context::current_context_host() {
        Some(_) => std::env::var("DOCKER_CONTEXT")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| crate::context::NAME.into()),
        None => "default".into(),
    }
}

fn client_info() -> Value {
    json!({
        "Platform": {"Name": "Berth"},
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": client::API_VERSION,
        "APIVersion": client::API_VERSION,
        "DefaultAPIVersion": client::API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": std::env::consts::OS,
        "Arch": go_arch(),
        "BuildTime": "",
        "Context": context_name(),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn version(t: &Target, a: VersionArgs) -> Result<i32> {
    let client = client_info();
    let server = match client::get_json(t, "/version").await {
        Ok(Some(mut v)) => {
            if let Some(o) = v.as_object_mut() {
                if let Some(x) = o.get("ApiVersion").cloned() {
                    o.insert("APIVersion".into(), x);
                }
            }
            Some(v)
        }
        Ok(None) => None,
        Err(e) => {
            if a.format.is_none() {
                print_client_version(&client);
            }
            return Err(e);
        }
    };
    if let Some(f) = &a.format {
        let v = json!({"Client": client, "Server": server});
        println!("{}", format::render_one(f, &v)?);
        return Ok(0);
    }
    print_client_version(&client);
    if let Some(s) = server {
        let g = |v: &Value, k: &str| {
            v.get(k)
                .map(format::go_print)
                .filter(|x| x != "<no value>")
                .unwrap_or_default()
        };
        println!();
        println!(
            "Server: {}",
            s.pointer("/Platform/Name")
                .and_then(|x| x.as_str())
                .unwrap_or("")
        );
        let comps = s
            .get("Components")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        for c in comps {
            let name = c.get("Name").and_then(|x| x.as_str()).unwrap_or("");
            println!(" {name}:");
            println!("  Version:          {}", g(&c, "Version"));
            if name == "Engine" {
                println!(
                    "  API version:      {} (minimum version {})",
                    g(&s, "ApiVersion"),
                    g(&s, "MinAPIVersion")
                );
                println!("  Go version:       {}", g(&s, "GoVersion"));
                println!("  Git commit:       {}", g(&s, "GitCommit"));
                println!("  Built:            {}", g(&s, "BuildTime"));
                println!("  OS/Arch:          {}/{}", g(&s, "Os"), g(&s, "Arch"));
                println!("  Experimental:     {}", g(&s, "Experimental"));
            } else if let Some(d) = c.get("Details").and_then(|x| x.as_object()) {
                for (k, v) in d {
                    let label = format!("{k}:");
                    println!("  {label:<18}{}", format::go_print(v));
                }
            }
        }
    }
    Ok(0)
}

fn print_client_version(c: &Value) {
    let s = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    println!("Client: Berth");
    println!(" Version:           {}", s("Version"));
    println!(" API version:       {}", s("ApiVersion"));
    println!(" OS/Arch:           {}/{}", s("Os"), s("Arch"));
    println!(" Context:           {}", s("Context"));
}

pub async fn info(t: &Target, a: InfoArgs) -> Result<i32> {
    let i = client::get_json(t, "/info").await;
    let client = client_info();
    if let Some(f) = &a.format {
        let mut v = i?.unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "ClientInfo".into(),
                json!({"Version": client["Version"], "Context": client["Context"], "Debug": false}),
            );
        }
        println!("{}", format::render_one(f, &v)?);
        return Ok(0);
    }
    println!("Client:");
    println!(" Version:    {}", client["Version"].as_str().unwrap_or(""));
    println!(" Context:    {}", client["Context"].as_str().unwrap_or(""));
    println!(" Debug Mode: false");
    println!();
    println!("Server:");
    let i = match i {
        Ok(Some(i)) => i,
        Ok(None) => return Err(exit(1, "Error response from daemon: page not found")),
        Err(e) => {
            println!("ERROR: {e}");
            println!("errors pretty printing info");
            return Ok(1);
        }
    };
    let g = |k: &str| {
        i.get(k)
            .map(format::go_print)
            .filter(|x| x != "<no value>")
            .unwrap_or_default()
    };
    println!(" Containers: {}", g("Containers"));
    println!("  Running: {}", g("ContainersRunning"));
    println!("  Paused: {}", g("ContainersPaused"));
    println!("  Stopped: {}", g("ContainersStopped"));
    println!(" Images: {}", g("Images"));
    println!(" Server Version: {}", g("ServerVersion"));
    println!(" Storage Driver: {}", g("Driver"));
    if let Some(ds) = i.get("DriverStatus").and_then(|x| x.as_array()) {
        for p in ds {
            if let Some(p) = p.as_array() {
                println!(
                    "  {}: {}",
                    p.first().map(format::go_print).unwrap_or_default(),
                    p.get(1).map(format::go_print).unwrap_or_default()
                );
            }
        }
    }
    println!(" Logging Driver: {}", g("LoggingDriver"));
    println!(" Cgroup Driver: {}", g("CgroupDriver"));
    println!(" Cgroup Version: {}", g("CgroupVersion"));
    println!(" Plugins:");
    let plug = |k: &str| {
        i.pointer(&format!("/Plugins/{k}"))
            .and_then(|x| x.as_array())
            .map(|a| a.iter().map(format::go_print).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    println!("  Volume: {}", plug("Volume"));
    println!("  Network: {}", plug("Network"));
    println!("  Log: {}", plug("Log"));
    println!(
        " Swarm: {}",
        i.pointer("/Swarm/LocalNodeState")
            .and_then(|x| x.as_str())
            .unwrap_or("inactive")
    );
    let mut runtimes: Vec<String> = i
        .get("Runtimes")
        .and_then(|x| x.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    runtimes.sort();
    println!(" Runtimes: {}", runtimes.join(" "));
    println!(" Default Runtime: {}", g("DefaultRuntime"));
    println!(" Init Binary: {}", g("InitBinary"));
    println!(
        " containerd version: {}",
        i.pointer("/ContainerdCommit/ID")
            .and_then(|x| x.as_str())
            .unwrap_or("")
    );
    println!(
        " runc version: {}",
        i.pointer("/RuncCommit/ID")
            .and_then(|x| x.as_str())
            .unwrap_or("")
    );
    println!(
        " init version: {}",
        i.pointer("/InitCommit/ID")
            .and_then(|x| x.as_str())
            .unwrap_or("")
    );
    if let Some(so) = i.get("SecurityOptions").and_then(|x| x.as_array()) {
        if !so.is_empty() {
            println!(" Security Options:");
            for o in so {
                let o = o.as_str().unwrap_or("");
                let mut name = "";
                let mut rest = Vec::new();
                for kv in o.split(',') {
                    match kv.split_once('=') {
                        Some(("name", n)) => name = n,
                        Some((k, v)) => rest.push((k, v)),
                        None => {}
                    }
                }
                println!("  {name}");
                for (k, v) in rest {
                    let mut k = k.to_string();
                    if let Some(f) = k.get(0..1) {
                        k = f.to_uppercase() + &k[1..];
                    }
                    println!("   {k}: {v}");
                }
            }
        }
    }
    println!(" Kernel Version: {}", g("KernelVersion"));
    println!(" Operating System: {}", g("OperatingSystem"));
    println!(" OSType: {}", g("OSType"));
    println!(" Architecture: {}", g("Architecture"));
    println!(" CPUs: {}", g("NCPU"));
    println!(
        " Total Memory: {}",
        format::bytes_size(i.get("MemTotal").and_then(|x| x.as_f64()).unwrap_or(0.0))
    );
    println!(" Name: {}", g("Name"));
    println!(" ID: {}", g("ID"));
    println!(" Docker Root Dir: {}", g("DockerRootDir"));
    println!(" Debug Mode: {}", g("Debug"));
    for (k, label) in [
        ("HttpProxy", "HTTP Proxy"),
        ("HttpsProxy", "HTTPS Proxy"),
        ("NoProxy", "No Proxy"),
    ] {
        let v = g(k);
        if !v.is_empty() {
            println!(" {label}: {v}");
        }
    }
    if let Some(l) = i
        .get("Labels")
        .and_then(|x| x.as_array())
        .filter(|l| !l.is_empty())
    {
        println!(" Labels:");
        for x in l {
            println!("  {}", format::go_print(x));
        }
    }
    println!(" Experimental: {}", g("ExperimentalBuild"));
    if let Some(c) = i
        .pointer("/RegistryConfig/InsecureRegistryCIDRs")
        .and_then(|x| x.as_array())
    {
        let mut names: Vec<String> = i
            .pointer("/RegistryConfig/IndexConfigs")
            .and_then(|x| x.as_object())
            .map(|m| {
                m.values()
                    .filter(|v| v.get("Secure").and_then(|s| s.as_bool()) == Some(false))
                    .filter_map(|v| v.get("Name").and_then(|n| n.as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        if !c.is_empty() || !names.is_empty() {
            println!(" Insecure Registries:");
            for n in names {
                println!("  {n}");
            }
            for x in c {
                println!("  {}", format::go_print(x));
            }
        }
    }
    if let Some(m) = i
        .pointer("/RegistryConfig/Mirrors")
        .and_then(|x| x.as_array())
        .filter(|m| !m.is_empty())
    {
        println!(" Registry Mirrors:");
        for x in m {
            println!("  {}", format::go_print(x));
        }
    }
    println!(" Live Restore Enabled: {}", g("LiveRestoreEnabled"));
    if let Some(w) = i
        .get("Warnings")
        .and_then(|x| x.as_array())
        .filter(|w| !w.is_empty())
    {
        println!();
        for x in w {
            eprintln!("{}", format::go_print(x));
        }
    }
    println!();
    Ok(0)
}

fn pct(part: i64, total: i64) -> String {
    if total > 0 {
        format!(
            "{} ({}%)",
            format::human_size4(part as f64),
            part * 100 / total
        )
    } else {
        format::human_size4(part as f64)
    }
}

pub async fn run(t: &Target, c: SystemCmd) -> Result<i32> {
    match c {
        SystemCmd::Info(a) => info(t, a).await,
        SystemCmd::Df(a) => {
            let v = client::get_json(t, "/system/df")
                .await?
                .ok_or_else(|| exit(1, "Error response from daemon: page not found"))?;
            let arr = |k: &str| {
                v.get(k)
                    .and_then(|x| x.as_array())
                    .cloned()
                    .unwrap_or_default()
            };
            let n = |x: &Value, k: &str| x.get(k).and_then(|y| y.as_i64()).unwrap_or(0);
            let images = arr("Images");
            let layers = v.get("LayersSize").and_then(|x| x.as_i64()).unwrap_or(0);
            let mut used = 0;
            let mut active_images = 0;
            for i in &images {
                if n(i, "Containers") > 0 {
                    active_images += 1;
                    if n(i, "Size") != -1 && n(i, "SharedSize") != -1 {
                        used += n(i, "Size") - n(i, "SharedSize");
                    }
                }
            }
            let containers = arr("Containers");
            let (mut csize, mut crecl, mut cactive) = (0, 0, 0);
            for c in &containers {
                let s = n(c, "SizeRw");
                csize += s;
                if c.get("State").and_then(|x| x.as_str()) == Some("running") {
                    cactive += 1;
                } else {
                    crecl += s;
                }
            }
            let vols = arr("Volumes");
            let (mut vsize, mut vrecl, mut vactive) = (0, 0, 0);
            for x in &vols {
                let s = x
                    .pointer("/UsageData/Size")
                    .and_then(|y| y.as_i64())
                    .unwrap_or(-1);
                let rc = x
                    .pointer("/UsageData/RefCount")
                    .and_then(|y| y.as_i64())
                    .unwrap_or(0);
                if rc > 0 {
                    vactive += 1;
                }
                if s != -1 {
                    vsize += s;
                    if rc == 0 {
                        vrecl += s;
                    }
                }
            }
            let cache = arr("BuildCache");
            let (mut bsize, mut brecl, mut bactive) = (0, 0, 0);
            for x in &cache {
                let s = n(x, "Size");
                let in_use = x.get("InUse").and_then(|y| y.as_bool()).unwrap_or(false);
                let shared = x.get("Shared").and_then(|y| y.as_bool()).unwrap_or(false);
                if in_use {
                    bactive += 1;
                }
                if !shared {
                    bsize += s;
                }
                if !in_use && !shared {
                    brecl += s;
                }
            }
            let rows = vec![
                json!({"Type": "Images", "TotalCount": images.len().to_string(), "Active": active_images.to_string(), "Size": format::human_size4(layers as f64), "Reclaimable": pct(layers - used, layers)}),
                json!({"Type": "Containers", "TotalCount": containers.len().to_string(), "Active": cactive.to_string(), "Size": format::human_size4(csize as f64), "Reclaimable": pct(crecl, csize)}),
                json!({"Type": "Local Volumes", "TotalCount": vols.len().to_string(), "Active": vactive.to_string(), "Size": format::human_size4(vsize as f64), "Reclaimable": pct(vrecl, vsize)}),
                json!({"Type": "Build Cache", "TotalCount": cache.len().to_string(), "Active": bactive.to_string(), "Size": format::human_size4(bsize as f64), "Reclaimable": format::human_size4(brecl as f64)}),
            ];
            let _ = a.verbose;
            let f = Formatter::new(
                a.format.as_deref().unwrap_or(""),
                "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
            )?;
            print!(
                "{}",
                f.render(
                    &rows,
                    &[
                        ("Type", "TYPE"),
                        ("TotalCount", "TOTAL"),
                        ("Active", "ACTIVE"),
                        ("Size", "SIZE"),
                        ("Reclaimable", "RECLAIMABLE")
                    ]
                )?
            );
            Ok(0)
        }
        SystemCmd::Prune(a) => {
            let d = t.connect()?;
            let mut warning = String::from("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n");
            if a.volumes {
                warning.push_str("  - all anonymous volumes not used by at least one container\n");
            }
            if a.all {
                warning
                    .push_str("  - all images without at least one container associated to them\n");
            } else {
                warning.push_str("  - all dangling images\n");
            }
            warning.push_str("  - unused build cache\n");
            if !a.force && !crate::volume::confirm(&warning) {
                return Ok(0);
            }
            let f = client::filters(&a.filter)?;
            let mut total: i64 = 0;
            let c = d
                .prune_containers(Some(
                    qp::PruneContainersOptionsBuilder::new().filters(&f).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let cs = c.containers_deleted.unwrap_or_default();
            if !cs.is_empty() {
                println!("Deleted Containers:");
                for x in cs {
                    println!("{x}");
                }
                println!();
            }
            total += c.space_reclaimed.unwrap_or(0);
            let n = d
                .prune_networks(Some(
                    qp::PruneNetworksOptionsBuilder::new().filters(&f).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let ns = n.networks_deleted.unwrap_or_default();
            if !ns.is_empty() {
                println!("Deleted Networks:");
                for x in ns {
                    println!("{x}");
                }
                println!();
            }
            if a.volumes {
                let v = d
                    .prune_volumes(Some(
                        qp::PruneVolumesOptionsBuilder::new().filters(&f).build(),
                    ))
                    .await
                    .map_err(|e| daemon_err(t, e, 1))?;
                let vs = v.volumes_deleted.unwrap_or_default();
                if !vs.is_empty() {
                    println!("Deleted Volumes:");
                    for x in vs {
                        println!("{x}");
                    }
                    println!();
                }
                total += v.space_reclaimed.unwrap_or(0);
            }
            let mut fi = f.clone();
            fi.insert("dangling".into(), vec![(!a.all).to_string()]);
            let i = d
                .prune_images(Some(
                    qp::PruneImagesOptionsBuilder::new().filters(&fi).build(),
                ))
                .await
                .map_err(|e| daemon_err(t, e, 1))?;
            let is = i.images_deleted.unwrap_or_default();
            if !is.is_empty() {
                println!("Deleted Images:");
                for x in is {
                    if let Some(u) = x.untagged {
                        println!("untagged: {u}");
                    }
                    if let Some(dl) = x.deleted {
                        println!("deleted: {dl}");
                    }
                }
                println!();
            }
            total += i.space_reclaimed.unwrap_or(0);
            let (st, body) = client::raw(t, "POST", "/build/prune").await?;
            if st < 400 {
                let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let ids = b
                    .get("CachesDeleted")
                    .and_then(|x| x.as_array())
                    .cloned()
                    .unwrap_or_default();
                if !ids.is_empty() {
                    println!("Deleted build cache objects:");
                    for x in ids {
                        println!("{}", format::go_print(&x));
                    }
                    println!();
                }
                total += b
                    .get("SpaceReclaimed")
                    .and_then(|x| x.as_i64())
                    .unwrap_or(0);
            }
            println!(
                "Total reclaimed space: {}",
                format::human_size4(total as f64)
            );
            Ok(0)
        }
    }
}
