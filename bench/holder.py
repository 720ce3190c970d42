#!/usr/bin/env python3
"""Hold many TCP sockets open on loopback, for bench/inventory.sh.

Opens about N TCP sockets (default 100000), all on 127.0.0.0/8:

* one small "app" process (comm "holder-app"), like a dev server: it listens on
  127.0.0.1:APP_PORT (default 47000) and holds 3 established connections to
  itself (client side and accepted side both in that process) -> 7 sockets;
* a few "bulk" processes (comm "holder-bulk-K", default 4), each with a few
  listeners and thousands of established connections to them (client side and
  accepted side both in the same process). Client sockets bind to several
  source addresses 127.0.K+1.x so no (src, dst) pair comes near the size of the
  ephemeral port range.

With --established E, only E of the sockets stay ESTABLISHED (the app's 6 and as many
bulk connections as needed, from the first bulk process on); every other bulk connection
is half-closed: its client side calls shutdown(SHUT_WR), so it sits in FIN-WAIT-2 and the
accepted side in CLOSE-WAIT for as long as the processes hold them (a socket a process
still holds has no FIN-WAIT-2 timeout). The total stays N; only the states differ.

When everything is open it prints one line to stdout and flushes:

    READY <total_sockets> <app_port>

then sleeps until its stdin closes (or hits EOF) or --max-seconds pass, and
exits; its children exit with it (they watch a pipe from the parent, have
PR_SET_PDEATHSIG and a deadline of their own). All sockets have SO_LINGER 0,
so exiting resets the connections and leaves no TIME_WAIT behind.

No traffic ever leaves loopback. Python standard library only.
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

APP_CONNS = 3
APP_SOCKETS = 1 + 2 * APP_CONNS
FD_SLACK = 64               # stdio, pipes, python's own files
MAX_PROCS = 64              # never spread the bulk over more processes than this
LINGER0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"   # struct linger {1, 0}
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1


def log(msg):
    sys.stderr.write("holder: %s\n" % msg)
    sys.stderr.flush()


def read_int(path, default):
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


_libc = None


def prctl(option, arg):
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(option, arg, 0, 0, 0)
    except Exception:
        pass


def become_child(name, pdeathsig=True):
    """Name the process (comm) and make it die with its parent."""
    prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))
    if pdeathsig:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C goes to the parent
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


def raise_nofile(want):
    """Raise RLIMIT_NOFILE towards `want`; return the soft limit obtained."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    nr_open = read_int("/proc/sys/fs/nr_open", 1048576)
    target = min(want, nr_open)
    if hard < target:
        try:   # raising the hard limit needs CAP_SYS_RESOURCE (root)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
            return target
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    new = min(target, hard) if hard != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return soft
    return new


def make_listener(addr, port, backlog):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)  # inherited by accept()
    s.bind((addr, port))
    s.listen(backlog)
    s.setblocking(False)
    return s


def start_connect(dst, src_addr):
    """Non-blocking connect from src_addr (any port) to dst; returns the socket or None."""
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        c.setblocking(False)
        if src_addr is not None:
            try:
                c.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                c.bind((src_addr, 0))
            except OSError:
                pass
        err = c.connect_ex(dst)
        if err not in (0, errno.EINPROGRESS):
            c.close()
            return None, err
        return c, 0
    except OSError as e:
        c.close()
        return None, e.errno


def accept_all(listeners, expected, timeout):
    """Accept from non-blocking listeners until expected[i] are taken from each or timeout."""
    accepted = []
    want = dict(zip([l.fileno() for l in listeners], expected))
    by_fd = {l.fileno(): l for l in listeners}
    poller = select.poll()
    for fd in by_fd:
        if want[fd] > 0:
            poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    remaining = sum(expected)
    while remaining > 0:
        progressed = False
        for fd, l in by_fd.items():
            while want[fd] > 0:
                try:
                    s, _ = l.accept()
                except (BlockingIOError, InterruptedError):
                    break
                accepted.append(s)
                want[fd] -= 1
                remaining -= 1
                progressed = True
        if remaining <= 0:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not progressed:
            poller.poll(min(left, 0.2) * 1000)
    return accepted


def bulk_worker(idx, nconn, ports, backlog, batch, keep_est=None):
    """Open len(ports) listeners and nconn connections to them; return (socks, count, errors).

    keep_est: None keeps every connection established; a number keeps that many and
    half-closes the others (client side shutdown(SHUT_WR): FIN-WAIT-2 / CLOSE-WAIT)."""
    listeners = [make_listener("127.0.0.1", p, backlog) for p in ports]
    srcs = ["127.0.%d.%d" % (1 + idx % 250, 1 + k) for k in range(8)]
    socks = list(listeners)
    clients = []
    done = 0
    errors = {}
    k = 0
    failed_batches = 0
    while done < nconn:
        n = min(batch * len(listeners), nconn - done)
        pending = []
        expected = [0] * len(listeners)
        for _ in range(n):
            li = k % len(listeners)
            c, err = start_connect(("127.0.0.1", ports[li]), srcs[(k // len(listeners)) % len(srcs)])
            k += 1
            if c is None:
                errors[err] = errors.get(err, 0) + 1
                continue
            pending.append(c)
            expected[li] += 1
        acc = accept_all(listeners, expected, timeout=15.0)
        if len(acc) < len(pending):
            # Connections not accepted in time: drop the surplus client sockets.
            errors["accept-timeout"] = errors.get("accept-timeout", 0) + len(pending) - len(acc)
            for c in pending[len(acc):]:
                c.close()
            pending = pending[:len(acc)]
        socks.extend(pending)
        clients.extend(pending)
        socks.extend(acc)
        done += len(acc)
        if not acc:
            failed_batches += 1
            if failed_batches >= 3:
                break
        else:
            failed_batches = 0
    if keep_est is not None:
        for c in clients[keep_est:]:
            try:
                c.shutdown(socket.SHUT_WR)
            except OSError as e:
                errors["shutdown-%s" % e.errno] = errors.get("shutdown-%s" % e.errno, 0) + 1
    return socks, len(listeners) + 2 * done, errors


def app_worker(port):
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    l.bind(("127.0.0.1", port))
    l.listen(128)
    socks = [l]
    for _ in range(APP_CONNS):
        c = socket.create_connection(("127.0.0.1", port), timeout=10)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        l.settimeout(10)
        s, _ = l.accept()
        socks += [c, s]
    return socks, len(socks), {}


def run_child(name, life_r, ready_w, deadline, job, pdeathsig=True):
    """Body of a forked child: do job, report on ready_w, hold until life_r EOF/deadline."""
    code = 0
    try:
        become_child(name, pdeathsig)
        socks, count, errors = job()
        msg = "OK %s %d %s\n" % (name, count, ",".join("%s:%d" % kv for kv in errors.items()) or "-")
        os.write(ready_w, msg.encode())
        os.close(ready_w)
        while True:   # hold until the parent goes away (pipe EOF) or the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                break
            r, _, _ = select.select([life_r], [], [], left)
            if r and not os.read(life_r, 64):
                break
        del socks
    except BaseException as e:  # report and leave
        try:
            os.write(ready_w, ("ERR %s %s\n" % (name, repr(e).replace("\n", " "))).encode())
        except OSError:
            pass
        code = 1
    finally:
        os._exit(code)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sockets", type=int, default=100000, help="total TCP sockets to open (default 100000)")
    ap.add_argument("--app-port", type=int, default=47000, help="port of the small app process (default 47000)")
    ap.add_argument("--solo-port", type=int, default=0, help="also run a second small app (comm holder-solo) on this port, in its own session: setsid and re-parented away from the holder, so it shares no parent with the bulk processes (default: none)")
    ap.add_argument("--procs", type=int, default=4, help="bulk processes (default 4; more if the fd limit needs it)")
    ap.add_argument("--listeners", type=int, default=4, help="listening ports per bulk process (default 4)")
    ap.add_argument("--base-port", type=int, default=21000, help="first listening port of the bulk processes (default 21000)")
    ap.add_argument("--max-seconds", type=float, default=900, help="exit after this long at the latest (default 900)")
    ap.add_argument("--setup-timeout", type=float, default=300, help="give up if opening takes longer (default 300)")
    ap.add_argument("--established", type=int, default=-1, help="keep only this many sockets ESTABLISHED, half-close the other connections (default: all established)")
    ap.add_argument("--ignore-stdin", action="store_true", help="do not exit when stdin closes; only on the deadline or a signal")
    a = ap.parse_args()

    t0 = time.monotonic()
    deadline = t0 + a.max_seconds
    somaxconn = read_int("/proc/sys/net/core/somaxconn", 128)
    backlog = min(4096, max(somaxconn, 16))
    batch = max(8, min(1000, backlog // 2))   # connects per listener before draining accepts

    apps = 2 if a.solo_port else 1
    bulk = max(0, a.sockets - apps * APP_SOCKETS)
    procs = max(1, a.procs)
    need = -(-bulk // procs) + FD_SLACK
    limit = raise_nofile(need)
    if limit < need:
        per = max(limit - FD_SLACK, 0)
        procs = min(MAX_PROCS, -(-bulk // per)) if per > 0 else MAX_PROCS
        log("RLIMIT_NOFILE is %d (< %d needed per process); spreading over %d bulk processes" % (limit, need, procs))
        if per * procs < bulk:
            new_total = per * procs + apps * APP_SOCKETS
            log("WARNING: cannot hold %d sockets with RLIMIT_NOFILE=%d; scaling down to %d sockets"
                % (a.sockets, limit, new_total))
            bulk = per * procs
    # Split the bulk sockets: listeners + 2 * connections per process.
    plan = []
    stride = a.listeners + 1
    for i in range(procs):
        share = bulk // procs + (1 if i < bulk % procs else 0)
        nl = max(1, min(a.listeners, share))
        if (share - nl) % 2 and nl < share:
            nl += 1   # make the count come out exact
        nconn = max(0, (share - nl) // 2)
        if share == 0:
            continue
        ports = [a.base_port + i * stride + j for j in range(nl)]
        plan.append((i, nconn, ports))
    # Established connections to keep, per bulk process (None: all of them).
    keep = [None] * len(plan)
    if a.established >= 0:
        left = max(0, (a.established - apps * 2 * APP_CONNS) // 2)
        for n, (_, nconn, _) in enumerate(plan):
            keep[n] = min(left, nconn)
            left -= keep[n]
    last_port = a.base_port + procs * stride
    for port in [a.app_port] + ([a.solo_port] if a.solo_port else []):
        if a.base_port <= port < last_port:
            log("app port %d collides with bulk listener ports %d-%d" % (port, a.base_port, last_port - 1))
            return 2
    if a.solo_port and a.solo_port == a.app_port:
        log("--solo-port must differ from --app-port")
        return 2
    lo, hi = 32768, 60999
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = [int(x) for x in f.read().split()[:2]]
    except (OSError, ValueError):
        pass
    if last_port > lo and a.base_port <= hi:
        log("warning: bulk listener ports %d-%d overlap the ephemeral range %d-%d" % (a.base_port, last_port - 1, lo, hi))

    life_r, life_w = os.pipe()
    ready_r, ready_w = os.pipe()
    children = []

    def cleanup():
        try:
            os.close(life_w)   # children see EOF and exit
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
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
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

    def spawn(name, job):
        pid = os.fork()
        if pid == 0:
            os.close(life_w)
            os.close(ready_r)
            run_child(name, life_r, ready_w, deadline + 30, job)
        children.append(pid)

    def spawn_solo(name, job):
        # Own session, and a parent that is not the holder: fork twice, the middle
        # process calls setsid, forks the app and exits at once (the app is re-parented
        # to init or the nearest subreaper). No PDEATHSIG (its parent is gone at once):
        # the app still exits when the life pipe closes, or at its deadline.
        mid = os.fork()
        if mid == 0:
            try:
                os.close(life_w)
                os.close(ready_r)
                os.setsid()
                if os.fork() == 0:
                    run_child(name, life_r, ready_w, deadline + 30, job, pdeathsig=False)
            finally:
                os._exit(0)
        os.waitpid(mid, 0)

    try:
        # The apps first: a port inside the ephemeral range must be bound before
        # thousands of connects start picking local ports (connect never picks a port
        # some socket has bound explicitly).
        spawn("holder-app", lambda: app_worker(a.app_port))
        expected_reports = 1
        if a.solo_port:
            spawn_solo("holder-solo", lambda: app_worker(a.solo_port))
            expected_reports += 1
        app_ok = False
        solo_ok = not a.solo_port
        for n, (i, nconn, ports) in enumerate(plan):
            spawn("holder-bulk-%d" % i, lambda i=i, nconn=nconn, ports=ports, k=keep[n]: bulk_worker(i, nconn, ports, backlog, batch, k))
            expected_reports += 1
        os.close(ready_w)
        os.close(life_r)
        total = 0
        buf = b""
        reports = 0
        setup_end = t0 + a.setup_timeout
        failed = False
        while reports < expected_reports:
            left = setup_end - time.monotonic()
            if left <= 0:
                log("setup timed out after %.0f s (%d of %d processes ready)" % (a.setup_timeout, reports, expected_reports))
                return 1
            r, _, _ = select.select([ready_r], [], [], left)
            if not r:
                continue
            chunk = os.read(ready_r, 4096)
            if not chunk:
                log("a child exited without reporting")
                return 1
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode().split(" ", 3)
                reports += 1
                if parts[0] != "OK":
                    log("child failed: %s" % line.decode())
                    failed = True
                    continue
                _, name, count, errs = parts
                total += int(count)
                if name == "holder-app":
                    app_ok = True
                elif name == "holder-solo":
                    solo_ok = True
                if errs != "-":
                    log("%s: %s sockets, connect errors %s" % (name, count, errs))
        if failed or not app_ok or not solo_ok:
            return 1
        if total < a.sockets * 0.99:
            log("WARNING: holding %d sockets, fewer than the %d requested" % (total, a.sockets))
        log("holding %d TCP sockets in %d processes (app on 127.0.0.1:%d%s), setup took %.1f s"
            % (total, expected_reports, a.app_port,
               ", solo app on 127.0.0.1:%d" % a.solo_port if a.solo_port else "", time.monotonic() - t0))
        sys.stdout.write("READY %d %d\n" % (total, a.app_port))
        sys.stdout.flush()

        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                log("--max-seconds reached, exiting")
                break
            if a.ignore_stdin:
                time.sleep(min(left, 1.0))
                continue
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
