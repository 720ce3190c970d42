#!/usr/bin/env bash
# Service-detection benchmark: `portolan scan --probe` beside `nmap -sV` (TCP) and
# `portolan probe HOST:PORT/udp` beside `nmap -sU -sV` (UDP) on the same zoo of real servers
# from Debian's packages (scripts/zoo.sh: each server on its own loopback address, on its
# default port and on an unusual one). Prints, per zoo port, what each tool identified
# (service / product / version) against what the installed package says, the totals per
# level and each tool's time (median of R runs). Needs root.
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
[ "$(id -u)" = 0 ] || { say "needs root (the zoo's servers switch users)"; exit 2; }
if ((install)); then
  # The zoo's packages (one dpkg query), and nmap.
  mapfile -t missing < <("$root/scripts/zoo.sh" missing nmap)
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    "$root/scripts/zoo.sh" install "${missing[@]}"
  fi
fi
say "building portolan (release)"
(cd "$root" && cargo build --release -q -p portolan)
portolan="$root/target/release/portolan"

work=$(mktemp -d)
# The zoo's servers that switch users (postgres, dovecot, exim) must reach into it.
chmod 755 "$work"
zoo="$work/zoo"
cleanup() {
  "$root/scripts/zoo.sh" down "$zoo" || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
"$root/scripts/zoo.sh" up "$zoo"

# The truth: the manifest's TCP entries.
awk -F'\t' '$4 == "tcp"' "$zoo/manifest.tsv" >"$work/truth.tsv"
[ -s "$work/truth.tsv" ] || { say "the zoo has no TCP entry"; exit 1; }
ports=$(cut -f3 "$work/truth.tsv" | sort -nu | paste -sd,)
mapfile -t addrs < <(cut -f2 "$work/truth.tsv" | sort -u -V)

# UDP: `portolan probe ADDR:PORT/udp ...` beside `nmap -sU -sV`, one nmap run per address
# (all at once) with that address's own ports (a closed UDP port costs nmap a second or more, rate-limited
# ICMP, so it is not asked about ports the address does not serve).
awk -F'\t' '$4 == "udp"' "$zoo/manifest.tsv" >"$work/truth-udp.tsv"
mapfile -t utargets < <(awk -F'\t' '{print $2 ":" $3 "/udp"}' "$work/truth-udp.tsv")
# "ADDR PORT,PORT..." per address, worked out once for every run.
mapfile -t uaddrs < <(awk -F'\t' '{p[$2] = ($2 in p) ? p[$2] "," $3 : $3} END {for (a in p) print a, p[a]}' \
  "$work/truth-udp.tsv" | sort -V)

# Which probe named each port, for the probe-order table: `portolan probe` on every TCP
# entry once (not timed).
mapfile -t ttargets < <(awk -F'\t' '{print $2 ":" $3}' "$work/truth.tsv")
rc=0
"$portolan" probe "${ttargets[@]}" --jsonl >"$work/order.jsonl" || rc=$?
((rc <= 1)) || { say "portolan probe failed (exit $rc)"; exit 1; }

say "zoo up: $(wc -l <"$work/truth.tsv") TCP ports on ${#addrs[@]} addresses, ${#utargets[@]} UDP ports; $runs runs each"
for i in $(seq "$runs"); do
  t0=$(date +%s.%N)
  # Exit 1 is "no open port" (a result to score); 2 and above is a failure of the tool.
  rc=0
  "$portolan" scan "${addrs[@]}" -p "$ports" --probe -n --jsonl --no-progress >"$work/portolan.$i.jsonl" || rc=$?
  ((rc <= 1)) || { say "portolan scan failed (exit $rc)"; exit 1; }
  echo "portolan $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
  t0=$(date +%s.%N)
  # nmap has no "nothing open" exit code: anything but 0 is a failure.
  rc=0
  nmap -sV -n -Pn -p "$ports" "${addrs[@]}" -oX "$work/nmap.$i.xml" >/dev/null 2>"$work/nmap.$i.err" || rc=$?
  ((rc == 0)) || { say "nmap failed (exit $rc):"; cat "$work/nmap.$i.err" >&2; exit 1; }
  echo "nmap $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
  if ((${#utargets[@]})); then
    t0=$(date +%s.%N)
    rc=0
    "$portolan" probe "${utargets[@]}" --jsonl >"$work/portolan-udp.$i.jsonl" || rc=$?
    ((rc <= 1)) || { say "portolan probe failed (exit $rc)"; exit 1; }
    echo "portolan-udp $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
    t0=$(date +%s.%N)
    # One nmap per address, all at once (in the favour of nmap's time: the slowest
    # address's run, not their sum).
    pids=()
    for au in "${uaddrs[@]}"; do
      read -r a up <<<"$au"
      nmap -sU -sV -n -Pn -p "$up" "$a" -oX "$work/nmap-udp.$i.$a.xml" >/dev/null 2>"$work/nmap-udp.$i.$a.err" &
      pids+=($!)
    done
    for pid in "${pids[@]}"; do
      wait "$pid" || { say "nmap -sU failed:"; cat "$work"/nmap-udp."$i".*.err >&2; exit 1; }
    done
    echo "nmap-udp $(echo "$(date +%s.%N) - $t0" | bc)" >>"$work/times"
  fi
done

python3 - "$work" "$runs" <<'EOF'
import glob, json, statistics, sys, xml.etree.ElementTree as ET
work, runs = sys.argv[1], int(sys.argv[2])

def load_truth(path):
    # (addr, port) -> (name, service, product, version); version "-" is never announced.
    truth = {}
    for line in open(path):
        # zoo.sh writes no line without a version.
        name, addr, port, _proto, svc, prod, ver, _tls = line.rstrip("\n").split("\t")
        truth[(addr, int(port))] = (name, svc, prod, ver)
    return truth

times = {}
for line in open(f"{work}/times"):
    tool, t = line.split()
    times.setdefault(tool, []).append(float(t))

def portolan(path):
    got = {}
    for line in open(path):
        v = json.loads(line)
        # A name only looked up in the port table, or from a weak match, is a guess, not a
        # detection: it does not count.
        svc = "" if v.get("service_source") in ("port-table", "weak") else v.get("service") or ""
        got[(v["host"], v["port"])] = (svc, v.get("product") or "", v.get("version") or "")
    return got

def nmap(paths):
    got = {}
    for path in paths:
        # nmap exited 0 (checked above): its XML is whole.
        for h in ET.parse(path).getroot().iter("host"):
            a = h.find("address").get("addr")
            for p in h.iter("port"):
                s = p.find("service")
                if s is None:
                    continue
                # method="table": nmap's guess from the port number, not a detection.
                name = "" if s.get("method") == "table" else s.get("name", "")
                got[(a, int(p.get("portid")))] = (name, s.get("product", ""), s.get("version", ""))
    return got

# Names the two tools give the same service (nmap's port-table names against the
# protocol's): either counts as right for either tool.
ALIASES = [{"rdp", "ms-wbt-server"}, {"smb", "microsoft-ds", "netbios-ssn"},
           {"svn", "svnserve"}, {"xmpp-client", "jabber"}, {"http", "http-proxy", "http-alt"}]

def same_service(a, b):
    return a == b or any(a in s and b in s for s in ALIASES)

def score(truth, got, key):
    _name, svc, prod, ver = truth[key]
    g = got.get(key, ("", "", ""))
    ok_s = bool(g[0]) and same_service(g[0], svc)
    # Product "-": nothing on the wire names the software; a product claimed is false,
    # unless it only restates the protocol ("VNC").
    restates = g[1].lower() in (svc.lower(), g[0].lower())
    ok_p = (not g[1] or restates) if prod == "-" else prod.lower() in g[1].lower()
    # A false name: a detection that contradicts the truth (another service, another
    # product, a version that is not the installed one, or one where none is announced).
    # Saying less (nothing, the service only) is a miss, not a false name.
    false_s = bool(g[0]) and not ok_s
    false_p = bool(g[1]) and not ok_p
    if ver == "-":
        # Never announced: not scored (None); a version claimed anyway is false.
        return g, (ok_s, ok_p, None, false_s or false_p or bool(g[2]))
    ok_v = g[2] == ver or (bool(g[2]) and g[2].startswith(ver))
    false = false_s or false_p or (bool(g[2]) and not ok_v)
    return g, (ok_s, ok_p, ok_v, false)

def section(title, truth, pg, ng, tkeys, nmap_label):
    n = len(truth)
    nv = sum(1 for t in truth.values() if t[3] != "-")
    print(f"\n{title}")
    print(f"\n  {'server':13} {'addr:port':17} {'truth':38} {'portolan':46} {nmap_label:46}")
    tot = {"portolan": [0, 0, 0, 0], "nmap": [0, 0, 0, 0]}
    missed = {"portolan": [], "nmap": []}
    for key in sorted(truth, key=lambda k: (tuple(int(x) for x in k[0].split(".")), k[1])):
        name, svc, prod, ver = truth[key]
        row = [f"  {name:13} {key[0] + ':' + str(key[1]):17} {(svc + ' / ' + prod + ' / ' + ver)[:38]:38}"]
        for tool, got in (("portolan", pg), ("nmap", ng)):
            g, (s, p, v, f) = score(truth, got, key)
            for k, x in enumerate((s, p, v, f)):
                tot[tool][k] += int(bool(x))
            lack = [w for w, x in (("service", s), ("product", p), ("version", v)) if x is False]
            if f:
                lack.append("FALSE")
            if lack:
                missed[tool].append(f"{name} {key[0]}:{key[1]} ({', '.join(lack)})")
            mark = ("S" if s else "-") + ("P" if p else "-") + ("." if v is None else "V" if v else "-") + (" FALSE" if f else "")
            row.append(f"{(' / '.join(g))[:38]:38} {mark:7}")
        print(" ".join(row))
    print()
    for tool, key in zip(("portolan", "nmap"), tkeys):
        s, p, v, f = tot[tool]
        t = statistics.median(times[key])
        print(f"  {tool:9} service {s}/{n}  product {p}/{n}  version {v}/{nv}  false {f}   {t:.2f} s")
    ratio = statistics.median(times[tkeys[1]]) / max(statistics.median(times[tkeys[0]]), 1e-9)
    print(f"\n  portolan took 1/{ratio:.1f} of nmap's time (target: at most 1/5)")
    for tool in ("portolan", "nmap"):
        print(f"\n  {tool} missed or got wrong ({len(missed[tool])}):")
        for m in missed[tool] or ["nothing"]:
            print(f"    {m}")

print(f"\nservice detection benchmark ({runs} runs, median time), zoo of real servers on loopback")
print("command: bench/probe.sh --runs", runs)
print("S/P/V = service/product/version right, . = version never announced (not scored)")
print("a name from the port table only (portolan service_source=port-table, nmap method=table) is no detection")
tcp = load_truth(f"{work}/truth.tsv")
section(f"TCP: {len(tcp)} ports, `portolan scan --probe` vs `nmap -sV`", tcp,
        portolan(f"{work}/portolan.1.jsonl"), nmap([f"{work}/nmap.1.xml"]),
        ("portolan", "nmap"), "nmap -sV")
# The probe order, measured: which probe named each zoo port, on the server's default
# port and on its unusual one (the lower of a server's ports is taken as its default).
lowest = {}
for (a, port), (name, *_rest) in tcp.items():
    lowest[name] = min(lowest.get(name, port), port)
tally = {}
for line in open(f"{work}/order.jsonl"):
    v = json.loads(line)
    key = (v["host"], v["port"])
    if key not in tcp or v.get("service_source") != "probe":
        continue
    t = tally.setdefault(v.get("probe") or "?", [0, 0, set()])
    t[0 if lowest[tcp[key][0]] == v["port"] else 1] += 1
    t[2].add(tcp[key][0])
print("\nprobe order, measured: the probe that named each TCP zoo port (`portolan probe`)")
print(f"  {'probe':24} {'default port':>12} {'unusual port':>12}  servers")
for probe, (d, u, names) in sorted(tally.items(), key=lambda kv: -(kv[1][0] + kv[1][1])):
    print(f"  {probe:24} {d:12} {u:12}  {', '.join(sorted(names))}")
udp = load_truth(f"{work}/truth-udp.tsv")
if udp:
    section(f"UDP: {len(udp)} ports, `portolan probe HOST:PORT/udp` vs `nmap -sU -sV`", udp,
            portolan(f"{work}/portolan-udp.1.jsonl"), nmap(glob.glob(f"{work}/nmap-udp.1.*.xml")),
            ("portolan-udp", "nmap-udp"), "nmap -sU -sV")
EOF
