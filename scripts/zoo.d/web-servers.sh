# The zoo's web servers and HTTP proxies (sourced by scripts/zoo.sh): each on its own
# address of 127.0.20.0/24, on its default port and on an unusual one (2xxxx).
#
# Services are named as nmap names them: `http` for a web server, `http-proxy` for a proxy
# or cache whose own answer names it (Squid, Varnish, HAProxy, tinyproxy, Traffic Server),
# forward or reverse.
ALL+=(lighttpd caddy h2o haproxy varnish squid tinyproxy trafficserver)
PACKAGES+=(lighttpd caddy h2o haproxy varnish squid python3 tinyproxy-bin trafficserver)

up_lighttpd() {
  # "Server: lighttpd/1.4.69" on every answer (server.tag's default).
  local a=127.0.20.1 d="$DIR/lighttpd" p v
  v=$(upstream lighttpd)
  for p in 80 20080; do entry lighttpd $a $p tcp http lighttpd "$v" -; done
  mkdir -p "$d/www"
  echo hi >"$d/www/index.html"
  cat >"$d/lighttpd.conf" <<EOF
server.document-root = "$d/www"
server.bind = "$a"
server.port = 80
\$SERVER["socket"] == "$a:20080" { }
server.username = "www-data"
server.groupname = "www-data"
index-file.names = ("index.html")
EOF
  start lighttpd /usr/sbin/lighttpd -D -f "$d/lighttpd.conf"
}

up_caddy() {
  # "Server: Caddy": Caddy 2 never tells its version on the wire.
  local a=127.0.20.2 d="$DIR/caddy" p
  for p in 80 20080; do entry caddy $a $p tcp http Caddy - -; done
  mkdir -p "$d/www" "$d/data" "$d/config"
  echo hi >"$d/www/index.html"
  # No admin endpoint (it would take localhost:2019), no automatic HTTPS; its state in DIR.
  cat >"$d/Caddyfile" <<EOF
{
  admin off
  auto_https off
}
http://$a:80, http://$a:20080 {
  bind $a
  root * $d/www
  file_server
}
EOF
  start caddy env HOME="$d" XDG_DATA_HOME="$d/data" XDG_CONFIG_HOME="$d/config" \
    /usr/bin/caddy run --config "$d/Caddyfile" --adapter caddyfile
}

up_h2o() {
  # "server: h2o/2.2.5" (lower-case header names, as h2o writes them).
  local a=127.0.20.3 d="$DIR/h2o" p v
  v=$(upstream h2o)
  for p in 80 20080; do entry h2o $a $p tcp http h2o "$v" -; done
  mkdir -p "$d/www"
  echo hi >"$d/www/index.html"
  cat >"$d/h2o.conf" <<EOF
user: nobody
listen:
  host: $a
  port: 80
listen:
  host: $a
  port: 20080
hosts:
  default:
    paths:
      /:
        file.dir: $d/www
EOF
  start h2o /usr/bin/h2o -c "$d/h2o.conf"
}

up_haproxy() {
  # HAProxy sends no Server header: in front of a backend with no server it answers its own
  # 503 page ("No server is available to handle this request."), which names no version.
  local a=127.0.20.4 d="$DIR/haproxy" p
  for p in 80 20080; do entry haproxy $a $p tcp http-proxy HAProxy - -; done
  mkdir -p "$d"
  cat >"$d/haproxy.cfg" <<EOF
global
  pidfile $d/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 10s
  timeout server 10s
frontend zoo
  bind $a:80
  bind $a:20080
  default_backend nothing
backend nothing
EOF
  start haproxy /usr/sbin/haproxy -db -W -f "$d/haproxy.cfg"
}

up_varnish() {
  # varnishd in front of a backend (Python's http.server on 20086, not in the manifest),
  # whose answers keep their "Server: SimpleHTTP/..." header; Varnish adds "X-Varnish: N" and
  # "Via: 1.1 varnish (Varnish/7.1)": the minor release only, so the version is `-`.
  local a=127.0.20.5 d="$DIR/varnish" p
  for p in 6081 26081; do entry varnish $a $p tcp http-proxy Varnish - -; done
  free_or_die varnish $a 20086 tcp
  mkdir -p "$d/www" "$d/work"
  echo hi >"$d/www/index.html"
  cat >"$d/default.vcl" <<EOF
vcl 4.1;
backend default {
  .host = "$a";
  .port = "20086";
}
EOF
  start varnish /usr/bin/python3 -m http.server --bind $a --directory "$d/www" 20086
  start varnish /usr/sbin/varnishd -F -n "$d/work" -f "$d/default.vcl" -a "$a:6081" -a "$a:26081" \
    -T none -s malloc,32m
}

up_squid() {
  # Squid answers a request that is not for a proxy (GET /) with its error page, "Server:
  # squid/5.7" and "X-Squid-Error: ERR_INVALID_URL".
  local a=127.0.20.6 d="$DIR/squid" p v
  v=$(upstream squid)
  for p in 3128 23128; do entry squid $a $p tcp http-proxy Squid "$v" -; done
  mkdir -p "$d"
  chown proxy: "$d"
  cat >"$d/squid.conf" <<EOF
http_port $a:3128
http_port $a:23128
visible_hostname zoo.test
pid_filename $d/squid.pid
cache_log $d/cache.log
access_log none
cache_store_log none
coredump_dir $d
netdb_filename none
cache_effective_user proxy
http_access deny all
# Stop at once on SIGTERM (the zoo gives 5 s before SIGKILL).
shutdown_lifetime 0 seconds
EOF
  start squid /usr/sbin/squid -N -f "$d/squid.conf"
}

up_tinyproxy() {
  # A forward proxy asked for "/" answers its error page with "Server: tinyproxy/1.11.1".
  local a=127.0.20.7 d="$DIR/tinyproxy" p v
  v=$(upstream tinyproxy-bin)
  mkdir -p "$d"
  # One process per port: tinyproxy listens on one.
  for p in 8888 28888; do
    entry tinyproxy $a $p tcp http-proxy tinyproxy "$v" -
    cat >"$d/$p.conf" <<EOF
User nobody
Group nogroup
Port $p
Listen $a
Timeout 60
MaxClients 20
Allow 127.0.0.0/8
LogLevel Warning
EOF
    start tinyproxy /usr/bin/tinyproxy -d -c "$d/$p.conf"
  done
}

up_trafficserver() {
  # Apache Traffic Server as a reverse proxy with no remap rule: "404 Not Found on
  # Accelerator" with "Server: ATS/9.2.9". The truth is the program's own version: Debian's
  # bookworm package is named 9.2.5+ds-0+deb12u4 but was updated to 9.2.9 by a patch
  # (changelog of 9.2.5+ds-0+deb12u2), and 9.2.9 is what it runs and says.
  local a=127.0.20.8 d="$DIR/trafficserver" p v
  v=$(/usr/bin/traffic_server -V 2>/dev/null | awk '$1 == "Traffic" && $2 == "Server" {print $3; exit}')
  for p in 8080 28080; do entry trafficserver $a $p tcp http-proxy "Apache Traffic Server" "$v" -; done
  mkdir -p "$d/etc" "$d/log" "$d/run" "$d/cache" "$d/var"
  # Debian's configuration files, with our records.config and storage.config; everything
  # it writes goes under $d (runroot.yaml says where).
  cp -r /etc/trafficserver/. "$d/etc/"
  cat >"$d/etc/records.config" <<EOF
CONFIG proxy.config.http.server_ports STRING 8080:ip-in=$a 28080:ip-in=$a
CONFIG proxy.config.admin.user_id STRING trafficserver
CONFIG proxy.config.url_remap.remap_required INT 1
CONFIG proxy.config.reverse_proxy.enabled INT 1
CONFIG proxy.config.log.logging_enabled INT 0
CONFIG proxy.config.exec_thread.autoconfig INT 0
CONFIG proxy.config.exec_thread.limit INT 1
CONFIG proxy.config.task_threads INT 1
CONFIG proxy.config.accept_threads INT 1
CONFIG proxy.config.cache.ram_cache.size INT 1048576
EOF
  echo "$d/cache 64M" >"$d/etc/storage.config"
  cat >"$d/runroot.yaml" <<EOF
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/bin
sysconfdir: $d/etc
datadir: /usr/share/trafficserver
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
localstatedir: $d/var
runtimedir: $d/run
logdir: $d/log
cachedir: $d/cache
EOF
  chown -R trafficserver: "$d"
  start trafficserver /usr/bin/traffic_server "--run-root=$d/runroot.yaml"
}
