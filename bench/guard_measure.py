#!/usr/bin/env python3
"""Measures, from inside the client namespace, how long a guarded TCP port takes to let a
connection through after an authorization: bench/guard.sh runs it once per tool.

  guard_measure.py latency --server ADDR --port P --sources FILE --packets DIR [--spa-port N]
      for each source address i (one per line of FILE): send packet DIR/i from it to the
      SPA port (time 0), then try a new TCP connection from the same address every
      RETRY_US until one is accepted; prints one latency in microseconds per line.
  guard_measure.py knock --server ADDR --port P --sources FILE --sequence 7000,8000,9000
      the same with a knock sequence (TCP SYNs) instead of a packet; time 0 is the last knock.
  guard_measure.py rtt --server ADDR --port P --source ADDR --count N
      connection setup time to an open port (the wire's share, subtracted by the caller).
  guard_measure.py flood --server ADDR --port N --rate PPS --seconds S [--size B]
      random UDP datagrams (20-300 bytes, or B) to the SPA port at about PPS; prints the
      rate sent.

Every loop is bounded in count and time.
"""
import argparse
import errno
import os
import random
import select
import socket
import sys
import time

RETRY_US = 200
GIVE_UP_S = 3.0


def try_connect(src, server, port, wait_s):
    """One fresh connection attempt from src; True when it was accepted within wait_s."""
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.setblocking(False)
        s.bind((src, 0))
        try:
            s.connect((server, port))
        except BlockingIOError:
            pass
        _, w, _ = select.select([], [s], [], wait_s)
        if not w:
            return False
        return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    except OSError:
        return False
    finally:
        s.close()


def wait_open(src, server, port, t0):
    deadline = t0 + GIVE_UP_S
    while time.perf_counter() < deadline:
        if try_connect(src, server, port, RETRY_US / 1e6):
            return time.perf_counter() - t0
    return None


def knock_syn(src, server, port):
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind((src, 0))
    try:
        s.connect((server, port))
    except BlockingIOError:
        pass
    except OSError:
        pass
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["latency", "knock", "rtt", "flood"])
    ap.add_argument("--server", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sources")
    ap.add_argument("--source")
    ap.add_argument("--packets")
    ap.add_argument("--spa-port", type=int, default=62201)
    ap.add_argument("--sequence")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--rate", type=int, default=100000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=0, help="every datagram this long (0: 20-300)")
    a = ap.parse_args()

    if a.mode == "rtt":
        for _ in range(min(a.count, 1000)):
            t0 = time.perf_counter()
            ok = try_connect(a.source, a.server, a.port, 1.0)
            print(int((time.perf_counter() - t0) * 1e6) if ok else "fail", flush=True)
        return

    if a.mode == "flood":
        fam = socket.AF_INET6 if ":" in a.server else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setblocking(False)
        junk = [os.urandom(a.size if a.size else random.randint(20, 300)) for _ in range(4096)]
        dst = (a.server, a.port)
        sent = 0
        t0 = time.perf_counter()
        end = t0 + min(a.seconds, 60.0)
        burst = max(1, a.rate // 1000)
        nxt = t0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if now < nxt:
                continue
            for i in range(burst):
                try:
                    s.sendto(junk[(sent + i) & 4095], dst)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno != errno.ENOBUFS:
                        raise
                    break
            sent += burst
            nxt += 0.001
        print(int(sent / (time.perf_counter() - t0)))
        return

    sources = [l.strip() for l in open(a.sources) if l.strip()]
    seq = [int(p) for p in a.sequence.split(",")] if a.sequence else []
    for i, src in enumerate(sources):
        if a.mode == "latency":
            data = open(os.path.join(a.packets, str(i)), "rb").read()
            fam = socket.AF_INET6 if ":" in a.server else socket.AF_INET
            u = socket.socket(fam, socket.SOCK_DGRAM)
            u.bind((src, 0))
            t0 = time.perf_counter()
            u.sendto(data, (a.server, a.spa_port))
            u.close()
        else:
            held = []
            for j, p in enumerate(seq):
                if j:
                    time.sleep(0.005)
                held.append(knock_syn(src, a.server, p))
            t0 = time.perf_counter()
            for h in held:
                h.close()
        lat = wait_open(src, a.server, a.port, t0)
        print(int(lat * 1e6) if lat is not None else "timeout", flush=True)


if __name__ == "__main__":
    sys.exit(main())
