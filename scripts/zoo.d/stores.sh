# shellcheck shell=bash
# Data stores and monitoring, on 127.0.25.N: etcd, InfluxDB 1.x, Prometheus, Alertmanager
# (all HTTP APIs written in Go) and ZooKeeper (its own binary protocol, plus the
# four-letter words). Sourced by scripts/zoo.sh (set -euo pipefail, bash).
#
# The HTTP ones tell their version only at a path of their own (etcd's /version,
# Prometheus's and Alertmanager's /api/...), except InfluxDB, which puts it in a header of
# every answer.

ALL+=(etcd influxdb prometheus alertmanager zookeeper)
# zookeeper: the version's truth; libslf4j-java: slf4j-simple, so ZooKeeper logs to its log.
PACKAGES+=(etcd-server influxdb prometheus prometheus-alertmanager zookeeperd zookeeper libslf4j-java)

up_etcd() {
  local a=127.0.25.1 d="$DIR/etcd" p v
  v=$(upstream etcd-server)
  # GET /version answers {"etcdserver":"3.4.23","etcdcluster":"3.4.0"}; GET / is a bare
  # 404 page from Go's net/http.
  for p in 2379 22379; do entry etcd $a $p tcp http etcd "$v" -; done
  # The peer port (not in the manifest: the same HTTP server, for the cluster's members).
  free_or_die etcd $a 2380 tcp
  mkdir -p "$d"
  start etcd /usr/bin/etcd --name zoo --data-dir "$d/data" \
    --listen-client-urls "http://$a:2379,http://$a:22379" --advertise-client-urls "http://$a:2379" \
    --listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
    --initial-cluster "zoo=http://$a:2380" --initial-cluster-state new
}

up_influxdb() {
  local a=127.0.25.2 d="$DIR/influxdb" p v
  v=$(upstream influxdb)
  # Every HTTP answer (GET /ping is 204, GET / a 404) carries "X-Influxdb-Version: 1.6.7~rc0"
  # (Debian's version: the manifest's truth is its upstream part, 1.6.7).
  # One server per port: influxd has one HTTP listener (and one RPC port, for backups).
  for p in 8086 28086; do
    entry influxdb $a $p tcp http InfluxDB "$v" -
    free_or_die influxdb $a $((p + 2)) tcp
    mkdir -p "$d/$p"
    cat >"$d/$p/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "$a:$((p + 2))"
[meta]
  dir = "$d/$p/meta"
[data]
  dir = "$d/$p/data"
  wal-dir = "$d/$p/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "$a:$p"
  log-enabled = false
EOF
    start influxdb /usr/bin/influxd -config "$d/$p/influxdb.conf"
  done
}

up_prometheus() {
  local a=127.0.25.3 d="$DIR/prometheus" p v
  v=$(upstream prometheus)
  # GET / redirects to /graph, whose page is titled "Prometheus Time Series Collection and
  # Processing Server"; GET /api/v1/status/buildinfo answers {"status":"success","data":
  # {"version":"2.42.0+ds",...}}, and /metrics has prometheus_build_info{version="..."}.
  # One server per port: it has one web listener.
  mkdir -p "$d"
  printf 'global:\n  scrape_interval: 1m\n' >"$d/prometheus.yml"
  for p in 9090 29090; do
    entry prometheus $a $p tcp http Prometheus "$v" -
    start prometheus /usr/bin/prometheus --config.file="$d/prometheus.yml" \
      --storage.tsdb.path="$d/$p" --web.listen-address="$a:$p" \
      --web.console.templates=/etc/prometheus/consoles \
      --web.console.libraries=/etc/prometheus/console_libraries
  done
}

up_alertmanager() {
  local a=127.0.25.4 d="$DIR/alertmanager" p v
  v=$(upstream prometheus-alertmanager)
  # GET /api/v2/status answers {"cluster":..,"versionInfo":{"version":"0.25.0",...},...};
  # GET / is its web UI, titled "Alertmanager". One server per port, no cluster port.
  mkdir -p "$d"
  printf 'route:\n  receiver: none\nreceivers:\n  - name: none\n' >"$d/alertmanager.yml"
  for p in 9093 29093; do
    entry alertmanager $a $p tcp http Alertmanager "$v" -
    start alertmanager /usr/bin/prometheus-alertmanager --config.file="$d/alertmanager.yml" \
      --storage.path="$d/$p" --web.listen-address="$a:$p" --cluster.listen-address=
  done
}

up_zookeeper() {
  local a=127.0.25.5 d="$DIR/zookeeper" p v
  v=$(upstream zookeeper)
  # The four-letter word `srvr` (the only one allowed by default) answers
  # "Zookeeper version: 3.8.0-..., built on ...". One JVM per port: a standalone server has
  # one client port. No admin server (Jetty on 8080), a small heap.
  for p in 2181 22181; do
    entry zookeeper $a $p tcp zookeeper ZooKeeper "$v" -
    mkdir -p "$d/$p/data"
    cat >"$d/$p/zoo.cfg" <<EOF
tickTime=2000
dataDir=$d/$p/data
clientPort=$p
clientPortAddress=$a
admin.enableServer=false
EOF
    start zookeeper /usr/bin/java -Xms16m -Xmx64m -XX:TieredStopAtLevel=1 -Xshare:auto \
      -Djava.net.preferIPv4Stack=true -Dzookeeper.jmx.log4j.disable=true \
      -cp /usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar \
      org.apache.zookeeper.server.ZooKeeperServerMain "$d/$p/zoo.cfg"
  done
  # The client port listens before the server serves ("This ZooKeeper instance is not
  # currently serving requests" to srvr, for a moment): wait until srvr tells the version.
  for p in 2181 22181; do zookeeper_serving $a $p; done
}

# zookeeper_serving ADDR PORT: waits (WAIT_SECONDS at most) until srvr on ADDR:PORT answers
# with the version, or fails with the log's tail.
zookeeper_serving() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf srvr >&3 && head -c 18 <&3' _ "$1" "$2" \
    2>/dev/null | grep -q '^Zookeeper version:'; do
    if ((SECONDS >= deadline)); then
      say "zookeeper did not serve on $1:$2 within ${WAIT_SECONDS}s; its log:"
      log_tail zookeeper; exit 2
    fi
    sleep 0.2
  done
}
