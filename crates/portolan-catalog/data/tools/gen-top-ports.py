#!/usr/bin/env python3
"""Generate portolan's own top-ports ranking (data/top-ports.tsv).

Method: see data/TOP-PORTS.md.  Inputs: data/notes.toml and
data/iana/service-names-port-numbers.csv.  Everything else is the curated
lists below (portolan's own editorial judgement).  Never derived from
nmap-services.
"""
import csv, os, sys, tomllib
from collections import defaultdict

DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = DATA + "/top-ports.tsv"
MIN = {"tcp": 1500, "udp": 300}

# ---------------------------------------------------------------- inputs
notes = tomllib.load(open(DATA + "/notes.toml", "rb"))["note"]
note_name = {}            # (port, proto) -> service
for n in notes:
    protos = ["tcp", "udp"] if n["proto"] == "tcp+udp" else [n["proto"]]
    for pr in protos:
        assert (n["port"], pr) not in note_name, n
        note_name[(n["port"], pr)] = n["service"].lower()

iana = defaultdict(list)  # (port, proto) -> [names], registry order
with open(DATA + "/iana/service-names-port-numbers.csv", newline="") as f:
    for row in csv.DictReader(f):
        name = row["Service Name"].strip()
        port = row["Port Number"].strip()
        proto = row["Transport Protocol"].strip().lower()
        if not name or not port or proto not in ("tcp", "udp"):
            continue
        a, b = (port.split("-") + [port])[:2] if "-" in port else (port, port)
        for p in range(int(a), int(b) + 1):
            iana[(p, proto)].append(name.lower())

# ---------------------------------------------------------------- tier 1
# Services that dominate public-internet exposure.  Grouped by category, the
# categories in this order; inside a category the order is editorial.
# (port, curated name or None)
T1 = {
 "tcp": [
  # web
  (80, None), (443, None), (8080, None), (8443, None), (8000, None), (8888, None),
  (8081, "http-alt"), (8008, None),
  # remote access
  (22, None), (3389, None), (23, None), (2222, None), (5900, None),
  # mail
  (25, None), (587, None), (465, None), (993, None), (995, None), (143, None), (110, None),
  # dns
  (53, None),
  # file transfer and sharing
  (21, None), (445, None), (139, None), (135, None), (2049, None), (111, None), (873, None),
  # databases and caches
  (3306, None), (5432, None), (1433, None), (27017, None), (6379, None), (1521, None),
  (9200, None), (11211, None),
  # hosting control panels
  (2082, "cpanel"), (2083, "cpanel-ssl"), (2086, "whm"), (2087, "whm-ssl"),
  (2095, "cpanel-webmail"), (2096, "cpanel-webmail-ssl"), (10000, None),
  # devices, CPE, VPN, VoIP, IoT, routing
  (7547, "cwmp"), (1723, None), (5060, None), (8291, None), (1883, None), (179, None),
  (5000, None),
 ],
 "udp": [
  # dns, quic, time
  (53, None), (443, None), (123, None),
  # vpn
  (500, None), (4500, "ipsec-nat-t"), (1194, None), (51820, None),
  # voip and nat traversal
  (5060, None), (3478, None),
  # management
  (161, None), (623, None), (69, None), (514, None),
  # discovery / reflection surfaces reported by open-service scans
  (1900, None), (5353, None), (137, None), (3702, None), (10001, None), (11211, None),
  (389, None), (111, None), (1434, None), (19, None),
 ],
}

# ---------------------------------------------------------------- tier 2
# Every note port not already in tier 1, grouped by how commonly the
# service is deployed; groups in this order, editorial order inside a group.
T2 = {
 "tcp": [
  # directory, authentication, Windows management
  88, 389, 636, 464, 3268, 3269, 5985, 5986, 749, 49,
  # databases, caches, search
  5984, 9042, 9300, 7474, 7687, 8086, 8123, 26379, 7000,
  # queues and messaging
  5672, 5671, 15672, 9092, 2181, 8883, 4222, 61616, 8161, 4369,
  # containers and orchestration
  2375, 2376, 2377, 2379, 2380, 6443, 10250, 10255, 10257, 10259, 8001, 4646, 7946, 9443,
  # monitoring, logging, tracing
  3000, 9090, 9093, 9091, 5601, 3100, 10050, 10051, 5666, 5044, 9600, 4317, 4318,
  9411, 14268, 16686, 8089, 9997, 24224, 6514,
  # configuration management, secrets, service discovery, CI agents
  8200, 8500, 8300, 8301, 8600, 8140, 4505, 4506, 50000,
  # dev servers, notebooks, debuggers
  9000, 9001, 4200, 5173, 4000, 4173, 4321, 1313, 6006, 8088, 4040, 8265, 11434,
  7860, 5005, 9229, 9222, 5555, 4444,
  # proxies and application servers
  3128, 8009, 7001, 1080,
  # VPN, remote desktop, router management
  1194, 5938, 6000, 3478, 8728,
  # LAN file sharing, printing, storage
  631, 9100, 515, 548, 3260, 902, 20, 990, 989, 22000, 8384,
  # mail, chat, voice, collaboration, code hosting
  24, 4190, 5222, 5269, 5061, 6667, 6697, 853, 9418, 3690, 119, 563, 43,
  # media, home, games, p2p
  32400, 554, 25565, 27015, 6881,
  # industrial control
  502, 102, 44818,
  # legacy and rarely needed
  1099, 9050, 113, 79, 512, 513, 514, 7, 19, 427, 5355,
 ],
 "udp": [
  # LAN infrastructure
  67, 68, 138, 5355, 631, 427,
  # directory and authentication
  88, 464, 1812, 1813, 749, 135,
  # file sharing
  2049,
  # VPN and remote desktop
  1701, 3389, 5938,
  # overlays, orchestration, service discovery
  4789, 8472, 7946, 8301, 8600,
  # monitoring and logging
  162, 8125, 6831, 24224,
  # media, games, sync, p2p
  9987, 19132, 27015, 6881, 22000,
  # IoT and industrial control
  5683, 47808, 44818,
  # routing and legacy
  520, 177, 7,
 ],
}

# ---------------------------------------------------------------- tier 4
# (a) widespread products, (b) other products in real use: each port with the
# name of the product/service that puts it there.  Ascending port inside
# each bucket.  Ports already ranked higher are dropped by deduplication.
T4A = {"tcp": {
 1311: "dell-openmanage", 1352: "lotusnote", 1494: "citrix-ica", 1512: "wins",
 1688: "ms-kms", 1720: "h323", 1801: "msmq", 1880: "node-red", 1935: "rtmp",
 2000: "cisco-sccp", 2179: "vmrdp", 2323: "telnet-alt", 2381: "hp-smh-https",
 2525: "smtp-alt", 2598: "citrix-cgp", 3050: "firebird", 3283: "apple-remote-desktop",
 3300: "ceph-mon", 3343: "ms-cluster", 3372: "msdtc", 4045: "lockd", 4433: "https-alt",
 4786: "cisco-smart-install", 4840: "opc-ua", 4848: "glassfish-admin", 4899: "radmin",
 5038: "asterisk-ami", 5223: "apple-push", 5228: "google-push", 5349: "turns",
 5357: "wsdapi", 5433: "postgres-alt", 5480: "vmware-vami", 5722: "dfsr",
 5800: "vnc-http", 5988: "wbem-http", 5989: "wbem-https", 6080: "novnc",
 6432: "pgbouncer", 6556: "checkmk-agent", 7070: "anydesk", 7077: "spark-master",
 7080: "http-alt", 7199: "cassandra-jmx", 7443: "https-alt", 7680: "wudo",
 8118: "privoxy", 8126: "datadog-apm", 8172: "msdeploy", 8222: "nats-monitor",
 8333: "bitcoin", 8428: "victoriametrics", 8530: "wsus", 8531: "wsus-ssl",
 8545: "ethereum-rpc", 8554: "rtsp-alt", 8529: "arangodb", 8787: "rstudio",
 8834: "nessus", 8983: "solr", 9182: "windows-exporter", 9389: "adws",
 9870: "hdfs-namenode-ui", 9990: "wildfly-admin", 9993: "wildfly-admin-ssl",
 9999: "admin-alt", 10443: "https-alt", 12201: "gelf", 16992: "intel-amt",
 16993: "intel-amt-ssl", 17500: "dropbox-lansync", 18080: "http-alt",
 19999: "netdata", 20000: "usermin", 26257: "cockroachdb", 2888: "zookeeper-peer",
 3888: "zookeeper-election", 6333: "qdrant", 6650: "pulsar", 33060: "mysqlx",
 37777: "dahua-dvr", 47001: "winrm-listener", 62078: "iphone-sync", 1514: "wazuh-agent",
 2003: "graphite", 2077: "cpanel-webdisk", 2078: "cpanel-webdisk-ssl", 3200: "sap-dispatcher",
 3299: "saprouter", 1414: "ibm-mq", 2483: "oracle-ttc", 2484: "oracle-ttc-ssl",
 4567: "galera", 6789: "ceph-mon-v1", 7777: "oracle-http",
},
"udp": {
 1645: "radius-legacy", 1646: "radacct-legacy", 1985: "hsrp", 2055: "netflow",
 3391: "rd-gateway", 3544: "teredo", 4569: "iax2", 5004: "rtp", 5005: "rtcp",
 5246: "capwap-control", 5247: "capwap-data", 5351: "nat-pmp", 6343: "sflow",
 9993: "zerotier", 9996: "netflow-alt", 12201: "gelf", 17500: "dropbox-lansync",
 21027: "syncthing-discovery", 33434: "traceroute", 41641: "tailscale", 1604: "citrix-icabrowser",
 1718: "h323gatedisc", 1719: "h323gatestat", 2427: "mgcp-gateway", 2727: "mgcp-callagent",
 3283: "apple-remote-desktop",
}}
T4B = {"tcp": {
 1158: "oracle-dbconsole", 1241: "nessus-legacy", 1270: "scom", 1344: "icap",
 1434: "ms-sql-m", 1500: "ibm-tsm", 1515: "wazuh-enroll", 1522: "oracle-alt",
 1527: "derby", 1583: "pervasive", 1630: "oracle-cman", 1755: "mms",
 2004: "graphite-pickle", 2019: "caddy-admin", 2100: "oracle-xdb-ftp", 2103: "msmq-rpc",
 2105: "msmq-rpc-2", 2107: "msmq-mgmt", 2121: "ftp-alt", 2301: "compaq-insight",
 2368: "ghost", 2424: "orientdb", 2480: "orientdb-http", 2601: "zebra",
 2602: "ripd", 2603: "ripngd", 2604: "ospfd", 2605: "bgpd", 2628: "dict",
 2638: "sybase-anywhere", 2701: "sccm-remote-control", 2809: "corba-iiop", 2812: "monit",
 2947: "gpsd", 3052: "apc-powerchute", 3307: "mysql-alt", 3310: "clamav",
 3351: "pervasive-sql", 3390: "rdp-alt", 3483: "slimserver", 3493: "nut",
 3551: "apcupsd", 3600: "sap-msg", 3632: "distcc", 3659: "apple-sasl",
 3689: "daap", 3724: "blizwow", 3780: "nexpose", 3784: "ventrilo", 3790: "metasploit",
 3872: "oracle-oem-agent", 3873: "jboss-remoting", 4001: "ipfs", 4100: "sybase-ase",
 4150: "nsqd", 4151: "nsqd-http", 4242: "opentsdb", 4568: "galera-ist",
 4647: "nomad-rpc", 4648: "nomad-serf", 4662: "emule", 4730: "gearman",
 4739: "ipfix", 4822: "guacd", 4873: "verdaccio", 4949: "munin",
 5037: "adb-server", 5050: "pgadmin", 5055: "overseerr", 5080: "sip-alt",
 5190: "aim", 5280: "xmpp-bosh", 5298: "presence", 5358: "wsdapi-s",
 5473: "calico-typha", 5500: "vnc-listen", 5554: "android-emulator",
 5560: "isqlplus", 5631: "pcanywhere", 5667: "nsca", 5678: "n8n",
 5718: "dpm", 5801: "vnc-http-1", 5987: "wbem-rmi", 6053: "esphome",
 6060: "http-alt", 6082: "varnish-admin", 6112: "battle-net", 6129: "dameware",
 6222: "nats-cluster", 6334: "qdrant-grpc", 6346: "gnutella", 6543: "mythtv",
 6557: "livestatus", 6566: "sane", 6600: "mpd", 6633: "openflow-legacy",
 6651: "pulsar-tls", 6653: "openflow", 6690: "synology-drive", 6783: "weave",
 6800: "ceph-osd", 6969: "bittorrent-tracker", 6984: "couchdb-https",
 7071: "zimbra-admin", 7100: "xfs", 7180: "cloudera-manager", 7400: "rtps-dds",
 7480: "ceph-rgw", 7676: "imqbrokerd", 7700: "meilisearch", 7778: "http-alt",
 7878: "radarr", 7890: "clash", 7937: "nsrexecd", 7938: "lgtomapper",
 7999: "bitbucket-ssh", 8100: "xprint", 8108: "typesense", 8112: "deluge",
 8201: "vault-cluster", 8243: "synapse-https", 8280: "synapse-http",
 8302: "consul-serf-wan", 8332: "bitcoin-rpc", 8388: "shadowsocks",
 8400: "commvault", 8404: "haproxy-stats", 8501: "consul-https", 8502: "consul-grpc",
 8546: "ethereum-ws", 8581: "homebridge-ui", 8649: "ganglia", 8686: "lidarr",
 8729: "routeros-api-ssl", 8761: "eureka", 8786: "dask-scheduler", 8800: "http-alt",
 8843: "https-alt", 8920: "jellyfin-https", 8989: "sonarr", 8998: "livy",
 9101: "bacula-dir", 9102: "bacula-fd", 9103: "bacula-sd", 9104: "mysqld-exporter",
 9113: "nginx-exporter", 9115: "blackbox-exporter", 9121: "redis-exporter",
 9150: "tor-browser-socks", 9153: "coredns-metrics", 9160: "cassandra-thrift",
 9187: "postgres-exporter", 9306: "sphinx-mysql", 9312: "sphinx-api", 9323: "docker-metrics",
 9345: "rke2-supervisor", 9392: "openvas", 9444: "https-alt", 9464: "otel-prometheus",
 9696: "prowlarr", 9735: "lightning", 9800: "webdav", 9864: "hdfs-datanode-ui",
 9876: "karma", 9887: "splunk-replication", 9901: "envoy-admin", 9944: "polkadot-ws",
 9981: "tvheadend", 9982: "tvheadend-htsp", 9998: "admin-alt", 10011: "teamspeak-query",
 10024: "amavis", 10025: "postfix-reinject", 10080: "amanda", 10243: "wmp-sharing",
 10256: "kube-proxy", 10933: "octopus-tentacle", 11210: "couchbase-data", 11334: "rspamd",
 11371: "hkp", 13720: "bprd", 13721: "bpdbm", 13724: "vnetd", 13782: "bpcd",
 14250: "jaeger-grpc", 15010: "istiod", 15021: "istio-health", 15692: "rabbitmq-prometheus",
 16000: "hbase-master", 16010: "hbase-master-ui", 16020: "hbase-regionserver",
 16379: "redis-cluster-bus", 16443: "microk8s-api", 16509: "libvirt", 16514: "libvirt-tls",
 17988: "ilo-virtual-media", 17990: "ilo-remote-console", 18081: "monero-rpc",
 18091: "couchbase-ssl", 19000: "expo", 19006: "expo-web", 19530: "milvus",
 19888: "yarn-jobhistory", 20048: "mountd", 21115: "rustdesk-nat", 21116: "rustdesk-id",
 21117: "rustdesk-relay", 21118: "rustdesk-web-id", 21119: "rustdesk-web-relay",
 22222: "ssh-alt", 24007: "glusterd", 24008: "glusterd-rdma", 25575: "minecraft-rcon",
 25672: "rabbitmq-dist", 26656: "tendermint-p2p", 26657: "tendermint-rpc",
 27018: "mongodb-shard", 27019: "mongodb-config", 28015: "rethinkdb", 28017: "mongodb-http",
 29092: "kafka-alt", 29418: "gerrit-ssh", 30000: "nodeport", 30033: "teamspeak-files",
 30303: "ethereum-p2p", 32469: "plex-dlna", 34567: "xmeye-dvr", 35357: "keystone-admin",
 35729: "livereload", 41794: "crestron-cip", 47984: "gamestream-https",
 47989: "gamestream-http", 47990: "sunshine-web", 50013: "sap-start", 50051: "grpc",
 50070: "hdfs-namenode-legacy", 50075: "hdfs-datanode-legacy", 50090: "hdfs-secondary",
 51413: "transmission-peer", 51827: "homebridge", 55000: "wazuh-api",
 55553: "metasploit-rpc", 55680: "otlp-legacy", 61208: "glances", 61613: "stomp",
 61614: "stomp-ssl", 64738: "mumble", 1400: "sonos", 1526: "oracle-alt-2",
 2302: "arma", 3799: "radius-dynauth", 1098: "rmiactivation",
 1863: "msnp", 8111: "teamcity", 9898: "pgpool-pcp", 8191: "splunk-kvstore",
 12345: "grafana-alloy", 27036: "steam-streaming",
},
"udp": {
 1947: "sentinel-hasp", 2123: "gtp-c", 2152: "gtp-u", 2222: "enip-io", 2302: "arma",
 2746: "checkpoint-udp-encap", 3222: "glbp", 3671: "knx", 3784: "ventrilo",
 4172: "pcoip", 5093: "sentinel-lm", 5632: "pcanywhere-stat", 5684: "coaps",
 6771: "bittorrent-lsd", 6832: "jaeger-binary", 7777: "game-alt", 8302: "consul-serf-wan",
 17185: "vxworks-wdbrpc", 20000: "dnp3", 26000: "quake", 27960: "quake3",
 28015: "rust-game", 34197: "factorio", 34962: "profinet-rt", 34963: "profinet-rtm",
 34964: "profinet-cm", 64738: "mumble", 3799: "radius-dynauth",
}}

# (c) alternative / dev port families: (first, last, fallback label).  Family
# order as listed, ascending inside a family.  IANA name when it has one,
# otherwise the family label (label forced where the IANA name is misleading).
FAMILIES = {
 "tcp": [
  (8000, 8099, "http-alt", False), (8180, 8181, "http-alt", False),
  (8443, 8449, "https-alt", False), (9000, 9099, "app-alt", False),
  (3000, 3010, "dev-server", False), (5000, 5010, "dev-server", False),
  (10000, 10010, "admin-alt", False), (49152, 49160, "msrpc-dynamic", True),
  (1024, 1030, "rpc-dynamic-legacy", True), (4440, 4449, "https-alt", False),
  (5900, 5910, "vnc", False), (6000, 6010, "x11", False), (6660, 6669, "irc", False),
  (7000, 7010, "app-alt", False), (8880, 8890, "http-alt", False),
  (27015, 27030, "steam", False), (6881, 6889, "bittorrent", False),
  (32768, 32775, "rpc-dynamic", True),
 ],
 "udp": [
  (27015, 27030, "steam", False), (6881, 6889, "bittorrent", False),
 ],
}

# ---------------------------------------------------------------- build
def name_for(port, proto, curated=None, label=None, force_label=False):
    if (port, proto) in note_name:
        return note_name[(port, proto)]
    if curated:
        return curated
    if force_label and label:
        return label
    if iana.get((port, proto)):
        return iana[(port, proto)][0]
    if label:
        return label
    raise SystemExit(f"no name for {port}/{proto}")

def build(proto):
    rows, seen = [], set()
    def add(port, tier, name):
        assert 1 <= port <= 65535, port
        if port in seen:
            return
        seen.add(port)
        name = name.lower().replace("\t", " ").strip()
        assert name and not any(c.isspace() for c in name), (port, name)
        rows.append((port, tier, name))

    # tier 1
    t1 = [p for p, _ in T1[proto]]
    assert len(t1) == len(set(t1)), f"dup in T1 {proto}"
    for p, cur in T1[proto]:
        add(p, 1, name_for(p, proto, cur))
    # tier 2: exactly the notes ports not in tier 1
    t2 = T2[proto]
    assert len(t2) == len(set(t2)), f"dup in T2 {proto}: {[p for p in t2 if t2.count(p) > 1]}"
    want = {p for (p, pr) in note_name if pr == proto} - set(t1)
    missing, extra = want - set(t2), set(t2) - want
    assert not missing and not extra, f"T2 {proto}: missing {sorted(missing)} extra {sorted(extra)}"
    for p in t2:
        add(p, 2, note_name[(p, proto)])
    # tier 3: widespread products (registered/dynamic ports found in most networks)
    for p in sorted(T4A[proto]):
        add(p, 3, name_for(p, proto, T4A[proto][p]))
    # tier 4: IANA well-known with a name for this proto, ascending
    for p in range(1, 1024):
        if iana.get((p, proto)):
            add(p, 4, name_for(p, proto))
    # tier 5: other products in real use, then port families
    for p in sorted(T4B[proto]):
        add(p, 5, name_for(p, proto, T4B[proto][p]))
    for a, b, label, force in FAMILIES[proto]:
        for p in range(a, b + 1):
            add(p, 5, name_for(p, proto, None, label, force))
    assert len(rows) >= MIN[proto], f"{proto}: only {len(rows)} rows"
    return rows

with open(OUT, "w", newline="") as f:
    f.write("rank\tport\tproto\ttier\tservice\n")
    for proto in ("tcp", "udp"):
        for i, (p, t, n) in enumerate(build(proto), 1):
            f.write(f"{i}\t{p}\t{proto}\t{t}\t{n}\n")
print("wrote", OUT)
