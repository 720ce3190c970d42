#!/usr/bin/env bash
# Distributed-scan benchmark: a queued scan (`portolan scan --queue` + `portolan worker`)
# of a /20 x the top 100 ports by 1, 2 and 4 workers, beside a local `portolan scan` of the
# same, on a throwaway PostgreSQL, as root.
#
#   bench/queue.sh [--rate R] [--find-rate "R1 R2 ..."] [--workers "1 2 4"]
#                  [--chunk-size N] [--machines M] [--keep DIR]
#                  [--no-build] [--portolan PATH]
#
# 1. A network namespace of its own (portolan-bq-PID) where all of 198.18.32.0/20 is local
#    (`ip route add local ... dev lo`) and a process accepts on 22, 80, 443, 3306 and 8080
#    on 0.0.0.0: every address has those open, every other port answers with a reset.
# 2. A throwaway PostgreSQL 15 cluster (/usr/lib/postgresql/15/bin, run as `postgres`,
#    fsync off, no TCP: a Unix socket in the script's temporary directory, which processes
#    in the namespace reach by path), logging every statement's duration
#    (log_min_duration_statement=0, parameters not logged).
# 3. The local scan: `portolan scan 198.18.32.0/20 --top 100 -Pn -n --seed 7 --timeout 300
#    --max-retries 1 --max-rate R --jsonl`. Loopback drops bursts above ~1,000 packets per
#    CPU (netdev_max_backlog), and a lost SYN and its retry read as filtered, so the rate
#    matters: --find-rate tries each rate in turn (highest first) and keeps the first whose
#    local scan is exact; otherwise R (default 15000, what tests/queue_root.rs uses).
# 4. For each worker count W (default 1 2 4): a fresh database, the scan queued with
#    `--queue --chunk-size N` (default 8192: 409,400 positions -> 50 chunks; no --max-rate
#    on the scan), then W `portolan worker --max-rate R --exit-when-done --lease 10s` started
#    together in the namespace (PORTOLAN_QUEUE: the socket URL). Wall time from the first
#    worker's start to the last one's exit; positions/s; speedup and efficiency against one
#    worker. Every run's results (`scan --results ID --queue --jsonl`) are checked: 409,400
#    records, none twice, open exactly on the listeners' ports, closed elsewhere.
# 5. The database's cost: the statement log parsed per run (lease, complete, heartbeat,
#    renew transactions; server time), the workers' `chunk I/N: ... X s` lines, and
#    1 worker vs the local scan (the queue's overhead per chunk). From those, an estimate
#    for M machines (default 16), written out as arithmetic.
# Exit 0 (a run that is not exact prints NOT EXACT), 2 for a broken setup. Every process
# runs under `timeout`; everything started is stopped on exit, Ctrl-C included (trap): the
# namespace, postgres, the listeners, the temporary directory.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

RATE=15000
FIND_RATE=
WORKERS="1 2 4"
CHUNK=8192
MACHINES=16
KEEP=
BUILD=1
PORTOLAN="$ROOT/target/release/portolan"
PG_BIN=${PORTOLAN_PG_BIN:-/usr/lib/postgresql/15/bin}
NET=198.18.32.0/20
HOSTS=4094   # a /20 without its network and broadcast addresses
TOP=100
OPEN_PORTS=(22 80 443 3306 8080)

usage() { sed -n '2,34p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "queue-bench: $*" >&2; exit 2; }
note() { echo "queue-bench: $(date -u +%H:%M:%S) $*" >&2; }
ARGS=("$@")

while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=${2:?}; shift 2 ;;
        --find-rate) FIND_RATE=${2:?}; shift 2 ;;
        --workers) WORKERS=${2:?}; shift 2 ;;
        --chunk-size) CHUNK=${2:?}; shift 2 ;;
        --machines) MACHINES=${2:?}; shift 2 ;;
        --keep) KEEP=${2:?}; shift 2 ;;
        --portolan) PORTOLAN=${2:?}; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
isint() { [[ "$1" =~ ^[0-9]+$ ]]; }
isint "$RATE" && [ "$RATE" -ge 100 ] || die "--rate must be an integer >= 100"
for r in $FIND_RATE; do isint "$r" && [ "$r" -ge 100 ] || die "--find-rate: integers >= 100"; done
for w in $WORKERS; do isint "$w" && [ "$w" -ge 1 ] && [ "$w" -le 64 ] || die "--workers: integers 1..64"; done
isint "$CHUNK" && [ "$CHUNK" -ge 100 ] || die "--chunk-size must be an integer >= 100"
isint "$MACHINES" && [ "$MACHINES" -ge 1 ] || die "--machines must be a positive integer"

[ "$(id -u)" -eq 0 ] || die "run as root (a network namespace; postgres runs as the postgres user)"
for t in ip python3 timeout setpriv; do command -v "$t" >/dev/null || die "$t is required"; done
for t in initdb postgres pg_isready createdb; do [ -x "$PG_BIN/$t" ] || die "$PG_BIN/$t is missing (PostgreSQL 15 server; PORTOLAN_PG_BIN overrides)"; done
id postgres >/dev/null 2>&1 || die "no postgres user"

# ---------------------------------------------------------------- build ----
if [ "$BUILD" -eq 1 ]; then
    note "building portolan (cargo build --release -q -p portolan)"
    (cd "$ROOT" && cargo build --release -q -p portolan) || die "cargo build failed"
fi
[ -x "$PORTOLAN" ] || die "portolan binary not found at $PORTOLAN"
"$PORTOLAN" worker --help >/dev/null 2>&1 || die "$PORTOLAN has no worker command (build main first)"
measure() { python3 "$SCRIPT_DIR/queue_measure.py" "$@"; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- cleanup ----
TMP=$(mktemp -d "${TMPDIR:-/tmp}/portolan-queue-bench.XXXXXX")
chmod 755 "$TMP"
NS=portolan-bq-$$
NS_MADE=0 PG_PID="" LISTEN_PID=""
PIDS=()   # workers and scans in flight
stop_pid() { # PID [SIGNAL]: signal, wait at most 10 s, then KILL
    local p=$1 sig=${2:-TERM} i
    [ -n "$p" ] || return 0
    kill -"$sig" "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}
# shellcheck disable=SC2317  # invoked by trap
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    for p in "${PIDS[@]}"; do stop_pid "$p" TERM; done
    exec 3>&- || true   # the listeners stop when their stdin closes
    stop_pid "$LISTEN_PID" TERM
    stop_pid "$PG_PID" INT           # PostgreSQL's fast shutdown
    if [ "$NS_MADE" -eq 1 ]; then ip netns del "$NS" 2>/dev/null || true; fi
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp -r "$TMP"/. "$KEEP"/ 2>/dev/null || true; fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------- namespace ----
ip netns add "$NS" || die "ip netns add failed"
NS_MADE=1
ip -n "$NS" link set lo up
ip -n "$NS" route add local "$NET" dev lo
inns() { ip netns exec "$NS" "$@"; }
mkfifo "$TMP/listen.ctl"
# Not through inns: a function run with & is a subshell, and a signal to it would not
# reach what it runs. ip netns exec execs its command: $! is timeout's pid.
ip netns exec "$NS" timeout -k 5 1800 python3 "$SCRIPT_DIR/queue_measure.py" listen "${OPEN_PORTS[@]}" --seconds 1800 \
    <"$TMP/listen.ctl" >"$TMP/listen.out" 2>"$TMP/listen.err" &
LISTEN_PID=$!
exec 3>"$TMP/listen.ctl"
for _ in $(seq 100); do grep -q ready "$TMP/listen.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$TMP/listen.out" || die "listeners did not start: $(cat "$TMP/listen.err")"
note "namespace $NS: $NET local on lo, listening on ${OPEN_PORTS[*]}"

# ------------------------------------------------------------- postgres ----
PGDIR=$TMP/pg
mkdir "$PGDIR"; chown postgres:postgres "$PGDIR"
aspg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
(cd "$PGDIR" && aspg "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres -A trust -E UTF8 --no-locale --no-sync) \
    >"$TMP/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$TMP/initdb.log")"
PG_PORT=5432
PG_LOG=$TMP/pg.log
(cd "$PGDIR" && exec setpriv --reuid=postgres --regid=postgres --init-groups -- timeout -k 10 3600 \
    "$PG_BIN/postgres" -D "$PGDIR/data" -p "$PG_PORT" -c listen_addresses= \
    -c "unix_socket_directories=$PGDIR" -c fsync=off -c full_page_writes=off \
    -c synchronous_commit=off -c max_connections=60 -c shared_buffers=128MB \
    -c log_min_duration_statement=0 -c log_parameter_max_length=0 \
    -c "log_line_prefix=%m [%p] " -c log_checkpoints=off) </dev/null >"$PG_LOG" 2>&1 &
PG_PID=$!
for _ in $(seq 300); do
    "$PG_BIN/pg_isready" -q -h "$PGDIR" -p "$PG_PORT" && break
    kill -0 "$PG_PID" 2>/dev/null || break
    sleep 0.1
done
"$PG_BIN/pg_isready" -q -h "$PGDIR" -p "$PG_PORT" || die "postgres did not start: $(tail -5 "$PG_LOG")"
note "postgres $("$PG_BIN/postgres" --version | awk '{print $3}') on $PGDIR/.s.PGSQL.$PG_PORT (fsync off, every statement's duration logged)"

# ------------------------------------------------------------- the scans ----
SCAN=("$NET" --top "$TOP" -Pn -n --seed 7 --timeout 300 --max-retries 1)
POSITIONS=$((HOSTS * TOP))
OPEN_CSV=$(IFS=,; echo "${OPEN_PORTS[*]}")
RUNS=$TMP/runs.jsonl; : >"$RUNS"
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
BOUND=$(( POSITIONS / 1000 * 3 + 120 ))   # seconds: a scan at >= 1,000 probes/s, three times over

local_scan() { # RATE: a local scan; appends its run; exit 0 when exact
    local r=$1 t0 t1 rc=0
    note "local scan at --max-rate $r"
    t0=$(now)
    # In the background and waited for: a signal's trap then runs at once (cleanup stops it).
    ip netns exec "$NS" timeout -k 5 "$BOUND" "$PORTOLAN" scan "${SCAN[@]}" --max-rate "$r" --jsonl --no-progress \
        >"$TMP/local-$r.jsonl" 2>"$TMP/local-$r.err" &
    PIDS=($!)
    wait "${PIDS[0]}" || rc=$?
    PIDS=()
    t1=$(now)
    [ "$rc" -le 1 ] || die "local scan failed ($rc): $(tail -3 "$TMP/local-$r.err")"
    measure check "$TMP/local-$r.jsonl" --hosts "$HOSTS" --ports "$TOP" --open "$OPEN_CSV" >"$TMP/local-$r.check"
    LOCAL_LINE=$(python3 -c 'import json,sys; print(json.dumps({"kind":"local","rate":sys.argv[1],"workers":0,
        "wall_s":float(sys.argv[2]),"positions":int(sys.argv[3]),"check":json.load(open(sys.argv[4]))}))' \
        "$r" "$(secs "$t0" "$t1")" "$POSITIONS" "$TMP/local-$r.check")
    note "  $(secs "$t0" "$t1") s: $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print("exact" if c["exact"] else "NOT EXACT: "+c["why"])' "$TMP/local-$r.check")"
    rm -f "$TMP/local-$r.jsonl"
    grep -q '"exact": true' "$TMP/local-$r.check"
}

RATE_NOTE="--rate $RATE"
if [ -n "$FIND_RATE" ]; then
    found=
    for r in $(tr ' ' '\n' <<<"$FIND_RATE" | sort -rn); do
        if local_scan "$r"; then found=$r; break; fi
    done
    [ -n "$found" ] || die "no rate of ($FIND_RATE) gave an exact local scan"
    RATE=$found
    RATE_NOTE="the highest of ($FIND_RATE) whose local scan was exact: $RATE"
else
    local_scan "$RATE" || note "the local scan at $RATE is not exact: loopback dropped probes; try a lower --rate"
fi
echo "$LOCAL_LINE" >>"$RUNS"

run=0
for W in $WORKERS; do
    run=$((run + 1))
    DB=bq$run
    "$PG_BIN/createdb" -h "$PGDIR" -p "$PG_PORT" -U postgres "$DB" || die "createdb $DB failed"
    URL="postgres://postgres@localhost:$PG_PORT/$DB?host=$PGDIR"
    ID=$(PORTOLAN_QUEUE=$URL inns timeout -k 5 60 "$PORTOLAN" scan "${SCAN[@]}" --queue --chunk-size "$CHUNK" 2>"$TMP/queue-$W.err") ||
        die "scan --queue failed: $(tail -3 "$TMP/queue-$W.err")"
    isint "$ID" || die "scan --queue printed no id: $ID"
    off=$(stat -c %s "$PG_LOG")
    note "$W worker(s) at --max-rate $RATE each: scan $ID in database $DB"
    PIDS=()
    t0=$(now)
    for i in $(seq "$W"); do
        PORTOLAN_QUEUE=$URL ip netns exec "$NS" timeout -k 5 "$BOUND" "$PORTOLAN" worker --name "w$i" --max-rate "$RATE" \
            --lease 10s --exit-when-done --for "${BOUND}s" >/dev/null 2>"$TMP/worker-$W-$i.err" &
        PIDS+=($!)
    done
    fails=0
    for p in "${PIDS[@]}"; do wait "$p" || fails=$((fails + 1)); done
    t1=$(now)
    PIDS=()
    [ "$fails" -eq 0 ] || note "  $fails worker(s) exited non-zero: $(tail -q -n 2 "$TMP"/worker-"$W"-*.err | tail -4)"
    wall=$(secs "$t0" "$t1")
    sleep 0.5   # the log's last lines
    measure pglog "$PG_LOG" --offset "$off" >"$TMP/pg-$W.json"
    measure chunks "$TMP"/worker-"$W"-*.err >"$TMP/chunks-$W.json"
    rc=0
    PORTOLAN_QUEUE=$URL inns timeout -k 5 300 "$PORTOLAN" scan --results "$ID" --queue --jsonl \
        >"$TMP/results-$W.jsonl" 2>"$TMP/results-$W.err" || rc=$?
    [ "$rc" -le 1 ] || note "  scan --results failed ($rc): $(tail -3 "$TMP/results-$W.err")"
    measure check "$TMP/results-$W.jsonl" --hosts "$HOSTS" --ports "$TOP" --open "$OPEN_CSV" >"$TMP/check-$W.json"
    rm -f "$TMP/results-$W.jsonl"
    python3 -c 'import json,sys; a=sys.argv
print(json.dumps({"kind":"queued","rate":a[1],"workers":int(a[2]),"wall_s":float(a[3]),"positions":int(a[4]),
  "check":json.load(open(a[5])),"pg":json.load(open(a[6])),"chunks":json.load(open(a[7]))}))' \
        "$RATE" "$W" "$wall" "$POSITIONS" "$TMP/check-$W.json" "$TMP/pg-$W.json" "$TMP/chunks-$W.json" >>"$RUNS"
    note "  $wall s; $(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); k=json.load(open(sys.argv[2])); print("%d chunks %s; " % (k["chunks"], k["per_worker"]) + ("exact" if c["exact"] else "NOT EXACT: "+c["why"]))' "$TMP/check-$W.json" "$TMP/chunks-$W.json")"
done

# ------------------------------------------------------------- report ----
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(uname -sr), load average $LOAD_START at the start, $LOAD_END at the end"
echo "portolan: $PORTOLAN ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') in $ROOT; binary from $(date -u -r "$PORTOLAN" '+%Y-%m-%d %H:%M UTC'))"
echo "scan: portolan scan ${SCAN[*]}: $HOSTS hosts x $TOP ports = $POSITIONS positions; queued with --chunk-size $CHUNK -> $(( (POSITIONS + CHUNK - 1) / CHUNK )) chunks"
echo "rate: $RATE_NOTE probes/s; the local scan with --max-rate, each worker with --max-rate (the queued scan has none)"
echo "database: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on this machine, Unix socket, fsync off; workers with --lease 10s"
echo
measure report "$RUNS" --machines "$MACHINES" --chunk-size "$CHUNK" --cores "$(nproc)"
echo
echo "command: bench/queue.sh ${ARGS[*]}"
