//! Start, stop, kill, restart, pause, remove, rename, wait; the exit monitor with restart
//! policies; and re-attaching to shims when berthd starts (live restore).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use berth_shim::client::{spawn_shim, ShimError, ShimGone, SpawnOpts};
use berth_shim::protocol::{ExitInfo, Status as ShimStatus};
use bollard_stubs::models::RestartPolicyNameEnum as Policy;

use super::rootfs::{resolve_in_root, Rootfs};
use super::spec::{self, Namespace, SpecInput};
use super::{Container, ContainerService, Status};
use crate::error::{EngineError, Result};
use crate::util::rfc3339_nano;

/// Parse a signal given by name (`SIGTERM`, `TERM`, `term`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .map_err(|_| EngineError::invalid(format!("Invalid signal: {s}")))
}

/// The container init's pid, as the runtime wrote it into the shim's state dir.
fn read_init_pid(state_dir: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(state_dir.join(berth_shim::protocol::INIT_PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

fn now() -> String {
    rfc3339_nano(chrono::Utc::now())
}

impl ContainerService {
    pub async fn start(self: &Arc<Self>, c: &Arc<Container>) -> Result<()> {
        let res = {
            let _op = c.op.lock().await;
            self.start_locked(c).await
        };
        // As dockerd: a container that was to remove itself goes when its start fails (the
        // CLI's `run --rm` waits for that).
        if res.is_err() && c.rec.read().await.host_config.auto_remove == Some(true) {
            let svc = self.clone();
            let c = c.clone();
            tokio::spawn(async move {
                let _ = svc.remove(&c, true, true).await;
            });
        }
        res
    }

    pub(crate) async fn start_locked(self: &Arc<Self>, c: &Arc<Container>) -> Result<()> {
        let rec = c.rec.read().await.clone();
        let id = rec.id.clone();
        match rec.state.status {
            Status::Running => return Err(EngineError::NotModified("already started".into())),
            Status::Paused => {
                return Err(EngineError::Conflict(
                    "cannot start a paused container, try unpause instead".into(),
                ))
            }
            Status::Removing | Status::Dead => {
                return Err(EngineError::Conflict(format!(
                    "container {id} is marked for removal and cannot be started"
                )))
            }
            _ => {}
        }
        let mut ph = super::Phases::new("start", &id);
        self.await_shim_done(c, &id).await;
        ph.mark("old-shim");
        let dir = self.dir(&id);
        let rootfs = Rootfs::new(&dir);
        let lowers = self.images.layer_dirs(&rec.image_id).await?;
        ph.mark("layers");
        // The writable layer of a `--rm` container goes with it: no need to sync it.
        rootfs.mount_opts(&lowers, rec.host_config.auto_remove == Some(true))?;
        ph.mark("mount");
        let res = self.launch(c, &rootfs, &mut ph).await;
        ph.done();
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = rootfs.unmount();
                self.net_teardown(&id).await;
                let mut r = c.rec.write().await;
                let msg = e.to_string();
                r.state.status = if r.has_been_started {
                    Status::Exited
                } else {
                    Status::Created
                };
                r.state.exit_code = if msg.contains("executable file not found")
                    || msg.contains("no such file or directory")
                {
                    127
                } else if msg.contains("permission denied") {
                    126
                } else {
                    128
                };
                r.state.error = msg;
                r.state.pid = 0;
                let snapshot = r.clone();
                drop(r);
                let _ = self.save(&snapshot).await;
                Err(e)
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        c: &Arc<Container>,
        rootfs: &Rootfs,
        ph: &mut super::Phases,
    ) -> Result<()> {
        let rec = c.rec.read().await.clone();
        let id = rec.id.clone();
        let dir = self.dir(&id);
        let cfg = &rec.config;
        let hc = &rec.host_config;
        let cwd = cfg
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let mut user = spec::resolve_user(&rootfs.merged, cfg.user.as_deref().unwrap_or(""))
            .map_err(|e| EngineError::InvalidParameter(e.to_string()))?;
        // --group-add: appended after the user's own groups, as Docker's getUser does.
        let extra = spec::resolve_additional_groups(
            &rootfs.merged,
            hc.group_add.as_deref().unwrap_or_default(),
        )
        .map_err(|e| EngineError::InvalidParameter(e.to_string()))?;
        for g in extra {
            if !user.additional_gids.contains(&g) {
                user.additional_gids.push(g);
            }
        }
        let wd = resolve_in_root(&rootfs.merged, &cwd);
        if !wd.exists() {
            std::fs::create_dir_all(&wd)?;
            let _ = std::os::unix::fs::chown(&wd, Some(user.uid), Some(user.gid));
        }
        ph.mark("user+wd");
        let mut net = self.net_setup(c).await?;
        ph.mark("net");
        let linked = self.link_setup(c).await?;
        net.hosts.extend(linked.hosts);
        let mut mounts = self.etc_mounts(&rec, &net).await?;
        ph.mark("etc");
        mounts.extend(self.volume_mounts(&rec)?);
        let mut args = vec![rec.path.clone()];
        args.extend(rec.args.iter().cloned());
        let mut devices = Vec::new();
        for d in hc.devices.clone().unwrap_or_default() {
            devices.push(spec::DeviceMapping {
                path_on_host: d.path_on_host.unwrap_or_default(),
                path_in_container: d.path_in_container.unwrap_or_default(),
                cgroup_permissions: d.cgroup_permissions.unwrap_or_else(|| "rwm".into()),
            });
        }
        let ulimits = hc
            .ulimits
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|u| spec::Ulimit {
                name: u.name.unwrap_or_default(),
                soft: u.soft.unwrap_or(0),
                hard: u.hard.unwrap_or(0),
            })
            .collect();
        let ns = |mode: Option<&String>| match mode.map(String::as_str) {
            Some("host") => Namespace::Host,
            _ => Namespace::New,
        };
        let input = SpecInput {
            id: id.clone(),
            args,
            // Link variables first: the container's own override them (dockerd's
            // CreateDaemonEnvironment).
            env: super::create::merge_env(&linked.env, cfg.env.as_deref().unwrap_or_default()),
            cwd,
            user,
            terminal: cfg.tty.unwrap_or(false),
            rootfs: rootfs.merged.clone(),
            readonly_rootfs: hc.readonly_rootfs.unwrap_or(false),
            hostname: cfg.hostname.clone().unwrap_or_default(),
            domainname: cfg.domainname.clone().unwrap_or_default(),
            privileged: hc.privileged.unwrap_or(false),
            cap_add: hc.cap_add.clone().unwrap_or_default(),
            cap_drop: hc.cap_drop.clone().unwrap_or_default(),
            security_opt: hc.security_opt.clone().unwrap_or_default(),
            devices,
            memory: hc.memory.unwrap_or(0),
            memory_swap: hc.memory_swap.unwrap_or(0),
            memory_reservation: hc.memory_reservation.unwrap_or(0),
            kernel_memory: 0,
            nano_cpus: hc.nano_cpus.unwrap_or(0),
            cpu_shares: hc.cpu_shares.unwrap_or(0),
            cpu_period: hc.cpu_period.unwrap_or(0),
            cpu_quota: hc.cpu_quota.unwrap_or(0),
            cpuset_cpus: hc.cpuset_cpus.clone().unwrap_or_default(),
            cpuset_mems: hc.cpuset_mems.clone().unwrap_or_default(),
            pids_limit: hc.pids_limit.filter(|p| *p > 0),
            oom_kill_disable: hc.oom_kill_disable.unwrap_or(false),
            blkio_weight: hc.blkio_weight.unwrap_or(0) as u16,
            cgroups_path: format!("/berth/{id}"),
            mounts,
            netns: net.netns.clone(),
            pid_mode: ns(hc.pid_mode.as_ref()),
            ipc_mode: ns(hc.ipc_mode.as_ref()),
            uts_host: hc.uts_mode.as_deref() == Some("host"),
            sysctls: hc.sysctls.clone().unwrap_or_default().into_iter().collect(),
            ulimits,
            shm_size: hc.shm_size.filter(|s| *s > 0).unwrap_or(64 * 1024 * 1024),
            init_path: if hc.init.unwrap_or(false) {
                self.init_bin.clone()
            } else {
                None
            },
            oom_score_adj: hc.oom_score_adj.unwrap_or(0) as i32,
            masked_paths: hc.masked_paths.clone(),
            readonly_paths: hc.readonly_paths.clone(),
        };
        if hc.init.unwrap_or(false) && self.init_bin.is_none() {
            return Err(EngineError::invalid(
                "--init needs tini-static installed on the host (apt-get install tini)",
            ));
        }
        let spec =
            spec::build_spec(&input).map_err(|e| EngineError::InvalidParameter(e.to_string()))?;
        ph.mark("spec");
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle)?;
        // Written anew at every start and read at once by the runtime: no fsync (which on a
        // busy filesystem costs milliseconds).
        std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
        let state_dir = self.state_dir(&id);
        let _ = std::fs::remove_dir_all(&state_dir);
        std::fs::create_dir_all(&state_dir)?;
        ph.mark("bundle");
        let opts = SpawnOpts {
            shim_binary: self.shim_bin.clone(),
            id: id.clone(),
            bundle,
            state_dir,
            runtime: self.runtime.clone(),
            runtime_root: self.runc_root(),
            // The `none` log driver keeps nothing.
            log: if hc.log_config.as_ref().and_then(|l| l.typ.as_deref()) == Some("none") {
                std::path::PathBuf::from("/dev/null")
            } else {
                self.log_path(&id)
            },
            tty: cfg.tty.unwrap_or(false),
            stdin: cfg.open_stdin.unwrap_or(false),
        };
        c.shim_done.send_replace(false);
        if let Err(e) = spawn_shim(&opts).await {
            // The shim deleted what the runtime had made before it exited.
            c.shim_done.send_replace(true);
            return Err(match e {
                ShimError::Spawn(msg) => EngineError::InvalidParameter(format!(
                    "failed to create task for container: failed to create shim task: OCI runtime create failed: {}: unknown",
                    msg.trim()
                )),
                other => EngineError::Internal(other.to_string()),
            });
        }
        ph.mark("shim+create");
        // Attachers connect to the shim now, before the process runs, so no output is lost.
        c.created.send_modify(|g| *g += 1);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let woken = c.attach_done.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if c.pending_attach.load(Ordering::SeqCst) == 0
                || tokio::time::timeout_at(deadline, woken).await.is_err()
            {
                break;
            }
        }
        ph.mark("attachers");
        let shim = self.shim(&id);
        // The pid is known once the container is created (runc wrote it for the shim); read
        // it before starting, since a process that exits at once takes its shim (and socket)
        // with it.
        let pid = match read_init_pid(&self.state_dir(&id)) {
            Some(p) => p,
            None => {
                shim.state()
                    .await
                    .map_err(|e| EngineError::Internal(e.to_string()))?
                    .pid
            }
        };
        ph.mark("pid");
        let started = shim.start().await;
        ph.mark("runc-start");
        if let Err(e) = started {
            // A process that ends at once can take the shim away before its reply to `start`
            // is written: the exit it recorded shows that the start did happen.
            let gone = matches!(
                e,
                ShimError::Closed | ShimError::Connect { .. } | ShimError::Io(_)
            );
            if gone && shim.read_exit_file().await.is_some() {
                return self.started(c, &id, pid).await;
            }
            let _ = shim.kill(9).await;
            let gone = shim.wait_exit().await.ok().map(|(_, g)| g);
            Self::watch_shim(c.clone(), gone);
            return Err(EngineError::InvalidParameter(format!(
                "failed to start container: {e}"
            )));
        }
        let r = self.started(c, &id, pid).await;
        ph.mark("record");
        r
    }

    /// Marks the container's shim done once `gone` says it has exited (at once without one).
    fn watch_shim(c: Arc<Container>, gone: Option<ShimGone>) {
        match gone {
            None => {
                c.shim_done.send_replace(true);
            }
            Some(g) => {
                tokio::spawn(async move {
                    if tokio::time::timeout(Duration::from_secs(30), g.wait())
                        .await
                        .is_err()
                    {
                        tracing::warn!("a shim did not exit within 30 s of its container");
                    }
                    c.shim_done.send_replace(true);
                });
            }
        }
    }

    /// Waits until the last shim of the container has exited, and with it the runtime's state
    /// (a shim reports the exit before it deletes that); deletes that state itself if the
    /// shim takes too long.
    async fn await_shim_done(&self, c: &Container, id: &str) {
        let mut rx = c.shim_done.subscribe();
        let done = matches!(
            tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|d| *d)).await,
            Ok(Ok(_))
        );
        if !done {
            tracing::warn!(container = %id, "shim still there 10 s after the exit; deleting the runtime's state");
            self.runtime_delete(id).await;
        }
    }

    /// `runc delete --force`, when the runtime still has state for the container.
    async fn runtime_delete(&self, id: &str) {
        if !self.runc_root().join(id).exists() {
            return;
        }
        let _ = tokio::process::Command::new(&self.runtime)
            .arg("--root")
            .arg(self.runc_root())
            .args(["delete", "--force", id])
            .output()
            .await;
    }

    /// Records a started container and watches it (its exit, its health).
    async fn started(self: &Arc<Self>, c: &Arc<Container>, id: &str, pid: i32) -> Result<()> {
        {
            let mut r = c.rec.write().await;
            r.state.status = Status::Running;
            r.state.pid = pid as i64;
            r.state.exit_code = 0;
            r.state.error.clear();
            r.state.oom_killed = false;
            r.state.started_at = now();
            r.state.finished_at = "0001-01-01T00:00:00Z".into();
            if r.config.healthcheck.as_ref().is_some_and(|h| {
                h.test
                    .as_ref()
                    .is_some_and(|t| !t.is_empty() && t[0] != "NONE")
            }) {
                r.state.health = Some(super::HealthState {
                    status: "starting".into(),
                    ..Default::default()
                });
            }
            r.has_been_started = true;
            r.manually_stopped = false;
            let snap = r.clone();
            drop(r);
            self.save(&snap).await?;
            self.emit("start", &snap, &[]);
        }
        self.spawn_monitor(c.clone(), id.to_string());
        self.spawn_health(c.clone());
        Ok(())
    }

    fn spawn_monitor(self: &Arc<Self>, c: Arc<Container>, id: String) {
        let svc = self.clone();
        c.shim_done.send_replace(false);
        tokio::spawn(async move {
            let shim = svc.shim(&id);
            let info = match shim.wait_exit().await {
                Ok((i, gone)) => {
                    // The shim may still be deleting the runtime's state: the bookkeeping
                    // below goes on meanwhile; a start or removal waits for it.
                    Self::watch_shim(c.clone(), Some(gone));
                    i
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "shim lost; killing the container");
                    let i = svc.reap_orphan(&id).await;
                    Self::watch_shim(c.clone(), None);
                    i
                }
            };
            svc.on_exit(&c, info).await;
        });
    }

    /// The shim died without recording an exit: stop what runc still runs and report SIGKILL.
    async fn reap_orphan(&self, id: &str) -> ExitInfo {
        let root = self.runc_root();
        let _ = tokio::process::Command::new(&self.runtime)
            .arg("--root")
            .arg(&root)
            .args(["kill", id, "KILL"])
            .output()
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = tokio::process::Command::new(&self.runtime)
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id])
            .output()
            .await;
        ExitInfo {
            exit_code: 137,
            signal: Some(9),
            oom_killed: false,
            finished_at: now(),
        }
    }

    async fn on_exit(self: &Arc<Self>, c: &Arc<Container>, info: ExitInfo) {
        let id = c.rec.read().await.id.clone();
        let mut ph = super::Phases::new("exit", &id);
        let rootfs = Rootfs::new(&self.dir(&id));
        let _ = rootfs.unmount();
        ph.mark("unmount");
        self.net_teardown(&id).await;
        ph.mark("net");
        let snap = {
            let mut r = c.rec.write().await;
            r.state.status = Status::Exited;
            r.state.pid = 0;
            r.state.exit_code = info.exit_code as i64;
            r.state.oom_killed = info.oom_killed;
            r.state.finished_at = info.finished_at.clone();
            if let Some(h) = r.state.health.as_mut() {
                h.status = "unhealthy".into();
            }
            // The restart policy is applied in the same step, so nobody woken by the exit
            // (a `wait`, then `rm`) sees the container as exited while a restart is due:
            // dockerd's state goes straight from running to restarting.
            let policy = r.host_config.restart_policy.clone().unwrap_or_default();
            let name = policy.name.unwrap_or(Policy::EMPTY);
            let max = policy.maximum_retry_count.unwrap_or(0);
            let restart = !r.manually_stopped
                && match name {
                    Policy::ALWAYS | Policy::UNLESS_STOPPED => true,
                    Policy::ON_FAILURE => {
                        info.exit_code != 0 && (max == 0 || r.restart_count < max)
                    }
                    _ => false,
                };
            if restart {
                r.state.status = Status::Restarting;
            }
            r.clone()
        };
        let _ = self.save(&snap).await;
        ph.mark("save");
        ph.done();
        self.emit("die", &snap, &[("exitCode", info.exit_code.to_string())]);
        if info.oom_killed {
            self.emit("oom", &snap, &[]);
        }
        c.exited.send_modify(|(g, code)| {
            *g += 1;
            *code = info.exit_code as i64;
        });
        if snap.state.status == Status::Restarting {
            self.schedule_restart(c.clone(), &snap).await;
        } else if snap.host_config.auto_remove.unwrap_or(false) {
            let svc = self.clone();
            let c = c.clone();
            tokio::spawn(async move {
                if let Err(e) = svc.remove(&c, true, true).await {
                    tracing::warn!(error = %e, "auto-remove failed");
                }
            });
        }
    }

    /// Docker's back-off: 100 ms doubling while the container keeps dying within 10 s. The
    /// container is in state `restarting` meanwhile (set by the caller).
    async fn schedule_restart(self: &Arc<Self>, c: Arc<Container>, snap: &super::Record) {
        let ran_ms = chrono::DateTime::parse_from_rfc3339(&snap.state.started_at)
            .ok()
            .zip(chrono::DateTime::parse_from_rfc3339(&snap.state.finished_at).ok())
            .map(|(s, f)| f.signed_duration_since(s).num_milliseconds())
            .unwrap_or(0);
        let delay = if ran_ms >= 10_000 {
            100
        } else {
            (100u64 << snap.restart_count.clamp(0, 10)).min(60_000)
        };
        {
            let mut r = c.rec.write().await;
            if r.state.status != Status::Restarting {
                return; // stopped or removed meanwhile
            }
            r.restart_count += 1;
            let s = r.clone();
            drop(r);
            let _ = self.save(&s).await;
        }
        let svc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let _op = c.op.lock().await;
            let (status, stopped) = {
                let r = c.rec.read().await;
                (r.state.status, r.manually_stopped)
            };
            if status != Status::Restarting || stopped || *c.removed.borrow() {
                return;
            }
            // Still `restarting` (and Running, as dockerd shows it) until the new process runs:
            // a client polling between the two never sees `exited`.
            let snap = c.rec.read().await.clone();
            svc.emit("restart", &snap, &[]);
            if let Err(e) = svc.start_locked(&c).await {
                tracing::warn!(container = %snap.id, error = %e, "restart failed");
            }
        });
    }

    async fn wait_exit(c: &Container, gen0: u64, timeout: Option<Duration>) -> bool {
        let mut rx = c.exited.subscribe();
        let fut = rx.wait_for(|(g, _)| *g != gen0);
        match timeout {
            Some(t) => matches!(tokio::time::timeout(t, fut).await, Ok(Ok(_))),
            None => fut.await.is_ok(),
        }
    }

    pub async fn stop(
        self: &Arc<Self>,
        c: &Arc<Container>,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let _op = c.op.lock().await;
        self.stop_locked(c, t, signal).await
    }

    pub(crate) async fn stop_locked(
        self: &Arc<Self>,
        c: &Arc<Container>,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let rec = c.rec.read().await.clone();
        if rec.state.status == Status::Restarting {
            let mut r = c.rec.write().await;
            r.manually_stopped = true;
            r.state.status = Status::Exited;
            let s = r.clone();
            drop(r);
            self.save(&s).await?;
            return Ok(());
        }
        if !rec.state.status.is_alive() {
            return Err(EngineError::NotModified("not running".into()));
        }
        {
            let mut r = c.rec.write().await;
            r.manually_stopped = true;
            let s = r.clone();
            drop(r);
            self.save(&s).await?;
        }
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => parse_signal(s)?,
            None => match rec.config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
                Some(s) => parse_signal(s).unwrap_or(15),
                None => 15,
            },
        };
        let timeout = t.or(rec.config.stop_timeout).unwrap_or(10);
        let shim = self.shim(&rec.id);
        let gen0 = c.exited.borrow().0;
        if rec.state.status == Status::Paused {
            let _ = shim.resume().await;
        }
        self.emit("kill", &rec, &[("signal", sig.to_string())]);
        let _ = shim.kill(sig).await;
        let dur = (timeout >= 0).then(|| Duration::from_secs(timeout as u64));
        if !Self::wait_exit(c, gen0, dur).await {
            self.emit("kill", &rec, &[("signal", "9".into())]);
            let _ = shim.kill(9).await;
            if !Self::wait_exit(c, gen0, Some(Duration::from_secs(15))).await {
                return Err(EngineError::Internal(format!(
                    "container {} did not exit after SIGKILL",
                    rec.id
                )));
            }
        }
        let snap = c.rec.read().await.clone();
        self.emit("stop", &snap, &[]);
        Ok(())
    }

    pub async fn kill(self: &Arc<Self>, c: &Arc<Container>, signal: Option<&str>) -> Result<()> {
        let sig = match signal.filter(|s| !s.is_empty()) {
            Some(s) => parse_signal(s)?,
            None => 9,
        };
        let rec = c.rec.read().await.clone();
        if !rec.state.status.is_alive() {
            return Err(EngineError::Conflict(format!(
                "Cannot kill container: {}: Container {} is not running",
                rec.name, rec.id
            )));
        }
        if sig == 9 || sig == 15 {
            let mut r = c.rec.write().await;
            r.manually_stopped = true;
            let s = r.clone();
            drop(r);
            self.save(&s).await?;
        }
        self.emit("kill", &rec, &[("signal", sig.to_string())]);
        let gen0 = c.exited.borrow().0;
        self.shim(&rec.id)
            .kill(sig)
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        if sig == 9 {
            Self::wait_exit(c, gen0, Some(Duration::from_secs(10))).await;
        }
        Ok(())
    }

    pub async fn restart(
        self: &Arc<Self>,
        c: &Arc<Container>,
        t: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let _op = c.op.lock().await;
        match self.stop_locked(c, t, signal).await {
            Ok(()) | Err(EngineError::NotModified(_)) => {}
            Err(e) => return Err(e),
        }
        self.start_locked(c).await?;
        let snap = c.rec.read().await.clone();
        self.emit("restart", &snap, &[]);
        Ok(())
    }

    pub async fn pause(&self, c: &Arc<Container>, pause: bool) -> Result<()> {
        let _op = c.op.lock().await;
        let rec = c.rec.read().await.clone();
        match (pause, rec.state.status) {
            (true, Status::Running) | (false, Status::Paused) => {}
            (true, Status::Paused) => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is already paused",
                    rec.id
                )))
            }
            (false, Status::Running) => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not paused",
                    rec.id
                )))
            }
            _ => {
                return Err(EngineError::Conflict(format!(
                    "Container {} is not running",
                    rec.id
                )))
            }
        }
        let shim = self.shim(&rec.id);
        let r = if pause {
            shim.pause().await
        } else {
            shim.resume().await
        };
        r.map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut w = c.rec.write().await;
        w.state.status = if pause {
            Status::Paused
        } else {
            Status::Running
        };
        let s = w.clone();
        drop(w);
        self.save(&s).await?;
        self.emit(if pause { "pause" } else { "unpause" }, &s, &[]);
        Ok(())
    }

    pub async fn remove(
        self: &Arc<Self>,
        c: &Arc<Container>,
        force: bool,
        volumes: bool,
    ) -> Result<()> {
        let _op = c.op.lock().await;
        let rec = c.rec.read().await.clone();
        if rec.state.status == Status::Removing || *c.removed.borrow() {
            return Err(EngineError::Conflict(format!(
                "removal of container {} is already in progress",
                rec.id
            )));
        }
        if rec.state.status == Status::Restarting {
            if !force {
                return Err(EngineError::Conflict(format!(
                    "You cannot remove a restarting container {}. Stop the container before attempting removal or force remove",
                    rec.id
                )));
            }
            // No process to kill: marking it stopped ends the restart loop (the pending
            // restart finds it so, or finds it removed).
            let mut r = c.rec.write().await;
            r.manually_stopped = true;
            r.state.status = Status::Exited;
        }
        if rec.state.status.is_alive() {
            if !force {
                let what = if rec.state.status == Status::Paused {
                    "paused"
                } else {
                    "running"
                };
                return Err(EngineError::Conflict(format!(
                    "You cannot remove a {what} container {}. Stop the container before attempting removal or force remove",
                    rec.id
                )));
            }
            {
                let mut r = c.rec.write().await;
                r.manually_stopped = true;
            }
            let shim = self.shim(&rec.id);
            let gen0 = c.exited.borrow().0;
            if rec.state.status == Status::Paused {
                let _ = shim.resume().await;
            }
            // dockerd reports the SIGKILL of `rm -f` as a kill event before die/destroy.
            self.emit("kill", &rec, &[("signal", "9".into())]);
            let _ = shim.kill(9).await;
            if !Self::wait_exit(c, gen0, Some(Duration::from_secs(15))).await {
                return Err(EngineError::Internal(format!(
                    "could not kill container {}",
                    rec.id
                )));
            }
        }
        let mut ph = super::Phases::new("remove", &rec.id);
        {
            let mut r = c.rec.write().await;
            r.state.status = Status::Removing;
        }
        let rootfs = Rootfs::new(&self.dir(&rec.id));
        let _ = rootfs.unmount();
        ph.mark("unmount");
        self.net_teardown(&rec.id).await;
        ph.mark("net");
        self.store.delete_container(&rec.id).await?;
        ph.mark("db");
        let dir = self.dir(&rec.id);
        let state = self.state_dir(&rec.id);
        let rm = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
        });
        // The shim deletes the runtime's state after it reported the exit; wait for that
        // (a stray state, e.g. of a shim that died, is deleted here).
        self.await_shim_done(c, &rec.id).await;
        self.runtime_delete(&rec.id).await;
        let _ = std::fs::remove_dir_all(state);
        let _ = rm.await;
        ph.mark("runtime+rm-rf");
        self.forget(&rec.id);
        self.release_volumes(&rec, volumes).await;
        self.execs.forget_container(&rec.id);
        let _ = c.removed.send(true);
        ph.done();
        self.emit("destroy", &rec, &[]);
        Ok(())
    }

    pub async fn rename(&self, c: &Arc<Container>, new: &str) -> Result<()> {
        let new = super::names::validate(new)?;
        let old = c.rec.read().await.name.clone();
        if old == new {
            return Err(EngineError::invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        if let Ok(other) = self.get(&new).await {
            if other.rec.read().await.name == new {
                return Err(EngineError::Conflict(format!(
                    "Conflict. The container name \"/{new}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    other.rec.read().await.id
                )));
            }
        }
        let mut r = c.rec.write().await;
        r.name = new.clone();
        let s = r.clone();
        drop(r);
        if let Err(e) = self.save(&s).await {
            c.rec.write().await.name = old;
            return Err(e);
        }
        self.emit("rename", &s, &[("oldName", format!("/{old}"))]);
        Ok(())
    }

    /// `POST /containers/{id}/wait`: resolves when the condition holds; returns the exit code.
    pub async fn wait(&self, c: &Arc<Container>, condition: &str) -> Result<i64> {
        let mut exited = c.exited.subscribe();
        let mut removed = c.removed.subscribe();
        let gen0 = exited.borrow().0;
        match condition {
            "" | "not-running" => {
                let alive = {
                    let r = c.rec.read().await;
                    r.state.status.is_alive() || r.state.status == Status::Restarting
                };
                if !alive {
                    return Ok(c.rec.read().await.state.exit_code);
                }
                // As dockerd: the first exit ends the wait, even if a restart policy brings
                // the container back.
                let _ = exited.wait_for(|(g, _)| *g != gen0).await;
                Ok(exited.borrow().1)
            }
            "next-exit" => {
                let _ = exited.wait_for(|(g, _)| *g != gen0).await;
                Ok(exited.borrow().1)
            }
            "removed" => {
                let _ = removed.wait_for(|r| *r).await;
                tracing::debug!("wait: removed");
                Ok(c.rec.read().await.state.exit_code)
            }
            other => Err(EngineError::invalid(format!(
                "invalid condition: \"{other}\""
            ))),
        }
    }

    /// Re-attach to the shims of containers that were running when berthd stopped; record the
    /// exits that happened meanwhile; then apply restart policies as dockerd does on start.
    pub async fn restore(self: &Arc<Self>) {
        for c in self.all() {
            let rec = c.rec.read().await.clone();
            if !(rec.state.status.is_alive() || rec.state.status == Status::Restarting) {
                if rec.state.status == Status::Removing {
                    let _ = self.remove(&c, true, false).await;
                }
                continue;
            }
            let shim = self.shim(&rec.id);
            match shim.state().await {
                Ok(st)
                    if matches!(
                        st.status,
                        ShimStatus::Running | ShimStatus::Paused | ShimStatus::Created
                    ) =>
                {
                    let mut r = c.rec.write().await;
                    r.state.pid = st.pid as i64;
                    r.state.status = if st.status == ShimStatus::Paused {
                        Status::Paused
                    } else {
                        Status::Running
                    };
                    drop(r);
                    tracing::info!(container = %rec.id, "reattached to running container");
                    self.net_restore(&c).await;
                    self.spawn_monitor(c.clone(), rec.id.clone());
                    self.spawn_health(c.clone());
                }
                Ok(st) => {
                    let info = st.exit.unwrap_or(ExitInfo {
                        exit_code: 255,
                        signal: None,
                        oom_killed: false,
                        finished_at: now(),
                    });
                    // The shim may still be deleting the runtime's state.
                    c.shim_done.send_replace(false);
                    let gone = shim.wait_exit().await.ok().map(|(_, g)| g);
                    Self::watch_shim(c.clone(), gone);
                    self.on_exit(&c, info).await;
                }
                Err(_) => {
                    let info = match shim.read_exit_file().await {
                        Some(i) => i,
                        None => self.reap_orphan(&rec.id).await,
                    };
                    tracing::info!(container = %rec.id, code = info.exit_code, "container exited while berthd was down");
                    self.on_exit(&c, info).await;
                }
            }
        }
        for c in self.all() {
            let rec = c.rec.read().await.clone();
            if rec.state.status.is_alive() || rec.state.status == Status::Restarting {
                continue;
            }
            let policy = rec.host_config.restart_policy.clone().unwrap_or_default();
            let start = match policy.name.unwrap_or(Policy::EMPTY) {
                Policy::ALWAYS => rec.has_been_started,
                Policy::UNLESS_STOPPED => rec.has_been_started && !rec.manually_stopped,
                _ => false,
            };
            if start {
                if let Err(e) = self.start(&c).await {
                    tracing::warn!(container = %rec.id, error = %e, "restart on engine start failed");
                }
            }
        }
    }
}
