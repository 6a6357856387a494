//! Resource usage from cgroup v1 counters (`docker stats`), processes (`docker top`), and
//! healthchecks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::{Container, ContainerService, HealthLog, Status};
use crate::error::{EngineError, Result};

fn read_u64(p: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn cg(ctrl: &str, id: &str, file: &str) -> String {
    format!("/sys/fs/cgroup/{ctrl}/berth/{id}/{file}")
}

/// Host CPU time in nanoseconds (the `system_cpu_usage` Docker reports).
fn system_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = s
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(7)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

fn online_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

fn key_values(p: &str) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    for l in std::fs::read_to_string(p).unwrap_or_default().lines() {
        let mut w = l.split_whitespace();
        if let (Some(k), Some(v)) = (w.next(), w.next()) {
            if let Ok(n) = v.parse::<u64>() {
                m.insert(k.to_string(), json!(n));
            }
        }
    }
    m
}

fn blkio(id: &str) -> Value {
    let mut v = Vec::new();
    for l in std::fs::read_to_string(cg("blkio", id, "blkio.throttle.io_service_bytes"))
        .unwrap_or_default()
        .lines()
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() == 3 {
            if let (Some((ma, mi)), Ok(val)) = (w[0].split_once(':'), w[2].parse::<u64>()) {
                v.push(json!({"major": ma.parse::<u64>().unwrap_or(0), "minor": mi.parse::<u64>().unwrap_or(0), "op": w[1].to_lowercase(), "value": val}));
            }
        }
    }
    json!({"io_service_bytes_recursive": v, "io_serviced_recursive": null, "io_queue_recursive": null,
           "io_service_time_recursive": null, "io_wait_time_recursive": null, "io_merged_recursive": null,
           "io_time_recursive": null, "sectors_recursive": null})
}

fn networks(pid: i64) -> Value {
    let mut m = serde_json::Map::new();
    if pid <= 0 {
        return Value::Null;
    }
    for l in std::fs::read_to_string(format!("/proc/{pid}/net/dev"))
        .unwrap_or_default()
        .lines()
        .skip(2)
    {
        let Some((name, rest)) = l.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() >= 16 {
            m.insert(
                name.to_string(),
                json!({
                    "rx_bytes": f[0], "rx_packets": f[1], "rx_errors": f[2], "rx_dropped": f[3],
                    "tx_bytes": f[8], "tx_packets": f[9], "tx_errors": f[10], "tx_dropped": f[11],
                }),
            );
        }
    }
    Value::Object(m)
}

#[derive(Clone, Default)]
pub struct CpuSample {
    pub read: String,
    pub cpu: Value,
}

fn cpu_stats(id: &str) -> Value {
    let percpu: Vec<u64> = std::fs::read_to_string(cg("cpuacct", id, "cpuacct.usage_percpu"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    let st = key_values(&cg("cpuacct", id, "cpuacct.stat"));
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let to_ns = |k: &str| st.get(k).and_then(|v| v.as_u64()).unwrap_or(0) * 1_000_000_000 / hz;
    let thr = key_values(&cg("cpu", id, "cpu.stat"));
    json!({
        "cpu_usage": {
            "total_usage": read_u64(&cg("cpuacct", id, "cpuacct.usage")).unwrap_or(0),
            "percpu_usage": percpu,
            "usage_in_kernelmode": to_ns("system"),
            "usage_in_usermode": to_ns("user"),
        },
        "system_cpu_usage": system_cpu_ns(),
        "online_cpus": online_cpus(),
        "throttling_data": {
            "periods": thr.get("nr_periods").cloned().unwrap_or(json!(0)),
            "throttled_periods": thr.get("nr_throttled").cloned().unwrap_or(json!(0)),
            "throttled_time": thr.get("throttled_time").cloned().unwrap_or(json!(0)),
        },
    })
}

impl ContainerService {
    /// One stats sample in Docker's shape; `prev` fills `precpu_stats`.
    pub async fn stats_sample(&self, c: &Arc<Container>, prev: &CpuSample) -> (Value, CpuSample) {
        let r = c.rec.read().await.clone();
        let id = &r.id;
        let now = crate::util::rfc3339_nano(chrono::Utc::now());
        let alive = r.state.status.is_alive();
        let cpu = if alive {
            cpu_stats(id)
        } else {
            json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}})
        };
        let mem = if alive {
            let limit = read_u64(&cg("memory", id, "memory.limit_in_bytes")).unwrap_or(0);
            let host_mem = std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .next()
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .map(|k| k * 1024)
                .unwrap_or(limit);
            json!({
                "usage": read_u64(&cg("memory", id, "memory.usage_in_bytes")).unwrap_or(0),
                "max_usage": read_u64(&cg("memory", id, "memory.max_usage_in_bytes")).unwrap_or(0),
                "failcnt": read_u64(&cg("memory", id, "memory.failcnt")).unwrap_or(0),
                "stats": key_values(&cg("memory", id, "memory.stat")),
                "limit": limit.min(host_mem),
            })
        } else {
            json!({})
        };
        let v = json!({
            "read": if alive { now.clone() } else { "0001-01-01T00:00:00Z".to_string() },
            "preread": if prev.read.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { prev.read.clone() },
            "pids_stats": if alive { json!({"current": read_u64(&cg("pids", id, "pids.current")).unwrap_or(0),
                "limit": std::fs::read_to_string(cg("pids", id, "pids.max")).ok().and_then(|s| s.trim().parse::<u64>().ok())}) } else { json!({}) },
            "blkio_stats": if alive { blkio(id) } else { json!({}) },
            "num_procs": 0,
            "storage_stats": {},
            "cpu_stats": cpu,
            "precpu_stats": if prev.cpu.is_null() { json!({"cpu_usage": {"total_usage": 0}, "throttling_data": {}}) } else { prev.cpu.clone() },
            "memory_stats": mem,
            "name": format!("/{}", r.name),
            "id": id,
            "networks": networks(r.state.pid),
        });
        let sample = CpuSample {
            read: now,
            cpu: v["cpu_stats"].clone(),
        };
        (v, sample)
    }

    /// `docker top`: the host's `ps` filtered to the container's processes.
    pub async fn top(&self, c: &Arc<Container>, ps_args: &str) -> Result<Value> {
        let r = c.rec.read().await.clone();
        if !r.state.status.is_alive() {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                r.id
            )));
        }
        let pids: Vec<i64> = std::fs::read_to_string(cg("pids", &r.id, "cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let args: Vec<&str> = if ps_args.is_empty() {
            vec!["-ef"]
        } else {
            ps_args.split_whitespace().collect()
        };
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| EngineError::Internal(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(EngineError::Internal(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        let titles: Vec<String> = header.split_whitespace().map(String::from).collect();
        let pid_col = titles
            .iter()
            .position(|t| t == "PID")
            .ok_or_else(|| EngineError::invalid("Couldn't find PID field in ps output"))?;
        let mut procs = Vec::new();
        for l in lines {
            let fields: Vec<&str> = l.split_whitespace().collect();
            if fields.len() < titles.len() {
                continue;
            }
            let Ok(pid) = fields[pid_col].parse::<i64>() else {
                continue;
            };
            if !pids.contains(&pid) {
                continue;
            }
            let mut row: Vec<String> = fields[..titles.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect();
            row.push(fields[titles.len() - 1..].join(" "));
            procs.push(row);
        }
        Ok(json!({"Titles": titles, "Processes": procs}))
    }

    /// Run the container's healthcheck on its schedule while it runs.
    pub(crate) fn spawn_health(self: &Arc<Self>, c: Arc<Container>) {
        let svc = self.clone();
        tokio::spawn(async move {
            let (hc, gen0) = {
                let r = c.rec.read().await;
                (r.config.healthcheck.clone(), c.exited.borrow().0)
            };
            let Some(hc) = hc else { return };
            let test = hc.test.clone().unwrap_or_default();
            let cmd: Vec<String> = match test.first().map(String::as_str) {
                Some("CMD") => test[1..].to_vec(),
                Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
                _ => return,
            };
            let ns = |v: Option<i64>, d: u64| {
                Duration::from_nanos(v.filter(|x| *x > 0).map(|x| x as u64).unwrap_or(d))
            };
            let interval = ns(hc.interval, 30_000_000_000);
            let timeout = ns(hc.timeout, 30_000_000_000);
            let start_period = ns(hc.start_period, 0);
            let start_interval = ns(hc.start_interval, 5_000_000_000);
            let retries = hc.retries.filter(|r| *r > 0).unwrap_or(3);
            let started = tokio::time::Instant::now();
            let mut exited = c.exited.subscribe();
            loop {
                let in_start = started.elapsed() < start_period;
                let wait = if in_start {
                    start_interval.min(interval)
                } else {
                    interval
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = exited.wait_for(|(g, _)| *g != gen0) => return,
                }
                if c.rec.read().await.state.status != Status::Running {
                    if *c.removed.borrow() {
                        return;
                    }
                    continue;
                }
                let start = crate::util::rfc3339_nano(chrono::Utc::now());
                let (code, output) =
                    match tokio::time::timeout(timeout, svc.run_probe(&c, cmd.clone())).await {
                        Ok(Ok(v)) => v,
                        Ok(Err(e)) => (-1, e.to_string()),
                        Err(_) => (
                            -1,
                            format!("Health check exceeded timeout ({}s)", timeout.as_secs()),
                        ),
                    };
                let end = crate::util::rfc3339_nano(chrono::Utc::now());
                let (changed, snap) = {
                    let mut r = c.rec.write().await;
                    if !r.state.status.is_alive() {
                        return;
                    }
                    let h = r.state.health.get_or_insert_with(Default::default);
                    let before = h.status.clone();
                    if code == 0 {
                        h.failing_streak = 0;
                        h.status = "healthy".into();
                    } else if !(in_start) {
                        h.failing_streak += 1;
                        if h.failing_streak >= retries {
                            h.status = "unhealthy".into();
                        }
                    }
                    h.log.push(HealthLog {
                        start,
                        end,
                        exit_code: code,
                        output,
                    });
                    if h.log.len() > 5 {
                        h.log.remove(0);
                    }
                    let changed = before != h.status;
                    (changed, r.clone())
                };
                let _ = svc.save(&snap).await;
                if changed {
                    let st = snap
                        .state
                        .health
                        .as_ref()
                        .map(|h| h.status.clone())
                        .unwrap_or_default();
                    svc.emit(&format!("health_status: {st}"), &snap, &[]);
                }
            }
        });
    }

    /// Run a command in the container and collect its exit code and (first 4 KiB of) output.
    async fn run_probe(&self, c: &Arc<Container>, cmd: Vec<String>) -> Result<(i64, String)> {
        let id = c.rec.read().await.id.clone();
        let e = super::exec::ExecCreate {
            attach_stdout: true,
            attach_stderr: true,
            cmd: Some(cmd),
            ..Default::default()
        };
        let bundle = self.dir(&id).join("bundle").join("config.json");
        let spec: Value = serde_json::from_slice(&tokio::fs::read(&bundle).await?)?;
        let mut p = spec["process"].clone();
        p["args"] = json!(e.cmd);
        p["terminal"] = json!(false);
        let exec_id = crate::util::random_id();
        let (_pid, mut s) = self
            .shim(&id)
            .exec(&exec_id, p, false, false)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut out = Vec::new();
        let mut code = -1;
        while let Ok(Some((t, payload))) = berth_shim::client::read_frame(&mut s).await {
            if t == 3 {
                if let Ok(ef) = serde_json::from_slice::<berth_shim::protocol::ExitFrame>(&payload)
                {
                    code = ef.exit_code as i64;
                    if let Some(err) = ef.error {
                        out.extend_from_slice(err.as_bytes());
                    }
                }
                break;
            }
            if out.len() < 4096 {
                out.extend_from_slice(&payload);
            }
        }
        out.truncate(4096);
        Ok((code, String::from_utf8_lossy(&out).into_owned()))
    }
}

fn dir_size(p: &std::path::Path) -> i64 {
    let mut n = 0i64;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if let Ok(md) = e.path().symlink_metadata() {
                if md.is_dir() {
                    n += dir_size(&e.path());
                } else {
                    n += md.len() as i64;
                }
            }
        }
    }
    n
}

impl ContainerService {
    /// (SizeRw, SizeRootFs): the container's own changes, and those plus the image.
    pub async fn sizes(&self, r: &super::Record) -> (i64, i64) {
        let upper = self.dir(&r.id).join("upper");
        let rw = tokio::task::spawn_blocking(move || dir_size(&upper))
            .await
            .unwrap_or(0);
        let img = self
            .images
            .get_by_id(&r.image_id)
            .await
            .ok()
            .flatten()
            .map(|i| i.rec.size)
            .unwrap_or(0);
        (rw, rw + img)
    }

    /// `docker update`: restart policy and resources; applied to a running container's cgroup.
    pub async fn update(&self, c: &Arc<Container>, body: Value) -> Result<()> {
        let patch: bollard_stubs::models::HostConfig = serde_json::from_value(body.clone())
            .map_err(|e| EngineError::invalid(e.to_string()))?;
        let mut r = c.rec.write().await;
        let h = &mut r.host_config;
        if let Some(rp) = patch.restart_policy {
            if h.auto_remove == Some(true)
                && !matches!(
                    rp.name,
                    None | Some(bollard_stubs::models::RestartPolicyNameEnum::NO)
                )
            {
                return Err(EngineError::invalid("Restart policy cannot be updated because AutoRemove is enabled for the container"));
            }
            h.restart_policy = Some(rp);
        }
        macro_rules! take {
            ($($f:ident),*) => { $( if patch.$f.is_some() { h.$f = patch.$f.clone(); } )* };
        }
        take!(
            memory,
            memory_swap,
            memory_reservation,
            nano_cpus,
            cpu_shares,
            cpu_period,
            cpu_quota,
            cpuset_cpus,
            cpuset_mems,
            pids_limit,
            blkio_weight
        );
        let running = r.state.status.is_alive();
        let id = r.id.clone();
        let h = r.host_config.clone();
        let snap = r.clone();
        drop(r);
        self.save(&snap).await?;
        if running {
            let mut args: Vec<String> = vec![
                "--root".into(),
                self.runc_root().display().to_string(),
                "update".into(),
            ];
            if let Some(m) = h.memory.filter(|m| *m > 0) {
                args.push(format!("--memory={m}"));
            }
            if let Some(n) = h.nano_cpus.filter(|n| *n > 0) {
                args.push("--cpu-period=100000".into());
                args.push(format!("--cpu-quota={}", n / 10_000));
            }
            if let Some(s) = h.cpu_shares.filter(|s| *s > 0) {
                args.push(format!("--cpu-share={s}"));
            }
            if let Some(p) = h.pids_limit.filter(|p| *p > 0) {
                args.push(format!("--pids-limit={p}"));
            }
            args.push(id);
            let out = tokio::process::Command::new(&self.runtime)
                .args(&args)
                .output()
                .await?;
            if !out.status.success() {
                return Err(EngineError::Internal(format!(
                    "Cannot update container: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        self.emit("update", &snap, &[]);
        Ok(())
    }

    /// Published ports for `docker ps` (filled by the port service once it exists).
    pub fn port_list(&self, r: &super::Record) -> Vec<Value> {
        let mut v = Vec::new();
        if let Some(ports) = r.network_settings.get("Ports").and_then(|p| p.as_object()) {
            for (k, binds) in ports {
                let (port, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                let private: u16 = port.parse().unwrap_or(0);
                match binds.as_array() {
                    Some(a) if !a.is_empty() => {
                        for b in a {
                            v.push(json!({
                                "IP": b["HostIp"], "PrivatePort": private,
                                "PublicPort": b["HostPort"].as_str().and_then(|p| p.parse::<u16>().ok()),
                                "Type": proto,
                            }));
                        }
                    }
                    _ => v.push(json!({"PrivatePort": private, "Type": proto})),
                }
            }
        }
        v
    }
}
