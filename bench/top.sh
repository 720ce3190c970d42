#!/usr/bin/env bash
# Live-view benchmark: `portolan top` with ~100,000 TCP sockets open on loopback, beside
# `watch -n1 ss -tanp` and bandwhich, in the same run.
#
#   bench/top.sh [--sockets N] [--seconds S] [--warm W] [--runs R] [--procs K]
#                [--only LIST] [--perf] [--keep DIR]
#                [--no-build] [--no-install] [--portolan PATH] [--bandwhich PATH]
#
# 1. Opens N TCP sockets (default 100000, all ESTABLISHED connections with both ends in the
#    same process, plus a few listeners) on 127.0.0.0/8 with bench/holder.py, over K bulk
#    processes (default 7, more when RLIMIT_NOFILE is too low); checks them with `ss -s`.
# 2. Runs each tool alone, one after the other, in a tmux pane of 200x50 (a tmux server of
#    its own, `tmux -L portolan-bench-top-PID`), nothing typed: W seconds to settle
#    (default 3) after its first screen, then a window of S seconds (default 30):
#      top        portolan top                        (the listeners view; the targets)
#      conns      portolan top --view connections     (every socket a row, sorted each refresh)
#      watch      watch -n1 ss -tanp
#      bandwhich  bandwhich -i lo -n                  (root: it captures packets on lo)
#      traffic    portolan top, while iperf3 -b 100M runs on loopback
#    CPU from /proc (utime + stime of the process and all its threads; for watch also
#    cutime + cstime, where the `ss` runs it reaps land, and any ss running at either end
#    of the window), as % of one core over the window; peak RSS (VmHWM). For portolan top,
#    the header's `refresh #N took M ms` read from the screen every second: median, p95,
#    max. bandwhich shows no such figure.
#      ss         `ss -tanp` run directly R times (default 5; hyperfine -N, output to
#                 /dev/null): the refresh of `watch -n1 ss -tanp`.
#    --perf: one more window of `portolan top` under `perf record -a --call-graph dwarf`
#    (system-wide; attaching to a pid records nothing here), then where its samples go:
#    by operation (sock_diag dump, each of the sampler's maps, the view) and by symbol.
# 3. Tears everything down and prints the table, the targets and the exact command.
# Targets (from the issue): with 100,000 sockets, one refresh of `portolan top` under 0.5 s,
# and the view under 10% of a core at one refresh a second, idle. A missed target prints
# MISSED, exit 0; exit 2 for a broken setup. Everything it starts is stopped on exit,
# Ctrl-C included (trap); each tool also runs under `timeout`, the holder has a deadline.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

SOCKETS=100000
SECONDS_WIN=30
WARM=3
RUNS=5
PROCS=7
ONLY="top,conns,watch,bandwhich,traffic,ss"
PERF=0
PERF_SECONDS=20
KEEP=
BUILD=1
INSTALL=1
PORTOLAN="$ROOT/target/release/portolan"
BANDWHICH=
TOOLS_ROOT=/var/cache/portolan-bench-tools
TARGET_MS=500
TARGET_CPU=10
IPERF_RATE=100M

usage() { sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "top-bench: $*" >&2; exit 2; }
note() { echo "top-bench: $*" >&2; }
ARGS=("$@")

while [ $# -gt 0 ]; do
    case "$1" in
        --sockets) SOCKETS=${2:?}; shift 2 ;;
        --seconds) SECONDS_WIN=${2:?}; shift 2 ;;
        --warm) WARM=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --procs) PROCS=${2:?}; shift 2 ;;
        --only) ONLY=${2:?}; shift 2 ;;
        --perf) PERF=1; shift ;;
        --keep) KEEP=${2:?}; shift 2 ;;
        --portolan) PORTOLAN=${2:?}; BUILD=0; shift 2 ;;
        --bandwhich) BANDWHICH=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
isint() { [[ "$1" =~ ^[0-9]+$ ]]; }
isint "$SOCKETS" && [ "$SOCKETS" -ge 100 ] || die "--sockets must be an integer >= 100"
isint "$SECONDS_WIN" && [ "$SECONDS_WIN" -ge 5 ] && [ "$SECONDS_WIN" -le 600 ] || die "--seconds must be 5..600"
isint "$WARM" && [ "$WARM" -le 60 ] || die "--warm must be 0..60"
isint "$RUNS" && [ "$RUNS" -ge 1 ] || die "--runs must be a positive integer"
isint "$PROCS" && [ "$PROCS" -ge 1 ] || die "--procs must be a positive integer"
for o in ${ONLY//,/ }; do
    case "$o" in top|conns|watch|bandwhich|traffic|ss) ;; *) die "--only: unknown part '$o' (top conns watch bandwhich traffic ss)" ;; esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# ---------------------------------------------------------------- tools ----
command -v python3 >/dev/null || die "python3 is required"
declare -A PKG_OF=([ss]=iproute2 [tmux]=tmux [watch]=procps [timeout]=coreutils [iperf3]=iperf3
                   [hyperfine]=hyperfine [/usr/bin/time]=time [perf]=linux-perf)
want_tools=(ss tmux watch timeout hyperfine /usr/bin/time)
want traffic && want_tools+=(iperf3)
[ "$PERF" -eq 1 ] && want_tools+=(perf)
missing_pkgs=()
for tool in "${want_tools[@]}"; do
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
command -v tmux >/dev/null || die "tmux is required"
command -v timeout >/dev/null || die "timeout (coreutils) is required"
HAVE_HYPERFINE=0; command -v hyperfine >/dev/null && HAVE_HYPERFINE=1
HAVE_TIME=0; [ -x /usr/bin/time ] && HAVE_TIME=1
if [ "$PERF" -eq 1 ] && ! command -v perf >/dev/null; then note "perf not found: --perf ignored"; PERF=0; fi

# bandwhich: given, or installed before, or built once with cargo into $TOOLS_ROOT.
BANDWHICH_WHY=""
if want bandwhich; then
    if [ -z "$BANDWHICH" ]; then
        for c in "$TOOLS_ROOT/bin/bandwhich" "$(command -v bandwhich 2>/dev/null || true)" "$HOME/.cargo/bin/bandwhich"; do
            [ -n "$c" ] && [ -x "$c" ] && { BANDWHICH=$c; break; }
        done
    fi
    if [ -z "$BANDWHICH" ] && [ "$INSTALL" -eq 1 ] && command -v cargo >/dev/null; then
        note "building bandwhich once (cargo install bandwhich --locked --root $TOOLS_ROOT; a few minutes)"
        if mkdir -p "$TOOLS_ROOT" && cargo install -q bandwhich --locked --root "$TOOLS_ROOT" >&2; then
            BANDWHICH="$TOOLS_ROOT/bin/bandwhich"
        else
            BANDWHICH_WHY="cargo install bandwhich failed (see above)"
        fi
    fi
    if [ -z "$BANDWHICH" ]; then
        [ -n "$BANDWHICH_WHY" ] || BANDWHICH_WHY="no bandwhich (not in $TOOLS_ROOT/bin, PATH or ~/.cargo/bin; --no-install or no cargo)"
    elif [ "$IS_ROOT" -ne 1 ]; then
        BANDWHICH_WHY="bandwhich needs root (packet capture on lo, other users' /proc/PID/fd); not root"
    fi
fi
BANDWHICH_VERSION=""
[ -n "$BANDWHICH" ] && [ -x "$BANDWHICH" ] && BANDWHICH_VERSION=$("$BANDWHICH" --version 2>/dev/null | head -1 || true)

# ------------------------------------------------------------- fd limit ----
# holder.py raises its own RLIMIT_NOFILE as far as allowed and spreads the sockets over
# more processes when the hard limit is low.
if [ "$IS_ROOT" -eq 1 ]; then
    want_fd=300000
    nr_open=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
    [ "$nr_open" -lt "$want_fd" ] && want_fd=$nr_open
    if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want_fd" ]; then
        ulimit -Hn "$want_fd" 2>/dev/null || note "cannot raise the hard nofile limit above $(ulimit -Hn) (no CAP_SYS_RESOURCE?); holder.py spreads over more processes"
    fi
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- build ----
if [ "$BUILD" -eq 1 ]; then
    if command -v cargo >/dev/null && [ -f "$ROOT/Cargo.toml" ]; then
        note "building portolan (cargo build --release -q -p portolan)"
        (cd "$ROOT" && cargo build --release -q -p portolan) || note "cargo build FAILED; measuring the anchors only (unless a stale binary exists)"
    else
        note "no cargo or no $ROOT/Cargo.toml: not building portolan"
    fi
fi
TOP_OK=0
if [ -x "$PORTOLAN" ] && "$PORTOLAN" top --help >/dev/null 2>&1; then
    TOP_OK=1
else
    note "no portolan with a top command at $PORTOLAN: measuring the anchors only"
fi
PORTOLAN_VERSION=$([ "$TOP_OK" -eq 1 ] && "$PORTOLAN" --version 2>/dev/null | head -1 || true)

# ---------------------------------------------------------- cleanup ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portolan-top-bench.XXXXXX")
TSOCK="portolan-bench-top-$$"
HOLDER_PID="" IPERF_S_PID="" IPERF_C_PID="" PERF_PID="" MEASURE_PID=""
stop_pid() { # PID [SIGNAL]: signal, wait at most 10 s, then KILL
    local p=$1 sig=${2:-TERM} i
    [ -n "$p" ] || return 0
    kill -"$sig" "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
tmux_() { tmux -L "$TSOCK" -f /dev/null "$@"; }
stop_holder() {
    exec 3>&- || true      # the holder exits when its stdin closes
    if [ -n "$HOLDER_PID" ]; then
        local i
        for i in $(seq 150); do kill -0 "$HOLDER_PID" 2>/dev/null || break; sleep 0.1; done
        stop_pid "$HOLDER_PID" TERM
        HOLDER_PID=""
    fi
}
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_pid "$MEASURE_PID" TERM
    stop_pid "$PERF_PID" INT
    tmux_ kill-server 2>/dev/null || true
    stop_pid "$IPERF_C_PID" TERM
    stop_pid "$IPERF_S_PID" TERM
    stop_holder
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --------------------------------------------------------------- holder ----
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
BASE_SOCKETS=$(ss -tanH exclude time-wait | wc -l)
n_windows=0
for o in top conns watch bandwhich traffic; do want "$o" && n_windows=$((n_windows + 1)); done
[ "$PERF" -eq 1 ] && n_windows=$((n_windows + 1))
# A deadline of its own: the holder stops even if this script is killed -9.
HOLDER_MAX=$((600 + n_windows * (SECONDS_WIN + WARM + 90) + RUNS * 30))
mkfifo "$TMP/ctl"
note "opening $SOCKETS TCP sockets on loopback (bench/holder.py)"
t0=$(date +%s%N)
python3 "$SCRIPT_DIR/holder.py" --sockets "$SOCKETS" --procs "$PROCS" --max-seconds "$HOLDER_MAX" \
    <"$TMP/ctl" >"$TMP/ready" 2>"$TMP/holder.err" &
HOLDER_PID=$!
exec 3>"$TMP/ctl"
ready=
for _ in $(seq 1500); do
    if read -r tag HELD _ <"$TMP/ready" 2>/dev/null && [ "$tag" = READY ]; then ready=1; break; fi
    kill -0 "$HOLDER_PID" 2>/dev/null || break
    sleep 0.2
done
t1=$(date +%s%N)
cat "$TMP/holder.err" >&2
[ -n "$ready" ] || die "holder.py did not get ready (see its messages above)"
SETUP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
SS_ALL=$(ss -tanH | wc -l)
SS_EST=$(ss -tnH state established | wc -l)
SS_SUMMARY=$(ss -s | grep -E '^TCP:' | head -1 | sed -E 's/[[:space:]]+/ /g' || true)
[ "$SS_ALL" -ge $((SOCKETS * 9 / 10)) ] || die "only $SS_ALL TCP sockets seen by ss (wanted >= 90% of $SOCKETS)"
HOLDER_PROCS=$(pgrep -c '^holder-' || true)
LOAD_LINE="$SS_ALL TCP sockets ($SS_EST established; holder.py reported $HELD in $HOLDER_PROCS processes, setup ${SETUP_S} s; $BASE_SOCKETS before, TIME-WAIT aside); ss -s: $SS_SUMMARY"
note "load: $LOAD_LINE"

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
measure_py() { python3 "$SCRIPT_DIR/top_measure.py" "$@"; }
json_str() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }

# run_window NAME LABEL KIND READY_REGEX EXTRA_JSON CMD...
# Starts CMD in its own tmux session (200x50), waits for a screen matching READY_REGEX
# (at most 120 s), W seconds more, then measures S seconds. The pane's shell keeps the
# pane open after CMD exits (and says how it exited), so that a failure stays readable.
WIN_PID=""
run_window() {
    local name=$1 label=$2 kind=$3 ready_re=$4 extra=$5; shift 5
    local bound=$((120 + WARM + SECONDS_WIN + 60)) cmd pane tpid="" i s t_start t_ready startup
    cmd="timeout --foreground -k 5 $bound $(printf '%q ' "$@"); echo TOOL-EXITED:\$?; sleep $bound"
    note "window: $label (${WARM} s to settle, then ${SECONDS_WIN} s)"
    t_start=$(date +%s%N)
    tmux_ new-session -d -s "$name" -x 200 -y 50 "$cmd"
    pane=$(tmux_ display-message -p -t "$name" '#{pane_pid}')
    WIN_PID=""
    for i in $(seq 100); do
        tpid=$(pgrep -P "$pane" -x timeout | head -1 || true)
        [ -n "$tpid" ] && WIN_PID=$(pgrep -P "$tpid" | head -1 || true)
        [ -n "$WIN_PID" ] && break
        sleep 0.05
    done
    if [ -z "$WIN_PID" ]; then
        s=$(tmux_ capture-pane -p -t "$name" | grep -v '^$' | tail -4 | tr '\n' ' ' || true)
        printf '{"label": %s, "kind": "%s", "error": %s}\n' "$(json_str "$label")" "$kind" \
            "$(json_str "did not start: ${s:-no output}")" >>"$RESULTS"
        tmux_ kill-session -t "$name" 2>/dev/null || true
        return 0
    fi
    startup=""
    for i in $(seq 1200); do
        s=$(tmux_ capture-pane -p -t "$name" 2>/dev/null || true)
        if grep -qE "$ready_re" <<<"$s"; then
            t_ready=$(date +%s%N)
            startup=$(awk -v a="$t_start" -v b="$t_ready" 'BEGIN { printf "%.2f", (b - a) / 1e9 }')
            break
        fi
        grep -q 'TOOL-EXITED:' <<<"$s" && break
        sleep 0.1
    done
    if [ -z "$startup" ]; then
        s=$(tmux_ capture-pane -p -t "$name" | grep -v '^$' | tail -6 | tr '\n' ' ' | tr -s ' ' || true)
        printf '{"label": %s, "kind": "%s", "error": %s}\n' "$(json_str "$label")" "$kind" \
            "$(json_str "no first screen within 120 s: ${s:-no output}")" >>"$RESULTS"
        tmux_ kill-session -t "$name" 2>/dev/null || true
        return 0
    fi
    sleep "$WARM"
    [ -n "${ON_READY:-}" ] && eval "$ON_READY"   # --perf starts recording here
    extra=$(python3 -c 'import json, sys; d = json.loads(sys.argv[1]); d.update(kind=sys.argv[2], startup_s=float(sys.argv[3])); print(json.dumps(d))' \
        "$extra" "$kind" "$startup")
    # In the background, waited for: a signal to this script is handled at once.
    measure_py window --tmux-sock "$TSOCK" --target "$name" --pid "$WIN_PID" --seconds "$SECONDS_WIN" \
        --label "$label" --screen "$TMP/$name.screen" --out "$TMP/$name.json" --extra "$extra" &
    MEASURE_PID=$!
    wait "$MEASURE_PID"
    MEASURE_PID=""
    cat "$TMP/$name.json" >>"$RESULTS"; echo >>"$RESULTS"
}
# stop_window NAME KEYS...: the keys a person would press to leave, then the session goes.
stop_window() {
    local name=$1 i; shift
    tmux_ send-keys -t "$name" "$@" 2>/dev/null || true
    for i in $(seq 50); do
        tmux_ capture-pane -p -t "$name" 2>/dev/null | grep -q 'TOOL-EXITED:' && break
        sleep 0.1
    done
    tmux_ capture-pane -p -t "$name" 2>/dev/null | grep -o 'TOOL-EXITED:[0-9]*' | tail -1 >"$TMP/$name.exit" || true
    tmux_ kill-session -t "$name" 2>/dev/null || true
    [ -n "$WIN_PID" ] && for i in $(seq 50); do kill -0 "$WIN_PID" 2>/dev/null || break; sleep 0.1; done
    WIN_PID=""
}

TOP_READY='refresh #[0-9]+ took'
TOP_FOR="$((120 + WARM + SECONDS_WIN + 30))s"   # portolan top stops by itself after this
if [ "$TOP_OK" -eq 1 ] && want top; then
    run_window top "portolan top (listeners view)" portolan "$TOP_READY" '{"target": true}' \
        "$PORTOLAN" top --interval 1 --for "$TOP_FOR"
    stop_window top q
fi
if [ "$TOP_OK" -eq 1 ] && want conns; then
    run_window conns "portolan top --view connections" portolan "$TOP_READY" '{}' \
        "$PORTOLAN" top --interval 1 --view connections --for "$TOP_FOR"
    stop_window conns q
fi
if want watch; then
    run_window watch "watch -n1 ss -tanp" watch '(State|Recv-Q).*Local' '{}' watch -n1 ss -tanp
    stop_window watch C-c
fi
if want bandwhich; then
    if [ -n "$BANDWHICH_WHY" ]; then
        printf '{"label": "bandwhich -i lo -n", "kind": "bandwhich", "error": %s}\n' "$(json_str "not run: $BANDWHICH_WHY")" >>"$RESULTS"
    else
        run_window bandwhich "bandwhich -i lo -n${BANDWHICH_VERSION:+ (${BANDWHICH_VERSION#bandwhich })}" bandwhich \
            '(Utilization|Process|Connection|Remote)' '{}' "$BANDWHICH" -i lo -n
        stop_window bandwhich q
    fi
fi
IPERF_LINE=""
if [ "$TOP_OK" -eq 1 ] && want traffic; then
    if ! command -v iperf3 >/dev/null; then
        printf '{"label": "portolan top + iperf3 -b %s", "kind": "portolan", "error": "not run: no iperf3"}\n' "$IPERF_RATE" >>"$RESULTS"
    else
        IPORT=""
        for p in $(seq 31500 31599); do
            [ "$(ss -tanH "( sport = :$p )" | wc -l)" -eq 0 ] && { IPORT=$p; break; }
        done
        [ -n "$IPORT" ] || die "no free port in 31500-31599 for iperf3"
        iperf3 -s -1 -B 127.0.0.1 -p "$IPORT" >"$TMP/iperf3-s.out" 2>&1 &
        IPERF_S_PID=$!
        sleep 0.5
        IPERF_T=$((120 + WARM + SECONDS_WIN))
        iperf3 -c 127.0.0.1 -p "$IPORT" -b "$IPERF_RATE" -t "$IPERF_T" >"$TMP/iperf3-c.out" 2>&1 &
        IPERF_C_PID=$!
        sleep 2
        run_window traffic "portolan top + iperf3 -b $IPERF_RATE on lo" portolan "$TOP_READY" \
            "{\"traffic\": true, \"note\": \"iperf3 -c 127.0.0.1 -b $IPERF_RATE running (12.5 MB/s each way)\"}" \
            "$PORTOLAN" top --interval 1 --for "$TOP_FOR"
        stop_window traffic q
        alive=0; kill -0 "$IPERF_C_PID" 2>/dev/null && alive=1
        stop_pid "$IPERF_C_PID" INT; IPERF_C_PID=""   # iperf3 prints its summary on SIGINT
        sender=$(grep -E ' sender *$' "$TMP/iperf3-c.out" | tail -1 | sed -E 's/^\[ *[0-9]+\] +//; s/ +/ /g' || true)
        if [ "$alive" -eq 1 ]; then
            IPERF_LINE="iperf3 -c 127.0.0.1 -p $IPORT -b $IPERF_RATE, from before the traffic window to its end: ${sender:-no summary}"
        else
            IPERF_LINE="iperf3 client ended before the window did: $(tail -3 "$TMP/iperf3-c.out" | tr '\n' ' ')"
        fi
        stop_pid "$IPERF_S_PID" TERM; IPERF_S_PID=""
    fi
fi

# ----------------------------------------------------------- ss -tanp ----
if want ss; then
    note "timing: ss -tanp ($RUNS runs after a warm-up)"
    rss=""
    if [ "$HAVE_TIME" -eq 1 ]; then
        /usr/bin/time -f %M -o "$TMP/rss" ss -tanp >/dev/null 2>&1 || true
        rss=$(tail -1 "$TMP/rss" 2>/dev/null || true)
    fi
    if [ "$HAVE_HYPERFINE" -eq 1 ]; then
        hyperfine -N -i --warmup 1 --runs "$RUNS" --style none --output null \
            --export-json "$TMP/hf.json" -- "ss -tanp" >/dev/null 2>&1 || die "hyperfine failed on ss -tanp"
        python3 - "$TMP/hf.json" "${rss:-0}" "$RUNS" >>"$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = sorted(r["times"])
print(json.dumps({"label": "ss -tanp", "kind": "ss", "runs": int(sys.argv[3]), "median": r["median"],
                  "min": r["min"], "max": r["max"], "p95": t[max(1, -(-len(t) * 95 // 100)) - 1],
                  "rss_kb": int(sys.argv[2]) or None}))
EOF
    else
        times=()
        for _ in $(seq "$RUNS"); do
            a=$(date +%s%N); ss -tanp >/dev/null 2>&1 || true; b=$(date +%s%N)
            times+=($((b - a)))
        done
        printf '%s\n' "${times[@]}" | python3 -c '
import json, sys
t = sorted(int(x) / 1e9 for x in sys.stdin.read().split()); n = len(t)
m = t[n // 2] if n % 2 else (t[n // 2 - 1] + t[n // 2]) / 2
print(json.dumps({"label": "ss -tanp", "kind": "ss", "runs": n, "median": m, "min": t[0], "max": t[-1],
                  "p95": t[max(1, -(-n * 95 // 100)) - 1], "rss_kb": int(sys.argv[1]) or None}))' "${rss:-0}" >>"$RESULTS"
    fi
fi

# ----------------------------------------------------------------- perf ----
PERF_LINES=""
if [ "$PERF" -eq 1 ] && [ "$TOP_OK" -eq 1 ]; then
    note "perf: portolan top under perf record -a --call-graph dwarf for $PERF_SECONDS s"
    SAVE_S=$SECONDS_WIN
    SECONDS_WIN=$PERF_SECONDS
    # DWARF call graphs (release builds keep line tables, not frame pointers): ~10 MB a
    # second. Recording starts W seconds after the first screen: no start-up walk in it.
    ON_READY='perf record -F 199 --call-graph dwarf,32768 -a -o "$TMP/perf.data" >/dev/null 2>"$TMP/perf.err" & PERF_PID=$!; sleep 0.3'
    run_window perf "portolan top under perf (not in the table)" perf-portolan "$TOP_READY" '{}' \
        "$PORTOLAN" top --interval 1 --for "$TOP_FOR"
    ON_READY=""
    PERF_TOP_PID=$WIN_PID
    stop_pid "$PERF_PID" INT; PERF_PID=""
    stop_window perf q
    SECONDS_WIN=$SAVE_S
    if [ -n "$PERF_TOP_PID" ]; then
        PERF_LINES+="where they go, by the operation on the stack (recorded from ${WARM} s after the first screen: no start-up walk; one full walk every 30 s may fall in; the split by thread is in the table, from /proc):"$'\n'
        perf script -i "$TMP/perf.data" --pid "$PERF_TOP_PID" -F tid,comm,ip,sym >"$TMP/perf.script" 2>/dev/null || true
        PERF_LINES+=$(measure_py breakdown --script "$TMP/perf.script" || true)$'\n'
        PERF_LINES+="self time by thread and symbol (>= 1% of the view's samples):"$'\n'
        PERF_LINES+=$(perf report -i "$TMP/perf.data" --pid "$PERF_TOP_PID" --percentage relative --no-children --stdio -g none \
            --sort comm,dso,symbol --percent-limit 1 2>/dev/null | grep -E '^ +[0-9.]+%' |
            sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | cut -c1-180 | head -30 || true)$'\n'
    fi
fi

# ------------------------------------------------------------- teardown ----
stop_holder
tmux_ kill-server 2>/dev/null || true
LEFT_PROCS=$(pgrep -c '^holder-' || true)
SS_AFTER=$(ss -tanH exclude time-wait | wc -l)
TEARDOWN_LINE="teardown: ${LEFT_PROCS:-0} holder processes left, $SS_AFTER TCP sockets on the machine, TIME-WAIT aside ($BASE_SOCKETS before)"
note "$TEARDOWN_LINE"

# --------------------------------------------------------------- report ----
echo
echo "portolan top benchmark: $(uname -sr), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'), load average $LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end"
echo "command: bench/top.sh${ARGS[*]:+ ${ARGS[*]}}"
echo "binaries: ${PORTOLAN_VERSION:-portolan: none} ($PORTOLAN)${BANDWHICH_VERSION:+; $BANDWHICH_VERSION ($BANDWHICH)}; $(tmux -V); $(watch -v 2>&1 | head -1); $(ss -V 2>&1 | head -1)"
echo "load: $LOAD_LINE"
if [ "$BASE_SOCKETS" -gt $((SOCKETS / 100)) ]; then
    echo "WARNING: the machine already held $BASE_SOCKETS TCP sockets before the load: every figure is for those plus the load"
fi
echo "each tool alone, one after the other, idle (nothing typed), ${WARM} s after its first screen, ${SECONDS_WIN} s window; CPU = utime+stime (+ reaped children for watch) / wall"
[ -n "$IPERF_LINE" ] && echo "$IPERF_LINE"
for n in top conns traffic; do
    [ -s "$TMP/$n.exit" ] && [ "$(cat "$TMP/$n.exit")" != "TOOL-EXITED:0" ] && echo "WARNING: portolan top ($n) left with $(cat "$TMP/$n.exit") on q"
done
echo "$TEARDOWN_LINE"
echo
measure_py report --results "$RESULTS" --target-cpu "$TARGET_CPU" --target-ms "$TARGET_MS"
if [ -n "$PERF_LINES" ]; then
    echo
    echo "perf record -a -F 199 --call-graph dwarf, $PERF_SECONDS s of portolan top (listeners view, idle):"
    printf '%s' "$PERF_LINES"
fi
[ "${LEFT_PROCS:-0}" -eq 0 ] || note "WARNING: the load was not fully torn down"
exit 0
