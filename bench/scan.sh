#!/usr/bin/env bash
# Scanner benchmark: portolan scan, nmap -sT -T4 and RustScan side by side, full range
# 1-65535, on the namespace testbed (crates/portolan-testbed): one host with 13 open ports,
# 1,102 filtered (nftables DROP) and the rest closed, behind a user-space wire.
#   scenario A: 20 ms RTT (2 ms jitter)
#   scenario B: 100 ms RTT, 5% loss each way (2 ms jitter)
# Prints times, ratios and accuracy against the ground truth. Needs root (namespaces).
#
#   bench/scan.sh [--runs R] [--nmap-cap SECS] [--no-install]
# Traffic stays inside the testbed's namespaces (198.18.0.0/15); nothing else is touched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
runs=3
nmap_cap=600
install=1
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --nmap-cap) nmap_cap=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    *) echo "usage: bench/scan.sh [--runs R] [--nmap-cap SECS] [--no-install]" >&2; exit 2 ;;
  esac
done
say() { printf 'scan-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (network namespaces)"; exit 2; }

tools=/tmp/portolan-bench-tools
if ((install)); then
  missing=()
  for p in nmap nft:nftables ip:iproute2; do
    cmd=${p%%:*}; pkg=${p#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$tools/bin/rustscan" ]; then
    say "installing rustscan from crates.io into $tools (a few minutes, once)"
    cargo install rustscan --locked --root "$tools" -q
  fi
fi
rustscan="$tools/bin/rustscan"
say "building portolan and portolan-testbed (release)"
(cd "$root" && cargo build --release -q -p portolan -p portolan-testbed)
portolan="$root/target/release/portolan"
testbed="$root/target/release/portolan-testbed"

work=$(mktemp -d)
tb_pid=
cleanup() {
  [ -n "$tb_pid" ] && kill "$tb_pid" 2>/dev/null && wait "$tb_pid" 2>/dev/null
  "$testbed" down --all >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

host=198.18.0.10
open_ports=22,25,53,80,110,143,443,3306,5432,6379,8080,8443,27017
drop_range=10000-11101

run_scenario() { # name rtt_ms loss
  local name=$1 rtt=$2 loss=$3
  say "scenario $name: rtt ${rtt} ms, loss $loss: starting the testbed"
  mkfifo "$work/stdin.$name"
  "$testbed" up --rtt-ms "$rtt" --jitter-ms 2 --loss "$loss" --seed 11 \
    --hosts "v4=$host open=$open_ports drop=$drop_range" <"$work/stdin.$name" >"$work/tb.$name.json" &
  tb_pid=$!
  exec 9>"$work/stdin.$name"   # holding the pipe open keeps the testbed up
  for _ in $(seq 100); do [ -s "$work/tb.$name.json" ] && break; sleep 0.1; done
  ns=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["scanner_ns"])' "$work/tb.$name.json")
  for i in $(seq "$runs"); do
    t0=$(date +%s.%N)
    ip netns exec "$ns" "$portolan" scan "$host" -p- -n --jsonl --no-progress >"$work/portolan.$name.$i.jsonl" || true
    echo "portolan $name $i $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
    # nmap can take far longer than the cap on a lossy link: once it hits the cap in a
    # scenario, it is not run again there.
    if ! grep -q "^nmap $name .* >" "$work/times" 2>/dev/null; then
      t0=$(date +%s.%N)
      timeout "$nmap_cap" ip netns exec "$ns" nmap -sT -T4 -p- -n -Pn "$host" -oX "$work/nmap.$name.$i.xml" >/dev/null 2>&1 \
        && echo "nmap $name $i $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times" \
        || echo "nmap $name $i >$nmap_cap" >>"$work/times"
    fi
    if [ -x "$rustscan" ]; then
      t0=$(date +%s.%N)
      ip netns exec "$ns" "$rustscan" -a "$host" -r 1-65535 -g --ulimit 20000 >"$work/rustscan.$name.$i.txt" 2>/dev/null || true
      echo "rustscan $name $i $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
    fi
  done
  exec 9>&-
  wait "$tb_pid" 2>/dev/null || true
  tb_pid=
}

command -v bc >/dev/null || { ((install)) && apt-get install -y -qq bc >/dev/null; }
run_scenario A 20 0
run_scenario B 100 0.05

python3 - "$work" "$open_ports" "$drop_range" "$runs" "$nmap_cap" <<'PY'
import glob, json, os, re, statistics, sys
import xml.etree.ElementTree as ET
work, open_s, drop_s, runs, cap = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
open_set = {int(p) for p in open_s.split(",")}
a, b = map(int, drop_s.split("-"))
filtered = set(range(a, b + 1))
def truth(p): return "open" if p in open_set else "filtered" if p in filtered else "closed"
times = {}
for line in open(os.path.join(work, "times")):
    tool, scen, i, t = line.split()
    times.setdefault((tool, scen), []).append(t)
def med(tool, scen):
    ts = times.get((tool, scen), [])
    nums = [float(t) for t in ts if not t.startswith(">")]
    if not ts: return None, "n/a"
    if len(nums) < len(ts): return None, f"> {cap} s (stopped)"
    m = statistics.median(nums); return m, f"{m:.2f} s"
def acc_portolan(scen):
    wrong = missing = 0
    for f in sorted(glob.glob(os.path.join(work, f"portolan.{scen}.*.jsonl"))):
        seen = {}
        for line in open(f):
            d = json.loads(line); seen[d["port"]] = d["state"]
        wrong += sum(1 for p, s in seen.items() if s != truth(p))
        missing += 65535 - len(seen)
    return f"{wrong} wrong, {missing} missing over {runs} runs (every state checked)"
def acc_nmap(scen):
    out = []
    for f in sorted(glob.glob(os.path.join(work, f"nmap.{scen}.*.xml"))):
        try: t = ET.parse(f)
        except ET.ParseError: out.append("incomplete"); continue
        listed = {int(p.get("portid")): p.find("state").get("state") for p in t.iter("port")}
        extra = {e.get("state"): int(e.get("count")) for e in t.iter("extraports")}
        # Ports not listed are in the extraports state(s); nmap lists the minority states.
        wrong = sum(1 for p, s in listed.items() if s != truth(p))
        counts = {s: sum(1 for v in listed.values() if v == s) + extra.get(s, 0) for s in ("open", "closed", "filtered")}
        exp = {"open": len(open_set), "filtered": len(filtered), "closed": 65535 - len(open_set) - len(filtered)}
        off = sum(abs(counts[s] - exp[s]) for s in exp)
        out.append(f"{wrong} listed wrong, counts off by {off}")
    return "; ".join(out) if out else "not run"
def acc_rustscan(scen):
    out = []
    for f in sorted(glob.glob(os.path.join(work, f"rustscan.{scen}.*.txt"))):
        txt = open(f).read()
        m = re.search(r"\[([0-9, ]*)\]", txt)
        got = {int(x) for x in m.group(1).split(",") if x.strip()} if m else set()
        out.append(f"open {len(got & open_set)}/{len(open_set)}, {len(got - open_set)} false")
    return ("; ".join(out) + " (reports open ports only)") if out else "not installed"
print(f"\nportolan scanner benchmark ({runs} runs, median), full range 1-65535, 1 host: "
      f"{len(open_set)} open, {len(filtered)} filtered, {65535-len(open_set)-len(filtered)} closed")
print("command: bench/scan.sh --runs", runs)
for scen, label in (("A", "20 ms RTT"), ("B", "100 ms RTT, 5% loss")):
    p, ps = med("portolan", scen); n, ns_ = med("nmap", scen); r, rs = med("rustscan", scen)
    print(f"\n[{label}]")
    print(f"  {'portolan scan -p- -n':24} {ps:>22}   {acc_portolan(scen)}")
    ratio = f"portolan {n/p:.1f}x faster (target >= 5x)" if p and n else ("nmap stopped at the cap" if p else "")
    print(f"  {'nmap -sT -T4 -p-':24} {ns_:>22}   {acc_nmap(scen)}   {ratio}")
    ratio = f"portolan {r/p:.1f}x faster (target >= 2x)" if p and r else ""
    print(f"  {'rustscan -r 1-65535':24} {rs:>22}   {acc_rustscan(scen)}   {ratio}")
PY
