#!/usr/bin/env bash
# Soak benchmark for `portolan watch`: a thousand listeners churning for ten minutes.
#
#   bench/watch-soak.sh [--listeners N] [--minutes M] [--steady S] [--rate R]
#                       [--interval SPAN] [--no-build] [--portolan PATH]
#
# 1. Starts `portolan watch` (fresh SQLite store, --interval 2s, metrics on loopback).
# 2. Starts bench/churn.py: N listeners (default 1000) on 127.0.0.0/8, S seconds steady
#    (default 60), then for M minutes (default 10) closes and opens R per second
#    (default 2), each on an address and port never used before; then closes them all.
# 3. Prints: events recorded versus events caused (must be equal, one recorded event per
#    caused change, nothing else on those listeners), the daemon's memory (RSS) at start,
#    largest and at the end, its CPU use in the steady phase and while churning, its
#    sample durations, and beside them the anchor: what `ss -tulpn` (and `lsof`) run
#    every 2 s would cost in CPU, in the same run.
#
# Exit status: 0 when it ran and recorded == caused; 1 when they differ; 2 on setup
# errors. Only loopback; every process it starts is stopped on exit.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
LISTENERS=1000
MINUTES=10
STEADY=60
RATE=2
INTERVAL=2s
GRACE=10
BUILD=1
PORTOLAN="$ROOT/target/release/portolan"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "watch-soak: $*" >&2; exit 2; }
say() { echo "watch-soak: $*" >&2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --listeners) LISTENERS=${2:?}; shift 2 ;;
        --minutes) MINUTES=${2:?}; shift 2 ;;
        --steady) STEADY=${2:?}; shift 2 ;;
        --rate) RATE=${2:?}; shift 2 ;;
        --interval) INTERVAL=${2:?}; shift 2 ;;
        --portolan) PORTOLAN=${2:?}; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$LISTENERS" =~ ^[0-9]+$ && "$LISTENERS" -ge 10 && "$LISTENERS" -le 20000 ]] || die "--listeners: 10..20000"
[[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--minutes: a number"
[[ "$STEADY" =~ ^[0-9]+$ && "$STEADY" -ge 10 ]] || die "--steady: at least 10 seconds"
command -v ss >/dev/null || die "ss (iproute2) is required"

if [ "$BUILD" = 1 ]; then
    say "building portolan (release)"
    (cd "$ROOT" && cargo build --release -q -p portolan) || die "build failed"
fi
[ -x "$PORTOLAN" ] || die "no portolan binary at $PORTOLAN"

WORK=$(mktemp -d /tmp/portolan-soak.XXXXXX)
WATCH_PID="" CHURN_PID=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    [ -n "$CHURN_PID" ] && kill "$CHURN_PID" 2>/dev/null || true
    [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM HUP

CLK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
now_s() { date +%s.%N; }

# --- the daemon ----------------------------------------------------------------------
"$PORTOLAN" watch --db "$WORK/history.sqlite" --interval "$INTERVAL" --grace "${GRACE}s" \
    --metrics 127.0.0.1:0 --quiet 2>"$WORK/watch.err" &
WATCH_PID=$!
for _ in $(seq 100); do
    grep -q 'metrics at' "$WORK/watch.err" 2>/dev/null && break
    kill -0 "$WATCH_PID" 2>/dev/null || { cat "$WORK/watch.err" >&2; die "watch exited"; }
    sleep 0.1
done
METRICS=$(grep -o 'http://[^ ;]*/metrics' "$WORK/watch.err" | head -1)
[ -n "$METRICS" ] || die "watch did not say where its metrics are"
sleep 3  # the baseline sample is taken
RSS_START=$(rss_kb "$WATCH_PID")

# --- the churn -----------------------------------------------------------------------
SECONDS_CHURN=$(awk -v m="$MINUTES" 'BEGIN {printf "%d", m * 60}')
exec 3> >(exec "$PY" "$SCRIPT_DIR/churn.py" --listeners "$LISTENERS" --seconds "$SECONDS_CHURN" \
    --rate "$RATE" --steady "$STEADY" --hold $((GRACE + 10)) --log "$WORK/caused.log" \
    >"$WORK/churn.out" 2>"$WORK/churn.err")
sleep 0.5
CHURN_PID=$(pgrep -n -f "churn.py --listeners $LISTENERS" || true)
for _ in $(seq 600); do grep -q READY "$WORK/churn.out" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$WORK/churn.out" || { cat "$WORK/churn.err" >&2; die "churn did not start"; }
say "$(cat "$WORK/churn.out"), churn pid $CHURN_PID; steady for ${STEADY}s"
sleep 5  # the first thousand are seen
T0=$(now_s); C0=$(cpu_ticks "$WATCH_PID")
sleep $((STEADY - 10))
T1=$(now_s); C1=$(cpu_ticks "$WATCH_PID")
RSS_MAX=$(rss_kb "$WATCH_PID")

# --- the anchor, in the same run, on the same thousand listeners ------------------------
anchor_cpu() {  # CPU seconds per run of a command, over 50 runs (children's time, in ticks)
    local me=$BASHPID t0 t1
    t0=$(awk '{print $16+$17}' "/proc/$me/stat")
    for _ in $(seq 50); do "$@" >/dev/null 2>&1 || true; done
    t1=$(awk '{print $16+$17}' "/proc/$me/stat")
    awk -v a="$t0" -v b="$t1" -v k="$CLK" 'BEGIN {printf "%.4f", (b - a) / k / 50}'
}
SS_CPU=$(anchor_cpu ss -tulpn)
LSOF_CPU=""
command -v lsof >/dev/null && LSOF_CPU=$(anchor_cpu lsof -nP -iTCP -sTCP:LISTEN -iUDP)

say "churning for $MINUTES minute(s) at $RATE change(s)/s"
T2=$(now_s); C2=$(cpu_ticks "$WATCH_PID")
RSS_SERIES="$RSS_START"
n=0
while ! grep -q CHURNED "$WORK/churn.out" 2>/dev/null; do
    sleep 10
    kill -0 "$WATCH_PID" 2>/dev/null || die "watch died during the churn"
    r=$(rss_kb "$WATCH_PID"); [ "$r" -gt "$RSS_MAX" ] && RSS_MAX=$r
    n=$((n + 1)); [ $((n % 6)) = 0 ] && RSS_SERIES="$RSS_SERIES,$r"
done
T3=$(now_s); C3=$(cpu_ticks "$WATCH_PID")
for _ in $(seq 600); do grep -q DONE "$WORK/churn.out" 2>/dev/null && break; sleep 0.5; done
sleep $((GRACE + 6))
RSS_END=$(rss_kb "$WATCH_PID")
curl -s "$METRICS" >"$WORK/metrics.txt" 2>/dev/null || "$PY" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())" "$METRICS" >"$WORK/metrics.txt"
kill -TERM "$WATCH_PID"; wait "$WATCH_PID" || true; WATCH_PID=""
exec 3>&-; CHURN_PID=""

# --- recorded versus caused ----------------------------------------------------------
"$PORTOLAN" history --db "$WORK/history.sqlite" --jsonl --limit 100000000 >"$WORK/recorded.jsonl"
"$PY" - "$WORK/caused.log" "$WORK/recorded.jsonl" "$WORK/metrics.txt" "$CLK" \
    "$T0" "$C0" "$T1" "$C1" "$T2" "$C2" "$T3" "$C3" "$RSS_START" "$RSS_MAX" "$RSS_END" \
    "$SS_CPU" "${LSOF_CPU:-}" "$INTERVAL" "$LISTENERS" "$RSS_SERIES" <<'PY'
import collections, json, re, sys
(caused_log, recorded, metrics, clk, t0, c0, t1, c1, t2, c2, t3, c3,
 rss0, rssmax, rss1, ss_cpu, lsof_cpu, interval, n, series) = sys.argv[1:]
clk = float(clk)
caused = collections.Counter()
keys = set()
for line in open(caused_log):
    _, what, proto, addr, port = line.split()
    kind = {"open": "opened", "close": "closed"}[what]
    caused[(kind, proto, addr, int(port))] += 1
    keys.add((proto, addr, int(port)))
rec = collections.Counter()
other = collections.Counter()
for line in open(recorded):
    e = json.loads(line)
    l = e["listener"]
    k = (l["proto"], l["address"], l["port"])
    if k in keys:
        if e["kind"] in ("opened", "closed"):
            rec[(e["kind"],) + k] += 1
        else:
            other[e["kind"]] += 1
missing = caused - rec
extra = rec - caused
def cpu(ta, ca, tb, cb):
    return 100.0 * (float(cb) - float(ca)) / clk / (float(tb) - float(ta))
steady, churn = cpu(t0, c0, t1, c1), cpu(t2, c2, t3, c3)
secs = float(re.match(r"(\d+)", interval).group(1)) if interval.endswith("s") and not interval.endswith("ms") else 2.0
ss_pct = 100.0 * float(ss_cpu) / secs
print()
print("watch soak: %s listeners, interval %s" % (n, interval))
print("  events caused    %7d  (opened %d, closed %d)" % (sum(caused.values()),
      sum(v for k, v in caused.items() if k[0] == "opened"), sum(v for k, v in caused.items() if k[0] == "closed")))
print("  events recorded  %7d  (opened %d, closed %d; other kinds on these listeners: %d)" % (
      sum(rec.values()), sum(v for k, v in rec.items() if k[0] == "opened"),
      sum(v for k, v in rec.items() if k[0] == "closed"), sum(other.values())))
print("  missing %d, extra %d" % (sum(missing.values()), sum(extra.values())))
print("  memory (RSS)     start %.1f MB, largest %.1f MB, end %.1f MB" % (int(rss0) / 1024, int(rssmax) / 1024, int(rss1) / 1024))
print("  memory, each minute of churn: %s MB" % ", ".join("%.1f" % (int(v) / 1024) for v in series.split(",")))
print("  CPU, steady      %.2f %%  (target < 1 %%)" % steady)
print("  CPU, churning    %.2f %%" % churn)
m = open(metrics).read()
cnt = re.search(r"^portolan_sample_duration_seconds_count\S* (\S+)", m, re.M)
tot = re.search(r"^portolan_sample_duration_seconds_sum\S* (\S+)", m, re.M)
if cnt and tot and float(cnt.group(1)) > 0:
    print("  sample and record mean %.1f ms over %d samples (the store's fsync included)" % (1000 * float(tot.group(1)) / float(cnt.group(1)), float(cnt.group(1))))
print("  anchor: ss -tulpn every %s  %.2f %% CPU (%.1f ms CPU per run); portolan watch steady uses 1/%.0f of it" % (
      interval, ss_pct, 1000 * float(ss_cpu), ss_pct / steady if steady > 0 else float("inf")))
if lsof_cpu:
    lp = 100.0 * float(lsof_cpu) / secs
    print("  anchor: lsof -iTCP -sTCP:LISTEN -iUDP every %s  %.2f %% CPU; 1/%.0f" % (interval, lp, lp / steady if steady > 0 else float("inf")))
ok = not missing and not extra and not other
print("  recorded == caused: %s" % ("yes" if ok else "NO"))
for k in list(missing)[:5]:
    print("    missing:", k)
for k in list(extra)[:5]:
    print("    extra:", k)
sys.exit(0 if ok else 1)
PY
