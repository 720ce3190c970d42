#!/usr/bin/env python3
"""Keep about N listeners open on loopback and churn them, for bench/watch-soak.sh.

Opens N listening sockets (TCP, with every tenth one UDP) on 127.0.0.0/8, each on an
address and port never used before in this run, then for --seconds closes --rate
listeners per second and opens as many new ones. Every listener lives at least
--min-life seconds before it may be closed, so a watcher that samples every 2 s sees each
one. At the end it holds --hold seconds with no change (so the last closes are past any
restart grace), then closes everything.

It logs each change it causes, one line each, to --log:

    <unix_ms> open tcp 127.0.3.7 31044
    <unix_ms> close udp 127.0.9.1 40017

and prints `READY <n>` on stdout when the first N are open, `CHURNED` when churning
stops, `DONE` at the end. Stops on its own after its deadline, or when stdin closes.
No traffic ever leaves loopback. Python standard library only.
"""

import argparse
import os
import random
import resource
import select
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rate", type=float, default=2.0, help="closes (and opens) per second")
    ap.add_argument("--min-life", type=float, default=10.0)
    ap.add_argument("--steady", type=float, default=0.0, help="seconds with no churn before it")
    ap.add_argument("--hold", type=float, default=20.0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.listeners + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))

    log = open(a.log, "w", buffering=1)
    used = set()
    live = {}  # (proto, addr, port) -> (socket, opened_at)

    def fresh():
        for _ in range(10000):
            proto = "udp" if rng.random() < 0.1 else "tcp"
            addr = "127.0.%d.%d" % (rng.randrange(1, 250), rng.randrange(1, 250))
            port = rng.randrange(30000, 60000)
            if (proto, addr, port) not in used:
                return proto, addr, port
        raise SystemExit("no fresh address left")

    def open_one():
        while True:
            key = fresh()
            used.add(key)
            proto, addr, port = key
            kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.bind((addr, port))
                if proto == "tcp":
                    s.listen(16)
            except OSError:
                s.close()
                continue  # taken by something else: not caused, not logged
            live[key] = (s, time.monotonic())
            log.write("%d open %s %s %d\n" % (time.time() * 1000, proto, addr, port))
            return

    def close_one(key):
        s, _ = live.pop(key)
        s.close()
        proto, addr, port = key
        log.write("%d close %s %s %d\n" % (time.time() * 1000, proto, addr, port))

    def stdin_closed(timeout):
        r, _, _ = select.select([sys.stdin], [], [], max(0.0, timeout))
        return bool(r) and not os.read(sys.stdin.fileno(), 4096)

    for _ in range(a.listeners):
        open_one()
    print("READY %d" % len(live), flush=True)
    deadline = time.monotonic() + a.steady + a.seconds + a.hold + 60
    if stdin_closed(a.steady):
        return
    end = time.monotonic() + a.seconds
    step = 1.0 / a.rate if a.rate > 0 else a.seconds
    while time.monotonic() < end and time.monotonic() < deadline:
        now = time.monotonic()
        old = [k for k, (_, t) in live.items() if now - t >= a.min_life]
        if old:
            close_one(rng.choice(old))
            open_one()
        if stdin_closed(step):
            return
    print("CHURNED", flush=True)
    stdin_closed(a.hold)
    for key in list(live):
        close_one(key)
    print("DONE", flush=True)
    stdin_closed(min(a.hold, max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    main()
