#!/usr/bin/env python3
"""The parts of bench/sentry.sh that are easier in Python: the guarded host's services, the
ordinary traffic, the syslog and kernel-log plumbing for scanlogd and psad, reading a
round's capture and the three detectors' output, and the final table.

  sentry_measure.py syslog --path P --out F [--seconds N]
      a datagram socket at P (the /dev/log of a private mount namespace) that writes every
      message it receives to F as "EPOCH<TAB>MESSAGE", EPOCH its arrival time (s, us).
  sentry_measure.py kmsg --prefix X --out F [--seconds N]
      reads /dev/kmsg from its end and appends each message that contains X to F in the
      line format a syslog daemon writes ("Mmm dd HH:MM:SS g kernel: [secs.usecs] MSG"):
      what psad reads (it stands in for rsyslog). Prints "lost N" at exit (records the
      kernel overwrote before they were read).
  sentry_measure.py serve-g [--seconds N]
      the guarded host's services, on every address: TCP 22 (a banner, then echo), 80 and
      443 (an HTTP answer to each request), UDP 53 (an answer to each query).
  sentry_measure.py serve-s --addr A [--seconds N]
      the servers the guarded host's own traffic goes to: UDP 53 and 123 (an answer to each
      datagram, one in 20 late by 1.2 s, after the asker gave up), TCP 8080 (20 kB a
      connection) and TCP 8081 (a long connection with a line every few seconds).
  sentry_measure.py clients --sources FILE --server A --seconds N [--seed S]
      ordinary clients, one behaviour per source address (see CLIENTS below).
  sentry_measure.py own --server A --seconds N [--seed S]
      the guarded host's own outbound traffic: DNS and NTP queries, downloads, a long
      connection; the answers come back to its ephemeral ports.
  sentry_measure.py check --events E --syslog S --src A [--need sentry,scanlogd,psad]
      exit 0 when every detector named has reported a scan from A (polled by the script to
      stop a long scan early).
  sentry_measure.py analyze --scanner NAME --round I --src A --pcap P --events E
                            --syslog S --since T [--scanner-secs D] [--tcpdump-dropped N]
      one round's result as a JSON line on stdout (see analyze()).
  sentry_measure.py alarms --events E --syslog S --since T --sources FILE
      the false-alarm pass: what each detector reported, as a JSON line.
  sentry_measure.py report --results R --alarms A --flood F [--fast-probes 10 ...]
      the table and the targets.

Every loop is bounded in time and count.
"""
import argparse
import json
import os
import random
import re
import select
import socket
import statistics
import struct
import sys
import threading
import time

HARD_CAP = 4 * 3600.0  # no mode runs longer than this, whatever it is told


# --------------------------------------------------------------------------- plumbing


def cmd_syslog(a):
    try:
        os.unlink(a.path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(a.path)
    os.chmod(a.path, 0o666)
    s.settimeout(0.5)
    end = time.time() + min(a.seconds, HARD_CAP)
    with open(a.out, "a", buffering=1) as f:
        while time.time() < end:
            try:
                d = s.recv(65536)
            except socket.timeout:
                continue
            msg = d.decode(errors="replace").rstrip("\n").replace("\n", " ")
            f.write("%.6f\t%s\n" % (time.time(), msg))


def cmd_kmsg(a):
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    end = time.time() + min(a.seconds, HARD_CAP)
    lost = 0
    stop = [False]

    def term(*_):
        stop[0] = True

    import signal

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    with open(a.out, "a", buffering=1 << 16) as f:
        while not stop[0] and time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.2)
            if not r:
                f.flush()
                continue
            for _ in range(10000):
                try:
                    rec = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except BrokenPipeError:  # overwritten before we read it
                    lost += 1
                    continue
                line = rec.decode(errors="replace")
                head, _, msg = line.partition(";")
                msg = msg.split("\n", 1)[0]
                if a.prefix not in msg:
                    continue
                try:
                    us = int(head.split(",")[2])
                except (IndexError, ValueError):
                    us = 0
                now = time.time()
                f.write(
                    "%s g kernel: [%5d.%06d] %s\n"
                    % (time.strftime("%b %e %H:%M:%S", time.localtime(now)), us // 1000000, us % 1000000, msg)
                )
            f.flush()
    print("lost %d" % lost, flush=True)


def cmd_stamp(a):
    """The sentry's --events go to a FIFO; this copies each line to OUT and, with its
    arrival time, to OUT.ts: when the alarm was written, to the microsecond (the event's
    own detected_ms is whole milliseconds)."""
    import signal

    stop = [False]

    def term(*_):
        stop[0] = True

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, term)
    # Read-write: the FIFO never reads as closed while the sentry is not there yet.
    fd = os.open(a.fifo, os.O_RDWR | os.O_NONBLOCK)
    end = time.time() + min(a.seconds, HARD_CAP)
    buf = b""
    with open(a.out, "a", buffering=1) as plain, open(a.out + ".ts", "a", buffering=1) as stamped:
        while time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.2)
            got = False
            for _ in range(1000):
                try:
                    d = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not d:
                    break
                got = True
                now = time.time()
                buf += d
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    s = line.decode(errors="replace")
                    plain.write(s + "\n")
                    stamped.write("%.6f\t%s\n" % (now, s))
            if stop[0] and not got:
                break


# --------------------------------------------------------------------------- services


def _serve_tcp(port, kind, end, sem):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(4096)
    ls.settimeout(0.5)

    def handle(c):
        try:
            c.settimeout(3)
            if kind == "ssh":
                c.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
                for _ in range(1000):
                    d = c.recv(4096)
                    if not d:
                        break
                    c.sendall(d)
            else:
                for _ in range(100):
                    d = c.recv(4096)
                    if not d:
                        break
                    body = b"x" * 1200
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        except OSError:
            pass
        finally:
            c.close()
            sem.release()

    while time.time() < end:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        except OSError:
            time.sleep(0.01)
            continue
        if not sem.acquire(blocking=False):
            c.close()
            continue
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def _serve_udp(addr, port, end, late_every=0):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, port))
    u.settimeout(0.5)
    late = []
    n = 0
    while time.time() < end:
        try:
            d, peer = u.recvfrom(2048)
        except socket.timeout:
            d = None
        now = time.time()
        while late and late[0][0] <= now:
            _, dd, pp = late.pop(0)
            u.sendto(dd, pp)
        if d is None:
            continue
        n += 1
        ans = d[:2] + b"\x81\x80" + b"answer" * 8
        if late_every and n % late_every == 0 and len(late) < 1000:
            late.append((now + 1.2, ans, peer))
        else:
            u.sendto(ans, peer)


def cmd_serve_g(a):
    end = time.time() + min(a.seconds, HARD_CAP)
    sem = threading.BoundedSemaphore(2000)
    ts = [
        threading.Thread(target=_serve_tcp, args=(22, "ssh", end, sem), daemon=True),
        threading.Thread(target=_serve_tcp, args=(80, "http", end, sem), daemon=True),
        threading.Thread(target=_serve_tcp, args=(443, "http", end, sem), daemon=True),
        threading.Thread(target=_serve_udp, args=("0.0.0.0", 53, end), daemon=True),
    ]
    for t in ts:
        t.start()
    print("READY", flush=True)
    while time.time() < end and all(t.is_alive() for t in ts):
        time.sleep(0.5)


def cmd_serve_s(a):
    end = time.time() + min(a.seconds, HARD_CAP)

    def download():
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.addr, 8080))
        ls.listen(512)
        ls.settimeout(0.5)
        while time.time() < end:
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            try:
                c.settimeout(2)
                c.sendall(b"y" * 20000)
            except OSError:
                pass
            c.close()

    def longconn():
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.addr, 8081))
        ls.listen(16)
        ls.settimeout(0.5)

        def feed(c):
            try:
                while time.time() < end:
                    c.sendall(b"tick\n")
                    time.sleep(3)
            except OSError:
                pass
            c.close()

        while time.time() < end:
            try:
                c, _ = ls.accept()
            except socket.timeout:
                continue
            threading.Thread(target=feed, args=(c,), daemon=True).start()

    ts = [
        threading.Thread(target=_serve_udp, args=(a.addr, 53, end, 20), daemon=True),
        threading.Thread(target=_serve_udp, args=(a.addr, 123, end, 20), daemon=True),
        threading.Thread(target=download, daemon=True),
        threading.Thread(target=longconn, daemon=True),
    ]
    for t in ts:
        t.start()
    print("READY", flush=True)
    while time.time() < end and all(t.is_alive() for t in ts):
        time.sleep(0.5)


# --------------------------------------------------------------------------- ordinary traffic

# One behaviour per client address, in this order, again and again:
#   web       a request to 443 (or 80) every 0.3-3 s, sometimes 2-3 on one connection
#   browser   a page load every 5-20 s: 6 connections to 443 and 2 to 80 at once
#   ssh       an SSH session to 22 every 10-60 s, held 1-30 s, typing now and then
#   monitor   every 10 s a check of 22, 80 and 443; every third time also 8443, which is
#             closed (a stale check)
#   dns       a query to G's UDP 53 every 1-5 s, from a new port each time
#   fallback  an app that tries 8443 (closed) and then 443, every 20-60 s
#   mail      a mail client that tries 993 and 995 (both closed), then gives up, every
#             60-180 s, and otherwise uses 443 every few seconds
#   api       a busy API client: a new connection to 443 five times a second
CLIENTS = ["web", "browser", "ssh", "monitor", "dns", "web", "fallback", "web", "mail", "browser", "api"]


def _tcp(src, server, port, payload=None, hold=0.0, rounds=1, timeout=2.0):
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((src, 0))
        s.connect((server, port))
        for _ in range(rounds):
            if payload:
                s.sendall(payload)
                s.recv(65536)
        if hold:
            time.sleep(hold)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _client(kind, src, server, end, rng, counts, lock):
    get = b"GET / HTTP/1.1\r\nHost: g\r\n\r\n"

    def count(key, n=1):
        with lock:
            counts[key] = counts.get(key, 0) + n

    for _ in range(1_000_000):
        now = time.time()
        if now >= end:
            return
        if kind == "web":
            port = 443 if rng.random() < 0.7 else 80
            _tcp(src, server, port, get, rounds=rng.choice([1, 1, 2, 3]))
            count("tcp")
            pause = rng.uniform(0.3, 3)
        elif kind == "browser":
            conns = []
            for port in (443,) * 6 + (80,) * 2:
                s = socket.socket()
                s.settimeout(2)
                s.setblocking(False)
                try:
                    s.bind((src, 0))
                    s.connect_ex((server, port))
                except OSError:
                    pass
                conns.append(s)
            time.sleep(rng.uniform(0.05, 1.0))
            for s in conns:
                s.close()
            count("tcp", len(conns))
            pause = rng.uniform(5, 20)
        elif kind == "ssh":
            s = socket.socket()
            s.settimeout(3)
            try:
                s.bind((src, 0))
                s.connect((server, 22))
                s.recv(256)
                stay = time.time() + min(rng.uniform(1, 30), max(0.0, end - time.time()))
                for _ in range(1000):
                    if time.time() >= stay:
                        break
                    s.sendall(b"ls -l\n")
                    s.recv(256)
                    time.sleep(rng.uniform(0.2, 2))
            except OSError:
                pass
            finally:
                s.close()
            count("tcp")
            pause = rng.uniform(10, 60)
        elif kind == "monitor":
            for port in (22, 80, 443):
                _tcp(src, server, port, get if port != 22 else None)
            count("tcp", 3)
            if rng.random() < 1 / 3:
                _tcp(src, server, 8443)
                count("closed")
            pause = 10
        elif kind == "dns":
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.settimeout(1)
            try:
                u.bind((src, 0))
                u.sendto(b"\x12\x34\x01\x00query", (server, 53))
                u.recvfrom(2048)
            except OSError:
                pass
            finally:
                u.close()
            count("udp")
            pause = rng.uniform(1, 5)
        elif kind == "fallback":
            _tcp(src, server, 8443)
            _tcp(src, server, 443, get)
            count("closed")
            count("tcp")
            pause = rng.uniform(20, 60)
        elif kind == "api":
            _tcp(src, server, 443, get)
            count("tcp")
            pause = 0.2
        else:  # mail
            if rng.random() < 0.05:
                _tcp(src, server, 993)
                _tcp(src, server, 995)
                count("closed", 2)
            _tcp(src, server, 443, get)
            count("tcp")
            pause = rng.uniform(2, 6)
        time.sleep(max(0.0, min(pause, end - time.time())))


def cmd_clients(a):
    srcs = [l.strip() for l in open(a.sources) if l.strip()]
    end = time.time() + min(a.seconds, HARD_CAP)
    counts, lock = {}, threading.Lock()
    ts = []
    for i, src in enumerate(srcs):
        rng = random.Random(a.seed * 1000 + i)
        kind = CLIENTS[i % len(CLIENTS)]
        t = threading.Thread(target=_client, args=(kind, src, a.server, end, rng, counts, lock), daemon=True)
        ts.append(t)
        # Not all at once: clients come in over the first seconds.
        time.sleep(0.05)
        t.start()
    for t in ts:
        t.join(timeout=max(0.0, end - time.time()) + 60)
    print(json.dumps(counts), flush=True)


def cmd_own(a):
    end = time.time() + min(a.seconds, HARD_CAP)
    rng = random.Random(a.seed)
    counts = {"dns": 0, "ntp": 0, "download": 0, "long": 0}
    longc = None
    next_ntp = time.time()
    next_dl = time.time()
    for _ in range(10_000_000):
        now = time.time()
        if now >= end:
            break
        if longc is None:
            try:
                longc = socket.create_connection((a.server, 8081), timeout=2)
                longc.setblocking(False)
                counts["long"] += 1
            except OSError:
                longc = None
        else:
            try:
                if longc.recv(4096) == b"":
                    longc.close()
                    longc = None
            except BlockingIOError:
                pass
            except OSError:
                longc.close()
                longc = None
        # DNS: a query with a 1 s timeout; one answer in 20 comes late, to a closed port.
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(1)
        try:
            u.sendto(b"\x56\x78\x01\x00query", (a.server, 53))
            u.recvfrom(2048)
        except OSError:
            pass
        finally:
            u.close()
        counts["dns"] += 1
        if now >= next_ntp:
            n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            n.settimeout(1)
            try:
                n.sendto(b"\x23" + b"\x00" * 47, (a.server, 123))
                n.recvfrom(2048)
            except OSError:
                pass
            finally:
                n.close()
            counts["ntp"] += 1
            next_ntp = now + rng.uniform(16, 64)
        if now >= next_dl:
            try:
                t = socket.create_connection((a.server, 8080), timeout=2)
                t.settimeout(2)
                for _ in range(1000):
                    if not t.recv(65536):
                        break
                t.close()
            except OSError:
                pass
            counts["download"] += 1
            next_dl = now + rng.uniform(1, 5)
        time.sleep(max(0.0, min(rng.uniform(0.2, 1.0), end - time.time())))
    print(json.dumps(counts), flush=True)


# --------------------------------------------------------------------------- reading results


def read_events(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
    except FileNotFoundError:
        pass
    return out


def read_syslog(path, since=0.0):
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                ts, _, msg = line.rstrip("\n").partition("\t")
                try:
                    t = float(ts)
                except ValueError:
                    continue
                if t >= since:
                    out.append((t, msg))
    except FileNotFoundError:
        pass
    return out


SCANLOGD = re.compile(r"scanlogd: (\d+\.\d+\.\d+\.\d+)(?::\d+)? to ")
PSAD_SCAN = re.compile(r"psad: scan detected \(([^)]*)\): (\S+) -> ")
PSAD_ANY = re.compile(r"psad: (?:scan detected \([^)]*\): |src: )(\S+) ")


def sentry_starts(events, src=None):
    out = []
    for e in events:
        if e.get("event") == "scan" and e.get("phase") == "start":
            if src is None or src in e.get("sources", []):
                out.append(e)
    return out


def scanlogd_hits(lines, src=None):
    out = []
    for t, m in lines:
        mm = SCANLOGD.search(m)
        if mm and (src is None or mm.group(1) == src):
            out.append((t, m))
    return out


def psad_hits(lines, src=None):
    out = []
    for t, m in lines:
        mm = PSAD_SCAN.search(m)
        if mm and (src is None or mm.group(2) == src):
            out.append((t, m))
    return out


def cmd_check(a):
    need = a.need.split(",")
    ev = read_events(a.events)
    lines = read_syslog(a.syslog, a.since)
    got = {
        "sentry": bool(sentry_starts(ev, a.src)),
        "scanlogd": bool(scanlogd_hits(lines, a.src)),
        "psad": bool(psad_hits(lines, a.src)),
    }
    return 0 if all(got[n] for n in need) else 1


def read_pcap(path, src):
    """First contacts from src in a capture: [(time, (dst, proto, port))], in order.
    A first contact is what the sentry logs and the other two count: a TCP segment
    without ACK and RST (SYN, FIN, NULL, Xmas), or a UDP datagram."""
    out = []
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        return out
    if len(data) < 24:
        return out
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        e = "<"
    else:
        e = ">"
        magic = struct.unpack(">I", data[:4])[0]
    div = 1e9 if magic == 0xA1B23C4D else 1e6
    linktype = struct.unpack(e + "I", data[20:24])[0]
    off = 24
    srcb = socket.inet_aton(src)
    n = 0
    while off + 16 <= len(data) and n < 50_000_000:
        n += 1
        sec, frac, incl, _ = struct.unpack(e + "IIII", data[off : off + 16])
        pkt = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if linktype == 1:  # Ethernet
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == 113:  # Linux cooked
            if len(pkt) < 16 or pkt[14:16] != b"\x08\x00":
                continue
            ip = pkt[16:]
        else:
            ip = pkt
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[12:16] != srcb:
            continue
        ihl = (ip[0] & 15) * 4
        proto = ip[9]
        dst = socket.inet_ntoa(ip[16:20])
        l4 = ip[ihl:]
        if proto == 6 and len(l4) >= 14:
            flags = l4[13]
            if flags & 0x14:  # ACK or RST: not a first contact
                continue
            port = struct.unpack(">H", l4[2:4])[0]
            key = (dst, "tcp", port)
        elif proto == 17 and len(l4) >= 4:
            port = struct.unpack(">H", l4[2:4])[0]
            key = (dst, "udp", port)
        else:
            continue
        out.append((sec + frac / div, key))
    return out


def probes_until(contacts, t):
    """Distinct first contacts received at or before t."""
    seen = set()
    for ts, k in contacts:
        if ts > t:
            break
        seen.add(k)
    return len(seen)


def cmd_analyze(a):
    contacts = read_pcap(a.pcap, a.src)
    t0 = contacts[0][0] if contacts else None
    total = len({k for _, k in contacts})
    ev = read_events(a.events)
    lines = read_syslog(a.syslog, a.since)
    res = {
        "scanner": a.scanner,
        "round": a.round,
        "src": a.src,
        "first_probe": t0,
        "probes_total": total,
        "packets_total": len(contacts),
        "scanner_secs": a.scanner_secs,
        "tcpdump_dropped": a.tcpdump_dropped,
    }

    def when(t):
        if t0 is None:
            return {"detected": True, "secs": None, "probes": None, "t": t}
        return {"detected": True, "secs": round(t - t0, 6), "probes": probes_until(contacts, t), "t": t}

    s = sentry_starts(ev, a.src)
    if s:
        e = s[0]
        # When the start event was written (sentry_measure.py stamp); without the stamps,
        # detected_ms, whole milliseconds rounded down: the decision came before the next.
        t_alarm = e["detected_ms"] / 1000.0 + 0.000999
        for ts, line in read_syslog(a.events + ".ts"):
            try:
                x = json.loads(line)
            except ValueError:
                continue
            if x.get("event") == "scan" and x.get("phase") == "start" and x.get("id") == e.get("id"):
                t_alarm = ts
                break
        d = when(t_alarm)
        d.update(
            {
                "self_probes": e.get("probes_to_detect"),
                "self_ms": e["detected_ms"] - e["started_ms"],
                "kinds": e.get("kinds"),
                "tool": (e.get("tool") or {}).get("tool"),
                "because": (e.get("tool") or {}).get("because"),
                "detector": e.get("detector"),
                "starts": len(s),
                "event": e,
            }
        )
        res["sentry"] = d
    else:
        res["sentry"] = {"detected": False}
    h = scanlogd_hits(lines, a.src)
    res["scanlogd"] = dict(when(h[0][0]), line=h[0][1], lines=len(h)) if h else {"detected": False}
    h = psad_hits(lines, a.src)
    res["psad"] = dict(when(h[0][0]), line=h[0][1], lines=len(h)) if h else {"detected": False}
    print(json.dumps(res), flush=True)


def cmd_alarms(a):
    srcs = {l.strip() for l in open(a.sources) if l.strip()}
    ev = read_events(a.events)
    lines = read_syslog(a.syslog, a.since)
    s = sentry_starts(ev)
    sl = scanlogd_hits(lines)
    ps = psad_hits(lines)
    # psad's other alerts (signature matches) are counted apart: they are not scans.
    sig = [m for _, m in lines if "psad: src:" in m and "signature match" in m]
    res = {
        "sentry": len(s),
        "sentry_events": s[:20],
        "scanlogd": len(sl),
        "scanlogd_lines": [m for _, m in sl[:20]],
        "psad": len({PSAD_SCAN.search(m).group(2) for _, m in ps}),
        "psad_lines": len(ps),
        "psad_sample": [m for _, m in ps[:20]],
        "psad_signature_lines": len(sig),
        "psad_signature_sample": sig[:5],
        "sources": len(srcs),
    }
    print(json.dumps(res), flush=True)


# --------------------------------------------------------------------------- the table


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_secs(x):
    if x is None:
        return "-"
    if x < 0.01:
        return "%.1f ms" % (x * 1000)
    if x < 1:
        return "%.0f ms" % (x * 1000)
    return "%.2f s" % x if x < 10 else "%.0f s" % x


def markdown(rows, order):
    """The table for the README: medians over rounds."""
    def ms(x):
        if x is None:
            return "-"
        if x < 0.01:
            return "%.1f ms" % (x * 1000)
        if x < 1:
            return "%.0f ms" % (x * 1000)
        return "%.2f s" % x if x < 10 else "%.0f s" % x

    print("| scanner | probes sent | sentry decided (probe, ms after the first) | sentry alarm written (probes received, time) | scanlogd | psad |")
    print("|---|---|---|---|---|---|")
    for s in order:
        rs = [r for r in rows if r["scanner"] == s]
        cells = []
        for d in ("sentry", "scanlogd", "psad"):
            hit = [r[d] for r in rs if r[d].get("detected")]
            if not hit:
                cells.append("not detected (0/%d)" % len(rs))
                continue
            c = "%s probes, %s" % ("%d" % med([h.get("probes") for h in hit]), ms(med([h.get("secs") for h in hit])))
            if len(hit) < len(rs):
                c += " (%d/%d)" % (len(hit), len(rs))
            if d == "sentry":
                m = med([h.get("self_ms") for h in hit])
                own = "probe %d, %s" % (med([h.get("self_probes") for h in hit]), "< 1 ms" if m == 0 else ms(m / 1000))
                cells.append(own)
            cells.append(c)
        print("| %s | %s | %s |" % (s, "{:,}".format(int(med([r["probes_total"] for r in rs]))), " | ".join(cells)))


def cmd_report(a):
    rows = read_events(a.results)
    if a.markdown:
        order = []
        for r in rows:
            if r["scanner"] not in order:
                order.append(r["scanner"])
        return markdown(rows, order)
    order = []
    for r in rows:
        if r["scanner"] not in order:
            order.append(r["scanner"])
    dets = ["sentry", "scanlogd", "psad"]
    print()
    print("sentry benchmark (%s rounds per scanner; sent = distinct first contacts the guarded host received" % (
        "/".join(sorted({str(sum(1 for r in rows if r["scanner"] == s)) for s in order})) or "0"))
    print("from the scanner in the round; pr = those it had received when the alarm was written (capture);")
    print("seconds from the first probe to the alarm; own = the sentry's decision (probes_to_detect, detected_ms -")
    print("started_ms); medians over rounds)")
    print()
    hdr = "%-26s %-8s | %-38s | %-24s | %-24s" % ("scanner", "sent", "portolan sentry", "scanlogd", "psad")
    print(hdr)
    print("-" * len(hdr))
    verdicts = {"all_detected": True, "fast": True, "fast_self": True, "slow": True}
    fails, notes = [], []
    for s in order:
        rs = [r for r in rows if r["scanner"] == s]
        cells = []
        for d in dets:
            hit = [r[d] for r in rs if r[d].get("detected")]
            if not hit:
                cells.append("no (0/%d)" % len(rs))
                continue
            p = med([h.get("probes") for h in hit])
            t = med([h.get("secs") for h in hit])
            c = "%s%s, %s" % ("yes" if len(hit) == len(rs) else "%d/%d" % (len(hit), len(rs)),
                              "" if p is None else " %d pr" % p, fmt_secs(t))
            if d == "sentry":
                sp = med([h.get("self_probes") for h in hit])
                sm = med([h.get("self_ms") for h in hit])
                c += " (own: %s pr, %s)" % ("-" if sp is None else "%d" % sp,
                                            "-" if sm is None else ("< 1 ms" if sm == 0 else fmt_secs(sm / 1000)))
            cells.append(c)
        total = med([r["probes_total"] for r in rs])
        print("%-26s %-8s | %-38s | %-24s | %-24s" % (s, "-" if total is None else int(total), cells[0], cells[1], cells[2]))
        slow = "T2" in s
        hit = [r["sentry"] for r in rs if r["sentry"].get("detected") and r["sentry"].get("probes") is not None]
        if not slow and hit and any(h["probes"] > a.fast_probes or h["secs"] > a.fast_secs for h in hit):
            notes.append("%s: %s probes received when the event was written, %s ms after the first" % (
                s, "/".join(str(h["probes"]) for h in hit), "/".join("%.0f" % (h["secs"] * 1000) for h in hit)))
        for r in rs:
            d = r["sentry"]
            if not d.get("detected"):
                verdicts["all_detected"] = False
                fails.append("%s round %d: not detected by the sentry" % (s, r["round"]))
                continue
            if slow:
                if d.get("secs") is None or d["secs"] > a.slow_secs:
                    verdicts["slow"] = False
                    fails.append("%s round %d: %.1f s" % (s, r["round"], d.get("secs") or -1))
            else:
                if d.get("probes") is None or d["probes"] > a.fast_probes or d.get("secs") is None or d["secs"] > a.fast_secs:
                    verdicts["fast"] = False
                if (d.get("self_probes") or 99) > a.fast_probes or (d.get("self_ms") or 0) > a.fast_secs * 1000:
                    verdicts["fast_self"] = False
                    fails.append("%s round %d: decided at probe %s, %s ms after the first: %s" % (
                        s, r["round"], d.get("self_probes"), d.get("self_ms"), json.dumps(d.get("event"))))
    print()
    print("what the sentry said (first round of each; times from the first probe in the capture: its first")
    print("probe seen -> decided (detected_ms) -> start event written):")
    for s in order:
        r = next(r for r in rows if r["scanner"] == s)
        d = r["sentry"]
        if not d.get("detected"):
            print("  %-26s not detected" % s)
            continue
        e, t0 = d["event"], r["first_probe"]
        ms = lambda x: "-" if t0 is None else "%d" % int(round((x - t0) * 1000))
        print("  %-26s %s, %s, tool %s%s; %s -> %s -> %s ms" % (
            s, d.get("detector"), "+".join(d.get("kinds") or []), d.get("tool") or "none",
            " (%s)" % d["because"] if d.get("because") else "", ms(e["started_ms"] / 1000), ms(e["detected_ms"] / 1000),
            ms(d["t"])))
    print()
    alarms = read_events(a.alarms) if a.alarms else []
    fa_ok = True
    for al in alarms:
        print("false alarms, %d s of ordinary traffic from %d clients (%s): sentry %d, scanlogd %d, psad %d (scan alerts; %d source(s))%s" % (
            al["seconds"], al["sources"], al.get("traffic", ""), al["sentry"], al["scanlogd"], al["psad_lines"], al["psad"],
            "" if not al.get("psad_signature_lines") else "; psad signature alerts %d" % al["psad_signature_lines"]))
        if al["sentry"]:
            fa_ok = False
            for e in al["sentry_events"][:5]:
                print("  sentry false alarm: " + json.dumps(e))
        for m in al.get("scanlogd_lines", [])[:3]:
            print("  scanlogd: " + m)
        for m in al.get("psad_sample", [])[:3]:
            print("  psad: " + m)
    floods = read_events(a.flood) if a.flood else []
    flood_ok = None
    for f in floods:
        print("flood (%s): %s" % (f["label"], f["text"]))
        if f.get("target"):
            ok = f["drops"] == 0 and f["overruns"] == 0 and f["sentry_cores"] < a.flood_cores and f["rate"] >= a.flood_rate * 0.95
            flood_ok = ok if flood_ok is None else (flood_ok and ok)
    print()
    pf = lambda ok: "PASS" if ok else "MISS"
    print("targets (portolan sentry):")
    print("  every scanner detected, every round:              %s" % pf(verdicts["all_detected"]))
    print("  fast scans within %d probes and %g s:               %s (its decision: probes_to_detect, detected_ms - started_ms)" % (
        a.fast_probes, a.fast_secs, pf(verdicts["fast_self"])))
    print("    at the host, for information:                  %s (probes received when the event was written; from the first probe)" % (
        pf(verdicts["fast"])))
    print("  nmap -T2 within %d s:                             %s" % (a.slow_secs, pf(verdicts["slow"])))
    if alarms:
        print("  zero false alarms:                                %s" % pf(fa_ok))
    if flood_ok is not None:
        print("  no drops at %d pps under %.1f of a core:       %s" % (a.flood_rate, a.flood_cores, pf(flood_ok)))
    for f in fails[:30]:
        print("  miss: " + f)
    for f in notes[:30]:
        print("  at the host: " + f)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("syslog")
    p.add_argument("--path", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=HARD_CAP)
    p = sub.add_parser("kmsg")
    p.add_argument("--prefix", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=HARD_CAP)
    p = sub.add_parser("stamp")
    p.add_argument("--fifo", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seconds", type=float, default=HARD_CAP)
    p = sub.add_parser("serve-g")
    p.add_argument("--seconds", type=float, default=HARD_CAP)
    p = sub.add_parser("serve-s")
    p.add_argument("--addr", required=True)
    p.add_argument("--seconds", type=float, default=HARD_CAP)
    p = sub.add_parser("clients")
    p.add_argument("--sources", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("own")
    p.add_argument("--server", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("check")
    p.add_argument("--events", required=True)
    p.add_argument("--syslog", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--since", type=float, default=0.0)
    p.add_argument("--need", default="sentry,scanlogd,psad")
    p = sub.add_parser("analyze")
    p.add_argument("--scanner", required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--pcap", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--syslog", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--scanner-secs", type=float)
    p.add_argument("--tcpdump-dropped", type=int)
    p = sub.add_parser("alarms")
    p.add_argument("--events", required=True)
    p.add_argument("--syslog", required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--sources", required=True)
    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--alarms")
    p.add_argument("--flood")
    p.add_argument("--fast-probes", type=int, default=10)
    p.add_argument("--fast-secs", type=float, default=1.0)
    p.add_argument("--slow-secs", type=int, default=120)
    p.add_argument("--flood-rate", type=int, default=100000)
    p.add_argument("--flood-cores", type=float, default=0.5)
    p.add_argument("--markdown", action="store_true", help="only the scanners' table, for the README")
    a = ap.parse_args()
    f = {
        "syslog": cmd_syslog,
        "kmsg": cmd_kmsg,
        "stamp": cmd_stamp,
        "serve-g": cmd_serve_g,
        "serve-s": cmd_serve_s,
        "clients": cmd_clients,
        "own": cmd_own,
        "check": cmd_check,
        "analyze": cmd_analyze,
        "alarms": cmd_alarms,
        "report": cmd_report,
    }[a.mode]
    return f(a)


if __name__ == "__main__":
    sys.exit(main())
