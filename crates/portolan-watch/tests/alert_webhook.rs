//! The webhook sink against a real HTTP receiver on 127.0.0.1.

mod sinks;

use std::time::{Duration, Instant};

use portolan_watch::alert::{AlertConfig, AlertError, Alerts, Webhook, WebhookConfig};
use portolan_watch::metrics::Metrics;
use portolan_watch::model::{Event, EventKind};
use sinks::{event, wait_for, Answer, Receiver};

fn alerts(url: &str, tweak: impl FnOnce(&mut WebhookConfig)) -> (Alerts, Metrics) {
    let mut w = WebhookConfig::new(url);
    tweak(&mut w);
    let metrics = Metrics::new("test");
    let cfg = AlertConfig {
        stderr: false,
        events: None,
        webhook: Some(w),
        exec: None,
    };
    (Alerts::new(cfg, metrics.clone()).unwrap(), metrics)
}

fn opened(ports: impl IntoIterator<Item = u16>) -> Vec<Event> {
    ports
        .into_iter()
        .map(|p| event(EventKind::Opened, p))
        .collect()
}

#[test]
fn posts_the_events_as_one_json_object_with_its_headers() {
    let rx = Receiver::start(vec![], Answer::Status(200, ""));
    let url = format!("http://bot:s3cr%40t@{}/hook?token=abc", rx.addr);
    let (mut a, m) = alerts(&url, |_| {});
    let mut batch = opened([8080, 8081]);
    batch.push(event(EventKind::Present, 22)); // never alerted
    a.send(&batch);
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().0 == 2));
    a.shutdown(Duration::from_secs(2));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "one POST for the batch");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/hook?token=abc");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("user-agent"),
        Some(format!("portolan/{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    // The userinfo is a Basic header (bot:s3cr@t), not part of the request line.
    assert_eq!(r.header("authorization"), Some("Basic Ym90OnMzY3JAdA=="));
    assert_eq!(r.events(), batch[..2].to_vec());
    assert_eq!(m.webhook_counts(), (2, 0, 0));
    let text = m.render();
    assert!(text.contains("portolan_webhook_deliveries_total{result=\"delivered\"} 2"));
    assert!(text.contains("portolan_webhook_queue_events 0"));
}

#[test]
fn batches_carry_at_most_100_events() {
    let rx = Receiver::start(vec![], Answer::Status(204, ""));
    let (mut a, m) = alerts(&rx.url("/"), |_| {});
    let batch = opened(1..=250);
    a.send(&batch);
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().0 == 250));
    a.shutdown(Duration::from_secs(2));
    let sizes: Vec<usize> = rx.requests().iter().map(|r| r.events().len()).collect();
    assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 250);
    let all: Vec<Event> = rx
        .requests()
        .iter()
        .flat_map(sinks::Request::events)
        .collect();
    assert_eq!(all, batch, "in order, each once");
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let rx = Receiver::start(
        vec![Answer::Status(500, ""), Answer::Status(500, "")],
        Answer::Status(200, ""),
    );
    let (mut a, m) = alerts(&rx.url("/h"), |_| {});
    a.send(&opened([9000]));
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().0 == 1));
    a.shutdown(Duration::from_secs(2));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.events(), opened([9000]));
    }
    // 0.5 s then 1 s, within the ±10 % jitter and some scheduling slack.
    let gap1 = reqs[1].at - reqs[0].at;
    let gap2 = reqs[2].at - reqs[1].at;
    assert!(
        gap1 >= Duration::from_millis(430) && gap1 < Duration::from_secs(1),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(880) && gap2 < Duration::from_millis(1600),
        "{gap2:?}"
    );
    assert_eq!(m.webhook_counts(), (1, 0, 0));
}

#[test]
fn retry_after_is_respected() {
    let rx = Receiver::start(
        vec![Answer::Status(429, "retry-after: 1\r\n")],
        Answer::Status(200, ""),
    );
    let (mut a, m) = alerts(&rx.url("/"), |_| {});
    a.send(&opened([1]));
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().0 == 1));
    a.shutdown(Duration::from_secs(2));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    let gap = reqs[1].at - reqs[0].at;
    assert!(
        gap >= Duration::from_millis(950) && gap < Duration::from_millis(1800),
        "{gap:?}"
    );
}

#[test]
fn client_errors_are_not_retried() {
    let rx = Receiver::start(vec![], Answer::Status(404, ""));
    let (mut a, m) = alerts(&rx.url("/wrong"), |_| {});
    a.send(&opened([1, 2]));
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().1 == 2));
    // Longer than the first backoff: a retry would have come by now.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(rx.count(), 1);
    a.shutdown(Duration::from_secs(1));
    assert_eq!(m.webhook_counts(), (0, 2, 0));
}

#[test]
fn retries_run_out_and_the_batch_is_counted_failed() {
    let rx = Receiver::start(vec![], Answer::Status(503, ""));
    let (mut a, m) = alerts(&rx.url("/"), |w| w.retries = 1);
    a.send(&opened([7]));
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().1 == 1));
    a.shutdown(Duration::from_secs(1));
    assert_eq!(rx.count(), 2, "the first attempt and one retry");
    assert_eq!(m.webhook_counts(), (0, 1, 0));
}

#[test]
fn refused_connections_are_retried_then_counted() {
    // A port that was just ours and is closed now: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (mut a, m) = alerts(&format!("http://127.0.0.1:{port}/"), |w| w.retries = 1);
    a.send(&opened([7, 8]));
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().1 == 2));
    a.shutdown(Duration::from_secs(1));
    assert_eq!(m.webhook_counts(), (0, 2, 0));
}

#[test]
fn a_silent_receiver_never_blocks_send_and_shutdown_keeps_its_deadline() {
    let rx = Receiver::start(vec![], Answer::Silence);
    let (mut a, m) = alerts(&rx.url("/"), |w| {
        w.timeout = Duration::from_millis(200);
        w.retries = 1;
        w.queue = 50;
    });
    let mut sent = 0u64;
    for round in 0..100u16 {
        let batch = opened(round * 10..round * 10 + 10);
        let t = Instant::now();
        a.send(&batch);
        let took = t.elapsed();
        assert!(took < Duration::from_millis(50), "send took {took:?}");
        sent += 10;
    }
    // The first batch: two attempts of 200 ms and a 0.5 s backoff, then it fails.
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().1 >= 1));
    assert!(rx.count() >= 2, "the timed-out attempt was retried");
    let t = Instant::now();
    a.shutdown(Duration::from_millis(300));
    let took = t.elapsed();
    assert!(took < Duration::from_millis(600), "shutdown took {took:?}");
    let (delivered, failed, dropped) = m.webhook_counts();
    assert_eq!(delivered, 0);
    assert!(
        dropped >= sent - 100,
        "most of the full queue was dropped: {dropped}"
    );
    assert_eq!(
        delivered + failed + dropped,
        sent,
        "every event counted once"
    );
    assert!(m.render().contains("portolan_webhook_queue_events 0"));
}

#[test]
fn a_full_queue_drops_the_oldest_events() {
    let rx = Receiver::start(vec![], Answer::Status(200, ""));
    let (mut a, m) = alerts(&rx.url("/"), |w| w.queue = 5);
    // One batch of 20 into a queue of 5: the 15 oldest give way before the worker can
    // take any.
    a.send(&opened(1..=20));
    assert_eq!(m.webhook_counts().2, 15);
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().0 == 5));
    a.shutdown(Duration::from_secs(2));
    let got: Vec<u16> = rx
        .requests()
        .iter()
        .flat_map(sinks::Request::events)
        .map(|e| e.listener.port)
        .collect();
    assert_eq!(got, (16..=20).collect::<Vec<_>>());
    assert_eq!(m.webhook_counts(), (5, 0, 15));
    assert!(m
        .render()
        .contains("portolan_webhook_deliveries_total{result=\"dropped\"} 15"));
}

#[test]
fn urls_other_than_http_or_https_are_refused_clearly() {
    for (url, want) in [
        ("ftp://example.com/x?token=zzz", "http or https"),
        ("example.com/hook?token=zzz", "no scheme"),
        ("http:///hook?token=zzz", "webhook URL"),
    ] {
        let cfg = AlertConfig {
            webhook: Some(WebhookConfig::new(url)),
            ..AlertConfig::default()
        };
        let e = Alerts::new(cfg, Metrics::new("t")).unwrap_err();
        assert!(matches!(e, AlertError::WebhookUrl(_)), "{url}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(want), "{url}: {msg}");
        assert!(!msg.contains("zzz"), "the token is not echoed: {msg}");
    }
}

#[test]
fn shutdown_delivers_what_is_queued_within_its_deadline() {
    let rx = Receiver::start(vec![Answer::Status(500, "")], Answer::Status(200, ""));
    let (mut a, m) = alerts(&rx.url("/"), |_| {});
    a.send(&opened(1..=150));
    // At once: the queue is delivered during shutdown, a retry included.
    a.shutdown(Duration::from_secs(5));
    assert_eq!(m.webhook_counts(), (150, 0, 0));
    let got: Vec<u16> = rx
        .requests()
        .iter()
        .skip(1)
        .flat_map(sinks::Request::events)
        .map(|e| e.listener.port)
        .collect();
    assert_eq!(got, (1..=150).collect::<Vec<_>>());
}

#[test]
fn https_to_a_plain_http_receiver_fails_the_handshake_and_is_counted() {
    let rx = Receiver::start(vec![], Answer::Status(200, ""));
    let url = format!("https://{}/hook?token=zzz", rx.addr);
    let (mut a, m) = alerts(&url, |w| {
        w.retries = 0;
        w.timeout = Duration::from_secs(2);
    });
    a.send(&opened([1]));
    assert!(wait_for(Duration::from_secs(10), || m.webhook_counts().1 == 1));
    a.shutdown(Duration::from_secs(1));
    assert_eq!(m.webhook_counts(), (0, 1, 0));
}

#[test]
fn the_webhook_alone_posts_json_values_of_another_kind() {
    let rx = Receiver::start(vec![Answer::Status(503, "")], Answer::Status(200, ""));
    let metrics = Metrics::new("test");
    let hook: Webhook = Webhook::start(WebhookConfig::new(rx.url("/g")), metrics.clone()).unwrap();
    let sent: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"event": "decision", "n": i}))
        .collect();
    hook.send(&sent[..2]);
    hook.send(&sent[2..]);
    // Shutdown delivers what is queued, the retry after the 503 included.
    hook.shutdown(Duration::from_secs(5));
    assert_eq!(metrics.webhook_counts(), (3, 0, 0));
    let got: Vec<serde_json::Value> = rx
        .requests()
        .iter()
        .skip(1)
        .flat_map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["events"].as_array().unwrap().clone()
        })
        .collect();
    assert_eq!(got, sent, "in order, each once, as `{{\"events\":[...]}}`");
    assert!(metrics
        .render()
        .contains("portolan_webhook_deliveries_total{result=\"delivered\"} 3"));
}

#[test]
fn the_webhook_alone_checks_its_configuration() {
    let e = Webhook::<serde_json::Value>::start(
        WebhookConfig::new("ftp://example.com/x?token=zzz"),
        Metrics::new("t"),
    )
    .unwrap_err();
    assert!(matches!(e, AlertError::WebhookUrl(_)), "{e:?}");
    assert!(!e.to_string().contains("zzz"), "{e}");
    let e = Webhook::<serde_json::Value>::start(
        WebhookConfig {
            timeout: Duration::ZERO,
            ..WebhookConfig::new("http://127.0.0.1:9/")
        },
        Metrics::new("t"),
    )
    .unwrap_err();
    assert!(matches!(e, AlertError::WebhookTimeout), "{e:?}");
}
