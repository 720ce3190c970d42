#!/usr/bin/env python3
"""Helpers for bench/forward.sh, run inside its network namespaces (standard library only).

  forward_measure.py serve --host ADDR --port P [--max-seconds S]
      echo server on one epoll loop: echoes whatever arrives, holds idle connections for as
      long as their clients do (any number, up to RLIMIT_NOFILE). Prints READY when listening.
  forward_measure.py pingpong --host ADDR --port P [--count N] [--warmup W] [--size B]
      one persistent connection (TCP_NODELAY), N request/response round trips of B bytes,
      each timed; prints "p50_us p99_us mean_us n".
  forward_measure.py idle --host ADDR --port P --count N [--batch K] [--max-seconds S]
                           [--relay-port Q --relay-pid PID]
      opens N connections (K at a time, each batch waited for; with --relay-port, also until
      the server, whose namespace PID is in, has as many ESTABLISHED on its port Q: paced by
      what the forwarder relays), sends nothing, prints
      "CONNECTED ok failed seconds relayed [stalled]", then holds them until SIGTERM or
      --hold-seconds more. SO_LINGER 0 on every socket: leaving resets them, nothing stays in
      TIME_WAIT. "stalled": a batch was not relayed within --batch-timeout, no more opened.
  forward_measure.py established --port P [--pid PID]
      counts ESTABLISHED TCP sockets whose local port is P in this namespace (or PID's).
  forward_measure.py procstat PID...
      "procs rss_kb pss_kb fds maxfds": summed over the processes given (gone ones skipped),
      and the most fds one of them has (what RLIMIT_NOFILE bounds).
  forward_measure.py report --results FILE --rows NAME,... [--idle N] [--seconds S] ...
      the final table and the target checks, from the "row metric value" lines in FILE.

Every loop is bounded in count and time; long-lived modes die with their parent
(PR_SET_PDEATHSIG) and at --max-seconds.
"""
import argparse
import ctypes
import os
import resource
import select
import signal
import socket
import statistics
import struct
import sys
import time

LINGER0 = struct.pack("ii", 1, 0)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:
        pass


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- serve ---------------------------------------------------------------------------------
def serve(a):
    die_with_parent()
    raise_nofile()
    deadline = time.monotonic() + a.max_seconds
    lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lis.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lis.bind((a.host, a.port))
    lis.listen(4096)
    lis.setblocking(False)
    ep = select.epoll()
    ep.register(lis.fileno(), select.EPOLLIN)
    conns = {}
    print("READY", flush=True)
    while time.monotonic() < deadline:
        for fd, ev in ep.poll(1.0, 1024):
            if fd == lis.fileno():
                for _ in range(256):  # bounded accept burst
                    try:
                        c, _ = lis.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # EMFILE and friends: leave it in the queue
                        break
                    c.setblocking(False)
                    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN)
                continue
            c = conns.get(fd)
            if c is None:
                continue
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                try:
                    c.sendall(data)  # small request/response only: never blocks for long
                    continue
                except OSError:
                    pass
            ep.unregister(fd)
            del conns[fd]
            c.close()


# --- pingpong ------------------------------------------------------------------------------
def pingpong(a):
    s = socket.create_connection((a.host, a.port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = b"p" * a.size
    buf = bytearray(a.size)
    view = memoryview(buf)
    times = []
    clock = time.perf_counter_ns
    deadline = time.monotonic() + a.max_seconds
    total = a.warmup + a.count
    for i in range(total):
        t0 = clock()
        s.sendall(msg)
        got = 0
        while got < a.size:
            n = s.recv_into(view[got:])
            if n == 0:
                raise SystemExit("pingpong: connection closed after %d round trips" % i)
            got += n
        t1 = clock()
        if i >= a.warmup:
            times.append(t1 - t0)
        if (i & 1023) == 0 and time.monotonic() > deadline:
            break
    s.close()
    if not times:
        raise SystemExit("pingpong: no round trip measured")
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))] / 1000.0
    print("%.1f %.1f %.1f %d" % (q(0.50), q(0.99), statistics.fmean(times) / 1000.0, len(times)))


# --- idle ----------------------------------------------------------------------------------
def idle(a):
    die_with_parent()
    limit = raise_nofile()
    want = a.count
    if want + 32 > limit:
        sys.stderr.write("idle: RLIMIT_NOFILE %d, opening %d instead of %d\n" % (limit, limit - 32, want))
        want = limit - 32
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    t0 = time.monotonic()
    deadline = t0 + a.max_seconds
    socks, failed, stalled = [], 0, False
    while len(socks) + failed < want and time.monotonic() < deadline:
        batch = []
        for _ in range(min(a.batch, want - len(socks) - failed)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            try:
                s.connect((a.host, a.port))
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                failed += 1
                continue
            batch.append(s)
        pending = {s.fileno(): s for s in batch}
        ep = select.epoll()
        for fd in pending:
            ep.register(fd, select.EPOLLOUT)
        bdeadline = min(deadline, time.monotonic() + a.batch_timeout)
        while pending and time.monotonic() < bdeadline:
            for fd, _ in ep.poll(0.2):
                s = pending.pop(fd, None)
                if s is None:
                    continue
                ep.unregister(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    socks.append(s)
                else:
                    failed += 1
                    s.close()
        ep.close()
        for s in pending.values():
            failed += 1
            s.close()
        # Paced by the far end: the next batch only once the server has this one (relayed by
        # the forwarder), so a slow accept loop is not buried under a full accept queue
        # (whose overflow leaves connections that the client thinks are open and nobody holds).
        if a.relay_port:
            bdeadline = min(deadline, time.monotonic() + a.batch_timeout)
            while count_established(a.relay_port, a.relay_pid) < len(socks) and time.monotonic() < bdeadline:
                time.sleep(0.02)
            if count_established(a.relay_port, a.relay_pid) < len(socks):
                stalled = time.monotonic() < deadline
                break
    relayed = count_established(a.relay_port, a.relay_pid) if a.relay_port else -1
    print("CONNECTED %d %d %.1f %d%s" % (len(socks), failed, time.monotonic() - t0, relayed,
                                        " stalled" if stalled else ""), flush=True)
    # Hold until SIGTERM (the script's) or the deadline.
    hold_end = time.monotonic() + a.hold_seconds
    while not stop and time.monotonic() < hold_end:
        time.sleep(0.2)
    for s in socks:
        s.close()


# --- established ---------------------------------------------------------------------------
def count_established(port, pid=None):
    """ESTABLISHED TCP sockets with local port `port`, in this namespace or in PID's."""
    n = 0
    base = "/proc/%s/net" % pid if pid else "/proc/net"
    for name in ("tcp", "tcp6"):
        try:
            with open("%s/%s" % (base, name)) as f:
                next(f, None)
                for line in f:
                    parts = line.split(None, 4)
                    if len(parts) < 4 or parts[3] != "01":
                        continue
                    if int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def established(a):
    print(count_established(a.port, a.pid))


# --- procstat ------------------------------------------------------------------------------
def procstat(a):
    procs = rss = pss = fds = maxfds = 0
    for pid in a.pids:
        try:
            with open("/proc/%s/status" % pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
            try:
                with open("/proc/%s/smaps_rollup" % pid) as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
            except OSError:
                pass
            n = len(os.listdir("/proc/%s/fd" % pid))
            fds += n
            maxfds = max(maxfds, n)
            procs += 1
        except (OSError, ValueError):
            continue
    print(procs, rss, pss, fds, maxfds)


# --- report --------------------------------------------------------------------------------
def report(a):
    vals, text = {}, {}
    with open(a.results) as f:
        for line in f:
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) < 3:
                continue
            row, metric, value = parts
            try:
                vals.setdefault((row, metric), []).append(float(value))
            except ValueError:
                text[(row, metric)] = value
    med = lambda row, m: statistics.median(vals[(row, m)]) if (row, m) in vals else None
    rows = [r for r in a.rows.split(",") if r]
    labels = dict(kv.split("=", 1) for kv in a.labels.split(";") if "=" in kv)
    direct = "direct"

    def ratio(x, y):
        return None if x is None or not y else x / y

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    def added(row, m):
        v, d = med(row, m), med(direct, m)
        if row == direct or v is None or d is None:
            return v
        return v - d

    def scaled(row):
        """(MB at a.idle connections, measured or scaled, connections held, fds per connection)."""
        mem, n, base = med(row, "mem_kb"), med(row, "idle_conns"), med(row, "mem0_kb") or 0
        if mem is None or not n:
            return None, n, None
        fds, fds0 = med(row, "fds"), med(row, "fds0") or 0
        fpc = None if fds is None else (fds - fds0) / n
        if n >= a.idle:
            return mem / 1024, n, fpc
        return (base + (mem - base) * a.idle / n) / 1024, n, fpc

    def mem_at(row):
        mb, n, fpc = scaled(row)
        if mb is None:
            return "-", fpc
        cell = "%.1f" % mb
        if n < a.idle:
            cell = "~%s (%d)" % (cell, n)
        return cell + text.get((row, "mem_note"), ""), fpc

    idle_label = "RSS@%s MB" % "{:,}".format(a.idle)
    head = ("forwarder", "1-stream Gb/s", "ratio", "8-stream Gb/s", "ratio", "conns/s",
            "lat p50 µs", "lat p99 µs", idle_label, "fds/conn")
    wid = (24, 13, 5, 13, 5, 8, 10, 10, 18, 8)
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, wid)))
    print()
    print("forward benchmark: iperf3 %d s runs, medians of %d rounds (latency: of %d runs), latency added "
          "to direct's (direct row: its own round trip)" % (a.seconds, a.reps, 2 * a.reps))
    print(line(head))
    for row in rows:
        name = labels.get(row, row)
        status = text.get((row, "status"))
        if status:
            print(line((name, status)))
            continue
        t1, t8 = med(row, "tp1"), med(row, "tp8")
        mem_cell, fpc = mem_at(row)
        if text.get((row, "idle_status")):
            mem_cell = text[(row, "idle_status")]
        print(line((name, fmt(t1, ".2f"), fmt(ratio(t1, med(direct, "tp1")), ".2f"),
                    fmt(t8, ".2f"), fmt(ratio(t8, med(direct, "tp8")), ".2f"),
                    fmt(med(row, "cps"), ".0f"), fmt(added(row, "p50"), ".1f"),
                    fmt(added(row, "p99"), ".1f"), mem_cell, fmt(fpc, ".1f"))))
    # Spread of the noisy figures, so a reader sees how far to trust the medians.
    print()
    print("spread (min..max over rounds): ")
    for row in rows:
        if text.get((row, "status")):
            continue
        cells = []
        for m, spec, unit in (("tp1", ".2f", "Gb/s"), ("tp8", ".2f", "Gb/s"), ("cps", ".0f", "conn/s"),
                              ("p99", ".0f", "µs p99")):
            v = vals.get((row, m))
            if v:
                cells.append("%s..%s %s" % (format(min(v), spec), format(max(v), spec), unit))
        cpr = vals.get((row, "conn_per_req"))
        if cpr:
            cells.append("server accepted %.2f..%.2f connections per request" % (min(cpr), max(cpr)))
        errs = vals.get((row, "cps_errors"))
        if errs and max(errs) > 0:
            cells.append("wrk socket errors up to %d" % max(errs))
        extra = text.get((row, "idle_detail"))
        if extra:
            cells.append(extra)
        print("  %-24s %s" % (labels.get(row, row), "; ".join(cells)))

    # Targets, for portolan (and its --no-splice row, as information).
    print()
    for p in [r for r in rows if r.startswith("portolan")]:
        name = labels.get(p, p)
        status = text.get((p, "status"))
        if status:
            print("%s: %s: no target checked" % (name, status))
            continue
        checks = []

        def check(label, ok, detail):
            if ok is None:
                checks.append("n/a   %s (%s)" % (label, detail))
            else:
                checks.append("%s  %s (%s)" % ("PASS" if ok else "MISS", label, detail))

        for m, what in (("tp1", "1-stream"), ("tp8", "8-stream")):
            v, d, r = med(p, m), med(direct, m), med("realm", m)
            rd = ratio(v, d)
            check("%s throughput >= 0.9x direct" % what, None if rd is None else rd >= 0.9,
                  "%s x direct" % fmt(rd, ".2f"))
            if r is None:
                check("%s throughput >= realm" % what, None, "realm not measured")
            else:
                check("%s throughput >= realm" % what, None if v is None else v >= r,
                      "%s vs %.2f Gb/s" % (fmt(v, ".2f"), r))
        c, s = med(p, "cps"), med("socat", "cps")
        if s is None:
            check("conns/s >= 3x socat", None, "socat not measured")
        else:
            rs = ratio(c, s)
            check("conns/s >= 3x socat", None if rs is None else rs >= 3, "%s x socat" % fmt(rs, ".2f"))
        p99 = added(p, "p99")
        check("p99 added latency < 100 µs", None if p99 is None or med(direct, "p99") is None else p99 < 100,
              "%s µs" % fmt(p99, ".1f"))
        mb, n, _ = scaled(p)
        label = "RSS at {:,} idle connections < 200 MB".format(a.idle)
        if mb is None:
            check(label, None, text.get((p, "idle_status"), "not measured"))
        elif n >= a.idle:
            check(label, mb < 200, "%.1f MB" % mb)
        else:
            check(label, mb < 200, "%.1f MB at %d connections, %.1f MB scaled" % (med(p, "mem_kb") / 1024, n, mb))
        print("targets, %s:" % name)
        for c_ in checks:
            print("  " + c_)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-seconds", type=float, default=1800)
    p = sub.add_parser("pingpong")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=30)
    p = sub.add_parser("idle")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--batch-timeout", type=float, default=10)
    p.add_argument("--max-seconds", type=float, default=120)
    p.add_argument("--hold-seconds", type=float, default=120)
    p.add_argument("--relay-port", type=int, default=0)
    p.add_argument("--relay-pid", default=None)
    p = sub.add_parser("established")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pid", default=None)
    p = sub.add_parser("procstat")
    p.add_argument("pids", nargs="*")
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--rows", required=True)
    p.add_argument("--labels", default="")
    p.add_argument("--idle", type=int, default=0)
    p.add_argument("--seconds", type=int, default=0)
    p.add_argument("--reps", type=int, default=0)
    a = ap.parse_args()
    {"serve": serve, "pingpong": pingpong, "idle": idle, "established": established,
     "procstat": procstat, "report": report}[a.mode](a)


if __name__ == "__main__":
    main()
