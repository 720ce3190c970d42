#!/usr/bin/env bash
# Service-detection benchmark: `portolan scan --probe` beside `nmap -sV` on the same zoo of
# real servers from Debian's packages, started on loopback on unusual ports. Prints, per
# service, what each tool identified (service / product / version) against what the
# installed package says, and the total time of each tool. Needs root (sshd).
#
#   bench/probe.sh [--runs R] [--no-install]
# Traffic stays on loopback.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
runs=3
install=1
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    *) echo "usage: bench/probe.sh [--runs R] [--no-install]" >&2; exit 2 ;;
  esac
done
say() { printf 'probe-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (sshd)"; exit 2; }
if ((install)); then
  missing=()
  for p in nmap:nmap sshd:openssh-server nginx:nginx-light redis-server:redis-server memcached:memcached; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
  done
  /usr/bin/python3 -c 'import flask' 2>/dev/null || missing+=(python3-flask)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
say "building portolan (release)"
(cd "$root" && cargo build --release -q -p portolan)
portolan="$root/target/release/portolan"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
upstream() { dpkg-query -W -f='${Version}' "$1" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*//'; }
# The truth version for a zoo entry: `py:MODULE` is the distribution that /usr/bin/python3
# (the interpreter running the Flask app) imports, Debian's or pip's; else a Debian package.
truth_version() {
  case $1 in
    py:*) /usr/bin/python3 -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "${1#py:}" ;;
    *) upstream "$1" ;;
  esac
}

# The zoo: name port truth-source (Debian package, or py:MODULE) product
zoo=()
p=$(free_port); ssh-keygen -q -t ed25519 -N '' -f "$work/key"; mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f /dev/null -p "$p" -o ListenAddress=127.0.0.1 -o PidFile=none -h "$work/key" 2>/dev/null & pids+=($!)
zoo+=("ssh $p openssh-server OpenSSH")
p=$(free_port); mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
pid $work/nginx/nginx.pid; error_log $work/nginx/error.log; events {}
http { access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$p; root $work/nginx; } }
EOF
/usr/sbin/nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>/dev/null & pids+=($!)
zoo+=("http $p nginx-common nginx")
p=$(free_port)
redis-server --port "$p" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null & pids+=($!)
zoo+=("redis $p redis-server Redis")
p=$(free_port)
memcached -l 127.0.0.1 -p "$p" -U 0 -u nobody & pids+=($!)
zoo+=("memcached $p memcached Memcached")
p=$(free_port)
printf "from flask import Flask\napp = Flask('zoo')\n@app.route('/')\ndef hi():\n    return 'hi'\napp.run(host='127.0.0.1', port=%s)\n" "$p" >"$work/app.py"
/usr/bin/python3 "$work/app.py" >/dev/null 2>&1 & pids+=($!)
zoo+=("http $p py:werkzeug Werkzeug")

ports=$(for z in "${zoo[@]}"; do set -- $z; printf '%s,' "$2"; done); ports=${ports%,}
for z in "${zoo[@]}"; do
  set -- $z
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && break; sleep 0.1; done
done
truth="$work/truth.tsv"
for z in "${zoo[@]}"; do
  set -- $z
  v=$(truth_version "$3")
  # An empty truth would score any version right (startswith("")).
  [ -n "$v" ] || { say "no installed version for $3"; exit 1; }
  printf '%s\t%s\t%s\t%s\n' "$2" "$1" "$4" "$v" >>"$truth"
done

say "zoo up on ports $ports; $runs runs each"
for i in $(seq "$runs"); do
  t0=$(date +%s.%N)
  # Exit 1 is "no open port" (a result to score); 2 and above is a failure of the tool.
  rc=0
  "$portolan" scan 127.0.0.1 -p "$ports" --probe -n --jsonl --no-progress >"$work/portolan.$i.jsonl" || rc=$?
  ((rc <= 1)) || { say "portolan scan failed (exit $rc)"; exit 1; }
  echo "portolan $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
  t0=$(date +%s.%N)
  # nmap has no "nothing open" exit code: anything but 0 is a failure.
  rc=0
  nmap -sV -p "$ports" -n -Pn 127.0.0.1 -oX "$work/nmap.$i.xml" >/dev/null 2>"$work/nmap.$i.err" || rc=$?
  ((rc == 0)) || { say "nmap failed (exit $rc):"; cat "$work/nmap.$i.err" >&2; exit 1; }
  echo "nmap $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
done

python3 - "$work" "$runs" <<'EOF'
import json, statistics, sys, xml.etree.ElementTree as ET
work, runs = sys.argv[1], int(sys.argv[2])
truth = {}
for line in open(f"{work}/truth.tsv"):
    port, svc, prod, ver = line.rstrip("\n").split("\t")
    if not ver:
        sys.exit(f"no truth version for port {port} ({svc} / {prod})")
    truth[int(port)] = (svc, prod, ver)
times = {}
for line in open(f"{work}/times"):
    tool, t = line.split()
    times.setdefault(tool, []).append(float(t))
def portolan(i):
    got = {}
    for line in open(f"{work}/portolan.{i}.jsonl"):
        v = json.loads(line)
        got[v["port"]] = (v.get("service") or "", v.get("product") or "", v.get("version") or "")
    return got
def nmap(i):
    got = {}
    try:
        root = ET.parse(f"{work}/nmap.{i}.xml").getroot()
    except Exception:
        return got
    for p in root.iter("port"):
        s = p.find("service")
        if s is None:
            continue
        got[int(p.get("portid"))] = (s.get("name", ""), s.get("product", ""), s.get("version", ""))
    return got
def score(got, port):
    svc, prod, ver = truth[port]
    g = got.get(port, ("", "", ""))
    ok_s = g[0] == svc
    ok_p = prod.lower() in g[1].lower() if g[1] else False
    ok_v = g[2] == ver or (bool(g[2]) and g[2].startswith(ver))
    false = bool(g[2]) and not ok_v
    return g, (ok_s, ok_p, ok_v, false)
print(f"\nservice detection benchmark ({runs} runs, median time), zoo of {len(truth)} real servers on loopback")
print("command: bench/probe.sh --runs", runs)
print(f"\n  {'port':>6}  {'truth':34} {'portolan --probe':44} {'nmap -sV':44}")
tot = {"portolan": [0, 0, 0, 0], "nmap": [0, 0, 0, 0]}
pg, ng = portolan(1), nmap(1)
for port in sorted(truth):
    svc, prod, ver = truth[port]
    row = [f"  {port:>6}  {svc + ' / ' + prod + ' / ' + ver:34}"]
    for tool, got in (("portolan", pg), ("nmap", ng)):
        g, (s, p, v, f) = score(got, port)
        for k, x in enumerate((s, p, v, f)):
            tot[tool][k] += int(x)
        mark = ("S" if s else "-") + ("P" if p else "-") + ("V" if v else "-") + (" FALSE" if f else "")
        row.append(f"{(' / '.join(g))[:36]:36} {mark:7}")
    print(" ".join(row))
print()
for tool in ("portolan", "nmap"):
    s, p, v, f = tot[tool]
    t = statistics.median(times[tool])
    print(f"  {tool:9} service {s}/{len(truth)}  product {p}/{len(truth)}  version {v}/{len(truth)}  false {f}   {t:.2f} s")
ratio = statistics.median(times["nmap"]) / max(statistics.median(times["portolan"]), 1e-9)
print(f"\n  portolan took 1/{ratio:.1f} of nmap's time (target: at most 1/2), S/P/V = service/product/version right")
EOF
