# The messaging family of the zoo (sourced by scripts/zoo.sh): IRC, XMPP and message brokers
# and job queues, on 127.0.24.0/24, each on its default port and an unusual one.
# shellcheck shell=bash

ALL+=(ngircd inspircd ircd-hybrid prosody ejabberd rabbitmq nats beanstalkd gearman activemq)
PACKAGES+=(ngircd inspircd prosody ejabberd rabbitmq-server erlang-base nats-server beanstalkd
  gearman-job-server activemq default-jre-headless dnsmasq-base
  # ircd-hybrid's libraries (the server itself is unpacked: it conflicts with ngircd).
  libltdl7 libgnutls30)
# ircd-hybrid conflicts with ngircd (Conflicts: ircd-hybrid): it runs unpacked.
EXTRACT+=(ircd-hybrid)

# The IRC daemons look up the client's address before they register it, with their own
# resolvers. The zoo's traffic stays on loopback, and a lookup that waits for a timeout
# (nothing on 127.0.0.1:53, or a server there that forwards) would delay registration by
# seconds: they ask this resolver, which refuses every query at once ("Could not resolve
# your hostname", "Couldn't look up your hostname"). Started once per `up`.
IRC_RESOLVER=127.0.24.254
irc_resolver() {
  [ -n "${IRC_RESOLVER_UP:-}" ] && return
  IRC_RESOLVER_UP=1
  free_or_die irc-resolver $IRC_RESOLVER 53 udp
  start irc-resolver /usr/sbin/dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts \
    --listen-address=$IRC_RESOLVER --bind-interfaces --port=53 --user=root \
    --pid-file="$DIR/irc-resolver.pid"
}

# ngIRCd says nothing until the client registers; NICK/USER gets 002 "running version
# ngircd-26.1" and 004 "<server> ngircd-26.1 <modes>".
up_ngircd() {
  local a=127.0.24.1 d="$DIR/ngircd" p v
  v=$(upstream ngircd)
  for p in 6667 26667; do entry ngircd $a $p tcp irc ngIRCd "$v" -; done
  mkdir -p "$d/conf.d"
  # Debian's settings (its [Limits], PAM off, the irc user), our name and addresses;
  # IncludeDir points into DIR so /etc's conf.d is not read. One change: 50 connections per
  # address, not Debian's 10 (ngIRCd's own default is 5). portolan asks an unusual port with
  # up to 8 connections at once, and ngIRCd counts a closed one until it reads again from
  # it, seconds later after a penalty: a second probe run within seconds was refused.
  cat >"$d/ngircd.conf" <<EOF
[Global]
Name = irc.zoo.test
Info = zoo
AdminInfo1 = zoo
AdminInfo2 = zoo
AdminEMail = zoo@zoo.test
Listen = $a
Ports = 6667, 26667
MotdPhrase = zoo
ServerUID = irc
ServerGID = irc
[Limits]
ConnectRetry = 60
MaxConnections = 500
MaxConnectionsIP = 50
MaxJoins = 10
PingTimeout = 120
PongTimeout = 20
[Options]
OperCanUseMode = yes
PAM = no
IncludeDir = $d/conf.d
EOF
  start ngircd /usr/sbin/ngircd --nodaemon --config "$d/ngircd.conf"
}

# InspIRCd 3 greets with its hostname lookup notices before registration ("*** Looking up
# your hostname...", then its own "using your IP address (...) instead." or "Found your
# hostname (...)"); registered, it says "InspIRCd-3" (the major version only: the full one
# is for operators), so the manifest has no version.
up_inspircd() {
  local a=127.0.24.2 d="$DIR/inspircd" p
  for p in 6667 26668; do entry inspircd $a $p tcp irc InspIRCd - -; done
  mkdir -p "$d"
  echo zoo >"$d/motd"
  # Debian's default configuration, reduced: its <connect> block as shipped, the zoo's
  # resolver in its <dns> (Debian's: 127.0.0.1).
  cat >"$d/inspircd.conf" <<EOF
<server name="irc.zoo.test" description="zoo" network="zoo">
<admin name="zoo" nick="zoo" email="zoo@zoo.test">
<bind address="$a" port="6667" type="clients">
<bind address="$a" port="26668" type="clients">
<connect allow="*" timeout="60" threshold="10" pingfreq="120" hardsendq="262144"
  softsendq="8192" recvq="8192" localmax="3" globalmax="3">
<files motd="$d/motd">
<dns server="$IRC_RESOLVER" timeout="5">
<pid file="$d/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="$d/ircd.log">
EOF
  chown -R irc: "$d"
  irc_resolver
  start inspircd setpriv --reuid=irc --regid=irc --init-groups /usr/sbin/inspircd --nofork \
    --config="$d/inspircd.conf"
}

# ircd-hybrid greets with its lookup notices ("*** Looking up your hostname", "*** Checking
# Ident"); registered, 002 and 004 carry "ircd-hybrid-1:8.2.43+dfsg.1-1" (Debian's build
# puts its package version there). Its connection throttle is off: out of the box it
# refuses a second connection from an address within seconds ("ERROR :Your host is trying
# to (re)connect too fast -- throttled."), and portolan asks on a fresh connection after
# the banner's (the zoo probes both ports at once, too).
up_ircd-hybrid() {
  local a=127.0.24.8 d="$DIR/ircd-hybrid" root p v
  root=$(extracted ircd-hybrid)
  v=$(extracted_version ircd-hybrid)
  for p in 6667 26669; do entry ircd-hybrid $a $p tcp irc Hybrid "$v" -; done
  mkdir -p "$d"
  cat >"$d/ircd.conf" <<EOF
serverinfo {
  name = "irc.zoo.test";
  description = "zoo";
  network_name = "zoo";
  hub = no;
  default_max_clients = 512;
};
admin { name = "zoo"; description = "zoo"; email = "<zoo@zoo.test>"; };
class { name = "users"; ping_time = 90 seconds; number_per_ip_local = 20; max_number = 100; sendq = 100 kbytes; };
listen { host = "$a"; port = 6667, 26669; };
auth { user = "*@*"; class = "users"; };
general { throttle_time = 0 seconds; };
log { use_logging = no; };
EOF
  chown -R irc: "$d"
  # It reads its resolver from /etc/resolv.conf: the zoo's, laid over /etc's below.
  echo "nameserver $IRC_RESOLVER" >"$d/resolv.conf"
  irc_resolver
  # Its module directories are compiled in (/usr/lib/ircd-hybrid/modules): a mount
  # namespace of its own lays the unpacked /usr/lib over the real one, and its resolv.conf
  # over /etc's, for it alone.
  start ircd-hybrid unshare --mount --propagation private sh -c \
    'mount -t overlay overlay -o "lowerdir=$1/usr/lib:/usr/lib" /usr/lib &&
     mount --bind "$2" /etc/resolv.conf && shift 2 &&
     exec setpriv --reuid=irc --regid=irc --init-groups "$@"' sh "$root" "$d/resolv.conf" \
    "$root/usr/sbin/ircd-hybrid" -foreground -configfile "$d/ircd.conf" \
    -klinefile "$d/kline.db" -dlinefile "$d/dline.db" -xlinefile "$d/xline.db" \
    -resvfile "$d/resv.db" -logfile "$d/ircd.log" -pidfile "$d/ircd.pid"
}

# Prosody answers a stream header with its own: to a name it does not serve (an address)
# "This server does not serve ..." (its mod_c2s text); nothing on the wire says its version.
# No TLS (no "tls" module): portolan does not negotiate XMPP's STARTTLS, and a port that
# offers it would be `starttls` in the manifest.
up_prosody() {
  local a=127.0.24.3 d="$DIR/prosody" p
  for p in 5222 25222; do entry prosody $a $p tcp xmpp-client Prosody - -; done
  mkdir -p "$d/data"
  cat >"$d/prosody.cfg.lua" <<EOF
pidfile = "$d/prosody.pid"
data_path = "$d/data"
plugin_paths = {}
interfaces = { "$a" }
c2s_ports = { 5222, 25222 }
c2s_direct_tls_ports = {}
c2s_require_encryption = false
modules_enabled = { "disco"; "roster"; "saslauth"; "ping"; "version"; "uptime"; "time" }
modules_disabled = { "s2s" }
authentication = "internal_hashed"
log = { info = "*stdout" }
VirtualHost "zoo.test"
EOF
  chown -R prosody: "$d"
  start prosody setpriv --reuid=prosody --regid=prosody --init-groups /usr/bin/prosody -F \
    --config "$d/prosody.cfg.lua"
}

# ejabberd answers a stream header with its own, in the attribute order of ProcessOne's
# xmpp library (id of digits, version, xml:lang, xmlns:stream, from, xmlns) and, to a name
# it does not serve, host-unknown without text. Nothing says its name or version: the
# header's shape is the evidence. No TLS, as for Prosody. Its Erlang distribution listens
# on this address, on a port of its own, without epmd (ERL_DIST_PORT).
up_ejabberd() {
  local a=127.0.24.9 d="$DIR/ejabberd" p
  for p in 5222 25223; do entry ejabberd $a $p tcp xmpp-client ejabberd - -; done
  free_or_die ejabberd $a 25675 tcp
  mkdir -p "$d/spool" "$d/logs"
  cat >"$d/ejabberd.yml" <<EOF
loglevel: info
hosts:
  - zoo.test
listen:
  -
    port: 5222
    ip: "$a"
    module: ejabberd_c2s
    max_stanza_size: 262144
  -
    port: 25223
    ip: "$a"
    module: ejabberd_c2s
    max_stanza_size: 262144
auth_password_format: scram
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_version: {}
EOF
  cat >"$d/ejabberdctl.cfg" <<EOF
ERLANG_NODE=zoo-xmpp@localhost
ERL_DIST_PORT=25675
ERL_OPTIONS="-kernel inet_dist_use_interface {${a//./,}}"
EOF
  : >"$d/inetrc"
  chown -R ejabberd: "$d"
  start ejabberd setpriv --reuid=ejabberd --regid=ejabberd --init-groups env HOME="$d" \
    /usr/sbin/ejabberdctl --config-dir "$d" --spool "$d/spool" --logs "$d/logs" \
    --config "$d/ejabberd.yml" --ctl-config "$d/ejabberdctl.cfg" foreground
}

# RabbitMQ answers the AMQP 0-9-1 protocol header with Connection.Start, whose server
# properties carry product "RabbitMQ" and version "3.10.8". All its state lives in DIR; its
# Erlang distribution (and the epmd it registers with) listen on this address only, on
# ports of their own, so another Erlang node on the machine does not clash.
up_rabbitmq() {
  local a=127.0.24.4 d="$DIR/rabbitmq" p v
  v=$(upstream rabbitmq-server)
  for p in 5672 21672; do entry rabbitmq $a $p tcp amqp RabbitMQ "$v" -; done
  free_or_die rabbitmq $a 24369 tcp
  free_or_die rabbitmq $a 25674 tcp
  mkdir -p "$d/logs"
  cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.1 = $a:5672
listeners.tcp.2 = $a:21672
EOF
  echo '[].' >"$d/enabled_plugins"
  : >"$d/rabbitmq-env.conf"
  chown -R rabbitmq: "$d"
  # epmd in the foreground, in the zoo's process group (a node would start a daemon one
  # that outlives `down`); it listens on loopback too, where the node asks it.
  start rabbitmq setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/bin/epmd \
    -port 24369 -address $a
  start rabbitmq env HOME="$d" ERL_EPMD_PORT=24369 \
    RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" RABBITMQ_MNESIA_BASE="$d/mnesia" \
    RABBITMQ_LOG_BASE="$d/logs" RABBITMQ_LOGS=- RABBITMQ_PID_FILE="$d/rabbitmq.pid" \
    RABBITMQ_NODENAME=zoo-messaging@localhost RABBITMQ_DIST_PORT=25674 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {${a//./,}}" \
    setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups /usr/lib/rabbitmq/bin/rabbitmq-server
}

# nats-server greets every client with INFO {"server_id":..,"version":"2.9.10",..,"go":..}.
up_nats() {
  local a=127.0.24.5 p v
  v=$(upstream nats-server)
  # One server per port: it listens for clients on one.
  for p in 4222 24222; do
    entry nats $a $p tcp nats "NATS" "$v" -
    start nats /usr/sbin/nats-server --addr $a --port $p
  done
}

# beanstalkd answers `stats` with a YAML document that has `version: "1.12"`.
up_beanstalkd() {
  local a=127.0.24.6 p v
  v=$(upstream beanstalkd)
  for p in 11300 21300; do
    entry beanstalkd $a $p tcp beanstalkd beanstalkd "$v" -
    start beanstalkd /usr/bin/beanstalkd -l $a -p $p -u beanstalkd
  done
}

# gearmand answers the administrative text command `version` with "OK 1.1.20+ds".
up_gearman() {
  local a=127.0.24.7 p v
  v=$(upstream gearman-job-server)
  for p in 4730 24730; do
    entry gearman $a $p tcp gearman Gearman "$v" -
    start gearman /usr/sbin/gearmand --listen $a --port $p --user gearman --log-file stderr \
      --threads 1
  done
}

# ActiveMQ (Classic) speaks first on its OpenWire ports: a WireFormatInfo whose properties
# carry ProviderName "ActiveMQ" and ProviderVersion "5.17.2". Its STOMP port answers
# CONNECT with "server:ActiveMQ/5.17.2"; STOMP is on its default port only (the STOMP probe
# is not cheap enough to be sent to every port: see the signatures). A JVM: it takes
# 5-15 s to listen here, more on a cold start.
up_activemq() {
  local a=127.0.24.10 d="$DIR/activemq" p v
  v=$(upstream activemq)
  for p in 61616 21616; do entry activemq $a $p tcp apachemq ActiveMQ "$v" -; done
  entry activemq $a 61613 tcp stomp ActiveMQ "$v" -
  mkdir -p "$d/data"
  # Debian's instance configuration (no JMX), reduced: no persistence, our listeners.
  cat >"$d/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="zoo"
    persistent="false" dataDirectory="$d/data">
    <transportConnectors>
      <transportConnector name="openwire" uri="tcp://$a:61616"/>
      <transportConnector name="openwire-zoo" uri="tcp://$a:21616"/>
      <transportConnector name="stomp" uri="stomp://$a:61613"/>
    </transportConnectors>
  </broker>
</beans>
EOF
  chown -R activemq: "$d"
  # What /usr/bin/activemq runs, in the foreground (it would background java itself).
  # IPv4 sockets: Java's default IPv6 ones ([::ffff:127.0.24.10]) are not what `listening`
  # looks for.
  start activemq setpriv --reuid=activemq --regid=activemq --init-groups java -Xms64M -Xmx256M \
    -Djava.net.preferIPv4Stack=true \
    --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.base/java.net=ALL-UNNAMED \
    -Dactivemq.classpath="$d" -Dactivemq.home=/usr/share/activemq -Dactivemq.base="$d" \
    -Dactivemq.conf="$d" -Dactivemq.data="$d/data" \
    -jar /usr/share/activemq/bin/activemq.jar start "xbean:file:$d/activemq.xml"
}
