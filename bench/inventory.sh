#!/usr/bin/env bash
# Socket-inventory benchmark: portolan against ss, netstat, lsof and fuser with
# ~100,000 TCP sockets open on loopback.
#
#   bench/inventory.sh [--sockets N] [--established E] [--runs R] [--procs K]
#                      [--app-port P] [--solo-port Q]
#                      [--no-build] [--no-install] [--portolan PATH]
#
# Opens N TCP sockets on 127.0.0.0/8 with bench/holder.py (K bulk processes,
# default 7, plus two small "app" processes, each listening with 3 connections
# to itself), of which E (default 1000) are ESTABLISHED and the rest half-closed
# connections (FIN-WAIT-2 / CLOSE-WAIT) and listeners. The two apps are the two
# layouts `who` must handle: on APP_PORT (default 31000) a sibling of the bulk
# processes (one parent started them all, as one shell would), on SOLO_PORT
# (default 31001) a process in its own session. Both ports lie below the
# ephemeral range, so no connection uses them as its local port; a third port,
# one that bulk connections do use as their ephemeral port, shows what `who`
# costs then (their owners are big processes whose fd tables must be read).
# Times, R runs each, stdout to /dev/null:
#   portolan ls -a -t --json   vs  ss -tanp, netstat -tanp, lsof -nP -iTCP
#   portolan ls --state established -t --json  vs  ss -tnp state established
#   portolan who PORT          vs  lsof -i :PORT (each of the three ports),
#                                  fuser APP_PORT/tcp
# and measures peak RSS (/usr/bin/time -f %M) of every command, and prints the
# owner walk's counters of each `who` (fd tables opened, readlinks; from the
# who_walk example of portolan-sockets). Prints the medians and the targets:
# `ls -a` <= 1/6 of `ss -tanp`, `who` <= 1/10 of `lsof -i :PORT` in both
# layouts, peak RSS < 150 MB.
#
# Exit status: 0 when the benchmark ran (a missed target is printed as MISSED),
# 2 when the setup is broken (holder failed, too few sockets, ss/lsof missing).
# All traffic stays on loopback; the holders are stopped on exit (trap).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

SOCKETS=100000
ESTABLISHED=1000
RUNS=5
APP_PORT=31000
SOLO_PORT=31001
PROCS=7
BUILD=1
INSTALL=1
PORTOLAN="$ROOT/target/release/portolan"
SETUP_TIMEOUT=300
LS_RATIO_TARGET=6
WHO_RATIO_TARGET=10
RSS_TARGET_MB=150

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "inventory: $*" >&2; exit 2; }
note() { echo "inventory: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --sockets) SOCKETS=${2:?}; shift 2 ;;
        --established) ESTABLISHED=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --app-port) APP_PORT=${2:?}; shift 2 ;;
        --solo-port) SOLO_PORT=${2:?}; shift 2 ;;
        --procs) PROCS=${2:?}; shift 2 ;;
        --portolan) PORTOLAN=${2:?}; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$SOCKETS" =~ ^[0-9]+$ && "$SOCKETS" -ge 10 ]] || die "--sockets must be an integer >= 10"
[[ "$ESTABLISHED" =~ ^[0-9]+$ && "$ESTABLISHED" -le "$SOCKETS" ]] || die "--established must be an integer <= --sockets"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -ge 1 ]] || die "--runs must be a positive integer"
[[ "$APP_PORT" =~ ^[0-9]+$ && "$APP_PORT" -ge 1 && "$APP_PORT" -le 65535 ]] || die "bad --app-port"
[[ "$SOLO_PORT" =~ ^[0-9]+$ && "$SOLO_PORT" -ge 1 && "$SOLO_PORT" -le 65535 && "$SOLO_PORT" -ne "$APP_PORT" ]] || die "bad --solo-port"
[[ "$PROCS" =~ ^[0-9]+$ && "$PROCS" -ge 1 ]] || die "--procs must be a positive integer"
read -r EPH_LO EPH_HI < /proc/sys/net/ipv4/ip_local_port_range || { EPH_LO=32768; EPH_HI=60999; }
for p in "$APP_PORT" "$SOLO_PORT"; do
    if [ "$p" -ge "$EPH_LO" ] && [ "$p" -le "$EPH_HI" ]; then
        note "warning: port $p is inside the ephemeral range $EPH_LO-$EPH_HI: a connection made before its listener binds may use it as its local port, and who $p then reads that connection's owner's fd table too"
    fi
done

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# ---------------------------------------------------------------- tools ----
command -v python3 >/dev/null || die "python3 is required"
declare -A PKG_OF=([ss]=iproute2 [netstat]=net-tools [lsof]=lsof [fuser]=psmisc
                   [/usr/bin/time]=time [hyperfine]=hyperfine)
missing_pkgs=()
for tool in ss netstat lsof fuser /usr/bin/time hyperfine; do
    command -v "$tool" >/dev/null 2>&1 || missing_pkgs+=("${PKG_OF[$tool]}")
done
if [ ${#missing_pkgs[@]} -gt 0 ]; then
    if [ "$IS_ROOT" -eq 1 ] && [ "$INSTALL" -eq 1 ] && command -v apt-get >/dev/null; then
        note "installing ${missing_pkgs[*]} (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing_pkgs[@]}"; } \
            >/dev/null 2>&1 || note "apt-get install failed; going on with what is there"
    else
        note "missing packages: ${missing_pkgs[*]} (not root or --no-install: not installing)"
    fi
fi
command -v ss >/dev/null || die "ss (iproute2) is required"
command -v lsof >/dev/null || die "lsof is required"
HAVE_HYPERFINE=0; command -v hyperfine >/dev/null && HAVE_HYPERFINE=1
HAVE_TIME=0; [ -x /usr/bin/time ] && HAVE_TIME=1

# ------------------------------------------------------------- fd limit ----
# holder.py raises its own RLIMIT_NOFILE as far as allowed and spreads the
# sockets over more processes when the hard limit is low.
if [ "$IS_ROOT" -eq 1 ]; then
    want=300000
    nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
    [ "$nr_open" -lt "$want" ] && want=$nr_open
    if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
        ulimit -Hn "$want" 2>/dev/null || note "cannot raise the hard nofile limit above $(ulimit -Hn) (no CAP_SYS_RESOURCE?); holder.py spreads over more processes"
    fi
fi
hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true

# ---------------------------------------------------------------- build ----
if [ "$BUILD" -eq 1 ]; then
    if command -v cargo >/dev/null && [ -f "$ROOT/Cargo.toml" ]; then
        note "building portolan (cargo build --release -q -p portolan)"
        (cd "$ROOT" && cargo build --release -q -p portolan) || note "cargo build FAILED; timing the anchors only${PORTOLAN:+ (unless a stale binary exists)}"
        (cd "$ROOT" && cargo build --release -q -p portolan-sockets --example who_walk) || note "cargo build of the who_walk example FAILED; no walk counters"
    else
        note "no cargo or no $ROOT/Cargo.toml: not building portolan"
    fi
fi
PORTOLAN_OK=0
if [ -x "$PORTOLAN" ]; then PORTOLAN_OK=1; else note "portolan binary not found at $PORTOLAN: timing the anchors only"; fi

# --------------------------------------------------------------- holder ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portolan-bench.XXXXXX")
HOLDER_PID=
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    exec 3>&- || true      # holder exits when its stdin closes
    if [ -n "$HOLDER_PID" ]; then
        local i
        for i in $(seq 100); do kill -0 "$HOLDER_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$HOLDER_PID" 2>/dev/null; then
            kill -TERM "$HOLDER_PID" 2>/dev/null || true
            for i in $(seq 50); do kill -0 "$HOLDER_PID" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$HOLDER_PID" 2>/dev/null || true
        fi
        wait "$HOLDER_PID" 2>/dev/null || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Generous deadline: the holder stops by itself even if this script is killed -9.
HOLDER_MAX=$((600 + RUNS * 150))
mkfifo "$TMP/ctl"
python3 "$SCRIPT_DIR/holder.py" --sockets "$SOCKETS" --established "$ESTABLISHED" --procs "$PROCS" \
    --app-port "$APP_PORT" --solo-port "$SOLO_PORT" \
    --max-seconds "$HOLDER_MAX" --setup-timeout "$SETUP_TIMEOUT" \
    <"$TMP/ctl" >"$TMP/ready" 2>"$TMP/holder.err" &
HOLDER_PID=$!
exec 3>"$TMP/ctl"

note "opening $SOCKETS TCP sockets on loopback (bench/holder.py)"
t_setup0=$(date +%s%N)
ready=
for _ in $(seq $((SETUP_TIMEOUT * 5))); do
    if read -r tag total _port <"$TMP/ready" 2>/dev/null && [ "$tag" = READY ]; then
        ready=1; break
    fi
    kill -0 "$HOLDER_PID" 2>/dev/null || break
    sleep 0.2
done
t_setup1=$(date +%s%N)
cat "$TMP/holder.err" >&2
[ -n "$ready" ] || die "holder.py did not get ready (see its messages above)"
SETUP_S=$(awk -v a="$t_setup0" -v b="$t_setup1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
APP_PID=$(pgrep -x holder-app | head -1 || true)
SOLO_PID=$(pgrep -x holder-solo | head -1 || true)
# A port that bulk client sockets (held open, from 127.0.K.x with K >= 1) use as their
# ephemeral local port; not TIME-WAIT leftovers, which no process holds.
EPH_PORT=$(ss -tnH state established state fin-wait-2 "( sport >= :$EPH_LO and sport <= :$EPH_HI )" 2>/dev/null |
    awk '{ l = (NF >= 5) ? $4 : $3 }   # with several states, ss prints a State column
         l !~ /^127\.0\.0\./ && l ~ /^127\./ { n = split(l, a, ":"); p = a[n]; c[p]++ }
         END { for (p in c) if (c[p] > best) { best = c[p]; bp = p } print bp }')

# ----------------------------------------------------------- sanity ----
SS_COUNT=$(ss -tanH | wc -l)
SS_EST=$(ss -tnH state established | wc -l)
[ "$SS_COUNT" -ge $((SOCKETS * 9 / 10)) ] ||
    die "only $SS_COUNT TCP sockets seen by ss (wanted >= 90% of $SOCKETS)"

PORTOLAN_COUNTS=
if [ "$PORTOLAN_OK" -eq 1 ]; then
    if timeout 300 "$PORTOLAN" ls -a -t --json >"$TMP/ls.json" 2>"$TMP/ls.err"; then
        if PORTOLAN_COUNTS=$(python3 - "$TMP/ls.json" "$APP_PORT" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
socks = doc["sockets"]
port = int(sys.argv[2])
with_pid = sum(1 for s in socks if s.get("pid") is not None)
app = [s for s in socks if s.get("local_port") == port or s.get("remote_port") == port]
procs = sorted({str(s.get("process")) for s in app})
print("%d sockets, %d with a pid; %d touch port %d (processes: %s)%s"
      % (len(socks), with_pid, len(app), port, ", ".join(procs) or "none",
         "" if with_pid else "  WARNING: no owning processes found"))
EOF
        ); then
            :
        else
            note "portolan ls -a -t --json output does not parse as the expected JSON; not timing portolan"
            PORTOLAN_OK=0
        fi
    else
        note "portolan ls -a -t --json failed (exit $?): $(head -c 400 "$TMP/ls.err")"
        PORTOLAN_OK=0
    fi
    rm -f "$TMP/ls.json"
fi
EST_COUNTS=
if [ "$PORTOLAN_OK" -eq 1 ]; then
    if timeout 300 "$PORTOLAN" ls --state established -t --json >"$TMP/est.json" 2>"$TMP/est.err" &&
        EST_COUNTS=$(python3 - "$TMP/est.json" <<'EOF'
import json, sys
socks = json.load(open(sys.argv[1]))["sockets"]
bad = [s for s in socks if s.get("state") != "established"]
with_pid = sum(1 for s in socks if s.get("pid") is not None)
print("%d sockets, %d with a pid%s" % (len(socks), with_pid,
      "  WARNING: %d not established" % len(bad) if bad else ""))
EOF
        ); then
        :
    else
        note "portolan ls --state established -t --json failed or did not parse: $(head -c 400 "$TMP/est.err")"
    fi
    rm -f "$TMP/est.json"
fi
if [ "$PORTOLAN_OK" -eq 1 ]; then
    for pp in "$APP_PORT:$APP_PID" "$SOLO_PORT:$SOLO_PID"; do
        port=${pp%%:*} pid=${pp#*:}
        if ! timeout 60 "$PORTOLAN" who "$port" >"$TMP/who.out" 2>"$TMP/who.err"; then
            note "portolan who $port failed: $(head -c 400 "$TMP/who.err")"
        elif [ -n "$pid" ] && ! grep -qw -- "$pid" "$TMP/who.out"; then
            note "warning: portolan who $port does not mention the app's pid $pid"
        fi
    done
fi
# The owner walk's counters for each `who` (median run of 3).
WHO_WALK="$ROOT/target/release/examples/who_walk"
declare -A WALK
if [ -x "$WHO_WALK" ]; then
    for port in "$APP_PORT" "$SOLO_PORT" $EPH_PORT; do
        WALK[$port]=$("$WHO_WALK" "$port" 3 2>/dev/null |
            awk -F'collect ' '{ split($2, a, " "); print a[1] "\t" $0 }' | sort -g | sed -n 2p |
            cut -f2- | sed -E 's/^port [0-9]+: //; s/, owners .*//')
    done
fi

# ----------------------------------------------------------- timing ----
declare -A MED MIN MAX RSS
LABELS=()

# measure LABEL CMD...: one run under /usr/bin/time for the peak RSS (and as a
# warm-up), then RUNS timed runs; stdout and stderr go to /dev/null.
measure() {
    local label=$1 med min max; shift
    LABELS+=("$label")
    note "timing: $label ($RUNS runs)"
    if [ "$HAVE_TIME" -eq 1 ]; then
        /usr/bin/time -f %M -o "$TMP/rss" "$@" >/dev/null 2>&1 || true
        RSS[$label]=$(tail -1 "$TMP/rss" 2>/dev/null || echo "")
    fi
    if [ "$HAVE_HYPERFINE" -eq 1 ]; then
        local cmd
        cmd=$(printf '%q ' "$@")
        hyperfine -N -i --runs "$RUNS" --style none --output null \
            --export-json "$TMP/hf.json" -- "$cmd" >/dev/null 2>&1 ||
            die "hyperfine failed on: $cmd"
        read -r med min max < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(r["median"], r["min"], r["max"])' "$TMP/hf.json")
    else
        local i t0 t1 times=()
        for i in $(seq "$RUNS"); do
            t0=$(date +%s%N)
            "$@" >/dev/null 2>&1 || true
            t1=$(date +%s%N)
            times+=($((t1 - t0)))
        done
        read -r med min max < <(printf '%s\n' "${times[@]}" | sort -n | awk '
            { v[NR] = $1 / 1e9 }
            END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m, v[1], v[NR] }')
    fi
    MED[$label]=$med; MIN[$label]=$min; MAX[$label]=$max
}

LS_P="portolan ls -a -t --json"
EST_P="portolan ls --state established -t --json"
WHO_P="portolan who $APP_PORT"
WHO_S="portolan who $SOLO_PORT"
WHO_E="portolan who ${EPH_PORT:-?}"
[ "$PORTOLAN_OK" -eq 1 ] && measure "$LS_P" "$PORTOLAN" ls -a -t --json
measure "ss -tanp" ss -tanp
command -v netstat >/dev/null && measure "netstat -tanp" netstat -tanp
measure "lsof -nP -iTCP" lsof -nP -iTCP
[ "$PORTOLAN_OK" -eq 1 ] && measure "$EST_P" "$PORTOLAN" ls --state established -t --json
measure "ss -tnp state established" ss -tnp state established
[ "$PORTOLAN_OK" -eq 1 ] && measure "$WHO_P" "$PORTOLAN" who "$APP_PORT"
measure "lsof -i :$APP_PORT" lsof -i ":$APP_PORT"
command -v fuser >/dev/null && measure "fuser $APP_PORT/tcp" fuser "$APP_PORT/tcp"
[ "$PORTOLAN_OK" -eq 1 ] && measure "$WHO_S" "$PORTOLAN" who "$SOLO_PORT"
measure "lsof -i :$SOLO_PORT" lsof -i ":$SOLO_PORT"
if [ -n "$EPH_PORT" ]; then
    [ "$PORTOLAN_OK" -eq 1 ] && measure "$WHO_E" "$PORTOLAN" who "$EPH_PORT"
    measure "lsof -i :$EPH_PORT" lsof -i ":$EPH_PORT"
fi

# ----------------------------------------------------------- report ----
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { r = a / b; printf (r >= 10 ? "%.0f" : "%.1f"), r }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
fmt_s() { awk -v t="$1" 'BEGIN { printf (t < 0.1 ? "%.3f s" : "%.2f s"), t }'; }
fmt_mb() { [ -n "${1:-}" ] && awk -v k="$1" 'BEGIN { printf "%.0f MB", k / 1024 }' || echo "?"; }

compare() {   # compare ANCHOR PORTOLAN_LABEL TARGET(optional)
    local anchor=$1 p=$2 target=${3:-}
    [ -n "${MED[$p]:-}" ] || { echo ""; return; }
    local r; r=$(ratio "${MED[$anchor]}" "${MED[$p]}")
    if ! ge "$r" 1; then
        r=$(ratio "${MED[$p]}" "${MED[$anchor]}")
        echo "portolan is ${r}x SLOWER${target:+ (target >= ${target}x faster: MISSED)}"
        return
    fi
    if [ -n "$target" ]; then
        if ge "$r" "$target"; then
            echo "portolan is ${r}x faster (target >= ${target}x: OK)"
        else
            echo "portolan is ${r}x faster (target >= ${target}x: MISSED)"
        fi
    else
        echo "portolan is ${r}x faster"
    fi
}

echo
echo "portolan socket-inventory benchmark: $(uname -sr), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo "command: bench/inventory.sh --sockets $SOCKETS --runs $RUNS   (median of $RUNS runs$([ "$HAVE_HYPERFINE" -eq 1 ] && echo ", hyperfine" || echo ", bash loop"))"
echo "sockets open: $SS_COUNT (ss count; $SS_EST established), holder reported $total, setup ${SETUP_S} s"
[ -n "$PORTOLAN_COUNTS" ] && echo "portolan ls -a -t --json: $PORTOLAN_COUNTS"
[ -n "$EST_COUNTS" ] && echo "$EST_P: $EST_COUNTS"
[ "$PORTOLAN_OK" -eq 1 ] || echo "portolan: NOT MEASURED (binary missing, failing, or bad JSON)"
echo "who layouts: port $APP_PORT, a sibling of the bulk holders (one parent); port $SOLO_PORT, its own session; port ${EPH_PORT:-(none found)}, the ephemeral local port of bulk connections (ephemeral range $EPH_LO-$EPH_HI)"
for port in "$APP_PORT" "$SOLO_PORT" $EPH_PORT; do
    [ -n "${WALK[$port]:-}" ] && echo "  who $port: ${WALK[$port]}"
done
echo
printf '%-42s %9s %9s %9s %9s   %s\n' command median min max "peak RSS" "vs anchor"
for label in "${LABELS[@]}"; do
    vs=
    case "$label" in
        "ss -tanp") vs=$(compare "$label" "$LS_P" "$LS_RATIO_TARGET") ;;
        "netstat -tanp"|"lsof -nP -iTCP") vs=$(compare "$label" "$LS_P") ;;
        "ss -tnp state established") vs=$(compare "$label" "$EST_P") ;;
        "lsof -i :$APP_PORT") vs=$(compare "$label" "$WHO_P" "$WHO_RATIO_TARGET") ;;
        "fuser $APP_PORT/tcp") vs=$(compare "$label" "$WHO_P") ;;
        "lsof -i :$SOLO_PORT") vs=$(compare "$label" "$WHO_S" "$WHO_RATIO_TARGET") ;;
        "lsof -i :${EPH_PORT:-?}") vs=$(compare "$label" "$WHO_E") ;;
    esac
    printf '%-42s %9s %9s %9s %9s   %s\n' "$label" "$(fmt_s "${MED[$label]}")" \
        "$(fmt_s "${MIN[$label]}")" "$(fmt_s "${MAX[$label]}")" "$(fmt_mb "${RSS[$label]:-}")" "$vs"
done
MISSED=()
if [ -n "${MED[$LS_P]:-}" ]; then
    r=$(ratio "${MED[ss -tanp]}" "${MED[$LS_P]}")
    ge "$r" "$LS_RATIO_TARGET" || MISSED+=("ls -a: ${r}x faster than ss -tanp (< ${LS_RATIO_TARGET}x)")
fi
for wp in "$WHO_P:$APP_PORT:same parent as the bulk holders" "$WHO_S:$SOLO_PORT:own session"; do
    IFS=: read -r label port layout <<<"$wp"
    if [ -n "${MED[$label]:-}" ]; then
        r=$(ratio "${MED[lsof -i :$port]}" "${MED[$label]}")
        ge "$r" "$WHO_RATIO_TARGET" || MISSED+=("who ($layout): ${r}x faster than lsof -i :$port (< ${WHO_RATIO_TARGET}x)")
    fi
done
if [ "$PORTOLAN_OK" -eq 1 ]; then
    rss_line="peak RSS:"
    for p in "$LS_P" "$EST_P" "$WHO_P" "$WHO_S"; do
        kb=${RSS[$p]:-}
        if [ -z "$kb" ]; then rss_line+=" $p ?;"; continue; fi
        if [ "$kb" -lt $((RSS_TARGET_MB * 1024)) ]; then st=OK; else st=MISSED; MISSED+=("$p peak RSS $(fmt_mb "$kb") >= ${RSS_TARGET_MB} MB"); fi
        rss_line+=" ${p#portolan } $(fmt_mb "$kb") (target < ${RSS_TARGET_MB} MB: $st);"
    done
    echo
    echo "${rss_line%;}"
    if [ ${#MISSED[@]} -eq 0 ]; then
        echo "targets: all met"
    else
        for m in "${MISSED[@]}"; do echo "MISSED: $m"; done
    fi
else
    echo
    echo "targets: not checked (portolan not measured)"
fi
exit 0
