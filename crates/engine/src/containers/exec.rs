//! `docker exec`: exec instances kept in memory, run by the container's shim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::attach::{parse_detach_keys, pipe, Ended, PipeOpts};
use super::logs::frame;
use super::{Container, ContainerService, Status};
use crate::error::{EngineError, Result};

/// The exit code of an exec whose process could not be started, whatever the runtime said
/// (missing executable, not executable, bad workdir): 126, as dockerd through Docker 27 (API
/// 1.44 is Docker 25's; measured on Debian's dockerd 20.10.24 here, and what docker-py 6's
/// `test_exec_run_failed` expects). Docker 28 reports 127 for a missing executable.
const EXEC_NOT_STARTED: i64 = 126;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ExecCreate {
    #[serde(default)]
    pub attach_stdin: bool,
    #[serde(default)]
    pub attach_stdout: bool,
    #[serde(default)]
    pub attach_stderr: bool,
    #[serde(default)]
    pub detach_keys: Option<String>,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub console_size: Option<Vec<u16>>,
}

#[derive(Debug, Clone)]
pub struct ExecState {
    pub id: String,
    pub container_id: String,
    pub cfg: ExecCreate,
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i64>,
    pub pid: i64,
}

#[derive(Default)]
pub struct Execs(Mutex<HashMap<String, ExecState>>);

impl Execs {
    pub fn get(&self, id: &str) -> Result<ExecState> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::NotFound(format!("No such exec instance: {id}")))
    }
    fn update(&self, id: &str, f: impl FnOnce(&mut ExecState)) {
        if let Some(e) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            f(e);
        }
    }
    pub fn forget_container(&self, cid: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.container_id != cid);
    }
    pub fn ids_for(&self, cid: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|e| e.container_id == cid)
            .map(|e| e.id.clone())
            .collect()
    }
}

impl ContainerService {
    pub async fn exec_create(&self, c: &Arc<Container>, body: ExecCreate) -> Result<String> {
        let r = c.rec.read().await;
        match r.state.status {
            Status::Running => {}
            Status::Paused => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is paused, unpause the container before exec",
                    r.id
                )))
            }
            _ => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not running",
                    r.id
                )))
            }
        }
        if body.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(EngineError::invalid("No exec command specified"));
        }
        if let Some(k) = &body.detach_keys {
            parse_detach_keys(k)?;
        }
        let id = crate::util::random_id();
        let st = ExecState {
            id: id.clone(),
            container_id: r.id.clone(),
            cfg: body.clone(),
            running: false,
            started: false,
            exit_code: None,
            pid: 0,
        };
        self.execs
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), st);
        let cmd = body.cmd.unwrap_or_default().join(" ");
        let snap = r.clone();
        drop(r);
        self.emit(
            &format!("exec_create: {cmd}"),
            &snap,
            &[("execID", id.clone())],
        );
        Ok(id)
    }

    /// The OCI process for an exec: the container's own process settings, with the exec's
    /// command, env, working dir, user and terminal.
    async fn exec_process(&self, c: &Arc<Container>, e: &ExecCreate) -> Result<Value> {
        let r = c.rec.read().await.clone();
        let bundle = self.dir(&r.id).join("bundle").join("config.json");
        let spec: Value = serde_json::from_slice(&tokio::fs::read(&bundle).await?)?;
        let mut p = spec["process"].clone();
        let env = super::create::merge_env(
            &r.config.env.clone().unwrap_or_default(),
            &e.env.clone().unwrap_or_default(),
        );
        p["args"] = json!(e.cmd.clone().unwrap_or_default());
        p["env"] = json!(env);
        p["terminal"] = json!(e.tty);
        if let Some(wd) = e.working_dir.as_deref().filter(|w| !w.is_empty()) {
            p["cwd"] = json!(wd);
        }
        if let Some(u) = e.user.as_deref().filter(|u| !u.is_empty()) {
            let rootfs = super::rootfs::Rootfs::new(&self.dir(&r.id)).merged;
            let mut ru = super::spec::resolve_user(&rootfs, u)
                .map_err(|err| EngineError::InvalidParameter(err.to_string()))?;
            // An exec's user gets the container's --group-add too (Docker's getUser).
            let extra = super::spec::resolve_additional_groups(
                &rootfs,
                r.host_config.group_add.as_deref().unwrap_or_default(),
            )
            .map_err(|err| EngineError::InvalidParameter(err.to_string()))?;
            for g in extra {
                if !ru.additional_gids.contains(&g) {
                    ru.additional_gids.push(g);
                }
            }
            p["user"] = json!({"uid": ru.uid, "gid": ru.gid, "additionalGids": ru.additional_gids});
        }
        if e.privileged {
            // What the engine itself holds, as for a privileged container.
            let all = super::spec::privileged_caps();
            p["capabilities"] = json!({"bounding": all, "effective": all, "permitted": all});
        }
        if let Some(cs) = &e.console_size {
            if cs.len() == 2 {
                p["consoleSize"] = json!({"height": cs[0], "width": cs[1]});
            }
        }
        Ok(p)
    }

    /// Start an exec. With `io`, pipe it to the client; without, run detached.
    pub async fn exec_start<IO>(
        self: &Arc<Self>,
        exec_id: &str,
        detach: bool,
        tty_override: Option<bool>,
        io: Option<IO>,
    ) -> Result<()>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let st = self.execs.get(exec_id)?;
        if st.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        let c = self.get(&st.container_id).await?;
        if !c.rec.read().await.state.status.is_alive() {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                st.container_id
            )));
        }
        let cfg = st.cfg.clone();
        // The process gets a TTY from the exec's config; the stream is raw or framed as the
        // start request says, as in dockerd.
        let raw = tty_override.unwrap_or(cfg.tty);
        let process = match self.exec_process(&c, &cfg).await {
            Ok(p) => p,
            Err(err) => {
                // As with dockerd (which resolves the user itself, before the runtime): the
                // exec ends with 126 and its client sees the error as is, rather than a
                // hijacked stream closed without a word.
                self.execs.update(exec_id, |e| {
                    e.started = true;
                    e.running = false;
                    e.exit_code = Some(EXEC_NOT_STARTED);
                });
                let text = format!("{err}\r\n");
                if let (Some(mut client), false) = (io, detach) {
                    let bytes = if raw {
                        text.into_bytes()
                    } else {
                        frame(1, text.as_bytes())
                    };
                    let _ = client.write_all(&bytes).await;
                    let _ = client.shutdown().await;
                    return Ok(());
                }
                return Err(err);
            }
        };
        let shim = self.shim(&st.container_id);
        let (pid, stream) = shim
            .exec(exec_id, process, cfg.tty, cfg.attach_stdin && !detach)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        self.execs.update(exec_id, |e| {
            e.started = true;
            e.running = pid > 0;
            e.pid = pid as i64;
        });
        let snap = c.rec.read().await.clone();
        let cmdline = cfg.cmd.clone().unwrap_or_default().join(" ");
        self.emit(
            &format!("exec_start: {cmdline}"),
            &snap,
            &[("execID", exec_id.to_string())],
        );
        let svc = self.clone();
        let id = exec_id.to_string();
        let finish = move |code: i64| {
            svc.execs.update(&id, |e| {
                e.running = false;
                e.exit_code = Some(code);
            });
            svc.emit(
                "exec_die",
                &snap,
                &[("execID", id.clone()), ("exitCode", code.to_string())],
            );
        };
        match io {
            Some(mut client) if !detach => {
                // A process that could not start still gets its error shown to the user.
                if pid == 0 {
                    let mut s = stream;
                    let ef = match berth_shim::client::read_frame(&mut s).await {
                        Ok(Some((3, p))) => {
                            serde_json::from_slice::<berth_shim::protocol::ExitFrame>(&p).ok()
                        }
                        _ => None,
                    };
                    let code = EXEC_NOT_STARTED;
                    let msg = ef
                        .and_then(|e| e.error)
                        .unwrap_or_else(|| "exec failed".into());
                    // runc's own text may already start with the prefix dockerd adds.
                    let msg = msg.trim();
                    let msg = msg.strip_prefix("exec failed: ").unwrap_or(msg);
                    let text = format!("OCI runtime exec failed: exec failed: {msg}: unknown\r\n");
                    let bytes = if raw {
                        text.into_bytes()
                    } else {
                        frame(1, text.as_bytes())
                    };
                    let _ = client.write_all(&bytes).await;
                    let _ = client.shutdown().await;
                    finish(code);
                    return Ok(());
                }
                let detach_keys =
                    parse_detach_keys(cfg.detach_keys.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
                let opts = PipeOpts {
                    tty: raw,
                    stdout: cfg.attach_stdout,
                    stderr: cfg.attach_stderr,
                    stdin: cfg.attach_stdin,
                    close_on_eof: !cfg.tty,
                    detach: if cfg.attach_stdin {
                        detach_keys
                    } else {
                        vec![]
                    },
                };
                let ended = pipe(client, stream, opts).await;
                match ended {
                    Ended::Exited(ef) => finish(ef.map(|e| e.exit_code as i64).unwrap_or(-1)),
                    _ => {
                        // Detached: the process goes on; nobody reads its exit here.
                    }
                }
            }
            _ => {
                tokio::spawn(async move {
                    let mut s = stream;
                    let mut code = -1;
                    while let Ok(Some((t, p))) = berth_shim::client::read_frame(&mut s).await {
                        if t == 3 {
                            if let Ok(ef) =
                                serde_json::from_slice::<berth_shim::protocol::ExitFrame>(&p)
                            {
                                code = if ef.error.is_some() {
                                    EXEC_NOT_STARTED
                                } else {
                                    ef.exit_code as i64
                                };
                            }
                            break;
                        }
                    }
                    finish(code);
                });
            }
        }
        Ok(())
    }

    pub fn exec_inspect(&self, exec_id: &str) -> Result<Value> {
        let e = self.execs.get(exec_id)?;
        let cmd = e.cfg.cmd.clone().unwrap_or_default();
        Ok(json!({
            "CanRemove": false,
            "ContainerID": e.container_id,
            "DetachKeys": e.cfg.detach_keys.clone().unwrap_or_default(),
            "ExitCode": e.exit_code,
            "ID": e.id,
            "OpenStderr": e.cfg.attach_stderr,
            "OpenStdin": e.cfg.attach_stdin,
            "OpenStdout": e.cfg.attach_stdout,
            "ProcessConfig": {
                "arguments": cmd.get(1..).map(|a| a.to_vec()).unwrap_or_default(),
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "privileged": e.cfg.privileged,
                "tty": e.cfg.tty,
                "user": e.cfg.user.clone().unwrap_or_default(),
            },
            "Running": e.running,
            "Pid": e.pid,
        }))
    }
}
