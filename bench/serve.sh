#!/usr/bin/env bash
# Dashboard benchmark: `portolan serve` with 1,000 listeners and 100,000 TCP sockets on
# the machine (loopback only), against `ss -tlnp` and `portolan ls` in the same run.
#
#   bench/serve.sh [--listeners L] [--sockets N] [--runs R] [--warmup W] [--procs K]
#                  [--base-port P] [--gap S] [--perf] [--keep DIR]
#                  [--no-build] [--no-install] [--portolan PATH]
#
# 1. Opens L TCP listeners (default 1000; ports P..P+L-1, default from 24000, checked free
#    and moved up when not: half on 127.0.0.1, 3 in 10 on ::1, 1 in 5 on 0.0.0.0) and
#    ESTABLISHED loopback connections to them, N TCP sockets in all (default 100000), over
#    K processes (default 8, more if RLIMIT_NOFILE needs it), with bench/serve_load.py;
#    checks with ss that they exist.
# 2. Starts `portolan serve --listen 127.0.0.1:0 --for 10m`, reads the login URL from its
#    first stdout line and authenticates with `Authorization: Bearer TOKEN`.
# 3. Requests W warm-ups (default 2) then R timed (default 20), one curl each: GET /,
#    /?view=table, /api/ls, /api/map, /ports/P; server time from `Server-Timing: app;dur`,
#    whole time from curl's time_total: median and p95. Checks that the map and /api/ls
#    show the load's listeners. Sums the bytes of the /assets/* the map references.
#    Samples the server's CPU while idle and its RSS. --perf: `perf record -a -g` during
#    each path's requests: the server's samples by thread and its top symbols.
# 4. Stops the server, then times `ss -tlnp`, `portolan ls`, `portolan ls --json`, and
#    `portolan who P --json`, `portolan info P --json` (what /ports/P runs) the same way
#    (hyperfine -N, R runs after a warm-up; a date +%s%N loop without hyperfine).
# 5. Tears the load down, checks that no socket of it is left, prints the table.
# Targets (from the issue): GET / under 100 ms of server time; the map's embedded
# assets under 200 KB (200,000 bytes). A missed target prints MISSED, exit 0; exit 2 for a
# broken setup. Everything it starts is stopped on exit, Ctrl-C included (trap).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

LISTENERS=1000
SOCKETS=100000
RUNS=20
WARMUP=2
PROCS=8
BASE_PORT=24000
GAP=0
PERF=0
KEEP=
BUILD=1
INSTALL=1
PORTOLAN="$ROOT/target/release/portolan"
TARGET_MS=100
ASSET_LIMIT=200000

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "serve-bench: $*" >&2; exit 2; }
note() { echo "serve-bench: $*" >&2; }
ARGS=("$@")

while [ $# -gt 0 ]; do
    case "$1" in
        --listeners) LISTENERS=${2:?}; shift 2 ;;
        --sockets) SOCKETS=${2:?}; shift 2 ;;
        --runs) RUNS=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --procs) PROCS=${2:?}; shift 2 ;;
        --base-port) BASE_PORT=${2:?}; shift 2 ;;
        --gap) GAP=${2:?}; shift 2 ;;
        --perf) PERF=1; shift ;;
        --keep) KEEP=${2:?}; shift 2 ;;
        --portolan) PORTOLAN=${2:?}; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
isint() { [[ "$1" =~ ^[0-9]+$ ]]; }
isint "$LISTENERS" && [ "$LISTENERS" -ge 1 ] && [ "$LISTENERS" -le 20000 ] || die "--listeners must be 1..20000"
isint "$SOCKETS" && [ "$SOCKETS" -ge "$LISTENERS" ] || die "--sockets must be an integer >= --listeners"
isint "$RUNS" && [ "$RUNS" -ge 1 ] || die "--runs must be a positive integer"
isint "$WARMUP" || die "--warmup must be an integer"
isint "$PROCS" && [ "$PROCS" -ge 1 ] || die "--procs must be a positive integer"
isint "$BASE_PORT" && [ "$BASE_PORT" -ge 1024 ] || die "--base-port must be >= 1024"
[[ "$GAP" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--gap must be a number of seconds"

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# ---------------------------------------------------------------- tools ----
command -v python3 >/dev/null || die "python3 is required"
declare -A PKG_OF=([ss]=iproute2 [curl]=curl [hyperfine]=hyperfine [perf]=linux-perf)
want_tools=(ss curl hyperfine)
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
command -v curl >/dev/null || die "curl is required"
HAVE_HYPERFINE=0; command -v hyperfine >/dev/null && HAVE_HYPERFINE=1
if [ "$PERF" -eq 1 ] && ! command -v perf >/dev/null; then note "perf not found: --perf ignored"; PERF=0; fi

# ------------------------------------------------------------- fd limits ----
# serve_load.py spreads its fds over more processes when the hard limit cannot be raised.
SYSCTL_RESTORE=()
if [ "$IS_ROOT" -eq 1 ]; then
    need_sys=$((SOCKETS * 2 + 65536))
    fm=$(cat /proc/sys/fs/file-max 2>/dev/null || echo 0)
    if [ "$fm" -lt "$need_sys" ] && echo "$need_sys" >/proc/sys/fs/file-max 2>/dev/null; then
        SYSCTL_RESTORE+=("fs/file-max=$fm"); note "fs.file-max raised from $fm to $need_sys (restored on exit)"
    fi
    per=$(( (SOCKETS + PROCS - 1) / PROCS + 1024 ))
    nro=$(cat /proc/sys/fs/nr_open 2>/dev/null || echo 1048576)
    if [ "$nro" -lt "$per" ] && echo "$per" >/proc/sys/fs/nr_open 2>/dev/null; then
        SYSCTL_RESTORE+=("fs/nr_open=$nro"); note "fs.nr_open raised from $nro to $per (restored on exit)"
    fi
    if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$per" ]; then
        ulimit -Hn "$per" 2>/dev/null || note "cannot raise the hard nofile limit above $(ulimit -Hn) (no CAP_SYS_RESOURCE?): more load processes"
    fi
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---------------------------------------------------------------- build ----
if [ "$BUILD" -eq 1 ]; then
    if command -v cargo >/dev/null && [ -f "$ROOT/Cargo.toml" ]; then
        note "building portolan (cargo build --release -q -p portolan)"
        (cd "$ROOT" && cargo build --release -q -p portolan) || note "cargo build FAILED; timing the anchors only (unless a stale binary exists)"
    else
        note "no cargo or no $ROOT/Cargo.toml: not building portolan"
    fi
fi
PORTOLAN_OK=0
[ -x "$PORTOLAN" ] && PORTOLAN_OK=1 || note "portolan binary not found at $PORTOLAN: timing ss only"
SERVE_OK=0
if [ "$PORTOLAN_OK" -eq 1 ]; then
    if "$PORTOLAN" serve --help >/dev/null 2>&1; then SERVE_OK=1; else note "portolan serve: not built yet (its --help fails); timing the anchors only"; fi
fi

# ------------------------------------------------------------ free ports ----
read -r EPH_LO EPH_HI </proc/sys/net/ipv4/ip_local_port_range || { EPH_LO=32768; EPH_HI=60999; }
ports_busy() { # FIRST LAST: how many sockets (TCP or UDP, any state) use a local port in the range
    ss -tuanH "( sport >= :$1 and sport <= :$2 )" 2>/dev/null | wc -l
}
tries=0
while :; do
    last=$((BASE_PORT + LISTENERS - 1))
    [ "$last" -le 65535 ] || die "no free window of $LISTENERS ports found"
    if [ "$(ports_busy "$BASE_PORT" "$last")" -eq 0 ] && { [ "$last" -lt "$EPH_LO" ] || [ "$BASE_PORT" -gt "$EPH_HI" ]; }; then
        break
    fi
    tries=$((tries + 1))
    [ "$tries" -le 40 ] || die "no free window of $LISTENERS ports found from $BASE_PORT"
    if [ "$last" -ge "$EPH_LO" ] && [ "$BASE_PORT" -le "$EPH_HI" ]; then
        BASE_PORT=$((EPH_HI + 1))   # skip the ephemeral range
    else
        BASE_PORT=$((BASE_PORT + LISTENERS))
    fi
done
LAST_PORT=$((BASE_PORT + LISTENERS - 1))

# ---------------------------------------------------------- cleanup ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portolan-serve-bench.XXXXXX")
LOAD_PID="" SERVE_PID="" PERF_PID=""
stop_pid() { # PID [SIGNAL]: signal, wait at most 10 s, then KILL
    local p=$1 sig=${2:-TERM} i
    [ -n "$p" ] || return 0
    kill -"$sig" "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
stop_load() {
    exec 3>&- || true   # serve_load.py exits when its stdin closes
    if [ -n "$LOAD_PID" ]; then
        local i
        for i in $(seq 150); do kill -0 "$LOAD_PID" 2>/dev/null || break; sleep 0.1; done
        stop_pid "$LOAD_PID" TERM
        LOAD_PID=""
    fi
}
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    local rc=$? kv
    trap - EXIT INT TERM HUP
    stop_pid "$PERF_PID" INT
    stop_pid "$SERVE_PID" TERM
    stop_load
    for kv in "${SYSCTL_RESTORE[@]}"; do echo "${kv#*=}" >"/proc/sys/${kv%%=*}" 2>/dev/null || true; done
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------ load ----
BASE_SOCKETS=$(ss -tanH exclude time-wait | wc -l)
LOAD_MAX=$((900 + RUNS * 60))   # serve_load.py stops by itself even if this script is killed -9
mkfifo "$TMP/ctl"
note "opening $LISTENERS listeners (ports $BASE_PORT-$LAST_PORT) and $SOCKETS TCP sockets on loopback (bench/serve_load.py)"
t0=$(date +%s%N)
python3 "$SCRIPT_DIR/serve_load.py" --listeners "$LISTENERS" --sockets "$SOCKETS" --base-port "$BASE_PORT" \
    --procs "$PROCS" --max-seconds "$LOAD_MAX" <"$TMP/ctl" >"$TMP/load.out" 2>"$TMP/load.err" &
LOAD_PID=$!
exec 3>"$TMP/ctl"
ready=
for _ in $(seq 1500); do
    if read -r tag L_N L_TOTAL _ _ L_PROCS <"$TMP/load.out" 2>/dev/null && [ "$tag" = READY ]; then ready=1; break; fi
    kill -0 "$LOAD_PID" 2>/dev/null || break
    sleep 0.2
done
t1=$(date +%s%N)
cat "$TMP/load.err" >&2
[ -n "$ready" ] || die "serve_load.py did not get ready (see its messages above)"
SETUP_S=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
SS_ALL=$(ss -tanH | wc -l)
SS_EST=$(ss -tnH state established | wc -l)
SS_LISTEN_LOAD=$(ss -tlnH "( sport >= :$BASE_PORT and sport <= :$LAST_PORT )" | wc -l)
LISTEN_BY_ADDR=$(ss -tlnH "( sport >= :$BASE_PORT and sport <= :$LAST_PORT )" |
    awk '{ a = $4; sub(/:[0-9]+$/, "", a); c[a]++ } END { for (k in c) printf "%s %d, ", k, c[k] }' | sed 's/, $//')
[ "$SS_LISTEN_LOAD" -eq "$LISTENERS" ] || die "ss sees $SS_LISTEN_LOAD listeners on ports $BASE_PORT-$LAST_PORT, not $LISTENERS"
[ "$SS_ALL" -ge $((SOCKETS * 99 / 100)) ] || die "only $SS_ALL TCP sockets seen by ss (wanted >= 99% of $SOCKETS)"
LOAD_LINE="$SS_LISTEN_LOAD listeners on $BASE_PORT-$LAST_PORT ($LISTEN_BY_ADDR), $SS_ALL TCP sockets in all ($SS_EST established; $BASE_SOCKETS before, TIME-WAIT aside), in $L_PROCS processes srvload-*, setup ${SETUP_S} s"
note "load: $LOAD_LINE"

RESULTS="$TMP/results.jsonl" ANCHORS="$TMP/anchors.jsonl" EXTRA="$TMP/extra.json"
: >"$RESULTS"; : >"$ANCHORS"
CHECK_LINE="" SERVE_LINE="" PERF_LINES=""
measure_py() { python3 "$SCRIPT_DIR/serve_measure.py" "$@"; }

# ----------------------------------------------------------------- serve ----
if [ "$SERVE_OK" -eq 1 ]; then
    note "starting portolan serve --listen 127.0.0.1:0 --for 10m"
    "$PORTOLAN" serve --listen 127.0.0.1:0 --for 10m >"$TMP/serve.out" 2>"$TMP/serve.err" &
    SERVE_PID=$!
    URL=""
    for _ in $(seq 300); do
        URL=$(head -1 "$TMP/serve.out" 2>/dev/null || true)
        [[ "$URL" == http*token=* ]] && break
        kill -0 "$SERVE_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [[ "$URL" != http*token=* ]]; then
        note "portolan serve printed no login URL: $(tail -5 "$TMP/serve.err" 2>/dev/null)"
        SERVE_OK=0
    fi
fi
if [ "$SERVE_OK" -eq 1 ]; then
    BASE=$(sed -E 's#^(https?://[^/]+).*#\1#' <<<"$URL")
    TOKEN=$(sed -E 's#.*[?&]token=([^&]+).*#\1#' <<<"$URL")
    if ! measure_py wait --base "$BASE" --token "$TOKEN" --seconds 60 >"$TMP/cold.json"; then
        note "portolan serve does not answer GET / with 200: $(cat "$TMP/cold.json"); $(tail -5 "$TMP/serve.err")"
        SERVE_OK=0
    fi
fi
if [ "$SERVE_OK" -eq 1 ]; then
    note "serving at $BASE (pid $SERVE_PID); checking what it shows"
    measure_py check --base "$BASE" --token "$TOKEN" --first-port "$BASE_PORT" --last-port "$LAST_PORT" >"$TMP/check.json"
    CHECK_LINE=$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1])); n = int(sys.argv[2])
def ok(v): return "" if v == n else " (NOT %d)" % n
print("the map: %s listener elements, %s of the load ports%s; the table: %s rows; /api/ls: %s sockets, %s of the load ports%s, %s with a pid" % (
    c.get("map_listener_elems"), c.get("map_load_ports"), ok(c.get("map_load_ports")), c.get("table_rows"),
    c.get("api_ls_sockets"), c.get("api_ls_load_ports"), ok(c.get("api_ls_load_ports")), c.get("api_ls_with_pid")))' \
        "$TMP/check.json" "$LISTENERS")
    note "$CHECK_LINE"
    PORT_PAGE=$BASE_PORT   # 127.0.0.1, held by srvload-0 (thousands of fds)
    paths=("/" "/?view=table" "/api/ls" "/api/map" "/ports/$PORT_PAGE")
    for p in "${paths[@]}"; do
        note "timing GET $p ($WARMUP warm-ups, $RUNS runs)"
        if [ "$PERF" -eq 1 ]; then
            # System-wide (-a): here, attaching to one pid (-p) recorded no samples at all;
            # the report keeps the server's samples (--pid).
            perf record -F 999 -g -a -o "$TMP/perf.data" >/dev/null 2>"$TMP/perf.err" &
            PERF_PID=$!
            sleep 0.5
        fi
        measure_py fetch --base "$BASE" --token "$TOKEN" --path "$p" --runs "$RUNS" --warmup "$WARMUP" --gap "$GAP" >>"$RESULTS"
        if [ -n "$PERF_PID" ]; then
            stop_pid "$PERF_PID" INT; PERF_PID=""
            threads=$(perf report -i "$TMP/perf.data" --pid "$SERVE_PID" --stdio -g none --sort comm -F sample,comm 2>/dev/null |
                awk '!/^#/ && NF == 2 { printf "%s%s %s", sep, $2, $1; sep = ", " }' || true)
            PERF_LINES+="GET $p: the server's samples at 999 Hz (~1 ms each) by thread: ${threads:-none}; self time by symbol (>= 2%):"$'\n'
            PERF_LINES+=$(perf report -i "$TMP/perf.data" --pid "$SERVE_PID" --percentage relative --no-children --stdio -g none \
                --sort dso,symbol --percent-limit 2 2>/dev/null | grep -E '^ +[0-9.]+%' |
                sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//' | head -12 || true)$'\n'
            mv "$TMP/perf.data" "$TMP/perf.$(tr -c 'a-zA-Z0-9\n' _ <<<"$p").data"
        fi
    done
    measure_py assets --base "$BASE" --token "$TOKEN" --path / --path "/?view=table" --path "/ports/$PORT_PAGE" >"$TMP/assets.json"
    # The server's own cost while nobody asks: CPU over 5 s idle (its sampler), RSS.
    hz=$(getconf CLK_TCK)
    c0=$(awk '{print $14 + $15}' "/proc/$SERVE_PID/stat"); s0=$(date +%s%N)
    sleep 5
    c1=$(awk '{print $14 + $15}' "/proc/$SERVE_PID/stat"); s1=$(date +%s%N)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVE_PID/status"); hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVE_PID/status")
    SERVE_LINE=$(awk -v c0="$c0" -v c1="$c1" -v s0="$s0" -v s1="$s1" -v hz="$hz" -v r="$rss" -v h="$hwm" \
        'BEGIN { printf "server idle (5 s, nobody asking): %.3f of a core; RSS %.0f MB (peak %.0f MB)", (c1 - c0) / hz / ((s1 - s0) / 1e9), r / 1024, h / 1024 }')
    note "$SERVE_LINE"
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    rc=0
    for _ in $(seq 100); do kill -0 "$SERVE_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SERVE_PID" 2>/dev/null; then
        SERVE_LINE+="; did NOT stop within 10 s of SIGTERM"; stop_pid "$SERVE_PID" KILL
    else
        wait "$SERVE_PID" 2>/dev/null || rc=$?
        SERVE_LINE+="; SIGTERM: exit $rc"
    fi
    SERVE_PID=""
fi
python3 - "$EXTRA" "$TMP/cold.json" "$TMP/assets.json" <<'EOF'
import json, os, sys
out = {}
for key, path in (("cold", sys.argv[2]), ("assets", sys.argv[3])):
    if os.path.exists(path) and os.path.getsize(path):
        out[key] = json.load(open(path))
json.dump(out, open(sys.argv[1], "w"))
EOF

# --------------------------------------------------------------- anchors ----
anchor() { # LABEL CMD...: R runs after a warm-up, stdout and stderr to /dev/null
    local label=$1; shift
    note "timing: $label ($RUNS runs)"
    if [ "$HAVE_HYPERFINE" -eq 1 ]; then
        hyperfine -N -i --warmup 1 --runs "$RUNS" --style none --output null \
            --export-json "$TMP/hf.json" -- "$(printf '%q ' "$@")" >/dev/null 2>&1 || die "hyperfine failed on: $*"
        python3 - "$TMP/hf.json" "$label" >>"$ANCHORS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = sorted(r["times"])
print(json.dumps({"label": sys.argv[2], "median": r["median"], "min": r["min"], "max": r["max"],
                  "p95": t[max(1, -(-len(t) * 95 // 100)) - 1]}))
EOF
    else
        local i a b times=()
        "$@" >/dev/null 2>&1 || true
        for i in $(seq "$RUNS"); do
            a=$(date +%s%N); "$@" >/dev/null 2>&1 || true; b=$(date +%s%N)
            times+=($((b - a)))
        done
        printf '%s\n' "${times[@]}" | python3 -c '
import json, sys
t = sorted(int(x) / 1e9 for x in sys.stdin.read().split()); n = len(t)
m = t[n // 2] if n % 2 else (t[n // 2 - 1] + t[n // 2]) / 2
print(json.dumps({"label": sys.argv[1], "median": m, "min": t[0], "max": t[-1], "p95": t[max(1, -(-n * 95 // 100)) - 1]}))' "$label" >>"$ANCHORS"
    fi
}
anchor "ss -tlnp" ss -tlnp
if [ "$PORTOLAN_OK" -eq 1 ]; then
    anchor "portolan ls" "$PORTOLAN" ls
    anchor "portolan ls --json" "$PORTOLAN" ls --json
    # What /ports/P runs (beside history), for that page's figures.
    anchor "portolan who $BASE_PORT --json" "$PORTOLAN" who "$BASE_PORT" --json
    anchor "portolan info $BASE_PORT --json" "$PORTOLAN" info "$BASE_PORT" --json
fi

# -------------------------------------------------------------- teardown ----
stop_load
LEFT=$(ports_busy "$BASE_PORT" "$LAST_PORT")
LEFT_PROCS=$(pgrep -c '^srvload-' || true)
SS_AFTER=$(ss -tanH exclude time-wait | wc -l)
TEARDOWN_LINE="teardown: $LEFT sockets left on ports $BASE_PORT-$LAST_PORT, ${LEFT_PROCS:-0} srvload processes left, $SS_AFTER TCP sockets on the machine, TIME-WAIT aside ($BASE_SOCKETS before)"
note "$TEARDOWN_LINE"

# ---------------------------------------------------------------- report ----
echo
echo "portolan serve benchmark: $(uname -sr), $(nproc) cores, $(date -u +%Y-%m-%d), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "command: bench/serve.sh${ARGS[*]:+ ${ARGS[*]}}   (GET: median and p95 of $RUNS after $WARMUP warm-ups, one curl each; commands: $([ "$HAVE_HYPERFINE" -eq 1 ] && echo "hyperfine -N" || echo "a bash loop"), $RUNS runs after 1 warm-up)"
echo "load: $LOAD_LINE"
if [ "$BASE_SOCKETS" -gt $((SOCKETS / 100)) ]; then
    echo "WARNING: the machine already held $BASE_SOCKETS TCP sockets before the load (someone else's): every figure is for those plus the load"
fi
if [ "$SERVE_OK" -eq 1 ]; then
    echo "$CHECK_LINE"
    echo "$SERVE_LINE"
else
    echo "portolan serve: NOT MEASURED ($( [ "$PORTOLAN_OK" -eq 1 ] && echo "not built yet, or it failed: see the messages above" || echo "no portolan binary"))"
fi
echo "$TEARDOWN_LINE"
echo
measure_py report --results "$RESULTS" --anchors "$ANCHORS" --extra "$EXTRA" --target-ms "$TARGET_MS" --asset-limit "$ASSET_LIMIT"
if [ -n "$PERF_LINES" ]; then
    echo
    echo "perf record -a -g during each path's requests (warm-ups included), the server's samples:"
    printf '%s' "$PERF_LINES"
fi
[ "$LEFT" -eq 0 ] && [ "${LEFT_PROCS:-0}" -eq 0 ] || note "WARNING: the load was not fully torn down"
exit 0
