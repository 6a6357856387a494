//! Container commands: ps, run, create, start, stop, restart, kill, rm,
//! logs, exec, stats, wait, pause/unpause, and `inspect` for any object.

use crate::client::{self, daemon_err, exit, status_of, Target};
use crate::format::{self, Formatter};
use anyhow::Result;
use bollard::container::LogOutput;
use bollard::query_parameters as qp;
use bollard::Docker;
use clap::Args;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::io::{IsTerminal, Write};
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------
// ps

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_negative_numbers = true)]
    last: i32,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    size: bool,
}

pub const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Platform", "PLATFORM"),
];

/// Docker's `DisplayablePorts`.
pub fn display_ports(ports: &[Value]) -> String {
    let mut ps: Vec<(String, i64, i64, String)> = ports
        .iter()
        .map(|p| {
            (
                p.get("IP")
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string(),
                p.get("PublicPort").and_then(|x| x.as_i64()).unwrap_or(0),
                p.get("PrivatePort").and_then(|x| x.as_i64()).unwrap_or(0),
                p.get("Type")
                    .and_then(|x| x.as_str())
                    .unwrap_or("tcp")
                    .to_string(),
            )
        })
        .collect();
    ps.sort_by(|a, b| (a.1, a.2, &a.3, &a.0).cmp(&(b.1, b.2, &b.3, &b.0)));
    ps.dedup();
    let mut out: Vec<String> = Vec::new();
    for (ip, public, private, ty) in ps {
        if public != 0 {
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            let ip = if ip.is_empty() {
                "0.0.0.0".to_string()
            } else {
                ip
            };
            out.push(format!("{ip}:{public}->{private}/{ty}"));
        } else {
            out.push(format!("{private}/{ty}"));
        }
    }
    out.join(", ")
}

fn ps_row(c: &Value, trunc: bool, size: bool) -> Value {
    let s = |k: &str| c.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let id = s("Id");
    let created = c.get("Created").and_then(|x| x.as_i64()).unwrap_or(0);
    let mut names: Vec<String> = c
        .get("Names")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str())
                .map(|n| n.trim_start_matches('/').to_string())
                .collect()
        })
        .unwrap_or_default();
    if trunc {
        names.retain(|n| !n.contains('/'));
    }
    let mut image = s("Image");
    if trunc && image.starts_with("sha256:") {
        image = format::short_id(&image);
    }
    let command = s("Command");
    let command = format::go_quote(&if trunc {
        format::ellipsis(&command, 20)
    } else {
        command
    });
    let mut labels: Vec<String> = c
        .get("Labels")
        .and_then(|x| x.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    labels.sort();
    let mounts: Vec<String> = c
        .get("Mounts")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .map(|m| {
                    let name = m
                        .get("Name")
                        .and_then(|x| x.as_str())
                        .filter(|n| !n.is_empty())
                        .or_else(|| m.get("Source").and_then(|x| x.as_str()))
                        .unwrap_or("");
                    if trunc {
                        format::ellipsis(name, 15)
                    } else {
                        name.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let local_volumes = c
        .get("Mounts")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter(|m| m.get("Driver").and_then(|d| d.as_str()) == Some("local"))
                .count()
        })
        .unwrap_or(0);
    let mut networks: Vec<String> = c
        .pointer("/NetworkSettings/Networks")
        .and_then(|x| x.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    networks.sort();
    let size_s = if size || c.get("SizeRw").is_some() {
        let rw = c.get("SizeRw").and_then(|x| x.as_i64()).unwrap_or(0);
        let root = c.get("SizeRootFs").and_then(|x| x.as_i64()).unwrap_or(0);
        format!(
            "{} (virtual {})",
            format::human_size(rw as f64),
            format::human_size(root as f64)
        )
    } else {
        String::new()
    };
    let ports = c
        .get("Ports")
        .and_then(|x| x.as_array())
        .cloned()
        .unwrap_or_default();
    json!({
        "ID": if trunc { format::short_id(&id) } else { id },
        "Image": image,
        "Command": command,
        "CreatedAt": format::created_at(created),
        "RunningFor": format::ago(created),
        "Ports": display_ports(&ports),
        "State": s("State"),
        "Status": s("Status"),
        "Size": size_s,
        "Names": names.join(","),
        "Labels": labels.join(","),
        "Mounts": mounts.join(","),
        "Networks": networks.join(","),
        "LocalVolumes": local_volumes.to_string(),
        "Platform": "",
    })
}

pub async fn list_containers(
    t: &Target,
    d: &Docker,
    all: bool,
    limit: Option<i32>,
    size: bool,
    filters: &std::collections::HashMap<String, Vec<String>>,
) -> Result<Vec<Value>> {
    let mut b = qp::ListContainersOptionsBuilder::new()
        .all(all)
        .size(size)
        .filters(filters);
    if let Some(l) = limit {
        b = b.limit(l);
    }
    let list = d
        .list_containers(Some(b.build()))
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    Ok(list
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect())
}

pub async fn ps(t: &Target, a: PsArgs) -> Result<i32> {
    let d = t.connect()?;
    let filters = client::filters(&a.filter)?;
    let limit = if a.latest {
        Some(1)
    } else if a.last > 0 {
        Some(a.last)
    } else {
        None
    };
    let fmt = a.format.clone().unwrap_or_default();
    let want_size = a.size || fmt.contains(".Size");
    let list = list_containers(t, &d, a.all || limit.is_some(), limit, want_size, &filters).await?;
    let rows: Vec<Value> = list
        .iter()
        .map(|c| ps_row(c, !a.no_trunc, want_size))
        .collect();
    if a.quiet && a.format.is_none() {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or(""));
        }
        return Ok(0);
    }
    let default = if a.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}"
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"
    };
    let f = Formatter::new(&fmt, default)?;
    print!("{}", f.render(&rows, PS_HEADERS)?);
    Ok(0)
}

// ---------------------------------------------------------------------------
// run / create

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Automatically remove the container and its associated anonymous volumes when it exits
    #[arg(long)]
    rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long)]
    mount: Vec<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    env_file: Vec<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    label: Vec<String>,
    /// Restart policy to apply when a container exits
    #[arg(long, default_value = "no")]
    restart: String,
    /// Connect a container to a network
    #[arg(long = "network", alias = "net")]
    network: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    hostname: Option<String>,
    /// Expose a port or a range of ports
    #[arg(long)]
    expose: Vec<String>,
    /// Memory limit
    #[arg(short = 'm', long)]
    memory: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    cpus: Option<f64>,
    /// Give extended privileges to this container
    #[arg(long)]
    privileged: bool,
    /// PID namespace to use
    #[arg(long)]
    pid: Option<String>,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    sig_proxy: bool,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pull: String,
    /// Suppress the pull output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    platform: Option<String>,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    stop_timeout: Option<i64>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    read_only: bool,
    /// Mount a tmpfs directory
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long)]
    attach: Vec<String>,
    /// IMAGE
    image: String,
    /// [COMMAND] [ARG...]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn parse_bytes(s: &str) -> Result<i64> {
    let s = s.trim().to_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last() {
        Some('k') => (&s[..s.trim_end_matches('b').len() - 1], 1024i64),
        Some('m') => (&s[..s.trim_end_matches('b').len() - 1], 1024 * 1024),
        Some('g') => (&s[..s.trim_end_matches('b').len() - 1], 1024 * 1024 * 1024),
        _ => (s.trim_end_matches('b'), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| exit(125, format!("invalid size: '{s}'")))?;
    Ok((n * mult as f64) as i64)
}

/// `-p [ip:][hostPort:]containerPort[/proto]` → (container port key, bindings)
fn parse_publish(p: &str) -> Result<Vec<(String, String, String)>> {
    let (spec, proto) = match p.rsplit_once('/') {
        Some((s, pr)) => (s, pr.to_string()),
        None => (p, "tcp".into()),
    };
    let parts: Vec<&str> = if spec.starts_with('[') {
        // [ipv6]:host:container
        let end = spec.find(']').unwrap_or(0);
        let ip = &spec[1..end];
        let rest: Vec<&str> = spec[end + 1..].trim_start_matches(':').split(':').collect();
        let mut v = vec![ip];
        v.extend(rest);
        v
    } else {
        spec.split(':').collect()
    };
    let (ip, host, cont) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => {
            return Err(exit(
                125,
                format!("invalid publish opts format (should be name=value but no '=' found): {p}"),
            ))
        }
    };
    let range = |s: &str| -> Result<(u32, u32)> {
        let bad = || exit(125, format!("invalid containerPort: {s}"));
        match s.split_once('-') {
            Some((a, b)) => Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)),
            None => {
                let n = s.parse().map_err(|_| bad())?;
                Ok((n, n))
            }
        }
    };
    let (c0, c1) = range(cont)?;
    let hr = if host.is_empty() {
        None
    } else {
        Some(range(host)?)
    };
    let mut out = Vec::new();
    for (i, cp) in (c0..=c1).enumerate() {
        let hp = match hr {
            Some((h0, h1)) if h1 > h0 && h1 - h0 == c1 - c0 => (h0 + i as u32).to_string(),
            Some((h0, h1)) if h1 > h0 => format!("{h0}-{h1}"),
            Some((h0, _)) => h0.to_string(),
            None => String::new(),
        };
        out.push((format!("{cp}/{proto}"), ip.to_string(), hp));
    }
    Ok(out)
}

fn parse_mount(s: &str) -> Result<Value> {
    let mut m = Map::new();
    let mut ty = "volume".to_string();
    let mut ro = false;
    let mut vol_opts = Map::new();
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k.trim().to_lowercase().as_str() {
            "type" => ty = v.to_string(),
            "source" | "src" => {
                m.insert("Source".into(), json!(v));
            }
            "target" | "destination" | "dst" => {
                m.insert("Target".into(), json!(v));
            }
            "readonly" | "ro" => ro = v.is_empty() || v == "true" || v == "1",
            "volume-nocopy" => {
                vol_opts.insert("NoCopy".into(), json!(v.is_empty() || v == "true"));
            }
            "tmpfs-size" => {
                m.insert("TmpfsOptions".into(), json!({"SizeBytes": parse_bytes(v)?}));
            }
            "bind-propagation" => {
                m.insert("BindOptions".into(), json!({"Propagation": v}));
            }
            other => return Err(exit(125, format!("invalid argument \"{s}\" for \"--mount\" flag: unexpected key '{other}' in '{kv}'"))),
        }
    }
    if !m.contains_key("Target") {
        return Err(exit(
            125,
            format!("invalid argument \"{s}\" for \"--mount\" flag: target is required"),
        ));
    }
    m.insert("Type".into(), json!(ty));
    if ro {
        m.insert("ReadOnly".into(), json!(true));
    }
    if !vol_opts.is_empty() {
        m.insert("VolumeOptions".into(), Value::Object(vol_opts));
    }
    Ok(Value::Object(m))
}

fn env_files(files: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let s = std::fs::read_to_string(f).map_err(|e| exit(125, format!("open {f}: {e}")))?;
        for l in s.lines() {
            let l = l.trim_start();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            out.push(expand_env(l));
        }
    }
    Ok(out)
}

/// `-e NAME` takes the value from the local environment (dropped if unset).
fn expand_env(e: &str) -> String {
    if e.contains('=') {
        e.to_string()
    } else {
        match std::env::var(e) {
            Ok(v) => format!("{e}={v}"),
            Err(_) => e.to_string(),
        }
    }
}

fn create_body(a: &RunArgs) -> Result<Value> {
    let mut env = env_files(&a.env_file)?;
    env.extend(a.env.iter().map(|e| expand_env(e)));
    let mut labels = Map::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        labels.insert(k.into(), json!(v));
    }
    let mut exposed = Map::new();
    let mut bindings: Map<String, Value> = Map::new();
    for p in &a.publish {
        for (key, ip, hp) in parse_publish(p)? {
            exposed.insert(key.clone(), json!({}));
            let list = bindings.entry(key).or_insert_with(|| json!([]));
            if let Some(arr) = list.as_array_mut() {
                arr.push(json!({"HostIp": ip, "HostPort": hp}));
            }
        }
    }
    for e in &a.expose {
        let key = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        exposed.insert(key, json!({}));
    }
    let mut binds = Vec::new();
    let mut volumes = Map::new();
    for v in &a.volume {
        // -v /path (anonymous volume) or -v src:dst[:opts]
        if v.split(':').count() == 1 {
            volumes.insert(v.clone(), json!({}));
        } else {
            binds.push(json!(v));
        }
    }
    let mut mounts: Vec<Value> = Vec::new();
    for m in &a.mount {
        mounts.push(parse_mount(m)?);
    }
    let restart = {
        let (name, count) = match a.restart.split_once(':') {
            Some((n, c)) => (
                n.to_string(),
                c.parse::<i64>().map_err(|_| {
                    exit(
                        125,
                        "invalid restart policy format: maximum retry count must be an integer"
                            .to_string(),
                    )
                })?,
            ),
            None => (a.restart.clone(), 0),
        };
        if !["no", "always", "unless-stopped", "on-failure", ""].contains(&name.as_str()) {
            return Err(exit(125, format!("invalid restart policy format: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'")));
        }
        json!({"Name": if name == "no" { "" } else { name.as_str() }, "MaximumRetryCount": count})
    };
    if a.rm && !restart["Name"].as_str().unwrap_or("").is_empty() {
        return Err(exit(
            125,
            "berth: conflicting options: cannot specify both --restart and --rm\n\nRun 'berth run --help' for more information",
        ));
    }
    let mut tmpfs = Map::new();
    for t in &a.tmpfs {
        let (p, o) = t.split_once(':').unwrap_or((t, ""));
        tmpfs.insert(p.into(), json!(o));
    }
    let mut host = json!({
        "Binds": binds,
        "PortBindings": bindings,
        "PublishAllPorts": a.publish_all,
        "RestartPolicy": restart,
        "AutoRemove": a.rm,
        "Mounts": mounts,
        "Privileged": a.privileged,
        "ReadonlyRootfs": a.read_only,
        "ExtraHosts": a.add_host,
    });
    if !tmpfs.is_empty() {
        host["Tmpfs"] = Value::Object(tmpfs);
    }
    if let Some(m) = &a.memory {
        host["Memory"] = json!(parse_bytes(m)?);
    }
    if let Some(c) = a.cpus {
        host["NanoCpus"] = json!((c * 1e9) as i64);
    }
    if let Some(n) = &a.network {
        host["NetworkMode"] = json!(n);
    }
    if let Some(p) = a.pid.as_deref().filter(|p| !p.is_empty()) {
        // docker's `PidMode.Valid()`: "host" or "container:<name|id>"
        let valid = p == "host" || p.strip_prefix("container:").is_some_and(|c| !c.is_empty());
        if !valid {
            return Err(exit(
                125,
                "berth: --pid: invalid PID mode\n\nRun 'berth run --help' for more information",
            ));
        }
        host["PidMode"] = json!(p);
    }
    let attach_all = a.attach.is_empty();
    let mut body = json!({
        "Image": a.image,
        "Env": env,
        "Labels": labels,
        "ExposedPorts": exposed,
        "Volumes": volumes,
        "Tty": a.tty,
        "OpenStdin": a.interactive,
        "StdinOnce": a.interactive && !a.detach,
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach && (attach_all || a.attach.iter().any(|x| x.eq_ignore_ascii_case("stdout"))),
        "AttachStderr": !a.detach && (attach_all || a.attach.iter().any(|x| x.eq_ignore_ascii_case("stderr"))),
        "HostConfig": host,
    });
    if !a.command.is_empty() {
        body["Cmd"] = json!(a.command);
    }
    if let Some(e) = &a.entrypoint {
        body["Entrypoint"] = if e.is_empty() {
            json!([""])
        } else {
            json!([e])
        };
    }
    if let Some(w) = &a.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if let Some(h) = &a.hostname {
        body["Hostname"] = json!(h);
    }
    if let Some(s) = &a.stop_signal {
        body["StopSignal"] = json!(s);
    }
    if let Some(s) = a.stop_timeout {
        body["StopTimeout"] = json!(s);
    }
    if let (Some(n), false) = (&a.network, a.network_alias.is_empty()) {
        body["NetworkingConfig"] = json!({"EndpointsConfig": {n: {"Aliases": a.network_alias}}});
    }
    Ok(body)
}

/// Exit code for an error starting the container's process (docker's rule).
fn start_error_code(msg: &str) -> i32 {
    let m = msg.to_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || m.contains("system cannot find the file specified")
    {
        127
    } else if m.contains("permission denied")
        || m.contains("cannot execute")
        || m.contains("not executable")
    {
        126
    } else {
        125
    }
}

async fn create_container(t: &Target, d: &Docker, a: &RunArgs, code: i32) -> Result<String> {
    let body = create_body(a)?;
    let cfg: bollard::models::ContainerCreateBody = serde_json::from_value(body)
        .map_err(|e| exit(125, format!("invalid container configuration: {e}")))?;
    let mut opts = qp::CreateContainerOptionsBuilder::new();
    if let Some(n) = &a.name {
        opts = opts.name(n);
    }
    if let Some(p) = &a.platform {
        opts = opts.platform(p);
    }
    let opts = opts.build();
    let image_ref = {
        let r = crate::image::Reference::parse(&a.image).map_err(|e| {
            if code == 125 {
                exit(
                    125,
                    format!("berth: {e}\n\nRun 'berth run --help' for more information"),
                )
            } else {
                exit(125, e.to_string())
            }
        })?;
        if r.tag.is_none() && r.digest.is_none() {
            format!("{}:latest", a.image)
        } else {
            a.image.clone()
        }
    };
    if a.pull == "always" {
        crate::image::pull_image(t, d, &image_ref, a.quiet, true, a.platform.as_deref(), code)
            .await?;
    }
    match d.create_container(Some(opts.clone()), cfg.clone()).await {
        Ok(r) => {
            for w in r.warnings {
                eprintln!("WARNING: {w}");
            }
            Ok(r.id)
        }
        Err(e)
            if status_of(&e) == Some(404)
                && a.pull != "never"
                && e.to_string().contains("image") =>
        {
            eprintln!("Unable to find image '{image_ref}' locally");
            crate::image::pull_image(t, d, &image_ref, a.quiet, true, a.platform.as_deref(), code)
                .await?;
            let r = d
                .create_container(Some(opts), cfg)
                .await
                .map_err(|e| daemon_err(t, e, code))?;
            for w in r.warnings {
                eprintln!("WARNING: {w}");
            }
            Ok(r.id)
        }
        Err(e) => Err(daemon_err(t, e, code)),
    }
}

pub(crate) struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub(crate) fn enable() -> RawMode {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin).ok();
        if let Some(s) = &saved {
            let mut raw = s.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}

pub(crate) fn term_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// What a terminal resize applies to.
enum TtyOf {
    Container(String),
    Exec(String),
}

/// Push the terminal's size now and on every SIGWINCH, as docker's CLI does; abort the handle
/// when the session ends.
fn follow_resizes(d: &Docker, of: TtyOf) -> tokio::task::JoinHandle<()> {
    let d = d.clone();
    tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        loop {
            if let Some((h, w)) = term_size() {
                let _ = match &of {
                    TtyOf::Container(id) => {
                        d.resize_container_tty(
                            id,
                            qp::ResizeContainerTTYOptionsBuilder::new()
                                .h(h as i32)
                                .w(w as i32)
                                .build(),
                        )
                        .await
                    }
                    TtyOf::Exec(id) => {
                        d.resize_exec(
                            id,
                            qp::ResizeExecOptions {
                                h: h as i32,
                                w: w as i32,
                            },
                        )
                        .await
                    }
                };
            }
            if winch.recv().await.is_none() {
                return;
            }
        }
    })
}

/// Copy stdin into `input` on a blocking thread; close it at EOF.
fn forward_stdin(mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if input.write_all(&b).await.is_err() {
                return;
            }
            let _ = input.flush().await;
        }
        let _ = input.shutdown().await;
    });
}

async fn pump_output(
    mut output: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
) {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(Ok(chunk)) = output.next().await {
        match chunk {
            LogOutput::StdErr { message } => {
                let _ = err.write_all(&message);
                let _ = err.flush();
            }
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                let _ = out.write_all(&message);
                let _ = out.flush();
            }
            LogOutput::StdIn { .. } => {}
        }
    }
}

/// Signals the CLI forwards to the container (docker's `ForwardAllSignals`: every signal but
/// SIGCHLD, SIGPIPE and the Go runtime's SIGURG; SIGWINCH is the TTY resize, SIGKILL/SIGSTOP
/// cannot be caught), by the name the kill API takes.
const PROXIED_SIGNALS: &[(i32, &str)] = &[
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGTRAP, "TRAP"),
    (libc::SIGABRT, "ABRT"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGALRM, "ALRM"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGCONT, "CONT"),
    (libc::SIGTSTP, "TSTP"),
    (libc::SIGTTIN, "TTIN"),
    (libc::SIGTTOU, "TTOU"),
    (libc::SIGXCPU, "XCPU"),
    (libc::SIGXFSZ, "XFSZ"),
    (libc::SIGVTALRM, "VTALRM"),
    (libc::SIGPROF, "PROF"),
    (libc::SIGIO, "IO"),
    (libc::SIGPWR, "PWR"),
    (libc::SIGSYS, "SYS"),
];

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `--sig-proxy`: from now on, the signals this process receives are sent to the container
/// (`POST /containers/{id}/kill?signal=NAME`), in the order they come, instead of ending the
/// CLI.  The handlers are installed before this returns.
fn proxy_signals(d: &Docker, id: &str) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let mut listeners = Vec::new();
    for &(n, name) in PROXIED_SIGNALS {
        if let Ok(mut s) = signal(SignalKind::from_raw(n)) {
            let tx = tx.clone();
            listeners.push(AbortOnDrop(tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(name).is_err() {
                        return;
                    }
                }
            })));
        }
    }
    drop(tx);
    let d = d.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let _listeners = listeners;
        while let Some(name) = rx.recv().await {
            let opts = qp::KillContainerOptionsBuilder::new().signal(name).build();
            let _ = d.kill_container(&id, Some(opts)).await;
        }
    })
}

fn wait_stream(
    d: &Docker,
    id: &str,
    condition: &str,
) -> tokio::task::JoinHandle<Result<i64, String>> {
    let d = d.clone();
    let id = id.to_string();
    let condition = condition.to_string();
    tokio::spawn(async move {
        let opts = qp::WaitContainerOptionsBuilder::new()
            .condition(&condition)
            .build();
        let mut s = d.wait_container(&id, Some(opts));
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(0),
        }
    })
}

pub async fn run(t: &Target, a: RunArgs, create_only: bool) -> Result<i32> {
    let d = t.connect()?;
    let id = match create_container(t, &d, &a, if create_only { 1 } else { 125 }).await {
        Ok(id) => id,
        Err(e) => return Err(prefix_run_error(e, create_only)),
    };
    if create_only {
        println!("{id}");
        return Ok(0);
    }
    if a.detach {
        if let Err(e) = d
            .start_container(&id, None::<qp::StartContainerOptions>)
            .await
        {
            let msg = daemon_err(t, e, 125).to_string();
            return Err(exit(
                start_error_code(&msg),
                format!("berth: {msg}\n\nRun 'berth run --help' for more information"),
            ));
        }
        println!("{id}");
        return Ok(0);
    }
    attach_start_wait(
        t,
        &d,
        &id,
        a.interactive,
        a.tty,
        a.rm,
        a.detach_keys.as_deref(),
        true,
        a.sig_proxy,
    )
    .await
}

fn prefix_run_error(e: anyhow::Error, create_only: bool) -> anyhow::Error {
    match e.downcast::<client::Exit>() {
        Ok(x) if !create_only && x.msg.starts_with("Error response") => exit(
            x.code,
            format!(
                "berth: {}\n\nRun 'berth run --help' for more information",
                x.msg
            ),
        ),
        Ok(x) => anyhow::Error::new(x),
        Err(e) => e,
    }
}

#[allow(clippy::too_many_arguments)]
async fn attach_start_wait(
    t: &Target,
    d: &Docker,
    id: &str,
    stdin: bool,
    tty: bool,
    autoremove: bool,
    detach_keys: Option<&str>,
    start: bool,
    sig_proxy: bool,
) -> Result<i32> {
    let mut opts = qp::AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdin(stdin)
        .stdout(true)
        .stderr(true);
    if let Some(k) = detach_keys {
        opts = opts.detach_keys(k);
    }
    let att = d
        .attach_container(id, Some(opts.build()))
        .await
        .map_err(|e| daemon_err(t, e, 125))?;
    let raw = if tty && stdin && std::io::stdin().is_terminal() {
        Some(RawMode::enable())
    } else {
        None
    };
    if stdin {
        forward_stdin(att.input);
    }
    let _proxy = sig_proxy.then(|| AbortOnDrop(proxy_signals(d, id)));
    let waiter = wait_stream(d, id, if autoremove { "removed" } else { "next-exit" });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    if start {
        if let Err(e) = d
            .start_container(id, None::<qp::StartContainerOptions>)
            .await
        {
            drop(raw);
            waiter.abort();
            let msg = daemon_err(t, e, 125).to_string();
            if autoremove {
                let _ = d
                    .remove_container(
                        id,
                        Some(qp::RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await;
            }
            return Err(exit(
                start_error_code(&msg),
                format!("berth: {msg}\n\nRun 'berth run --help' for more information"),
            ));
        }
    }
    let resizer = tty.then(|| follow_resizes(d, TtyOf::Container(id.to_string())));
    pump_output(att.output).await;
    if let Some(r) = resizer {
        r.abort();
    }
    drop(raw);
    let mut waiter = waiter;
    if stdin {
        // The stream also ends when the user detaches (Ctrl-P Ctrl-Q, handled by the engine):
        // then the container still runs and, like docker, we return 0 without waiting.
        tokio::select! {
            r = &mut waiter => return match r {
                Ok(Ok(code)) => Ok(code as i32),
                Ok(Err(e)) => Err(exit(125, format!("Error waiting for the container: {e}"))),
                Err(_) => Ok(0),
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
        let running = d
            .inspect_container(id, None::<qp::InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.running)
            .unwrap_or(false);
        if running {
            waiter.abort();
            return Ok(0);
        }
    }
    match waiter.await {
        Ok(Ok(code)) => Ok(code as i32),
        Ok(Err(e)) => Err(exit(125, format!("Error waiting for the container: {e}"))),
        Err(_) => Ok(0),
    }
}

// ---------------------------------------------------------------------------
// start / stop / restart / kill / rm / pause / wait

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// CONTAINER...
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn start(t: &Target, a: StartArgs) -> Result<i32> {
    let d = t.connect()?;
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            return Err(exit(
                1,
                "you cannot start and attach multiple containers at once",
            ));
        }
        let c = &a.containers[0];
        let info = d
            .inspect_container(c, None::<qp::InspectContainerOptions>)
            .await
            .map_err(|e| daemon_err(t, e, 1))?;
        let tty = info.config.as_ref().and_then(|c| c.tty).unwrap_or(false);
        let id = info.id.unwrap_or_else(|| c.clone());
        let autoremove = info
            .host_config
            .and_then(|h| h.auto_remove)
            .unwrap_or(false);
        return attach_start_wait(
            t,
            &d,
            &id,
            a.interactive,
            tty,
            autoremove,
            a.detach_keys.as_deref(),
            true,
            // docker start -a forwards signals unless the container has a TTY
            !tty,
        )
        .await
        .map_err(|e| match e.downcast::<client::Exit>() {
            Ok(x) => exit(
                x.code,
                x.msg
                    .trim_start_matches("berth: ")
                    .trim_end_matches("\n\nRun 'berth run --help' for more information")
                    .to_string(),
            ),
            Err(e) => e,
        });
    }
    let mut failed = false;
    for c in &a.containers {
        match d
            .start_container(c, None::<qp::StartContainerOptions>)
            .await
        {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("{}", daemon_err(t, e, 1));
                failed = true;
            }
        }
    }
    if failed {
        return Err(exit(
            1,
            "Error: failed to start containers: ".to_string() + &a.containers.join(", "),
        ));
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Signal to send to the container
    #[arg(short = 's', long)]
    signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "timeout",
        alias = "time",
        allow_negative_numbers = true
    )]
    timeout: Option<i32>,
    /// CONTAINER...
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn stop(t: &Target, a: StopArgs, restart: bool) -> Result<i32> {
    let d = t.connect()?;
    let mut failed = false;
    for c in &a.containers {
        let r = if restart {
            let mut o = qp::RestartContainerOptionsBuilder::new();
            if let Some(s) = &a.signal {
                o = o.signal(s);
            }
            if let Some(x) = a.timeout {
                o = o.t(x);
            }
            d.restart_container(c, Some(o.build())).await
        } else {
            let mut o = qp::StopContainerOptionsBuilder::new();
            if let Some(s) = &a.signal {
                o = o.signal(s);
            }
            if let Some(x) = a.timeout {
                o = o.t(x);
            }
            d.stop_container(c, Some(o.build())).await
        };
        match r {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("{}", daemon_err(t, e, 1));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    signal: String,
    /// CONTAINER...
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn kill(t: &Target, a: KillArgs) -> Result<i32> {
    let d = t.connect()?;
    let mut failed = false;
    for c in &a.containers {
        let o = qp::KillContainerOptionsBuilder::new()
            .signal(&a.signal)
            .build();
        match d.kill_container(c, Some(o)).await {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("{}", daemon_err(t, e, 1));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    volumes: bool,
    /// Remove the specified link
    #[arg(short = 'l', long)]
    link: bool,
    /// CONTAINER...
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn rm(t: &Target, a: RmArgs) -> Result<i32> {
    let d = t.connect()?;
    let mut failed = false;
    for c in &a.containers {
        let o = qp::RemoveContainerOptionsBuilder::new()
            .force(a.force)
            .v(a.volumes)
            .link(a.link)
            .build();
        match d.remove_container(c, Some(o)).await {
            Ok(()) => println!("{c}"),
            Err(e) => {
                // docker rm -f on a missing container reports it but succeeds
                if a.force && status_of(&e) == Some(404) {
                    eprintln!("{}", daemon_err(t, e, 1));
                    continue;
                }
                eprintln!("{}", daemon_err(t, e, 1));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[derive(Args, Debug)]
pub struct NamesArgs {
    /// CONTAINER...
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn pause(t: &Target, a: NamesArgs, pause: bool) -> Result<i32> {
    let d = t.connect()?;
    let mut failed = false;
    for c in &a.containers {
        let r = if pause {
            d.pause_container(c).await
        } else {
            d.unpause_container(c).await
        };
        match r {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("{}", daemon_err(t, e, 1));
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

// ---------------------------------------------------------------------------
// port

#[derive(Args, Debug)]
pub struct PortArgs {
    /// CONTAINER
    container: String,
    /// PRIVATE_PORT[/PROTO]
    port: Option<String>,
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `sortorder.NaturalLess` (the docker CLI's order for `port`): runs of digits compare as
/// numbers, everything else byte by byte.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let na = std::str::from_utf8(&a[si..i])
                .unwrap_or("")
                .trim_start_matches('0');
            let nb = std::str::from_utf8(&b[sj..j])
                .unwrap_or("")
                .trim_start_matches('0');
            match na.len().cmp(&nb.len()).then_with(|| na.cmp(nb)) {
                Ordering::Equal => {}
                o => return o,
            }
            // equal numbers: fewer leading zeros first
            match (i - si).cmp(&(j - sj)) {
                Ordering::Equal => {}
                o => return o,
            }
        } else {
            match a[i].cmp(&b[j]) {
                Ordering::Equal => {
                    i += 1;
                    j += 1;
                }
                o => return o,
            }
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// `docker port CONTAINER [PRIVATE_PORT[/PROTO]]`.
pub async fn port(t: &Target, a: PortArgs) -> Result<i32> {
    let d = t.connect()?;
    let info = d
        .inspect_container(&a.container, None::<qp::InspectContainerOptions>)
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    let ports = info
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    match a.port.as_deref().filter(|p| !p.is_empty()) {
        Some(spec) => {
            let (port, proto) = spec.split_once('/').unwrap_or((spec, ""));
            let proto = if proto.is_empty() { "tcp" } else { proto };
            let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
            if !digits || port.parse::<u16>().is_err() {
                let why = if digits {
                    "value out of range"
                } else {
                    "invalid syntax"
                };
                return Err(exit(
                    1,
                    format!(
                        "Error: invalid port ({port}): strconv.ParseUint: parsing \"{port}\": {why}"
                    ),
                ));
            }
            let frontends = ports
                .get(&format!("{port}/{proto}"))
                .cloned()
                .flatten()
                .unwrap_or_default();
            if frontends.is_empty() {
                return Err(exit(
                    1,
                    format!(
                        "Error: No public port '{spec}' published for {}",
                        a.container
                    ),
                ));
            }
            for f in frontends {
                out.push(join_host_port(
                    f.host_ip.as_deref().unwrap_or(""),
                    f.host_port.as_deref().unwrap_or(""),
                ));
            }
        }
        None => {
            for (from, frontends) in &ports {
                for f in frontends.iter().flatten() {
                    out.push(format!(
                        "{from} -> {}",
                        join_host_port(
                            f.host_ip.as_deref().unwrap_or(""),
                            f.host_port.as_deref().unwrap_or("")
                        )
                    ));
                }
            }
        }
    }
    out.sort_by(|x, y| natural_cmp(x, y));
    for l in out {
        println!("{l}");
    }
    Ok(0)
}

pub async fn wait(t: &Target, a: NamesArgs) -> Result<i32> {
    let d = t.connect()?;
    let mut failed = false;
    for c in &a.containers {
        let mut s = d.wait_container(c, None::<qp::WaitContainerOptions>);
        match s.next().await {
            Some(Ok(r)) => println!("{}", r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                println!("{code}")
            }
            Some(Err(e)) => {
                eprintln!("{}", daemon_err(t, e, 1));
                failed = true;
            }
            None => {}
        }
    }
    Ok(if failed { 1 } else { 0 })
}

// ---------------------------------------------------------------------------
// logs

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Show extra details provided to logs
    #[arg(long)]
    details: bool,
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    since: Option<String>,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long)]
    until: Option<String>,
    /// CONTAINER
    container: String,
}

/// Docker's time flags: a Go duration ("10m", "1h30m") back from now, an
/// RFC 3339 time, a date, or Unix seconds.
pub fn parse_since(s: &str) -> Result<i64> {
    let now = chrono::Utc::now().timestamp();
    if let Ok(n) = s.parse::<f64>() {
        return Ok(n as i64);
    }
    if let Some(t) = format::parse_time(s) {
        return Ok(t);
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Ok(t.and_utc().timestamp());
    }
    if let Ok(t) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(t
            .and_hms_opt(0, 0, 0)
            .map(|x| x.and_utc().timestamp())
            .unwrap_or(0));
    }
    // Go duration
    let mut total = 0f64;
    let mut num = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            i += 1;
            continue;
        }
        let mut unit = String::new();
        while i < chars.len() && !chars[i].is_ascii_digit() && chars[i] != '.' {
            unit.push(chars[i]);
            i += 1;
        }
        let n: f64 = num
            .parse()
            .map_err(|_| exit(1, format!("invalid value for \"since\": failed to parse value as time or duration: \"{s}\"")))?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => {
                return Err(exit(1, format!("invalid value for \"since\": failed to parse value as time or duration: \"{s}\"")))
            }
        };
    }
    if !num.is_empty() {
        return Err(exit(
            1,
            format!(
                "invalid value for \"since\": failed to parse value as time or duration: \"{s}\""
            ),
        ));
    }
    Ok(now - total as i64)
}

pub async fn logs(t: &Target, a: LogsArgs) -> Result<i32> {
    let d = t.connect()?;
    // Docker checks the container first: a clean "No such container" error.
    d.inspect_container(&a.container, None::<qp::InspectContainerOptions>)
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    let mut o = qp::LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(a.follow)
        .timestamps(a.timestamps)
        .tail(&a.tail);
    if let Some(s) = &a.since {
        o = o.since(parse_since(s)? as i32);
    }
    if let Some(u) = &a.until {
        o = o.until(parse_since(u)? as i32);
    }
    let s = d.logs(&a.container, Some(o.build()));
    let s: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    > = Box::pin(s);
    let mut s = s;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    while let Some(item) = s.next().await {
        match item {
            Ok(LogOutput::StdErr { message }) => {
                err.write_all(&message)?;
                err.flush()?;
            }
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                out.write_all(&message)?;
                out.flush()?;
            }
            Ok(_) => {}
            Err(e) => return Err(daemon_err(t, e, 1)),
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------
// exec

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    detach_keys: Option<String>,
    /// CONTAINER
    container: String,
    /// COMMAND [ARG...]
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn exec(t: &Target, a: ExecArgs) -> Result<i32> {
    let d = t.connect()?;
    let cfg = bollard::models::ExecConfig {
        attach_stdin: Some(a.interactive && !a.detach),
        attach_stdout: Some(!a.detach),
        attach_stderr: Some(!a.detach),
        tty: Some(a.tty),
        env: Some(a.env.iter().map(|e| expand_env(e)).collect()),
        cmd: Some(a.command.clone()),
        privileged: Some(a.privileged),
        user: a.user.clone(),
        working_dir: a.workdir.clone(),
        detach_keys: a.detach_keys.clone(),
        console_size: if a.tty {
            term_size().map(|(h, w)| vec![h as usize, w as usize])
        } else {
            None
        },
    };
    let created = d
        .create_exec(&a.container, cfg)
        .await
        .map_err(|e| daemon_err(t, e, 1))?;
    let started = d
        .start_exec(
            &created.id,
            Some(bollard::exec::StartExecOptions {
                detach: a.detach,
                tty: a.tty,
                output_capacity: None,
            }),
        )
        .await;
    match started {
        Err(e) => {
            let msg = daemon_err(t, e, 126).to_string();
            Err(exit(start_error_code(&msg), msg))
        }
        Ok(bollard::exec::StartExecResults::Detached) => Ok(0),
        Ok(bollard::exec::StartExecResults::Attached { output, input }) => {
            let raw = if a.tty && a.interactive && std::io::stdin().is_terminal() {
                Some(RawMode::enable())
            } else {
                None
            };
            if a.interactive {
                forward_stdin(input);
            }
            let resizer = a
                .tty
                .then(|| follow_resizes(&d, TtyOf::Exec(created.id.clone())));
            pump_output(output).await;
            if let Some(r) = resizer {
                r.abort();
            }
            drop(raw);
            let mut code = 0;
            for _ in 0..50 {
                let info = d
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| daemon_err(t, e, 1))?;
                if info.running != Some(true) {
                    code = info.exit_code.unwrap_or(0);
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(code as i32)
        }
    }
}

// ---------------------------------------------------------------------------
// stats

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Format output using a custom template
    #[arg(long)]
    format: Option<String>,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// CONTAINER...
    containers: Vec<String>,
}

fn stats_row(name_or_id: &str, s: &Value, no_trunc: bool) -> Value {
    let n = |p: &str| s.pointer(p).and_then(|x| x.as_f64()).unwrap_or(0.0);
    let cpu_delta =
        n("/cpu_stats/cpu_usage/total_usage") - n("/precpu_stats/cpu_usage/total_usage");
    let sys_delta = n("/cpu_stats/system_cpu_usage") - n("/precpu_stats/system_cpu_usage");
    let mut online = n("/cpu_stats/online_cpus");
    if online == 0.0 {
        online = s
            .pointer("/cpu_stats/cpu_usage/percpu_usage")
            .and_then(|x| x.as_array())
            .map(|a| a.len() as f64)
            .unwrap_or(1.0);
    }
    let cpu = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let mut mem = n("/memory_stats/usage");
    let inactive = s
        .pointer("/memory_stats/stats/inactive_file")
        .or_else(|| s.pointer("/memory_stats/stats/total_inactive_file"))
        .and_then(|x| x.as_f64())
        .unwrap_or(0.0);
    if inactive < mem {
        mem -= inactive;
    }
    let limit = n("/memory_stats/limit");
    let mem_pct = if limit > 0.0 {
        mem / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    if let Some(nets) = s.get("networks").and_then(|x| x.as_object()) {
        for v in nets.values() {
            rx += v.get("rx_bytes").and_then(|x| x.as_f64()).unwrap_or(0.0);
            tx += v.get("tx_bytes").and_then(|x| x.as_f64()).unwrap_or(0.0);
        }
    }
    let (mut br, mut bw) = (0.0, 0.0);
    if let Some(io) = s
        .pointer("/blkio_stats/io_service_bytes_recursive")
        .and_then(|x| x.as_array())
    {
        for e in io {
            let v = e.get("value").and_then(|x| x.as_f64()).unwrap_or(0.0);
            match e
                .get("op")
                .and_then(|x| x.as_str())
                .map(|o| o.to_lowercase())
                .as_deref()
            {
                Some("read") => br += v,
                Some("write") => bw += v,
                _ => {}
            }
        }
    }
    let id = s.get("id").and_then(|x| x.as_str()).unwrap_or(name_or_id);
    let name = s
        .get("name")
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .trim_start_matches('/');
    json!({
        "Container": name_or_id,
        "ID": if no_trunc { id.to_string() } else { format::short_id(id) },
        "Name": name,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", format::bytes_size(mem), format::bytes_size(limit)),
        "MemPerc": format!("{mem_pct:.2}%"),
        "NetIO": format!("{} / {}", format::human_size(rx), format::human_size(tx)),
        "BlockIO": format!("{} / {}", format::human_size(br), format::human_size(bw)),
        "PIDs": s.pointer("/pids_stats/current").and_then(|x| x.as_u64()).unwrap_or(0).to_string(),
    })
}

const STATS_HEADERS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

pub async fn stats(t: &Target, a: StatsArgs) -> Result<i32> {
    let d = t.connect()?;
    let f = Formatter::new(
        a.format.as_deref().unwrap_or(""),
        "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}",
    )?;
    loop {
        let names: Vec<String> = if a.containers.is_empty() {
            list_containers(t, &d, a.all, None, false, &Default::default())
                .await?
                .iter()
                .filter_map(|c| c.get("Id").and_then(|x| x.as_str()).map(str::to_string))
                .collect()
        } else {
            a.containers.clone()
        };
        let mut rows = Vec::new();
        let mut failed = None;
        for n in &names {
            match client::get_json(
                t,
                &format!("/containers/{}/stats?stream=false", client::enc(n)),
            )
            .await?
            {
                Some(s) => rows.push(stats_row(n, &s, a.no_trunc)),
                None => {
                    failed = Some(format!(
                        "Error response from daemon: No such container: {n}"
                    ))
                }
            }
        }
        if let Some(e) = failed {
            return Err(exit(1, e));
        }
        let out = f.render(&rows, STATS_HEADERS)?;
        if a.no_stream {
            print!("{out}");
            return Ok(0);
        }
        print!("\x1b[2J\x1b[H{out}");
        std::io::stdout().flush()?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// inspect

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    format: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    size: bool,
    /// Return JSON for specified type
    #[arg(long = "type")]
    ty: Option<String>,
    /// NAME|ID...
    #[arg(required = true)]
    names: Vec<String>,
}

pub async fn inspect(t: &Target, a: InspectArgs) -> Result<i32> {
    let kinds: Vec<&str> = match a.ty.as_deref() {
        None | Some("") => vec!["container", "image", "volume", "network"],
        Some(k @ ("container" | "image" | "volume" | "network")) => vec![k],
        Some(other) => {
            return Err(exit(
                1,
                format!("\"{other}\" is not a valid value for --type"),
            ));
        }
    };
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for n in &a.names {
        let mut hit = None;
        let mut last_msg = String::new();
        for k in &kinds {
            let path = match *k {
                "container" => format!(
                    "/containers/{}/json{}",
                    client::enc(n),
                    if a.size { "?size=1" } else { "" }
                ),
                "image" => format!("/images/{}/json", client::enc(n)),
                "volume" => format!("/volumes/{}", client::enc(n)),
                _ => format!("/networks/{}", client::enc(n)),
            };
            match client::get_json_or_msg(t, &path).await? {
                Ok(v) => {
                    hit = Some(v);
                    break;
                }
                Err(m) => last_msg = m,
            }
        }
        match hit {
            Some(v) => found.push(v),
            None => errors.push(if kinds.len() == 1 {
                format!("Error response from daemon: {last_msg}")
            } else {
                format!("Error: No such object: {n}")
            }),
        }
    }
    match &a.format {
        Some(f) if !f.is_empty() && f != "json" => {
            for v in &found {
                println!("{}", format::render_one(f, v)?);
            }
        }
        _ => {
            println!("{}", format::indent_json(&Value::Array(found.clone())));
        }
    }
    if !errors.is_empty() {
        let _ = std::io::stdout().flush();
        return Err(exit(1, errors.join("\n")));
    }
    Ok(0)
}
