//! Dockerfile parsing: directives, comments, line continuations, instructions with flags, and
//! variable expansion where Docker expands.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("dockerfile parse error line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("the Dockerfile (Dockerfile) cannot be empty")]
    Empty,
    #[error("failed to process \"{0}\": missing '}}' in expansion")]
    Expansion(String),
}

/// A heredoc after RUN, COPY or ADD (Dockerfile 1.4 syntax): `<<EOF`, `<<-EOF`, `<<"EOF"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Heredoc {
    /// The delimiter word (quotes removed).
    pub name: String,
    /// The lines up to the delimiter line, each ending in a newline (as written: `<<-` tab
    /// stripping is applied by [`Heredoc::text`]).
    pub content: String,
    /// Unquoted delimiter: variables in the content are expanded (COPY/ADD).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the content lines.
    pub chomp: bool,
}

impl Heredoc {
    /// The content with `<<-` leading tabs stripped.
    pub fn text(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        self.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instruction {
    /// Upper-case keyword.
    pub cmd: String,
    /// Arguments after the keyword and flags, unexpanded.
    pub args: String,
    /// `--name=value` flags before the arguments.
    pub flags: HashMap<String, String>,
    /// The line as written (continuations joined), for the `Step N/M :` output.
    pub original: String,
    pub line: usize,
    /// Heredocs the arguments name, in order.
    pub heredocs: Vec<Heredoc>,
}

impl Instruction {
    /// JSON array form (`["a","b"]`), if the arguments are one.
    pub fn json_args(&self) -> Option<Vec<String>> {
        let t = self.args.trim();
        if t.starts_with('[') {
            serde_json::from_str::<Vec<String>>(t).ok()
        } else {
            None
        }
    }
}

const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Parse a Dockerfile into instructions.
pub fn parse(src: &str) -> Result<Vec<Instruction>, ParseError> {
    let mut escape = '\\';
    let lines: Vec<&str> = src.lines().collect();
    // Parser directives: only at the very top, before any instruction, blank line or comment.
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        let Some(d) = t.strip_prefix('#') else { break };
        let Some((k, v)) = d.split_once('=') else {
            break;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "escape" => {
                let v = v.trim();
                escape = match v {
                    "`" => '`',
                    "\\" => '\\',
                    _ => {
                        return Err(ParseError::Syntax {
                            line: i + 1,
                            msg: format!("invalid escape token '{v}' does not match ` or \\"),
                        })
                    }
                };
            }
            "syntax" | "check" => {}
            _ => break,
        }
        start = i + 1;
    }
    let mut out = Vec::new();
    let mut i = start;
    while i < lines.len() {
        let first_line = i + 1;
        let mut buf = String::new();
        loop {
            let l = lines[i];
            i += 1;
            let t = l.trim_start();
            // Comment lines, and empty lines inside a continuation, are dropped (Docker warns
            // about the latter but still accepts them).
            if t.starts_with('#') || (t.is_empty() && !buf.is_empty()) {
                if buf.is_empty() || i >= lines.len() {
                    break;
                }
                continue;
            }
            let trimmed = l.trim_end();
            if let Some(stripped) = trimmed.strip_suffix(escape) {
                buf.push_str(stripped);
                buf.push(' ');
                if i >= lines.len() {
                    break;
                }
                continue;
            }
            buf.push_str(trimmed);
            break;
        }
        let text = buf.trim();
        if text.is_empty() {
            continue;
        }
        let (kw, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let cmd = kw.to_ascii_uppercase();
        if !KNOWN.contains(&cmd.as_str()) {
            return Err(ParseError::Syntax {
                line: first_line,
                msg: format!("unknown instruction: {}", kw.to_ascii_uppercase()),
            });
        }
        let mut rest = rest.trim_start();
        let mut flags = HashMap::new();
        if matches!(
            cmd.as_str(),
            "FROM" | "COPY" | "ADD" | "RUN" | "HEALTHCHECK"
        ) {
            while let Some(f) = rest.strip_prefix("--") {
                let (flag, after) = f.split_once(char::is_whitespace).unwrap_or((f, ""));
                let (k, v) = flag.split_once('=').unwrap_or((flag, "true"));
                flags.insert(k.to_string(), v.to_string());
                rest = after.trim_start();
            }
        }
        if rest.is_empty() && !matches!(cmd.as_str(), "CMD" | "ENTRYPOINT") {
            return Err(ParseError::Syntax {
                line: first_line,
                msg: format!("{cmd} requires at least one argument"),
            });
        }
        // Heredocs: the lines after the instruction, up to each delimiter in turn.
        let mut heredocs = Vec::new();
        if matches!(cmd.as_str(), "RUN" | "COPY" | "ADD") {
            for (name, expand, chomp) in heredoc_markers(rest) {
                let mut content = String::new();
                loop {
                    let Some(l) = lines.get(i) else {
                        return Err(ParseError::Syntax {
                            line: first_line,
                            msg: format!("unterminated heredoc {name}"),
                        });
                    };
                    i += 1;
                    let end = if chomp { l.trim_start_matches('\t') } else { l };
                    if end == name {
                        break;
                    }
                    content.push_str(l);
                    content.push('\n');
                }
                heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                    chomp,
                });
            }
        }
        out.push(Instruction {
            cmd,
            args: rest.to_string(),
            flags,
            original: text.to_string(),
            line: first_line,
            heredocs,
        });
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

/// The heredocs an instruction's arguments open, in order: `(name, expand, chomp)`. A marker is
/// a word starting with `<<` (or a file descriptor and `<<`), outside quotes, not `<<<`.
pub fn heredoc_markers(args: &str) -> Vec<(String, bool, bool)> {
    let c: Vec<char> = args.chars().collect();
    let mut out = Vec::new();
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\\' && !single {
            i += 2;
            continue;
        }
        if ch == '\'' && !double {
            single = !single;
        } else if ch == '"' && !single {
            double = !double;
        } else if !single && !double && ch == '<' && c.get(i + 1) == Some(&'<') {
            // Only at a word's start (after optional fd digits), and not a here-string.
            let mut s = i;
            while s > 0 && c[s - 1].is_ascii_digit() {
                s -= 1;
            }
            let word_start = s == 0 || c[s - 1].is_whitespace();
            if !word_start || c.get(i + 2) == Some(&'<') {
                i += 2;
                continue;
            }
            let mut j = i + 2;
            let chomp = c.get(j) == Some(&'-');
            if chomp {
                j += 1;
            }
            let (name, expand) = match c.get(j) {
                Some(&q) if q == '"' || q == '\'' => {
                    let end = c[j + 1..].iter().position(|&x| x == q).map(|p| j + 1 + p);
                    match end {
                        Some(e) => {
                            let n: String = c[j + 1..e].iter().collect();
                            j = e + 1;
                            (n, false)
                        }
                        None => (String::new(), false),
                    }
                }
                _ => {
                    let st = j;
                    while j < c.len() && !c[j].is_whitespace() && !"<>;|&()'\"".contains(c[j]) {
                        j += 1;
                    }
                    (c[st..j].iter().collect(), true)
                }
            };
            if !name.is_empty() {
                out.push((name, expand, chomp));
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out
}

/// Expand `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}` (and `\$` for a literal dollar).
pub fn expand(s: &str, vars: &HashMap<String, String>) -> Result<String, ParseError> {
    expand_with(s, vars, true)
}

/// As [`expand`], but single quotes are plain text (a heredoc's content).
pub fn expand_text(s: &str, vars: &HashMap<String, String>) -> Result<String, ParseError> {
    expand_with(s, vars, false)
}

fn expand_with(
    s: &str,
    vars: &HashMap<String, String>,
    quotes: bool,
) -> Result<String, ParseError> {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut in_single = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' && quotes {
            in_single = !in_single;
            out.push(c);
            i += 1;
            continue;
        }
        if c == '\\' && i + 1 < chars.len() && chars[i + 1] == '$' {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' || in_single || i + 1 >= chars.len() {
            out.push(c);
            i += 1;
            continue;
        }
        if chars[i + 1] == '{' {
            let end = chars[i + 2..]
                .iter()
                .position(|&x| x == '}')
                .ok_or_else(|| ParseError::Expansion(s.to_string()))?;
            let inner: String = chars[i + 2..i + 2 + end].iter().collect();
            i += 3 + end;
            let (name, op, word) = if let Some(p) = inner.find(":-") {
                (&inner[..p], "-", &inner[p + 2..])
            } else if let Some(p) = inner.find(":+") {
                (&inner[..p], "+", &inner[p + 2..])
            } else {
                (inner.as_str(), "", "")
            };
            let val = vars.get(name).filter(|v| !v.is_empty());
            match op {
                "-" => out.push_str(&val.cloned().map(Ok).unwrap_or_else(|| expand(word, vars))?),
                "+" => {
                    if val.is_some() {
                        out.push_str(&expand(word, vars)?);
                    }
                }
                _ => out.push_str(vars.get(name).map(String::as_str).unwrap_or("")),
            }
            continue;
        }
        let mut j = i + 1;
        while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
            j += 1;
        }
        if j == i + 1 {
            out.push('$');
            i += 1;
            continue;
        }
        let name: String = chars[i + 1..j].iter().collect();
        out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
        i = j;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuations_comments_flags() {
        let df = "# syntax=docker/dockerfile:1\nFROM busybox AS base\n# a comment\nRUN echo a \\\n  # inner comment\n  && echo b\nCOPY --chown=1:1 --from=base a b\ncmd [\"sh\"]\n";
        let v = parse(df).unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].cmd, "RUN");
        assert_eq!(v[1].args, "echo a    && echo b");
        assert_eq!(v[2].flags.get("chown").unwrap(), "1:1");
        assert_eq!(v[2].flags.get("from").unwrap(), "base");
        assert_eq!(v[3].json_args().unwrap(), vec!["sh"]);
    }

    #[test]
    fn empty_continuation_lines_and_case() {
        let v = parse("from busybox\nrun echo a \\\n\n  b\nEnv A=1\n").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].cmd, "RUN");
        assert_eq!(v[1].args, "echo a    b");
        assert_eq!(v[2].cmd, "ENV");
        assert_eq!(v[1].line, 2);
    }

    #[test]
    fn missing_arguments() {
        assert_eq!(
            parse("FROM busybox\nRUN\n").unwrap_err().to_string(),
            "dockerfile parse error line 2: RUN requires at least one argument"
        );
    }

    #[test]
    fn escape_directive_and_errors() {
        let v = parse("# escape=`\nFROM x\nRUN a `\n b\n").unwrap();
        assert_eq!(v[1].args, "a   b");
        assert_eq!(
            parse("FROM x\nFOO bar\n").unwrap_err().to_string(),
            "dockerfile parse error line 2: unknown instruction: FOO"
        );
        assert_eq!(parse("# just a comment\n").unwrap_err(), ParseError::Empty);
    }

    #[test]
    fn expansion() {
        let mut m = HashMap::new();
        m.insert("A".to_string(), "x".to_string());
        m.insert("E".to_string(), String::new());
        assert_eq!(
            expand("$A/${A}/${B:-d}/${A:+y}/${B:+n}/\\$A", &m).unwrap(),
            "x/x/d/y//$A"
        );
        assert_eq!(expand("${E:-def}", &m).unwrap(), "def");
        assert_eq!(expand("'$A'", &m).unwrap(), "'$A'");
        assert!(expand("${A", &m).is_err());
    }

    #[test]
    fn heredocs() {
        let df = "FROM x\nRUN <<EOF\necho a\n# not a comment\n\nEOF\nRUN <<-'END' cat >/f && 3<<X cat\n\tone $A\n\tEND\nx\nX\nCOPY <<a <<\"b\" /d/\n1\na\n2\nb\nRUN echo $((1<<2)) \"<<no\" <<<str\n";
        let v = parse(df).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v[1].original, "RUN <<EOF");
        assert_eq!(
            v[1].heredocs,
            vec![Heredoc {
                name: "EOF".into(),
                content: "echo a\n# not a comment\n\n".into(),
                expand: true,
                chomp: false
            }]
        );
        let h = &v[2].heredocs;
        assert_eq!(
            (h[0].name.as_str(), h[0].expand, h[0].chomp),
            ("END", false, true)
        );
        assert_eq!(h[0].text(), "one $A\n");
        assert_eq!((h[1].name.as_str(), h[1].content.as_str()), ("X", "x\n"));
        assert_eq!(v[3].heredocs.len(), 2);
        assert_eq!(v[3].heredocs[1].content, "2\n");
        assert!(!v[3].heredocs[1].expand);
        assert!(v[4].heredocs.is_empty());
        assert_eq!(
            parse("FROM x\nRUN <<EOF\nno end\n")
                .unwrap_err()
                .to_string(),
            "dockerfile parse error line 2: unterminated heredoc EOF"
        );
        let mut m = HashMap::new();
        m.insert("A".to_string(), "x".to_string());
        assert_eq!(expand_text("'$A'", &m).unwrap(), "'x'");
    }
}
