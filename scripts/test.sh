#!/usr/bin/env bash
# Installs what the tests need (when run as root on Debian) and runs every test tier:
# format, lints, unit and integration tests (including the root-only ones), and a short
# run of every fuzz target. `.ci/run` calls exactly this.
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=0 scripts/test.sh   skip the fuzz runs (e.g. on a laptop without root)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

# --- prerequisites -------------------------------------------------------------------
# command -> Debian package
declare -A NEED=(
  [ss]=iproute2 [python3]=python3 [setpriv]=util-linux [lsof]=lsof [fuser]=psmisc [netstat]=net-tools
  [nft]=nftables [prlimit]=util-linux [openssl]=openssl [xmllint]=libxml2-utils [socat]=socat
  # portolan guard's compatibility tests and bench/guard.sh: fwknop's client and server, knockd
  [fwknop]=fwknop-client [fwknopd]=fwknop-server [knockd]=knockd [iptables]=iptables
  # portolan forward's tests (crates/portolan/tests/forward.rs): curl as the HTTP client;
  # their nginx and dnsmasq come with the zoo's packages below
  [curl]=curl
  # portolan sentry's tests (crates/portolan/tests/sentry_root.rs): the scanners it must
  # recognise; nmap comes with the zoo's packages below
  [masscan]=masscan [zmap]=zmap
  # portolan serve's dashboard in a real browser (crates/portolan/tests/serve_browser.rs):
  # headless chromium driven by its chromedriver, both Debian's
  [chromium]=chromium [chromedriver]=chromium-driver
  # portolan top's tests (crates/portolan/tests/top_tmux.rs): the view driven in tmux, and
  # an iperf3 flow of known rate to check its traffic figures against
  [tmux]=tmux [iperf3]=iperf3
)
missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# The service-detection zoo's packages (scripts/zoo.sh, crates/portolan/tests/probe_*.rs),
# portolan-probe's other real servers (slapd, samba, xrdp), and nmap (whose
# nmap-service-probes `--nmap-probes` reads, as a user's installed copy; it is never
# bundled): one dpkg query for all.
mapfile -t -O "${#missing[@]}" missing < <(scripts/zoo.sh missing slapd samba xrdp nmap)
if ((${#missing[@]})); then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing: ${missing[*]}"
    scripts/zoo.sh install "${missing[@]}"
  elif [ "${CI:-}" = true ]; then
    say "missing prerequisites in CI: ${missing[*]}"; exit 2
  else
    say "missing ${missing[*]}: the tests that need them will say so and skip (run as root to install)"
  fi
fi

# JSON Schema validation of every report's --json (crates/portolan/tests/json_schemas.rs)
# uses Python's jsonschema, in whichever python3 is first on PATH.
if ! python3 -c 'import jsonschema' >/dev/null 2>&1; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing python3-jsonschema"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-jsonschema >/dev/null || true
    python3 -c 'import jsonschema' >/dev/null 2>&1 || python3 -m pip install -q jsonschema || true
  fi
fi

# The reference parser of the Prometheus text format, for the /metrics scrape of
# `portolan watch` (crates/portolan/tests/watch.rs), from /usr/bin/python3.
if ! /usr/bin/python3 -c 'import prometheus_client.parser' >/dev/null 2>&1; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    say "installing python3-prometheus-client"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-prometheus-client >/dev/null || true
  fi
fi

# RustScan, one of the scanners `portolan sentry` must recognise: not a Debian package;
# built once from crates.io into a cache outside the checkout (a few minutes).
rustscan_root=/var/cache/portolan-test-tools
if [ -x "$rustscan_root/bin/rustscan" ]; then
  export PORTOLAN_RUSTSCAN="$rustscan_root/bin/rustscan"
elif command -v rustscan >/dev/null 2>&1; then
  export PORTOLAN_RUSTSCAN="$(command -v rustscan)"
elif is_root; then
  say "building rustscan from crates.io into $rustscan_root (once)"
  if cargo install rustscan --locked -q --root "$rustscan_root"; then
    export PORTOLAN_RUSTSCAN="$rustscan_root/bin/rustscan"
  elif [ "${CI:-}" = true ]; then
    say "rustscan could not be built"; exit 2
  fi
fi

# --- static checks ---------------------------------------------------------------------
say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy (pedantic, warnings are errors)"
cargo clippy --workspace --all-targets --locked -q -- -D warnings

# --- tests -----------------------------------------------------------------------------
say "cargo test (unit, integration; root-only tests run when root, and must run in CI)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked -q >"$log" 2>&1
rc=$?
set -e
# Show what matters: results and failures, not the empty doc-test runs.
grep -vE '^(running 0 tests|test result: ok\. 0 passed.*|)$' "$log" || true
if [ "$rc" != 0 ]; then
  say "cargo test failed (exit $rc)"; exit 1
fi
passed=$(grep -oE 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -oE 'test result: .*; [0-9]+ failed' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')

# --- fuzz smoke ------------------------------------------------------------------------
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
if [ "$FUZZ_SECONDS" != 0 ]; then
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --locked -q
  fi
  for t in $(cd fuzz && cargo fuzz list); do
    say "fuzz $t for ${FUZZ_SECONDS}s"
    # The machine's toolchain is stable; cargo-fuzz needs a few nightly flags.
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" --sanitizer none -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=1024 2>&1 | tail -n 3)
  done
fi

echo "${passed} passed, ${failed} failed"
