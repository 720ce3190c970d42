#!/usr/bin/env bash
# The service-detection zoo: real servers from Debian's packages, started on loopback, each
# on its own address 127.0.0.N (so two web servers can both have port 80, and 127.0.0.1
# stays free for other tests), on its default port AND on an unusual fixed port below the
# ephemeral range. Used by crates/portolan/tests/probe_zoo.rs and bench/probe.sh.
#
#   scripts/zoo.sh up DIR [NAME...]   start the named servers (default: all); writes
#                                     DIR/manifest.tsv; exit 2 (naming the server and its
#                                     log's tail) if one does not come up or a port is taken
#   scripts/zoo.sh down DIR           stop everything `up` started in DIR, remove DIR
#   scripts/zoo.sh names              the servers this script knows
#   scripts/zoo.sh missing [PKG...]   the Debian packages the zoo needs (and PKG...) that are
#                                     not installed, one a line (python3-flask when
#                                     /usr/bin/python3 cannot import flask)
#
# DIR/manifest.tsv has one line per (server, port):
#   name  addr  port  proto  service  product  version  tls
# `version` is the truth: the upstream part of the installed Debian package's version
# (1:9.2p1-2+deb12u3 -> 9.2p1), or for Flask the Werkzeug that /usr/bin/python3 imports,
# or `-` where the product never tells an unauthenticated client its version (dovecot).
# `product` is the product's plain name: a tool names it right when its product contains it;
# `-` where nothing on the wire names the software (plain Node, rpcbind): no product may be
# claimed there.
# `tls` is how the port offers TLS, with the zoo's certificate (CN zoo.test) where the zoo
# configures it: `tls` (a TLS handshake first), `starttls` (upgraded in the protocol), or
# `-` (clear only).
#
# Every server runs with a configuration written here into DIR (never /etc's), in the
# foreground in a process group of its own (setsid), so `down` stops its workers and
# children with it: SIGTERM to the group, SIGKILL after 5 s. Needs root. No systemd: the
# packages' own services are not running. Traffic stays on loopback.
set -euo pipefail

ALL=(ssh nginx apache2 flask redis memcached postgresql mariadb vsftpd exim4 dovecot dnsmasq
  mosquitto node-exporter snmpd ntpsec)
# How long a server may take to listen (a deadline, not a sleep): the JVM and Erlang
# servers' first start after an install (ActiveMQ, RabbitMQ, ejabberd, Tomcat) has been
# seen to take a minute on a loaded machine.
WAIT_SECONDS=120
# The Debian packages the servers come from (flask: whichever /usr/bin/python3 imports).
PACKAGES=(openssh-server openssh-client openssl nginx-light apache2 redis-server memcached
  postgresql mariadb-server vsftpd exim4-daemon-light dovecot-imapd dovecot-pop3d dnsmasq-base
  mosquitto prometheus-node-exporter snmpd ntpsec)

# Packages that conflict with one the zoo installs (postfix and exim4 are both the mail
# transport agent; proftpd and vsftpd both the FTP server) are not installed: `install
# extract:PKG` unpacks the .deb (apt-get download, dpkg -x) under $EXTRACT_ROOT/PKG, with
# its upstream version in $EXTRACT_ROOT/PKG/VERSION; the server runs from there. Its
# libraries go in PACKAGES like any other dependency.
EXTRACT=()
EXTRACT_ROOT=/var/lib/portolan-zoo

# Each scripts/zoo.d/*.sh adds servers: up_NAME functions, and their names, packages and
# unpacked packages to ALL, PACKAGES and EXTRACT. One file per family of servers, each on
# loopback addresses of its own (127.0.N.0/24), so files never share an address.
for f in "$(dirname "${BASH_SOURCE[0]}")"/zoo.d/*.sh; do
  [ -e "$f" ] || continue
  # shellcheck source=/dev/null
  . "$f"
done

say() { printf 'zoo: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }

# The upstream part of an installed package's version, or nothing when not installed.
upstream() {
  dpkg-query -W -f='${Version}' "$1" 2>/dev/null |
    sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*//'
}

# The root an unpacked package (EXTRACT) runs from, failing when it was not unpacked.
extracted() {
  [ -f "$EXTRACT_ROOT/$1/VERSION" ] || die "$1 is not unpacked: scripts/zoo.sh install extract:$1"
  echo "$EXTRACT_ROOT/$1"
}

# The upstream version of an unpacked package (as upstream() gives for an installed one).
extracted_version() {
  cat "$EXTRACT_ROOT/$1/VERSION" 2>/dev/null || true
}

# --- bookkeeping ------------------------------------------------------------------------

# start NAME CMD...: runs CMD in its own session and process group, output to
# DIR/NAME.log; records the group in DIR/pgids.
start() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$DIR/$name.log" 2>&1 &
  echo "$! $name" >>"$DIR/pgids"
}

# entry NAME ADDR PORT PROTO SERVICE PRODUCT VERSION TLS: one manifest line, and a port to wait
# for; called before the server starts, it fails when the port is taken already.
entry() {
  [ $# -eq 8 ] || die "entry $*: wants 8 fields"
  [ -n "$7" ] || die "$1: no installed version for its package"
  free_or_die "$1" "$2" "$3" "$4"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$DIR/manifest.tsv"
}

# Whether something listens on ADDR:PORT (or on the wildcard address), PROTO tcp or udp.
listening() {
  local flag=-t; [ "$3" = udp ] && flag=-u
  ss -Hln "$flag" | awk '{print $4}' | grep -qxE "($1|0\.0\.0\.0|\*|\[::\]):$2"
}

# free_or_die NAME ADDR PORT PROTO: fails when a port a server is about to take is in use.
free_or_die() {
  if listening "$2" "$3" "$4"; then
    die "$1: $2:$3/$4 is taken already: $(ss -Hlnp "-${4:0:1}" "sport = :$3" | head -n 2)"
  fi
}

# The zoo's self-signed certificate (CN and SAN zoo.test) in DIR/tls, made on first use:
# one for every TLS server of the zoo.
cert() {
  [ -f "$DIR/tls/cert.pem" ] && return
  mkdir -p "$DIR/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj /CN=zoo.test -addext subjectAltName=DNS:zoo.test \
    -keyout "$DIR/tls/key.pem" -out "$DIR/tls/cert.pem" 2>/dev/null ||
    die "openssl could not make the zoo's certificate"
}

log_tail() { [ -f "$DIR/$1.log" ] && tail -n 15 "$DIR/$1.log" | sed 's/^/    /' >&2 || true; }

# Waits until every port of NAME's manifest entries listens, or fails naming it.
wait_for() {
  local name=$1 deadline=$((SECONDS + WAIT_SECONDS)) n a p proto rest pgid
  while IFS=$'\t' read -r n a p proto rest; do
    [ "$n" = "$name" ] || continue
    until listening "$a" "$p" "$proto"; do
      if ((SECONDS >= deadline)); then
        say "$name did not listen on $a:$p/$proto within ${WAIT_SECONDS}s; its log:"
        log_tail "$name"; exit 2
      fi
      # A server that died will not come up: say so at once.
      while read -r pgid n2; do
        if [ "$n2" = "$name" ] && ! kill -0 "$pgid" 2>/dev/null; then
          say "$name exited before listening on $a:$p/$proto; its log:"
          log_tail "$name"; exit 2
        fi
      done <"$DIR/pgids"
      sleep 0.1
    done
  done <"$DIR/manifest.tsv"
}

# Stops every process group recorded in DIR: SIGTERM, then SIGKILL after 5 s.
stop_all() {
  local dir=$1 pgid name alive i
  [ -f "$dir/pgids" ] || return 0
  while read -r pgid name; do kill -TERM -- "-$pgid" 2>/dev/null || true; done <"$dir/pgids"
  for i in $(seq 50); do
    alive=0
    while read -r pgid name; do kill -0 -- "-$pgid" 2>/dev/null && alive=1; done <"$dir/pgids"
    ((alive)) || break
    sleep 0.1
  done
  while read -r pgid name; do
    if kill -0 -- "-$pgid" 2>/dev/null; then
      say "$name (group $pgid) outlived SIGTERM: SIGKILL"
      kill -KILL -- "-$pgid" 2>/dev/null || true
    fi
  done <"$dir/pgids"
  rm -f "$dir/pgids"
}

# --- the servers ----------------------------------------------------------------------
# Each up_NAME writes its manifest entries first (which checks that their ports are free),
# then its configuration, and starts its processes.

up_ssh() {
  local a=127.0.0.2 p v
  v=$(upstream openssh-server)
  for p in 22 20022; do entry ssh $a $p tcp ssh OpenSSH "$v" -; done
  mkdir -p /run/sshd "$DIR/ssh"
  ssh-keygen -q -t ed25519 -N '' -f "$DIR/ssh/host_key"
  start ssh /usr/sbin/sshd -D -e -f /dev/null -h "$DIR/ssh/host_key" -o PidFile=none \
    -o "ListenAddress=$a:22" -o "ListenAddress=$a:20022"
}

up_nginx() {
  local a=127.0.0.3 d="$DIR/nginx" p v
  v=$(upstream nginx-common)
  # HTTPS ports are `http` too (the service inside the tunnel), as nmap names them.
  for p in 80 20080; do entry nginx $a $p tcp http nginx "$v" -; done
  for p in 443 20443; do entry nginx $a $p tcp http nginx "$v" tls; done
  free_or_die nginx $a 20082 tcp
  mkdir -p "$d"
  cert
  cat >"$d/nginx.conf" <<EOF
pid $d/nginx.pid;
error_log $d/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $d; proxy_temp_path $d; fastcgi_temp_path $d;
  uwsgi_temp_path $d; scgi_temp_path $d;
  server { listen $a:80; listen $a:20080; root $d; }
  # HTTP/2 without TLS (h2c, prior knowledge). Not in the manifest: the preface names no
  # product, so there is no product or version to score; tests/probe_zoo.rs asks it apart.
  server { listen $a:20082 http2; root $d; }
  server {
    listen $a:443 ssl; listen $a:20443 ssl; root $d;
    ssl_certificate $DIR/tls/cert.pem; ssl_certificate_key $DIR/tls/key.pem;
  }
}
EOF
  start nginx /usr/sbin/nginx -c "$d/nginx.conf" -g 'daemon off;'
}

up_apache2() {
  local a=127.0.0.4 d="$DIR/apache2" m=/usr/lib/apache2/modules p v
  v=$(upstream apache2-bin)
  for p in 80 20081; do entry apache2 $a $p tcp http "Apache httpd" "$v" -; done
  mkdir -p "$d/www" "$d/lock"
  # Debian's own setup (conf-enabled/security.conf) says `ServerTokens OS`, so a default
  # install answers "Server: Apache/2.4.x (Debian)": that is what a user gets, and what
  # the zoo serves.
  cat >"$d/apache2.conf" <<EOF
ServerRoot $d
ServerName zoo.test
PidFile $d/apache2.pid
Mutex file:$d/lock default
ErrorLog $d/error.log
LoadModule mpm_event_module $m/mod_mpm_event.so
LoadModule authz_core_module $m/mod_authz_core.so
User www-data
Group www-data
ServerTokens OS
Listen $a:80
Listen $a:20081
DocumentRoot $d/www
<Directory $d/www>
  Require all granted
</Directory>
EOF
  start apache2 /usr/sbin/apache2 -d "$d" -f "$d/apache2.conf" -DFOREGROUND
}

up_flask() {
  local a=127.0.0.5 p v
  /usr/bin/python3 -c 'import flask' 2>/dev/null || die "flask: /usr/bin/python3 cannot import flask"
  # The truth is the Werkzeug that /usr/bin/python3 imports (Debian's or pip's).
  v=$(/usr/bin/python3 -c 'import importlib.metadata as m; print(m.version("werkzeug"))')
  for p in 5000 25000; do
    entry flask $a $p tcp http Werkzeug "$v" -
    printf "from flask import Flask\napp = Flask('zoo')\n@app.route('/')\ndef hi():\n    return 'hi'\napp.run(host='%s', port=%s)\n" \
      "$a" "$p" >"$DIR/flask-$p.py"
    start flask /usr/bin/python3 "$DIR/flask-$p.py"
  done
}

up_redis() {
  local a=127.0.0.6 p v
  v=$(upstream redis-server)
  # A server per port: redis listens on one.
  for p in 6379 26379; do
    entry redis $a $p tcp redis Redis "$v" -
    mkdir -p "$DIR/redis/$p"
    start redis /usr/bin/redis-server --port $p --bind $a --save '' --appendonly no \
      --daemonize no --dir "$DIR/redis/$p"
  done
}

up_memcached() {
  local a=127.0.0.7 p v
  v=$(upstream memcached)
  for p in 11211 21211; do
    entry memcached $a $p tcp memcached Memcached "$v" -
    start memcached /usr/bin/memcached -l $a -p $p -U 0 -u nobody
  done
}

up_postgresql() {
  local a=127.0.0.8 bin=/usr/lib/postgresql/15/bin p v
  v=$(upstream postgresql-15)
  # PostgreSQL listens on one port: one throwaway cluster per port, trust authentication
  # on loopback (our own test cluster), so a StartupMessage gets AuthenticationOk and the
  # server_version parameter.
  for p in 5432 25432; do
    entry postgresql $a $p tcp postgresql PostgreSQL "$v" -
    local d="$DIR/postgresql/$p"
    mkdir -p "$d/run"
    chown -R postgres: "$DIR/postgresql"
    setpriv --reuid=postgres --regid=postgres --init-groups "$bin/initdb" -A trust -U postgres \
      -D "$d/data" >>"$DIR/postgresql.log" 2>&1 ||
      { say "postgresql: initdb failed; its log:"; log_tail postgresql; exit 2; }
    # setpriv, not su: su -c would start a session of its own, out of our process group.
    start postgresql setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" \
      -D "$d/data" -c listen_addresses=$a -c port=$p -c "unix_socket_directories=$d/run"
  done
}

up_mariadb() {
  local a=127.0.0.9 d="$DIR/mariadb" p v
  v=$(upstream mariadb-server)
  for p in 3306 23306; do entry mariadb $a $p tcp mysql MariaDB "$v" -; done
  mkdir -p "$d"
  mariadb-install-db --no-defaults --datadir="$d/data" --user=root --auth-root-authentication-method=normal \
    >>"$DIR/mariadb.log" 2>&1 || { say "mariadb: install-db failed; its log:"; log_tail mariadb; exit 2; }
  # --extra-port: the same server on a second port.
  start mariadb /usr/sbin/mariadbd --no-defaults --datadir="$d/data" --socket="$d/mysqld.sock" \
    --pid-file="$d/mariadbd.pid" --port=3306 --extra-port=23306 --bind-address=$a --user=root \
    --skip-log-bin --innodb-buffer-pool-size=16M
}

up_vsftpd() {
  local a=127.0.0.10 p v
  v=$(upstream vsftpd)
  mkdir -p "$DIR/vsftpd/empty"
  for p in 21 20021; do
    entry vsftpd $a $p tcp ftp vsftpd "$v" -
    cat >"$DIR/vsftpd/$p.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=$a
listen_port=$p
background=NO
anonymous_enable=NO
local_enable=YES
secure_chroot_dir=$DIR/vsftpd/empty
pam_service_name=vsftpd
xferlog_enable=NO
EOF
    start vsftpd /usr/sbin/vsftpd "$DIR/vsftpd/$p.conf"
  done
}

up_exim4() {
  local a=127.0.0.11 d="$DIR/exim4" p v
  v=$(upstream exim4-daemon-light)
  for p in 25 20025; do entry exim4 $a $p tcp smtp Exim "$v" starttls; done
  mkdir -p "$d/spool"
  chown -R Debian-exim: "$d"
  # A minimal configuration of our own: -C is honoured as given since we are root. It
  # accepts no mail (every RCPT is refused); the banner is Exim's default one.
  cat >"$d/exim4.conf" <<EOF
primary_hostname = zoo.test
local_interfaces = $a
daemon_smtp_ports = 25 : 20025
exim_user = Debian-exim
exim_group = Debian-exim
never_users = root
spool_directory = $d/spool
log_file_path = $d/%slog
pid_file_path = $d/exim.pid
acl_smtp_rcpt = refuse
begin acl
refuse:
  deny message = no mail here
EOF
  chmod 644 "$d/exim4.conf"
  start exim4 /usr/sbin/exim4 -C "$d/exim4.conf" -bdf -oX '25:20025' -oP "$d/exim.pid"
}

up_dovecot() {
  local a=127.0.0.12 d="$DIR/dovecot" p
  # IMAP and POP3 in clear (with STARTTLS) and over TLS (imaps, pop3s), with the zoo's
  # certificate. Dovecot's greeting says "Dovecot ready" and no version (login_greeting),
  # so the truth version is `-`.
  for p in 143 20143; do entry dovecot $a $p tcp imap Dovecot - starttls; done
  for p in 993 20993; do entry dovecot $a $p tcp imap Dovecot - tls; done
  for p in 110 20110; do entry dovecot $a $p tcp pop3 Dovecot - starttls; done
  for p in 995 20995; do entry dovecot $a $p tcp pop3 Dovecot - tls; done
  mkdir -p "$d/run" "$d/state"
  cert
  cat >"$d/dovecot.conf" <<EOF
protocols = imap pop3
listen = $a
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
ssl = yes
ssl_cert = <$DIR/tls/cert.pem
ssl_key = <$DIR/tls/key.pem
default_login_user = dovenull
default_internal_user = dovecot
passdb {
  driver = static
  args = password=zoo-never-used
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service imap-login {
  inet_listener imap {
    port = 143
  }
  inet_listener imap-zoo {
    port = 20143
  }
  inet_listener imaps {
    port = 993
    ssl = yes
  }
  inet_listener imaps-zoo {
    port = 20993
    ssl = yes
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 110
  }
  inet_listener pop3-zoo {
    port = 20110
  }
  inet_listener pop3s {
    port = 995
    ssl = yes
  }
  inet_listener pop3s-zoo {
    port = 20995
    ssl = yes
  }
}
EOF
  start dovecot /usr/sbin/dovecot -F -c "$d/dovecot.conf"
}

up_dnsmasq() {
  local a=127.0.0.13 p v
  v=$(upstream dnsmasq-base)
  # dnsmasq tells its version to anyone who asks for version.bind (CHAOS TXT).
  for p in 53 20053; do
    entry dnsmasq $a $p tcp domain dnsmasq "$v" -
    entry dnsmasq $a $p udp domain dnsmasq "$v" -
    start dnsmasq /usr/sbin/dnsmasq -k --conf-file=/dev/null --port=$p --listen-address=$a \
      --bind-interfaces --no-resolv --no-hosts --user=root --pid-file="$DIR/dnsmasq-$p.pid"
  done
}

up_mosquitto() {
  local a=127.0.0.14 p v
  v=$(upstream mosquitto)
  for p in 1883 21883; do entry mosquitto $a $p tcp mqtt Mosquitto "$v" -; done
  mkdir -p "$DIR/mosquitto"
  chown mosquitto: "$DIR/mosquitto"
  # Anonymous clients may read $SYS/broker/version: the version is told to anyone.
  cat >"$DIR/mosquitto/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
pid_file $DIR/mosquitto/mosquitto.pid
listener 1883 $a
listener 21883 $a
EOF
  start mosquitto /usr/sbin/mosquitto -c "$DIR/mosquitto/mosquitto.conf"
}

up_node-exporter() {
  local a=127.0.0.15 p v
  v=$(upstream prometheus-node-exporter)
  for p in 9100 29100; do
    entry node-exporter $a $p tcp http "Node Exporter" "$v" -
    start node-exporter /usr/bin/prometheus-node-exporter "--web.listen-address=$a:$p"
  done
}

up_snmpd() {
  local a=127.0.0.16 p v
  v=$(upstream snmpd)
  for p in 161 20161; do entry snmpd $a $p udp snmp net-snmp "$v" -; done
  mkdir -p "$DIR/snmpd"
  # The version is readable with the community `public` (UCD-SNMP-MIB versionTag).
  cat >"$DIR/snmpd/snmpd.conf" <<EOF
rocommunity public 127.0.0.0/8
sysLocation zoo
sysContact zoo@zoo.test
EOF
  start snmpd /usr/sbin/snmpd -f -Lo -C -c "$DIR/snmpd/snmpd.conf" -p "$DIR/snmpd/snmpd.pid" \
    "udp:$a:161,udp:$a:20161"
}

up_ntpsec() {
  # ntpd listens on the addresses of the interfaces, not on 127.0.0.N: on lo it is
  # 127.0.0.1 (and ::1), port 123 only. No upstream servers: it serves its own clock.
  local a=127.0.0.1 v
  v=$(upstream ntpsec)
  # ntpd answers a mode-6 read of its variables with "version=ntpd ntpsec-1.2.2 ...".
  entry ntpsec $a 123 udp ntp NTPsec "$v" -
  mkdir -p "$DIR/ntpsec"
  chown ntpsec: "$DIR/ntpsec"
  cat >"$DIR/ntpsec/ntp.conf" <<EOF
driftfile $DIR/ntpsec/ntp.drift
interface ignore wildcard
interface ignore all
interface listen lo
# Debian's ntp.conf restrictions: outsiders may not query, the machine itself may.
restrict default kod nomodify nopeer noquery limited
restrict 127.0.0.1
restrict ::1
EOF
  start ntpsec /usr/sbin/ntpd -n -c "$DIR/ntpsec/ntp.conf" -u ntpsec:ntpsec -p "$DIR/ntpsec/ntpd.pid"
}

# --- commands ---------------------------------------------------------------------------

cmd_up() {
  DIR=$1; shift
  [ "$(id -u)" = 0 ] || die "needs root (sshd, postgres and others switch users)"
  local names=("$@") n
  ((${#names[@]})) || names=("${ALL[@]}")
  for n in "${names[@]}"; do
    declare -F "up_$n" >/dev/null || die "unknown server $n (known: ${ALL[*]})"
  done
  [ -e "$DIR/pgids" ] && die "$DIR already has a zoo: scripts/zoo.sh down $DIR first"
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  # Servers that switch users (postgres, dovecot, exim) must reach their parts of DIR.
  chmod 755 "$DIR"
  setpriv --reuid=nobody --regid=nogroup --clear-groups test -x "$DIR" ||
    die "$DIR is not reachable by other users (postgres, dovecot, exim switch to them): make its parents world-searchable"
  : >"$DIR/manifest.tsv"
  : >"$DIR/pgids"
  # A failure halfway stops what was started.
  trap 'rc=$?; if ((rc)); then stop_all "$DIR"; say "up failed: stopped what it had started (logs in $DIR)"; fi' EXIT
  for n in "${names[@]}"; do "up_$n"; done
  for n in "${names[@]}"; do wait_for "$n"; done
  trap - EXIT
  say "up: $(wc -l <"$DIR/manifest.tsv") ports of ${#names[@]} servers; manifest $DIR/manifest.tsv"
}

cmd_missing() {
  local installed p
  installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${PACKAGES[@]}" "$@" 2>/dev/null |
    awk '$2 == "ii" {print $1}' || true)
  for p in "${PACKAGES[@]}" "$@"; do
    grep -qxF "$p" <<<"$installed" || echo "$p"
  done
  /usr/bin/python3 -c 'import flask' 2>/dev/null || echo python3-flask
  for p in "${EXTRACT[@]}"; do
    [ -f "$EXTRACT_ROOT/$p/VERSION" ] || echo "extract:$p"
  done
}

cmd_down() {
  local dir=$1
  [ -d "$dir" ] || return 0
  stop_all "$dir"
  rm -rf "$dir"
}

# Installs Debian packages (as root) without letting them start their services: the zoo
# starts its own, on its own addresses. A policy-rc.d that says no is put in place for the
# time of the install where none is.
cmd_install() {
  (($#)) || return 0
  local own_policy=0 a pkgs=() unpack=()
  for a in "$@"; do
    case $a in
      extract:*) unpack+=("${a#extract:}") ;;
      *) pkgs+=("$a") ;;
    esac
  done
  set -- "${pkgs[@]}"
  apt-get update -qq
  for a in "${unpack[@]}"; do extract_package "$a"; done
  (($#)) || return 0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  local rc=0
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >/dev/null || rc=$?
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  return "$rc"
}

# Unpacks PKG's .deb under $EXTRACT_ROOT/PKG (for a package that conflicts with one
# installed), recording its upstream version.
extract_package() {
  local pkg=$1 tmp deb
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt downloads as _apt
  chown _apt "$tmp" 2>/dev/null || true
  (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
  deb=$(ls "$tmp"/*.deb)
  rm -rf "${EXTRACT_ROOT:?}/$pkg"
  mkdir -p "$EXTRACT_ROOT/$pkg"
  dpkg -x "$deb" "$EXTRACT_ROOT/$pkg"
  dpkg-deb -f "$deb" Version | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//' -e 's/[+~].*//' \
    >"$EXTRACT_ROOT/$pkg/VERSION"
  rm -rf "$tmp"
}

case ${1:-} in
  up) [ $# -ge 2 ] || die "usage: scripts/zoo.sh up DIR [NAME...]"; shift; cmd_up "$@" ;;
  down) [ $# -eq 2 ] || die "usage: scripts/zoo.sh down DIR"; cmd_down "$2" ;;
  names) printf '%s\n' "${ALL[@]}" ;;
  missing) shift; cmd_missing "$@" ;;
  install) shift; cmd_install "$@" ;;
  *) die "usage: scripts/zoo.sh up DIR [NAME...] | down DIR | names | missing [PKG...] | install PKG..." ;;
esac
