#!/usr/bin/env bash
# Forwarder benchmark: `portolan forward` beside socat, rinetd and realm, and the direct
# path, in the same run, between three network namespaces (198.18.72.0/22, nothing else):
#
#   pfb-c-PID (client)             pfb-f-PID (forwarder)              pfb-s-PID (server)
#   198.18.72.2/24 --veth-- 198.18.72.1/24     198.18.73.1/24 --veth-- 198.18.73.2/24
#                                   ip_forward=1 (here only)
#
# The client reaches the server either directly (198.18.73.2, routed by the kernel of the
# middle namespace) or through a forwarder listening on 198.18.72.1 in the middle namespace
# that connects to 198.18.73.2: both ways cross the same two veth pairs and the same middle
# network stack; only the user-space relay differs. Every forwarder gets its own listening
# port (91xx iperf3, 92xx HTTP, 93xx echo, 94xx idle) and relays to one server port. The
# ephemeral range is 10000-65535 in every namespace (the fixed ports stay below it) and
# tcp_tw_reuse is on, for the short-connection run.
#
#   1. throughput: iperf3 -t SECONDS, one stream and -P 8 (one-off server per run), Gbit/s
#      received and the ratio to direct.
#   2. short connections: wrk -t 2 -c 64 -H 'Connection: close' for min(SECONDS, 3) s against
#      nginx (return 200, one worker, no logs): every request a new connection (checked: the
#      server's accepted-connection counter grows by one per request); conns/s.
#   3. added latency: one persistent connection, 20,000 request/response round trips of 32
#      bytes to a Python echo server (bench/forward_measure.py), p50 and p99 minus direct's
#      (two runs a round: p99 is the noisiest figure on a shared machine).
#   4. memory: a fresh instance of each forwarder holding 10,000 idle connections (client and
#      server connected, nothing sent), opened 100 at a time, each batch only once the server
#      has it (paced by what the forwarder relays; at most 60 s): RSS (for socat, which forks
#      a process per connection, PSS summed over its processes) and fds per connection. A
#      probe of 100 connections first measures the fds one connection costs in the
#      forwarder's largest process (2 sockets; a splicing relay adds 2 pipes, 4 fds): where
#      RLIMIT_NOFILE cannot be raised high enough (no CAP_SYS_RESOURCE), that forwarder holds
#      as many as fit, and the RSS is scaled to 10,000 (RSS at 0 + per-connection cost).
# Measurements 1-3 are interleaved in rounds (every row once per round), the median of the
# rounds is reported (3 rounds; 1 with --quick, and 5,000 round trips): the machine is small
# and shared. The default run takes about 8-9 minutes (builds apart).
# Targets (the issue, for portolan): throughput >= 0.9x direct and >= realm; conns/s >= 3x
# socat; p99 added < 100 µs; RSS at 10,000 idle < 200 MB. A MISS still exits 0; exit 2 is a
# broken setup.
#
# Forwarders: socat `TCP-LISTEN:P,bind=A,fork,reuseaddr,backlog=4096 TCP:T:P` (the backlog:
# socat's default of 5 drops SYNs under load); rinetd in the foreground with its own config
# (`rinetd -f -c FILE`, pid file in the temp dir); realm `realm -l A:P -r T:P` (2.x splices
# on Linux by itself, its -z is a deprecated no-op); `portolan forward A:P T:P`, plus a
# `--no-splice` row when its --help mentions that flag. realm's binary crate is not on
# crates.io (`cargo install realm` installs an unrelated web framework): the script uses a
# realm found on PATH or in ~/.cargo/bin (checked by its --help), else builds a small
# front-end to realm's published engine crate realm_core (the same TCP relay, splice and
# all) into target/bench-tools/ (1-3 minutes, once).
#
#   bench/forward.sh [--seconds N] [--quick] [--only NAME,...] [--idle N] [--no-install]
#                    [--no-build] [--portolan PATH] [--portolan-args "ARGS"] [--realm PATH]
#                    [--realm-core] [--phases lat,cps,tp,idle]
# Needs root (namespaces). Only its own processes, inside its namespaces; all stopped on exit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
measure="$here/forward_measure.py"

seconds=5
reps=3
quick=0
only=""
idle=10000
install=1
build=1
portolan=""
portolan_args=""
realm=""
realm_core=0
phases=lat,cps,tp,idle
usage() {
  echo "usage: bench/forward.sh [--seconds N] [--quick] [--only portolan,socat,rinetd,realm] [--idle N]" >&2
  echo "       [--no-install] [--no-build] [--portolan PATH] [--portolan-args ARGS] [--realm PATH] [--realm-core]" >&2
  echo "       [--phases lat,cps,tp,idle]" >&2
  exit 2
}
while (($#)); do
  case $1 in
    --seconds) seconds=${2:?}; shift 2 ;;
    --quick) quick=1; shift ;;
    --only) only=${2:?}; shift 2 ;;
    --idle) idle=${2:?}; shift 2 ;;
    --no-install) install=0; shift ;;
    --no-build) build=0; shift ;;
    --portolan) portolan=${2:?}; build=0; shift 2 ;;
    --portolan-args) portolan_args=${2?}; shift 2 ;;
    --realm) realm=${2:?}; shift 2 ;;
    --realm-core) realm_core=1; shift ;;
    --phases) phases=${2:?}; shift 2 ;;
    -h|--help) usage ;;
    *) usage ;;
  esac
done
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds >= 1 && seconds <= 60)) || { echo "--seconds: 1 to 60" >&2; exit 2; }
[[ $idle =~ ^[0-9]+$ ]] && ((idle <= 50000)) || { echo "--idle: 0 to 50000" >&2; exit 2; }
((quick)) && reps=1
cps_seconds=$((seconds < 3 ? seconds : 3))
pp_count=$((quick ? 5000 : 20000))
say() { printf 'forward-bench: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (network namespaces)"; exit 2; }
t_start=$(date +%s)
load_start=$(cut -d' ' -f1 /proc/loadavg)
export PATH="$PATH:/usr/sbin:/sbin"

all_fwd=(portolan socat rinetd realm)
if [ -n "$only" ]; then
  IFS=, read -r -a want <<<"$only"
  for w in "${want[@]}"; do
    [[ " ${all_fwd[*]} " == *" $w "* ]] || { say "--only: unknown forwarder '$w' (portolan, socat, rinetd, realm)"; exit 2; }
  done
else
  want=("${all_fwd[@]}")
fi
wants() { [[ " ${want[*]} " == *" $1 "* ]]; }

# --- tools ------------------------------------------------------------------------------
if ((install)); then
  missing=()
  for p in iperf3:iperf3 wrk:wrk nginx:nginx-light python3:python3 ip:iproute2 ss:iproute2 socat:socat rinetd:rinetd; do
    cmd=${p%%:*}; pkg=${p#*:}
    case $cmd in socat|rinetd) wants "$cmd" || continue ;; esac
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    say "installing ${missing[*]} (Debian packages; no service of theirs is used)"
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
    # an old package list first, then a fresh one; Debian 13 has no nginx-light, only nginx
    apt_install "${missing[@]}" || { apt-get update -qq >/dev/null; apt_install "${missing[@]}"; } ||
      apt_install "${missing[@]/#nginx-light/nginx}" || say "apt-get install failed"
  fi
fi
for cmd in iperf3 wrk nginx python3 ip ss timeout; do
  command -v "$cmd" >/dev/null || { say "$cmd is missing (run without --no-install, or install it)"; exit 2; }
done

# realm: a real one (its --help has --remote), else realm_core's relay behind a small front-end.
realm_label=realm
is_realm() { [ -x "$1" ] && "$1" --help 2>/dev/null | grep -q -- '--remote'; }
build_realm_core() { # builds target/bench-tools/bin/realm-core-relay from crates.io's realm_core
  local dir="$root/target/bench-tools/realm-core-relay" t0
  mkdir -p "$dir/src" "$root/target/bench-tools/bin"
  cat >"$dir/Cargo.toml" <<'EOF'
[package]
name = "realm-core-relay"
version = "0.1.0"
edition = "2021"
publish = false

# Not part of portolan's workspace.
[workspace]

[dependencies]
# realm 2.9's own engine, with the features of its default-slim build.
realm_core = { version = "=0.5.1", features = ["multi-thread", "brutal-shutdown", "batched-udp"] }
tokio = { version = "1", features = ["rt-multi-thread"] }

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "unwind"
EOF
  cat >"$dir/src/main.rs" <<'EOF'
//! `realm -l LISTEN -r REMOTE` for bench/forward.sh: realm 2.9's binary crate is not
//! published, its engine is. Same defaults as realm's command line (connect timeout 5 s,
//! keepalive 15 s x 3, nofile raised to the hard limit, a multi-thread tokio runtime);
//! realm_core relays with splice(2) on Linux.
use realm_core::endpoint::{BindOpts, ConnectOpts, Endpoint, RemoteAddr};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut listen, mut remote) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-l" | "--listen" => listen = args.next(),
            "-r" | "--remote" => remote = args.next(),
            _ => {
                eprintln!("usage: realm-core-relay -l|--listen ADDR:PORT -r|--remote ADDR:PORT");
                std::process::exit(2);
            }
        }
    }
    let (Some(l), Some(r)) = (listen, remote) else {
        eprintln!("usage: realm-core-relay -l|--listen ADDR:PORT -r|--remote ADDR:PORT");
        std::process::exit(2);
    };
    let _ = realm_core::realm_syscall::bump_nofile_limit();
    realm_core::dns::build_lazy(None, None);
    let endpoint = Endpoint {
        laddr: l.parse().expect("listen address"),
        raddr: RemoteAddr::SocketAddr(r.parse().expect("remote address")),
        bind_opts: BindOpts::default(),
        conn_opts: ConnectOpts {
            connect_timeout: 5,
            associate_timeout: 30,
            tcp_keepalive: 15,
            tcp_keepalive_probe: 3,
            ..Default::default()
        },
        extra_raddrs: Vec::new(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(realm_core::tcp::run_tcp(endpoint))
        .unwrap();
}
EOF
  t0=$(date +%s)
  say "building realm_core 0.5.1's relay (crates.io) into target/bench-tools (1-3 minutes on 2 cores)"
  (cd "$dir" && CARGO_TARGET_DIR="$dir/target" nice -n 5 cargo build --release -q) >&2
  cp "$dir/target/release/realm-core-relay" "$root/target/bench-tools/bin/"
  say "realm_core relay built in $(($(date +%s) - t0)) s"
}
if wants realm; then
  if [ -n "$realm" ]; then
    [ -x "$realm" ] || { say "--realm $realm: not executable"; exit 2; }
  elif ((!realm_core)); then
    for c in "$(command -v realm 2>/dev/null || true)" "$HOME/.cargo/bin/realm"; do
      if [ -n "$c" ] && is_realm "$c"; then realm=$c; break; fi
    done
  fi
  if [ -z "$realm" ]; then
    realm="$root/target/bench-tools/bin/realm-core-relay"
    if [ ! -x "$realm" ]; then
      if ((install)) && command -v cargo >/dev/null; then build_realm_core; fi
    fi
    [ -x "$realm" ] && realm_label="realm_core 0.5.1 relay" || realm=""
  else
    v=$("$realm" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1 || true)
    realm_label="realm${v:+ $v}"
  fi
fi

# portolan: build (unless --no-build/--portolan), then does it have `forward` yet?
if [ -z "$portolan" ]; then
  portolan="$root/target/release/portolan"
  if ((build)); then
    say "building portolan (release)"
    (cd "$root" && cargo build --release -q -p portolan) >&2 || say "cargo build failed: the portolan rows use what target/release holds"
  fi
fi
portolan_ok=0 portolan_nosplice=0
if wants portolan; then
  if [ -x "$portolan" ] && help=$("$portolan" forward --help 2>&1); then
    portolan_ok=1
    grep -q -- '--no-splice' <<<"$help" && portolan_nosplice=1
  fi
fi
read -r -a pargs <<<"$portolan_args"

# rows: direct always, then the forwarders asked for
rows=(direct)
wants portolan && rows+=(portolan)
wants portolan && ((portolan_nosplice)) && rows+=(portolan-nosplice)
wants socat && rows+=(socat)
wants rinetd && rows+=(rinetd)
wants realm && rows+=(realm)
pv=$("$portolan" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1 || true)
declare -A label=([direct]="direct (kernel routing)" [portolan]="portolan${pv:+ $pv}" [portolan-nosplice]="portolan --no-splice"
  [realm]="$realm_label")
command -v socat >/dev/null && label[socat]="socat $(socat -V 2>/dev/null | awk '/socat version/ {print $3; exit}')"
command -v rinetd >/dev/null && label[rinetd]="rinetd $(rinetd -v 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)"
idx() { local i; for i in "${!rows[@]}"; do [ "${rows[$i]}" = "$1" ] && { echo "$i"; return; }; done; }

# --- limits -----------------------------------------------------------------------------
# Everything started below inherits these. Without CAP_SYS_RESOURCE the hard limit stays.
nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
want_nofile=$((6 * idle + 1024)) # a splicing relay holds 2 sockets and 2 pipes (4 fds) per connection
((want_nofile > nr_open)) && want_nofile=$nr_open
((want_nofile < 65536 && nr_open >= 65536)) && want_nofile=65536
(($(ulimit -Hn) < want_nofile)) && { ulimit -Hn "$want_nofile" 2>/dev/null || true; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
idle_n=$idle
((idle_n + 64 > nofile)) && idle_n=$((nofile - 64))
if ((idle > 0 && nofile < 6 * idle + 1024)); then
  say "RLIMIT_NOFILE is $nofile and cannot be raised (no CAP_SYS_RESOURCE): a forwarder that needs more fds than that for $idle connections holds fewer, and its RSS is scaled to $idle"
fi

# --- namespaces -------------------------------------------------------------------------
C=pfb-c-$$ F=pfb-f-$$ S=pfb-s-$$
CLI=198.18.72.2 FWD=198.18.72.1 FWD_S=198.18.73.1 SRV=198.18.73.2
work=$(mktemp -d /tmp/pfb.XXXXXX)
bg=()
cleaned=0
stop_ns() { # NS: children first (their parents reap them: nothing is left to init), then TERM, then KILL
  local ns=$1 pids p pp kids roots pass
  for pass in 1 2 3 4 5 6; do # bounded: socat may still be forking while we stop it
    pids=" $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ') "
    [ -z "${pids// /}" ] && return 0
    kids=() roots=()
    for p in $pids; do
      pp=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $2}') || continue
      if [[ $pids == *" $pp "* ]]; then kids+=("$p"); else roots+=("$p"); fi
    done
    if ((${#kids[@]} && pass < 4)); then
      kill -9 "${kids[@]}" 2>/dev/null || true
    elif ((pass < 5)); then
      kill -TERM "${roots[@]}" "${kids[@]}" 2>/dev/null || true
    else
      kill -9 "${roots[@]}" "${kids[@]}" 2>/dev/null || true
    fi
    for _ in $(seq 30); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && return 0; sleep 0.1; done
  done
}
cleanup() {
  ((cleaned)) && return
  cleaned=1
  set +e
  {
    local ns pid
    # nginx's master stops and reaps its worker itself.
    [ -s "$work/nginx/nginx.pid" ] && kill -TERM "$(cat "$work/nginx/nginx.pid")" && sleep 0.5
    for ns in $C $F $S; do stop_ns "$ns"; ip netns del "$ns"; done
    for pid in "${bg[@]}"; do kill -9 "$pid"; done
    wait
    rm -rf "$work"
  } 2>/dev/null
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM HUP
ip netns add $C; ip netns add $F; ip netns add $S
for ns in $C $F $S; do
  ip -n "$ns" link set lo up
  # /proc/sys/net is the namespace's own, as seen from inside it.
  ip netns exec "$ns" sh -c 'echo 0 >/proc/sys/net/ipv4/ip_forward; echo "10000 65535" >/proc/sys/net/ipv4/ip_local_port_range
    echo 1 >/proc/sys/net/ipv4/tcp_tw_reuse; echo 4096 >/proc/sys/net/core/somaxconn; echo 4096 >/proc/sys/net/ipv4/tcp_max_syn_backlog'
done
ip netns exec $F sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
ip link add pfb-c0 netns $C type veth peer name pfb-f0 netns $F
ip link add pfb-f1 netns $F type veth peer name pfb-s0 netns $S
ip -n $C addr add $CLI/24 dev pfb-c0
ip -n $F addr add $FWD/24 dev pfb-f0
ip -n $F addr add $FWD_S/24 dev pfb-f1
ip -n $S addr add $SRV/24 dev pfb-s0
for l in "$C pfb-c0" "$F pfb-f0" "$F pfb-f1" "$S pfb-s0"; do ip -n ${l% *} link set ${l#* } up; done
ip -n $C route add 198.18.73.0/24 via $FWD
ip -n $S route add 198.18.72.0/24 via $FWD_S

in_c() { ip netns exec $C "$@"; }
in_f() { ip netns exec $F "$@"; }
in_s() { ip netns exec $S "$@"; }
listening() { [ -n "$(ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null)" ]; }
wait_listen() { # NS PORT [PID]: up to 5 s; false if it never listened (or PID died)
  local i
  for i in $(seq 100); do
    listening "$1" "$2" && return 0
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.05
  done
  return 1
}

# --- servers ----------------------------------------------------------------------------
mkdir -p "$work/nginx" "$work/log"
{
  echo "worker_processes 1; daemon off; pid $work/nginx/nginx.pid; error_log $work/nginx/error.log warn;"
  echo "worker_rlimit_nofile $nofile; events { worker_connections 8192; }"
  echo "http { access_log off; client_body_temp_path $work/nginx/body;"
  for m in proxy fastcgi uwsgi scgi; do
    nginx -V 2>&1 | grep -q "without-http_${m}_module" || echo "  ${m}_temp_path $work/nginx/$m;"
  done
  echo "  server { listen $SRV:8080 backlog=4096; location / { return 200 \"ok\\n\"; } } }"
} >"$work/nginx/nginx.conf"
ip netns exec $S nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" >"$work/log/nginx" 2>&1 &
bg+=($!); disown $!
ip netns exec $S python3 "$measure" serve --host $SRV --port 7000 --max-seconds 1800 >"$work/log/echo" 2>&1 &
echo_pid=$!; bg+=($!); disown $!
tails() { local f; for f; do [ -s "$f" ] && tail -n 3 "$f" | tr '\n' ' '; done; true; }
wait_listen $S 8080 || { say "nginx did not start: $(tails "$work/log/nginx" "$work/nginx/error.log")"; exit 2; }
wait_listen $S 7000 || { say "echo server did not start: $(tails "$work/log/echo")"; exit 2; }
in_c timeout 5 bash -c "exec 3<>/dev/tcp/$SRV/7000" 2>/dev/null || { say "no route client -> server through $F"; exit 2; }

# --- forwarders -------------------------------------------------------------------------
results="$work/results"
: >"$results"
note() { echo "$1 $2 $3" >>"$results"; }
declare -A status=()
((portolan_ok)) || status[portolan]="portolan forward: not built yet"
[ -n "$realm" ] || status[realm]="realm: not installed (run without --no-install)"
command -v socat >/dev/null || status[socat]="socat: not installed"
command -v rinetd >/dev/null || status[rinetd]="rinetd: not installed"

fwd_start() { # ROW LPORT TPORT: starts one forwarder instance in F; false when it does not listen
  local row=$1 lp=$2 tp=$3 log="$work/log/$1-$2" pid
  case $row in
    portolan) ip netns exec $F "$portolan" forward "${pargs[@]}" "$FWD:$lp" "$SRV:$tp" >"$log" 2>&1 & pid=$! ;;
    portolan-nosplice) ip netns exec $F "$portolan" forward --no-splice "${pargs[@]}" "$FWD:$lp" "$SRV:$tp" >"$log" 2>&1 & pid=$! ;;
    socat) ip netns exec $F socat "TCP-LISTEN:$lp,bind=$FWD,fork,reuseaddr,backlog=4096" "TCP:$SRV:$tp" >"$log" 2>&1 & pid=$! ;;
    rinetd)
      printf 'pidlogfile %s\n%s %s %s %s\n' "$work/rinetd-$lp.pid" $FWD "$lp" $SRV "$tp" >"$work/rinetd-$lp.conf"
      ip netns exec $F rinetd -f -c "$work/rinetd-$lp.conf" >"$log" 2>&1 & pid=$! ;;
    realm) ip netns exec $F "$realm" -l "$FWD:$lp" -r "$SRV:$tp" >"$log" 2>&1 & pid=$! ;;
    *) return 1 ;;
  esac
  bg+=("$pid"); disown "$pid"
  eval "fpid_$lp=$pid"
  wait_listen $F "$lp" "$pid"
}
fwd_stop_all() { stop_ns $F; }
fwd_rows=()
for row in "${rows[@]:1}"; do
  [ -n "${status[$row]:-}" ] && continue
  i=$(idx "$row")
  if fwd_start "$row" $((9100 + i)) 5201 && fwd_start "$row" $((9200 + i)) 8080 && fwd_start "$row" $((9300 + i)) 7000; then
    fwd_rows+=("$row")
  else
    status[$row]="$row: did not start ($(tails "$work/log/$row-"* | tail -c 120))"
    say "${status[$row]}"
  fi
done
for row in "${rows[@]}"; do [ -n "${status[$row]:-}" ] && note "$row" status "${status[$row]}"; done
live=(direct "${fwd_rows[@]}")
say "rows: ${live[*]}; ${reps} round(s); nofile $nofile; realm: ${realm:-none}; portolan: $portolan"
dest() { # ROW BASE TPORT -> "host port"
  if [ "$1" = direct ]; then echo "$SRV $3"; else echo "$FWD $(($2 + $(idx "$1")))"; fi
}

# --- 1-3: rounds ------------------------------------------------------------------------
# Each measuring command runs in the background and is waited for: a trapped signal (Ctrl-C)
# interrupts `wait` at once, where a foreground command that handles SIGINT itself (iperf3,
# wrk) would make bash ignore it.
run() { # OUT SECONDS CMD...: CMD, bounded by timeout, its output in OUT
  local out=$1 t=$2 p
  shift 2
  timeout -k 5 "$t" "$@" >"$out" 2>&1 &
  p=$!
  wait "$p"
}
iperf_run() { # ROW STREAMS
  local row=$1 P=$2 host port spid bps
  read -r host port <<<"$(dest "$row" 9100 5201)"
  ip netns exec $S iperf3 -s -1 -B $SRV -p 5201 >/dev/null 2>&1 &
  spid=$!; bg+=("$spid")
  wait_listen $S 5201 "$spid" || { say "iperf3 server did not start"; return 0; }
  run "$work/out" $((seconds + 20)) ip netns exec $C iperf3 -c "$host" -p "$port" -t "$seconds" -P "$P" -J || true
  kill "$spid" 2>/dev/null || true
  wait "$spid" 2>/dev/null || true
  bps=$(python3 -c 'import json,sys
try:
    d = json.load(open(sys.argv[1]))
    print(d["end"]["sum_received"]["bits_per_second"] / 1e9)
except Exception:
    pass' "$work/out")
  if [ -n "$bps" ]; then note "$row" "tp$P" "$bps"; else say "$row: iperf3 -P $P failed: $(grep -m1 '"error"' "$work/out" || true)"; fi
}
passive_opens() { # NS: TCP connections accepted so far in it (Tcp: PassiveOpens)
  ip netns exec "$1" awk '/^Tcp:/ {n++; if (n == 1) for (i = 1; i <= NF; i++) c[$i] = i; else print $c["PassiveOpens"]}' /proc/net/snmp
}
wrk_run() { # ROW
  local row=$1 host port rps errs reqs o0 o1
  read -r host port <<<"$(dest "$row" 9200 8080)"
  o0=$(passive_opens $S)
  run "$work/out" $((cps_seconds + 20)) ip netns exec $C wrk -t 2 -c 64 -d "${cps_seconds}s" --timeout 2s \
    -H 'Connection: close' "http://$host:$port/" || true
  o1=$(passive_opens $S)
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/out")
  reqs=$(awk '/requests in/ {print $1}' "$work/out")
  errs=$(awk -F'[ ,]+' '/Socket errors:/ {print $5 + $7 + $9 + $11}' "$work/out")
  if [ -n "$rps" ]; then
    note "$row" cps "$rps"; note "$row" cps_errors "${errs:-0}"
    # every request a new connection: the server accepted about as many as wrk counted requests
    ((${reqs:-0} > 0)) && note "$row" conn_per_req "$(awk -v a="$((o1 - o0))" -v b="$reqs" 'BEGIN {printf "%.3f", a / b}')"
    true
  else
    say "$row: wrk failed: $(tail -2 "$work/out" | tr '\n' ' ')"
  fi
}
pingpong_run() { # ROW
  local row=$1 host port p50 p99
  read -r host port <<<"$(dest "$row" 9300 7000)"
  if run "$work/out" 60 ip netns exec $C python3 "$measure" pingpong --host "$host" --port "$port" --count "$pp_count"; then
    read -r p50 p99 _ <"$work/out"
    note "$row" p50 "$p50"; note "$row" p99 "$p99"
  else
    say "$row: pingpong failed: $(tail -1 "$work/out")"
  fi
}
rounds=$reps
[[ $phases == *lat* || $phases == *cps* || $phases == *tp* ]] || rounds=0
for r in $(seq "$rounds"); do
  say "round $r/$rounds:$([[ $phases == *lat* ]] && echo " latency ($pp_count round trips)")$([[ $phases == *cps* ]] && echo " conns/s (wrk ${cps_seconds} s)")$([[ $phases == *tp* ]] && echo " iperf3 (${seconds} s, 1 and 8 streams)")"
  # latency twice a round (cheap, and its p99 is the noisiest figure)
  if [[ $phases == *lat* ]]; then for _ in 1 2; do for row in "${live[@]}"; do pingpong_run "$row"; done; done; fi
  if [[ $phases == *cps* ]]; then for row in "${live[@]}"; do wrk_run "$row"; sleep 1; done; fi
  if [[ $phases == *tp* ]]; then
    for P in 1 8; do for row in "${live[@]}"; do iperf_run "$row" "$P"; done; done
  fi
done
fwd_stop_all

# --- 4: idle connections ----------------------------------------------------------------
established_s() { python3 "$measure" established --port 7000 --pid "$echo_pid" 2>/dev/null || echo 0; }
stat_f() { python3 "$measure" procstat $(ip netns pids $F 2>/dev/null); }
idle_client() { # LPORT COUNT TAG: connects COUNT idle clients; sets ic_pid ic_line ic_ok ic_secs
  local i
  ip netns exec $C python3 "$measure" idle --host $FWD --port "$1" --count "$2" --relay-port 7000 --relay-pid "$echo_pid" \
    --max-seconds 60 --batch-timeout 10 --hold-seconds 150 >"$work/idle-$3" 2>&1 &
  ic_pid=$!; bg+=("$ic_pid")
  ic_line=""
  for i in $(seq 240); do # at most ~120 s
    ic_line=$(grep -m1 '^CONNECTED' "$work/idle-$3" 2>/dev/null || true)
    [ -n "$ic_line" ] && break
    kill -0 "$ic_pid" 2>/dev/null || break
    sleep 0.5
  done
  read -r _ ic_ok _ ic_secs _ ic_stalled <<<"${ic_line:-CONNECTED 0 0 0 0}"
}
idle_stop() { # the idle client resets its connections; wait (bounded) until the server has none
  local i
  kill "$ic_pid" 2>/dev/null || true
  wait "$ic_pid" 2>/dev/null || true
  for i in $(seq 60); do (($(established_s) == 0)) && break; sleep 0.5; done
}
wait_relayed() { # WANT PID: until the server has WANT connections, PID died, or 10 s without progress (<= 60 s)
  local i n last=-1 still=0
  relayed=0
  for i in $(seq 120); do
    n=$(established_s)
    ((n > relayed)) && relayed=$n
    ((n >= $1)) && break
    kill -0 "$2" 2>/dev/null || break
    if ((n == last)); then still=$((still + 1)); ((still >= 20)) && break; else still=0; last=$n; fi
    sleep 0.5
  done
}
idle_run() { # ROW
  local row=$1 lp=$((9400 + $(idx "$1"))) pid n asked p0 r0 s0 f0 m0 m1 procs rss pss fds maxfds cap why=""
  fwd_start "$row" "$lp" 7000 || { note "$row" idle_status "did not start"; fwd_stop_all; return 0; }
  eval "pid=\$fpid_$lp"
  sleep 0.3
  read -r p0 r0 s0 f0 m0 <<<"$(stat_f)"
  # A probe of 100 connections: the fds one connection costs in the forwarder's biggest process
  # (splicing relays keep two pipes, 4 fds, beside the 2 sockets), so that the run stays
  # within RLIMIT_NOFILE instead of measuring a forwarder stuck on EMFILE.
  idle_client "$lp" 100 "$row-probe"
  wait_relayed "$ic_ok" "$pid"
  read -r _ _ _ _ m1 <<<"$(stat_f)"
  idle_stop
  n=$idle_n
  if ((relayed > 0 && m1 > m0)); then
    cap=$(((nofile - m0 - 64) * relayed / (m1 - m0)))
    if ((cap < n)); then
      n=$cap
      why="; $(((m1 - m0 + relayed / 2) / relayed)) fds per connection in one process, RLIMIT_NOFILE $nofile"
    fi
  fi
  note "$row" mem0_kb "$([ "$p0" -gt 1 ] && echo "$s0" || echo "$r0")"
  note "$row" fds0 "$f0"
  say "idle: $row, $n connections$why"
  asked=$n
  idle_client "$lp" "$n" "$row"
  wait_relayed "$ic_ok" "$pid"
  [ "$ic_stalled" = stalled ] && why+="; stopped opening after $ic_ok: the forwarder relayed the last batch of 100 not within 10 s"
  awk -v t="$ic_secs" 'BEGIN {exit !(t >= 59)}' && why+="; stopped opening at the 60 s limit"
  sleep 1
  read -r procs rss pss fds maxfds <<<"$(stat_f)"
  n=$(established_s)
  if ! kill -0 "$pid" 2>/dev/null; then
    note "$row" idle_status "exited at ~$relayed conns"
    note "$row" idle_detail "exited during the idle run with ~$relayed connections relayed: $(tail -c 300 "$work/log/$row-$lp" | tr '\n' ' ' | tail -c 160)"
  else
    note "$row" idle_conns "$n"
    note "$row" idle_asked "$ic_ok"
    if ((procs > 1)); then note "$row" mem_kb "$pss"; note "$row" mem_note " PSS"; else note "$row" mem_kb "$rss"; fi
    note "$row" fds "$fds"
    note "$row" idle_detail "$(printf '%s of %s connected in %s s, %s relayed%s; %s process(es), RSS %s MB, PSS %s MB, %s fds (at 0: %s fds, RSS %s MB)' \
      "$ic_ok" "$asked" "$ic_secs" "$n" "$why" "$procs" "$((rss / 1024))" "$((pss / 1024))" "$fds" "$f0" "$((r0 / 1024))")"
  fi
  say "idle $row: $ic_line; relayed $n; $procs process(es), RSS $((rss / 1024)) MB, PSS $((pss / 1024)) MB, $fds fds"
  idle_stop
  fwd_stop_all
}
if [[ $phases == *idle* ]] && ((idle_n > 0)); then
  for row in "${fwd_rows[@]}"; do idle_run "$row"; done
fi

# --- report -----------------------------------------------------------------------------
labels=""
for row in "${rows[@]}"; do labels+="$row=${label[$row]:-$row};"; done
say "done in $(($(date +%s) - t_start)) s"
echo
load_end=$(cut -d' ' -f1 /proc/loadavg)
echo "machine: $(nproc) cores, load average $load_start at the start, $load_end at the end; $(uname -r)"
awk -v a="$load_start" -v b="$load_end" -v n="$(nproc)" 'BEGIN {exit !(a > n || b > 2 * n)}' &&
  echo "busy machine (other work running): treat the figures as rough, compare rows of the same run only"
python3 "$measure" report --results "$results" --rows "$(IFS=,; echo "${rows[*]}")" --labels "$labels" \
  --idle "$idle" --seconds "$seconds" --reps "$rounds"
if [ -n "$(awk '$2 == "mem_note"' "$results")" ]; then
  echo "PSS: a forwarder that forks per connection (socat) is given as PSS summed over its processes (shared pages counted"
  echo "once); RSS summed would count every shared page once per process."
fi
if grep -q ' idle_asked ' "$results"; then
  echo "RSS@$idle: measured at $idle connections, or scaled to them from the number held (in brackets; RLIMIT_NOFILE $nofile"
  echo "bounds one process's fds): RSS at 0 + (RSS held - RSS at 0) x $idle / held."
fi
