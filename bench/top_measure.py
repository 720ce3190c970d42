#!/usr/bin/env python3
"""Measurements for bench/top.sh (Python standard library and tmux).

  top_measure.py window --tmux-sock S --target T --pid PID --seconds N --out FILE
                        [--label L] [--screen FILE] [--hz HZ]
  top_measure.py report --results FILE [--target-cpu PCT] [--target-ms MS]
  top_measure.py breakdown --script FILE    (perf script -F tid,comm,ip,sym, DWARF stacks)

window watches one program running in a tmux pane for N seconds, nothing typed:

- CPU from /proc: the process's utime + stime (every thread), plus cutime + cstime (the
  children it has reaped: `watch` forks `sh -c ss ...` every interval, and their time lands
  there), plus, at both ends of the window, the times of its live descendants (an `ss` that
  is running when the window opens or closes is counted for its part in the window). Each
  CPU second is then counted exactly once, either in a live process or in the parent that
  reaped it. Printed as a share of one core over the window's wall time.
- Memory: VmHWM (peak RSS) of the process at the end of the window, and the largest RSS of
  any descendant seen at the once-a-second samples (for `watch`'s `ss`; a lower bound).
- The screen, once a second (`tmux capture-pane`): for `portolan top`, the header's
  `refresh #N took M ms` (each N once), the socket count and the rates (`↓ X/s ↑ Y/s`).
  The last screen is kept (--screen) so that a program that failed says why.

It writes one JSON object (--out). report prints the table of every window's JSON (one per
line in --results) and of the `ss -tanp` timings (hyperfine's JSON, lines with "kind": "ss").
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def stat_of(pid):
    """(ppid, utime, stime, cutime, cstime, rss_kb) of pid from /proc, or None if gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            raw = f.read().decode("latin-1")
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces or parentheses itself.
    rest = raw[raw.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): field k is rest[k - 3].
    ppid = int(rest[1])
    ut, st, cut, cst = (int(rest[i]) for i in (11, 12, 13, 14))
    rss_kb = int(rest[21]) * PAGE // 1024
    return ppid, ut, st, cut, cst, rss_kb


def descendants(pid):
    """Live descendants of pid (any depth), from one pass over /proc."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        s = stat_of(int(name))
        if s is not None:
            kids.setdefault(s[0], []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cpu_ticks(pid):
    """(ticks of pid with reaped children and live descendants, largest descendant RSS kB)."""
    s = stat_of(pid)
    if s is None:
        return None, 0
    total = s[1] + s[2] + s[3] + s[4]
    big = 0
    for d in descendants(pid):
        ds = stat_of(d)
        if ds is not None:
            total += ds[1] + ds[2] + ds[3] + ds[4]
            big = max(big, ds[5])
    return total, big


def threads(pid):
    """{thread name: utime + stime ticks} of pid's threads (a name used twice is summed)."""
    out = {}
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid), "rb") as f:
                raw = f.read().decode("latin-1")
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2:].split()
        out[name] = out.get(name, 0) + int(rest[11]) + int(rest[12])
    return out


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def capture(sock, target):
    p = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", target],
                       capture_output=True, text=True, errors="replace")
    return p.stdout if p.returncode == 0 else ""


HEADER = re.compile(r"refresh #(\d+) took (\d+) ms")
SOCKETS = re.compile(r"(\d+) sockets, (\d+) listening")
RATES = re.compile(r"↓ ([0-9.]+ ?[A-Za-z]*)/s ↑ ([0-9.]+ ?[A-Za-z]*)/s")
UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "kB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9,
         "GB": 1e9, "T": 1e12, "TB": 1e12, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


def to_bytes(text):
    m = re.match(r"([0-9.]+) ?([A-Za-z]*)", text)
    if not m:
        return None
    unit = m.group(2)
    if unit.endswith("bit"):
        return None
    return float(m.group(1)) * UNITS.get(unit, 1)


def window(a):
    pid = a.pid
    t0 = time.monotonic()
    c0, _ = cpu_ticks(pid)
    if c0 is None:
        out = {"label": a.label, "error": "process %d gone before the window" % pid}
        out.update(json.loads(a.extra))
        with open(a.out, "w") as f:
            json.dump(out, f)
        return 0
    th0 = threads(pid)
    th1 = th0
    refreshes = {}
    rates = []
    sockets_seen = []
    big_child = 0
    screen = ""
    exited_at = None
    c1 = c0
    hwm = status_kb(pid, "VmHWM")
    rss = status_kb(pid, "VmRSS")
    n = 0
    while True:
        n += 1
        nxt = t0 + n
        now = time.monotonic()
        if nxt > t0 + a.seconds:
            nxt = t0 + a.seconds
        if nxt > now:
            time.sleep(nxt - now)
        c, big = cpu_ticks(pid)
        if c is None:
            exited_at = time.monotonic() - t0
            break
        c1 = c
        th1 = threads(pid) or th1
        big_child = max(big_child, big)
        hwm = status_kb(pid, "VmHWM") or hwm
        rss = status_kb(pid, "VmRSS") or rss
        s = capture(a.tmux_sock, a.target)
        if s:
            screen = s
        for m in HEADER.finditer(s):
            refreshes.setdefault(int(m.group(1)), int(m.group(2)))
        m = SOCKETS.search(s)
        if m:
            sockets_seen.append(int(m.group(1)))
        m = RATES.search(s)
        if m:
            rates.append((to_bytes(m.group(1)), to_bytes(m.group(2))))
        if time.monotonic() - t0 >= a.seconds - 1e-3:
            break
    wall = (exited_at if exited_at is not None else time.monotonic() - t0)
    if a.screen:
        with open(a.screen, "w") as f:
            f.write(screen)
    out = {
        "label": a.label,
        "seconds": wall,
        "cpu_s": (c1 - c0) / HZ,
        "cpu_frac": (c1 - c0) / HZ / wall if wall > 0 else None,
        "hwm_kb": hwm,
        "rss_kb": rss,
        "child_rss_kb": big_child or None,
        "threads": {k: (v - th0.get(k, 0)) / HZ for k, v in th1.items()},
        "refreshes": sorted(refreshes.items()),
        "sockets_seen": sockets_seen,
        "rates": rates,
        "exited_at": exited_at,
        "screen_tail": [ln.rstrip() for ln in screen.splitlines() if ln.strip()][-6:],
    }
    out.update(json.loads(a.extra))
    with open(a.out, "w") as f:
        json.dump(out, f)
    return 0


def pct(vals, q):
    v = sorted(vals)
    k = max(1, -(-len(v) * q // 100))
    return v[int(k) - 1]


def median(vals):
    v = sorted(vals)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def fmt_rate(b):
    if b is None:
        return "?"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= div:
            return "%.1f %s/s" % (b / div, unit)
    return "%.0f B/s" % b


def report(a):
    rows = [json.loads(ln) for ln in open(a.results) if ln.strip()]
    ss_ms = None
    for r in rows:
        if r.get("kind") == "ss" and r.get("median") is not None:
            ss_ms = r["median"] * 1000
    head = "%-44s %8s %11s %10s %10s %10s %10s  %s" % (
        "tool (each alone in a 200x50 tmux pane)", "window", "CPU % core", "peak RSS",
        "refr. med", "refr. p95", "refr. max", "notes")
    print(head)
    verdicts = []
    rows = [r for r in rows if not str(r.get("kind", "")).startswith("perf")]
    for r in rows:
        kind = r.get("kind")
        label = r["label"]
        if kind == "ss":
            if r.get("error"):
                print("%-44s %s" % (label, r["error"]))
                continue
            rss = r.get("rss_kb")
            print("%-44s %8s %11s %10s %10s %10s %10s  %s" % (
                label, "%d runs" % r["runs"], "-", "%.0f MB" % (rss / 1024) if rss else "?",
                "%.0f ms" % (r["median"] * 1000), "%.0f ms" % (r["p95"] * 1000),
                "%.0f ms" % (r["max"] * 1000), "run directly (hyperfine -N, output to /dev/null)"))
            continue
        if r.get("error"):
            print("%-44s %s" % (label, r["error"]))
            continue
        notes = []
        cpu = r["cpu_frac"] * 100 if r.get("cpu_frac") is not None else None
        rss = r.get("hwm_kb")
        rss_s = "%.0f MB" % (rss / 1024) if rss else "?"
        if r.get("child_rss_kb"):
            rss_s += "+%.0f" % (r["child_rss_kb"] / 1024)
            notes.append("RSS: watch + its largest ss seen")
        ms = [m for _, m in r.get("refreshes", [])]
        if r.get("exited_at") is not None:
            notes.append("EXITED after %.1f s: %s" % (r["exited_at"], " | ".join(r.get("screen_tail", []))[:300]))
        if kind == "portolan":
            if ms:
                nums = [n for n, _ in r["refreshes"]]
                notes.append("%d refreshes seen (#%d-#%d)" % (len(ms), nums[0], nums[-1]))
                span = nums[-1] - nums[0] + 1
                if span > 0 and r.get("cpu_s") is not None:
                    notes.append("CPU per refresh %.0f ms (all threads: sampler, view, drawing)" % (1000 * r["cpu_s"] / span))
            th = {k: v for k, v in r.get("threads", {}).items() if v > 0}
            if th and sum(th.values()) > 0:
                notes.append("by thread: " + ", ".join("%s %.0f%%" % (k, 100 * v / sum(th.values()))
                                                   for k, v in sorted(th.items(), key=lambda kv: -kv[1])))
            if r.get("sockets_seen"):
                notes.append("%d sockets on screen" % median(r["sockets_seen"]))
            rr = [x for x in r.get("rates", []) if x[0] is not None and x[1] is not None]
            if rr and r.get("traffic"):
                notes.append("header rates median ↓ %s ↑ %s" % (
                    fmt_rate(median([x[0] for x in rr])), fmt_rate(median([x[1] for x in rr]))))
            if r.get("startup_s") is not None:
                notes.append("first screen after %.2f s" % r["startup_s"])
        elif kind == "watch":
            if ss_ms is not None:
                notes.append("refresh = one ss -tanp run, see its row")
        elif kind == "bandwhich":
            notes.append("no refresh time of its own to read")
        if r.get("note"):
            notes.append(r["note"])
        print("%-44s %8s %11s %10s %10s %10s %10s  %s" % (
            label, "%.0f s" % r["seconds"], "%.1f" % cpu if cpu is not None else "?", rss_s,
            "%d ms" % median(ms) if ms else "-", "%d ms" % pct(ms, 95) if ms else "-",
            "%d ms" % max(ms) if ms else "-", "; ".join(notes)))
        if kind == "portolan" and r.get("target"):
            if cpu is not None:
                verdicts.append("%s: CPU %.1f%% of a core (target < %g%%: %s)" % (
                    label, cpu, a.target_cpu, "OK" if cpu < a.target_cpu else "MISSED"))
            if ms:
                verdicts.append("%s: refresh median %d ms, p95 %d ms, max %d ms (target < %d ms: %s)" % (
                    label, median(ms), pct(ms, 95), max(ms), a.target_ms,
                    "OK" if pct(ms, 95) < a.target_ms else
                    ("MISSED at p95 (median OK)" if median(ms) < a.target_ms else "MISSED")))
    portolan = [r for r in rows if r.get("kind") == "portolan" and r.get("target") and r.get("cpu_frac")]
    others = [r for r in rows if r.get("kind") in ("watch", "bandwhich") and r.get("cpu_frac")
              and r.get("exited_at") is None]
    if portolan and others:
        p = portolan[0]
        print()
        for o in others:
            if p["cpu_frac"] > 0:
                print("CPU: %s uses %.1fx the CPU of %s" % (o["label"], o["cpu_frac"] / p["cpu_frac"], p["label"]))
    if ss_ms is not None:
        for r in rows:
            if r.get("kind") == "portolan" and r.get("target") and r.get("refreshes"):
                ms = [m for _, m in r["refreshes"]]
                if median(ms) > 0:
                    print("refresh: ss -tanp takes %.1fx the time of %s's median refresh" % (ss_ms / median(ms), r["label"]))
                break
    if verdicts:
        print()
        for v in verdicts:
            print(v)
    return 0


# What a refresh of `portolan top` spends its time on, by the operation that the stack (perf
# script, DWARF call graphs) passes through, outermost match first. The patterns are names
# of portolan's functions and of the inlined std HashMap operations on its maps' types.
BREAKDOWN = [
    ("the view thread: Model::new (per-port load, processes)", "top::view::Model::new"),
    ("the view thread: view::order (filter, sort)", "top::view::order"),
    ("the view thread: draw", "top::draw"),
    ("sampler: owner walk of /proc/*/fd (Inventory::resolve_sockets)", "resolve_sockets"),
    ("sampler: counters map, get and insert (key -> bytes, time)", "(u64, u64, std::time::Instant)"),
    ("sampler: `previous` rebuilt: every Row cloned into a HashMap", "sample::{closure_env#8}"),
    ("sampler: previous.contains_key / previous entries", "portolan::top::sample::Row, std::hash::random::RandomState"),
    ("sampler: marks map", "portolan::top::sample::Mark"),
    ("sampler: `seen` HashSet, insert and contains", ", (), std::hash::random::RandomState"),
    ("sampler: owners map by inode, Arc<Holder> clones", "portolan::top::sample::Holder"),
    ("sampler: sockets not yet named, cloned", "sample::{closure_env#2}"),
    ("sampler: owners.retain (is /proc/PID there)", "retain"),
]


def breakdown(a):
    samples = []
    cur = None
    for line in open(a.script, errors="replace"):
        if not line.strip():
            if cur is not None:
                samples.append(cur)
            cur = None
        elif not line[0].isspace():
            cur = [line.strip()]
        elif cur is not None:
            parts = line.strip().split(None, 1)
            cur.append(parts[1] if len(parts) > 1 else "")
    if cur is not None:
        samples.append(cur)
    counts = {}
    for smp in samples:
        stack = "\n".join(smp[1:])
        if "sockets_with_counters" in stack:
            if "netlink_recvmsg" in stack or "__sys_recvfrom" in stack:
                label = "sampler: sock_diag dump, in the kernel (tcp_diag_dump, inet_sk_diag_fill, tcp_get_info)"
            else:
                label = "sampler: sock_diag dump, parsed in user space (netlink_packet_sock_diag, copies)"
        else:
            label = next((name for name, pat in BREAKDOWN if pat in stack), None)
            if label is None:
                if "Sampler::sample" in stack:
                    label = "sampler: the rest of Sampler::sample (rows built, allocation, freeing)"
                elif "top::run" in stack:
                    label = "the view thread: the rest (event loop, old model dropped)"
                else:
                    label = "elsewhere (start-up, unwinding cut short)"
        counts[label] = counts.get(label, 0) + 1
    total = len(samples)
    if not total:
        print("  no samples")
        return 0
    for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        if 100 * n / total >= 0.5:
            print("  %5.1f%%  %s" % (100 * n / total, label))
    print("  (%d samples at 199 Hz: %.1f s of CPU)" % (total, total / 199))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("window")
    w.add_argument("--tmux-sock", required=True)
    w.add_argument("--target", required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--label", default="")
    w.add_argument("--screen")
    w.add_argument("--extra", default="{}", help="a JSON object merged into the output (kind, target, notes)")
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--target-cpu", type=float, default=10.0)
    r.add_argument("--target-ms", type=int, default=500)
    b = sub.add_parser("breakdown")
    b.add_argument("--script", required=True, help="perf script -F tid,comm,ip,sym output")
    a = ap.parse_args()
    return {"window": window, "report": report, "breakdown": breakdown}[a.cmd](a)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
