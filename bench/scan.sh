#!/usr/bin/env bash
# Scanner benchmark: portolan's connect and raw SYN scans beside nmap -sT/-sS -T4, masscan
# and RustScan, full range 1-65535, on the namespace testbed (crates/portolan-testbed): one
# host with 13 open ports, 1,102 filtered (nftables DROP) and the rest closed, behind a
# user-space wire; then a UDP scan beside nmap -sU on a host that keeps Linux's ICMP rate
# limit; then the raw rate on a veth pair with no wire, beside masscan.
#   scenario A: 20 ms RTT (2 ms jitter)
#   scenario B: 100 ms RTT, 5% loss each way (2 ms jitter)
#   scenario U: UDP, ports 1-N (default 100), 10 ms RTT, dnsmasq/snmpd/ntpd/echo on the
#               target, 10 dropped ports, every other port closed, the target's default
#               ICMP rate limit (one port unreachable per second per peer, burst of six)
#   scenario V: a veth pair (no wire): portolan -sS at full speed and masscan at rising
#               rates; the highest rate at which masscan still finds every open port
# Prints times, ratios and accuracy against the ground truth. Needs root (namespaces).
#
#   bench/scan.sh [--runs R] [--nmap-cap SECS] [--no-install] [--only A,B,U,V] [--udp-ports N]
# Traffic stays inside the testbed's namespaces (198.18.0.0/15); nothing else is touched.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
runs=3
nmap_cap=600
install=1
only=A,B,U,V
udp_ports=100
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --nmap-cap) nmap_cap=$2; shift 2 ;;
    --no-install) install=0; shift ;;
    --only) only=$2; shift 2 ;;
    --udp-ports) udp_ports=$2; shift 2 ;;
    *) echo "usage: bench/scan.sh [--runs R] [--nmap-cap SECS] [--no-install] [--only A,B,U,V] [--udp-ports N]" >&2; exit 2 ;;
  esac
done
say() { printf 'scan-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (network namespaces)"; exit 2; }
wants() { [[ ",$only," == *",$1,"* ]]; }

tools=/tmp/portolan-bench-tools
if ((install)); then
  missing=()
  for p in nmap nft:nftables ip:iproute2 masscan bc dnsmasq:dnsmasq-base snmpd ntpd:ntpsec; do
    cmd=${p%%:*}; pkg=${p#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if [ ! -x "$tools/bin/rustscan" ]; then
    say "installing rustscan from crates.io into $tools (a few minutes, once)"
    cargo install rustscan --locked --root "$tools" -q || say "rustscan could not be installed; its rows stay empty"
  fi
fi
rustscan="$tools/bin/rustscan"
say "building portolan and portolan-testbed (release)"
(cd "$root" && cargo build --release -q -p portolan -p portolan-testbed)
portolan="$root/target/release/portolan"
testbed="$root/target/release/portolan-testbed"

work=$(mktemp -d)
tb_pid=
vnets=()
cleanup() {
  [ -n "$tb_pid" ] && kill "$tb_pid" 2>/dev/null && wait "$tb_pid" 2>/dev/null
  "$testbed" down --all >/dev/null 2>&1 || true
  for n in "${vnets[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  pkill -f "$work/listen.py" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

host=198.18.0.10
open_ports=22,25,53,80,110,143,443,3306,5432,6379,8080,8443,27017
drop_range=10000-11101
touch "$work/times"

timed() { # tool scenario run command...
  local tool=$1 scen=$2 i=$3; shift 3
  local t0; t0=$(date +%s.%N)
  if "$@"; then
    echo "$tool $scen $i $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
  else
    echo "$tool $scen $i >$nmap_cap" >>"$work/times"
  fi
}

up_testbed() { # name args... ; sets ns
  local name=$1; shift
  mkfifo "$work/stdin.$name"
  "$testbed" up "$@" <"$work/stdin.$name" >"$work/tb.$name.json" &
  tb_pid=$!
  exec 9>"$work/stdin.$name"   # holding the pipe open keeps the testbed up
  for _ in $(seq 200); do [ -s "$work/tb.$name.json" ] && break; sleep 0.1; done
  ns=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["scanner_ns"])' "$work/tb.$name.json")
}
down_testbed() {
  exec 9>&-
  wait "$tb_pid" 2>/dev/null || true
  tb_pid=
}

run_scenario() { # name rtt_ms loss
  local name=$1 rtt=$2 loss=$3
  say "scenario $name: rtt ${rtt} ms, loss $loss: starting the testbed"
  up_testbed "$name" --rtt-ms "$rtt" --jitter-ms 2 --loss "$loss" --seed 11 \
    --hosts "v4=$host open=$open_ports drop=$drop_range"
  for i in $(seq "$runs"); do
    timed portolan "$name" "$i" sh -c "ip netns exec $ns $portolan scan $host -p- -n --jsonl --no-progress >$work/portolan.$name.$i.jsonl"
    timed portolan-syn "$name" "$i" sh -c "ip netns exec $ns $portolan scan -sS $host -p- -n --jsonl --no-progress >$work/portolan-syn.$name.$i.jsonl"
    # nmap can take far longer than the cap on a lossy link: once it hits the cap in a
    # scenario, it is not run again there.
    for m in sT sS; do
      if ! grep -q "^nmap-$m $name .* >" "$work/times"; then
        timed "nmap-$m" "$name" "$i" timeout "$nmap_cap" ip netns exec "$ns" nmap -"$m" -T4 -p- -n -Pn "$host" -oX "$work/nmap-$m.$name.$i.xml" >/dev/null 2>&1
      fi
    done
    # masscan at 20,000 packets per second, its own answers waited for 2 s; on the wire's
    # TUN device it does not exit after its wait, so it is stopped well after the sweep
    # and the wait (its time here is that cap); what it found is read from the lines it
    # prints as it finds them.
    timed masscan "$name" "$i" sh -c "timeout -k 2 12 ip netns exec $ns masscan -p1-65535 $host --rate 20000 --wait 2 -e pt-wire --router-mac 02:00:00:00:00:01 --source-ip 198.19.255.1 >$work/masscan.$name.$i.txt 2>/dev/null; true"
    if [ -x "$rustscan" ]; then
      timed rustscan "$name" "$i" sh -c "ip netns exec $ns $rustscan -a $host -r 1-65535 -g --ulimit 20000 >$work/rustscan.$name.$i.txt 2>/dev/null || true"
    fi
  done
  down_testbed
}

udp_host=198.18.0.20
run_udp() {
  say "scenario U: UDP ports 1-$udp_ports, ICMP rate-limited target"
  up_testbed U --rtt-ms 10 --seed 12 --icmp-rate-limit \
    --hosts "v4=$udp_host udp-drop=60-69 svc=dns,snmp,ntp,echo"
  # Three more source addresses on the scanner's side, for -S (each is its own peer to
  # the target's ICMP rate limit).
  for a in 2 3 4; do ip -n "$ns" addr add "198.19.255.$a/32" dev pt-wire; done
  for i in $(seq "$runs"); do
    timed portolan-udp U "$i" sh -c "ip netns exec $ns $portolan scan -sU $udp_host -p 1-$udp_ports -n --jsonl --no-progress >$work/portolan-udp.U.$i.jsonl 2>$work/portolan-udp.U.$i.err"
    timed portolan-udp4 U "$i" sh -c "ip netns exec $ns $portolan scan -sU $udp_host -p 1-$udp_ports -n --jsonl --no-progress -S 198.19.255.1,198.19.255.2,198.19.255.3,198.19.255.4 >$work/portolan-udp4.U.$i.jsonl"
    if ! grep -q "^nmap-sU U .* >" "$work/times"; then
      timed nmap-sU U "$i" timeout "$nmap_cap" ip netns exec "$ns" nmap -sU -T4 -p "1-$udp_ports" -n -Pn "$udp_host" -oX "$work/nmap-sU.U.$i.xml" >/dev/null 2>&1
    fi
  done
  down_testbed
}

run_veth() {
  say "scenario V: veth pair, no wire"
  local s=pbv-scan-$$ t=pbv-target-$$
  vnets=("$s" "$t")
  ip netns add "$s"; ip netns add "$t"
  ip link add pbv0 netns "$s" type veth peer name pbv1 netns "$t"
  ip -n "$s" addr add 198.18.100.1/24 dev pbv0; ip -n "$t" addr add 198.18.100.2/24 dev pbv1
  ip -n "$s" link set pbv0 up; ip -n "$t" link set pbv1 up
  ip -n "$s" link set lo up; ip -n "$t" link set lo up
  ip netns exec "$t" nft -f - <<EOF
table inet pbv {
  chain in {
    type filter hook input priority 0;
    tcp dport ${drop_range} drop
  }
}
EOF
  cat >"$work/listen.py" <<'EOF'
import socket, sys, time
socks = []
for p in sys.argv[1].split(","):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("198.18.100.2", int(p))); s.listen(4096); socks.append(s)
time.sleep(float(sys.argv[2]))
EOF
  ip netns exec "$t" python3 "$work/listen.py" "$open_ports" 900 &
  sleep 1
  local mac; mac=$(ip -n "$t" -j link show pbv1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')
  # Both tools' SYN rate, read the same way: the target's count of resets sent (one per
  # SYN to a closed port, whoever sent it) every 5 ms; the peak over 100 ms, and the mean
  # while the rate is above half that peak.
  cat >"$work/synrate.py" <<'EOT'
import sys, time, signal
def rsts():
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutRsts")])
samples, stop = [], []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
end = time.monotonic() + float(sys.argv[1])
while not stop and time.monotonic() < end:
    samples.append((time.monotonic(), rsts()))
    time.sleep(0.005)
peak, j = 0.0, 0
for i in range(len(samples)):
    while samples[i][0] - samples[j][0] > 0.1: j += 1
    if samples[i][0] - samples[j][0] >= 0.095:
        peak = max(peak, (samples[i][1] - samples[j][1]) / (samples[i][0] - samples[j][0]))
bt = bn = 0.0
for (t0, n0), (t1, n1) in zip(samples, samples[1:]):
    if t1 > t0 and (n1 - n0) / (t1 - t0) >= peak / 2: bt += t1 - t0; bn += n1 - n0
print(f"{peak:.0f} {bn / bt if bt else 0:.0f}")
EOT
  for i in $(seq "$runs"); do
    ip netns exec "$t" python3 "$work/synrate.py" 60 >"$work/synrate.V.$i.txt" &
    local sampler=$!
    sleep 0.3
    timed portolan-syn V "$i" sh -c "ip netns exec $s $portolan scan -sS 198.18.100.2 -p- -n --jsonl --no-progress >$work/portolan-syn.V.$i.jsonl"
    sleep 0.2
    kill "$sampler"; wait "$sampler" || true
  done
  for rate in 50000 100000 200000 400000 800000; do
    ip netns exec "$t" python3 "$work/synrate.py" 60 >"$work/synrate.masscan.$rate.txt" &
    local sampler=$!
    sleep 0.3
    timed "masscan@$rate" V 1 sh -c "timeout -k 2 30 ip netns exec $s masscan -p1-65535 198.18.100.2 --rate $rate --wait 2 -e pbv0 --router-mac $mac --source-ip 198.18.100.1 --source-port 61000 >$work/masscan.V.$rate.txt 2>$work/masscan.V.$rate.err; true"
    kill "$sampler"; wait "$sampler" || true
  done
  pkill -f "$work/listen.py" || true
  ip netns del "$s"; ip netns del "$t"; vnets=()
}

wants A && run_scenario A 20 0
wants B && run_scenario B 100 0.05
wants U && run_udp
wants V && run_veth

python3 - "$work" "$open_ports" "$drop_range" "$runs" "$nmap_cap" "$udp_ports" <<'PY'
import glob, json, os, re, statistics, sys
import xml.etree.ElementTree as ET
work, open_s, drop_s, runs, cap, udp_n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
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
def acc_jsonl(tool, scen, truthf, n):
    wrong = missing = 0; files = sorted(glob.glob(os.path.join(work, f"{tool}.{scen}.*.jsonl")))
    for f in files:
        seen = {}
        for line in open(f):
            d = json.loads(line); seen[d["port"]] = d["state"]
        wrong += sum(1 for p, s in seen.items() if s != truthf(p))
        missing += n - len(seen)
    return f"{wrong} wrong, {missing} missing over {len(files)} runs (every state checked)"
def acc_nmap(tool, scen, truthf, n, states):
    out = []
    for f in sorted(glob.glob(os.path.join(work, f"{tool}.{scen}.*.xml"))):
        try: t = ET.parse(f)
        except ET.ParseError: out.append("incomplete"); continue
        listed = {int(p.get("portid")): p.find("state").get("state") for p in t.iter("port")}
        extra = {e.get("state"): int(e.get("count")) for e in t.iter("extraports")}
        wrong = sum(1 for p, s in listed.items() if s != truthf(p))
        counts = {s: sum(1 for v in listed.values() if v == s) + extra.get(s, 0) for s in states}
        exp = {s: sum(1 for p in range(1, n + 1) if truthf(p) == s) for s in states}
        off = sum(abs(counts[s] - exp[s]) for s in exp)
        out.append(f"{wrong} listed wrong, counts off by {off}" + (f" ({counts.get('closed', 0)} closed)" if "open|filtered" in states else ""))
    return "; ".join(out) if out else "not run"
def acc_open_list(files, parse):
    out = []
    for f in files:
        got = parse(open(f).read())
        out.append(f"open {len(got & open_set)}/{len(open_set)}, {len(got - open_set)} false")
    return "; ".join(out)
def rustscan_ports(txt):
    m = re.search(r"\[([0-9, ]*)\]", txt)
    return {int(x) for x in m.group(1).split(",") if x.strip()} if m else set()
def masscan_ports(txt):
    return {int(m.group(1)) for m in re.finditer(r"Discovered open port (\d+)/tcp", txt)}
def masscan_kpps(path):
    try: txt = open(path).read()
    except OSError: return None
    rates = [float(x) for x in re.findall(r"rate:\s*([0-9.]+)-kpps", txt)]
    return max(rates) if rates else None

print(f"\nportolan scanner benchmark ({runs} runs, median); command: bench/scan.sh --runs {runs}")
print(f"full range 1-65535, 1 host: {len(open_set)} open, {len(filtered)} filtered, {65535-len(open_set)-len(filtered)} closed")
for scen, label in (("A", "20 ms RTT"), ("B", "100 ms RTT, 5% loss")):
    if not any(k[1] == scen for k in times): continue
    p, ps = med("portolan", scen); s, ss = med("portolan-syn", scen)
    print(f"\n[{label}]")
    print(f"  {'portolan scan -p- -n':30} {ps:>20}   {acc_jsonl('portolan', scen, truth, 65535)}")
    r = f"   -sS {p/s:.1f}x faster than portolan's connect scan (target >= 2x)" if p and s else ""
    print(f"  {'portolan scan -sS -p- -n':30} {ss:>20}   {acc_jsonl('portolan-syn', scen, truth, 65535)}{r}")
    for m in ("sT", "sS"):
        n, ns_ = med(f"nmap-{m}", scen)
        base = p if m == "sT" else s
        target = "(target >= 5x)" if m == "sT" else "(target >= 4x)"
        ratio = f"portolan{' -sS' if m == 'sS' else ''} {n/base:.1f}x faster {target}" if base and n else ("nmap stopped at the cap" if base else "")
        print(f"  {'nmap -' + m + ' -T4 -p-':30} {ns_:>20}   {acc_nmap('nmap-' + m, scen, truth, 65535, ('open', 'closed', 'filtered'))}   {ratio}")
    mm, ms = med("masscan", scen)
    files = sorted(glob.glob(os.path.join(work, f"masscan.{scen}.*.txt")))
    print(f"  {'masscan --rate 20000':30} {ms:>20}   {acc_open_list(files, masscan_ports)} (reports open ports only)")
    rr, rs = med("rustscan", scen)
    files = sorted(glob.glob(os.path.join(work, f"rustscan.{scen}.*.txt")))
    ratio = f"   portolan -sS {rr/s:.1f}x faster" if s and rr else ""
    print(f"  {'rustscan -r 1-65535':30} {rs:>20}   {(acc_open_list(files, rustscan_ports) + ' (open only)') if files else 'not installed'}{ratio}")

if any(k[1] == "U" for k in times):
    svc = {7, 53, 123, 161}; dropped = set(range(60, 70))
    def utruth(p): return "open" if p in svc else "open|filtered" if p in dropped else "closed"
    closed = sum(1 for p in range(1, udp_n + 1) if utruth(p) == "closed")
    floor = max(closed - 6, 0) / 1.0
    print(f"\n[UDP, ports 1-{udp_n}: {len(svc & set(range(1, udp_n+1)))} services, {len(dropped & set(range(1, udp_n+1)))} dropped, {closed} closed; the target keeps Linux's ICMP rate limit]")
    print(f"  floor: {closed} port unreachables at one per second after a burst of six = {floor:.0f} s per source address")
    u, us = med("portolan-udp", "U"); u4, u4s = med("portolan-udp4", "U"); n, ns_ = med("nmap-sU", "U")
    print(f"  {'portolan scan -sU':30} {us:>20}   {acc_jsonl('portolan-udp', 'U', utruth, udp_n)}" + (f"   {u/floor:.2f}x the floor" if u and floor else ""))
    print(f"  {'portolan scan -sU -S (4 addrs)':30} {u4s:>20}   {acc_jsonl('portolan-udp4', 'U', utruth, udp_n)}" + (f"   {u4/(floor/4):.2f}x the 4-address floor" if u4 and floor else ""))
    ratio = f"   portolan {u/n:.2f}x nmap's time (target <= 0.7x)" if u and n else ""
    print(f"  {'nmap -sU -T4':30} {ns_:>20}   {acc_nmap('nmap-sU', 'U', utruth, udp_n, ('open', 'closed', 'open|filtered'))}{ratio}")

if any(k[1] == "V" for k in times):
    s, ss = med("portolan-syn", "V")
    print("\n[veth pair, no wire: full range 1-65535, 13 open, 1,102 dropped]")
    print(f"  {'portolan scan -sS -p- -n':30} {ss:>20}   {acc_jsonl('portolan-syn', 'V', truth, 65535)}" + (f"   {65535/s:,.0f} ports/s, whole scan" if s else ""))
    peaks, means = [], []
    for f in sorted(glob.glob(os.path.join(work, "synrate.V.*.txt"))):
        try: pk, mn = (float(x) for x in open(f).read().split())
        except (OSError, ValueError): continue
        peaks.append(pk); means.append(mn)
    ours = statistics.median(peaks) if peaks else None
    if ours: print(f"  {'':30} {'':>20}   SYN rate at the target: peak {ours:,.0f}/s (100 ms), mean {statistics.median(means):,.0f}/s while sending (medians)")
    best = None
    for rate in (50000, 100000, 200000, 400000, 800000):
        f = os.path.join(work, f"masscan.V.{rate}.txt")
        if not os.path.exists(f): continue
        got = masscan_ports(open(f).read())
        ok = open_set <= got
        k = masscan_kpps(os.path.join(work, f"masscan.V.{rate}.err"))
        try: pk, mn = (float(x) for x in open(os.path.join(work, f"synrate.masscan.{rate}.txt")).read().split())
        except (OSError, ValueError): pk = mn = 0.0
        if ok and pk: best = max(best or 0, pk)
        print(f"  {'masscan --rate ' + str(rate):30} {'':>20}   open {len(got & open_set)}/{len(open_set)}, {len(got - open_set)} false; at the target: peak {pk:,.0f}/s, mean {mn:,.0f}/s (its own figure: {k or 0:.0f} kpps)")
    if best: print(f"  masscan's highest peak SYN rate finding every open port: {best:,.0f}/s" + (f"; portolan -sS's {ours/best:.2f}x that (target >= 1x)" if ours else ""))
PY
