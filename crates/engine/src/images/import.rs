//! `docker import`: a root filesystem tarball becomes a one-layer image, with `--change`
//! instructions applied to its config.

use serde_json::{json, Value};

use super::reference::ImageRef;
use super::ImageService;
use crate::error::{EngineError, Result};

impl ImageService {
    pub async fn import(
        &self,
        tar_path: std::path::PathBuf,
        repo: Option<&str>,
        tag: Option<&str>,
        changes: &[String],
        message: Option<&str>,
        source: &str,
    ) -> Result<String> {
        let tags = match repo.filter(|r| !r.is_empty()) {
            Some(r) => {
                let full = match tag.filter(|t| !t.is_empty()) {
                    Some(t) => format!("{r}:{t}"),
                    None => r.to_string(),
                };
                vec![ImageRef::parse_default_tag(&full)?
                    .tagged()
                    .unwrap_or_default()]
            }
            None => vec![],
        };
        let mut run = json!({});
        for c in changes {
            apply_change(&mut run, c)?;
        }
        let layer = self.ingest_layer(tar_path).await?;
        let (os, arch) = super::pull::host_platform();
        let now = crate::util::rfc3339_nano(chrono::Utc::now());
        let comment = message
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| format!("Imported from {source}"));
        let mut config = json!({
            "architecture": arch,
            "os": os,
            "created": now,
            "config": run,
            "rootfs": { "type": "layers", "diff_ids": [layer.diff_id] },
            "history": [{ "created": now, "comment": comment }],
        });
        if let Some(m) = message.filter(|m| !m.is_empty()) {
            config["comment"] = json!(m);
        }
        let id = self
            .commit_config(&config, std::slice::from_ref(&layer.diff_id), None, &tags)
            .await?;
        let name = tags
            .first()
            .map(|t| super::reference::familiarize(t))
            .unwrap_or_else(|| id.clone());
        self.emit("import", &id, &name);
        Ok(id)
    }
}

/// Apply one Dockerfile-style instruction (`CMD ["sh"]`, `ENV A=b`, `EXPOSE 80`, ...) to a
/// container config object, as `docker import --change` and `docker commit --change` do.
pub fn apply_change(cfg: &mut Value, line: &str) -> Result<()> {
    let line = line.trim();
    let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| EngineError::internal("config is not an object"))?;
    let list = |s: &str| -> Value {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => json!(v),
            Err(_) => json!(["/bin/sh", "-c", s]),
        }
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => {
            obj.insert("Cmd".into(), list(rest));
        }
        "ENTRYPOINT" => {
            obj.insert("Entrypoint".into(), list(rest));
        }
        "WORKDIR" => {
            obj.insert("WorkingDir".into(), json!(rest));
        }
        "USER" => {
            obj.insert("User".into(), json!(rest));
        }
        "STOPSIGNAL" => {
            obj.insert("StopSignal".into(), json!(rest));
        }
        "ENV" => {
            let env = obj.entry("Env").or_insert_with(|| json!([]));
            for (k, v) in key_values(rest) {
                if let Some(a) = env.as_array_mut() {
                    a.retain(|e| {
                        e.as_str().and_then(|e| e.split_once('=')).map(|p| p.0) != Some(&k)
                    });
                    a.push(json!(format!("{k}={v}")));
                }
            }
        }
        "LABEL" => {
            let labels = obj.entry("Labels").or_insert_with(|| json!({}));
            for (k, v) in key_values(rest) {
                if let Some(m) = labels.as_object_mut() {
                    m.insert(k, json!(v));
                }
            }
        }
        "EXPOSE" => {
            let ports = obj.entry("ExposedPorts").or_insert_with(|| json!({}));
            for p in rest.split_whitespace() {
                let p = if p.contains('/') {
                    p.to_string()
                } else {
                    format!("{p}/tcp")
                };
                if let Some(m) = ports.as_object_mut() {
                    m.insert(p, json!({}));
                }
            }
        }
        "VOLUME" => {
            let vols = obj.entry("Volumes").or_insert_with(|| json!({}));
            let paths: Vec<String> = serde_json::from_str(rest)
                .unwrap_or_else(|_| rest.split_whitespace().map(String::from).collect());
            for p in paths {
                if let Some(m) = vols.as_object_mut() {
                    m.insert(p, json!({}));
                }
            }
        }
        "ONBUILD" => {
            let ob = obj.entry("OnBuild").or_insert_with(|| json!([]));
            if let Some(a) = ob.as_array_mut() {
                a.push(json!(rest));
            }
        }
        other => {
            return Err(EngineError::invalid(format!(
                "{} is not a valid change command",
                other.to_ascii_lowercase()
            )))
        }
    }
    Ok(())
}

/// `A=b C="d e"` or the legacy `A b c` form.
pub fn key_values(s: &str) -> Vec<(String, String)> {
    let words = shell_words(s);
    if !words.iter().any(|w| w.contains('=')) {
        if let Some((k, v)) = s.split_once(char::is_whitespace) {
            return vec![(k.to_string(), v.trim().to_string())];
        }
        return vec![];
    }
    words
        .into_iter()
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// Split on whitespace, honouring double and single quotes and backslash escapes.
pub fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (q, '\\') if q != Some('\'') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                any = true;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply() {
        let mut c = json!({});
        apply_change(&mut c, r#"CMD ["echo","hi"]"#).unwrap();
        apply_change(&mut c, "ENV A=1 B=\"two words\"").unwrap();
        apply_change(&mut c, "EXPOSE 80 53/udp").unwrap();
        apply_change(&mut c, "WORKDIR /srv").unwrap();
        assert_eq!(c["Cmd"], json!(["echo", "hi"]));
        assert_eq!(c["Env"], json!(["A=1", "B=two words"]));
        assert!(c["ExposedPorts"]["80/tcp"].is_object());
        assert!(c["ExposedPorts"]["53/udp"].is_object());
        assert_eq!(c["WorkingDir"], "/srv");
        assert!(apply_change(&mut c, "BOGUS x").is_err());
    }
}
