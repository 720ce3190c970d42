# The zoo's remote-access and infrastructure servers (sourced by scripts/zoo.sh): remote
# desktops (RDP, VNC), telnet, TFTP, STUN/TURN, Kerberos, LDAP, SMB and NetBIOS, SIP.
# Addresses 127.0.27.N. Signatures: crates/portolan-probe/data/signatures/remote.toml.
#
# Where the wire never names the product (an RFB greeting, a TFTP error, a NetBIOS name
# table), the manifest's product is `-` too: naming one there would be a guess.

# tftpd-hpa is not in ALL (up_tftpd-hpa works, `zoo.sh up DIR tftpd-hpa` starts it): a TFTP
# server answers from a new port (RFC 1350's transfer port), and portolan's UDP probes read
# replies on a socket connected to the probed port, so the answer is dropped (nmap does not
# see it either). It joins the zoo when UDP probes may take a reply from another port.
ALL+=(xrdp tigervnc telnetd coturn krb5-kdc slapd samba kamailio)
# gcc and libc6-dev build the interface shim Samba needs (see samba_shim).
PACKAGES+=(xrdp tigervnc-standalone-server inetutils-telnetd inetutils-inetd tftpd-hpa coturn
  krb5-kdc slapd samba kamailio gcc libc6-dev)

up_xrdp() {
  # An X.224 Connection Confirm with RDP_NEG_RSP (flags 0x01): other RDP servers send the
  # same bytes. What names xrdp is its answer to an empty X.224 data PDU after the
  # Connection Request, an MCS Disconnect Provider Ultimatum. No version on the wire.
  local a=127.0.27.1 d="$DIR/xrdp" p
  for p in 3389 23389; do entry xrdp $a $p tcp rdp xrdp - -; done
  mkdir -p "$d" /run/xrdp/sockdir
  cert
  # xrdp 0.9 listens on one port: a process per port, each with its copy of Debian's ini.
  for p in 3389 23389; do
    sed -e "s|^port=3389|port=tcp://$a:$p|" -e "s|^LogFile=.*|LogFile=$d/xrdp-$p.log|" \
      -e 's|^EnableSyslog=.*|EnableSyslog=false|' \
      -e "s|^certificate=.*|certificate=$DIR/tls/cert.pem|" -e "s|^key_file=.*|key_file=$DIR/tls/key.pem|" \
      /etc/xrdp/xrdp.ini >"$d/xrdp-$p.ini"
    grep -q "^port=tcp://$a:$p\$" "$d/xrdp-$p.ini" || die "xrdp: /etc/xrdp/xrdp.ini has no port=3389"
    start xrdp /usr/sbin/xrdp --nodaemon --config "$d/xrdp-$p.ini"
  done
}

up_tigervnc() {
  # The RFB greeting "RFB 003.008\n" names the protocol, not the server.
  local a=127.0.27.2 p n=127
  for p in 5900 25900; do
    entry tigervnc $a $p tcp vnc - - -
    # A display of its own per port (its lock and socket are in /tmp/.X11-unix), no X11
    # over TCP. No blacklist: probes that leave before the handshake count as failures,
    # and after five a host is greeted with "RFB 003.003" and "Too many security failures".
    start tigervnc /usr/bin/Xvnc ":$n" -rfbport $p -interface $a -SecurityTypes None \
      -UseBlacklist=0 -nolisten tcp -geometry 640x480 -desktop zoo
    n=$((n + 1))
  done
}

up_telnetd() {
  # GNU inetutils telnetd under inetutils-inetd: option negotiation first, and its own
  # (WILL AUTHENTICATION, WILL ENCRYPT, then five DOs). No version on the wire.
  local a=127.0.27.3 d="$DIR/telnetd" p
  mkdir -p "$d"
  : >"$d/inetd.conf"
  for p in 23 20023; do
    entry telnetd $a $p tcp telnet "inetutils telnetd" - -
    echo "$a:$p stream tcp nowait root /usr/sbin/telnetd telnetd" >>"$d/inetd.conf"
  done
  start telnetd /usr/sbin/inetutils-inetd -d -p "$d/inetd.pid" "$d/inetd.conf"
}

up_tftpd-hpa() {
  # A read request for a file that is not there: an ERROR packet, "File not found". It
  # comes from another port of the server (the transfer's own, RFC 1350's TID), which a
  # UDP socket connected to port 69 does not take: until portolan's UDP probe reads
  # answers from any port of the target, these two entries are not named.
  local a=127.0.27.4 d="$DIR/tftpd-hpa" p
  mkdir -p "$d/root"
  chmod 755 "$d" "$d/root"
  for p in 69 20069; do
    entry tftpd-hpa $a $p udp tftp - - -
    start tftpd-hpa /usr/sbin/in.tftpd --foreground --address "$a:$p" --secure --user nobody \
      --pidfile "$d/tftpd-$p.pid" "$d/root"
  done
}

up_coturn() {
  # A STUN Binding request (RFC 8489) over UDP or TCP is answered with a SOFTWARE attribute:
  # "Coturn-4.6.1 'Gorst'".
  local a=127.0.27.5 d="$DIR/coturn" p v
  v=$(upstream coturn)
  mkdir -p "$d"
  for p in 3478 23478; do
    entry coturn $a $p udp stun Coturn "$v" -
    entry coturn $a $p tcp stun Coturn "$v" -
    # A server per port (the alternative port is for RFC 5780 tests, on a second address).
    start coturn /usr/bin/turnserver -n --listening-ip $a --listening-port $p --relay-ip $a \
      --no-tls --no-dtls --no-cli --no-rfc5780 --db "$d/turndb-$p" --pidfile "$d/turnserver-$p.pid" \
      --log-file stdout --simple-log --min-port 40000 --max-port 40099 --realm zoo.test
  done
}

up_krb5-kdc() {
  # MIT krb5kdc: an AS-REQ for an unknown client gets a KRB-ERROR whose e-text is MIT's
  # status word, CLIENT_NOT_FOUND. No version on the wire.
  local a=127.0.27.6 d="$DIR/krb5" p
  for p in 88 20088; do
    entry krb5-kdc $a $p udp kerberos-sec "MIT Kerberos" - -
    entry krb5-kdc $a $p tcp kerberos-sec "MIT Kerberos" - -
  done
  mkdir -p "$d"
  cat >"$d/krb5.conf" <<EOF
[libdefaults]
  default_realm = ZOO.TEST
[realms]
  ZOO.TEST = {
    kdc = $a
  }
EOF
  cat >"$d/kdc.conf" <<EOF
[kdcdefaults]
  kdc_listen = $a:88, $a:20088
  kdc_tcp_listen = $a:88, $a:20088
[realms]
  ZOO.TEST = {
    database_name = $d/principal
    key_stash_file = $d/stash
    acl_file = $d/kadm5.acl
  }
[logging]
  kdc = FILE:$d/kdc.log
EOF
  : >"$d/kadm5.acl"
  KRB5_CONFIG="$d/krb5.conf" KRB5_KDC_PROFILE="$d/kdc.conf" \
    kdb5_util -r ZOO.TEST create -s -P zoo-never-used >>"$DIR/krb5-kdc.log" 2>&1 ||
    { say "krb5-kdc: kdb5_util create failed; its log:"; log_tail krb5-kdc; exit 2; }
  start krb5-kdc env KRB5_CONFIG="$d/krb5.conf" KRB5_KDC_PROFILE="$d/kdc.conf" \
    /usr/sbin/krb5kdc -n -r ZOO.TEST -P "$d/krb5kdc.pid"
}

up_slapd() {
  # OpenLDAP: the root DSE, read anonymously, has the object class OpenLDAProotDSE and no
  # vendorVersion (OpenLDAP does not publish its version).
  local a=127.0.27.7 d="$DIR/slapd" p
  for p in 389 20389; do entry slapd $a $p tcp ldap OpenLDAP - -; done
  mkdir -p "$d/db"
  cat >"$d/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
pidfile $d/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "dc=zoo,dc=test"
directory $d/db
EOF
  start slapd /usr/sbin/slapd -d 0 -f "$d/slapd.conf" -h "ldap://$a:389/ ldap://$a:20389/"
}

# Samba binds only to the addresses of the interfaces it finds (getifaddrs), and nmbd
# serves no loopback interface: this shim adds one, "zoo", holding $ZOO_IF_ADDR/24 (up,
# broadcast, not loopback), so smbd and nmbd listen on the zoo's address while nothing of
# the machine's network changes.
samba_shim() {
  local d=$1
  cat >"$d/zooif.c" <<'EOF'
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>

struct zoo_if {
  struct ifaddrs ifa; /* first: freeifaddrs() frees the block from it */
  struct sockaddr_in addr, mask, bcast;
  char name[8];
};

int getifaddrs(struct ifaddrs **out) {
  int (*real)(struct ifaddrs **) = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
  struct ifaddrs *rest = NULL;
  const char *a = getenv("ZOO_IF_ADDR");
  struct zoo_if *z = calloc(1, sizeof *z);
  if (real(&rest) != 0) rest = NULL;
  if (!a || !z || inet_pton(AF_INET, a, &z->addr.sin_addr) != 1) {
    free(z);
    *out = rest;
    return rest ? 0 : -1;
  }
  z->addr.sin_family = z->mask.sin_family = z->bcast.sin_family = AF_INET;
  z->mask.sin_addr.s_addr = htonl(0xffffff00);
  z->bcast.sin_addr.s_addr = z->addr.sin_addr.s_addr | htonl(0xff);
  strcpy(z->name, "zoo");
  z->ifa.ifa_name = z->name;
  z->ifa.ifa_flags = IFF_UP | IFF_BROADCAST | IFF_RUNNING;
  z->ifa.ifa_addr = (struct sockaddr *)&z->addr;
  z->ifa.ifa_netmask = (struct sockaddr *)&z->mask;
  z->ifa.ifa_broadaddr = (struct sockaddr *)&z->bcast;
  z->ifa.ifa_next = rest;
  *out = &z->ifa;
  return 0;
}
EOF
  gcc -shared -fPIC -O2 -o "$d/zooif.so" "$d/zooif.c" -ldl >>"$DIR/samba.log" 2>&1 ||
    die "samba: could not build the interface shim (gcc, libc6-dev)"
}

# samba_conf DIR NAME CLIENT_ADDR [LINE...]: a standalone server's smb.conf on
# ZOO_SAMBA_ADDR/24, its state under DIR.
samba_conf() {
  local d=$1 name=$2 client=$3 s
  shift 3
  for s in private lock state cache pid ncalrpc; do mkdir -p "$d/$s"; done
  {
    echo "[global]"
    echo "netbios name = $name"
    echo "workgroup = ZOO"
    echo "server role = standalone server"
    echo "interfaces = $ZOO_SAMBA_ADDR/24"
    echo "bind interfaces only = yes"
    # nmbd's client socket (for answers to its own queries) on an address of its own: on
    # the server's address it would take some of the queries meant for the name service.
    echo "nbt client socket address = $client"
    echo "log file = $d/log"
    echo "private dir = $d/private"
    echo "lock directory = $d/lock"
    echo "state directory = $d/state"
    echo "cache directory = $d/cache"
    echo "pid directory = $d/pid"
    echo "ncalrpc dir = $d/ncalrpc"
    for s in "$@"; do echo "$s"; done
  } >"$d/smb.conf"
}

up_samba() {
  # smbd: an SMB2 NEGOTIATE answer. Samba's server GUID there is its NetBIOS name in lower
  # case, zero-padded (negprot_spnego), which names Samba; no version (SMB1, whose session
  # setup told it, is off by default). nmbd: a NetBIOS node status answer (the names and a
  # zero MAC), which names no product.
  local a=127.0.27.8 d="$DIR/samba" p
  ZOO_SAMBA_ADDR=$a
  for p in 445 20445; do entry samba $a $p tcp smb Samba - -; done
  # nmbd on 137 only: a second nmbd (on an unusual name-service port) also binds the
  # datagram port 138 of the same address and exited at random in CI when it lost that race.
  entry samba $a 137 udp netbios-ns - - -
  mkdir -p "$d"
  samba_shim "$d"
  samba_conf "$d/smbd" zoosmb 127.0.27.9 "smb ports = 445 20445" "disable netbios = yes"
  samba_conf "$d/nmbd-137" zoonmb 127.0.27.9
  start samba env LD_PRELOAD="$d/zooif.so" ZOO_IF_ADDR=$a \
    /usr/sbin/smbd --foreground --no-process-group -s "$d/smbd/smb.conf"
  start samba env LD_PRELOAD="$d/zooif.so" ZOO_IF_ADDR=$a \
    /usr/sbin/nmbd --foreground --no-process-group -s "$d/nmbd-137/smb.conf"
}

up_kamailio() {
  # Kamailio answers a SIP OPTIONS (over UDP and TCP) with its Server header,
  # "kamailio (5.6.3 (x86_64/linux))".
  local a=127.0.27.11 d="$DIR/kamailio" p v
  v=$(upstream kamailio)
  for p in 5060 25060; do
    entry kamailio $a $p udp sip Kamailio "$v" -
    entry kamailio $a $p tcp sip Kamailio "$v" -
  done
  mkdir -p "$d"
  # A minimal routing script of our own: OPTIONS gets 200, anything else 403.
  cat >"$d/kamailio.cfg" <<EOF
#!KAMAILIO
debug=1
log_stderror=yes
children=1
listen=udp:$a:5060
listen=udp:$a:25060
listen=tcp:$a:5060
listen=tcp:$a:25060
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "pv.so"
request_route {
  if (\$rm == "OPTIONS") {
    sl_send_reply("200", "OK");
    exit;
  }
  sl_send_reply("403", "Forbidden");
}
EOF
  start kamailio /usr/sbin/kamailio -DD -E -f "$d/kamailio.cfg" -P "$d/kamailio.pid" -Y "$d" -w "$d" \
    -m 16 -M 4
}
