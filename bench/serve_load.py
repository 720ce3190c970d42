#!/usr/bin/env python3
"""Hold many listeners and sockets open on loopback, for bench/serve.sh.

Opens --listeners TCP listeners (default 1000) on ports BASE..BASE+L-1, one port each:
half on 127.0.0.1, three in ten on ::1 and one in five on 0.0.0.0 (by port: the last digit
of i = port - BASE picks it: 0-4 127.0.0.1, 5-7 ::1, 8-9 0.0.0.0), and enough ESTABLISHED
loopback connections to bring the TCP sockets to --sockets in all (default 100000: 1,000
listeners + 49,500 connection pairs). The work is spread over --procs processes (comm
"srvload-K"; more when RLIMIT_NOFILE is too low for that many fds per process), each
holding a contiguous block of the listeners and the connections to them (client and
accepted sides both in that process, so every socket has an owner). IPv4 clients bind to
127.0.K+1.1-8 (IP_BIND_ADDRESS_NO_PORT) and connect to 127.0.0.1; IPv6 clients connect to ::1.

When everything is open it prints one line on stdout and flushes:

    READY <listeners> <sockets> <base_port> <last_port> <processes>

then holds until its stdin closes, --max-seconds pass, or SIGTERM/SIGINT/SIGHUP, and exits;
its children exit with it (a pipe from the parent, PR_SET_PDEATHSIG, a deadline of their
own). Every socket has SO_LINGER 0: exiting resets the connections and leaves no TIME_WAIT.

Only loopback (the 0.0.0.0 listeners are bound on every address, and nothing connects to
them but loopback clients). Python standard library only.
"""

import argparse
import ctypes
import errno
import os
import resource
import select
import signal
import socket
import sys
import time

FD_SLACK = 64              # stdio, pipes, python's own files
MAX_PROCS = 64
LINGER0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"   # struct linger {1, 0}
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def log(msg):
    sys.stderr.write("serve-load: %s\n" % msg)
    sys.stderr.flush()


def read_int(path, default):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def prctl(option, arg):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except Exception:
        pass


def raise_nofile(want):
    """Raise RLIMIT_NOFILE towards want (the hard limit too, if allowed); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    want = min(want, read_int("/proc/sys/fs/nr_open", 1048576))
    if hard != resource.RLIM_INFINITY and hard < want:
        try:   # needs CAP_SYS_RESOURCE
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        return new
    except (ValueError, OSError):
        return soft


def family_of(i):
    """The listening address of the i-th listener: (family, bind address, connect address)."""
    d = i % 10
    if d < 5:
        return socket.AF_INET, "127.0.0.1", "127.0.0.1"
    if d < 8:
        return socket.AF_INET6, "::1", "::1"
    return socket.AF_INET, "0.0.0.0", "127.0.0.1"


def make_listener(i, port, backlog):
    fam, addr, _ = family_of(i)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)   # accepted sockets inherit it
    s.bind((addr, port))
    s.listen(backlog)
    s.setblocking(False)
    return s


def start_connect(i, port, src):
    fam, _, dst = family_of(i)
    c = socket.socket(fam, socket.SOCK_STREAM)
    try:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        c.setblocking(False)
        if fam == socket.AF_INET:
            c.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            c.bind((src, 0))
        err = c.connect_ex((dst, port))
        if err not in (0, errno.EINPROGRESS):
            c.close()
            return None, err
        return c, 0
    except OSError as e:
        c.close()
        return None, e.errno


def worker(k, first, count, base_port, pairs, backlog, batch):
    """Listeners first..first+count-1 and `pairs` connections to them; returns (socks, errors)."""
    listeners = [make_listener(i, base_port + i, backlog) for i in range(first, first + count)]
    srcs = ["127.0.%d.%d" % (1 + k % 250, 1 + j) for j in range(8)]
    socks = list(listeners)
    errors = {}
    by_fd = {l.fileno(): n for n, l in enumerate(listeners)}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    done = 0
    n_next = 0
    stalls = 0
    while done < pairs:
        want = [0] * count
        pending = []
        for _ in range(min(batch, pairs - done)):
            li = n_next % count
            c, err = start_connect(first + li, base_port + first + li, srcs[(n_next // count) % 8])
            n_next += 1
            if c is None:
                errors[err] = errors.get(err, 0) + 1
                continue
            pending.append(c)
            want[li] += 1
        accepted = 0
        deadline = time.monotonic() + 15
        left_total = sum(want)
        while left_total > 0 and time.monotonic() < deadline:
            moved = False
            for li, l in enumerate(listeners):
                while want[li] > 0:
                    try:
                        s, _ = l.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    socks.append(s)
                    want[li] -= 1
                    left_total -= 1
                    accepted += 1
                    moved = True
            if not moved and left_total > 0:
                poller.poll(200)
        socks.extend(pending)
        if left_total:
            errors["not-accepted"] = errors.get("not-accepted", 0) + left_total
        done += accepted
        stalls = stalls + 1 if accepted == 0 else 0
        if stalls >= 3:
            break
    return socks, len(listeners) + 2 * done, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--sockets", type=int, default=100000, help="TCP sockets in all, listeners included")
    ap.add_argument("--base-port", type=int, default=24000)
    ap.add_argument("--procs", type=int, default=8, help="processes (more if RLIMIT_NOFILE needs it)")
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--setup-timeout", type=float, default=300)
    a = ap.parse_args()
    if a.listeners < 1 or a.sockets < a.listeners:
        log("need --listeners >= 1 and --sockets >= --listeners")
        return 2
    if a.base_port < 1 or a.base_port + a.listeners - 1 > 65535:
        log("ports %d-%d out of range" % (a.base_port, a.base_port + a.listeners - 1))
        return 2
    t0 = time.monotonic()
    deadline = t0 + a.max_seconds
    pairs = (a.sockets - a.listeners) // 2
    backlog = min(4096, max(read_int("/proc/sys/net/core/somaxconn", 128), 16))

    procs = max(1, min(a.procs, a.listeners))
    total_fds = a.listeners + 2 * pairs
    limit = raise_nofile(-(-total_fds // procs) + FD_SLACK)
    per = limit - FD_SLACK
    if per * procs < total_fds:
        procs = min(MAX_PROCS, a.listeners, -(-total_fds // max(per, 1)))
        log("RLIMIT_NOFILE is %d: spreading over %d processes" % (limit, procs))
        if per * procs < total_fds:
            log("cannot hold %d sockets with RLIMIT_NOFILE %d in %d processes" % (total_fds, limit, procs))
            return 2
    # Listeners and pairs per process, as even as can be.
    plan = []
    first = 0
    for k in range(procs):
        nl = a.listeners // procs + (1 if k < a.listeners % procs else 0)
        np_ = pairs // procs + (1 if k < pairs % procs else 0)
        plan.append((k, first, nl, np_))
        first += nl
    batch = max(64, min(2000, backlog // 2 * 8))

    life_r, life_w = os.pipe()
    ready_r, ready_w = os.pipe()
    children = []

    def cleanup():
        try:
            os.close(life_w)
        except OSError:
            pass
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        end = time.monotonic() + 15
        alive = set(children)
        while alive and time.monotonic() < end:
            for pid in list(alive):
                try:
                    got, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    got = pid
                if got:
                    alive.discard(pid)
            if alive:
                time.sleep(0.05)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    try:
        for k, first, nl, np_ in plan:
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(life_w)
                    os.close(ready_r)
                    prctl(PR_SET_NAME, ctypes.c_char_p(("srvload-%d" % k).encode()))
                    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
                    signal.signal(signal.SIGHUP, signal.SIG_IGN)
                    socks, n, errs = worker(k, first, nl, a.base_port, np_, backlog, batch)
                    os.write(ready_w, ("OK %d %d %s\n" % (k, n, ",".join("%s:%d" % e for e in errs.items()) or "-")).encode())
                    os.close(ready_w)
                    while True:
                        left = deadline + 30 - time.monotonic()
                        if left <= 0:
                            break
                        r, _, _ = select.select([life_r], [], [], left)
                        if r and not os.read(life_r, 64):
                            break
                    del socks
                except BaseException as e:
                    try:
                        os.write(ready_w, ("ERR %d %s\n" % (k, repr(e).replace("\n", " "))).encode())
                    except OSError:
                        pass
                    code = 1
                finally:
                    os._exit(code)
            children.append(pid)
        os.close(ready_w)
        os.close(life_r)
        total, reports, buf, failed = 0, 0, b"", False
        while reports < len(plan):
            left = t0 + a.setup_timeout - time.monotonic()
            if left <= 0:
                log("setup timed out after %.0f s (%d of %d processes ready)" % (a.setup_timeout, reports, len(plan)))
                return 1
            r, _, _ = select.select([ready_r], [], [], left)
            if not r:
                continue
            chunk = os.read(ready_r, 4096)
            if not chunk:
                log("a process exited without reporting")
                return 1
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split(" ", 3)
                reports += 1
                if parts[0] != "OK":
                    log("process failed: %s" % line.decode())
                    failed = True
                    continue
                total += int(parts[2])
                if parts[3] != "-":
                    log("srvload-%s: %s sockets, errors %s" % (parts[1], parts[2], parts[3]))
        if failed:
            return 1
        if total < a.sockets * 0.99:
            log("WARNING: holding %d sockets, fewer than the %d requested" % (total, a.sockets))
        log("holding %d listeners (ports %d-%d) and %d TCP sockets in all, in %d processes; setup %.1f s"
            % (a.listeners, a.base_port, a.base_port + a.listeners - 1, total, len(plan), time.monotonic() - t0))
        sys.stdout.write("READY %d %d %d %d %d\n" % (a.listeners, total, a.base_port, a.base_port + a.listeners - 1, len(plan)))
        sys.stdout.flush()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                log("--max-seconds reached, exiting")
                break
            r, _, _ = select.select([0], [], [], min(left, 1.0))
            if r:
                try:
                    data = os.read(0, 4096)
                except OSError:
                    data = b""
                if not data:
                    break
        return 0
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
