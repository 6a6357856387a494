//! `POST /containers/create`: merge the image's config with the request as Docker does, check
//! names, and record the container. Nothing runs yet.

use std::collections::HashMap;

use bollard_stubs::models::{ContainerConfig, ContainerCreateBody, HostConfig};

use super::{names, Container, ContainerService, Record, State};
use crate::error::{EngineError, Result};
use crate::util::random_id;

/// Merge `KEY=VALUE` lists: later entries replace earlier ones with the same key.
pub fn merge_env(base: &[String], over: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(over.iter()) {
        let key = e.split('=').next().unwrap_or(e);
        if let Some(pos) = out
            .iter()
            .position(|x| x.split('=').next().unwrap_or(x) == key)
        {
            out[pos] = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    out
}

impl ContainerService {
    pub async fn create(
        &self,
        name: Option<&str>,
        body: ContainerCreateBody,
    ) -> Result<(String, Vec<String>)> {
        let mut ph = super::Phases::new("create", "");
        let image_name = body
            .image
            .clone()
            .filter(|i| !i.is_empty())
            .ok_or_else(|| {
                EngineError::invalid("Config cannot be empty in order to create a container")
            })?;
        let name = match name.filter(|n| !n.is_empty()) {
            Some(n) => names::validate(n)?,
            None => {
                let mut n = names::random_name(0);
                for retry in 1..10 {
                    if self.get(&n).await.is_err() {
                        break;
                    }
                    n = names::random_name(retry);
                }
                n
            }
        };
        if let Ok(other) = self.get(&name).await {
            let r = other.rec.read().await;
            if r.name == name {
                return Err(EngineError::Conflict(format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    r.id
                )));
            }
        }
        let img = match self.images.try_resolve(&image_name).await? {
            Some(i) => i,
            None => return Err(self.images.not_found(&image_name)),
        };
        ph.mark("name+image");
        let ic: ContainerConfig =
            serde_json::from_value(img.run_config().clone()).unwrap_or_default();
        let mut host = body.host_config.clone().unwrap_or_default();
        normalize_host_config(&mut host)?;

        // Entrypoint and Cmd: an entrypoint given by the user drops the image's Cmd.
        let user_ep = body.entrypoint.clone();
        let (entrypoint, cmd) = match user_ep {
            Some(ep) if ep.len() == 1 && ep[0].is_empty() => {
                (vec![], body.cmd.clone().unwrap_or_default())
            }
            Some(ep) if !ep.is_empty() => (ep, body.cmd.clone().unwrap_or_default()),
            _ => (
                ic.entrypoint.clone().unwrap_or_default(),
                body.cmd
                    .clone()
                    .filter(|c| !c.is_empty())
                    .or(ic.cmd.clone())
                    .unwrap_or_default(),
            ),
        };
        let mut argv: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
        if argv.is_empty() {
            return Err(EngineError::invalid("No command specified"));
        }
        let path = argv.remove(0);
        let id = random_id();
        ph.set_id(&id);
        let mut labels: HashMap<String, String> = ic.labels.clone().unwrap_or_default();
        labels.extend(body.labels.clone().unwrap_or_default());
        let mut exposed: Vec<String> = ic.exposed_ports.clone().unwrap_or_default();
        for p in body.exposed_ports.clone().unwrap_or_default() {
            if !exposed.contains(&p) {
                exposed.push(p);
            }
        }
        let mut volumes: Vec<String> = ic.volumes.clone().unwrap_or_default();
        for v in body.volumes.clone().unwrap_or_default() {
            if !volumes.contains(&v) {
                volumes.push(v);
            }
        }
        let mut env = merge_env(
            &ic.env.clone().unwrap_or_default(),
            &body.env.clone().unwrap_or_default(),
        );
        // As dockerd: a container always has a PATH (imported images often have none).
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(
                0,
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
            );
        }
        let hostname = body
            .hostname
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| id[..12].to_string());
        let config = ContainerConfig {
            hostname: Some(hostname),
            domainname: Some(body.domainname.clone().unwrap_or_default()),
            user: Some(
                body.user
                    .clone()
                    .filter(|u| !u.is_empty())
                    .or(ic.user.clone())
                    .unwrap_or_default(),
            ),
            attach_stdin: Some(body.attach_stdin.unwrap_or(false)),
            attach_stdout: Some(body.attach_stdout.unwrap_or(false)),
            attach_stderr: Some(body.attach_stderr.unwrap_or(false)),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            tty: Some(body.tty.unwrap_or(false)),
            open_stdin: Some(body.open_stdin.unwrap_or(false)),
            stdin_once: Some(body.stdin_once.unwrap_or(false)),
            env: Some(env),
            cmd: (!cmd.is_empty()).then_some(cmd),
            healthcheck: body.healthcheck.clone().or(ic.healthcheck.clone()),
            args_escaped: None,
            image: Some(image_name.clone()),
            volumes: (!volumes.is_empty()).then_some(volumes),
            working_dir: Some(
                body.working_dir
                    .clone()
                    .filter(|w| !w.is_empty())
                    .or(ic.working_dir.clone())
                    .unwrap_or_default(),
            ),
            entrypoint: (!entrypoint.is_empty()).then_some(entrypoint),
            network_disabled: body.network_disabled,
            on_build: None,
            labels: Some(labels),
            stop_signal: body.stop_signal.clone().or(ic.stop_signal.clone()),
            stop_timeout: body.stop_timeout,
            shell: body.shell.clone().or(ic.shell.clone()),
        };
        if let Some(wd) = config.working_dir.as_deref() {
            if !wd.is_empty() && !wd.starts_with('/') {
                return Err(EngineError::invalid(format!(
                    "the working directory '{wd}' is invalid, it needs to be an absolute path"
                )));
            }
        }
        let rec = Record {
            id: id.clone(),
            name: name.clone(),
            created: crate::util::rfc3339_nano(chrono::Utc::now()),
            image: image_name,
            image_id: img.id().to_string(),
            path,
            args: argv,
            config,
            host_config: host,
            networking: serde_json::to_value(&body.networking_config).unwrap_or_default(),
            state: State::default(),
            restart_count: 0,
            manually_stopped: false,
            has_been_started: false,
            mounts: Vec::new(),
            network_settings: serde_json::Value::Null,
            links: Vec::new(),
        };
        let mut rec = rec;
        self.register_links(&mut rec).await?;
        ph.mark("config");
        std::fs::create_dir_all(self.dir(&id))?;
        let rec = match self.prepare_mounts(rec).await {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.dir(&id));
                return Err(e);
            }
        };
        ph.mark("mounts");
        // Inspect of a created container shows the endpoints it was configured with.
        let rec = Record {
            network_settings: self.configured_network_settings(&rec).await,
            ..rec
        };
        if let Err(e) = self.save(&rec).await {
            let _ = std::fs::remove_dir_all(self.dir(&id));
            return Err(e);
        }
        ph.mark("save");
        ph.done();
        let c = Container::new(rec.clone());
        self.insert(c, &id);
        self.emit("create", &rec, &[]);
        Ok((id, Vec::new()))
    }

    /// Volumes, binds and tmpfs mounts are resolved at create time (by the volume service when
    /// it is present); the default is what the request says about binds and tmpfs.
    async fn prepare_mounts(&self, rec: Record) -> Result<Record> {
        super::fs::prepare_mounts(self, rec).await
    }
}

/// Validate and default the host config as dockerd does.
fn normalize_host_config(h: &mut HostConfig) -> Result<()> {
    if h.network_mode.as_deref().is_none_or(|m| m.is_empty()) {
        h.network_mode = Some("bridge".into());
    }
    if let Some(rp) = &h.restart_policy {
        use bollard_stubs::models::RestartPolicyNameEnum as R;
        if rp.name == Some(R::ON_FAILURE) && rp.maximum_retry_count.unwrap_or(0) < 0 {
            return Err(EngineError::invalid(
                "invalid restart policy: maximum retry count can not be negative",
            ));
        }
        if matches!(rp.name, Some(R::ALWAYS | R::UNLESS_STOPPED | R::NO))
            && rp.maximum_retry_count.unwrap_or(0) != 0
        {
            return Err(EngineError::invalid(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'",
            ));
        }
        if h.auto_remove == Some(true) && !matches!(rp.name, None | Some(R::NO) | Some(R::EMPTY)) {
            return Err(EngineError::invalid(
                "conflicting options: cannot specify both --restart and --rm",
            ));
        }
    }
    normalize_log_config(h)?;
    if h.memory.unwrap_or(0) > 0 && h.memory.unwrap_or(0) < 6 * 1024 * 1024 {
        return Err(EngineError::invalid("Minimum memory limit allowed is 6MB"));
    }
    if h.nano_cpus.unwrap_or(0) > 0 {
        let ncpu = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1) as i64;
        if h.nano_cpus.unwrap_or(0) > ncpu * 1_000_000_000 {
            return Err(EngineError::invalid(format!(
                "range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
            )));
        }
    }
    Ok(())
}

/// The log drivers berthd has: the shim writes Docker's json-file format, which `local`
/// (Docker's other file driver) is served from too; `none` keeps nothing.
pub const LOG_DRIVERS: &[&str] = &["json-file", "local", "none"];

/// Options each driver takes (dockerd's validators; `none` takes any, as dockerd skips it).
fn log_opts_of(driver: &str) -> &'static [&'static str] {
    match driver {
        "json-file" => &[
            "max-file",
            "max-size",
            "compress",
            "labels",
            "labels-regex",
            "env",
            "env-regex",
            "tag",
            "mode",
            "max-buffer-size",
        ],
        "local" => &[
            "max-file",
            "max-size",
            "compress",
            "mode",
            "max-buffer-size",
        ],
        _ => &[],
    }
}

/// `HostConfig.LogConfig` as dockerd checks it at create (`logger.ValidateLogOpts`): an empty
/// type is the daemon's default, `json-file`; an unknown driver or option is refused.
fn normalize_log_config(h: &mut HostConfig) -> Result<()> {
    let lc = h.log_config.get_or_insert_with(Default::default);
    let driver = lc
        .typ
        .clone()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "json-file".into());
    lc.typ = Some(driver.clone());
    let cfg = lc.config.get_or_insert_with(Default::default);
    if driver == "none" {
        return Ok(());
    }
    match cfg.get("mode").map(String::as_str) {
        None | Some("") | Some("blocking") | Some("non-blocking") => {}
        Some(m) => {
            return Err(EngineError::invalid(format!(
                "logger: logging mode not supported: {m}"
            )))
        }
    }
    if !LOG_DRIVERS.contains(&driver.as_str()) {
        return Err(EngineError::invalid(format!(
            "logger: no log driver named '{driver}' is registered"
        )));
    }
    let allowed = log_opts_of(&driver);
    let mut keys: Vec<&String> = cfg.keys().collect();
    keys.sort();
    if let Some(k) = keys.into_iter().find(|k| !allowed.contains(&k.as_str())) {
        return Err(EngineError::invalid(format!(
            "unknown log opt '{k}' for {driver} log driver"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merge_overrides_by_key() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        let over = vec!["A=2".to_string(), "B=3".to_string()];
        assert_eq!(merge_env(&base, &over), vec!["PATH=/bin", "A=2", "B=3"]);
    }

    fn log_config(typ: &str, opts: &[(&str, &str)]) -> Result<HostConfig> {
        let mut h = HostConfig {
            log_config: Some(bollard_stubs::models::HostConfigLogConfig {
                typ: Some(typ.into()),
                config: Some(
                    opts.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
            }),
            ..Default::default()
        };
        normalize_log_config(&mut h).map(|_| h)
    }

    #[test]
    fn log_drivers_as_dockerd() {
        let h = log_config("", &[("max-file", "100")]).expect("default driver");
        let lc = h.log_config.expect("log config");
        assert_eq!(lc.typ.as_deref(), Some("json-file"));
        assert_eq!(
            lc.config.expect("opts").get("max-file").map(String::as_str),
            Some("100")
        );
        assert!(log_config("local", &[]).is_ok());
        assert!(log_config("none", &[("whatever", "1")]).is_ok());
        let err = |t: &str, o: &[(&str, &str)]| log_config(t, o).err().map(|e| e.to_string());
        assert_eq!(
            err("asdf", &[]).as_deref(),
            Some("logger: no log driver named 'asdf' is registered")
        );
        assert_eq!(
            err("json-file", &[("bogus", "1")]).as_deref(),
            Some("unknown log opt 'bogus' for json-file log driver")
        );
    }
}
