//! The `berth.*` parameters of the kernel command line (docs/VM.md, "Boot").

/// What berth-guest reads from `/proc/cmdline`. Unknown parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootParams {
    /// `berth.time=<unix seconds>`: the host's clock at boot.
    pub time: Option<i64>,
    /// `berth.share=<path>`: mount the 9p tag `home` there.
    pub share: Option<String>,
    /// `berth.net=user`: configure eth0 for QEMU user networking.
    pub net_user: bool,
    /// `berth.mirror=<url>[,<url>...]` (repeatable).
    pub mirrors: Vec<String>,
    /// `berth.insecure=<host:port>[,...]` (repeatable).
    pub insecure: Vec<String>,
    /// `berth.log=<level>`: berthd's `--log-level`.
    pub log: Option<String>,
    /// `berth.debug=1`: a shell on the console.
    pub debug: bool,
}

impl BootParams {
    /// Parse a kernel command line. Values may be double-quoted (`berth.share="/a b"`), as the
    /// kernel allows.
    pub fn parse(cmdline: &str) -> Self {
        let mut p = BootParams::default();
        for word in split_words(cmdline) {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key {
                "berth.time" => p.time = value.parse().ok(),
                "berth.share" if value.starts_with('/') => p.share = Some(value.to_string()),
                "berth.net" => p.net_user = value == "user",
                "berth.mirror" => p.mirrors.extend(list(value)),
                "berth.insecure" => p.insecure.extend(list(value)),
                "berth.log" if !value.is_empty() => p.log = Some(value.to_string()),
                "berth.debug" => p.debug = matches!(value, "1" | "true" | "yes" | "on"),
                _ => {}
            }
        }
        p
    }
}

fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Split on whitespace, keeping double-quoted runs together and dropping the quotes, like the
/// kernel's `next_arg`.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut cur));
                    has_word = false;
                }
            }
            c => {
                cur.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter() {
        let p = BootParams::parse(
            "console=ttyS0 reboot=t panic=-1 quiet berth.time=1700000000 berth.share=/home/me \
             berth.net=user berth.mirror=https://m1,https://m2 berth.mirror=http://m3 \
             berth.insecure=reg:5000 berth.log=debug berth.debug=1\n",
        );
        assert_eq!(
            p,
            BootParams {
                time: Some(1_700_000_000),
                share: Some("/home/me".into()),
                net_user: true,
                mirrors: vec!["https://m1".into(), "https://m2".into(), "http://m3".into()],
                insecure: vec!["reg:5000".into()],
                log: Some("debug".into()),
                debug: true,
            }
        );
    }

    #[test]
    fn defaults_and_bad_values() {
        assert_eq!(BootParams::parse(""), BootParams::default());
        let p = BootParams::parse(
            "berth.time=soon berth.net=none berth.debug=0 berth.share=relative berth.log= \
             berth.mirror=, berth.timex=5 berth.debug",
        );
        assert_eq!(p, BootParams::default());
    }

    #[test]
    fn quoted_values() {
        let p = BootParams::parse(r#"quiet "berth.share=/Users/Jane Doe" berth.share2=x"#);
        assert_eq!(p.share.as_deref(), Some("/Users/Jane Doe"));
        let p = BootParams::parse(r#"berth.share="/a b" loglevel=4"#);
        assert_eq!(p.share.as_deref(), Some("/a b"));
    }

    #[test]
    fn last_time_wins() {
        let p = BootParams::parse("berth.time=1 berth.time=2");
        assert_eq!(p.time, Some(2));
    }
}
