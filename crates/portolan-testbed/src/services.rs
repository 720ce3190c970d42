//! The real UDP services of the target namespace ([`UdpService`]): one dnsmasq, one snmpd
//! and one ntpd per testbed at most, each bound to the addresses of the hosts that asked
//! for it, with its configuration, pid file and log in a private directory
//! (`$TMPDIR/portolan-testbed-<testbed id>`). They run as `ip netns exec <target ns>
//! <program>` in the foreground, so the child process is the daemon itself; stopping (or
//! dropping) kills them and removes the directory. Should the testbed process die without
//! its Drop, removing the namespace kills what runs inside, and the next testbed removes the
//! directory ([`remove_stale_dirs`]).
//!
//! The echo "service" is no process: the listener thread answers it (see `listen`).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::spec::{HostSpec, UdpService, DNS_ANSWER, DNS_ZONE};
use crate::{netns, TestbedError};

/// How long a service may take to bind its port (a deadline, not a sleep).
const READY_WITHIN: Duration = Duration::from_secs(15);
/// Prefix of the services' directories under the temporary directory.
const DIR_PREFIX: &str = "portolan-testbed-";
/// The sysDescr snmpd reports.
pub const SNMP_SYS_DESCR: &str = "portolan-testbed snmpd";

/// The running service processes and their directory.
#[derive(Debug, Default)]
pub(crate) struct Services {
    running: Vec<(UdpService, Child)>,
    dir: Option<PathBuf>,
}

/// Finds `program` on PATH or in the sbin directories (root's PATH may lack them).
pub(crate) fn locate(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The end of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(8)..].join(" | ");
    if tail.is_empty() {
        "(empty log)".to_owned()
    } else {
        tail
    }
}

/// Parses one address column of /proc/net/udp or udp6 (`0100007F:0035`, the address in
/// the kernel's byte order as 32-bit words printed in host order).
fn parse_proc_addr(field: &str) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_ne_bytes);
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut b = [0u8; 16];
            for (i, chunk) in b.chunks_exact_mut(4).enumerate() {
                chunk.copy_from_slice(&word(addr.get(i * 8..i * 8 + 8)?)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The local addresses of the UDP sockets listed in /proc/net/udp(6) text.
fn parse_proc_udp(text: &str) -> HashSet<SocketAddr> {
    text.lines()
        .skip(1)
        .filter_map(|l| parse_proc_addr(l.split_whitespace().nth(1)?))
        .collect()
}

/// The UDP sockets bound in the calling thread's network namespace.
fn bound_udp() -> HashSet<SocketAddr> {
    let mut out = HashSet::new();
    for f in ["udp", "udp6"] {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/thread-self/net/{f}")) {
            out.extend(parse_proc_udp(&t));
        }
    }
    out
}

/// The configuration file (if any) and arguments of `service` for `addrs` in `dir`.
fn command_line(
    service: UdpService,
    addrs: &[IpAddr],
    dir: &Path,
) -> (Option<String>, Vec<String>) {
    let d = dir.display();
    match service {
        UdpService::Dns => {
            let mut args: Vec<String> = [
                "-k",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--log-facility=-",
            ]
            .map(str::to_owned)
            .to_vec();
            args.push(format!("--port={}", service.port()));
            args.push(format!("--address=/{DNS_ZONE}/{DNS_ANSWER}"));
            args.push(format!("--pid-file={d}/dnsmasq.pid"));
            args.extend(addrs.iter().map(|a| format!("--listen-address={a}")));
            (None, args)
        }
        UdpService::Snmp => {
            let port = service.port();
            let agents: Vec<String> = addrs
                .iter()
                .map(|a| match a {
                    IpAddr::V4(a) => format!("udp:{a}:{port}"),
                    IpAddr::V6(a) => format!("udp6:[{a}]:{port}"),
                })
                .collect();
            let conf = format!(
                "agentAddress {}\nrocommunity public default\nrocommunity6 public default\n\
                 sysDescr {SNMP_SYS_DESCR}\nsysLocation testbed\nsysContact nobody@x.test\n",
                agents.join(",")
            );
            let args = [
                "-f".to_owned(),
                "-Lo".to_owned(),
                "-C".to_owned(),
                // No SMUX: it would listen on TCP 199 of every address.
                "-I".to_owned(),
                "-smux".to_owned(),
                "-c".to_owned(),
                format!("{d}/snmpd.conf"),
                "-p".to_owned(),
                format!("{d}/snmpd.pid"),
            ];
            (Some(conf), args.to_vec())
        }
        UdpService::Ntp => {
            // No servers and no clock discipline: ntpd only answers, unsynchronised.
            let mut conf = format!(
                "interface ignore wildcard\ninterface ignore all\ndisable ntp\ndisable kernel\n\
                 logfile {d}/ntpd.log\nstatsdir {d}/\n"
            );
            for a in addrs {
                let _ = writeln!(conf, "interface listen {a}");
            }
            let args = [
                "-n".to_owned(),
                "-c".to_owned(),
                format!("{d}/ntpd.conf"),
                "-p".to_owned(),
                format!("{d}/ntpd.pid"),
            ];
            (Some(conf), args.to_vec())
        }
        UdpService::Echo => (None, Vec::new()),
    }
}

/// The directory of testbed `id`'s services.
fn dir_of(id: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{DIR_PREFIX}{id}"))
}

/// Removes the services' directory of testbed `id`, if any (`down`, stale namespaces).
pub(crate) fn remove_dir_of(id: &str) {
    let _ = std::fs::remove_dir_all(dir_of(id));
}

/// Removes the service directories of testbeds whose process no longer exists.
pub(crate) fn remove_stale_dirs() {
    let Ok(d) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in d.filter_map(Result::ok) {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|id| id.strip_prefix(netns::PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Services {
    /// Starts every service that an up host asks for, in namespace `ns`, and waits until
    /// each has bound all its addresses. On error, what started is stopped again.
    pub(crate) fn start(ns: &str, id: &str, hosts: &[HostSpec]) -> Result<Self, TestbedError> {
        let mut me = Self::default();
        for service in UdpService::ALL {
            let Some((program, package)) = service.program() else {
                continue;
            };
            let addrs: Vec<IpAddr> = hosts
                .iter()
                .filter(|h| h.up && h.udp_services.contains(&service))
                .flat_map(|h| std::iter::once(IpAddr::V4(h.v4)).chain(h.v6.map(IpAddr::V6)))
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let path = locate(program).ok_or(TestbedError::MissingTool { program, package })?;
            let dir = if let Some(d) = &me.dir {
                d.clone()
            } else {
                let d = dir_of(id);
                let _ = std::fs::remove_dir_all(&d);
                std::fs::create_dir(&d)
                    .map_err(|e| TestbedError::io(format!("create {}", d.display()), e))?;
                me.dir = Some(d.clone());
                d
            };
            let (conf, args) = command_line(service, &addrs, &dir);
            if let Some(conf) = conf {
                let file = dir.join(format!("{program}.conf"));
                std::fs::write(&file, conf)
                    .map_err(|e| TestbedError::io(format!("write {}", file.display()), e))?;
            }
            let log_path = dir.join(format!("{program}.out"));
            let log = File::create(&log_path)
                .map_err(|e| TestbedError::io(format!("create {}", log_path.display()), e))?;
            let log2 = log
                .try_clone()
                .map_err(|e| TestbedError::io(format!("open {}", log_path.display()), e))?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns])
                .arg(&path)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            if service == UdpService::Snmp {
                cmd.env("SNMP_PERSISTENT_DIR", dir.join("snmp"));
            }
            let child = cmd
                .spawn()
                .map_err(|e| TestbedError::io(format!("run {}", path.display()), e))?;
            me.running.push((service, child));
            let want: Vec<SocketAddr> = addrs
                .iter()
                .map(|&a| SocketAddr::new(a, service.port()))
                .collect();
            me.wait_ready(ns, service, program, &want, &dir)?;
        }
        Ok(me)
    }

    /// Waits until the last started service has bound every address in `want`.
    fn wait_ready(
        &mut self,
        ns: &str,
        service: UdpService,
        program: &'static str,
        want: &[SocketAddr],
        dir: &Path,
    ) -> Result<(), TestbedError> {
        let fail = |reason: String| TestbedError::Service {
            service: service.name(),
            program,
            reason,
        };
        let logs = || {
            let mut s = log_tail(&dir.join(format!("{program}.out")));
            if service == UdpService::Ntp {
                s.push_str(" | ");
                s.push_str(&log_tail(&dir.join("ntpd.log")));
            }
            s
        };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some((_, child)) = self.running.last_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(fail(format!("exited ({status}): {}", logs())));
                }
            }
            let bound = netns::in_netns(ns, bound_udp)?;
            let missing: Vec<&SocketAddr> = want.iter().filter(|a| !bound.contains(a)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(fail(format!(
                    "{missing:?} not bound within {READY_WITHIN:?}: {}",
                    logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process ids of the running services.
    pub(crate) fn pids(&self) -> Vec<(UdpService, u32)> {
        self.running.iter().map(|(s, c)| (*s, c.id())).collect()
    }

    /// Kills every service and removes the directory; idempotent.
    pub(crate) fn stop(&mut self) {
        for (_, mut child) in self.running.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let addrs: Vec<IpAddr> = vec![
            "198.18.200.1".parse().unwrap(),
            "2001:2:0:c8::1".parse().unwrap(),
        ];
        let dir = Path::new("/tmp/d");
        let (conf, args) = command_line(UdpService::Dns, &addrs, dir);
        assert!(conf.is_none());
        for want in [
            "-k",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            "--address=/x.test/198.18.9.9",
            "--listen-address=198.18.200.1",
            "--listen-address=2001:2:0:c8::1",
            "--pid-file=/tmp/d/dnsmasq.pid",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        let (conf, args) = command_line(UdpService::Snmp, &addrs, dir);
        let conf = conf.unwrap();
        assert!(
            conf.contains("agentAddress udp:198.18.200.1:161,udp6:[2001:2:0:c8::1]:161\n"),
            "{conf}"
        );
        assert!(conf.contains("rocommunity public default"), "{conf}");
        assert!(args.windows(2).any(|w| w == ["-I", "-smux"]), "{args:?}");
        assert!(
            args.windows(2).any(|w| w == ["-c", "/tmp/d/snmpd.conf"]),
            "{args:?}"
        );
        let (conf, args) = command_line(UdpService::Ntp, &addrs, dir);
        let conf = conf.unwrap();
        assert!(conf.contains("interface ignore all\n"), "{conf}");
        assert!(conf.contains("interface listen 2001:2:0:c8::1\n"), "{conf}");
        assert!(
            conf.contains("disable ntp\n") && !conf.contains("server"),
            "{conf}"
        );
        assert_eq!(args[0], "-n");
        assert!(
            args.windows(2).any(|w| w == ["-c", "/tmp/d/ntpd.conf"]),
            "{args:?}"
        );
    }

    #[test]
    fn proc_net_udp() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                  \x20 1: 32C812C6:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
                  garbage\n";
        let got = parse_proc_udp(v4);
        if cfg!(target_endian = "little") {
            assert!(
                got.contains(&"198.18.200.50:53".parse().unwrap()),
                "{got:?}"
            );
        }
        let v6 = "  sl  local_address                         remote_address  st\n\
                  \x20 0: 02000120C80000000000000050000000:007B 00000000000000000000000000000000:0000 07\n";
        let got = parse_proc_udp(v6);
        if cfg!(target_endian = "little") {
            assert!(
                got.contains(&"[2001:2:0:c8::50]:123".parse().unwrap()),
                "{got:?}"
            );
        }
        assert!(parse_proc_addr("zz:1").is_none());
        assert!(parse_proc_addr("0100007F").is_none());
        assert!(parse_proc_addr("0100007F:zz").is_none());
        assert!(parse_proc_addr("ééééééé:0035").is_none());
    }
}
