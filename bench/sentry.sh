#!/usr/bin/env bash
# Sentry benchmark: `portolan sentry` beside scanlogd and psad (Debian's packages), in the
# same run, watching the same traffic, between two network namespaces (198.18.96.0/22 only):
#
#   psn-s-PID (scanners, clients)                      psn-g-PID (guarded host)
#   198.18.96.2/24 --veth vs -- vg-- 198.18.96.1/24     listens on TCP 22, 80, 443 and UDP 53
#   + one source per scanner round 198.18.98.N/32       + 198.18.97.1-64/32 on lo (sweep targets)
#   + ordinary clients 198.18.99.1-40/32
#
# 1. Scanners. For each scanner, ROUNDS times (SLOW_ROUNDS for nmap -sU and -T2), with a
#    source address never used before in the run: start the three detectors afresh in G,
#    capture what G receives from that source (tcpdump, headers only), run the scanner, then
#    read each detector's output: detected or not, and when. Seconds count from the first
#    probe in the capture; probes are the distinct first contacts (address, protocol, port;
#    TCP without ACK or RST, or UDP) G had received from the source when the alarm came,
#    counted in the capture. The sentry's own view (`probes_to_detect`, `detected_ms -
#    started_ms` of its scan event) is shown beside. The alarm's time is the arrival of the
#    sentry's start event (its --events go through a FIFO to a reader that stamps each line)
#    and of scanlogd's and psad's syslog lines (stamped the same way).
#    A long scan (nmap -sU, -T2) is stopped once every detector that can has reported it,
#    or at its cap (SLOW_CAP, 150 s).
# 2. False alarms: QUIET_SECONDS (600) of ordinary traffic (bench/sentry_measure.py: web
#    clients, page loads, SSH sessions, a monitor with a stale check of a closed port, DNS
#    clients, an app that falls back from a closed port, a mail client trying two closed
#    ports now and then; G's own DNS and NTP queries, some answered late, downloads and a
#    long connection). Every scan alert of each detector is a false alarm.
# 3. Flood: masscan SYNs at FLOOD_RATE (100,000) a second to 64 addresses x 65,535 ports of G
#    for FLOOD_SECONDS (20), from one source (FLOOD_PROCS masscan processes sharing the rate
#    with --shard, same source address: masscan alone does not reach 100 kpps here). Twice:
#    the sentry alone (the target), then all three detectors as deployed. Measured from 2 s
#    after the start for FLOOD_SECONDS - 1 s: the rate
#    that reached G (its interface's received packets), the sentry's CPU (utime + stime from
#    /proc, a fraction of one core), packets its rules logged (nft counters) against packets
#    it read (its metrics), its overrun counter; scanlogd's, psad's and the kernel-log
#    reader's CPU.
#
# The detectors:
#  - portolan sentry: `portolan sentry --no-store --events FILE --metrics 127.0.0.1:9479 -q` in G.
#  - scanlogd: Debian's, in G, in a private mount namespace whose /dev/log is a socket of
#    this script's (bench/sentry_measure.py syslog, which timestamps each line on arrival)
#    and whose /run holds the chroot it wants (/run/scanlogd/empty). It reads TCP only.
#  - psad: Debian's, with a private config (from /etc/psad/psad.conf: CHECK_INTERVAL 1
#    instead of 5, no e-mail, no whois or DNS lookups, no auto-blocking, its files in the temp
#    dir), in the same private mount namespace (its syslog alerts come to the same socket), in
#    the foreground. It reads the iptables LOG lines of G's INPUT chain: accept
#    established/related, loopback, TCP 22/80/443 and UDP 53, then LOG (prefix PSN<pid>DROP,
#    level debug, so nothing reaches the console) for the rest; nothing is dropped, so every
#    scanner sees the same host whoever watches. Kernel log lines from a namespace need
#    net.netfilter.nf_log_all_netns=1 (set for the run, restored on exit); a reader of
#    /dev/kmsg (sentry_measure.py kmsg) writes them to psad's file in syslog's format, as
#    rsyslog would. A psad alert is its "scan detected" syslog line.
#
# Targets (the issue, for portolan sentry): every scanner detected; fast scans within 10
# probes and 1 s; nmap -T2 within 2 minutes; zero false alarms; no drops at 100 kpps under
# half a core. A MISS still exits 0; exit 2 is a broken setup.
#
#   bench/sentry.sh [--rounds N] [--slow-rounds N] [--quiet-seconds S] [--flood-seconds S]
#                   [--flood-rate PPS] [--flood-procs N] [--only LIST] [--no-install]
#                   [--no-build] [--portolan PATH] [--keep DIR]
# The same settings as environment variables: ROUNDS (3), SLOW_ROUNDS (1), QUIET_SECONDS
# (600), FLOOD_SECONDS (20), FLOOD_RATE (100000), FLOOD_PROCS (2), SLOW_CAP (150), ONLY.
# --only takes scanner names (nmap-sS nmap-sT nmap-sF nmap-sN nmap-sX nmap-sU nmap-T2
# masscan zmap rustscan portolan-sS portolan-connect) and the phases quiet and flood.
# Needs root. Everything it starts runs inside its two namespaces and is stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
measure="$here/sentry_measure.py"

rounds=${ROUNDS:-3}
slow_rounds=${SLOW_ROUNDS:-1}
quiet=${QUIET_SECONDS:-600}
flood_secs=${FLOOD_SECONDS:-20}
flood_rate=${FLOOD_RATE:-100000}
flood_procs=${FLOOD_PROCS:-2}
slow_cap=${SLOW_CAP:-150}
only=${ONLY:-}
install=1
build=1
portolan=""
keep=""
usage() {
  echo "usage: bench/sentry.sh [--rounds N] [--slow-rounds N] [--quiet-seconds S] [--flood-seconds S]" >&2
  echo "       [--flood-rate PPS] [--flood-procs N] [--only LIST] [--no-install] [--no-build] [--portolan PATH] [--keep DIR]" >&2
  exit 2
}
while (($#)); do
  case $1 in
    --rounds) rounds=${2:?}; shift 2 ;;
    --slow-rounds) slow_rounds=${2:?}; shift 2 ;;
    --quiet-seconds) quiet=${2:?}; shift 2 ;;
    --flood-seconds) flood_secs=${2:?}; shift 2 ;;
    --flood-rate) flood_rate=${2:?}; shift 2 ;;
    --flood-procs) flood_procs=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --no-install) install=0; shift ;;
    --no-build) build=0; shift ;;
    --portolan) portolan=${2:?}; build=0; shift 2 ;;
    --keep) keep=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
say() { printf 'sentry-bench: %s\n' "$*" >&2; }
((rounds >= 1 && rounds <= 20)) || { say "--rounds: 1 to 20"; exit 2; }
((slow_rounds >= 1 && slow_rounds <= 5)) || { say "--slow-rounds: 1 to 5"; exit 2; }
((quiet >= 10 && quiet <= 7200)) || { say "--quiet-seconds: 10 to 7200"; exit 2; }
((flood_secs >= 5 && flood_secs <= 300)) || { say "--flood-seconds: 5 to 300"; exit 2; }
((flood_procs >= 1 && flood_procs <= 8)) || { say "--flood-procs: 1 to 8"; exit 2; }
((slow_cap >= 30 && slow_cap <= 1800)) || { say "SLOW_CAP: 30 to 1800"; exit 2; }
[ "$(id -u)" = 0 ] || { say "needs root (network namespaces, nftables, iptables, /dev/kmsg)"; exit 2; }
wanted() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }

if ((install)); then
  missing=()
  for p in nmap masscan zmap scanlogd psad tcpdump nft:nftables iptables unshare:util-linux nsenter:util-linux curl; do
    cmd=${p%%:*}; pkg=${p#*:}
    command -v "$cmd" >/dev/null || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]} (services are not started: the script runs its own)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
for c in nmap masscan zmap scanlogd psad tcpdump nft iptables unshare nsenter curl python3; do
  command -v "$c" >/dev/null || { say "$c is missing"; exit 2; }
done
rustscan=""
for r in /var/cache/portolan-test-tools/bin/rustscan /tmp/portolan-bench-tools/bin/rustscan "$(command -v rustscan || true)"; do
  [ -n "$r" ] && [ -x "$r" ] && { rustscan=$r; break; }
done
if [ -z "$rustscan" ] && ((install)) && wanted rustscan; then
  say "installing RustScan (cargo install rustscan --locked, into /tmp/portolan-bench-tools; a few minutes)"
  cargo install rustscan --locked --root /tmp/portolan-bench-tools -q && rustscan=/tmp/portolan-bench-tools/bin/rustscan
fi
if ((build)); then
  say "building portolan (release)"
  (cd "$root" && cargo build --release -q -p portolan)
fi
portolan=${portolan:-$root/target/release/portolan}
"$portolan" sentry --help >/dev/null 2>&1 || { say "$portolan has no sentry command"; exit 2; }

G=psn-g-$$ S=psn-s-$$
GA=198.18.96.1 SA=198.18.96.2
LOGP="PSN$$DROP"
work=$(mktemp -d /tmp/portolan-sentry-bench.XXXXXX)
chmod 755 "$work"
old_nf_log=$(sysctl -n net.netfilter.nf_log_all_netns 2>/dev/null || echo "")
cleaned=0
stop_ns() { # NS: every process in it, TERM then KILL (they are all this script's)
  local ns=$1 pids pass
  for pass in 1 2 3 4 5 6; do
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [ -z "${pids// /}" ] && return 0
    if ((pass < 3)); then kill -TERM $pids 2>/dev/null; else kill -KILL $pids 2>/dev/null; fi
    sleep 0.5
  done
}
cleanup() {
  ((cleaned)) && return
  cleaned=1
  set +e
  {
    for ns in $G $S; do stop_ns "$ns"; ip netns del "$ns"; done
    [ -n "$old_nf_log" ] && sysctl -qw net.netfilter.nf_log_all_netns="$old_nf_log"
    wait
    if [ -n "$keep" ]; then
      mkdir -p "$keep" && cp -r "$work/." "$keep/" && say "raw files kept in $keep"
    fi
    rm -rf "$work"
  } 2>/dev/null
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP

in_g() { ip netns exec $G "$@"; }
in_s() { ip netns exec $S "$@"; }
now() { date +%s.%N; }

# --- the two hosts --------------------------------------------------------------------
ip netns add $G; ip netns add $S
ip -n $G link set lo up; ip -n $S link set lo up
ip link add vg netns $G type veth peer name vs netns $S
ip -n $G addr add $GA/24 dev vg
ip -n $S addr add $SA/24 dev vs
ip -n $G link set vg up; ip -n $S link set vs up
for i in $(seq 1 64); do ip -n $G addr add 198.18.97.$i/32 dev lo; done
ip -n $S route add 198.18.97.0/24 via $GA dev vs
ip -n $G route add 198.18.98.0/24 via $SA dev vg
ip -n $G route add 198.18.99.0/24 via $SA dev vg
gmac=$(ip -n $G -j link show vg | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["address"])')
# Until the pair has settled (IPv6 DAD and the like), some first packets are lost.
for _ in $(seq 50); do in_s python3 -c "
import socket, sys
s = socket.socket(); s.settimeout(0.2)
sys.exit(0 if s.connect_ex(('$GA', 9)) in (0, 111) else 1)" 2>/dev/null && break; sleep 0.1; done

# G's services, for the whole run.
ip netns exec $G python3 "$measure" serve-g --seconds 14400 >"$work/serve-g.out" 2>&1 &
for _ in $(seq 100); do grep -q READY "$work/serve-g.out" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$work/serve-g.out" || { say "G's services did not start: $(cat "$work/serve-g.out")"; exit 2; }

# G's host firewall for psad: its services accepted, the rest logged (and not dropped).
in_g iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
in_g iptables -A INPUT -i lo -j ACCEPT
in_g iptables -A INPUT -p tcp -m multiport --dports 22,80,443 -j ACCEPT
in_g iptables -A INPUT -p udp --dport 53 -j ACCEPT
in_g iptables -N bench_log
in_g iptables -A INPUT -j bench_log
psad_log_on() { in_g iptables -F bench_log; in_g iptables -A bench_log -j LOG --log-prefix "$LOGP " --log-level 7 --log-ip-options --log-tcp-options; }
psad_log_off() { in_g iptables -F bench_log; }
psad_log_on
sysctl -qw net.netfilter.nf_log_all_netns=1

# The private mount namespace for scanlogd and psad: /dev/log is our socket, /run is empty
# but for scanlogd's chroot. It lives as long as its holder (a sleep) in G.
mkdir -p "$work/olddev"
ip netns exec $G unshare -m --propagation private bash -c "
set -e
mount --rbind /dev '$work/olddev'
mount -t tmpfs -o mode=755 bench-dev /dev
for n in null zero full random urandom tty; do touch /dev/\$n; mount --bind '$work/olddev/'\$n /dev/\$n; done
mkdir /dev/pts /dev/shm
mount --rbind '$work/olddev/pts' /dev/pts; mount --rbind '$work/olddev/shm' /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s fd/0 /dev/stdin; ln -s fd/1 /dev/stdout; ln -s fd/2 /dev/stderr
mount -t tmpfs -o mode=755 bench-run /run
mkdir -p /run/scanlogd/empty
python3 '$measure' syslog --path /dev/log --out '$work/syslog.txt' --seconds 14400 &
echo \$\$ > '$work/holder.pid'
exec sleep 14400
" >"$work/holder.out" 2>&1 &
for _ in $(seq 100); do [ -s "$work/holder.pid" ] && break; sleep 0.1; done
holder=$(cat "$work/holder.pid" 2>/dev/null || true)
[ -n "$holder" ] || { say "the private mount namespace did not come up: $(cat "$work/holder.out")"; exit 2; }
for _ in $(seq 100); do nsenter -t "$holder" -m test -S /dev/log && break; sleep 0.1; done
in_holder() { nsenter -t "$holder" -m -n "$@"; }

# psad's config: Debian's, with our files and settings.
psad_conf() { # DIR LOGFILE -> DIR/psad.conf
  local d=$1
  mkdir -p "$d/log" "$d/run" "$d/fifo" "$d/archive"
  python3 - "$d" "$2" "$LOGP" <<'EOF'
import re, sys
d, logfile, prefix = sys.argv[1:4]
t = open("/etc/psad/psad.conf").read()
for k, v in {
    "HOSTNAME": "g", "FW_MSG_SEARCH": prefix, "CHECK_INTERVAL": "1", "ALERTING_METHODS": "noemail",
    "AUTO_DETECT_JOURNALCTL": "N", "ENABLE_SYSLOG_FILE": "Y", "IPT_SYSLOG_FILE": logfile,
    "ENABLE_FW_LOGGING_CHECK": "N", "ENABLE_WHOIS_LOOKUPS": "N", "ENABLE_DNS_LOOKUPS": "N",
    "ENABLE_AUTO_IDS": "N", "ENABLE_PSADWATCHD": "N", "PSAD_DIR": d + "/log", "PSAD_RUN_DIR": d + "/run",
    "PSAD_FIFO_DIR": d + "/fifo", "CONF_ARCHIVE_DIR": d + "/archive",
}.items():
    t, n = re.subn(r"(?m)^%s\s+.*$" % k, "%-27s %s;" % (k, v), t)
    if n != 1:
        sys.exit("psad.conf: no single %s line" % k)
open(d + "/psad.conf", "w").write(t)
EOF
}

# --- detectors up and down ------------------------------------------------------------
det_pids=()
sentry_pid="" stamp_pid="" psad_pid="" scanlogd_pid="" kmsg_pid=""
detectors_up() { # DIR WHICH(all|sentry): starts them, waits until each is watching
  local d=$1 which=${2:-all} since
  mkdir -p "$d"
  since=$(now)
  sentry_pid="" psad_pid="" scanlogd_pid="" kmsg_pid=""
  if [ "$which" = all ]; then
    ip netns exec $G python3 "$measure" kmsg --prefix "$LOGP" --out "$d/messages" >"$d/kmsg.out" 2>&1 &
    kmsg_pid=$!
    psad_conf "$d/psad" "$d/messages"
    : >"$d/messages"
    nsenter -t "$holder" -m -n psad -c "$d/psad/psad.conf" --no-daemon --no-rdns --no-whois --no-fwcheck >"$d/psad.out" 2>&1 &
    psad_pid=$!
    in_holder scanlogd
    local p
    for p in $(ip netns pids $G); do
      [ "$(cat /proc/$p/comm 2>/dev/null)" = scanlogd ] && scanlogd_pid=$p
    done
    [ -n "$scanlogd_pid" ] || { say "scanlogd did not start"; return 1; }
  fi
  # The events go through a FIFO to a reader that stamps each line's arrival.
  rm -f "$d/events.fifo"; mkfifo "$d/events.fifo"
  ip netns exec $G python3 "$measure" stamp --fifo "$d/events.fifo" --out "$d/events.jsonl" &
  stamp_pid=$!
  ip netns exec $G "$portolan" sentry --no-store --events "$d/events.fifo" --metrics 127.0.0.1:9479 --for 4h -q 2>"$d/sentry.err" &
  sentry_pid=$!
  local ok=0
  for _ in $(seq 300); do
    if grep -q '"event":"started"' "$d/events.jsonl" 2>/dev/null; then
      if [ "$which" != all ] || awk -F'\t' -v t="$since" '$1 >= t' "$work/syslog.txt" | grep -q "psad: starting up"; then ok=1; break; fi
    fi
    sleep 0.1
  done
  ((ok)) || { say "detectors did not start: $(cat "$d/sentry.err" "$d/psad.out" 2>/dev/null | tail -5)"; return 1; }
  sleep 0.3
}
stop_pid() { # PID [SIGNAL]: signal, wait at most 10 s, then KILL
  local p=$1 sig=${2:-TERM}
  [ -n "$p" ] || return 0
  kill -"$sig" "$p" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}
detectors_down() {
  stop_pid "$sentry_pid"; stop_pid "$stamp_pid"; stop_pid "$psad_pid"; stop_pid "$scanlogd_pid"; stop_pid "$kmsg_pid"
  sentry_pid="" stamp_pid="" psad_pid="" scanlogd_pid="" kmsg_pid=""
}
cpu_of() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)

# --- scanner rounds -------------------------------------------------------------------
results="$work/results.jsonl"
: >"$results"
: >"$work/syslog.txt"
src_n=0
blacklist="$work/zmap-blacklist"
: >"$blacklist" # zmap's own blacklist covers 198.18.0.0/15

scanner_cmd() { # NAME SRC -> the command line, in S
  local src=$2
  case $1 in
    nmap-sS) echo "nmap -sS -T4 --top-ports 1000 -n -Pn -S $src -e vs $GA" ;;
    nmap-sT) echo "nmap -sT -T4 --top-ports 1000 -n -Pn $GA" ;;
    nmap-sF) echo "nmap -sF -T4 --top-ports 1000 -n -Pn -S $src -e vs $GA" ;;
    nmap-sN) echo "nmap -sN -T4 --top-ports 1000 -n -Pn -S $src -e vs $GA" ;;
    nmap-sX) echo "nmap -sX -T4 --top-ports 1000 -n -Pn -S $src -e vs $GA" ;;
    nmap-sU) echo "nmap -sU -T4 --top-ports 100 -n -Pn -S $src -e vs $GA" ;;
    nmap-T2) echo "nmap -sS -T2 --top-ports 1000 -n -Pn -S $src -e vs $GA" ;;
    masscan) echo "masscan -p1-10000 $GA --rate 10000 --wait 1 -e vs --router-mac $gmac --source-ip $src" ;;
    zmap) echo "zmap -p 8080 198.18.97.0/26 -B 1M -c 1 -i vs -G $gmac -S $src -b $blacklist -o /dev/null" ;;
    rustscan) echo "$rustscan -a $GA -r 1-10000 -g --ulimit 5000" ;;
    portolan-sS) echo "$portolan scan -sS $GA --top 1000 -n -Pn -S $src" ;;
    portolan-connect) echo "$portolan scan $GA --top 1000 -n -Pn" ;;
  esac
}
label_of() {
  case $1 in
    nmap-sS) echo "nmap -sS -T4 top 1000" ;;
    nmap-sT) echo "nmap -sT -T4 top 1000" ;;
    nmap-sF) echo "nmap -sF -T4 top 1000" ;;
    nmap-sN) echo "nmap -sN -T4 top 1000" ;;
    nmap-sX) echo "nmap -sX -T4 top 1000" ;;
    nmap-sU) echo "nmap -sU -T4 top 100" ;;
    nmap-T2) echo "nmap -sS -T2 top 1000" ;;
    masscan) echo "masscan 10k pps, 10k ports" ;;
    zmap) echo "zmap 1 port x 64 hosts" ;;
    rustscan) echo "RustScan 1-10000" ;;
    portolan-sS) echo "portolan scan -sS top 1000" ;;
    portolan-connect) echo "portolan scan (connect)" ;;
  esac
}

round() { # NAME I
  local name=$1 i=$2 d src cmd cap need since t0 t1 spid tpid drops elapsed
  src_n=$((src_n + 1))
  src=198.18.98.$src_n
  d="$work/r/$name.$i"
  mkdir -p "$d"
  ip -n $S addr add "$src/32" dev vs
  # Tools that let the kernel choose their source get this one.
  ip -n $S route replace 198.18.96.0/24 dev vs proto kernel scope link src "$src"
  ip -n $S route replace 198.18.97.0/24 via $GA dev vs src "$src"
  case $name in
    nmap-sU) cap=$slow_cap need=sentry,psad ;; # scanlogd reads TCP only
    nmap-T2) cap=$slow_cap need=sentry,scanlogd,psad ;;
    masscan) cap=5 need=sentry,scanlogd,psad ;; # 1 s of probes; masscan 1.3.2 ignores --wait here and waits until killed
    *) cap=60 need=sentry,scanlogd,psad ;;
  esac
  since=$(now)
  ip netns exec $G tcpdump -i vg -n -s 96 -B 16384 -U -w "$d/cap.pcap" "src host $src" 2>"$d/tcpdump.err" &
  tpid=$!
  for _ in $(seq 100); do grep -q "listening on" "$d/tcpdump.err" 2>/dev/null && break; sleep 0.05; done
  detectors_up "$d" all || { detectors_down; stop_pid "$tpid" INT; return 1; }
  cmd=$(scanner_cmd "$name" "$src")
  echo "$cmd" >"$d/cmd"
  t0=$(now)
  ip netns exec $S timeout -k 2 "$cap" $cmd >"$d/scanner.out" 2>"$d/scanner.err" &
  spid=$!
  # A long scan stops once every detector that can has reported it.
  for _ in $(seq $((cap * 4 + 8))); do
    kill -0 "$spid" 2>/dev/null || break
    if [[ $name == nmap-sU || $name == nmap-T2 ]] &&
      python3 "$measure" check --events "$d/events.jsonl" --syslog "$work/syslog.txt" --since "$since" --src "$src" --need "$need"; then
      break
    fi
    sleep 0.25
  done
  stop_pid "$spid"
  t1=$(now)
  # The others have a few seconds more (psad reads its file once a second).
  for _ in $(seq 20); do
    python3 "$measure" check --events "$d/events.jsonl" --syslog "$work/syslog.txt" --since "$since" --src "$src" --need "$need" && break
    sleep 0.25
  done
  sleep 0.5
  detectors_down
  stop_pid "$tpid" INT
  drops=$(grep -o '[0-9]* packets dropped by kernel' "$d/tcpdump.err" | awk '{print $1}' || true)
  elapsed=$(python3 -c "print(round($t1 - $t0, 2))")
  python3 "$measure" analyze --scanner "$(label_of "$name")" --round "$i" --src "$src" --pcap "$d/cap.pcap" \
    --events "$d/events.jsonl" --syslog "$work/syslog.txt" --since "$since" --scanner-secs "$elapsed" \
    ${drops:+--tcpdump-dropped "$drops"} >>"$results"
  tail -1 "$results" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
def c(d):
    if not d.get("detected"):
        return "no"
    return "yes %s pr %s" % (d.get("probes"), "-" if d.get("secs") is None else "%.1f ms" % (d["secs"] * 1000))
print("sentry-bench:   %s #%d from %s: %d probes in %.1f s; sentry %s (own %s pr, %s ms; %s %s %s); scanlogd %s; psad %s" % (
    r["scanner"], r["round"], r["src"], r["probes_total"], r["scanner_secs"] or 0, c(r["sentry"]),
    r["sentry"].get("self_probes"), r["sentry"].get("self_ms"), r["sentry"].get("detector"),
    "+".join(r["sentry"].get("kinds") or []), r["sentry"].get("tool") or "", c(r["scanlogd"]), c(r["psad"])), file=sys.stderr)'
}

scanners=(nmap-sS nmap-sT nmap-sF nmap-sN nmap-sX masscan zmap rustscan portolan-sS portolan-connect nmap-sU nmap-T2)
for name in "${scanners[@]}"; do
  wanted "$name" || continue
  if [ "$name" = rustscan ] && [ -z "$rustscan" ]; then say "RustScan is not installed: skipped"; continue; fi
  n=$rounds
  [[ $name == nmap-sU || $name == nmap-T2 ]] && n=$slow_rounds
  say "$(label_of "$name"): $n round(s)"
  for i in $(seq 1 "$n"); do round "$name" "$i" || say "  round $i failed"; done
done
ip -n $S route replace 198.18.96.0/24 dev vs proto kernel scope link src $SA
ip -n $S route replace 198.18.97.0/24 via $GA dev vs src $SA

# --- false alarms ---------------------------------------------------------------------
alarms="$work/alarms.jsonl"
: >"$alarms"
if wanted quiet; then
  say "ordinary traffic for $quiet s (false alarms)"
  d="$work/quiet"
  mkdir -p "$d"
  : >"$d/sources"
  for i in $(seq 1 40); do ip -n $S addr add "198.18.99.$i/32" dev vs; echo "198.18.99.$i" >>"$d/sources"; done
  ip netns exec $S python3 "$measure" serve-s --addr $SA --seconds $((quiet + 120)) >"$d/serve-s.out" 2>&1 &
  for _ in $(seq 100); do grep -q READY "$d/serve-s.out" 2>/dev/null && break; sleep 0.1; done
  since=$(now)
  detectors_up "$d" all
  ip netns exec $G python3 "$measure" own --server $SA --seconds "$quiet" >"$d/own.out" 2>"$d/own.err" &
  own_pid=$!
  ip netns exec $S python3 "$measure" clients --sources "$d/sources" --server $GA --seconds "$quiet" >"$d/clients.out" 2>"$d/clients.err" &
  cl_pid=$!
  for _ in $(seq $((quiet + 90))); do
    kill -0 $own_pid 2>/dev/null || kill -0 $cl_pid 2>/dev/null || break
    sleep 1
  done
  stop_pid $own_pid; stop_pid $cl_pid
  sleep 3
  read_pkts=$(in_g curl -s --max-time 2 http://127.0.0.1:9479/metrics | awk '$1 == "portolan_sentry_packets_total" {print $2}')
  detectors_down
  python3 "$measure" alarms --events "$d/events.jsonl" --syslog "$work/syslog.txt" --since "$since" --sources "$d/sources" |
    python3 -c "
import json, sys
r = json.loads(sys.stdin.read())
r['seconds'] = $quiet
try:
    c = json.loads(open('$d/clients.out').read() or '{}'); o = json.loads(open('$d/own.out').read() or '{}')
except ValueError:
    c, o = {}, {}
r['traffic'] = 'clients: %d TCP connections to open ports, %d to closed ports, %d DNS queries; G: %d DNS, %d NTP queries, %d downloads; sentry read %s first packets' % (
    c.get('tcp', 0), c.get('closed', 0), c.get('udp', 0), o.get('dns', 0), o.get('ntp', 0), o.get('download', 0), '${read_pkts:-?}')
print(json.dumps(r))" >>"$alarms"
  tail -1 "$alarms" | python3 -c 'import json, sys; r = json.loads(sys.stdin.read()); print("sentry-bench:   alarms: sentry %d, scanlogd %d, psad %d; %s" % (r["sentry"], r["scanlogd"], r["psad_lines"], r["traffic"]), file=sys.stderr)'
fi

# --- flood ----------------------------------------------------------------------------
flood="$work/flood.jsonl"
: >"$flood"
nft_logged() { in_g nft -j list chain inet portolan_sentry watch 2>/dev/null | python3 -c '
import json, sys
n = 0
for it in json.load(sys.stdin).get("nftables", []):
    ex = it.get("rule", {}).get("expr", [])
    if any("log" in e for e in ex):
        n += sum(e["counter"]["packets"] for e in ex if "counter" in e)
print(n)' || echo 0; }
metric() { in_g curl -s --max-time 2 http://127.0.0.1:9479/metrics | awk -v m="$1" '$1 == m {print $2}'; }
rx() { in_g cat /sys/class/net/vg/statistics/rx_packets; }
flood_pass() { # LABEL WHICH(sentry|all) SRC TARGET(1|0)
  local label=$1 which=$2 src=$3 target=$4 d="$work/flood.$2" mpids=() k per a_rx b_rx a_t b_t a_c b_c a_o b_o a_p b_p a_k b_k logged read over lost
  mkdir -p "$d"
  ip -n $S addr add "$src/32" dev vs
  if [ "$which" = all ]; then psad_log_on; else psad_log_off; fi
  since=$(now)
  detectors_up "$d" "$which"
  per=$((flood_rate / flood_procs))
  for k in $(seq 1 "$flood_procs"); do
    ip netns exec $S timeout -k 2 $((flood_secs + 3)) masscan -p1-65535 198.18.97.1-198.18.97.64 --rate "$per" --shard "$k/$flood_procs" \
      --wait 0 -e vs --router-mac "$gmac" --source-ip "$src" >/dev/null 2>"$d/masscan.$k.err" &
    mpids+=($!)
  done
  sleep 2
  a_t=$(now) a_rx=$(rx) a_c=$(cpu_of "$sentry_pid") a_o=$(cpu_of "$scanlogd_pid") a_p=$(cpu_of "$psad_pid") a_k=$(cpu_of "$kmsg_pid")
  sleep $((flood_secs - 1))
  b_t=$(now) b_rx=$(rx) b_c=$(cpu_of "$sentry_pid") b_o=$(cpu_of "$scanlogd_pid") b_p=$(cpu_of "$psad_pid") b_k=$(cpu_of "$kmsg_pid")
  for k in "${mpids[@]}"; do wait "$k" 2>/dev/null || true; done
  sleep 3
  logged=$(nft_logged)
  read=$(metric portolan_sentry_packets_total)
  over=$(metric portolan_sentry_log_overruns_total)
  local detected
  detected=$(python3 "$measure" analyze --scanner flood --round 0 --src "$src" --pcap /nonexistent --events "$d/events.jsonl" \
    --syslog "$work/syslog.txt" --since "$since" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
ks = ("sentry", "scanlogd", "psad") if sys.argv[1] == "all" else ("sentry",)
print(", ".join("%s %s" % (k, "yes" if r[k].get("detected") else "no") for k in ks))' "$which")
  detectors_down
  lost=$(awk '/^lost/ {print $2}' "$d/kmsg.out" 2>/dev/null || true)
  python3 - "$label" "$which" "$target" "$a_t" "$b_t" "$a_rx" "$b_rx" "$a_c" "$b_c" "$a_o" "$b_o" "$a_p" "$b_p" "$a_k" "$b_k" \
    "${logged:-0}" "${read:-0}" "${over:-0}" "$hz" "$flood_rate" "$flood_procs" "${lost:-}" "$detected" >>"$flood" <<'EOF'
import json, sys
(label, which, target, at, bt, arx, brx, ac, bc, ao, bo, ap, bp, ak, bk, logged, read, over, hz, rate, procs, lost, detected) = sys.argv[1:]
dt = float(bt) - float(at)
hz = float(hz)
cores = lambda a, b: (float(b) - float(a)) / hz / dt
r = {
    "label": label, "target": target == "1", "rate": (int(brx) - int(arx)) / dt,
    "sentry_cores": cores(ac, bc), "logged": int(logged), "read": int(read),
    "drops": int(logged) - int(read), "overruns": int(float(over)),
}
t = "masscan --rate %s in %s process(es), one source; %.0f packets/s reached G (over %.1f s); sentry %.3f of a core, %d logged, %d read, %d dropped, %d overruns" % (
    rate, procs, r["rate"], dt, r["sentry_cores"], r["logged"], r["read"], r["drops"], r["overruns"])
if which == "all":
    r["scanlogd_cores"] = cores(ao, bo)
    r["psad_cores"] = cores(ap, bp)
    r["kmsg_cores"] = cores(ak, bk)
    t += "; scanlogd %.3f, psad %.3f, kernel-log reader %.3f of a core%s" % (
        r["scanlogd_cores"], r["psad_cores"], r["kmsg_cores"], "" if lost == "" else " (%s log records overwritten before read)" % lost)
t += "; detected: " + detected
r["text"] = t
print(json.dumps(r))
EOF
  tail -1 "$flood" | python3 -c 'import json, sys; print("sentry-bench:   " + json.loads(sys.stdin.read())["text"], file=sys.stderr)'
}
if wanted flood; then
  say "flood: sentry alone, $flood_secs s"
  flood_pass "sentry alone" sentry 198.18.98.250 1
  say "flood: all three detectors, $flood_secs s"
  flood_pass "all three detectors" all 198.18.98.251 0
  psad_log_on
fi

# --- the table ------------------------------------------------------------------------
python3 "$measure" report --results "$results" --alarms "$alarms" --flood "$flood" --flood-rate "$flood_rate"
echo
echo "versions: portolan $("$portolan" --version 2>/dev/null | awk '{print $2}'), nmap $(nmap --version | awk 'NR==1 {print $3}'), masscan $(masscan --version 2>/dev/null | awk '/version/ {print $3; exit}'), zmap $(zmap --version | awk '{print $2}'), RustScan $([ -n "$rustscan" ] && "$rustscan" --version | awk '{print $2}'), scanlogd $(dpkg-query -W -f '${Version}' scanlogd), psad $(dpkg-query -W -f '${Version}' psad)"
