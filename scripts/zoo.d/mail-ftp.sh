# shellcheck shell=bash
# Mail and FTP servers, on 127.0.23.N: Postfix and OpenSMTPD (SMTP), ProFTPD and Pure-FTPd
# (FTP), Cyrus (IMAP and POP3). All of them speak first: what names each is its greeting. They all
# conflict with the zoo's exim4, vsftpd or dovecot, so they run unpacked (EXTRACT); their
# libraries are in PACKAGES. Sourced by scripts/zoo.sh (set -euo pipefail, bash).

ALL+=(postfix opensmtpd proftpd pure-ftpd cyrus)
PACKAGES+=(libmemcachedutil2 libpcre2-posix3 libxapian30 libical3 libsasl2-2 libwrap0)
EXTRACT+=(postfix opensmtpd proftpd-core pure-ftpd cyrus-common cyrus-imapd cyrus-pop3d)

up_postfix() {
  # "220 zoo.test ESMTP Postfix (Debian/GNU)": Debian's main.cf banner, no version. STARTTLS
  # with the zoo's certificate (Debian's main.cf offers it with its snakeoil one).
  local a=127.0.23.1 d="$DIR/postfix" r p
  r=$(extracted postfix)
  for p in 25 20025; do entry postfix $a $p tcp smtp Postfix - starttls; done
  mkdir -p "$d/etc" "$d/spool/pid" "$d/spool/public" "$d/spool/private" "$d/data"
  cert
  # smtpd runs as mail_owner and reads the key after it dropped root.
  install -o mail -m 600 "$DIR/tls/key.pem" "$d/key.pem"
  chown mail "$d/spool/public" "$d/spool/private" "$d/data"
  # No postfix user or postdrop group (nothing was installed): the mail user, and groups
  # that differ from default_privs' (postfix refuses the same one twice). The daemons find
  # their libraries in the unpacked root (LD_LIBRARY_PATH, passed on by import_environment).
  cat >"$d/etc/main.cf" <<EOF
compatibility_level = 3.6
smtpd_banner = \$myhostname ESMTP \$mail_name (Debian/GNU)
biff = no
myhostname = zoo.test
inet_interfaces = all
inet_protocols = ipv4
queue_directory = $d/spool
data_directory = $d/data
daemon_directory = $r/usr/lib/postfix/sbin
shlib_directory = $r/usr/lib/postfix
meta_directory = $r/etc/postfix
command_directory = $r/usr/sbin
mail_owner = mail
setgid_group = nogroup
default_privs = daemon
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C LD_LIBRARY_PATH=$r/usr/lib/postfix
maillog_file = $d/maillog
maillog_file_prefixes = $d
alias_maps =
alias_database =
smtpd_relay_restrictions = reject
smtpd_tls_cert_file = $DIR/tls/cert.pem
smtpd_tls_key_file = $d/key.pem
smtpd_tls_security_level = may
EOF
  # inet_interfaces is all, but each smtpd listens on the address its service names.
  cat >"$d/etc/master.cf" <<EOF
$a:25     inet  n       -       n       -       -       smtpd
$a:20025  inet  n       -       n       -       -       smtpd
anvil     unix  -       -       n       -       1       anvil
rewrite   unix  -       -       n       -       -       trivial-rewrite
cleanup   unix  n       -       n       -       0       cleanup
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
  start postfix env LD_LIBRARY_PATH="$r/usr/lib/postfix" "$r/usr/lib/postfix/sbin/master" -d -c "$d/etc"
}

up_opensmtpd() {
  # "220 <hostname> ESMTP OpenSMTPD": no version. No TLS (Debian's smtpd.conf has none).
  local a=127.0.23.2 d="$DIR/opensmtpd" r p
  r=$(extracted opensmtpd)
  for p in 25 20025; do entry opensmtpd $a $p tcp smtp OpenSMTPD - -; done
  mkdir -p "$d/spool" "$d/run" "$d/root"
  cat >"$d/smtpd.conf" <<EOF
listen on $a port 25 hostname zoo.test
listen on $a port 20025 hostname zoo.test
action "relay" relay
match from any for any reject
EOF
  # Its users (opensmtpd, opensmtpq), spool (/var/spool/smtpd), chroot
  # (/var/lib/opensmtpd/empty) and control socket (/run/smtpd.sock) are built in, and
  # nothing was installed to make them: it runs in a mount namespace of its own where
  # /etc/passwd and /etc/group have the two users, and /var/spool, /run and /var/lib are
  # DIR's (the unpacked root is reached through a bind mount made before /var/lib is hidden).
  cp /etc/passwd "$d/passwd"
  cp /etc/group "$d/group"
  printf 'opensmtpd:x:64990:64990::/nonexistent:/usr/sbin/nologin\nopensmtpq:x:64991:64991::/nonexistent:/usr/sbin/nologin\n' >>"$d/passwd"
  printf 'opensmtpd:x:64990:\nopensmtpq:x:64991:\n' >>"$d/group"
  chmod 644 "$d/passwd" "$d/group" "$d/smtpd.conf"
  cat >"$d/run.sh" <<EOF
set -eu
mount --bind $d/passwd /etc/passwd
mount --bind $d/group /etc/group
mount --bind $d/spool /var/spool
mount --bind $d/run /run
mount --bind $r $d/root
mount -t tmpfs -o mode=755 tmpfs /var/lib
mkdir -p /var/lib/opensmtpd/empty
exec $d/root/usr/sbin/smtpd -d -f $d/smtpd.conf
EOF
  start opensmtpd unshare -m --propagation private bash "$d/run.sh"
}

up_proftpd() {
  # "220 ProFTPD Server (Debian) [127.0.23.3]": since 1.3.6 the default ServerIdent names no
  # version ("Debian" is the ServerName of Debian's proftpd.conf). No TLS (mod_tls is not
  # loaded here; Debian's tls.conf has it off).
  local a=127.0.23.3 d="$DIR/proftpd" r p
  r=$(extracted proftpd-core)
  mkdir -p "$d"
  # proftpd binds one port per server: an instance per port.
  for p in 21 20021; do
    entry proftpd $a $p tcp ftp ProFTPD - -
    cat >"$d/$p.conf" <<EOF
ServerName "Debian"
ServerType standalone
UseIPv6 off
DefaultAddress $a
SocketBindTight on
Port $p
User nobody
Group nogroup
PidFile $d/$p.pid
ScoreboardFile $d/$p.scoreboard
DelayTable $d/$p.delay
WtmpLog off
TransferLog none
SystemLog $d/$p.log
UseReverseDNS off
EOF
    start proftpd "$r/usr/sbin/proftpd" -n -c "$d/$p.conf"
  done
}

up_pure-ftpd() {
  # "220---------- Welcome to Pure-FTPd [privsep] [TLS] ----------", then the session's
  # lines (user number, local time, port): no version. AUTH TLS with the zoo's certificate.
  local a=127.0.23.4 d="$DIR/pure-ftpd" r p
  r=$(extracted pure-ftpd)
  mkdir -p "$d"
  cert
  # Its certificate file holds the key and the certificate.
  cat "$DIR/tls/key.pem" "$DIR/tls/cert.pem" >"$d/pure-ftpd.pem"
  chmod 600 "$d/pure-ftpd.pem"
  # One address and port per process (-S): an instance per port. -E: no anonymous login.
  for p in 21 20021; do
    entry pure-ftpd $a $p tcp ftp Pure-FTPd - starttls
    start pure-ftpd "$r/usr/sbin/pure-ftpd" -S "$a,$p" -4 -E -H -Y 1 -2 "$d/pure-ftpd.pem" \
      -g "$d/$p.pid"
  done
}

up_cyrus() {
  # "* OK [CAPABILITY ...] zoo.test Cyrus IMAP 3.6.1-Debian-3.6.1-4+deb12u5 server ready" and
  # "+OK zoo.test Cyrus POP3 3.6.1-Debian-... server ready <...>": the greetings tell the
  # version (serverinfo: on, the default). STARTTLS on 143/20143 and 110/20110 (STLS), TLS
  # first on 993/20993 and 995/20995, with the zoo's certificate.
  local a=127.0.23.5 d="$DIR/cyrus" c i o v p
  c=$(extracted cyrus-common)
  i=$(extracted cyrus-imapd)
  o=$(extracted cyrus-pop3d)
  v=$(extracted_version cyrus-imapd)
  for p in 143 20143; do entry cyrus $a $p tcp imap Cyrus "$v" starttls; done
  for p in 993 20993; do entry cyrus $a $p tcp imap Cyrus "$v" tls; done
  v=$(extracted_version cyrus-pop3d)
  for p in 110 20110; do entry cyrus $a $p tcp pop3 Cyrus "$v" starttls; done
  for p in 995 20995; do entry cyrus $a $p tcp pop3 Cyrus "$v" tls; done
  mkdir -p "$d/lib" "$d/spool" "$d/run/lock" "$d/run/proc" "$d/run/socket"
  cert
  # No cyrus user (nothing was installed): cyrus_user is the mail user, which must read
  # the key.
  install -o mail -m 600 "$DIR/tls/key.pem" "$d/key.pem"
  chown -R mail:mail "$d/lib" "$d/spool" "$d/run"
  cat >"$d/imapd.conf" <<EOF
configdirectory: $d/lib
partition-default: $d/spool
defaultpartition: default
proc_path: $d/run/proc
mboxname_lockpath: $d/run/lock
lmtpsocket: $d/run/socket/lmtp
idlesocket: $d/run/socket/idle
notifysocket: $d/run/socket/notify
servername: zoo.test
cyrus_user: mail
cyrus_group: mail
allowplaintext: yes
sasl_pwcheck_method: auxprop
syslog_prefix: cyrus
master_bind_errors_fatal: yes
tls_server_cert: $DIR/tls/cert.pem
tls_server_key: $d/key.pem
EOF
  # imapd is in cyrus-imapd, pop3d in cyrus-pop3d, master in cyrus-common: the services
  # name their full paths.
  cat >"$d/cyrus.conf" <<EOF
SERVICES {
  imap     cmd="$i/usr/lib/cyrus/bin/imapd -C $d/imapd.conf" listen="$a:143" prefork=0
  imapzoo  cmd="$i/usr/lib/cyrus/bin/imapd -C $d/imapd.conf" listen="$a:20143" prefork=0
  imaps    cmd="$i/usr/lib/cyrus/bin/imapd -s -C $d/imapd.conf" listen="$a:993" prefork=0
  imapszoo cmd="$i/usr/lib/cyrus/bin/imapd -s -C $d/imapd.conf" listen="$a:20993" prefork=0
  pop3     cmd="$o/usr/lib/cyrus/bin/pop3d -C $d/imapd.conf" listen="$a:110" prefork=0
  pop3zoo  cmd="$o/usr/lib/cyrus/bin/pop3d -C $d/imapd.conf" listen="$a:20110" prefork=0
  pop3s    cmd="$o/usr/lib/cyrus/bin/pop3d -s -C $d/imapd.conf" listen="$a:995" prefork=0
  pop3szoo cmd="$o/usr/lib/cyrus/bin/pop3d -s -C $d/imapd.conf" listen="$a:20995" prefork=0
}
EOF
  chmod 644 "$d/imapd.conf" "$d/cyrus.conf"
  # master stays in the foreground unless -d; its libraries are in cyrus-common's root.
  start cyrus env LD_LIBRARY_PATH="$c/usr/lib/x86_64-linux-gnu" "$c/usr/lib/cyrus/bin/master" \
    -C "$d/imapd.conf" -M "$d/cyrus.conf" -p "$d/run/master.pid"
}
