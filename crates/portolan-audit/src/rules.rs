//! What the audit knows about services: which ones must not face a network and how each is
//! bound to loopback, and which carry logins in clear text. Facts about the services'
//! configuration, written for portolan.

/// A service that should never listen where untrusted hosts reach it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sensitive {
    /// Service names (probe or catalog) that mean this service.
    pub names: &'static [&'static str],
    /// Its usual ports, for listeners no probe has named.
    pub ports: &'static [u16],
    /// "database", "cache", ...
    pub kind: &'static str,
    /// How to bind it to loopback (or otherwise close it).
    pub fix: &'static str,
}

pub(crate) const SENSITIVE: &[Sensitive] = &[
    Sensitive { names: &["redis"], ports: &[6379], kind: "cache/database (Redis)", fix: "set `bind 127.0.0.1 -::1` and `protected-mode yes` in /etc/redis/redis.conf and restart redis-server; if other hosts need it, add `requirepass` and firewall the port to them" },
    Sensitive { names: &["memcached", "memcache"], ports: &[11211], kind: "cache (Memcached)", fix: "start memcached with `-l 127.0.0.1 -U 0` (in /etc/memcached.conf: `-l 127.0.0.1`) and restart it" },
    Sensitive { names: &["mysql", "mariadb"], ports: &[3306], kind: "database (MySQL/MariaDB)", fix: "set `bind-address = 127.0.0.1` under [mysqld] (/etc/mysql/mariadb.conf.d/50-server.cnf) and restart the server" },
    Sensitive { names: &["postgresql", "postgres"], ports: &[5432], kind: "database (PostgreSQL)", fix: "set `listen_addresses = 'localhost'` in postgresql.conf and restart PostgreSQL; restrict remote roles in pg_hba.conf" },
    Sensitive { names: &["mongodb", "mongod"], ports: &[27017, 27018, 27019], kind: "database (MongoDB)", fix: "set `net.bindIp: 127.0.0.1` in /etc/mongod.conf, enable `security.authorization`, and restart mongod" },
    Sensitive { names: &["elasticsearch"], ports: &[9200, 9300], kind: "search database (Elasticsearch)", fix: "set `network.host: 127.0.0.1` in elasticsearch.yml and enable security (xpack.security.enabled: true), then restart" },
    Sensitive { names: &["docker"], ports: &[2375], kind: "container admin API (Docker, unauthenticated: root on this host)", fix: "remove `-H tcp://0.0.0.0:2375` from dockerd (daemon.json `hosts`); use the unix socket, or TLS on 2376 with --tlsverify" },
    Sensitive { names: &["kubernetes", "kubelet"], ports: &[10250, 10255], kind: "node admin API (kubelet)", fix: "run the kubelet with `--anonymous-auth=false --authorization-mode=Webhook` (and `--read-only-port=0`), and firewall 10250 to the control plane" },
    Sensitive { names: &["jupyter"], ports: &[8888], kind: "notebook server (Jupyter: runs code)", fix: "start Jupyter with `--ip=127.0.0.1` (c.ServerApp.ip) and reach it through `ssh -L 8888:127.0.0.1:8888 HOST`" },
    Sensitive { names: &["amqp", "rabbitmq"], ports: &[5672, 15672], kind: "message queue (AMQP)", fix: "set `listeners.tcp.default = 127.0.0.1:5672` (RabbitMQ: rabbitmq.conf) and restart the broker" },
    Sensitive { names: &["mqtt"], ports: &[1883], kind: "message queue (MQTT)", fix: "bind the broker to 127.0.0.1 (Mosquitto: `listener 1883 127.0.0.1`) or require TLS and passwords on 8883" },
    Sensitive { names: &["etcd"], ports: &[2379, 2380], kind: "cluster store (etcd)", fix: "set `--listen-client-urls https://127.0.0.1:2379` and client certificate authentication" },
    Sensitive { names: &["zookeeper"], ports: &[2181], kind: "coordination service (ZooKeeper)", fix: "set `clientPortAddress=127.0.0.1` in zoo.cfg and restart ZooKeeper" },
];

/// Login protocols that send passwords in clear text: name, severity weight (true: high).
pub(crate) const CLEARTEXT_LOGIN: &[(&str, bool, &str)] = &[
    ("telnet", true, "stop the telnet server (e.g. `systemctl disable --now inetd`, remove telnetd) and use SSH"),
    ("rlogin", true, "stop rlogind and use SSH"),
    ("rsh", true, "stop rshd and use SSH"),
    ("rexec", true, "stop rexecd and use SSH"),
    ("ftp", false, "require TLS (vsftpd: `ssl_enable=YES`, `force_local_logins_ssl=YES`, `force_local_data_ssl=YES`) or replace FTP with SFTP"),
    ("pop3", false, "serve POP3S on 995 and disable cleartext logins (Dovecot: `ssl = required`, `disable_plaintext_auth = yes`), or bind 110 to 127.0.0.1"),
    ("imap", false, "serve IMAPS on 993 and disable cleartext logins (Dovecot: `ssl = required`, `disable_plaintext_auth = yes`), or bind 143 to 127.0.0.1"),
];

pub(crate) fn sensitive_by_name(name: &str) -> Option<&'static Sensitive> {
    let n = name.to_ascii_lowercase();
    SENSITIVE.iter().find(|s| s.names.contains(&n.as_str()))
}

pub(crate) fn sensitive_by_port(port: u16) -> Option<&'static Sensitive> {
    SENSITIVE.iter().find(|s| s.ports.contains(&port))
}

pub(crate) fn cleartext_login(name: &str) -> Option<(&'static str, bool, &'static str)> {
    let n = name.to_ascii_lowercase();
    CLEARTEXT_LOGIN.iter().copied().find(|(s, _, _)| *s == n)
}
