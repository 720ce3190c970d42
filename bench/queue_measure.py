#!/usr/bin/env python3
"""Helper of bench/queue.sh: checks a scan's records, reads the workers' stderr and the
throwaway PostgreSQL's statement log, prints the table and the 16-machine estimate.

  queue_measure.py check FILE --hosts H --ports P --open 22,80,...   -> one JSON line
  queue_measure.py chunks FILE...                                    -> one JSON line
  queue_measure.py pglog FILE --offset BYTES                         -> one JSON line
  queue_measure.py listen PORT... --seconds S                        (the listeners)
  queue_measure.py report RUNS.jsonl --machines M                    (the table)
"""

import argparse
import collections
import json
import math
import re
import select
import socket
import sys
import time


def check(a):
    """Every position once, open exactly on the listeners' ports, closed elsewhere."""
    want_open = {int(p) for p in a.open.split(",")}
    seen = set()
    n = 0
    dup = 0
    states = collections.Counter()
    open_by_port = collections.Counter()
    wrong = collections.Counter()
    with open(a.file, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            v = json.loads(line)
            n += 1
            key = (v["host"], v["port"], v["proto"])
            if key in seen:
                dup += 1
            seen.add(key)
            st = v["state"]
            states[st] += 1
            if st == "open":
                open_by_port[v["port"]] += 1
            expect = "open" if v["port"] in want_open else "closed"
            if st != expect:
                wrong["%s %s (expected %s)" % (v["port"], st, expect)] += 1
    want = a.hosts * a.ports
    why = []
    if n != want:
        why.append("%d records, not %d" % (n, want))
    if dup:
        why.append("%d duplicates" % dup)
    if wrong:
        top = ", ".join("%s: %d" % kv for kv in wrong.most_common(4))
        why.append("%d unexpected states (%s)" % (sum(wrong.values()), top))
    print(json.dumps({
        "records": n, "unique": len(seen), "states": dict(states),
        "open": sum(open_by_port.values()), "open_expected": a.hosts * len(want_open),
        "exact": not why, "why": "; ".join(why),
    }))


CHUNK_RE = re.compile(r"worker (\S+): scan \d+ chunk (\d+)/(\d+): (\d+) record\(s\), (\d+) open, ([0-9.]+) s")


def chunks(a):
    """The workers' `chunk I/N: ... X s` lines (X: scan, parse and complete, to 0.1 s)."""
    per = {}
    allx = []
    lost = 0
    for path in a.files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = CHUNK_RE.search(line)
                if m:
                    x = float(m.group(6))
                    per.setdefault(m.group(1), []).append(x)
                    allx.append(x)
                elif "the lease was lost" in line:
                    lost += 1
    print(json.dumps({
        "chunks": len(allx), "sum_s": sum(allx),
        "mean_s": sum(allx) / len(allx) if allx else None,
        "max_s": max(allx) if allx else None, "lost": lost,
        "per_worker": {k: len(v) for k, v in sorted(per.items())},
    }))


LOG_RE = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] LOG:  duration: ([0-9.]+) ms  (statement|parse|bind|execute)[^:]*: (.*)$")


def category(sql):
    s = " ".join(sql.split())
    if "INSERT INTO portolan_q_results" in s:
        return "complete"
    if "FROM portolan_q_chunks c JOIN portolan_q_scans" in s or s.startswith("WITH taken AS"):
        return "lease"
    if "UPDATE portolan_q_chunks c SET lease_until_ms" in s:
        return "renew"
    if s.startswith("INSERT INTO portolan_q_workers (name, scan_id, last_seen_ms, started_ms"):
        return "heartbeat"
    return None


def pglog(a):
    """Server time by what the workers asked: each backend's transactions (BEGIN .. COMMIT)
    take the category of the statement that marks them (the records' upsert: complete;
    the pick and take: lease); lone statements their own. parse + bind + execute."""
    cats = collections.defaultdict(lambda: [0.0, 0])  # category -> [ms, transactions]
    open_tx = {}  # pid -> [ms, category]
    scan_lock_ms = 0.0
    pending_lock = {}
    with open(a.file, "rb") as f:
        f.seek(a.offset)
        data = f.read().decode("utf-8", "replace")
    for line in data.splitlines():
        m = LOG_RE.match(line)
        if not m:
            continue
        pid, ms, kind, sql = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        s = sql.strip().upper()
        if s.startswith("BEGIN") or s.startswith("START TRANSACTION"):
            open_tx[pid] = [ms, None]
            continue
        if pid in open_tx:
            t = open_tx[pid]
            t[0] += ms
            c = category(sql)
            if c and t[1] is None:
                t[1] = c
            # The scan's row lock, taken last in a completion: held by it until COMMIT.
            if "FOR NO KEY UPDATE" in sql or "UPDATE PORTOLAN_Q_SCANS SET STATE = 'COMPLETE'" in s:
                pending_lock[pid] = pending_lock.get(pid, 0.0) + ms
            if s.startswith("COMMIT") or s.startswith("ROLLBACK"):
                cat = t[1] or "other"
                cats[cat][0] += t[0]
                cats[cat][1] += 1
                if cat == "complete":
                    scan_lock_ms += pending_lock.get(pid, 0.0) + ms
                pending_lock.pop(pid, None)
                del open_tx[pid]
            continue
        c = category(sql) or "other"
        cats[c][0] += ms
        if kind in ("execute", "statement"):
            cats[c][1] += 1
    out = {k: {"ms": round(v[0], 3), "n": v[1]} for k, v in sorted(cats.items())}
    print(json.dumps({"by": out, "total_ms": round(sum(v[0] for v in cats.values()), 3),
                      "scan_lock_ms": round(scan_lock_ms, 3)}))


def listen(a):
    """Accepts and closes on each port (0.0.0.0), so accept queues never fill; stops
    after --seconds or when stdin closes."""
    ss = []
    for p in a.ports:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(p)))
        s.listen(4096)
        s.setblocking(False)
        ss.append(s)
    print("ready", flush=True)
    end = time.time() + a.seconds
    while time.time() < end:
        r, _, _ = select.select(ss + [sys.stdin], [], [], 1)
        for s in r:
            if s is sys.stdin:
                if not sys.stdin.buffer.read1(4096):
                    return
                continue
            while True:
                try:
                    c, _ = s.accept()
                    c.close()
                except BlockingIOError:
                    break


def fmt_s(x):
    return "%.1f s" % x


def report(a):
    runs = [json.loads(l) for l in open(a.runs, encoding="utf-8") if l.strip()]
    local = next((r for r in runs if r["kind"] == "local"), None)
    queued = [r for r in runs if r["kind"] == "queued"]
    one = next((r for r in queued if r["workers"] == 1), None)
    print("%-26s %8s %9s %11s %8s %8s %9s %9s %9s  %s" % (
        "run", "rate/wkr", "wall", "positions/s", "speedup", "effic.", "chunk avg", "wkr/chunk", "DB/chunk", "results"))
    print("%-26s %8s %9s %11s %8s %8s %9s %9s %9s" % ("", "", "", "", "", "", "(stderr)", "(wall x W", "(server)"))
    print("%-26s %8s %9s %11s %8s %8s %9s %9s %9s" % ("", "", "", "", "", "", "", "/ chunks)", ""))
    rows = ([local] if local else []) + queued
    for r in rows:
        pps = r["positions"] / r["wall_s"] if r["wall_s"] else 0
        if r["kind"] == "local":
            name = "local scan (no queue)"
            sp = eff = ch = wc = db = "-"
        else:
            name = "queued, %d worker%s" % (r["workers"], "" if r["workers"] == 1 else "s")
            if one:
                s = one["wall_s"] / r["wall_s"]
                sp, eff = "%.2fx" % s, "%.0f%%" % (100 * s / r["workers"])
            else:
                sp = eff = "?"
            c = r.get("chunks") or {}
            ch = "%.1f s" % c["mean_s"] if c.get("mean_s") is not None else "?"
            n = max(c.get("chunks") or 1, 1)
            wc = "%.2f s" % (r["wall_s"] * r["workers"] / n)
            db = "%.0f ms" % (r["pg"]["total_ms"] / n) if r.get("pg") else "?"
        res = r["check"]
        ok = "exact" if res["exact"] else "NOT EXACT: " + res["why"]
        print("%-26s %8s %9s %11.0f %8s %8s %9s %9s %9s  %s (%d records, %d open)" % (
            name, r["rate"], fmt_s(r["wall_s"]), pps, sp, eff, ch, wc, db, ok, res["records"], res["open"]))
    if local and one:
        over = one["wall_s"] - local["wall_s"]
        print("\nqueue overhead, 1 worker vs the local scan: %.1f s - %.1f s = %.1f s (%.0f%%), %.0f ms per chunk over %d chunks"
              % (one["wall_s"], local["wall_s"], over, 100 * over / local["wall_s"], 1000 * over / one["chunks"]["chunks"], one["chunks"]["chunks"]))
    print("\nthe database's time per run (server side: parse + bind + execute of every statement, from log_min_duration_statement=0):")
    for r in queued:
        pg = r.get("pg")
        if not pg:
            continue
        parts = ", ".join("%s %.0f ms (%d)" % (k, v["ms"], v["n"]) for k, v in pg["by"].items())
        print("  %d worker(s): %.0f ms in all, %.1f ms per chunk; %s; the scan row's lock held in completions %.1f ms in all"
              % (r["workers"], pg["total_ms"], pg["total_ms"] / r["chunks"]["chunks"], parts, pg["scan_lock_ms"]))
    if not one or not one.get("pg"):
        return
    # The estimate.
    m = a.machines
    n = one["chunks"]["chunks"]
    t_chunk = one["wall_s"] / n                         # one worker, one chunk, all included
    t_scan = local["wall_s"] / n if local else None     # the same positions scanned locally
    big = max(queued, key=lambda r: r["workers"])
    db_ms = one["pg"]["total_ms"] / n                   # uncontended: one worker at a time
    up_ms = one["pg"]["by"].get("complete", {}).get("ms", 0) / n
    lock_ms = max(r["pg"]["scan_lock_ms"] / r["chunks"]["chunks"] for r in queued if r.get("pg"))
    rounds = math.ceil(n / m)
    print("\nestimate for %d machines, one worker each at %s probes/s (the same scan: %d chunks of %d positions):" % (m, one["rate"], n, a.chunk_size))
    print("  a chunk, one worker: %.1f s wall / %d chunks = %.3f s (everything included)" % (one["wall_s"], n, t_chunk))
    if t_scan:
        print("    scanning: the local scan %.1f s / %d chunks = %.3f s; the rest %.3f - %.3f = %.3f s a chunk"
              % (local["wall_s"], n, t_scan, t_chunk, t_scan, t_chunk - t_scan))
    print("    in the database (1-worker run, server side): %.1f ms a chunk, %.1f ms of it the completion (%d records upserted: %.0f rows/s)"
          % (db_ms, up_ms, a.chunk_size, a.chunk_size / (up_ms / 1000) if up_ms else 0))
    if t_scan:
        print("    the worker's own: %.3f - %.3f = %.3f s a chunk (a chunk's start and end, records to JSON and back)"
              % (t_chunk - t_scan, db_ms / 1000, t_chunk - t_scan - db_ms / 1000))
    print("  %d machines, this scan: ceil(%d / %d) = %d rounds x %.3f s = %.1f s, vs %.1f s for one: %.1f / %.1f = %.1fx"
          " (the chunk count bounds it: the last round has %d chunk(s))"
          % (m, n, m, rounds, t_chunk, rounds * t_chunk, one["wall_s"], one["wall_s"], rounds * t_chunk,
             one["wall_s"] / (rounds * t_chunk), n - (rounds - 1) * m))
    demand = m / t_chunk
    print("  the database, shared: %d workers / %.3f s = %.1f chunks/s; x %.1f ms = %.2f s of server time a second: %.1f cores busy"
          % (m, t_chunk, demand, db_ms, demand * db_ms / 1000, demand * db_ms / 1000))
    print("    one core serves 1000 / %.1f ms = %.1f chunks/s = %.1f workers (%.3f s / %.1f ms); the serial part (the scan row's lock,"
          " %.2f ms a chunk) allows %s chunks/s"
          % (db_ms, 1000 / db_ms, t_chunk * 1000 / db_ms, t_chunk, db_ms, lock_ms,
             "%.0f" % (1000 / lock_ms) if lock_ms else "inf"))
    print("  a scan of many more chunks: %d x %d positions / %.3f s = %.0f positions/s, if the database has >= %d cores (else cores x %.1f chunks/s x %d)"
          % (m, a.chunk_size, t_chunk, m * a.chunk_size / t_chunk, math.ceil(demand * db_ms / 1000), 1000 / db_ms, a.chunk_size))
    print("  at the targets: %d x %s probes/s = %d probes/s" % (m, one["rate"], m * int(float(one["rate"]))))
    print("  measured here, %d workers on this machine's %s cores (workers and database share them): %.2fx of one"
          % (big["workers"], a.cores, one["wall_s"] / big["wall_s"]))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("file")
    c.add_argument("--hosts", type=int, required=True)
    c.add_argument("--ports", type=int, required=True)
    c.add_argument("--open", required=True)
    c = sub.add_parser("chunks")
    c.add_argument("files", nargs="*")
    c = sub.add_parser("pglog")
    c.add_argument("file")
    c.add_argument("--offset", type=int, default=0)
    c = sub.add_parser("listen")
    c.add_argument("ports", nargs="+")
    c.add_argument("--seconds", type=float, default=900)
    c = sub.add_parser("report")
    c.add_argument("runs")
    c.add_argument("--machines", type=int, default=16)
    c.add_argument("--chunk-size", type=int, default=8192)
    c.add_argument("--cores", default="?")
    a = p.parse_args()
    {"check": check, "chunks": chunks, "pglog": pglog, "listen": listen, "report": report}[a.cmd](a)


if __name__ == "__main__":
    main()
