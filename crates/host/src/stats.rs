//! One compact stats sample per container, computed from Docker's stats JSON
//! the way `docker stats` does, so the UI plots numbers instead of parsing
//! cgroup counters.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// Milliseconds since the epoch, from the sample's `read` time.
    pub t: i64,
    /// CPU in percent of one core (200 = two cores busy), like `docker stats`.
    pub cpu: f64,
    /// Memory in use (cache excluded), bytes.
    pub mem: u64,
    pub mem_limit: u64,
    /// Cumulative network bytes over all interfaces.
    pub net_rx: u64,
    pub net_tx: u64,
    /// Cumulative block I/O bytes.
    pub blk_read: u64,
    pub blk_write: u64,
    pub pids: u64,
}

/// CPU counters remembered between one-shot samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuCounters {
    pub total: u64,
    pub system: u64,
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

pub fn cpu_counters(v: &Value, key: &str) -> CpuCounters {
    CpuCounters {
        total: u(v, &[key, "cpu_usage", "total_usage"]),
        system: u(v, &[key, "system_cpu_usage"]),
    }
}

fn online_cpus(v: &Value) -> u64 {
    let n = u(v, &["cpu_stats", "online_cpus"]);
    if n > 0 {
        n
    } else {
        v["cpu_stats"]["cpu_usage"]["percpu_usage"]
            .as_array()
            .map(|a| a.len() as u64)
            .unwrap_or(1)
            .max(1)
    }
}

/// CPU% between two counter readings (`docker stats`' formula).
pub fn cpu_percent(prev: CpuCounters, cur: CpuCounters, cpus: u64) -> f64 {
    let dc = cur.total.saturating_sub(prev.total) as f64;
    let ds = cur.system.saturating_sub(prev.system) as f64;
    if prev.system == 0 || ds <= 0.0 || cur.total < prev.total {
        return 0.0;
    }
    (dc / ds) * cpus as f64 * 100.0
}

/// A sample from one stats JSON.  `prev` is used when the JSON carries no
/// `precpu_stats` (one-shot readings).
pub fn sample(v: &Value, prev: Option<CpuCounters>) -> Sample {
    let cur = cpu_counters(v, "cpu_stats");
    let pre = cpu_counters(v, "precpu_stats");
    let before = if pre.system > 0 {
        pre
    } else {
        prev.unwrap_or_default()
    };
    let cpu = cpu_percent(before, cur, online_cpus(v));

    let usage = u(v, &["memory_stats", "usage"]);
    let stats = &v["memory_stats"]["stats"];
    // cgroup v2: inactive_file; v1: total_inactive_file (what the docker CLI subtracts).
    let cache = stats["inactive_file"]
        .as_u64()
        .or_else(|| stats["total_inactive_file"].as_u64())
        .unwrap_or(0);
    let mem = if cache < usage { usage - cache } else { usage };

    let (mut rx, mut tx) = (0, 0);
    if let Some(nets) = v["networks"].as_object() {
        for n in nets.values() {
            rx += n["rx_bytes"].as_u64().unwrap_or(0);
            tx += n["tx_bytes"].as_u64().unwrap_or(0);
        }
    }
    let (mut br, mut bw) = (0, 0);
    if let Some(ios) = v["blkio_stats"]["io_service_bytes_recursive"].as_array() {
        for io in ios {
            let n = io["value"].as_u64().unwrap_or(0);
            match io["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => br += n,
                Some("write") => bw += n,
                _ => {}
            }
        }
    }
    let t = v["read"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.timestamp_millis())
        .filter(|&ms| ms > 0)
        .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    Sample {
        t,
        cpu: (cpu * 100.0).round() / 100.0,
        mem,
        mem_limit: u(v, &["memory_stats", "limit"]),
        net_rx: rx,
        net_tx: tx,
        blk_read: br,
        blk_write: bw,
        pids: u(v, &["pids_stats", "current"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(total: u64, system: u64, pre_total: u64, pre_system: u64) -> Value {
        json!({
            "read": "2024-05-01T10:00:00.5Z",
            "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
            "memory_stats": {"usage": 10_000_000u64, "limit": 1_000_000_000u64, "stats": {"inactive_file": 2_000_000u64}},
            "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 4096},
                {"major": 8, "minor": 0, "op": "Write", "value": 8192},
                {"major": 8, "minor": 0, "op": "Total", "value": 12288}
            ]},
            "pids_stats": {"current": 3}
        })
    }

    #[test]
    fn computes_like_docker_stats() {
        // 0.5 s of CPU over 2 s of system time on 2 CPUs = 50 %.
        let s = sample(
            &stats(1_500_000_000, 4_000_000_000, 1_000_000_000, 2_000_000_000),
            None,
        );
        assert_eq!(s.cpu, 50.0);
        assert_eq!(s.mem, 8_000_000);
        assert_eq!(s.mem_limit, 1_000_000_000);
        assert_eq!((s.net_rx, s.net_tx), (101, 52));
        assert_eq!((s.blk_read, s.blk_write), (4096, 8192));
        assert_eq!(s.pids, 3);
        assert_eq!(s.t, 1714557600500);
    }

    #[test]
    fn one_shot_uses_the_previous_reading() {
        let v = stats(3_000_000_000, 10_000_000_000, 0, 0);
        assert_eq!(sample(&v, None).cpu, 0.0);
        let prev = CpuCounters {
            total: 2_000_000_000,
            system: 6_000_000_000,
        };
        assert_eq!(sample(&v, Some(prev)).cpu, 50.0);
    }

    #[test]
    fn empty_stats_of_a_stopped_container() {
        let s = sample(&json!({"read": "0001-01-01T00:00:00Z"}), None);
        assert_eq!(s.cpu, 0.0);
        assert_eq!(s.mem, 0);
        assert!(s.t > 0);
    }
}
