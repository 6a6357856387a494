// The same rules as the engine's (crates/engine/src/build/ignore.rs): the CLI filters the context it sends.
//! `.dockerignore`: Docker's pattern rules (`*`, `?`, `[...]`, `**`, `!` exceptions; the last
//! matching pattern wins; a pattern that matches a directory covers everything below it).

use regex::Regex;

pub struct Ignore {
    rules: Vec<(Regex, bool)>,
}

fn to_regex(p: &str) -> Option<Regex> {
    let mut re = String::from("^");
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '*' if i + 1 < chars.len() && chars[i + 1] == '*' => {
                // `**/` matches zero or more directories.
                if i + 2 < chars.len() && chars[i + 2] == '/' {
                    re.push_str("(.*/)?");
                    i += 3;
                } else {
                    re.push_str(".*");
                    i += 2;
                }
                continue;
            }
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' => {
                let end = chars[i..].iter().position(|&x| x == ']')?;
                let class: String = chars[i + 1..i + end].iter().collect();
                let class = class
                    .strip_prefix('!')
                    .map(|c| format!("^{c}"))
                    .unwrap_or(class);
                re.push('[');
                re.push_str(&class);
                re.push(']');
                i += end + 1;
                continue;
            }
            '\\' if i + 1 < chars.len() => {
                re.push_str(&regex::escape(&chars[i + 1].to_string()));
                i += 2;
                continue;
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    re.push('$');
    Regex::new(&re).ok()
}

fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

impl Ignore {
    pub fn parse(text: &str) -> Self {
        let mut rules = Vec::new();
        for l in text.lines() {
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, pat) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let pat = clean(pat);
            if pat.is_empty() {
                continue;
            }
            if let Some(re) = to_regex(&pat) {
                rules.push((re, neg));
            }
        }
        Self { rules }
    }

    /// Whether `path` (relative, `/`-separated) is excluded from the context.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let mut prefixes = Vec::new();
        let mut acc = String::new();
        for part in path.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            prefixes.push(acc.clone());
        }
        let mut excluded = false;
        // As moby's patternmatcher: a pattern matches the path or one of its parents, and the
        // last matching pattern decides (`!` re-includes).
        for (re, neg) in &self.rules {
            if prefixes.iter().any(|p| re.is_match(p)) {
                excluded = !neg;
            }
        }
        excluded
    }
}
