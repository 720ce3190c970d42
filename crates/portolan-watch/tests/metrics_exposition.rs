//! The Prometheus exposition: a small validator of the text format 0.0.4 applied to
//! `render()`, and the `/metrics` server over real HTTP on 127.0.0.1.

// Sample values here are small integer counts and infinities, exact in f64.
#![allow(clippy::float_cmp)]

mod sinks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use portolan_watch::metrics::{serve, Metrics, MetricsError, CONTENT_TYPE};
use portolan_watch::model::EventKind;
use sinks::{event, http_get, listener, owner, HOSTILE};

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// Parses `{a="x",b="y"}` (the braces included) with the format's three escapes; returns
/// the labels and the rest of the line.
type Labels = Vec<(String, String)>;

fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("no {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..].strip_prefix('"').ok_or("value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().ok_or("unterminated value")?;
            match c {
                '"' => break i,
                '\\' => match chars.next().ok_or("dangling backslash")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    other => return Err(format!("bad escape \\{other}")),
                },
                '\n' => return Err("raw newline in a value".into()),
                c => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}")),
    }
}

/// Checks the text and returns its samples and the declared type of each family:
/// HELP/TYPE before the family's samples and once only, every sample in a declared
/// family (histograms through `_bucket`/`_sum`/`_count`), label syntax and escapes, no
/// duplicate series, histogram buckets cumulative with `+Inf` equal to `_count`.
fn validate(text: &str) -> (Vec<Sample>, HashMap<String, String>) {
    assert!(text.ends_with('\n'), "ends with a line feed");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: HashSet<String> = HashSet::new();
    let mut seen_samples_of: HashSet<String> = HashSet::new();
    let mut series: HashSet<String> = HashSet::new();
    let mut samples = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let at = format!("line {}: {l:?}", n + 1);
        assert!(!l.is_empty(), "{at}: empty line");
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(is_name(name, true), "{at}");
            assert!(helps.insert(name.to_owned()), "{at}: second HELP");
            continue;
        }
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name, true), "{at}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{at}"
            );
            assert!(!seen_samples_of.contains(name), "{at}: TYPE after samples");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{at}: second TYPE"
            );
            continue;
        }
        assert!(!l.starts_with('#'), "{at}: unknown comment");
        let name_end = l.find(['{', ' ']).expect("a value");
        let name = &l[..name_end];
        assert!(is_name(name, true), "{at}");
        let (labels, rest) = if l[name_end..].starts_with('{') {
            parse_labels(&l[name_end..]).unwrap_or_else(|e| panic!("{at}: {e}"))
        } else {
            (Vec::new(), &l[name_end..])
        };
        let value_text = rest.strip_prefix(' ').expect("space before the value");
        assert!(!value_text.contains(' '), "{at}: no timestamps here");
        let value = parse_value(value_text).unwrap_or_else(|e| panic!("{at}: {e}"));
        let family = [("_bucket", true), ("_sum", true), ("_count", true)]
            .iter()
            .find_map(|(suffix, _)| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("{at}: sample of an undeclared family"));
        if kind == "histogram" {
            assert_ne!(family, name, "{at}: a histogram's samples have suffixes");
        }
        if kind == "counter" {
            assert!(value >= 0.0, "{at}");
        }
        seen_samples_of.insert(family.to_owned());
        let mut names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), labels.len(), "{at}: a label twice");
        let key = format!("{name}{labels:?}");
        assert!(series.insert(key), "{at}: duplicate series");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    // Histograms: buckets ascending in `le`, cumulative, +Inf last and equal to _count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
            .collect();
        assert!(!buckets.is_empty(), "{family}: no buckets");
        let les: Vec<f64> = buckets
            .iter()
            .map(|s| parse_value(s.label("le").expect("le")).unwrap())
            .collect();
        assert!(les.windows(2).all(|w| w[0] < w[1]), "{family}: le order");
        assert_eq!(*les.last().unwrap(), f64::INFINITY, "{family}: +Inf last");
        assert!(
            buckets.windows(2).all(|w| w[0].value <= w[1].value),
            "{family}: not cumulative"
        );
        let count = samples
            .iter()
            .find(|s| s.name == format!("{family}_count"))
            .expect("_count");
        assert!(samples.iter().any(|s| s.name == format!("{family}_sum")));
        assert_eq!(buckets.last().unwrap().value, count.value, "{family}");
    }
    (samples, types)
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(*v)))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(samples, name, labels)
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .value
}

#[test]
fn a_fresh_render_is_valid_and_lists_every_family() {
    let m = Metrics::new("web-3");
    let (samples, types) = validate(&m.render());
    for (name, kind) in [
        ("portolan_info", "gauge"),
        ("portolan_listeners", "gauge"),
        ("portolan_listeners_total", "gauge"),
        ("portolan_events_total", "counter"),
        ("portolan_sample_duration_seconds", "histogram"),
        ("portolan_samples_total", "counter"),
        ("portolan_last_sample_timestamp_seconds", "gauge"),
        ("portolan_store_errors_total", "counter"),
        ("portolan_webhook_deliveries_total", "counter"),
        ("portolan_webhook_queue_events", "gauge"),
        ("portolan_exec_runs_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    // Every kind and every result is there at 0.
    for k in EventKind::ALL {
        assert_eq!(
            value(&samples, "portolan_events_total", &[("kind", k.as_str())]),
            0.0
        );
    }
    for r in ["delivered", "failed", "dropped"] {
        assert_eq!(
            value(
                &samples,
                "portolan_webhook_deliveries_total",
                &[("result", r)]
            ),
            0.0
        );
    }
    for r in ["ok", "failed"] {
        assert_eq!(
            value(&samples, "portolan_exec_runs_total", &[("result", r)]),
            0.0
        );
    }
    assert_eq!(value(&samples, "portolan_info", &[("host", "web-3")]), 1.0);
    assert_eq!(
        value(&samples, "portolan_sample_duration_seconds_count", &[]),
        0.0
    );
}

#[test]
fn the_process_metrics_describe_this_process() {
    let m = Metrics::new("t");
    let (samples, _) = validate(&m.render());
    let rss = value(&samples, "process_resident_memory_bytes", &[]);
    assert!(rss > 1_000_000.0 && rss < 4e9, "{rss}");
    let cpu = value(&samples, "process_cpu_seconds_total", &[]);
    assert!((0.0..3600.0).contains(&cpu), "{cpu}");
    #[allow(clippy::cast_precision_loss)]
    let now = portolan_watch::model::now_ms() as f64 / 1000.0;
    let start = value(&samples, "process_start_time_seconds", &[]);
    assert!(
        start <= now + 2.0 && start > now - 3600.0,
        "{start} vs {now}"
    );
}

#[test]
fn hostile_names_are_escaped_and_read_back_exactly() {
    let m = Metrics::new("h\"o\\st\n");
    let mut evil = owner(1, HOSTILE);
    evil.unit = Some("a\"b\\c\nd}{=,".into());
    let ls = vec![
        listener("0.0.0.0", 80, evil.clone()),
        listener("::", 443, owner(2, "nginx")),
    ];
    m.observe_sample(&ls, Duration::from_millis(3), 1_000);
    let text = m.render();
    let (samples, _) = validate(&text);
    let s = find(&samples, "portolan_listeners", &[("port", "80")]).unwrap();
    // ESC, BEL and the bidi override are made visible as on a terminal, the line feed with
    // them (the name's own backslashes doubled, so its literal `\x1b` stays
    // distinguishable from a real ESC), and nothing raw reaches the scrape.
    assert_eq!(
        s.label("process"),
        Some("evil\\n\\x1b[31mred\\x07 $(touch pwned) `id` 'q\" \\\\x1b \\u{202e}gnp.exe")
    );
    assert!(
        !text
            .chars()
            .any(|c| c != '\n' && portolan_core::escape::is_dangerous(c)),
        "{text:?}"
    );
    assert_eq!(s.label("unit"), evil.unit.as_deref());
    assert_eq!(s.label("address"), Some("0.0.0.0"));
    assert_eq!(s.label("exposure"), Some("all_interfaces"));
    assert_eq!(s.label("proto"), Some("tcp"));
    assert_eq!(s.value, 1.0);
    assert_eq!(
        value(&samples, "portolan_info", &[]),
        1.0,
        "the host label parses too"
    );
    assert_eq!(
        find(&samples, "portolan_info", &[]).unwrap().label("host"),
        Some("h\"o\\st\n")
    );
}

#[test]
fn the_listener_gauge_follows_the_last_sample_only() {
    let m = Metrics::new("t");
    let first: Vec<_> = (1..=50)
        .map(|p| listener("127.0.0.1", p, owner(u32::from(p), &format!("p{p}"))))
        .collect();
    m.observe_sample(&first, Duration::from_millis(2), 1_000);
    let (samples, _) = validate(&m.render());
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "portolan_listeners")
            .count(),
        50
    );
    // Two sockets with the same labels (e.g. SO_REUSEPORT workers) are one series of 2.
    let second = vec![
        listener("0.0.0.0", 8080, owner(10, "w")),
        listener("0.0.0.0", 8080, owner(11, "w")),
        listener("127.0.0.1", 53, owner(12, "dns")),
    ];
    m.observe_sample(&second, Duration::from_millis(2), 3_500);
    let (samples, _) = validate(&m.render());
    let series: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "portolan_listeners")
        .collect();
    assert_eq!(series.len(), 2, "{series:?}");
    assert_eq!(
        value(&samples, "portolan_listeners", &[("port", "8080")]),
        2.0
    );
    let total = |e: &str| {
        value(
            &samples,
            "portolan_listeners_total",
            &[("proto", "tcp"), ("exposure", e)],
        )
    };
    assert_eq!(total("all_interfaces"), 2.0);
    assert_eq!(total("loopback"), 1.0);
    assert_eq!(total("specific"), 0.0);
    assert_eq!(value(&samples, "portolan_samples_total", &[]), 2.0);
    assert_eq!(
        value(&samples, "portolan_last_sample_timestamp_seconds", &[]),
        3.5
    );
}

#[test]
fn sample_durations_land_in_their_buckets() {
    let m = Metrics::new("t");
    for ms in [0.5, 3.0, 3.0, 40.0, 2_000.0, 60_000.0] {
        m.observe_sample(&[], Duration::from_secs_f64(ms / 1000.0), 1);
    }
    let (samples, _) = validate(&m.render());
    let bucket = |le: &str| {
        value(
            &samples,
            "portolan_sample_duration_seconds_bucket",
            &[("le", le)],
        )
    };
    assert_eq!(bucket("0.001"), 1.0);
    assert_eq!(bucket("0.005"), 3.0);
    assert_eq!(bucket("0.05"), 4.0);
    assert_eq!(bucket("1"), 4.0);
    assert_eq!(bucket("2.5"), 5.0);
    assert_eq!(bucket("+Inf"), 6.0);
    let sum = value(&samples, "portolan_sample_duration_seconds_sum", &[]);
    assert!((sum - 62.0465).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(&samples, "portolan_sample_duration_seconds_count", &[]),
        6.0
    );
}

#[test]
fn events_and_errors_are_counted() {
    let m = Metrics::new("t");
    m.count_events(&[
        event(EventKind::Opened, 1),
        event(EventKind::Opened, 2),
        event(EventKind::Closed, 1),
        event(EventKind::Present, 3),
    ]);
    m.store_error();
    m.store_error();
    m.webhook_delivered(3);
    m.webhook_failed(1);
    m.webhook_dropped(2);
    m.set_webhook_queue(7);
    m.exec_run(true);
    m.exec_run(false);
    let (samples, _) = validate(&m.render());
    let counts: BTreeMap<&str, f64> = EventKind::ALL
        .iter()
        .map(|k| {
            (
                k.as_str(),
                value(&samples, "portolan_events_total", &[("kind", k.as_str())]),
            )
        })
        .collect();
    assert_eq!(counts["opened"], 2.0);
    assert_eq!(counts["closed"], 1.0);
    assert_eq!(counts["present"], 1.0);
    assert_eq!(counts["restarted"], 0.0);
    assert_eq!(value(&samples, "portolan_store_errors_total", &[]), 2.0);
    assert_eq!(value(&samples, "portolan_webhook_queue_events", &[]), 7.0);
    for (r, n) in [("delivered", 3.0), ("failed", 1.0), ("dropped", 2.0)] {
        assert_eq!(
            value(
                &samples,
                "portolan_webhook_deliveries_total",
                &[("result", r)]
            ),
            n
        );
    }
    assert_eq!(
        value(&samples, "portolan_exec_runs_total", &[("result", "ok")]),
        1.0
    );
}

#[test]
fn the_server_answers_over_http() {
    let m = Metrics::new("t");
    m.observe_sample(
        &[listener("127.0.0.1", 5432, owner(1, "postgres"))],
        Duration::from_millis(1),
        1,
    );
    let server = serve("127.0.0.1:0".parse().unwrap(), m.clone(), false).unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let (status, headers, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    let ct = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(ct, Some(CONTENT_TYPE));
    assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    let (samples, _) = validate(&body);
    assert_eq!(
        value(&samples, "portolan_listeners", &[("process", "postgres")]),
        1.0
    );

    // Live: a later change shows in the next scrape.
    m.store_error();
    let (_, _, body) = http_get(addr, "/metrics");
    assert!(body.contains("portolan_store_errors_total 1\n"));

    let (status, _, body) = http_get(addr, "/");
    assert_eq!(status, 200);
    assert!(
        body.contains("/metrics") && body.lines().count() == 1,
        "{body}"
    );
    let (status, _, _) = http_get(addr, "/other");
    assert_eq!(status, 404);

    server.shutdown();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "closed after shutdown"
    );
}

#[test]
fn a_taken_address_is_a_clear_error_at_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = serve(addr, Metrics::new("t"), false).unwrap_err();
    assert!(matches!(e, MetricsError::AddrInUse { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("already in use") && msg.contains(&addr.to_string()),
        "{msg}"
    );
}

#[test]
fn addresses_beyond_loopback_are_refused_unless_allowed() {
    for a in [
        "0.0.0.0:0",
        "[::]:0",
        "192.0.2.1:9100",
        "[::ffff:10.0.0.1]:9100",
    ] {
        let e = serve(a.parse().unwrap(), Metrics::new("t"), false).unwrap_err();
        assert!(matches!(e, MetricsError::NotLoopback { .. }), "{a}: {e:?}");
        assert!(e.to_string().contains("loopback"), "{e}");
    }
    // An IPv4-mapped loopback address is loopback (bound only if the host has IPv6).
    match serve(
        "[::ffff:127.0.0.1]:0".parse().unwrap(),
        Metrics::new("t"),
        false,
    ) {
        Ok(s) => s.shutdown(),
        Err(e) => assert!(!matches!(e, MetricsError::NotLoopback { .. }), "{e:?}"),
    }
}

#[test]
fn the_validator_rejects_broken_text() {
    let broken = [
        "no_type 1\n",
        "# TYPE a counter\na{x=\"unterminated} 1\n",
        "# TYPE a counter\na{x=\"bad \\t escape\"} 1\n",
        "# TYPE a counter\na 1\na 2\n",
        "# TYPE a counter\na 1\n# TYPE a counter\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE a gauge\na one\n",
    ];
    for text in broken {
        let r = std::panic::catch_unwind(|| validate(text));
        assert!(r.is_err(), "accepted: {text:?}");
    }
}

#[test]
fn a_client_that_never_finishes_its_request_does_not_hold_shutdown() {
    use std::io::Write as _;
    let server = serve("127.0.0.1:0".parse().unwrap(), Metrics::new("t"), false).unwrap();
    let addr = server.local_addr();
    // Half a request line, then nothing: a slow or stuck client.
    let mut stuck = std::net::TcpStream::connect(addr).unwrap();
    stuck.write_all(b"GET /metr").unwrap();
    // Others are still served meanwhile.
    let (status, _, _) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    let start = std::time::Instant::now();
    server.shutdown();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "shutdown waited {:?}",
        start.elapsed()
    );
    drop(stuck);
}
