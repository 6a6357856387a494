//! The classic builder behind `POST /build`: every Dockerfile instruction, multi-stage builds,
//! build args, `.dockerignore`, a layer cache, and Docker's classic output stream.
//!
//! Each step commits an image whose parent is the previous step's (so `docker history` shows a
//! row per instruction); RUN runs a real container through the container service; COPY/ADD
//! build a layer directly from the context; metadata steps add no layer.

mod copy;
pub mod dockerfile;
pub use berth_dockerignore as ignore;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bollard_stubs::models::{ContainerCreateBody, HostConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::containers::logs::LogOptions;
use crate::containers::ContainerService;
use crate::error::{EngineError, Result};
use crate::images::progress::{Message, Progress};
use crate::images::reference::ImageRef;
use dockerfile::{expand, Instruction};

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub tags: Vec<String>,
    pub dockerfile: String,
    pub build_args: HashMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    pub rm: bool,
    pub force_rm: bool,
    pub labels: HashMap<String, String>,
    pub quiet: bool,
    pub network_mode: Option<String>,
    pub platform: Option<String>,
    /// `--add-host` (`extrahosts`): `name:ip` lines for the /etc/hosts of RUN containers.
    pub extra_hosts: Vec<String>,
    /// `--cache-from`: when given, only these images (and their ancestors) satisfy the cache.
    pub cache_from: Vec<String>,
}

/// Args every build knows without an ARG line (Docker's predefined proxy args and platform).
const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

struct Stage {
    name: Option<String>,
    from: Instruction,
    steps: Vec<Instruction>,
}

/// The image being built in one stage.
#[derive(Clone)]
struct State {
    image: Option<String>,
    config: Value,
    diff_ids: Vec<String>,
    /// ARGs in scope with their values.
    args: BTreeMap<String, String>,
    /// Whether this stage set CMD (a later ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl State {
    fn run(&self) -> &Value {
        &self.config["config"]
    }
    fn env_map(&self) -> HashMap<String, String> {
        let mut m: HashMap<String, String> = self
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for e in self.run()["Env"].as_array().into_iter().flatten() {
            if let Some((k, v)) = e.as_str().and_then(|e| e.split_once('=')) {
                m.insert(k.to_string(), v.to_string());
            }
        }
        m
    }
    fn shell(&self) -> Vec<String> {
        self.run()["Shell"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .filter(|v: &Vec<String>| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }
    fn workdir(&self) -> String {
        self.run()["WorkingDir"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    }
}

fn short(id: &str) -> String {
    crate::util::short_id(id)
}

/// `docker build`'s classic builder: parses the Dockerfile, runs the global ARG steps, then
/// every stage up to the target (as the classic builder does, unused stages included), each
/// in its own task: a stage waits only for the stages it names (`FROM <stage>`,
/// `COPY --from=<stage|index>`), so independent stages build concurrently. Each stage's output
/// is buffered and sent in stage order, so the stream reads as the sequential classic
/// builder's (`Step N/M` numbered over the whole file).
pub struct Builder {
    svc: Arc<ContainerService>,
    opts: BuildOptions,
    out: Progress,
    context: PathBuf,
}

/// An image `--cache-from` names: its id, its parent chain and what its history says.
struct CacheSource {
    id: String,
    /// The image and its ancestors (a local cache hit counts only when it is one of them).
    chain: HashSet<String>,
    history: Vec<Value>,
    diff_ids: Vec<String>,
}

/// What the stages of one build share.
struct Shared {
    svc: Arc<ContainerService>,
    opts: BuildOptions,
    context: PathBuf,
    total: usize,
    /// ARGs declared before the first FROM: their values are the defaults of a stage's
    /// `ARG NAME` without a value.
    global_args: BTreeMap<String, String>,
    used_args: Mutex<HashSet<String>>,
    /// Intermediate containers still around (removed when the build ends).
    containers: Arc<Mutex<Vec<String>>>,
    /// Cancelled when a stage fails: the others stop at their next step (a running RUN
    /// container is left at once).
    cancel: CancellationToken,
    /// The first stage failure (stage index, error); the cancellations it causes are not kept.
    failure: Mutex<Option<(usize, EngineError)>>,
    /// Stage names (lower-case) and each stage's outcome: `None` while it builds, then the
    /// image id, or `Some(None)` when it failed.
    names: Vec<Option<String>>,
    done: Vec<watch::Receiver<Option<Option<String>>>>,
    /// Per stage: its base image is resolved (or it needs none).
    turns: Vec<watch::Receiver<bool>>,
    /// Base images resolved (or pulled) by this build, so stages naming the same one pull once.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>>,
    cache_sources: Vec<CacheSource>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const CANCELLED: &str = "build cancelled: another stage failed";

fn cancelled() -> EngineError {
    EngineError::Internal(CANCELLED.into())
}

impl Shared {
    /// Record a stage's failure (the first one only, and not the cancellations that follow it)
    /// and cancel the other stages.
    fn fail(&self, index: usize, e: EngineError) {
        if !self.cancel.is_cancelled() {
            let mut f = lock(&self.failure);
            if f.is_none() {
                *f = Some((index, e));
            }
        }
        self.cancel.cancel();
    }

    fn failed_stage(&self) -> Option<usize> {
        lock(&self.failure).as_ref().map(|f| f.0)
    }
}

/// One stage being built (or the global ARG steps): the per-stage state over [`Shared`].
struct Worker {
    sh: Arc<Shared>,
    out: Progress,
    /// This stage's index (stages before it are the ones it may name).
    index: usize,
    /// The number of the step last printed.
    step: usize,
    /// With --cache-from: the source a restored step came from (later steps stay with it).
    cache_pick: AtomicUsize,
    /// Set once this stage's base image is resolved (see [`Worker::wait_turn`]).
    turn: Option<watch::Sender<bool>>,
}

impl std::ops::Deref for Worker {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.sh
    }
}

impl Builder {
    pub fn new(
        svc: Arc<ContainerService>,
        opts: BuildOptions,
        context: PathBuf,
        out: Progress,
    ) -> Self {
        Self {
            svc,
            opts,
            out,
            context,
        }
    }

    async fn say(&self, s: impl Into<String>) {
        if !self.opts.quiet {
            self.out.send(Message::stream(s)).await;
        }
    }

    /// Run the whole build; returns the final image id.
    pub async fn run(self) -> Result<String> {
        let containers = Arc::new(Mutex::new(Vec::new()));
        let res = self.build(containers.clone()).await;
        // As dockerd's classic builder: with `rm` a step's container goes once it is committed;
        // a failed (or cancelled) step's container stays for inspection unless `forcerm`, and
        // with `rm=false` every one stays.
        let keep = !self.opts.force_rm;
        if !keep {
            let left = std::mem::take(&mut *lock(&containers));
            for cid in left {
                if let Ok(c) = self.svc.get(&cid).await {
                    let _ = self.svc.remove(&c, true, true).await;
                }
            }
        }
        res
    }

    async fn build(&self, containers: Arc<Mutex<Vec<String>>>) -> Result<String> {
        if let Some(p) = self.opts.platform.clone().filter(|p| !p.is_empty()) {
            let (os, arch, _) = crate::images::pull::parse_platform(Some(&p))?;
            let (hos, harch) = crate::images::pull::host_platform();
            if os != hos || arch != harch {
                return Err(EngineError::invalid(format!(
                    "platform {p} is not supported by this engine (it builds for {hos}/{harch})"
                )));
            }
        }
        let name = if self.opts.dockerfile.is_empty() {
            "Dockerfile".to_string()
        } else {
            self.opts.dockerfile.clone()
        };
        let rel = name.trim_start_matches("./");
        let path = crate::containers::rootfs::resolve_in_root(&self.context, rel);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) if rel == "Dockerfile" => {
                std::fs::read_to_string(self.context.join("dockerfile")).map_err(|_| {
                    EngineError::invalid("Cannot locate specified Dockerfile: Dockerfile")
                })?
            }
            Err(_) => {
                return Err(EngineError::invalid(format!(
                    "Cannot locate specified Dockerfile: {rel}"
                )))
            }
        };
        let instrs = dockerfile::parse(&text).map_err(|e| EngineError::invalid(e.to_string()))?;
        // `.dockerignore`: the CLI already left those files out; other clients may not have.
        let ctx = self.context.clone();
        tokio::task::spawn_blocking(move || {
            let text = std::fs::read_to_string(ctx.join(".dockerignore")).unwrap_or_default();
            ignore::Ignore::parse(&text).filter_dir(&ctx, &[])
        })
        .await
        .map_err(EngineError::internal)?
        .map_err(|e| EngineError::Internal(format!("applying .dockerignore: {e}")))?;
        // Global ARGs (before the first FROM) and stages.
        let mut metas: Vec<Instruction> = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instrs {
            if ins.cmd == "FROM" {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_kw, n] if as_kw.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                    [_] => None,
                    _ => return Err(EngineError::invalid(format!("dockerfile parse error line {}: FROM requires either one or three arguments", ins.line))),
                };
                if name.is_some() && stages.iter().any(|s| s.name == name) {
                    return Err(EngineError::invalid(format!(
                        "duplicate name {}",
                        name.unwrap_or_default()
                    )));
                }
                stages.push(Stage {
                    name,
                    from: ins,
                    steps: vec![],
                });
            } else if let Some(s) = stages.last_mut() {
                s.steps.push(ins);
            } else if ins.cmd == "ARG" {
                metas.push(ins);
            } else {
                return Err(EngineError::invalid(format!(
                    "dockerfile parse error line {}: {} instruction before FROM",
                    ins.line, ins.cmd
                )));
            }
        }
        if stages.is_empty() {
            return Err(EngineError::invalid("No build stage in current context"));
        }
        let last = match &self.opts.target {
            Some(t) if !t.is_empty() => stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&t.to_ascii_lowercase()))
                .ok_or_else(|| {
                    EngineError::invalid(format!("failed to reach build target {t} in Dockerfile"))
                })?,
            _ => stages.len() - 1,
        };
        stages.truncate(last + 1);
        let total = metas.len()
            + stages.iter().map(|s| 1 + s.steps.len()).sum::<usize>()
            + usize::from(!self.opts.labels.is_empty());
        // Global ARGs: a step each (as the classic builder prints them), no image.
        let mut step = 0;
        let mut global_args = BTreeMap::new();
        let mut used_args = HashSet::new();
        for ins in &metas {
            step += 1;
            self.say(format!("Step {step}/{total} : {}\n", ins.original))
                .await;
            let vars: HashMap<String, String> = global_args
                .iter()
                .map(|(k, v): (&String, &String)| (k.clone(), v.clone()))
                .collect();
            for (k, default) in parse_arg(&ins.args, &vars)? {
                let val = self
                    .opts
                    .build_args
                    .get(&k)
                    .cloned()
                    .or(default)
                    .unwrap_or_default();
                used_args.insert(k.clone());
                global_args.insert(k, val);
            }
        }
        let cache_sources = self.cache_sources().await?;
        let n = stages.len();
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| watch::channel(None)).unzip();
        let (turn_txs, turns): (Vec<_>, Vec<_>) = (0..n).map(|_| watch::channel(false)).unzip();
        let sh = Arc::new(Shared {
            svc: self.svc.clone(),
            opts: self.opts.clone(),
            context: self.context.clone(),
            total,
            global_args,
            used_args: Mutex::new(used_args),
            containers,
            cancel: CancellationToken::new(),
            failure: Mutex::new(None),
            names: stages.iter().map(|s| s.name.clone()).collect(),
            done: rxs,
            turns,
            pulls: Mutex::new(HashMap::new()),
            cache_sources,
        });
        // Each stage writes to its own unbounded buffer; they are sent on in stage order, up to
        // the stage that failed (the stages after it were cancelled: the classic builder would
        // not have reached them).
        let mut outs = Vec::with_capacity(n);
        let mut bufs = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, mut rx) = mpsc::channel::<Message>(64);
            let (utx, urx) = mpsc::unbounded_channel::<Message>();
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if utx.send(m).is_err() {
                        break;
                    }
                }
            });
            outs.push(Progress::new(tx));
            bufs.push(urx);
        }
        let seq = {
            let (out, sh) = (self.out.clone(), sh.clone());
            tokio::spawn(async move {
                for (i, mut rx) in bufs.into_iter().enumerate() {
                    while let Some(m) = rx.recv().await {
                        out.send(m).await;
                    }
                    if sh.failed_stage().is_some_and(|k| i >= k) {
                        break;
                    }
                }
            })
        };
        // As dockerd cancels a build whose client hung up: every stage stops at once (a running
        // RUN container is left), as when a stage fails.
        let hangup = {
            let (out, sh) = (self.out.clone(), sh.clone());
            tokio::spawn(async move {
                out.closed().await;
                sh.fail(
                    0,
                    EngineError::Internal("the client went away: build cancelled".into()),
                );
            })
        };
        let mut tasks = tokio::task::JoinSet::new();
        let stage_ends = outs.into_iter().zip(txs).zip(turn_txs);
        for (i, (st, ((out, tx), turn))) in stages.into_iter().zip(stage_ends).enumerate() {
            let w = Worker {
                sh: sh.clone(),
                out,
                index: i,
                step,
                cache_pick: AtomicUsize::new(usize::MAX),
                turn: Some(turn),
            };
            step += 1 + st.steps.len();
            tasks.spawn(async move {
                let mut w = w;
                let res = w.stage(st, i == n - 1).await;
                let id = match res {
                    Ok(id) => Some(id),
                    Err(e) => {
                        w.sh.fail(i, e);
                        None
                    }
                };
                let _ = tx.send(Some(id.clone()));
                // The stage's output ends here (the sequencer moves on to the next one).
                drop(w);
                (i, id)
            });
        }
        let mut result = None;
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok((i, id)) if i == n - 1 => result = id,
                Ok(_) => {}
                Err(e) => sh.fail(n, EngineError::Internal(format!("build stage failed: {e}"))),
            }
        }
        // The watcher holds a sender: done with it before the stream may end.
        hangup.abort();
        let _ = hangup.await;
        let _ = seq.await;
        if let Some((_, e)) = lock(&sh.failure).take() {
            return Err(e);
        }
        let result =
            result.ok_or_else(|| EngineError::Internal("the build produced no image".into()))?;
        let unused: Vec<String> = {
            let used = lock(&sh.used_args);
            let mut u: Vec<String> = self
                .opts
                .build_args
                .keys()
                .filter(|k| !used.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
                .cloned()
                .collect();
            u.sort();
            u
        };
        if !unused.is_empty() {
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                unused.join(" ")
            ))
            .await;
        }
        self.out.send(Message::aux(json!({"ID": result}))).await;
        self.say(format!("Successfully built {}\n", short(&result)))
            .await;
        for t in self.opts.tags.clone() {
            let r = ImageRef::parse_default_tag(&t)?;
            if r.digest.is_some() {
                return Err(EngineError::invalid(format!(
                    "invalid tag {t}: tags cannot contain a digest"
                )));
            }
            self.svc
                .images
                .store
                .set_tag(&r.tagged().unwrap_or_default(), &result)
                .await?;
            self.svc.images.emit("tag", &result, &r.familiar());
            self.say(format!("Successfully tagged {}\n", r.familiar()))
                .await;
        }
        Ok(result)
    }

    /// The images `--cache-from` names that exist here (a name that does not is skipped, as
    /// dockerd does; naming any at all turns the local cache off except through them).
    async fn cache_sources(&self) -> Result<Vec<CacheSource>> {
        let mut out = Vec::new();
        for r in &self.opts.cache_from {
            let Ok(Some(img)) = self.svc.images.try_resolve(r).await else {
                continue;
            };
            let mut chain = HashSet::new();
            let mut next = Some(img.id().to_string());
            while let Some(id) = next.take() {
                if !chain.insert(id.clone()) {
                    break;
                }
                next = self
                    .svc
                    .images
                    .get_by_id(&id)
                    .await?
                    .and_then(|i| i.rec.parent.clone())
                    .filter(|p| !p.is_empty());
            }
            out.push(CacheSource {
                id: img.id().to_string(),
                chain,
                history: img.config["history"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
                diff_ids: self
                    .svc
                    .images
                    .layers(img.id())
                    .await?
                    .into_iter()
                    .map(|l| l.diff_id)
                    .collect(),
            });
        }
        Ok(out)
    }
}

impl Worker {
    async fn say(&self, s: impl Into<String>) {
        if !self.opts.quiet {
            self.out.send(Message::stream(s)).await;
        }
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(cancelled())
        } else {
            Ok(())
        }
    }

    fn use_arg(&self, k: &str) {
        lock(&self.used_args).insert(k.to_string());
    }

    /// Build one stage; returns its image id.
    async fn stage(&mut self, st: Stage, last: bool) -> Result<String> {
        let mut state = self.from(&st.from).await?;
        for ins in &st.steps {
            self.check_cancel()?;
            self.step(&mut state, ins).await?;
        }
        if last && !self.opts.labels.is_empty() {
            let labels: Vec<String> = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                .collect();
            let ins = Instruction {
                cmd: "LABEL".into(),
                args: labels.join(" "),
                original: format!("LABEL {}", labels.join(" ")),
                ..Default::default()
            };
            self.step(&mut state, &ins).await?;
        }
        state.image.ok_or_else(|| {
            EngineError::invalid("No image was generated. Is your Dockerfile empty?")
        })
    }

    /// The earlier stage `r` names (by name; with `by_index` also by number, as COPY --from
    /// allows); `None` when it names none (so it is an image).
    fn earlier_stage(&self, r: &str, by_index: bool) -> Result<Option<usize>> {
        let l = r.to_ascii_lowercase();
        let earlier = &self.names[..self.index.min(self.names.len())];
        if let Some(i) = earlier.iter().position(|n| n.as_deref() == Some(&*l)) {
            return Ok(Some(i));
        }
        match l.parse::<usize>() {
            Ok(i) if by_index && i < earlier.len() => Ok(Some(i)),
            Ok(_) if by_index => Err(EngineError::invalid(format!("invalid stage index {r}"))),
            _ => Ok(None),
        }
    }

    /// The image of the earlier stage `r` names, once that stage is built; `None` when `r`
    /// names no earlier stage.
    async fn stage_image(&self, r: &str, by_index: bool) -> Result<Option<String>> {
        match self.earlier_stage(r, by_index)? {
            Some(i) => self.stage_result(i).await.map(Some),
            None => Ok(None),
        }
    }

    async fn stage_result(&self, idx: usize) -> Result<String> {
        let mut rx = self.done[idx].clone();
        let v = rx.wait_for(|v| v.is_some()).await.map(|v| v.clone());
        match v {
            Ok(Some(Some(id))) => Ok(id),
            _ => Err(cancelled()),
        }
    }

    /// Base images are looked up (and pulled) in stage order, so a pull's progress shows under
    /// the first stage that names the image, as in a sequential build: wait for the stages
    /// before this one to have resolved theirs.
    async fn wait_turn(&self) {
        if self.index > 0 && self.index <= self.turns.len() {
            let mut rx = self.turns[self.index - 1].clone();
            let _ = rx.wait_for(|passed| *passed).await;
        }
    }

    /// This stage's base is resolved (after [`Worker::wait_turn`]): the next stage may resolve
    /// its own (also when this stage ends early: the sender is dropped).
    fn pass_turn(&mut self) {
        if let Some(t) = self.turn.take() {
            let _ = t.send(true);
        }
    }

    async fn header(&mut self, ins: &Instruction) {
        self.step += 1;
        let text = format!("Step {}/{} : {}", self.step, self.total, ins.original);
        self.say(text).await;
        self.say("\n").await;
    }

    async fn from(&mut self, ins: &Instruction) -> Result<State> {
        self.header(ins).await;
        let vars: HashMap<String, String> = self
            .global_args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let base_raw = ins.args.split_whitespace().next().unwrap_or_default();
        let base = expand(base_raw, &vars).map_err(|e| EngineError::invalid(e.to_string()))?;
        if let Some(p) = ins.flags.get("platform") {
            let p = expand(p, &vars).map_err(|e| EngineError::invalid(e.to_string()))?;
            let (os, arch, _) = crate::images::pull::parse_platform(Some(&p))?;
            let (hos, harch) = crate::images::pull::host_platform();
            if os != hos || arch != harch {
                return Err(EngineError::invalid(format!(
                    "FROM --platform={p}: only {hos}/{harch} can be built here"
                )));
            }
        }
        let mut state = if base.eq_ignore_ascii_case("scratch") {
            self.wait_turn().await;
            self.pass_turn();
            let (os, arch) = crate::images::pull::host_platform();
            State {
                image: None,
                config: json!({"architecture": arch, "os": os, "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}),
                diff_ids: vec![],
                args: BTreeMap::new(),
                cmd_set: false,
            }
        } else if let Some(i) = self.earlier_stage(&base, false)? {
            self.wait_turn().await;
            self.pass_turn();
            let id = self.stage_result(i).await?;
            self.load_state(&id).await?
        } else {
            self.wait_turn().await;
            self.check_cancel()?;
            let img = self.ensure_image(&base).await?;
            self.pass_turn();
            self.load_state(&img).await?
        };
        if let Some(id) = &state.image {
            self.say(format!(" ---> {}\n", short(id))).await;
        }
        // ONBUILD triggers of the base run first, then leave the child's config.
        let triggers: Vec<String> = state.run()["OnBuild"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if !triggers.is_empty() {
            self.say(format!(
                "# Executing {} build trigger{}\n",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ))
            .await;
            state.config["config"]["OnBuild"] = Value::Null;
            for t in triggers {
                let parsed =
                    dockerfile::parse(&t).map_err(|e| EngineError::invalid(e.to_string()))?;
                for ins in parsed {
                    self.execute(&mut state, &ins).await?;
                }
            }
        }
        Ok(state)
    }

    /// A base image by name: the local one (unless --pull), else pulled. Stages naming the
    /// same image share one look-up or pull.
    async fn ensure_image(&self, name: &str) -> Result<String> {
        let cell = lock(&self.pulls)
            .entry(name.to_string())
            .or_default()
            .clone();
        let mut got = cell.lock().await;
        if let Some(id) = got.as_ref() {
            return Ok(id.clone());
        }
        let id = self.find_or_pull(name).await?;
        *got = Some(id.clone());
        Ok(id)
    }

    async fn find_or_pull(&self, name: &str) -> Result<String> {
        if !self.opts.pull {
            if let Some(i) = self.svc.images.try_resolve(name).await? {
                return Ok(i.id().to_string());
            }
        }
        let r = ImageRef::parse_default_tag(name)?;
        let plan = self
            .svc
            .images
            .pull_prepare(&r, None, &oci_client::secrets::RegistryAuth::Anonymous)
            .await?;
        // -q prints the image id only, no pull progress.
        let out = if self.opts.quiet {
            Progress::none()
        } else {
            self.out.clone()
        };
        self.svc.images.pull_run(plan, &out).await
    }

    async fn load_state(&self, id: &str) -> Result<State> {
        let img = self
            .svc
            .images
            .get_by_id(id)
            .await?
            .ok_or_else(|| EngineError::no_such_image(id))?;
        let diff_ids = self
            .svc
            .images
            .layers(id)
            .await?
            .into_iter()
            .map(|l| l.diff_id)
            .collect();
        let mut config = img.config.clone();
        if !config["config"].is_object() {
            config["config"] = json!({});
        }
        Ok(State {
            image: Some(id.to_string()),
            config,
            diff_ids,
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    async fn step(&mut self, state: &mut State, ins: &Instruction) -> Result<()> {
        self.header(ins).await;
        self.execute(state, ins).await
    }

    fn cache_key(&self, state: &State, ins: &Instruction, extra: &str) -> String {
        let mut h = Sha256::new();
        h.update(ins.cmd.as_bytes());
        h.update([0]);
        h.update(ins.args.as_bytes());
        let mut flags: Vec<_> = ins.flags.iter().collect();
        flags.sort();
        for (k, v) in flags {
            h.update(format!("\0{k}={v}").as_bytes());
        }
        for d in &ins.heredocs {
            h.update(format!("\0<<{}:{}:{}\0", d.name, d.expand, d.chomp).as_bytes());
            h.update(d.content.as_bytes());
        }
        // The config the step leads to (what the classic builder compares): covers variables
        // expanded into metadata; build args reach RUN's key through `extra`.
        h.update([0]);
        h.update(serde_json::to_vec(&state.config["config"]).unwrap_or_default());
        h.update([0]);
        h.update(extra.as_bytes());
        hex::encode(h.finalize())
    }

    /// A cached image for this step: the local build cache (a step with the same parent and
    /// key), or with --cache-from, only images those sources have, as dockerd's classic
    /// builder: a local hit that is one of their ancestors, else a source whose history goes
    /// on from this state with `created_by` (its layer is reused: that step is restored).
    async fn cached(&self, state: &State, key: &str, created_by: &str) -> Result<Option<String>> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let local = self.cached_local(state, key).await?;
        if self.opts.cache_from.is_empty() {
            return Ok(local);
        }
        let pick = self.cache_pick.load(Ordering::Relaxed);
        let sources = self
            .cache_sources
            .iter()
            .enumerate()
            .filter(|(i, _)| pick == usize::MAX || *i == pick);
        if let Some(id) = &local {
            if sources.clone().any(|(_, s)| s.chain.contains(id)) {
                return Ok(local);
            }
        }
        let hist = state.config["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let n = hist.len();
        let fresh = hist.is_empty() && state.diff_ids.is_empty();
        for (i, s) in sources {
            if s.history.len() <= n
                || (!fresh
                    && (s.history[..n] != hist[..] || !s.diff_ids.starts_with(&state.diff_ids)))
                || s.history[n]["created_by"].as_str() != Some(created_by)
            {
                continue;
            }
            if s.history.len() == n + 1 {
                return Ok(Some(s.id.clone()));
            }
            // Restore the step: this state plus the source's history row (and its layer).
            let h = s.history[n].clone();
            let layer = if h["empty_layer"].as_bool() == Some(true) {
                None
            } else {
                let k = s.history[..n]
                    .iter()
                    .filter(|h| h["empty_layer"].as_bool() != Some(true))
                    .count();
                match s.diff_ids.get(k) {
                    Some(d) => Some(d.clone()),
                    None => continue,
                }
            };
            let mut diff_ids = state.diff_ids.clone();
            diff_ids.extend(layer);
            let mut cfg = state.config.clone();
            cfg["created"] = h["created"].clone();
            cfg["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
            let mut rows = hist.clone();
            rows.push(h);
            cfg["history"] = json!(rows);
            let id = self
                .svc
                .images
                .commit_config(&cfg, &diff_ids, state.image.clone(), &[])
                .await?;
            self.cache_pick.store(i, Ordering::Relaxed);
            return Ok(Some(id));
        }
        Ok(None)
    }

    /// The local build cache's image for this parent and key, if it still exists.
    async fn cached_local(&self, state: &State, key: &str) -> Result<Option<String>> {
        let r: Option<(String,)> =
            sqlx::query_as("SELECT image_id FROM build_cache WHERE parent = ? AND key = ?")
                .bind(state.image.clone().unwrap_or_default())
                .bind(key)
                .fetch_optional(&self.svc.images.store.pool)
                .await?;
        Ok(match r {
            Some((id,)) if self.svc.images.get_by_id(&id).await?.is_some() => Some(id),
            _ => None,
        })
    }

    /// Record one more cache key for a step's image (`parent` is the image before the step).
    async fn remember(&self, parent: Option<&str>, key: &str, id: &str) -> Result<()> {
        sqlx::query("INSERT OR REPLACE INTO build_cache (parent, key, image_id) VALUES (?, ?, ?)")
            .bind(parent.unwrap_or_default())
            .bind(key)
            .bind(id)
            .execute(&self.svc.images.store.pool)
            .await?;
        Ok(())
    }

    /// Commit the state as a new image (with a layer when given) and record it in the cache.
    async fn commit(
        &self,
        state: &mut State,
        created_by: String,
        layer: Option<String>,
        key: &str,
    ) -> Result<()> {
        let now = crate::util::rfc3339_nano(chrono::Utc::now());
        let mut cfg = state.config.clone();
        cfg["created"] = json!(now);
        // dockerd's image configs always carry OnBuild (null when there is no trigger); clients
        // index it (docker-py's `info['Config']['OnBuild']`).
        if let Some(c) = cfg["config"].as_object_mut() {
            c.entry("OnBuild").or_insert(Value::Null);
        }
        if let Some(l) = &layer {
            state.diff_ids.push(l.clone());
        }
        cfg["rootfs"] = json!({"type": "layers", "diff_ids": state.diff_ids});
        let mut hist = cfg["history"].as_array().cloned().unwrap_or_default();
        let mut h = json!({"created": now, "created_by": created_by});
        if layer.is_none() {
            h["empty_layer"] = json!(true);
        }
        hist.push(h);
        cfg["history"] = json!(hist);
        let id = self
            .svc
            .images
            .commit_config(&cfg, &state.diff_ids, state.image.clone(), &[])
            .await?;
        self.remember(state.image.as_deref(), key, &id).await?;
        state.image = Some(id);
        state.config = cfg;
        Ok(())
    }

    /// Continue from a cached step's image, keeping what the image does not record.
    async fn use_cached(&self, state: &mut State, id: &str) -> Result<()> {
        let mut next = self.load_state(id).await?;
        next.args = std::mem::take(&mut state.args);
        next.cmd_set = state.cmd_set;
        *state = next;
        Ok(())
    }

    fn expand(&self, state: &State, s: &str) -> Result<String> {
        expand(s, &state.env_map()).map_err(|e| EngineError::invalid(e.to_string()))
    }

    async fn execute(&mut self, state: &mut State, ins: &Instruction) -> Result<()> {
        // Metadata instructions: config change, no layer.
        let nop = |s: &str| format!("/bin/sh -c #(nop)  {s}");
        fn run(state: &mut State) -> &mut serde_json::Map<String, Value> {
            if !state.config["config"].is_object() {
                state.config["config"] = json!({});
            }
            match state.config["config"].as_object_mut() {
                Some(m) => m,
                None => unreachable!("config was just made an object"),
            }
        }
        match ins.cmd.as_str() {
            "RUN" => return self.run_step(state, ins).await,
            "COPY" | "ADD" => return self.copy_step(state, ins).await,
            "ARG" => {
                for (k, default) in parse_arg(&ins.args, &state.env_map())? {
                    self.use_arg(&k);
                    // --build-arg, else the ARG's default, else the global ARG's value.
                    let val = self
                        .opts
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(default)
                        .or_else(|| self.global_args.get(&k).cloned())
                        .unwrap_or_default();
                    state.args.insert(k, val);
                }
            }
            "ENV" => {
                let pairs = crate::images::import::key_values(&self.expand(state, &ins.args)?);
                if pairs.is_empty() {
                    return Err(EngineError::invalid(format!(
                        "ENV must have two arguments: {}",
                        ins.original
                    )));
                }
                let r = run(state);
                let env = r.entry("Env").or_insert_with(|| json!([]));
                if !env.is_array() {
                    *env = json!([]);
                }
                for (k, v) in pairs {
                    if let Some(a) = env.as_array_mut() {
                        a.retain(|e| {
                            e.as_str().and_then(|e| e.split_once('=')).map(|p| p.0)
                                != Some(k.as_str())
                        });
                        a.push(json!(format!("{k}={v}")));
                    }
                }
            }
            "LABEL" | "MAINTAINER" => {
                if ins.cmd == "MAINTAINER" {
                    state.config["author"] = json!(self.expand(state, &ins.args)?);
                } else {
                    let pairs = crate::images::import::key_values(&self.expand(state, &ins.args)?);
                    let r = run(state);
                    let labels = r.entry("Labels").or_insert_with(|| json!({}));
                    if !labels.is_object() {
                        *labels = json!({});
                    }
                    for (k, v) in pairs {
                        labels[k] = json!(v);
                    }
                }
            }
            "EXPOSE" => {
                let ports = self.expand(state, &ins.args)?;
                let r = run(state);
                let e = r.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !e.is_object() {
                    *e = json!({});
                }
                for p in ports.split_whitespace() {
                    let p = if p.contains('/') {
                        p.to_ascii_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    e[p] = json!({});
                }
            }
            "CMD" | "ENTRYPOINT" => {
                let v = match ins.json_args() {
                    Some(a) => json!(a),
                    None if ins.args.trim().is_empty() => Value::Null,
                    None => {
                        let mut s = state.shell();
                        s.push(ins.args.clone());
                        json!(s)
                    }
                };
                let key = if ins.cmd == "CMD" {
                    "Cmd"
                } else {
                    "Entrypoint"
                };
                let cmd_set = state.cmd_set;
                let r = run(state);
                r.insert(key.into(), v);
                // A new ENTRYPOINT resets a CMD inherited from the base image, as in Docker.
                if ins.cmd == "ENTRYPOINT" && !cmd_set {
                    r.insert("Cmd".into(), Value::Null);
                }
                if ins.cmd == "CMD" {
                    state.cmd_set = true;
                }
            }
            "WORKDIR" => return self.workdir_step(state, ins).await,
            "USER" => {
                let u = self.expand(state, &ins.args)?;
                run(state).insert("User".into(), json!(u));
            }
            "VOLUME" => {
                let v = self.expand(state, &ins.args)?;
                let paths: Vec<String> = serde_json::from_str(&v)
                    .unwrap_or_else(|_| v.split_whitespace().map(String::from).collect());
                let r = run(state);
                let vols = r.entry("Volumes").or_insert_with(|| json!({}));
                if !vols.is_object() {
                    *vols = json!({});
                }
                for p in paths {
                    vols[p] = json!({});
                }
            }
            "STOPSIGNAL" => {
                let s = self.expand(state, &ins.args)?;
                crate::containers::lifecycle::parse_signal(&s)?;
                run(state).insert("StopSignal".into(), json!(s));
            }
            "SHELL" => {
                let a = ins.json_args().ok_or_else(|| {
                    EngineError::invalid("SHELL requires the arguments to be in JSON form")
                })?;
                run(state).insert("Shell".into(), json!(a));
            }
            "ONBUILD" => {
                let t = ins.args.trim().to_string();
                let first = t
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if matches!(first.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(EngineError::invalid(format!(
                        "{first} isn't allowed as an ONBUILD trigger"
                    )));
                }
                let r = run(state);
                let ob = r.entry("OnBuild").or_insert_with(|| json!([]));
                if !ob.is_array() {
                    *ob = json!([]);
                }
                if let Some(a) = ob.as_array_mut() {
                    a.push(json!(t));
                }
            }
            "HEALTHCHECK" => {
                let hc = self.healthcheck(state, ins)?;
                run(state).insert("Healthcheck".into(), hc);
            }
            other => {
                return Err(EngineError::invalid(format!(
                    "unknown instruction: {other}"
                )))
            }
        }
        let key = self.cache_key(state, ins, "");
        // History shows the instruction as evaluated (`LABEL base=busybox`).
        let shown = match ins.cmd.as_str() {
            "ENV" | "LABEL" => {
                let kv = crate::images::import::key_values(&self.expand(state, &ins.args)?);
                let kv: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {}", ins.cmd, kv.join(" "))
            }
            "EXPOSE" | "USER" | "VOLUME" | "STOPSIGNAL" | "ARG" => {
                format!("{} {}", ins.cmd, self.expand(state, &ins.args)?)
            }
            _ => ins.original.clone(),
        };
        let created_by = nop(&shown);
        if let Some(id) = self.cached(state, &key, &created_by).await? {
            self.say(" ---> Using cache\n").await;
            self.use_cached(state, &id).await?;
        } else {
            self.commit(state, created_by, None, &key).await?;
        }
        self.say(format!(
            " ---> {}\n",
            short(state.image.as_deref().unwrap_or_default())
        ))
        .await;
        Ok(())
    }

    fn healthcheck(&self, _state: &State, ins: &Instruction) -> Result<Value> {
        let rest = ins.args.trim();
        let (kind, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if kind.eq_ignore_ascii_case("NONE") {
            return Ok(json!({"Test": ["NONE"]}));
        }
        if !kind.eq_ignore_ascii_case("CMD") {
            return Err(EngineError::invalid(format!(
                "Unknown type \"{kind}\" in HEALTHCHECK (try CMD)"
            )));
        }
        let test = match serde_json::from_str::<Vec<String>>(cmd.trim()) {
            Ok(a) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(a);
                t
            }
            Err(_) => vec!["CMD-SHELL".to_string(), cmd.trim().to_string()],
        };
        let dur = |k: &str| -> Result<Option<i64>> {
            match ins.flags.get(k) {
                None => Ok(None),
                Some(v) => crate::util::parse_go_duration(v)
                    .map(|s| Some((s * 1e9) as i64))
                    .ok_or_else(|| EngineError::invalid(format!("invalid --{k} duration: {v}"))),
            }
        };
        let mut hc = json!({"Test": test});
        for (flag, key) in [
            ("interval", "Interval"),
            ("timeout", "Timeout"),
            ("start-period", "StartPeriod"),
            ("start-interval", "StartInterval"),
        ] {
            if let Some(ns) = dur(flag)? {
                hc[key] = json!(ns);
            }
        }
        if let Some(r) = ins.flags.get("retries") {
            hc["Retries"] = json!(r
                .parse::<i64>()
                .map_err(|_| EngineError::invalid(format!("invalid --retries: {r}")))?);
        }
        Ok(hc)
    }

    async fn run_step(&mut self, state: &mut State, ins: &Instruction) -> Result<()> {
        // The classic builder's RUN takes no flags (--mount, --network, --security are BuildKit's).
        if let Some(f) = ins.flags.keys().min() {
            return Err(EngineError::invalid(format!(
                "the --{f} option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"
            )));
        }
        // A heredoc script with a shebang is run as a file, mounted at /dev/pipes/<name>.
        let mut script: Option<(TempDir, String)> = None;
        let cmd = match ins.json_args() {
            Some(a) => a,
            None if !ins.heredocs.is_empty() => {
                let only = ins.heredocs.len() == 1
                    && dockerfile::heredoc_markers(&ins.args).len() == 1
                    && !ins.args.trim().contains(char::is_whitespace);
                if only && ins.heredocs[0].text().starts_with("#!") {
                    let h = &ins.heredocs[0];
                    let dir = TempDir::new(self.svc.images.content.tmp_path())?;
                    let f = dir.0.join("script");
                    std::fs::write(&f, h.text())?;
                    std::fs::set_permissions(
                        &f,
                        std::os::unix::fs::PermissionsExt::from_mode(0o755),
                    )?;
                    let target = format!("/dev/pipes/{}", h.name);
                    script = Some((dir, target.clone()));
                    vec![target]
                } else {
                    // `RUN <<EOF` alone runs the text with the shell; otherwise the shell gets
                    // the whole heredoc (`RUN python3 <<EOF ...`) and reads it itself.
                    let text = if only {
                        ins.heredocs[0].text()
                    } else {
                        let mut full = ins.args.clone();
                        for h in &ins.heredocs {
                            full.push('\n');
                            full.push_str(&h.content);
                            full.push_str(&h.name);
                        }
                        full
                    };
                    let mut s = state.shell();
                    s.push(text);
                    s
                }
            }
            None => {
                let mut s = state.shell();
                s.push(ins.args.clone());
                s
            }
        };
        // As the classic builder records it: the build args in effect before the command
        // (`|1 NAME=berth /bin/sh -c ...`), those ENV does not override.
        let env_keys: HashSet<String> = state.run()["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str()?.split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        let arg_env: Vec<String> = state
            .args
            .iter()
            .filter(|(k, _)| !env_keys.contains(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let created_by = if arg_env.is_empty() {
            cmd.join(" ")
        } else {
            format!("|{} {} {}", arg_env.len(), arg_env.join(" "), cmd.join(" "))
        };
        let key = self.cache_key(state, ins, &created_by);
        if let Some(id) = self.cached(state, &key, &created_by).await? {
            self.say(" ---> Using cache\n").await;
            self.use_cached(state, &id).await?;
            self.say(format!(" ---> {}\n", short(&id))).await;
            return Ok(());
        }
        let image = state.image.clone().ok_or_else(|| {
            EngineError::invalid(
                "RUN in a FROM scratch stage has no shell to run: copy a binary in first",
            )
        })?;
        // Build args are in the RUN environment but not in the image.
        let mut env: Vec<String> = state.run()["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &state.args {
            if !env.iter().any(|e| e.split('=').next() == Some(k)) {
                env.push(format!("{k}={v}"));
            }
        }
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd.clone()),
            entrypoint: Some(vec![String::new()]),
            env: Some(env),
            user: state.run()["User"].as_str().map(String::from),
            working_dir: Some(state.workdir()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            host_config: Some(HostConfig {
                network_mode: self
                    .opts
                    .network_mode
                    .clone()
                    .filter(|n| !n.is_empty() && n != "default"),
                extra_hosts: Some(self.opts.extra_hosts.clone()).filter(|h| !h.is_empty()),
                binds: script.as_ref().map(|(dir, target)| {
                    vec![format!("{}:{target}:ro", dir.0.join("script").display())]
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let (cid, _) = self.svc.create(None, body).await?;
        lock(&self.containers).push(cid.clone());
        self.say(format!(" ---> Running in {}\n", short(&cid)))
            .await;
        let c = self.svc.get(&cid).await?;
        self.svc.start(&c).await?;
        // Stream the step's output as it comes (the log file holds all of it, so starting to
        // read after the start loses nothing).
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let svc = self.svc.clone();
        let c2 = c.clone();
        let logs = tokio::spawn(async move {
            svc.logs(
                &c2,
                LogOptions {
                    stdout: true,
                    stderr: true,
                    follow: true,
                    ..Default::default()
                },
                tx,
            )
            .await;
        });
        let out = self.out.clone();
        let quiet = self.opts.quiet;
        let pump = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(b)) = rx.recv().await {
                buf.extend_from_slice(&b);
                while buf.len() >= 8 {
                    let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
                    if buf.len() < 8 + len {
                        break;
                    }
                    let mut payload = String::from_utf8_lossy(&buf[8..8 + len]).into_owned();
                    // stderr in red, as the classic builder's stream writer marks it.
                    if buf[0] == 2 {
                        payload = format!("\x1b[91m{payload}\x1b[0m");
                    }
                    buf.drain(..8 + len);
                    if !quiet {
                        out.send(Message::stream(payload)).await;
                    }
                }
            }
        });
        let mut logs = logs;
        let mut pump = pump;
        // Another stage's failure stops this step at once (the container goes with it).
        let code = tokio::select! {
            code = self.svc.wait(&c, "not-running") => code,
            _ = self.cancel.cancelled() => {
                logs.abort();
                pump.abort();
                let _ = self.svc.remove(&c, true, true).await;
                lock(&self.containers).retain(|x| x != &cid);
                return Err(cancelled());
            }
        };
        let code = match code {
            Ok(c) => c,
            Err(e) => {
                logs.abort();
                pump.abort();
                return Err(e);
            }
        };
        // The exit is recorded before the log reader sees it; give it the tail.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut logs).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut pump).await;
        // Never leave a reader holding the output stream open.
        logs.abort();
        pump.abort();
        if code != 0 {
            return Err(EngineError::Internal(format!(
                "The command '{}' returned a non-zero code: {code}",
                cmd.join(" ")
            )));
        }
        // A step that changed no file adds no layer (an empty_layer history row), as Docker.
        let lowers = self.svc.images.layer_dirs(&image).await?;
        let upper = crate::containers::rootfs::Rootfs::new(&self.svc.dir(&cid)).upper;
        let changed = tokio::task::spawn_blocking(move || {
            crate::containers::commit::has_changes(&upper, &lowers)
        })
        .await
        .map_err(EngineError::internal)?;
        let layer = if changed {
            Some(self.svc.snapshot_layer(&cid).await?.diff_id)
        } else {
            None
        };
        if self.opts.rm || self.opts.force_rm {
            let _ = self.svc.remove(&c, true, true).await;
            lock(&self.containers).retain(|x| x != &cid);
            self.say(format!(
                " ---> Removed intermediate container {}\n",
                short(&cid)
            ))
            .await;
        }
        self.commit(state, created_by, layer, &key).await?;
        self.say(format!(
            " ---> {}\n",
            short(state.image.as_deref().unwrap_or_default())
        ))
        .await;
        Ok(())
    }

    /// WORKDIR: set the working directory and create it (a small layer) when the image lacks it.
    async fn workdir_step(&mut self, state: &mut State, ins: &Instruction) -> Result<()> {
        let w = self.expand(state, &ins.args)?;
        let new = if w.starts_with('/') {
            copy::clean_abs(&w)
        } else {
            copy::clean_abs(&format!("{}/{}", state.workdir(), w))
        };
        let mut cfg = state.config["config"].clone();
        if !cfg.is_object() {
            cfg = json!({});
        }
        cfg["WorkingDir"] = json!(new);
        state.config["config"] = cfg;
        let key = self.cache_key(state, ins, "");
        let created_by = format!("/bin/sh -c #(nop) WORKDIR {new}");
        if let Some(id) = self.cached(state, &key, &created_by).await? {
            self.say(" ---> Using cache\n").await;
            self.use_cached(state, &id).await?;
            self.say(format!(" ---> {}\n", short(&id))).await;
            return Ok(());
        }
        let root = match &state.image {
            Some(id) => Some(ImageRoot::mount(&self.svc, id).await?),
            None => None,
        };
        let exists = root
            .as_ref()
            .is_some_and(|r| crate::containers::rootfs::resolve_in_root(&r.path, &new).is_dir());
        let layer = if exists || new == "/" {
            None
        } else {
            let tmp = self.svc.images.content.tmp_path();
            let written =
                copy::write_dirs_layer(&new, root.as_ref().map(|r| r.path.as_path()), &tmp);
            drop(root);
            if let Err(e) = written {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(EngineError::Internal(format!(
                    "creating WORKDIR {new}: {e}"
                )));
            }
            let rec = self.svc.images.ingest_layer(tmp.clone()).await;
            let _ = tokio::fs::remove_file(&tmp).await;
            Some(rec?.diff_id)
        };
        self.commit(state, created_by, layer, &key).await?;
        self.say(format!(
            " ---> {}\n",
            short(state.image.as_deref().unwrap_or_default())
        ))
        .await;
        Ok(())
    }

    async fn resolve_owner(&self, state: &State, spec: &str) -> Result<(u32, u32)> {
        let numeric = |s: &str| s.parse::<u32>().ok();
        let (u, g) = spec.split_once(':').unwrap_or((spec, ""));
        if let (Some(uid), true) = (numeric(u), g.is_empty() || numeric(g).is_some()) {
            return Ok((uid, numeric(g).unwrap_or(uid)));
        }
        let id = state.image.clone().ok_or_else(|| EngineError::invalid(format!("unable to convert uid/gid chown string to host mapping: can't find uid for user {u}")))?;
        let m = ImageRoot::mount(&self.svc, &id).await?;
        let ru = crate::containers::spec::resolve_user(&m.path, spec)
            .map_err(|e| EngineError::invalid(e.to_string()))?;
        Ok((ru.uid, ru.gid))
    }
}

/// A private directory, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    fn new(p: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image's filesystem, mounted for the duration of a step (COPY --from, --chown names,
/// destinations through symlinks). Never written to.
struct ImageRoot {
    path: PathBuf,
    rootfs: crate::containers::rootfs::Rootfs,
    _dir: TempDir,
}

impl Drop for ImageRoot {
    fn drop(&mut self) {
        if self.rootfs.unmount().is_err() {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

impl ImageRoot {
    async fn mount(svc: &ContainerService, id: &str) -> Result<Self> {
        let dir = TempDir::new(svc.images.content.tmp_path())?;
        let lowers = svc.images.layer_dirs(id).await?;
        let rootfs = crate::containers::rootfs::Rootfs::new(&dir.0);
        let r2 = crate::containers::rootfs::Rootfs::new(&dir.0);
        tokio::task::spawn_blocking(move || r2.mount(&lowers))
            .await
            .map_err(EngineError::internal)?
            .map_err(|e| EngineError::Internal(format!("mounting image {id}: {e}")))?;
        Ok(Self {
            path: rootfs.merged.clone(),
            rootfs,
            _dir: dir,
        })
    }
}

/// `ARG a=1 b c="x y"`: names with their (expanded) defaults.
fn parse_arg(args: &str, vars: &HashMap<String, String>) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for w in crate::images::import::shell_words(args) {
        match w.split_once('=') {
            Some((k, v)) => out.push((
                k.to_string(),
                Some(expand(v, vars).map_err(|e| EngineError::invalid(e.to_string()))?),
            )),
            None => out.push((w, None)),
        }
    }
    if out.is_empty() || out.iter().any(|(k, _)| k.is_empty()) {
        return Err(EngineError::invalid(format!(
            "ARG requires at least one argument: ARG {args}"
        )));
    }
    Ok(out)
}
