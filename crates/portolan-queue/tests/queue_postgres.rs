//! The queue against a real PostgreSQL server that the test starts on 127.0.0.1 (a
//! throwaway cluster in a temporary directory, portolan-testbed's `PgServer`). Without the
//! server binaries the test skips with a reason, except under CI=true, where it fails
//! (`PgServer::start` goes through portolan-testsupport's one prerequisite check).
//!
//! One server for all the cases, each case on a fresh database of its own: starting a
//! cluster costs seconds, and a server shared through a static would never be stopped.
#![allow(clippy::print_stderr)]

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use portolan_core::{PortState, Protocol, ServiceSource};
use portolan_queue::{Lease, Queue, QueueError, Record, ScanState};
use portolan_testbed::pg::PgServer;
use serde_json::json;

const LONG: Duration = Duration::from_secs(60);

fn case(name: &str, f: impl FnOnce()) {
    let start = Instant::now();
    eprintln!("queue case: {name} ...");
    f();
    eprintln!("queue case: {name} ok ({:?})", start.elapsed());
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).expect("a direct client")
}

fn count(url: &str, sql: &str) -> i64 {
    client(url).query_one(sql, &[]).expect(sql).get(0)
}

fn record(host: &str, port: u16, proto: Protocol, state: PortState) -> Record {
    Record::new(host.parse().expect("an address"), port, proto, state)
}

/// A record with every optional field set, as service detection writes one.
fn full_record(host: &str, port: u16) -> Record {
    let mut r = record(host, port, Protocol::Tcp, PortState::Open);
    r.reason = "syn-ack".into();
    r.rtt_ms = Some(0.37);
    r.ttl = Some(63);
    r.service = Some("https".into());
    r.service_source = Some(ServiceSource::Probe);
    r.hostname = Some("www.example.test".into());
    r.product = Some("nginx".into());
    r.version = Some("1.25.3".into());
    r.info = Some("Ubuntu".into());
    r.cpe = Some("cpe:/a:nginx:nginx:1.25.3".into());
    r.banner = Some("HTTP/1.1 400 Bad Request\\r\\nServer: nginx".into());
    r.tls = Some(json!({
        "version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256",
        "cert": {"subject": "CN=www.example.test", "sans": ["www.example.test", "example.test"],
                 "not_after": "2030-01-01T00:00:00Z", "self_signed": false, "bits": 2048}
    }));
    r.http = Some(json!({"status": 200, "title": "It works", "frameworks": []}));
    r
}

/// (host, proto, port) as the results are sorted: addresses as addresses, protocols by
/// name.
fn sort_key(r: &Record) -> (IpAddr, &'static str, u16) {
    (r.host, r.proto.as_str(), r.port)
}

#[test]
fn postgres_queue() {
    let Some(server) = PgServer::start() else {
        return;
    };

    case(
        "eight workers connecting at once create the schema once",
        || {
            let url = server.fresh_db("migrate");
            let barrier = Arc::new(Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (url, barrier) = (url.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        Queue::connect(&url).map(drop)
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .unwrap()
                    .expect("every connect migrates or finds the schema");
            }
            assert_eq!(count(&url, "SELECT COUNT(*) FROM portolan_queue_meta"), 1);
            assert_eq!(
                count(&url, "SELECT MAX(version)::bigint FROM portolan_queue_meta"),
                i64::from(portolan_queue::SCHEMA_VERSION)
            );
            assert_eq!(
                count(
                    &url,
                    "SELECT COUNT(*) FROM pg_tables WHERE tablename LIKE 'portolan_q%'"
                ),
                5
            );
            // Again: nothing to do, nothing broken.
            drop(Queue::connect(&url).expect("a second connect"));
            // A newer schema is left alone.
            client(&url)
                .batch_execute("UPDATE portolan_queue_meta SET version = 99")
                .unwrap();
            let e = Queue::connect(&url).expect_err("a newer schema");
            assert!(
                matches!(e, QueueError::SchemaTooNew { found: 99, .. }),
                "{e:?}"
            );
        },
    );

    case(
        "8 workers lease 200 chunks concurrently: each exactly once",
        || {
            let url = server.fresh_db("concurrent");
            let id = Queue::connect(&url)
                .unwrap()
                .create_scan(&json!({"args": ["10.0.0.0/16"]}), 7, 200, 2000, None)
                .unwrap();
            let barrier = Arc::new(Barrier::new(8));
            let leases = Arc::new(Mutex::new(Vec::<(String, Lease)>::new()));
            let handles: Vec<_> = (0..8)
                .map(|w| {
                    let (url, barrier, leases) =
                        (url.clone(), Arc::clone(&barrier), Arc::clone(&leases));
                    std::thread::spawn(move || {
                        let mut q = Queue::connect(&url).unwrap();
                        let name = format!("worker-{w}");
                        barrier.wait();
                        while let Some(lease) = q.lease(&name, LONG, None).unwrap() {
                            assert_eq!(lease.scan_id, id);
                            assert_eq!((lease.chunks, lease.seed), (200, 7));
                            let host = format!("10.0.{}.{}", lease.chunk / 256, lease.chunk % 256);
                            let recs = [
                                record(&host, 80, Protocol::Tcp, PortState::Open),
                                record(&host, 443, Protocol::Tcp, PortState::Closed),
                            ];
                            assert!(q.complete(&lease, &recs, 10).unwrap());
                            leases.lock().unwrap().push((name.clone(), lease));
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let leases = leases.lock().unwrap();
            assert_eq!(leases.len(), 200, "one lease per chunk, none twice");
            let chunks: BTreeSet<u32> = leases.iter().map(|(_, l)| l.chunk).collect();
            assert_eq!(chunks, (0..200).collect());
            let ids: HashSet<i64> = leases.iter().map(|(_, l)| l.lease_id).collect();
            assert_eq!(ids.len(), 200);
            let mut q = Queue::connect(&url).unwrap();
            let st = q.status(id).unwrap();
            assert_eq!(st.state, ScanState::Complete);
            assert_eq!(
                (st.chunks, st.done, st.leased, st.pending),
                (200, 200, 0, 0)
            );
            assert_eq!((st.positions, st.positions_done), (2000, 2000));
            assert_eq!((st.results, st.open), (400, 200));
            assert_eq!(st.eta_s, Some(0.0));
            let per_worker: u64 = st.workers.iter().map(|w| w.chunks_done).sum();
            assert_eq!(per_worker, 200);
            assert!(
                st.workers.len() > 1,
                "the work was shared: {:?}",
                st.workers
            );
            assert_eq!(
                count(&url, "SELECT MAX(attempts)::bigint FROM portolan_q_chunks"),
                1
            );
            assert!(q.lease("late", LONG, None).unwrap().is_none());
        },
    );

    case(
        "an expired lease is taken over; the loser writes nothing",
        || {
            let url = server.fresh_db("expiry");
            let mut a = Queue::connect(&url).unwrap();
            let mut b = Queue::connect(&url).unwrap();
            let id = a.create_scan(&json!([]), 1, 1, 10, None).unwrap();
            let la = a
                .lease("a", Duration::from_millis(200), None)
                .unwrap()
                .unwrap();
            assert!(
                b.lease("b", LONG, None).unwrap().is_none(),
                "a live lease is not taken"
            );
            std::thread::sleep(Duration::from_millis(400));
            let lb = b
                .lease("b", LONG, None)
                .unwrap()
                .expect("the expired chunk");
            assert_eq!((lb.scan_id, lb.chunk), (id, la.chunk));
            assert!(lb.lease_id > la.lease_id, "{} {}", lb.lease_id, la.lease_id);
            assert_eq!(
                count(&url, "SELECT attempts::bigint FROM portolan_q_chunks"),
                2
            );

            let lost = [record("192.0.2.1", 22, Protocol::Tcp, PortState::Open)];
            assert!(!a.complete(&la, &lost, 10).unwrap(), "the loser's complete");
            assert_eq!(count(&url, "SELECT COUNT(*) FROM portolan_q_results"), 0);
            assert!(!a.renew(&la, LONG).unwrap(), "the loser's renew");
            assert!(!a.release(&la).unwrap(), "the loser's release");
            let st = a.status(id).unwrap();
            assert_eq!((st.done, st.leased), (0, 1));
            assert_eq!(st.workers.len(), 2);
            let holder = st.workers.iter().find(|w| w.name == "b").unwrap();
            assert_eq!(holder.leased_chunk, Some(0));
            assert!(st
                .workers
                .iter()
                .any(|w| w.name == "a" && w.leased_chunk.is_none()));

            assert!(b.renew(&lb, LONG).unwrap());
            let won = [record("192.0.2.2", 22, Protocol::Tcp, PortState::Open)];
            assert!(b.complete(&lb, &won, 10).unwrap());
            let got = b.results(id).unwrap();
            assert_eq!(got, won.to_vec());
            assert!(
                !a.complete(&la, &lost, 10).unwrap(),
                "still nothing after the chunk is done"
            );
            assert_eq!(b.results(id).unwrap(), won.to_vec());
            assert_eq!(b.status(id).unwrap().state, ScanState::Complete);

            // Fencing is by lease id, not by the clock alone: a lease that expired but was
            // not taken over still belongs to its holder.
            let id2 = a.create_scan(&json!([]), 1, 1, 10, None).unwrap();
            let l = a
                .lease("a", Duration::from_millis(100), Some(id2))
                .unwrap()
                .unwrap();
            std::thread::sleep(Duration::from_millis(250));
            assert!(a.renew(&l, LONG).unwrap());
            assert!(b.lease("b", LONG, Some(id2)).unwrap().is_none());
            assert!(a.complete(&l, &won, 10).unwrap());
        },
    );

    case("a chunk completed twice never duplicates a row", || {
        let url = server.fresh_db("twice");
        let mut q = Queue::connect(&url).unwrap();
        let id = q.create_scan(&json!([]), 1, 3, 30, None).unwrap();
        let first: Vec<Record> = (1..=5)
            .map(|i| {
                record(
                    &format!("198.51.100.{i}"),
                    80,
                    Protocol::Tcp,
                    PortState::Open,
                )
            })
            .collect();

        // The first worker stalls past its lease; the second runs the chunk.
        let la = q
            .lease("slow", Duration::from_millis(150), None)
            .unwrap()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let lb = q.lease("fast", LONG, None).unwrap().unwrap();
        assert_eq!(la.chunk, lb.chunk);
        assert!(q.complete(&lb, &first, 10).unwrap());
        assert!(!q.complete(&la, &first, 10).unwrap());

        // The same completion again (its answer lost with a connection): true, nothing
        // counted twice.
        assert!(q.complete(&lb, &first, 10).unwrap());
        let st = q.status(id).unwrap();
        assert_eq!((st.done, st.positions_done, st.results), (1, 10, 5));
        let fast = st.workers.iter().find(|w| w.name == "fast").unwrap();
        assert_eq!((fast.chunks_done, fast.positions_done), (1, 10));
        assert_eq!(
            count(
                &url,
                "SELECT chunks_done FROM portolan_q_workers WHERE name = 'fast'"
            ),
            1
        );

        // An operator puts the chunk back; another worker runs it again, with one port's
        // state changed and every record sent twice in the one call.
        client(&url)
            .execute(
                "UPDATE portolan_q_chunks SET state = 'pending', lease_id = NULL \
                 WHERE scan_id = $1 AND idx = $2",
                &[&id, &i32::try_from(lb.chunk).unwrap()],
            )
            .unwrap();
        let lc = q.lease("again", LONG, None).unwrap().unwrap();
        assert_eq!(lc.chunk, lb.chunk);
        let mut rerun = first.clone();
        rerun[0].state = PortState::Closed;
        let twice: Vec<Record> = rerun.iter().chain(rerun.iter()).cloned().collect();
        assert!(q.complete(&lc, &twice, 10).unwrap());

        // Another chunk reports overlapping ports, across batch boundaries: 2,500 records
        // of which 1,000 are the same keys again.
        let ld = q.lease("other", LONG, None).unwrap().unwrap();
        let mut many: Vec<Record> = (0..1500u16)
            .map(|p| record("203.0.113.9", p + 1, Protocol::Udp, PortState::OpenFiltered))
            .collect();
        many.extend(
            (0..1000u16).map(|p| record("203.0.113.9", p + 1, Protocol::Udp, PortState::Open)),
        );
        many.extend(first.iter().cloned());
        assert!(q.complete(&ld, &many, 10).unwrap());

        let (rows, distinct): (i64, i64) = {
            let row = client(&url)
                .query_one(
                    "SELECT COUNT(*), COUNT(DISTINCT (host, port, proto)) \
                     FROM portolan_q_results WHERE scan_id = $1",
                    &[&id],
                )
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert_eq!(rows, distinct);
        assert_eq!(rows, 1505);
        let results = q.results(id).unwrap();
        assert_eq!(results.len(), 1505);
        let open_udp = results
            .iter()
            .filter(|r| r.proto == Protocol::Udp && r.state == PortState::Open)
            .count();
        assert_eq!(open_udp, 1000, "the last record of a key stands");
        // The other chunk's copy of `first` came last: its open state stands.
        assert!(results
            .iter()
            .filter(|r| r.proto == Protocol::Tcp)
            .all(|r| r.state == PortState::Open));
        assert_eq!(q.status(id).unwrap().results, 1505);
    });

    case("status and results", || {
        let url = server.fresh_db("status");
        let mut w1 = Queue::connect(&url).unwrap();
        let mut w2 = Queue::connect(&url).unwrap();
        let spec = json!({"args": ["-p", "1-1000", "192.0.2.0/24"], "timing": 4});
        let id = w1.create_scan(&spec, 42, 10, 1000, Some(1000.0)).unwrap();
        let st = w1.status(id).unwrap();
        assert_eq!(st.state, ScanState::Queued);
        assert_eq!((st.done, st.leased, st.pending), (0, 0, 10));
        assert_eq!((st.rate_pps, st.eta_s, st.started_ms), (None, None, None));
        assert!(st.created_ms > 1_600_000_000_000, "{}", st.created_ms);

        let t0 = Instant::now();
        let l0 = w1.lease("w1", LONG, Some(id)).unwrap().unwrap();
        assert_eq!((l0.chunk, l0.chunks, l0.seed), (0, 10, 42));
        assert_eq!(l0.spec, spec);
        assert_eq!(l0.rate, Some(1000.0), "alone: the whole rate");
        let l1 = w2.lease("w2", LONG, Some(id)).unwrap().unwrap();
        assert_eq!(l1.chunk, 1);
        assert_eq!(l1.rate, Some(500.0), "two workers share the rate");

        let mut written: Vec<Record> = vec![
            full_record("192.0.2.10", 443),
            full_record("192.0.2.9", 443),
            full_record("2001:db8::1", 443),
            record("192.0.2.9", 22, Protocol::Tcp, PortState::Closed),
            record("192.0.2.9", 53, Protocol::Udp, PortState::OpenFiltered),
        ];
        written[1].rtt_ms = Some(12.5);
        written[1].service_source = Some(ServiceSource::PortTable);
        written[2].hostname = None;
        written[3].rtt_ms = Some(0.05);
        assert!(w1.complete(&l0, &written[..3], 100).unwrap());
        std::thread::sleep(Duration::from_millis(300));
        assert!(w2.complete(&l1, &written[3..], 100).unwrap());
        let l2 = w1.lease("w1", LONG, Some(id)).unwrap().unwrap();
        assert_eq!(l2.chunk, 2);
        w2.heartbeat("w3", Some(id), Some(50.0)).unwrap();

        let st = w1.status(id).unwrap();
        let elapsed = t0.elapsed();
        assert_eq!(st.state, ScanState::Running);
        assert_eq!((st.chunks, st.done, st.leased, st.pending), (10, 2, 1, 7));
        assert_eq!((st.positions, st.positions_done), (1000, 200));
        assert_eq!((st.results, st.open), (5, 3));
        let names: Vec<&str> = st.workers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["w1", "w2", "w3"]);
        let w = &st.workers;
        assert_eq!(
            (w[0].chunks_done, w[0].positions_done, w[0].leased_chunk),
            (1, 100, Some(2))
        );
        assert_eq!(
            (w[1].chunks_done, w[1].positions_done, w[1].leased_chunk),
            (1, 100, None)
        );
        assert_eq!((w[2].chunks_done, w[2].leased_chunk), (0, None));
        for w in w {
            assert!(
                w.last_seen_ms >= st.created_ms && w.last_seen_ms <= st.now_ms,
                "{w:?}"
            );
        }
        // The rate: 200 positions over the time since the first lease, which is at least
        // the 300 ms slept and at most what this test measured.
        let rate = st.rate_pps.expect("a rate once chunks are done");
        let secs = elapsed.as_secs_f64();
        assert!(
            rate >= 200.0 / (secs + 0.05) && rate <= 200.0 / 0.29,
            "rate {rate} over {secs} s"
        );
        let eta = st.eta_s.expect("an ETA");
        assert!((eta - 800.0 / rate).abs() < 1e-6, "eta {eta}, rate {rate}");

        let mut expected = written.clone();
        expected.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let got = w1.results(id).unwrap();
        assert_eq!(got, expected, "a round trip through JSONB loses nothing");
        let hosts: Vec<String> = got.iter().map(|r| r.host.to_string()).collect();
        assert_eq!(
            hosts,
            [
                "192.0.2.9",
                "192.0.2.9",
                "192.0.2.9",
                "192.0.2.10",
                "2001:db8::1"
            ]
        );
        assert_eq!(got[0].proto, Protocol::Tcp);
        assert_eq!(got[0].port, 22);
        assert_eq!(got[2].proto, Protocol::Udp);
        let mut streamed = Vec::new();
        w2.results_with(id, |r| streamed.push(r)).unwrap();
        assert_eq!(streamed, got);

        let id2 = w2.create_scan(&json!([]), 0, 1, 1, None).unwrap();
        let scans = w2.scans().unwrap();
        assert_eq!(scans.len(), 2);
        assert_eq!(
            (
                scans[0].id,
                scans[0].state,
                scans[0].chunks,
                scans[0].done,
                scans[0].open
            ),
            (id, ScanState::Running, 10, 2, 3)
        );
        assert_eq!((scans[1].id, scans[1].state), (id2, ScanState::Queued));
        assert!(scans[0].created_ms <= scans[1].created_ms);

        // Oldest scan first: a worker not naming a scan gets the running one's chunk.
        let next = w2.lease("w2", LONG, None).unwrap().unwrap();
        assert_eq!((next.scan_id, next.chunk), (id, 3));
        assert!(w2.release(&next).unwrap());
        assert!(!w2.renew(&next, LONG).unwrap());
        assert_eq!(w2.status(id).unwrap().pending, 7);

        for e in [
            w1.status(9999).unwrap_err(),
            w1.results(9999).unwrap_err(),
            w1.cancel(9999).unwrap_err(),
            w1.resume(9999).unwrap_err(),
        ] {
            assert!(
                matches!(e, QueueError::NoSuchScan { id: 9999, .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains("no scan 9999"), "{e}");
        }
    });

    case(
        "resume requeues expired leases; cancel stops leasing",
        || {
            let url = server.fresh_db("resume");
            let mut q = Queue::connect(&url).unwrap();
            let id = q.create_scan(&json!([]), 1, 3, 3, None).unwrap();
            let short = Duration::from_millis(150);
            let stale = q.lease("a", short, Some(id)).unwrap().unwrap();
            assert_eq!(q.resume(id).unwrap(), 0, "a live lease stays");
            std::thread::sleep(Duration::from_millis(300));
            let st = q.status(id).unwrap();
            assert_eq!(
                (st.leased, st.pending),
                (0, 3),
                "an expired lease counts as pending"
            );
            assert_eq!(q.resume(id).unwrap(), 1);
            assert_eq!(q.resume(id).unwrap(), 0);
            assert!(
                !q.renew(&stale, LONG).unwrap(),
                "requeued: the old lease is void"
            );
            assert!(!q
                .complete(
                    &stale,
                    &[record("192.0.2.1", 1, Protocol::Tcp, PortState::Open)],
                    1
                )
                .unwrap());
            assert_eq!(count(&url, "SELECT COUNT(*) FROM portolan_q_results"), 0);

            let live = q.lease("b", LONG, Some(id)).unwrap().unwrap();
            assert_eq!(live.chunk, 0);
            let done = q.lease("b", LONG, Some(id)).unwrap().unwrap();
            assert!(q
                .complete(
                    &done,
                    &[record("192.0.2.2", 1, Protocol::Tcp, PortState::Open)],
                    1
                )
                .unwrap());

            q.cancel(id).unwrap();
            let st = q.status(id).unwrap();
            assert_eq!(st.state, ScanState::Cancelled);
            assert_eq!((st.done, st.leased, st.pending, st.results), (1, 0, 2, 1));
            assert_eq!(st.eta_s, None);
            assert!(q.lease("c", LONG, Some(id)).unwrap().is_none());
            assert!(q.lease("c", LONG, None).unwrap().is_none());
            assert!(!q.renew(&live, LONG).unwrap(), "cancel voids live leases");
            assert!(!q
                .complete(
                    &live,
                    &[record("192.0.2.3", 1, Protocol::Tcp, PortState::Open)],
                    1
                )
                .unwrap());
            q.cancel(id).unwrap();

            assert_eq!(q.resume(id).unwrap(), 0);
            assert_eq!(q.status(id).unwrap().state, ScanState::Queued);
            while let Some(l) = q.lease("d", LONG, None).unwrap() {
                assert!(q.complete(&l, &[] as &[Record], 1).unwrap());
            }
            let st = q.status(id).unwrap();
            assert_eq!((st.state, st.done, st.results), (ScanState::Complete, 3, 1));
            q.cancel(id).unwrap();
            assert_eq!(
                q.status(id).unwrap().state,
                ScanState::Complete,
                "complete stays complete"
            );
        },
    );

    case("no lease of a cancelled scan survives the cancel", || {
        let url = server.fresh_db("cancelrace");
        let id = Queue::connect(&url)
            .unwrap()
            .create_scan(&json!([]), 1, 2000, 2000, None)
            .unwrap();
        let cancelled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles: Vec<_> = (0..4)
            .map(|w| {
                let (url, cancelled) = (url.clone(), Arc::clone(&cancelled));
                std::thread::spawn(move || {
                    let mut q = Queue::connect(&url).unwrap();
                    let mut held = Vec::new();
                    loop {
                        let after = cancelled.load(std::sync::atomic::Ordering::SeqCst);
                        let got = q.lease(&format!("r{w}"), LONG, Some(id)).unwrap();
                        if after {
                            assert!(got.is_none(), "a lease begun after the cancel");
                            break;
                        }
                        held.extend(got);
                    }
                    for l in &held {
                        assert!(!q.renew(l, LONG).unwrap(), "a lease outlived the cancel");
                    }
                    held.len()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        Queue::connect(&url).unwrap().cancel(id).unwrap();
        cancelled.store(true, std::sync::atomic::Ordering::SeqCst);
        let leased: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(leased > 0);
        assert_eq!(
            count(
                &url,
                "SELECT COUNT(*) FROM portolan_q_chunks WHERE state = 'leased'"
            ),
            0
        );
    });

    case("hostile input", || {
        let url = server.fresh_db("hostile");
        let mut q = Queue::connect(&url).unwrap();
        let mut deep = json!("bottom");
        for _ in 0..60 {
            deep = json!({ "d": [deep] });
        }
        let spec = json!({
            "args": ["-p", "1-65535", "--banner", "\u{1b}[2J\u{7}", "", "a b\nc"],
            "unicode": "ünï 😀 \u{2028} \u{202e}rtl \u{feff}",
            "\"quote\\key'": null,
            "big": u64::MAX, "neg": i64::MIN, "float": 1e300, "tiny": 5e-324,
            "pi": std::f64::consts::PI, "zero": -0.0, "empty": {}, "list": [],
            "nested": deep,
            "literal": "\\u0000 is only text here",
        });
        let id = q
            .create_scan(
                &spec,
                u64::MAX,
                2,
                u64::try_from(i64::MAX).unwrap(),
                Some(1e-3),
            )
            .unwrap();
        let l = q.lease("w", LONG, Some(id)).unwrap().unwrap();
        assert_eq!(l.spec, spec);
        assert_eq!(l.seed, u64::MAX, "the seed's bits survive a BIGINT");
        assert_eq!(l.rate, Some(1e-3));
        let plain = q
            .create_scan(&json!("just a string"), 0, 1, 0, None)
            .unwrap();
        assert_eq!(
            q.lease("w", LONG, Some(plain)).unwrap().unwrap().spec,
            json!("just a string")
        );

        for (bad, what) in [
            (json!(["ok", "nul\u{0}inside"]), "NUL"),
            (json!({"k\u{0}": 1}), "NUL"),
        ] {
            let e = q.create_scan(&bad, 0, 1, 1, None).unwrap_err();
            assert!(matches!(e, QueueError::Invalid { .. }), "{e:?}");
            assert!(e.to_string().contains(what), "{e}");
        }
        let mut too_deep = json!(1);
        for _ in 0..200 {
            too_deep = json!([too_deep]);
        }
        assert!(matches!(
            q.create_scan(&too_deep, 0, 1, 1, None),
            Err(QueueError::Invalid { .. })
        ));
        for (chunks, positions, rate) in [
            (0, 1, None),
            (1_000_001, 1, None),
            (1, u64::MAX, None),
            (1, 1, Some(f64::NAN)),
            (1, 1, Some(0.0)),
            (1, 1, Some(-5.0)),
            (1, 1, Some(f64::INFINITY)),
        ] {
            let e = q
                .create_scan(&json!([]), 0, chunks, positions, rate)
                .unwrap_err();
            assert!(
                matches!(e, QueueError::Invalid { .. }),
                "{chunks} {positions} {rate:?}: {e:?}"
            );
        }
        for name in ["", "nul\u{0}", &"x".repeat(201)] {
            assert!(
                matches!(q.lease(name, LONG, None), Err(QueueError::Invalid { .. })),
                "{name:?}"
            );
            assert!(matches!(
                q.heartbeat(name, None, None),
                Err(QueueError::Invalid { .. })
            ));
        }
        assert!(matches!(
            q.lease("w", Duration::ZERO, None),
            Err(QueueError::Invalid { .. })
        ));
        assert!(matches!(
            q.renew(&l, Duration::from_secs(30 * 86_400)),
            Err(QueueError::Invalid { .. })
        ));

        // Control bytes in a banner survive as they were; a NUL (which PostgreSQL's text
        // cannot hold) becomes `\x00`.
        let mut ctl = full_record("192.0.2.7", 21);
        ctl.banner = Some("220 \u{1b}[31mred\u{7}\u{1}\u{7f}\u{9b}\r\n\\x1b".into());
        ctl.product = Some("\u{202e}evil".into());
        ctl.tls = Some(json!({"weird key \u{1}": ["\u{1b}", 1e-7, u64::MAX]}));
        let mut nul = record("::ffff:192.0.2.8", 65535, Protocol::Udp, PortState::Open);
        nul.banner = Some("a\u{0}b".into());
        nul.http = Some(json!({"t\u{0}": "\u{0}"}));
        assert!(q.complete(&l, &[ctl.clone(), nul], 1).unwrap());
        let got = q.results(id).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ctl);
        assert_eq!(got[1].host.to_string(), "::ffff:192.0.2.8");
        assert_eq!(got[1].banner.as_deref(), Some("a\\x00b"));
        assert_eq!(got[1].http, Some(json!({"t\\x00": "\\x00"})));

        // A worker's name with escapes is kept as given (the renderer escapes it).
        let l2 = q.lease("evil\u{1b}[2J", LONG, Some(id)).unwrap().unwrap();
        let st = q.status(id).unwrap();
        assert!(st
            .workers
            .iter()
            .any(|w| w.name == "evil\u{1b}[2J" && w.leased_chunk == Some(l2.chunk)));

        // A forged lease matches nothing.
        let forged = Lease {
            chunk: 4_000_000_000,
            ..l2.clone()
        };
        assert!(!q.complete(&forged, &[] as &[Record], 1).unwrap());
        assert!(!q.renew(&forged, LONG).unwrap());
        let e = q.complete(&l2, &[] as &[Record], u64::MAX).unwrap_err();
        assert!(matches!(e, QueueError::Invalid { .. }), "{e:?}");

        // A record written by hand that does not read is named, not a panic.
        client(&url)
            .execute(
                "INSERT INTO portolan_q_results VALUES ($1, '192.0.2.200', 1, 'tcp', 'open', \
                 '{\"host\": \"nope\"}', 0)",
                &[&id],
            )
            .unwrap();
        let e = q.results(id).unwrap_err();
        assert!(matches!(e, QueueError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("192.0.2.200 port 1/tcp"), "{e}");
    });

    case("a session ended by the server is opened again", || {
        let url = server.fresh_db("reconnect");
        let mut q = Queue::connect(&url).unwrap();
        let id = q.create_scan(&json!([]), 1, 2, 2, None).unwrap();
        let ended: i64 = server
            .admin()
            .query_one(
                "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = 'reconnect' AND application_name = 'portolan-queue') t",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(ended, 1);
        let e = q.status(id).expect_err("the session is gone");
        assert!(matches!(e, QueueError::Db { .. }), "{e:?}");
        let st = q.status(id).expect("a new session");
        assert_eq!(st.pending, 2);
        assert!(q.lease("w", LONG, None).unwrap().is_some());
    });

    case(
        "cost: a lease, and complete() per 1,000 records (400,000 in one chunk)",
        || {
            let url = server.fresh_db("cost");
            let mut q = Queue::connect(&url).unwrap();
            let id = q.create_scan(&json!([]), 1, 500, 400_000, None).unwrap();
            let t = Instant::now();
            let mut leases = Vec::new();
            while let Some(l) = q.lease("bench", LONG, Some(id)).unwrap() {
                leases.push(l);
            }
            let per_lease = t.elapsed() / u32::try_from(leases.len()).unwrap();
            assert_eq!(leases.len(), 500);

            // Chunks of 1,000 records, as workers would send them.
            let typical = |i: u32| {
                let mut r = record(
                    &format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255),
                    if i.is_multiple_of(2) { 80 } else { 443 },
                    Protocol::Tcp,
                    if i.is_multiple_of(7) {
                        PortState::Open
                    } else {
                        PortState::Closed
                    },
                );
                r.reason = "conn-refused".into();
                r.rtt_ms = Some(f64::from(i % 1000) / 100.0);
                r.service = Some("http".into());
                r.service_source = Some(ServiceSource::PortTable);
                r.hostname = Some(format!("host-{i}.example.test"));
                r
            };
            let t = Instant::now();
            for (n, l) in leases.iter().take(20).enumerate() {
                let n = u32::try_from(n).unwrap();
                let recs: Vec<Record> = (n * 1000..(n + 1) * 1000).map(typical).collect();
                assert!(q.complete(l, &recs, 800).unwrap());
            }
            let per_1000_chunked = t.elapsed() / 20;

            // A whole scan's 400,000 records in one completion.
            let recs: Vec<Record> = (1_000_000..1_400_000).map(typical).collect();
            let t = Instant::now();
            assert!(q.complete(&leases[20], &recs, 400_000).unwrap());
            let whole = t.elapsed();
            let t = Instant::now();
            let mut n = 0usize;
            q.results_with(id, |_| n += 1).unwrap();
            let read = t.elapsed();
            assert_eq!(n, 420_000);
            eprintln!(
                "cost: lease {per_lease:?}; complete per 1,000 records {per_1000_chunked:?} \
             (chunks of 1,000), {:?} (400,000 in one call, {whole:?} in all); \
             reading 420,000 results {read:?}",
                whole / 400
            );
            assert!(whole < Duration::from_secs(300), "{whole:?}");
        },
    );
}
