//! Output formatting the way the docker CLI does it: tab-aligned tables
//! (Go's tabwriter with Docker's settings), a subset of Go's text/template
//! for `--format`, and the human-readable sizes and durations of
//! `github.com/docker/go-units`.

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------
// Sizes and durations (docker/go-units)

const DECIMAL: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
const BINARY: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];

/// Go's `%.<prec>g`.
pub fn go_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    // Round to `prec` significant digits first: this may bump the exponent.
    let s = format!("{:.*e}", prec.saturating_sub(1), v);
    let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(exp);
    if e < -4 || e >= prec as i32 {
        let mant = strip_zeros(mant);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", e.abs());
    }
    let decimals = (prec as i32 - 1 - e).max(0) as usize;
    strip_zeros(&format!("{v:.decimals$}"))
}

fn strip_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

fn custom_size(size: f64, prec: usize, base: f64, units: &[&str]) -> String {
    let mut size = size;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{}", go_g(size, prec), units[i])
}

/// `units.HumanSizeWithPrecision(size, 3)`: "1.98MB" (images, ps, stats net).
pub fn human_size(size: f64) -> String {
    custom_size(size, 3, 1000.0, &DECIMAL)
}

/// `units.HumanSize(size)`: four significant digits (system df).
pub fn human_size4(size: f64) -> String {
    custom_size(size, 4, 1000.0, &DECIMAL)
}

/// `units.BytesSize(size)`: "420KiB" (stats memory).
pub fn bytes_size(size: f64) -> String {
    custom_size(size, 4, 1024.0, &BINARY)
}

/// `units.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs;
    if s < 1 {
        return "Less than a second".into();
    } else if s == 1 {
        return "1 second".into();
    } else if s < 60 {
        return format!("{s} seconds");
    }
    let minutes = s / 60;
    if minutes == 1 {
        return "About a minute".into();
    } else if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = ((s as f64) / 3600.0 + 0.5) as i64;
    if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", s / 3600 / 24 / 365)
    }
}

/// "2 years ago" for a Unix timestamp.
pub fn ago(unix: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    format!("{} ago", human_duration(now - unix))
}

/// Docker's `CreatedAt`: "2024-01-02 03:04:05 +0000 UTC" (local time zone).
pub fn created_at(unix: i64) -> String {
    use chrono::TimeZone;
    match chrono::Local.timestamp_opt(unix, 0) {
        chrono::LocalResult::Single(t) => t.format("%Y-%m-%d %H:%M:%S %z %Z").to_string(),
        _ => String::new(),
    }
}

/// Parse an RFC 3339 time into a Unix timestamp.
pub fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

/// `stringutils.Ellipsis`.
pub fn ellipsis(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// 12-character short ID without the algorithm prefix.
pub fn short_id(id: &str) -> String {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(12).collect()
}

/// Go's `strconv.Quote` for the strings the CLI shows.
pub fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Tables (text/tabwriter with minwidth 10, tabwidth 1, padding 3, ' ')

pub fn tabwrite(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text
        .split_inclusive('\n')
        .map(|l| l.strip_suffix('\n').unwrap_or(l).split('\t').collect())
        .collect();
    let mut out = String::new();
    // Column widths per block of consecutive lines that have that column
    // terminated by a tab (as Go's tabwriter does).
    let n = lines.len();
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|l| vec![0; l.len()]).collect();
    let maxcols = lines.iter().map(|l| l.len()).max().unwrap_or(0);
    for col in 0..maxcols {
        let mut i = 0;
        while i < n {
            if lines[i].len() > col + 1 {
                let start = i;
                let mut w = 0;
                while i < n && lines[i].len() > col + 1 {
                    w = w.max(lines[i][col].chars().count());
                    i += 1;
                }
                let w = (w + 3).max(10);
                for row in widths.iter_mut().take(i).skip(start) {
                    row[col] = w;
                }
            } else {
                i += 1;
            }
        }
    }
    for (li, cells) in lines.iter().enumerate() {
        for (ci, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if ci + 1 < cells.len() {
                let pad = widths[li][ci].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    out
}

// ---------------------------------------------------------------------------
// Docker's --format handling

/// A parsed `--format` value for list commands.
pub struct Formatter {
    table: bool,
    tmpl: Template,
}

impl Formatter {
    /// `format`: the user's `--format` (empty = default table); `default`: the
    /// command's default table format; `quiet_format` is used with `-q`.
    pub fn new(format: &str, default_table: &str) -> Result<Self> {
        let f = if format.is_empty() || format == "table" {
            default_table.to_string()
        } else if format == "json" {
            "{{json .}}".to_string()
        } else {
            format.to_string()
        };
        let (table, body) = match f.strip_prefix("table") {
            Some(rest) => (true, rest.to_string()),
            None => (false, f.clone()),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let tmpl = Template::parse(&body)?;
        Ok(Formatter { table, tmpl })
    }

    /// Render rows; `headers` maps field names to column titles.
    pub fn render(&self, rows: &[Value], headers: &[(&str, &str)]) -> Result<String> {
        let mut buf = String::new();
        if self.table {
            let mut h = Map::new();
            for (k, v) in headers {
                h.insert((*k).to_string(), Value::String((*v).to_string()));
            }
            let header = self.tmpl.render_header(&Value::Object(h));
            buf.push_str(&header);
            buf.push('\n');
        }
        for r in rows {
            buf.push_str(&self.tmpl.render(r)?);
            buf.push('\n');
        }
        Ok(if self.table { tabwrite(&buf) } else { buf })
    }
}

/// Render `-f/--format` for one object (inspect, version, info).
pub fn render_one(format: &str, v: &Value) -> Result<String> {
    let f = format.replace("\\t", "\t").replace("\\n", "\n");
    let f = if f == "json" {
        "{{json .}}".to_string()
    } else {
        f
    };
    Template::parse(&f)?.render(v)
}

/// `json.MarshalIndent(v, "", "    ")` as docker inspect prints it.
pub fn indent_json(v: &Value) -> String {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    use serde::Serialize;
    if v.serialize(&mut ser).is_err() {
        return v.to_string();
    }
    go_html_escape(&String::from_utf8_lossy(&out))
}

/// Go's encoding/json escapes <, > and & by default.
fn go_html_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

// ---------------------------------------------------------------------------
// A small text/template

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipeline(Vec<Cmd>);

#[derive(Debug, Clone)]
struct Cmd(Vec<Arg>);

#[derive(Debug, Clone)]
enum Arg {
    Dot(Vec<String>),
    Var(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Ident(String),
    Sub(Pipeline),
}

#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

enum Tok {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Tok>> {
    let mut toks = Vec::new();
    let mut rest = src;
    while let Some(i) = rest.find("{{") {
        let mut text = &rest[..i];
        let mut after = &rest[i + 2..];
        if after.starts_with("- ") {
            text = text.trim_end();
            after = &after[2..];
        }
        if !text.is_empty() {
            toks.push(Tok::Text(text.to_string()));
        }
        // find closing }} outside of string literals
        let bytes = after.as_bytes();
        let mut j = 0;
        let mut in_str = false;
        let mut end = None;
        while j < bytes.len() {
            let c = bytes[j];
            if in_str {
                if c == b'\\' {
                    j += 1;
                } else if c == b'"' {
                    in_str = false;
                }
            } else if c == b'"' {
                in_str = true;
            } else if c == b'}' && j + 1 < bytes.len() && bytes[j + 1] == b'}' {
                end = Some(j);
                break;
            }
            j += 1;
        }
        let end = end.ok_or_else(|| anyhow!("template: unclosed action"))?;
        let mut action = &after[..end];
        let mut next = &after[end + 2..];
        if action.ends_with(" -") {
            action = &action[..action.len() - 2];
            next = next.trim_start();
        }
        toks.push(Tok::Action(action.trim().to_string()));
        rest = next;
    }
    if !rest.is_empty() {
        toks.push(Tok::Text(rest.to_string()));
    }
    Ok(toks)
}

fn split_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '`' {
            let q = c;
            let mut w = String::from(q);
            i += 1;
            while i < chars.len() && chars[i] != q {
                if q == '"' && chars[i] == '\\' && i + 1 < chars.len() {
                    w.push(chars[i]);
                    i += 1;
                }
                w.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                bail!("template: unterminated quoted string");
            }
            w.push(q);
            i += 1;
            out.push(w);
            continue;
        }
        if c == '(' || c == ')' || c == '|' {
            out.push(c.to_string());
            i += 1;
            continue;
        }
        let mut w = String::new();
        while i < chars.len()
            && !chars[i].is_whitespace()
            && !matches!(chars[i], '(' | ')' | '|' | '"')
        {
            w.push(chars[i]);
            i += 1;
        }
        out.push(w);
    }
    Ok(out)
}

fn unquote(w: &str) -> String {
    if w.starts_with('`') {
        return w[1..w.len() - 1].to_string();
    }
    serde_json::from_str::<String>(w).unwrap_or_else(|_| w[1..w.len() - 1].to_string())
}

fn parse_pipeline(words: &[String], pos: &mut usize) -> Result<Pipeline> {
    let mut cmds = Vec::new();
    let mut cur = Vec::new();
    while *pos < words.len() {
        let w = &words[*pos];
        *pos += 1;
        match w.as_str() {
            "|" => cmds.push(Cmd(std::mem::take(&mut cur))),
            ")" => {
                *pos -= 1;
                break;
            }
            "(" => {
                let p = parse_pipeline(words, pos)?;
                if words.get(*pos).map(|s| s.as_str()) != Some(")") {
                    bail!("template: unclosed left paren");
                }
                *pos += 1;
                cur.push(Arg::Sub(p));
            }
            _ => cur.push(parse_arg(w)?),
        }
    }
    if cur.is_empty() && cmds.is_empty() {
        bail!("template: missing value for command");
    }
    cmds.push(Cmd(cur));
    Ok(Pipeline(cmds))
}

fn parse_arg(w: &str) -> Result<Arg> {
    Ok(if w == "." {
        Arg::Dot(vec![])
    } else if let Some(rest) = w.strip_prefix('.') {
        Arg::Dot(rest.split('.').map(str::to_string).collect())
    } else if let Some(rest) = w.strip_prefix('$') {
        let mut parts: Vec<String> = rest.split('.').map(str::to_string).collect();
        let first = parts.remove(0);
        let mut v = vec![first];
        v.extend(parts);
        Arg::Var(v)
    } else if w.starts_with('"') || w.starts_with('`') {
        Arg::Str(unquote(w))
    } else if w == "true" || w == "false" {
        Arg::Bool(w == "true")
    } else if let Ok(n) = w.parse::<f64>() {
        Arg::Num(n)
    } else {
        Arg::Ident(w.to_string())
    })
}

fn pipeline_of(action: &str) -> Result<Pipeline> {
    let words = split_words(action)?;
    let mut pos = 0;
    let p = parse_pipeline(&words, &mut pos)?;
    if pos < words.len() {
        bail!("template: unexpected \"{}\" in operand", words[pos]);
    }
    Ok(p)
}

impl Template {
    pub fn parse(src: &str) -> Result<Self> {
        let toks = lex(src)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&toks, &mut pos)?;
        if let Some(e) = end {
            bail!("template: unexpected {{{{{e}}}}}");
        }
        Ok(Template { nodes })
    }

    pub fn render(&self, data: &Value) -> Result<String> {
        let mut out = String::new();
        let mut vars = BTreeMap::new();
        vars.insert(String::new(), data.clone());
        exec_nodes(&self.nodes, data, &mut vars, &mut out, false)?;
        Ok(out)
    }

    fn render_header(&self, data: &Value) -> String {
        let mut out = String::new();
        let mut vars = BTreeMap::new();
        vars.insert(String::new(), data.clone());
        let _ = exec_nodes(&self.nodes, data, &mut vars, &mut out, true);
        out
    }
}

/// Parse until `{{end}}` / `{{else}}`; returns the nodes and the keyword that stopped it.
fn parse_nodes(toks: &[Tok], pos: &mut usize) -> Result<(Vec<Node>, Option<String>)> {
    let mut nodes = Vec::new();
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match t {
            Tok::Text(s) => nodes.push(Node::Text(s.clone())),
            Tok::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                }
                let (kw, rest) = a
                    .split_once(char::is_whitespace)
                    .unwrap_or((a.as_str(), ""));
                match kw {
                    "end" => return Ok((nodes, Some("end".into()))),
                    "else" => return Ok((nodes, Some("else".into()))),
                    "if" | "range" | "with" => {
                        let mut rest = rest.trim().to_string();
                        // `range $i, $e := pipeline` / `range $e := ...`: keep the variables
                        let mut decl = None;
                        if let Some((lhs, rhs)) = rest.split_once(":=") {
                            decl = Some(lhs.trim().to_string());
                            rest = rhs.trim().to_string();
                        }
                        let p = pipeline_of(&rest)?;
                        let (body, end) = parse_nodes(toks, pos)?;
                        let mut els = Vec::new();
                        match end.as_deref() {
                            Some("end") => {}
                            Some("else") => {
                                let (e, end2) = parse_nodes(toks, pos)?;
                                if end2.as_deref() != Some("end") {
                                    bail!("template: unexpected EOF");
                                }
                                els = e;
                            }
                            _ => bail!("template: unexpected EOF"),
                        }
                        let body = match decl {
                            Some(d) => {
                                let mut b = vec![Node::Text(format!("\u{0}decl:{d}"))];
                                b.extend(body);
                                b
                            }
                            None => body,
                        };
                        nodes.push(match kw {
                            "if" => Node::If(p, body, els),
                            "range" => Node::Range(p, body, els),
                            _ => Node::With(p, body, els),
                        });
                    }
                    _ => {
                        if let Some((lhs, rhs)) = a.split_once(":=") {
                            let name = lhs.trim().to_string();
                            nodes.push(Node::Text(format!("\u{0}set:{name}")));
                            nodes.push(Node::Action(pipeline_of(rhs.trim())?));
                        } else {
                            nodes.push(Node::Action(pipeline_of(a)?));
                        }
                    }
                }
            }
        }
    }
    Ok((nodes, None))
}

type Vars = BTreeMap<String, Value>;

fn exec_nodes(
    nodes: &[Node],
    dot: &Value,
    vars: &mut Vars,
    out: &mut String,
    header: bool,
) -> Result<()> {
    let mut set_next: Option<String> = None;
    for n in nodes {
        match n {
            Node::Text(t) => {
                if let Some(name) = t.strip_prefix("\u{0}set:") {
                    set_next = Some(name.trim_start_matches('$').to_string());
                } else if t.starts_with("\u{0}decl:") {
                    // handled by range
                } else {
                    out.push_str(t);
                }
            }
            Node::Action(p) => {
                let v = eval_pipeline(p, dot, vars, header)?;
                if let Some(name) = set_next.take() {
                    vars.insert(name, v);
                } else {
                    out.push_str(&go_print(&v));
                }
            }
            Node::If(p, body, els) => {
                let v = eval_pipeline(p, dot, vars, header)?;
                if truthy(&v) {
                    exec_nodes(body, dot, vars, out, header)?;
                } else {
                    exec_nodes(els, dot, vars, out, header)?;
                }
            }
            Node::With(p, body, els) => {
                let v = eval_pipeline(p, dot, vars, header)?;
                if truthy(&v) {
                    exec_nodes(body, &v, vars, out, header)?;
                } else {
                    exec_nodes(els, dot, vars, out, header)?;
                }
            }
            Node::Range(p, body, els) => {
                let v = eval_pipeline(p, dot, vars, header)?;
                let decl: Option<Vec<String>> = body.first().and_then(|n| match n {
                    Node::Text(t) => t.strip_prefix("\u{0}decl:").map(|d| {
                        d.split(',')
                            .map(|s| s.trim().trim_start_matches('$').to_string())
                            .collect()
                    }),
                    _ => None,
                });
                let items: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, x)| (Value::String(k.clone()), x.clone()))
                        .collect(),
                    Value::Null => vec![],
                    Value::Number(n) => (0..n.as_u64().unwrap_or(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    _ => {
                        if header {
                            vec![]
                        } else {
                            bail!("template: range can't iterate over {}", go_print(&v))
                        }
                    }
                };
                if items.is_empty() {
                    exec_nodes(els, dot, vars, out, header)?;
                }
                for (k, x) in items {
                    if let Some(d) = &decl {
                        if d.len() == 2 {
                            vars.insert(d[0].clone(), k.clone());
                            vars.insert(d[1].clone(), x.clone());
                        } else if d.len() == 1 {
                            vars.insert(d[0].clone(), x.clone());
                        }
                    }
                    exec_nodes(body, &x, vars, out, header)?;
                }
            }
        }
    }
    Ok(())
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn field(v: &Value, path: &[String], header: bool) -> Result<Value> {
    let mut cur = v.clone();
    for (i, f) in path.iter().enumerate() {
        if f.is_empty() {
            continue;
        }
        cur = match &cur {
            Value::Object(m) => match m.get(f) {
                Some(x) => x.clone(),
                None => {
                    if header {
                        // Header rows know only top-level fields: show the name.
                        return Ok(Value::String(if i == 0 {
                            f.to_uppercase()
                        } else {
                            String::new()
                        }));
                    }
                    Value::Null
                }
            },
            Value::Null => Value::Null,
            other => {
                if header {
                    return Ok(Value::String(String::new()));
                }
                bail!(
                    "template: can't evaluate field {f} in type {}",
                    go_type(other)
                )
            }
        };
    }
    Ok(cur)
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "float64",
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        Value::Null => "interface {}",
    }
}

fn eval_arg(a: &Arg, dot: &Value, vars: &Vars, header: bool) -> Result<Value> {
    Ok(match a {
        Arg::Dot(path) => field(dot, path, header)?,
        Arg::Var(path) => {
            let base = vars
                .get(&path[0])
                .cloned()
                .ok_or_else(|| anyhow!("template: undefined variable: ${}", path[0]))?;
            field(&base, &path[1..], header)?
        }
        Arg::Str(s) => Value::String(s.clone()),
        Arg::Num(n) => serde_json::Number::from_f64(*n)
            .map(|x| {
                if n.fract() == 0.0 {
                    Value::from(*n as i64)
                } else {
                    Value::Number(x)
                }
            })
            .unwrap_or(Value::Null),
        Arg::Bool(b) => Value::Bool(*b),
        Arg::Sub(p) => eval_pipeline(p, dot, vars, header)?,
        Arg::Ident(f) => call(f, &[], header)?,
    })
}

fn eval_pipeline(p: &Pipeline, dot: &Value, vars: &Vars, header: bool) -> Result<Value> {
    let mut prev: Option<Value> = None;
    for cmd in &p.0 {
        let args = &cmd.0;
        let v = match args.first() {
            Some(Arg::Ident(f)) => {
                let mut vals = Vec::new();
                for a in &args[1..] {
                    vals.push(eval_arg(a, dot, vars, header)?);
                }
                if let Some(pv) = prev.take() {
                    vals.push(pv);
                }
                call(f, &vals, header)?
            }
            // A method of the row, as docker's format contexts have: `{{.Label "key"}}`.
            Some(Arg::Dot(path))
                if args.len() == 2 && path.last().map(String::as_str) == Some("Label") =>
            {
                let key = as_str(&eval_arg(&args[1], dot, vars, header)?);
                let owner = if path.len() > 1 {
                    eval_arg(
                        &Arg::Dot(path[..path.len() - 1].to_vec()),
                        dot,
                        vars,
                        header,
                    )?
                } else {
                    dot.clone()
                };
                label_of(&owner, &key)
            }
            Some(a) => {
                if args.len() > 1 {
                    bail!("template: can't give argument to non-function");
                }
                eval_arg(a, dot, vars, header)?
            }
            None => bail!("template: empty command"),
        };
        prev = Some(v);
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// `.Label "key"`: the value of one label, from a row's `Labels` ("k=v,k2=v2" as the tables
/// print it, or an object); empty when absent, as docker prints it.
fn label_of(row: &Value, key: &str) -> Value {
    let found = match row.get("Labels") {
        Some(Value::Object(m)) => m.get(key).map(as_str),
        Some(Value::String(s)) => s
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string()),
        _ => None,
    };
    Value::String(found.unwrap_or_default())
}

fn as_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => go_print(other),
    }
}

fn call(f: &str, args: &[Value], header: bool) -> Result<Value> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
    Ok(match f {
        "json" => {
            let s = serde_json::to_string(&arg(0))?;
            Value::String(go_html_escape(&s))
        }
        "index" => {
            let mut cur = arg(0);
            for k in &args[1.min(args.len())..] {
                cur = match (&cur, k) {
                    (Value::Object(m), k) => m.get(&as_str(k)).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_u64().unwrap_or(u64::MAX) as usize;
                        match a.get(i) {
                            Some(x) => x.clone(),
                            None => bail!("template: error calling index: index out of range: {i}"),
                        }
                    }
                    (Value::Null, _) => Value::Null,
                    _ if header => Value::String(String::new()),
                    (c, _) => bail!(
                        "template: error calling index: can't index item of type {}",
                        go_type(c)
                    ),
                };
            }
            cur
        }
        "join" => {
            let sep = as_str(&arg(1));
            match arg(0) {
                Value::Array(a) => {
                    Value::String(a.iter().map(as_str).collect::<Vec<_>>().join(&sep))
                }
                Value::Null => Value::String(String::new()),
                other => Value::String(as_str(&other)),
            }
        }
        "split" => Value::Array(
            as_str(&arg(0))
                .split(&as_str(&arg(1)))
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
        "upper" => Value::String(as_str(&arg(0)).to_uppercase()),
        "lower" => Value::String(as_str(&arg(0)).to_lowercase()),
        "title" => {
            let s = as_str(&arg(0));
            let mut out = String::new();
            let mut up = true;
            for c in s.chars() {
                if up {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                up = c.is_whitespace();
            }
            Value::String(out)
        }
        "truncate" => {
            let n = arg(1).as_u64().unwrap_or(0) as usize;
            Value::String(as_str(&arg(0)).chars().take(n).collect())
        }
        "pad" => {
            let s = as_str(&arg(0));
            let l = arg(1).as_u64().unwrap_or(0) as usize;
            let r = arg(2).as_u64().unwrap_or(0) as usize;
            Value::String(format!("{}{}{}", " ".repeat(l), s, " ".repeat(r)))
        }
        "len" => Value::from(match arg(0) {
            Value::Array(a) => a.len(),
            Value::Object(m) => m.len(),
            Value::String(s) => s.len(),
            _ => 0,
        }),
        "println" => Value::String(format!(
            "{}\n",
            args.iter().map(as_str).collect::<Vec<_>>().join(" ")
        )),
        "print" => Value::String(args.iter().map(as_str).collect::<Vec<_>>().concat()),
        "printf" => {
            let fmtstr = as_str(&arg(0));
            let mut out = String::new();
            let mut ai = 1;
            let mut chars = fmtstr.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '%' {
                    match chars.next() {
                        Some('%') => out.push('%'),
                        Some('q') => {
                            out.push_str(&go_quote(&as_str(&arg(ai))));
                            ai += 1;
                        }
                        Some(_) => {
                            out.push_str(&as_str(&arg(ai)));
                            ai += 1;
                        }
                        None => out.push('%'),
                    }
                } else {
                    out.push(c);
                }
            }
            Value::String(out)
        }
        "eq" => Value::Bool(args.len() >= 2 && args[1..].iter().any(|x| *x == args[0])),
        "ne" => Value::Bool(arg(0) != arg(1)),
        "not" => Value::Bool(!truthy(&arg(0))),
        "and" => args
            .iter()
            .find(|x| !truthy(x))
            .cloned()
            .unwrap_or_else(|| args.last().cloned().unwrap_or(Value::Null)),
        "or" => args
            .iter()
            .find(|x| truthy(x))
            .cloned()
            .unwrap_or_else(|| args.last().cloned().unwrap_or(Value::Null)),
        _ => bail!("template: function \"{f}\" not defined"),
    })
}

/// How Go's fmt prints an interface{} value decoded from JSON.
pub fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.to_string()
            } else if let Some(u) = n.as_u64() {
                u.to_string()
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e21 {
                    if f.abs() >= 1e6 {
                        // Go prints large floats in exponent form: %v of float64
                        go_g(f, 17)
                    } else {
                        format!("{f}")
                    }
                } else {
                    format!("{f}")
                }
            }
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_print_inner).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_print_inner(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn go_print_inner(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        other => go_print(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes() {
        assert_eq!(human_size(1_982_000.0), "1.98MB");
        assert_eq!(human_size(0.0), "0B");
        assert_eq!(human_size(646.0), "646B");
        assert_eq!(human_size(1000.0), "1kB");
        assert_eq!(human_size4(1_982_123.0), "1.982MB");
        assert_eq!(bytes_size(430_080.0), "420KiB");
        assert_eq!(go_g(23.5412, 4), "23.54");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(90), "About a minute");
        assert_eq!(human_duration(3 * 365 * 86400), "3 years");
    }

    #[test]
    fn templates() {
        let v = json!({"ID":"abc","Labels":{"k":"v"},"L":[1,2],"Sub":{"X":"y"}});
        let r = |f: &str, v: &Value| Template::parse(f).unwrap().render(v).unwrap();
        assert_eq!(r(r#"{{.Label "k"}}|{{.Label "none"}}"#, &v), "v|");
        let row = json!({"Labels": "com.docker.compose.project=web,a=b"});
        assert_eq!(r(r#"{{.Label "com.docker.compose.project"}}"#, &row), "web");
        assert_eq!(r(r#"{{.Label "a" | upper}}"#, &row), "B");
        assert_eq!(render_one("{{.ID}}", &v).unwrap(), "abc");
        assert_eq!(render_one("{{.Sub.X}}", &v).unwrap(), "y");
        assert_eq!(render_one("{{index .Labels \"k\"}}", &v).unwrap(), "v");
        assert_eq!(render_one("{{json .Labels}}", &v).unwrap(), "{\"k\":\"v\"}");
        assert_eq!(
            render_one("{{range .L}}<{{.}}>{{end}}", &v).unwrap(),
            "<1><2>"
        );
        assert_eq!(
            render_one("{{range $k, $v := .Labels}}{{$k}}={{$v}}{{end}}", &v).unwrap(),
            "k=v"
        );
        assert_eq!(render_one("{{.ID | upper}}", &v).unwrap(), "ABC");
        assert_eq!(render_one("{{if .ID}}y{{else}}n{{end}}", &v).unwrap(), "y");
        assert_eq!(
            render_one("{{json .}}", &json!({"a":"<"})).unwrap(),
            "{\"a\":\"\\u003c\"}"
        );
    }

    #[test]
    fn table() {
        let f = Formatter::new("table {{.ID}}\\t{{.Name}}", "").unwrap();
        let out = f
            .render(
                &[json!({"ID":"1","Name":"n"})],
                &[("ID", "ID"), ("Name", "NAME")],
            )
            .unwrap();
        assert_eq!(out, "ID        NAME\n1         n\n");
    }
}
