//! `.dockerignore`: Docker's pattern rules (`*`, `?`, `[...]`, `**`, `!` exceptions; the last
//! matching pattern wins; a pattern that matches a directory covers everything below it).
//! Shared by the engine (which filters contexts other clients send unfiltered) and the CLI
//! (which filters the context it sends).

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

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Remove what the patterns exclude from an unpacked context directory (the CLI filters the
    /// context it sends, other API clients may not). `keep` names files that stay regardless
    /// (the Dockerfile being built). A directory goes when it is excluded and nothing below it
    /// was re-included.
    pub fn filter_dir(&self, root: &std::path::Path, keep: &[&str]) -> std::io::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        self.filter_walk(root, root, keep).map(|_| ())
    }

    /// Returns whether `dir` still holds anything.
    fn filter_walk(
        &self,
        root: &std::path::Path,
        dir: &std::path::Path,
        keep: &[&str],
    ) -> std::io::Result<bool> {
        let mut any = false;
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            let excluded = self.excluded(&rel) && !keep.contains(&rel.as_str());
            if e.file_type()?.is_dir() {
                let left = self.filter_walk(root, &p, keep)?;
                if excluded && !left {
                    std::fs::remove_dir(&p)?;
                } else {
                    any = true;
                }
            } else if excluded {
                std::fs::remove_file(&p)?;
            } else {
                any = true;
            }
        }
        Ok(any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_rules() {
        let i =
            Ignore::parse("# comment\n*.md\n!README.md\nbuild/\n**/*.tmp\n/secret\ndocs/?.txt\n");
        assert!(i.excluded("notes.md"));
        assert!(!i.excluded("README.md"));
        assert!(i.excluded("build/out/bin"));
        assert!(i.excluded("a/b/c.tmp"));
        assert!(i.excluded("x.tmp"));
        assert!(i.excluded("secret"));
        assert!(i.excluded("docs/a.txt"));
        assert!(!i.excluded("docs/ab.txt"));
        assert!(!i.excluded("src/main.rs"));
        assert!(!i.excluded("sub/notes.md"));
    }

    #[test]
    fn exceptions_and_double_star() {
        let i = Ignore::parse("docs\n!docs/keep.txt\n**/node_modules\n*/tmp*\n");
        assert!(i.excluded("docs"));
        assert!(i.excluded("docs/other.txt"));
        assert!(!i.excluded("docs/keep.txt"));
        assert!(i.excluded("node_modules/x/y.js"));
        assert!(i.excluded("a/b/node_modules"));
        assert!(i.excluded("a/tmpfile"));
        assert!(!i.excluded("tmpfile"));
        assert!(!i.excluded("a/b/tmpfile"));
        let j = Ignore::parse("*\n!src\n");
        assert!(i.excluded("docs/x"));
        assert!(j.excluded("Dockerfile"));
        assert!(!j.excluded("src/main.rs"));
    }

    #[test]
    fn filters_a_directory() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("docs/sub")).unwrap();
        std::fs::create_dir_all(r.join("build")).unwrap();
        for f in [
            "docs/a.md",
            "docs/sub/keep.txt",
            "build/out",
            "main.c",
            "Dockerfile",
        ] {
            std::fs::write(r.join(f), "x").unwrap();
        }
        let i = Ignore::parse("docs\n!docs/sub/keep.txt\nbuild\nDockerfile\n");
        i.filter_dir(r, &["Dockerfile"]).unwrap();
        assert!(!r.join("docs/a.md").exists());
        assert!(r.join("docs/sub/keep.txt").exists());
        assert!(!r.join("build").exists());
        assert!(r.join("main.c").exists() && r.join("Dockerfile").exists());
    }
}
