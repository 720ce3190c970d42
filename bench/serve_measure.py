#!/usr/bin/env python3
"""Requests and figures for bench/serve.sh (Python standard library and curl).

  serve_measure.py wait    --base URL --token T [--seconds S]
  serve_measure.py fetch   --base URL --token T --path P [--runs N] [--warmup W] [--gap S] [--label L]
  serve_measure.py check   --base URL --token T --first-port A --last-port B
  serve_measure.py assets  --base URL --token T [--path P]...
  serve_measure.py report  --results FILE --anchors FILE [...]

fetch runs `curl` once per request (a new connection each time, as a first page load is),
authenticated with `Authorization: Bearer T`, and takes the server's own time from the
`Server-Timing: app;dur=MS` header and the whole from curl's %{time_total}. It prints one
JSON line: medians, p95s, min, max, every request's figures in order (the first W are
warm-ups, kept apart), status codes, body sizes.
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse

CURL_MAX = "60"


def curl(base, token, path, body_path=None, head_path=None, extra=()):
    """One GET; returns dict(status, total_s, size, server_ms or None, headers text)."""
    own = []
    if body_path is None:
        fd, body_path = tempfile.mkstemp(prefix="serve-body.")
        os.close(fd)
        own.append(body_path)
    if head_path is None:
        fd, head_path = tempfile.mkstemp(prefix="serve-head.")
        os.close(fd)
        own.append(head_path)
    try:
        p = subprocess.run(
            ["curl", "-sS", "--max-time", CURL_MAX, "-o", body_path, "-D", head_path,
             "-H", "Authorization: Bearer " + token, *extra,
             "-w", "%{http_code} %{time_total} %{size_download} %{time_starttransfer}",
             base + path],
            capture_output=True, text=True)
        out = p.stdout.split()
        if p.returncode != 0 or len(out) < 4:
            return {"status": 0, "error": (p.stderr or "curl exit %d" % p.returncode).strip()[:200]}
        with open(head_path, errors="replace") as f:
            headers = f.read()
        m = re.search(r"^server-timing:.*?\bapp;\s*dur=([0-9.]+)", headers, re.I | re.M)
        r = {"status": int(out[0]), "total_s": float(out[1]), "size": int(out[2]),
             "ttfb_s": float(out[3]), "server_ms": float(m.group(1)) if m else None,
             "headers": headers}
        if own:
            with open(body_path, "rb") as f:
                r["body"] = f.read()
        return r
    finally:
        for f in own:
            try:
                os.unlink(f)
            except OSError:
                pass


def pct(vals, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    v = sorted(vals)
    k = max(1, -(-len(v) * q // 100))
    return v[int(k) - 1]


def median(vals):
    v = sorted(vals)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def cmd_wait(a):
    end = time.monotonic() + a.seconds
    last = ""
    while time.monotonic() < end:
        r = curl(a.base, a.token, "/")
        if r.get("status") == 200:
            print(json.dumps({"ok": True, "first_server_ms": r["server_ms"], "first_total_s": r["total_s"],
                              "size": r["size"]}))
            return 0
        last = r.get("error") or "HTTP %s" % r.get("status")
        time.sleep(0.2)
    print(json.dumps({"ok": False, "error": last}))
    return 1


def cmd_fetch(a):
    reqs = []
    for i in range(a.warmup + a.runs):
        r = curl(a.base, a.token, a.path)
        r.pop("headers", None)
        r.pop("body", None)
        reqs.append(r)
        if a.gap:
            time.sleep(a.gap)
    timed = reqs[a.warmup:]
    ok = [r for r in timed if r.get("status") == 200]
    res = {"label": a.label or "GET " + a.path, "path": a.path, "runs": a.runs, "warmup": a.warmup,
           "ok": len(ok), "statuses": sorted({r.get("status") for r in timed}),
           "errors": sorted({r["error"] for r in timed if "error" in r})[:3],
           "requests": [{k: r.get(k) for k in ("status", "server_ms", "total_s", "ttfb_s", "size")} for r in reqs]}
    if ok:
        tot = [r["total_s"] * 1000 for r in ok]
        res.update(total_med=median(tot), total_p95=pct(tot, 95), total_min=min(tot), total_max=max(tot),
                   size=median([r["size"] for r in ok]))
        srv = [r["server_ms"] for r in ok if r["server_ms"] is not None]
        if srv:
            res.update(server_med=median(srv), server_p95=pct(srv, 95), server_min=min(srv), server_max=max(srv))
        res["no_server_timing"] = len(ok) - len(srv)
    print(json.dumps(res))
    return 0


def cmd_check(a):
    """What the map, the table and /api/ls show of the load's listeners."""
    out = {}
    r = curl(a.base, a.token, "/")
    html = r.get("body", b"").decode("utf-8", "replace")
    ports = [int(p) for p in re.findall(r'class="[^"]*\blistener\b[^"]*"[^>]*?data-port="(\d+)"', html)]
    ports += [int(p) for p in re.findall(r'data-port="(\d+)"[^>]*?class="[^"]*\blistener\b[^"]*"', html)]
    load = {p for p in ports if a.first_port <= p <= a.last_port}
    out["map_status"] = r.get("status")
    out["map_listener_elems"] = len(re.findall(r'class="[^"]*\blistener\b', html))
    out["map_load_ports"] = len(load)
    out["map_has_div"] = 'id="map"' in html
    r = curl(a.base, a.token, "/?view=table")
    html = r.get("body", b"").decode("utf-8", "replace")
    out["table_status"] = r.get("status")
    out["table_rows"] = len(re.findall(r'<tr[^>]*class="[^"]*\blistener\b', html))
    r = curl(a.base, a.token, "/api/ls")
    out["api_ls_status"] = r.get("status")
    try:
        doc = json.loads(r.get("body", b"{}"))
        socks = doc.get("sockets", doc if isinstance(doc, list) else [])
        lp = {s.get("local_port") for s in socks if isinstance(s, dict)}
        out["api_ls_sockets"] = len(socks)
        out["api_ls_load_ports"] = len({p for p in lp if isinstance(p, int) and a.first_port <= p <= a.last_port})
        out["api_ls_with_pid"] = sum(1 for s in socks if isinstance(s, dict) and s.get("pid") is not None)
    except (ValueError, AttributeError):
        out["api_ls_sockets"] = None
    print(json.dumps(out))
    return 0


ASSET_REF = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.I)
ASSET_ANY = re.compile(r"""["'(]\s*((?:\.{0,2}/)?assets/[^"')\s?#]+|/assets/[^"')\s?#]+)""")


def cmd_assets(a):
    """Bytes of every /assets/* the pages reference (and what those assets reference)."""
    pages = {}
    seen = {}
    order = []
    todo = []
    for path in a.path:
        r = curl(a.base, a.token, path)
        html = r.get("body", b"")
        pages[path] = {"status": r.get("status"), "bytes": len(html),
                       "gzip": len(gzip.compress(html, 9)) if html else 0, "assets": []}
        # What a browser gets: the same page asked for with Accept-Encoding (bytes on the wire).
        w = curl(a.base, a.token, path, extra=("-H", "Accept-Encoding: gzip, deflate, br"))
        enc = re.search(r"^content-encoding:\s*([^\r\n]+)", w.get("headers", ""), re.I | re.M)
        pages[path]["wire"] = w.get("size")
        pages[path]["encoding"] = enc.group(1).strip() if enc else "none"
        text = html.decode("utf-8", "replace")
        for ref in ASSET_REF.findall(text):
            u = urllib.parse.urljoin(a.base + path, ref)
            up = urllib.parse.urlsplit(u)
            if up.netloc != urllib.parse.urlsplit(a.base).netloc or not up.path.startswith("/assets/"):
                continue
            if up.path not in pages[path]["assets"]:
                pages[path]["assets"].append(up.path)
            todo.append(up.path)
    refs_of = {}
    while todo:
        p = todo.pop(0)
        if p in seen:
            continue
        r = curl(a.base, a.token, p)
        body = r.get("body", b"")
        w = curl(a.base, a.token, p, extra=("-H", "Accept-Encoding: gzip, deflate, br"))
        enc = re.search(r"^content-encoding:\s*([^\r\n]+)", w.get("headers", ""), re.I | re.M)
        ctype = re.search(r"^content-type:\s*([^\r\n;]+)", r.get("headers", ""), re.I | re.M)
        seen[p] = {"status": r.get("status"), "bytes": len(body), "gzip": len(gzip.compress(body, 9)) if body else 0,
                   "type": ctype.group(1) if ctype else "?", "wire": w.get("size"),
                   "encoding": enc.group(1).strip() if enc else "none"}
        order.append(p)
        refs_of[p] = []
        if re.search(r"\.(css|js|mjs)$", p):
            for ref in ASSET_ANY.findall(body.decode("utf-8", "replace")):
                q = urllib.parse.urlsplit(urllib.parse.urljoin(a.base + p, ref)).path
                if q.startswith("/assets/") and q not in seen:
                    refs_of[p].append(q)
                    todo.append(q)

    def closure(roots):
        out, stack = [], list(roots)
        while stack:
            x = stack.pop(0)
            if x in out:
                continue
            out.append(x)
            stack.extend(refs_of.get(x, []))
        return out

    for path, pg in pages.items():
        pg["closure"] = closure(pg["assets"])
        pg["asset_bytes"] = sum(seen[x]["bytes"] for x in pg["closure"] if seen[x]["status"] == 200)
        pg["asset_gzip"] = sum(seen[x]["gzip"] for x in pg["closure"] if seen[x]["status"] == 200)
    print(json.dumps({"pages": pages, "assets": {p: seen[p] for p in order},
                      "all_bytes": sum(v["bytes"] for v in seen.values() if v["status"] == 200),
                      "all_gzip": sum(v["gzip"] for v in seen.values() if v["status"] == 200)}))
    return 0


def fmt_ms(v):
    if v is None:
        return "-"
    if v >= 1000:
        return "%.2f s" % (v / 1000)
    return "%.1f ms" % v if v < 100 else "%.0f ms" % v


def cmd_report(a):
    res = [json.loads(l) for l in open(a.results) if l.strip()] if a.results and os.path.exists(a.results) else []
    anchors = [json.loads(l) for l in open(a.anchors) if l.strip()] if a.anchors and os.path.exists(a.anchors) else []
    extra = json.load(open(a.extra)) if a.extra and os.path.exists(a.extra) else {}
    anchor = {x["label"]: x for x in anchors}
    ss = anchor.get("ss -tlnp")
    ss_ms = ss["median"] * 1000 if ss else None
    missed = []

    def ratio(ms):
        if not ss_ms or ms is None or ms <= 0:
            return ""
        r = ss_ms / ms
        return ("%.0fx" % r if r >= 10 else "%.1fx" % r) + " faster than ss -tlnp" if r >= 1 else \
            ("%.1fx" % (ms / ss_ms)) + " SLOWER than ss -tlnp"

    print("%-34s %11s %11s %11s %11s %9s   %s" % ("request / command", "server med", "server p95",
                                                  "total med", "total p95", "size", "vs anchor"))
    for r in res:
        if not r.get("ok"):
            print("%-34s %s" % (r["label"], "FAILED: statuses %s %s" % (r.get("statuses"), "; ".join(r.get("errors") or []))))
            continue
        note = ratio(r.get("server_med")) if r["path"] == "/" else ""
        if r.get("no_server_timing"):
            note += " (%d responses without Server-Timing)" % r["no_server_timing"]
        print("%-34s %11s %11s %11s %11s %9s   %s" % (
            r["label"], fmt_ms(r.get("server_med")), fmt_ms(r.get("server_p95")), fmt_ms(r["total_med"]),
            fmt_ms(r["total_p95"]), "%.0f KB" % (r["size"] / 1000), note.strip()))
    for x in anchors:
        note = ""
        if x["label"] != "ss -tlnp" and ss_ms:
            note = "%.2fx ss -tlnp's time" % (x["median"] * 1000 / ss_ms)
        print("%-34s %11s %11s %11s %11s %9s   %s" % (
            x["label"], "", "", fmt_ms(x["median"] * 1000), fmt_ms(x.get("p95", x["max"]) * 1000), "", note))
    print()
    root = next((r for r in res if r["path"] == "/" and r.get("ok")), None)
    if root:
        print("GET / (the map), every request in order (server ms / total ms; w: a warm-up):")
        line = []
        for i, q in enumerate(root["requests"]):
            line.append("%s%s/%s" % ("w:" if i < root["warmup"] else "",
                                       "-" if q.get("server_ms") is None else "%.1f" % q["server_ms"],
                                       "-" if q.get("total_s") is None else "%.1f" % (q["total_s"] * 1000)))
        for i in range(0, len(line), 8):
            print("  " + "  ".join(line[i:i + 8]))
        if ss_ms:
            print("dashboard first page vs ss -tlnp: server time %s (%s), whole request %s (%s)" % (
                fmt_ms(root.get("server_med")), ratio(root.get("server_med")) or "-",
                fmt_ms(root["total_med"]), ratio(root["total_med"]) or "-"))
        t = a.target_ms
        sm, sp = root.get("server_med"), root.get("server_p95")
        if sm is None:
            print("target GET / server time < %d ms: NOT MEASURED (no Server-Timing header)" % t)
            missed.append("GET / has no Server-Timing")
        else:
            st = "OK" if sm < t else "MISSED"
            print("target GET / server time < %d ms: median %s %s; p95 %s %s" % (
                t, fmt_ms(sm), st, fmt_ms(sp), "OK" if sp < t else "over"))
            if sm >= t:
                missed.append("GET / server time median %s >= %d ms" % (fmt_ms(sm), t))
    cold = extra.get("cold")
    if cold and cold.get("ok"):
        print("first GET / after start (cold): server %s, total %s" % (fmt_ms(cold.get("first_server_ms")),
                                                                     fmt_ms(cold["first_total_s"] * 1000)))
    assets = extra.get("assets")
    if assets:
        print()
        lim = a.asset_limit
        for path, pg in assets["pages"].items():
            print("page %-16s HTML %7.1f KB (gzip -9 would be %.1f KB; sent to a browser: %.1f KB, Content-Encoding %s), status %s;" % (
                path, pg["bytes"] / 1000, pg["gzip"] / 1000, (pg.get("wire") or 0) / 1000, pg.get("encoding"), pg["status"]))
            print("      assets it references: %d, %.1f KB (gzip -9 %.1f KB)" % (
                len(pg["closure"]), pg["asset_bytes"] / 1000, pg["asset_gzip"] / 1000))
        for p, v in assets["assets"].items():
            print("  %-40s %8.1f KB  %-24s status %s, sent to a browser %.1f KB (Content-Encoding %s)" % (
                p, v["bytes"] / 1000, v["type"], v["status"], (v.get("wire") or 0) / 1000, v.get("encoding")))
        mp = assets["pages"].get("/")
        if mp:
            bad = [p for p in mp["closure"] if assets["assets"][p]["status"] != 200]
            st = "OK" if mp["asset_bytes"] < lim and not bad else "MISSED"
            print("target embedded assets of the map < %.0f KB: %.1f KB %s (with the HTML: %.1f KB; every asset seen: %.1f KB)%s" % (
                lim / 1000, mp["asset_bytes"] / 1000, st, (mp["asset_bytes"] + mp["bytes"]) / 1000,
                assets["all_bytes"] / 1000, "; not 200: " + ", ".join(bad) if bad else ""))
            if st != "OK":
                missed.append("map assets %.1f KB%s" % (mp["asset_bytes"] / 1000, " (some not 200)" if bad else ""))
    if root or assets:
        print("targets: all met" if not missed else "\n".join("MISSED: " + m for m in missed))
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("wait", "fetch", "check", "assets"):
        p = sub.add_parser(name)
        p.add_argument("--base", required=True)
        p.add_argument("--token", required=True)
        if name == "wait":
            p.add_argument("--seconds", type=float, default=60)
        if name == "fetch":
            p.add_argument("--path", required=True)
            p.add_argument("--runs", type=int, default=20)
            p.add_argument("--warmup", type=int, default=2)
            p.add_argument("--gap", type=float, default=0.0)
            p.add_argument("--label")
        if name == "check":
            p.add_argument("--first-port", type=int, required=True)
            p.add_argument("--last-port", type=int, required=True)
        if name == "assets":
            p.add_argument("--path", action="append", default=[])
    p = sub.add_parser("report")
    p.add_argument("--results")
    p.add_argument("--anchors")
    p.add_argument("--extra")
    p.add_argument("--target-ms", type=int, default=100)
    p.add_argument("--asset-limit", type=int, default=200000)
    a = ap.parse_args()
    if a.cmd == "assets" and not a.path:
        a.path = ["/"]
    return {"wait": cmd_wait, "fetch": cmd_fetch, "check": cmd_check, "assets": cmd_assets,
            "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
