//! Many rules from a TOML file (`portolan forward --config FILE`), read again on SIGHUP.
//!
//! ```toml
//! [defaults]                 # optional: options every rule takes unless it says otherwise
//! idle_timeout = "15m"
//!
//! [[forward]]
//! name = "web"               # optional; default "LISTEN -> TARGET"
//! listen = "0.0.0.0:8080"
//! target = "127.0.0.1:5000"
//! proto = "tcp"              # or "udp"; default tcp
//! allow = ["198.18.0.0/15"]  # sources allowed; default all
//! max_conns = 1000
//! max_conns_per_source = 50
//! keepalive = "60s"          # or "off"
//! proxy_protocol = "v2"      # v1 | v2
//! connect_timeout = "5s"
//! udp_timeout = "60s"
//! udp_max_sessions = 10000
//! range_mode = "listeners"   # listeners | redirect
//! ```
//!
//! The whole file is read or nothing is: an error names the line and column, and a reload
//! that fails keeps the rules that run.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use portolan_core::{when::parse_span, Cidr};
use serde::Deserialize;

use crate::spec::{default_name, parse_listen, parse_target, Options, Proto, Rule};
use crate::RelayError;

/// The most rules one file may hold.
pub const MAX_RULES: usize = 4096;
/// The largest config file read.
pub const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsToml {
    allow: Option<Vec<String>>,
    max_conns: Option<u32>,
    max_conns_per_source: Option<u32>,
    idle_timeout: Option<String>,
    keepalive: Option<String>,
    proxy_protocol: Option<String>,
    connect_timeout: Option<String>,
    udp_timeout: Option<String>,
    udp_max_sessions: Option<usize>,
    range_mode: Option<String>,
    no_splice: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleToml {
    name: Option<String>,
    listen: String,
    target: String,
    proto: Option<String>,
    #[serde(flatten)]
    options: OptionsToml,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    defaults: OptionsToml,
    #[serde(default)]
    forward: Vec<RuleToml>,
}

fn span_or_off(s: &str) -> Result<Option<Duration>, String> {
    match s.trim() {
        "off" | "none" | "never" => Ok(None),
        t => parse_span(t).map(Some).map_err(|e| e.to_string()),
    }
}

fn span(s: &str) -> Result<Duration, String> {
    parse_span(s).map_err(|e| e.to_string())
}

/// Applies the options given in `t` over `o`.
fn apply(o: &mut Options, t: &OptionsToml) -> Result<(), String> {
    if let Some(allow) = &t.allow {
        o.allow = allow
            .iter()
            .map(|a| a.parse::<Cidr>().map_err(|e| format!("allow: {e}")))
            .collect::<Result<_, _>>()?;
    }
    if let Some(n) = t.max_conns {
        o.max_conns = Some(n);
    }
    if let Some(n) = t.max_conns_per_source {
        o.max_conns_per_source = Some(n);
    }
    if let Some(s) = &t.idle_timeout {
        o.idle_timeout = span_or_off(s).map_err(|e| format!("idle_timeout: {e}"))?;
    }
    if let Some(s) = &t.keepalive {
        o.keepalive = span_or_off(s).map_err(|e| format!("keepalive: {e}"))?;
    }
    if let Some(s) = &t.proxy_protocol {
        o.proxy_protocol = match s.trim() {
            "off" | "none" => None,
            v => Some(v.parse().map_err(|e: RelayError| e.to_string())?),
        };
    }
    if let Some(s) = &t.connect_timeout {
        o.connect_timeout = span(s).map_err(|e| format!("connect_timeout: {e}"))?;
    }
    if let Some(s) = &t.udp_timeout {
        o.udp_timeout = span(s).map_err(|e| format!("udp_timeout: {e}"))?;
    }
    if let Some(n) = t.udp_max_sessions {
        o.udp_max_sessions = n;
    }
    if let Some(s) = &t.range_mode {
        o.range_mode = s.parse().map_err(|e: RelayError| e.to_string())?;
    }
    if let Some(b) = t.no_splice {
        o.no_splice = b;
    }
    Ok(())
}

/// Reads and checks a config file; `base` as in [`parse`].
pub fn load(path: &Path, base: &Options) -> Result<Vec<Rule>, RelayError> {
    let shown = portolan_core::escape::path_for_terminal(path);
    let err = |message: String| RelayError::Config {
        path: shown.clone(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_BYTES {
        return Err(err(format!("larger than {} MiB", MAX_BYTES >> 20)));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text, base).map_err(err)
}

/// Parses a config's text; `base` holds the options given on the command line, which the
/// file's `[defaults]` and each rule override.
pub fn parse(text: &str, base: &Options) -> Result<Vec<Rule>, String> {
    let file: FileToml =
        toml::from_str(text).map_err(|e| portolan_core::located(text, e.span(), e.message()))?;
    if file.forward.is_empty() {
        return Err("no [[forward]] rule".to_owned());
    }
    if file.forward.len() > MAX_RULES {
        return Err(format!("more than {MAX_RULES} rules"));
    }
    let mut defaults = base.clone();
    apply(&mut defaults, &file.defaults).map_err(|e| format!("[defaults]: {e}"))?;
    let mut rules = Vec::with_capacity(file.forward.len());
    let mut names = BTreeSet::new();
    for (i, r) in file.forward.iter().enumerate() {
        let at = |e: String| format!("rule {} ([[forward]] number {}): {e}", rule_label(r), i + 1);
        let proto = match r.proto.as_deref().map(str::trim) {
            None | Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            Some(_) => return Err(at("proto: tcp or udp".to_owned())),
        };
        let listen = parse_listen(&r.listen).map_err(|e| at(e.to_string()))?;
        let target = parse_target(&r.target).map_err(|e| at(e.to_string()))?;
        let mut options = defaults.clone();
        apply(&mut options, &r.options).map_err(at)?;
        let name = match &r.name {
            Some(n) if n.trim().is_empty() || n.len() > 100 || n.chars().any(char::is_control) => {
                return Err(at(
                    "name: 1 to 100 characters, no control characters".to_owned()
                ))
            }
            Some(n) => n.clone(),
            None => default_name(proto, &listen, &target),
        };
        let rule = Rule {
            name,
            proto,
            listen,
            target,
            options,
        };
        rule.check().map_err(|e| at(e.to_string()))?;
        if !names.insert(rule.name.clone()) {
            return Err(at("another rule has the same name".to_owned()));
        }
        rules.push(rule);
    }
    check_overlaps(&rules)?;
    Ok(rules)
}

fn rule_label(r: &RuleToml) -> String {
    let s = r.name.as_deref().unwrap_or(&r.listen);
    portolan_core::escape::for_terminal(&s.chars().take(60).collect::<String>()).into_owned()
}

/// Two rules of one protocol that listen on the same port of overlapping addresses cannot
/// both bind: said before anything is bound.
pub fn check_overlaps(rules: &[Rule]) -> Result<(), String> {
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            if a.proto != b.proto {
                continue;
            }
            let (la, lb) = (a.listen.ports, b.listen.ports);
            let ports = la.start() <= lb.end() && lb.start() <= la.end();
            let addrs = match (a.listen.addr, b.listen.addr) {
                (None, _) | (_, None) => true,
                (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
            };
            if ports && addrs {
                return Err(format!(
                    "rules {} and {} listen on the same {} port",
                    portolan_core::escape::for_terminal(&a.name),
                    portolan_core::escape::for_terminal(&b.name),
                    a.proto
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_with_defaults() {
        let text = r#"
[defaults]
idle_timeout = "15m"
max_conns = 100

[[forward]]
name = "web"
listen = "0.0.0.0:8080"
target = "127.0.0.1:5000"
allow = ["198.18.0.0/15"]
proxy_protocol = "v2"

[[forward]]
listen = "[::]:5353"
target = "198.18.0.2:53"
proto = "udp"
udp_timeout = "30s"
max_conns = 5
"#;
        let rules = parse(text, &Options::default()).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].name, "web");
        assert_eq!(
            rules[0].options.idle_timeout,
            Some(Duration::from_secs(900))
        );
        assert_eq!(rules[0].options.max_conns, Some(100));
        assert_eq!(rules[1].proto, Proto::Udp);
        assert_eq!(rules[1].options.max_conns, Some(5));
        assert_eq!(rules[1].options.udp_timeout, Duration::from_secs(30));
        assert_eq!(rules[1].name, "udp [::]:5353 -> 198.18.0.2:53");
    }

    #[test]
    fn bad_configs_say_where() {
        let cases = [
            ("", "no [[forward]]"),
            ("[[forward]]\nlisten = \"80\"\n", "target"),
            (
                "[[forward]]\nlisten = \"80\"\ntarget = \"1.2.3.4:80\"\nbogus = 1\n",
                "bogus",
            ),
            (
                "[[forward]]\nlisten = \"80\"\ntarget = \"1.2.3.4:80\"\nproto = \"sctp\"\n",
                "proto",
            ),
            (
                "[[forward]]\nlisten = \"80\"\ntarget = \"1.2.3.4:80\"\n[[forward]]\nlisten = \"0.0.0.0:80\"\ntarget = \"1.2.3.4:81\"\n",
                "same tcp port",
            ),
            (
                "[[forward]]\nlisten = \"80\"\ntarget = \"1.2.3.4:80\"\nproto = \"udp\"\nproxy_protocol = \"v2\"\n",
                "TCP only",
            ),
            ("[[forward]]\nlisten = \"\u{1b}[2J\"\ntarget = \"1.2.3.4:80\"\n", "line 2"),
            ("[[forward]]\nlisten = \"\\u001b[2J:80\"\ntarget = \"1.2.3.4:80\"\n", "rule"),
            ("x = \"\u{7}", "line 1"),
        ];
        for (text, want) in cases {
            let e = parse(text, &Options::default()).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\u{1b}') && !e.contains('\u{7}'), "{e}");
        }
    }
}
