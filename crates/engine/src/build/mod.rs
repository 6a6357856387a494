//! The classic builder behind `POST /build`: every Dockerfile instruction, multi-stage builds,
//! build args, `.dockerignore`, a layer cache, and Docker's classic output stream.
//!
//! Each step commits an image whose parent is the previous step's (so `docker history` shows a
//! row per instruction); RUN runs a real container through the container service; COPY/ADD
//! build a layer directly from the context; metadata steps add no layer.

pub mod dockerfile;
pub mod ignore;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard_stubs::models::{ContainerCreateBody, HostConfig};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

fn io_err(e: io::Error) -> EngineError {
    EngineError::Internal(e.to_string())
}

pub struct Builder {
    svc: Arc<ContainerService>,
    opts: BuildOptions,
    out: Progress,
    context: PathBuf,
    ignore: ignore::Ignore,
    stages_done: HashMap<String, String>,
    step: usize,
    total: usize,
    used_args: HashSet<String>,
    containers: Vec<String>,
}

impl Builder {
    pub fn new(
        svc: Arc<ContainerService>,
        opts: BuildOptions,
        context: PathBuf,
        out: Progress,
    ) -> Self {
        let ignore = ignore::Ignore::parse(
            &std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default(),
        );
        Self {
            svc,
            opts,
            out,
            context,
            ignore,
            stages_done: HashMap::new(),
            step: 0,
            total: 0,
            used_args: HashSet::new(),
            containers: Vec::new(),
        }
    }

    async fn say(&self, s: impl Into<String>) {
        if !self.opts.quiet {
            self.out.send(Message::stream(s)).await;
        }
    }

    /// Run the whole build; returns the final image id.
    pub async fn run(mut self) -> Result<String> {
        let res = self.build().await;
        // Intermediate containers never outlive the build, failed or not (unless rm=false on
        // success, as `docker build --rm=false` asks).
        let keep = res.is_ok() && !self.opts.rm && !self.opts.force_rm;
        if !keep {
            for cid in std::mem::take(&mut self.containers) {
                if let Ok(c) = self.svc.get(&cid).await {
                    let _ = self.svc.remove(&c, true, true).await;
                }
            }
        }
        res
    }

    async fn build(&mut self) -> Result<String> {
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
        // Global ARGs (before the first FROM) and stages.
        let mut global: BTreeMap<String, String> = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instrs {
            if ins.cmd == "FROM" {
                let words: Vec<&str> = ins.args.split_whitespace().collect();
                let name = match words.as_slice() {
                    [_, as_kw, n] if as_kw.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                    [_] => None,
                    _ => return Err(EngineError::invalid(format!("dockerfile parse error line {}: FROM requires either one or three arguments", ins.line))),
                };
                stages.push(Stage {
                    name,
                    from: ins,
                    steps: vec![],
                });
            } else if let Some(s) = stages.last_mut() {
                s.steps.push(ins);
            } else if ins.cmd == "ARG" {
                let (k, v) = ins
                    .args
                    .split_once('=')
                    .map(|(k, v)| {
                        (
                            k.trim().to_string(),
                            Some(v.trim().trim_matches('"').to_string()),
                        )
                    })
                    .unwrap_or((ins.args.trim().to_string(), None));
                let val = self
                    .opts
                    .build_args
                    .get(&k)
                    .cloned()
                    .or(v)
                    .unwrap_or_default();
                self.used_args.insert(k.clone());
                global.insert(k, val);
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
        self.total = stages.iter().map(|s| 1 + s.steps.len()).sum::<usize>()
            + usize::from(!self.opts.labels.is_empty());
        let mut result = String::new();
        let n = stages.len();
        for (i, st) in stages.into_iter().enumerate() {
            let mut state = self.from(&st.from, &global).await?;
            for ins in &st.steps {
                self.step(&mut state, ins).await?;
            }
            if i == n - 1 && !self.opts.labels.is_empty() {
                let labels: Vec<String> = self
                    .opts
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
                    .collect();
                let ins = Instruction {
                    cmd: "LABEL".into(),
                    args: labels.join(" "),
                    flags: HashMap::new(),
                    original: format!("LABEL {}", labels.join(" ")),
                    line: 0,
                };
                self.step(&mut state, &ins).await?;
            }
            let id = state.image.clone().ok_or_else(|| {
                EngineError::invalid("No image was generated. Is your Dockerfile empty?")
            })?;
            self.stages_done.insert(i.to_string(), id.clone());
            if let Some(name) = st.name {
                self.stages_done.insert(name, id.clone());
            }
            result = id;
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PREDEFINED_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let mut u: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            u.sort();
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                u.join(" ")
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

    async fn header(&mut self, ins: &Instruction) {
        self.step += 1;
        let text = format!("Step {}/{} : {}", self.step, self.total, ins.original);
        self.say(text).await;
        self.say("\n").await;
    }

    async fn from(
        &mut self,
        ins: &Instruction,
        global: &BTreeMap<String, String>,
    ) -> Result<State> {
        self.header(ins).await;
        let vars: HashMap<String, String> =
            global.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
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
            let (os, arch) = crate::images::pull::host_platform();
            State {
                image: None,
                config: json!({"architecture": arch, "os": os, "config": {}, "rootfs": {"type": "layers", "diff_ids": []}, "history": []}),
                diff_ids: vec![],
                args: BTreeMap::new(),
            }
        } else if let Some(id) = self.stages_done.get(&base.to_ascii_lowercase()).cloned() {
            self.load_state(&id).await?
        } else {
            let img = self.ensure_image(&base).await?;
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

    async fn ensure_image(&self, name: &str) -> Result<String> {
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
        self.svc.images.pull_run(plan, &self.out).await
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
        for (k, v) in &state.args {
            h.update(format!("\0arg:{k}={v}").as_bytes());
        }
        h.update([0]);
        h.update(extra.as_bytes());
        hex::encode(h.finalize())
    }

    async fn cached(&self, state: &State, key: &str) -> Result<Option<String>> {
        if self.opts.no_cache {
            return Ok(None);
        }
        let r: Option<(String,)> =
            sqlx::query_as("SELECT image_id FROM build_cache WHERE parent = ? AND key = ?")
                .bind(state.image.clone().unwrap_or_default())
                .bind(key)
                .fetch_optional(&self.svc.images.store.pool)
                .await?;
        match r {
            Some((id,)) if self.svc.images.get_by_id(&id).await?.is_some() => Ok(Some(id)),
            _ => Ok(None),
        }
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
        sqlx::query("INSERT OR REPLACE INTO build_cache (parent, key, image_id) VALUES (?, ?, ?)")
            .bind(state.image.clone().unwrap_or_default())
            .bind(key)
            .bind(&id)
            .execute(&self.svc.images.store.pool)
            .await?;
        state.image = Some(id);
        state.config = cfg;
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
                let (k, default) = match ins.args.split_once('=') {
                    Some((k, v)) => (
                        k.trim().to_string(),
                        Some(self.expand(state, v.trim().trim_matches('"'))?),
                    ),
                    None => (ins.args.trim().to_string(), None),
                };
                self.used_args.insert(k.clone());
                let val = self.opts.build_args.get(&k).cloned().or(default);
                if let Some(v) = val {
                    state.args.insert(k, v);
                } else {
                    state.args.insert(k, String::new());
                }
                // ARG alone changes no image in Docker's classic builder output; keep a row.
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
                let r = run(state);
                r.insert(key.into(), v);
                // A new ENTRYPOINT resets an inherited CMD, as in Docker.
                if ins.cmd == "ENTRYPOINT" {
                    r.insert("Cmd".into(), Value::Null);
                }
            }
            "WORKDIR" => {
                let w = self.expand(state, &ins.args)?;
                let cur = state.workdir();
                let new = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{}", cur.trim_end_matches('/'), w)
                };
                run(state).insert("WorkingDir".into(), json!(new));
            }
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
        if let Some(id) = self.cached(state, &key).await? {
            self.say(" ---> Using cache\n").await;
            let args = state.args.clone();
            *state = self.load_state(&id).await?;
            state.args = args;
        } else {
            let shown = if ins.cmd == "ARG" {
                ins.original.clone()
            } else {
                ins.original.clone()
            };
            self.commit(state, nop(&shown), None, &key).await?;
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
        let (cmd, created_by) = match ins.json_args() {
            Some(a) => (a.clone(), a.join(" ")),
            None => {
                let mut s = state.shell();
                s.push(ins.args.clone());
                (s.clone(), s.join(" "))
            }
        };
        let key = self.cache_key(state, ins, "");
        if let Some(id) = self.cached(state, &key).await? {
            self.say(" ---> Using cache\n").await;
            let args = state.args.clone();
            *state = self.load_state(&id).await?;
            state.args = args;
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
                ..Default::default()
            }),
            ..Default::default()
        };
        let (cid, _) = self.svc.create(None, body).await?;
        self.containers.push(cid.clone());
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
                    let payload = String::from_utf8_lossy(&buf[8..8 + len]).into_owned();
                    buf.drain(..8 + len);
                    if !quiet {
                        out.send(Message::stream(payload)).await;
                    }
                }
            }
        });
        let code = self.svc.wait(&c, "not-running").await?;
        // The exit is recorded before the log reader sees it; give it the tail.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), logs).await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), pump).await;
        if code != 0 {
            return Err(EngineError::Internal(format!(
                "The command '{}' returned a non-zero code: {code}",
                cmd.join(" ")
            )));
        }
        let layer = self.svc.snapshot_layer(&cid).await?;
        if self.opts.rm || self.opts.force_rm {
            let _ = self.svc.remove(&c, true, true).await;
            self.containers.retain(|x| x != &cid);
            self.say(format!(
                " ---> Removed intermediate container {}\n",
                short(&cid)
            ))
            .await;
        }
        self.commit(state, created_by, Some(layer.diff_id), &key)
            .await?;
        self.say(format!(
            " ---> {}\n",
            short(state.image.as_deref().unwrap_or_default())
        ))
        .await;
        Ok(())
    }

    /// The files of a COPY/ADD: (source path on the host, destination path in the image).
    fn sources(
        &self,
        root: &Path,
        srcs: &[String],
        dest: &str,
        dest_is_dir: bool,
        from_context: bool,
    ) -> Result<Vec<(PathBuf, String)>> {
        let mut out = Vec::new();
        let many = srcs.len() > 1 || srcs.iter().any(|s| s.contains(['*', '?', '[']));
        let dest_is_dir = dest_is_dir || many;
        for s in srcs {
            let rel = s.trim_start_matches("./").trim_start_matches('/');
            let matches: Vec<PathBuf> = if rel.contains(['*', '?', '[']) {
                let (dir, pat) = rel.rsplit_once('/').unwrap_or(("", rel));
                let re = glob_regex(pat)
                    .ok_or_else(|| EngineError::invalid(format!("invalid pattern {s}")))?;
                let base = crate::containers::rootfs::resolve_in_root(root, dir);
                let mut v: Vec<PathBuf> = std::fs::read_dir(&base)
                    .map(|rd| {
                        rd.flatten()
                            .filter(|e| re.is_match(&e.file_name().to_string_lossy()))
                            .map(|e| e.path())
                            .collect()
                    })
                    .unwrap_or_default();
                v.sort();
                v
            } else {
                vec![if rel.is_empty() {
                    root.to_path_buf()
                } else {
                    crate::containers::rootfs::resolve_in_root(root, rel)
                }]
            };
            let matches: Vec<PathBuf> = matches
                .into_iter()
                .filter(|p| {
                    !from_context
                        || !self
                            .ignore
                            .excluded(&p.strip_prefix(root).unwrap_or(p).to_string_lossy())
                })
                .collect();
            if matches.is_empty() || !matches.iter().any(|m| m.exists() || m.is_symlink()) {
                return Err(EngineError::invalid(format!(
                    "COPY failed: file not found in build context or excluded by .dockerignore: stat {s}: file does not exist"
                )));
            }
            for m in matches {
                if m.is_dir() {
                    out.push((m, dest.trim_end_matches('/').to_string() + "/"));
                } else {
                    let name = m
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let d = if dest_is_dir {
                        format!("{}/{name}", dest.trim_end_matches('/'))
                    } else {
                        dest.to_string()
                    };
                    out.push((m, d));
                }
            }
        }
        Ok(out)
    }

    async fn copy_step(&mut self, state: &mut State, ins: &Instruction) -> Result<()> {
        let words: Vec<String> = match ins.json_args() {
            Some(a) => a,
            None => crate::images::import::shell_words(&ins.args),
        };
        let words: Vec<String> = words
            .iter()
            .map(|w| self.expand(state, w))
            .collect::<Result<_>>()?;
        if words.len() < 2 {
            return Err(EngineError::invalid(format!(
                "{} requires at least two arguments",
                ins.cmd
            )));
        }
        let (srcs, dest) = words.split_at(words.len() - 1);
        let raw = dest[0].clone();
        // `.`, `dir/` and `dir/.` name a directory, as does a destination that already is one.
        let mut dest_is_dir = raw == "." || raw.ends_with('/') || raw.ends_with("/.");
        let mut dest = if raw.starts_with('/') {
            raw.clone()
        } else {
            format!("{}/{}", state.workdir().trim_end_matches('/'), raw)
        };
        while let Some(d) = dest.strip_suffix("/.") {
            dest = d.to_string();
        }
        if dest.is_empty() {
            dest = "/".into();
        }
        if srcs
            .iter()
            .any(|s| s.starts_with("http://") || s.starts_with("https://"))
        {
            if ins.cmd == "COPY" {
                return Err(EngineError::invalid("source can't be a URL for COPY"));
            }
            return Err(EngineError::invalid("ADD from a remote URL is not supported by this engine: fetch the file with RUN wget or curl, or COPY it from the build context"));
        }
        // Where the sources come from: the context, another stage, or an image.
        let mut _mount = None;
        let (root, from_context) = match ins.flags.get("from") {
            Some(f) => {
                let f = self.expand(state, f)?;
                let id = match self.stages_done.get(&f.to_ascii_lowercase()).cloned() {
                    Some(id) => id,
                    None => self.ensure_image(&f).await?,
                };
                let m = ImageRoot::mount(&self.svc, &id).await?;
                let r = m.path.clone();
                _mount = Some(m);
                (r, false)
            }
            None => (self.context.clone(), true),
        };
        let lowers = match &state.image {
            Some(id) => self.svc.images.layer_dirs(id).await?,
            None => vec![],
        };
        let rel_dest = dest.trim_start_matches('/').to_string();
        if lowers.iter().rev().any(|l| l.join(&rel_dest).is_dir()) {
            dest_is_dir = true;
        }
        let items = self.sources(&root, srcs, &dest, dest_is_dir, from_context)?;
        let chown = match ins.flags.get("chown") {
            Some(c) => Some(self.resolve_owner(state, &self.expand(state, c)?).await?),
            None => None,
        };
        let chmod = match ins.flags.get("chmod") {
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .map_err(|_| EngineError::invalid(format!("invalid chmod parameter: {m}")))?,
            ),
            None => None,
        };
        let extract = ins.cmd == "ADD";
        // Cache key: the content and metadata of every source.
        let items2 = items.clone();
        let checksum = tokio::task::spawn_blocking(move || checksum(&items2))
            .await
            .map_err(EngineError::internal)?
            .map_err(io_err)?;
        let key = self.cache_key(state, ins, &format!("{checksum}:{chown:?}:{chmod:?}"));
        if let Some(id) = self.cached(state, &key).await? {
            self.say(" ---> Using cache\n").await;
            let args = state.args.clone();
            *state = self.load_state(&id).await?;
            state.args = args;
            self.say(format!(" ---> {}\n", short(&id))).await;
            return Ok(());
        }
        // Existing parent directories keep their mode and owner in the new layer.
        let tmp = self.svc.images.content.tmp_path();
        let tmp2 = tmp.clone();
        tokio::task::spawn_blocking(move || {
            write_copy_layer(&items, &lowers, chown, chmod, extract, &tmp2)
        })
        .await
        .map_err(EngineError::internal)?
        .map_err(|e| EngineError::Internal(format!("{} failed: {e}", ins.cmd)))?;
        let layer = self.svc.images.ingest_layer(tmp.clone()).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        let layer = layer?;
        let created_by = format!(
            "/bin/sh -c #(nop) {} {}:{} in {}",
            ins.cmd,
            if from_context { "file" } else { "multi" },
            &checksum[..16],
            dest
        );
        self.commit(state, created_by, Some(layer.diff_id), &key)
            .await?;
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

/// A read-only view of an image's filesystem, mounted for the duration of a COPY --from.
struct ImageRoot {
    path: PathBuf,
    _dir: tempfile_dir::TempDir,
}

mod tempfile_dir {
    /// A directory removed on drop (after its mount is gone).
    pub struct TempDir(pub std::path::PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let m = self.0.join("root");
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl ImageRoot {
    async fn mount(svc: &ContainerService, id: &str) -> Result<Self> {
        let dir = svc.images.content.tmp_path();
        let root = dir.join("root");
        let empty = dir.join("empty");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&empty)?;
        let guard = tempfile_dir::TempDir(dir);
        let mut lowers: Vec<String> = svc
            .images
            .layer_dirs(id)
            .await?
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        // A read-only overlay needs two lower dirs at least.
        lowers.push(empty.display().to_string());
        let opts = format!("lowerdir={}", lowers.join(":"));
        nix::mount::mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::MS_RDONLY,
            Some(opts.as_str()),
        )
        .map_err(|e| EngineError::Internal(format!("mounting image {id}: {e}")))?;
        Ok(Self {
            path: root,
            _dir: guard,
        })
    }
}

fn glob_regex(p: &str) -> Option<regex::Regex> {
    let mut re = String::from("^");
    for c in p.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' | ']' => re.push(c),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).ok()
}

fn checksum(items: &[(PathBuf, String)]) -> io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let mut h = Sha256::new();
    for (src, dst) in items {
        h.update(dst.as_bytes());
        let mut stack = vec![src.clone()];
        while let Some(p) = stack.pop() {
            let md = std::fs::symlink_metadata(&p)?;
            h.update(
                p.strip_prefix(src)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(md.mode().to_le_bytes());
            if md.is_dir() {
                let mut v: Vec<PathBuf> =
                    std::fs::read_dir(&p)?.flatten().map(|e| e.path()).collect();
                v.sort();
                v.reverse();
                stack.extend(v);
            } else if md.file_type().is_symlink() {
                h.update(std::fs::read_link(&p)?.to_string_lossy().as_bytes());
            } else {
                let mut f = std::fs::File::open(&p)?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn is_archive(p: &Path) -> bool {
    let mut b = [0u8; 262];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let n = f.read(&mut b).unwrap_or(0);
    (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) || (n >= 262 && &b[257..262] == b"ustar")
}

/// Write the layer of a COPY/ADD as a tar at `out`.
fn write_copy_layer(
    items: &[(PathBuf, String)],
    lowers: &[PathBuf],
    chown: Option<(u32, u32)>,
    chmod: Option<u32>,
    extract: bool,
    out: &Path,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::create(out)?;
    let mut b = tar::Builder::new(io::BufWriter::new(f));
    b.follow_symlinks(false);
    let mut dirs_done: HashSet<String> = HashSet::new();
    let mut parent_dirs =
        |b: &mut tar::Builder<io::BufWriter<std::fs::File>>, path: &str| -> io::Result<()> {
            let mut acc = String::new();
            let parts: Vec<&str> = path
                .trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .collect();
            for part in parts.iter().take(parts.len().saturating_sub(1)) {
                acc = if acc.is_empty() {
                    part.to_string()
                } else {
                    format!("{acc}/{part}")
                };
                if !dirs_done.insert(acc.clone()) {
                    continue;
                }
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mtime(0);
                // An existing directory keeps its mode and owner (e.g. /tmp stays 1777).
                let existing = lowers.iter().rev().find_map(|l| {
                    std::fs::symlink_metadata(l.join(&acc))
                        .ok()
                        .filter(|m| m.is_dir())
                });
                match existing {
                    Some(md) => {
                        h.set_mode(md.mode() & 0o7777);
                        h.set_uid(md.uid() as u64);
                        h.set_gid(md.gid() as u64);
                    }
                    None => {
                        h.set_mode(0o755);
                        let (u, g) = chown.unwrap_or((0, 0));
                        h.set_uid(u as u64);
                        h.set_gid(g as u64);
                    }
                }
                b.append_data(&mut h, format!("{acc}/"), io::empty())?;
            }
            Ok(())
        };
    let fix = |h: &mut tar::Header| {
        let (u, g) = chown.unwrap_or((0, 0));
        h.set_uid(u as u64);
        h.set_gid(g as u64);
        if let Some(m) = chmod {
            h.set_mode(m);
        }
    };
    for (src, dst) in items {
        let dst_rel = dst.trim_start_matches('/');
        if src.is_dir() {
            let base = dst_rel.trim_end_matches('/');
            parent_dirs(&mut b, &format!("{base}/x"))?;
            let mut stack = vec![src.clone()];
            while let Some(p) = stack.pop() {
                let rel = p.strip_prefix(src).unwrap_or(&p);
                let name = if rel.as_os_str().is_empty() {
                    base.to_string()
                } else {
                    format!("{base}/{}", rel.display())
                };
                let md = std::fs::symlink_metadata(&p)?;
                if name.is_empty() {
                    // Copying into "/": no entry for the root itself.
                } else {
                    let mut h = tar::Header::new_gnu();
                    h.set_metadata(&md);
                    fix(&mut h);
                    if md.is_dir() {
                        b.append_data(&mut h, format!("{name}/"), io::empty())?;
                    } else if md.file_type().is_symlink() {
                        let target = std::fs::read_link(&p)?;
                        b.append_link(&mut h, &name, &target)?;
                    } else {
                        b.append_data(&mut h, &name, std::fs::File::open(&p)?)?;
                    }
                }
                if md.is_dir() {
                    let mut v: Vec<PathBuf> =
                        std::fs::read_dir(&p)?.flatten().map(|e| e.path()).collect();
                    v.sort();
                    v.reverse();
                    stack.extend(v);
                }
            }
        } else if extract && is_archive(src) {
            let base = dst_rel.trim_end_matches('/');
            parent_dirs(&mut b, &format!("{base}/x"))?;
            let rd = crate::content::layer::open_decompressed(src)?;
            let mut ar = tar::Archive::new(rd);
            for e in ar.entries()? {
                let mut e = e?;
                let p = e.path()?.into_owned();
                let name = format!("{base}/{}", p.display())
                    .trim_start_matches('/')
                    .to_string();
                let mut h = e.header().clone();
                if e.header().entry_type().is_symlink() || e.header().entry_type().is_hard_link() {
                    let target = e.link_name()?.map(|l| l.into_owned()).unwrap_or_default();
                    b.append_link(&mut h, &name, target)?;
                } else {
                    b.append_data(&mut h, &name, &mut e)?;
                }
            }
        } else {
            parent_dirs(&mut b, dst_rel)?;
            let md = std::fs::symlink_metadata(src)?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&md);
            fix(&mut h);
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(src)?;
                b.append_link(&mut h, dst_rel, &target)?;
            } else {
                b.append_data(&mut h, dst_rel, std::fs::File::open(src)?)?;
            }
        }
    }
    b.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}
