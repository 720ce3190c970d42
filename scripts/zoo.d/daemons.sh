# The zoo's system daemons (sourced by scripts/zoo.sh): monitoring agents (Zabbix, Munin),
# printing (CUPS), file and source servers (rsync, git daemon, svnserve) and the ONC RPC
# portmapper (rpcbind). Addresses 127.0.26.N.
# Signatures: crates/portolan-probe/data/signatures/daemons.toml.
#
# Where the wire never tells the software's version (rsync's greeting carries its protocol's
# version, not the program's; svnserve, git daemon and rpcbind say none), the manifest's
# version is `-`; where it never names the product (rpcbind's answer names the RPCBIND
# protocol and its versions), the product is `-` too.

ALL+=(zabbix-agent munin-node cups rsync git-daemon svnserve rpcbind)
PACKAGES+=(zabbix-agent munin-node cups-daemon rsync git subversion rpcbind python3)

up_zabbix-agent() {
  # The agent waits for a request: "ZBXD\x01", an 8-byte length, the item key. Asked
  # `agent.version` by an allowed address (Server=), it answers its version ("6.0.14").
  # Clients on loopback connect from 127.0.0.1 (the kernel's source for 127.0.0.0/8).
  local a=127.0.26.1 d="$DIR/zabbix" p v
  v=$(upstream zabbix-agent)
  mkdir -p "$d"
  chown zabbix: "$d"
  # One port per agent: a process per port.
  for p in 10050 20050; do
    entry zabbix-agent $a $p tcp zabbix-agent Zabbix "$v" -
    cat >"$d/$p.conf" <<EOF
PidFile=$d/$p.pid
LogType=console
Server=127.0.0.1,127.0.26.0/24
ListenIP=$a
ListenPort=$p
EOF
    start zabbix-agent /usr/sbin/zabbix_agentd -f -c "$d/$p.conf"
  done
}

up_munin-node() {
  # Greets "# munin node at HOST"; the command `version` answers "munins node on HOST
  # version: 2.0.73".
  local a=127.0.26.2 d="$DIR/munin" p v
  v=$(upstream munin-node)
  for p in 4949 24949; do entry munin-node $a $p tcp munin Munin "$v" -; done
  mkdir -p "$d"
  # Debian's munin-node.conf, in the foreground, on the zoo's address and both ports
  # (Net::Server takes several `port` lines). Plugins: Debian's /etc/munin/plugins.
  cat >"$d/munin-node.conf" <<EOF
log_level 4
log_file Sys::Syslog
pid_file $d/munin-node.pid
background 0
setsid 0
user root
group root
allow ^127\.0\.0\.1\$
host $a
port 4949
port 24949
EOF
  start munin-node /usr/sbin/munin-node --config "$d/munin-node.conf" --foreground
}

up_cups() {
  # IPP over HTTP: every answer has "Server: CUPS/2.4 IPP/2.1" (major.minor only), and its
  # pages (the home page, error pages) have the full version in the title: "Home - CUPS
  # 2.4.2", "Bad Request - CUPS v2.4.2". (A client on loopback gets 400 for any Host but
  # localhost or 127.0.0.1: cupsd's own guard against DNS rebinding.)
  local a=127.0.26.3 d="$DIR/cups" p v
  v=$(upstream cups-daemon)
  for p in 631 20631; do entry cups $a $p tcp ipp CUPS "$v" -; done
  mkdir -p "$d/root" "$d/state" "$d/cache" "$d/spool/tmp"
  cat >"$d/root/cups-files.conf" <<EOF
ServerRoot $d/root
StateDir $d/state
CacheDir $d/cache
RequestRoot $d/spool
TempDir $d/spool/tmp
ServerKeychain $d/root/ssl
ErrorLog stderr
AccessLog stderr
PageLog stderr
SystemGroup root
User lp
Group lp
EOF
  # Debian's cupsd.conf says WebInterface Yes: what a user gets, and what the zoo serves.
  cat >"$d/root/cupsd.conf" <<EOF
LogLevel warn
Listen $a:631
Listen $a:20631
Browsing No
WebInterface Yes
<Location />
  Order allow,deny
  Allow all
</Location>
EOF
  chown -R root:lp "$d"
  chmod -R g+rwX "$d/state" "$d/cache" "$d/spool"
  start cups /usr/sbin/cupsd -f -c "$d/root/cupsd.conf" -s "$d/root/cups-files.conf"
}

up_rsync() {
  # Greets "@RSYNCD: 32.0 sha512 sha256 sha1 md5 md4": the protocol's version (32), and
  # the digests it offers for module authentication; never the program's version.
  local a=127.0.26.4 d="$DIR/rsync" p
  mkdir -p "$d/pub"
  for p in 873 20873; do
    entry rsync $a $p tcp rsync rsync - -
    cat >"$d/$p.conf" <<EOF
pid file = $d/$p.pid
use chroot = no
[pub]
  path = $d/pub
  read only = yes
EOF
    start rsync /usr/bin/rsync --daemon --no-detach "--config=$d/$p.conf" "--address=$a" "--port=$p"
  done
}

up_git-daemon() {
  # Silent until asked: a pkt-line "git-upload-pack /PATH\0". For a path it does not export
  # it answers "ERR access denied or repository not exported: /PATH" (no version); only a
  # ref advertisement of an exported repository carries "agent=git/2.39.5".
  # /usr/bin/git: Debian's (a /usr/local/bin/git may come first in PATH).
  local a=127.0.26.5 d="$DIR/git" p
  mkdir -p "$d"
  for p in 9418 20418; do
    entry git-daemon $a $p tcp git "git daemon" - -
    start git-daemon /usr/bin/git daemon "--listen=$a" "--port=$p" "--base-path=$d" --reuseaddr
  done
}

up_svnserve() {
  # Greets "( success ( 2 2 ( ) ( edit-pipeline svndiff1 ... ) ) )": protocol versions and
  # capabilities, no program version.
  local a=127.0.26.6 d="$DIR/svn" p
  mkdir -p "$d"
  for p in 3690 23690; do
    entry svnserve $a $p tcp svn Subversion - -
    start svnserve /usr/bin/svnserve -d --foreground "--listen-host=$a" "--listen-port=$p" -r "$d"
  done
}

up_rpcbind() {
  # The portmapper, TCP and UDP: an RPC call to program 100000 with a version it lacks gets
  # PROG_MISMATCH with the versions it has (2-4: portmap v2 and RPCBIND v3, v4). No product
  # or version of the program on the wire.
  #
  # rpcbind has no option for its address or port: it takes the sockets it is handed the way
  # systemd hands them (LISTEN_FDS), made by a small python3 wrapper that then execs it. It
  # runs in a mount namespace of its own, where /run (its lock, its unix socket, its state)
  # is DIR's, and /etc/netconfig is a copy without the IPv6 transports (which it would bind
  # on [::]:111 itself).
  local a=127.0.26.7 d="$DIR/rpcbind" p
  for p in 111 20111; do
    entry rpcbind $a $p tcp rpcbind - - -
    entry rpcbind $a $p udp rpcbind - - -
  done
  mkdir -p "$d/run/rpcbind"
  chown _rpc "$d/run/rpcbind"
  sed -e '/^udp6\|^tcp6/s/ v / - /' /etc/netconfig >"$d/netconfig"
  cat >"$d/listen.py" <<'EOF'
# listen.py ADDR PORT,PORT... CMD...: binds ADDR:PORT for each PORT, TCP then UDP, and execs
# CMD with them as fds 3, 4, ... (LISTEN_FDS, LISTEN_PID: systemd's socket passing).
import os, socket, sys
addr, ports, cmd = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
socks = []
for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
    for p in ports:
        s = socket.socket(socket.AF_INET, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(p)))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        socks.append(s)
# Out of the way first (the sockets may hold 3, 4, ... already), then into place.
for i, s in enumerate(socks):
    os.dup2(s.fileno(), 100 + i)
    s.close()
for i in range(len(socks)):
    os.dup2(100 + i, 3 + i)
    os.close(100 + i)
os.environ["LISTEN_FDS"] = str(len(socks))
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(cmd[0], cmd)
EOF
  start rpcbind unshare --mount --propagation private -- /bin/sh -c \
    'mount --bind "$1/run" /run && mount --bind "$1/netconfig" /etc/netconfig &&
     exec /usr/bin/python3 "$1/listen.py" "$2" 111,20111 /usr/sbin/rpcbind -f' sh "$d" "$a"
}
