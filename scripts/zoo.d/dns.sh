# The zoo's DNS servers (sourced by scripts/zoo.sh): authoritative servers and resolvers,
# each on 127.0.22.N (BIND alone on 127.0.0.1, see up_bind9), on port 53 and on an
# unusual port, over TCP and UDP. Signatures: crates/portolan-probe/data/signatures/dns.toml.
#
# What a server tells is its answer to a CHAOS TXT query for version.bind, with the
# product's default setting for it (what a user's install does): most tell their name and
# version; Knot Resolver refuses the query, gdnsd names itself and its major version only.
#
# Resolvers are recursive, and no query may leave the machine: each is given a root or a
# forwarder on a loopback address where nothing listens (127.0.22.254), and the
# authoritative servers are given no zones, no upstreams and no security polling.

ALL+=(bind9 knot pdns unbound nsd pdns-recursor knot-resolver gdnsd yadifa)
PACKAGES+=(bind9 knot pdns-server pdns-backend-bind unbound nsd pdns-recursor knot-resolver
  gdnsd yadifa)

# dns_entries NAME ADDR PRODUCT VERSION PORT...: a domain entry per port, over TCP and UDP.
dns_entries() {
  local name=$1 a=$2 product=$3 v=$4 p
  shift 4
  for p in "$@"; do
    entry "$name" "$a" "$p" tcp domain "$product" "$v" -
    entry "$name" "$a" "$p" udp domain "$product" "$v" -
  done
}

up_bind9() {
  # named listens on the addresses of the interfaces only (on lo: 127.0.0.1), not on any
  # 127.0.0.N, so it is on 127.0.0.1 (as ntpsec is). Its answer: "9.18.49-1~deb12u3-Debian".
  local a=127.0.0.1 d="$DIR/bind9"
  dns_entries bind9 $a "ISC BIND" "$(upstream bind9)" 53 20053
  mkdir -p "$d"
  chown bind: "$d"
  # Not a resolver here (recursion no; no trust anchor to fetch): version.bind is answered
  # from BIND's built-in CHAOS view either way. No rndc channel (controls { }).
  cat >"$d/named.conf" <<EOF
options {
  directory "$d";
  pid-file "$d/named.pid";
  listen-on port 53 { $a; };
  listen-on port 20053 { $a; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
};
controls { };
EOF
  start bind9 /usr/sbin/named -g -u bind -c "$d/named.conf"
}

up_knot() {
  # Knot DNS answers "Knot DNS 3.2.6" (its `version` setting is unset by default: the
  # automatic version).
  local a=127.0.22.2 d="$DIR/knot"
  dns_entries knot $a "Knot DNS" "$(upstream knot)" 53 21053
  mkdir -p "$d"
  chown knot: "$d"
  cat >"$d/knot.conf" <<EOF
server:
    rundir: "$d"
    user: knot:knot
    listen: [ $a@53, $a@21053 ]
log:
  - target: stderr
    any: info
database:
    storage: "$d"
template:
  - id: default
    storage: "$d"
EOF
  start knot /usr/sbin/knotd -c "$d/knot.conf"
}

up_pdns() {
  # PowerDNS Authoritative Server with the bind backend and no zones; its version-string
  # is `full` by default: "PowerDNS Authoritative Server 4.7.3".
  local a=127.0.22.3 d="$DIR/pdns"
  dns_entries pdns $a "PowerDNS Authoritative Server" "$(upstream pdns-server)" 53 22053
  mkdir -p "$d"
  : >"$d/named.conf"
  cat >"$d/pdns.conf" <<EOF
launch=bind
bind-config=$d/named.conf
local-address=$a:53, $a:22053
socket-dir=$d
daemon=no
guardian=no
disable-syslog=yes
security-poll-suffix=
EOF
  start pdns /usr/sbin/pdns_server --config-dir="$d"
}

up_unbound() {
  # Unbound answers "unbound 1.17.1" (hide-version: no by default). Its only upstream is a
  # loopback address, which it does not query (do-not-query-localhost): it resolves nothing.
  local a=127.0.22.4 d="$DIR/unbound"
  dns_entries unbound $a Unbound "$(upstream unbound)" 53 23053
  mkdir -p "$d"
  cat >"$d/unbound.conf" <<EOF
server:
  interface: $a@53
  interface: $a@23053
  do-ip6: no
  do-daemonize: no
  use-syslog: no
  logfile: ""
  chroot: ""
  username: ""
  directory: "$d"
  pidfile: "$d/unbound.pid"
  access-control: 127.0.0.0/8 allow
forward-zone:
  name: "."
  forward-addr: 127.0.22.254
EOF
  start unbound /usr/sbin/unbound -d -c "$d/unbound.conf"
}

up_nsd() {
  # NSD answers "NSD 4.6.1" (hide-version: no by default).
  local a=127.0.22.5 d="$DIR/nsd"
  dns_entries nsd $a NSD "$(upstream nsd)" 53 24053
  mkdir -p "$d"
  chown nsd: "$d"
  cat >"$d/nsd.conf" <<EOF
server:
  ip-address: $a@53
  ip-address: $a@24053
  do-ip6: no
  username: nsd
  chroot: ""
  zonesdir: "$d"
  database: ""
  zonelistfile: "$d/zone.list"
  pidfile: "$d/nsd.pid"
  xfrdfile: "$d/xfrd.state"
  xfrdir: "$d"
  logfile: "$d/nsd.log"
remote-control:
  control-enable: no
EOF
  start nsd /usr/sbin/nsd -d -c "$d/nsd.conf"
}

up_pdns-recursor() {
  # The PowerDNS Recursor answers "PowerDNS Recursor 4.8.8" (its default version-string).
  # Its root hints name a loopback root, which it does not query (dont-query): it
  # resolves nothing.
  local a=127.0.22.6 d="$DIR/pdns-recursor"
  dns_entries pdns-recursor $a "PowerDNS Recursor" "$(upstream pdns-recursor)" 53 25053
  mkdir -p "$d"
  printf '.\t3600000\tNS\tzoo-root.\nzoo-root.\t3600000\tA\t127.0.22.254\n' >"$d/root.hints"
  cat >"$d/recursor.conf" <<EOF
local-address=$a:53, $a:25053
allow-from=127.0.0.0/8
hint-file=$d/root.hints
socket-dir=$d
daemon=no
disable-syslog=yes
security-poll-suffix=
EOF
  start pdns-recursor /usr/sbin/pdns_recursor --config-dir="$d"
}

up_knot-resolver() {
  # Knot Resolver (kresd) answers a version.bind query REFUSED, with no version and no
  # name of its own: the truth is `domain` with product and version `-` (nothing on the
  # wire names it; a tool that named a product there would be guessing). Everything is
  # forwarded to a loopback address where nothing listens.
  local a=127.0.22.7 d="$DIR/knot-resolver"
  dns_entries knot-resolver $a - - 53 26053
  mkdir -p "$d"
  cat >"$d/kresd.conf" <<EOF
net.listen('$a', 53, { kind = 'dns' })
net.listen('$a', 26053, { kind = 'dns' })
modules = { 'hints > iterate', 'stats', 'predict' }
cache.size = 10 * MB
policy.add(policy.all(policy.FORWARD('127.0.22.254')))
EOF
  start knot-resolver /usr/sbin/kresd -n -c "$d/kresd.conf" "$d"
}

up_gdnsd() {
  # gdnsd answers "gdnsd/3": its name and major version only, so the truth version is `-`.
  local a=127.0.22.8 d="$DIR/gdnsd"
  dns_entries gdnsd $a gdnsd - 53 27053
  mkdir -p "$d/zones" "$d/run" "$d/state"
  cat >"$d/config" <<EOF
options => {
  listen => [ $a:53, $a:27053 ]
  run_dir => $d/run
  state_dir => $d/state
}
EOF
  start gdnsd /usr/sbin/gdnsd -c "$d" start
}

up_yadifa() {
  # YADIFA answers its version and build, "2.6.4-10892", with no name (its version-chaos
  # default).
  local a=127.0.22.9 d="$DIR/yadifa"
  dns_entries yadifa $a YADIFA "$(upstream yadifa)" 53 28053
  mkdir -p "$d/data" "$d/keys" "$d/xfr" "$d/log"
  chown -R yadifa: "$d"
  cat >"$d/yadifad.conf" <<EOF
<main>
        daemon      off
        chroot      off
        logpath     "$d/log"
        pidfile     "$d/yadifad.pid"
        datapath    "$d/data"
        keyspath    "$d/keys"
        xfrpath     "$d/xfr"
        user        yadifa
        group       yadifa
        listen      $a, $a port 28053
</main>
<channels>
        stderr      STDERR
</channels>
<loggers>
        server      EMERG,ALERT,CRIT,ERR,WARNING,NOTICE stderr
        system      EMERG,ALERT,CRIT,ERR,WARNING,NOTICE stderr
</loggers>
EOF
  start yadifa /usr/sbin/yadifad -c "$d/yadifad.conf"
}
