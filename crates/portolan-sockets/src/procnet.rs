//! The `/proc/net/{tcp,tcp6,udp,udp6}` fallback, for kernels or sandboxes without
//! sock_diag. The parser is public so it can be fuzzed: these files are kernel output, but a
//! parser that panics on a surprise would take the whole inventory down with it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use portolan_core::{Port, Protocol, SocketState};

use crate::entry::{Family, SocketEntry, SocketSource};
use crate::SocketsError;

/// Reads socket tables from a procfs `net` directory.
#[derive(Debug, Clone)]
pub struct ProcNet {
    dir: PathBuf,
}

impl ProcNet {
    /// This process's network namespace: `/proc/self/net`.
    pub fn system() -> Self {
        ProcNet {
            dir: PathBuf::from("/proc/self/net"),
        }
    }
}

impl SocketSource for ProcNet {
    fn dump(
        &self,
        proto: Protocol,
        family: Family,
        states: u32,
        _port: Option<Port>,
    ) -> Result<Vec<SocketEntry>, SocketsError> {
        let name = match (proto, family) {
            (Protocol::Tcp, Family::Ipv4) => "tcp",
            (Protocol::Tcp, Family::Ipv6) => "tcp6",
            (Protocol::Udp, Family::Ipv4) => "udp",
            (Protocol::Udp, Family::Ipv6) => "udp6",
            _ => return Ok(Vec::new()),
        };
        let path = self.dir.join(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // No IPv6 in this kernel: no IPv6 sockets, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && family == Family::Ipv6 => {
                return Ok(Vec::new())
            }
            Err(source) => return Err(SocketsError::Read { path, source }),
        };
        let mut out = Vec::new();
        // The kernel writes these tables a buffer at a time, walking its hash table again
        // from a position for each read: a socket opened or closed between two reads can
        // shift the walk so one socket is written twice. Keep the first of each.
        let mut seen = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            // The state is the fourth field: skip unwanted lines before parsing the rest
            // (a line whose state does not parse goes on to `parse_line`, which reports it).
            if let Some(st) = line
                .split_ascii_whitespace()
                .nth(3)
                .and_then(|f| u8::from_str_radix(f, 16).ok())
            {
                if st < 32 && states & (1 << st) == 0 {
                    continue;
                }
            }
            let entry = parse_line(proto, family, line).map_err(|reason| SocketsError::Parse {
                path: path.clone(),
                line: i + 1,
                reason,
            })?;
            if states & (1 << entry.state.kernel_code()) != 0
                && seen.insert((entry.local, entry.remote, entry.inode))
            {
                out.push(entry);
            }
        }
        Ok(out)
    }
}

/// Parses one data line of `/proc/net/tcp`-style tables.
pub fn parse_line(proto: Protocol, family: Family, line: &str) -> Result<SocketEntry, String> {
    let mut f = line.split_ascii_whitespace();
    let mut next = |what: &str| f.next().ok_or_else(|| format!("missing {what} field"));
    let _slot = next("slot")?;
    let local = parse_endpoint(family, next("local address")?)?;
    let remote = parse_endpoint(family, next("remote address")?)?;
    let st = u8::from_str_radix(next("state")?, 16).map_err(|e| format!("bad state: {e}"))?;
    let state = SocketState::from_kernel(proto, st).ok_or_else(|| format!("unknown state {st}"))?;
    let queues = next("queues")?;
    let (tx, rx) = queues.split_once(':').ok_or("bad queues field")?;
    let send_q = u32::from_str_radix(tx, 16).map_err(|e| format!("bad tx queue: {e}"))?;
    let recv_q = u32::from_str_radix(rx, 16).map_err(|e| format!("bad rx queue: {e}"))?;
    let _timer = next("timer")?;
    let _retr = next("retransmits")?;
    let uid = next("uid")?
        .parse::<u32>()
        .map_err(|e| format!("bad uid: {e}"))?;
    let _timeout = next("timeout")?;
    let inode = next("inode")?
        .parse::<u64>()
        .map_err(|e| format!("bad inode: {e}"))?;
    let remote = (!remote.ip().is_unspecified() || remote.port() != 0).then_some(remote);
    Ok(SocketEntry {
        proto,
        family,
        local,
        remote,
        state,
        recv_q,
        send_q,
        uid,
        inode,
        cgroup_id: None,
        v6only: None,
        interface: 0,
        pids: Vec::new(),
        tcp: None,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6). The kernel prints each 32-bit
/// word of the address as a native-endian integer, so the words are converted back with
/// native byte order.
fn parse_endpoint(family: Family, s: &str) -> Result<SocketAddr, String> {
    let (addr, port) = s
        .split_once(':')
        .ok_or_else(|| format!("bad endpoint {s:?}"))?;
    let port = u16::from_str_radix(port, 16).map_err(|e| format!("bad port in {s:?}: {e}"))?;
    let word = |i: usize| -> Result<[u8; 4], String> {
        let hex = addr
            .get(i * 8..i * 8 + 8)
            .ok_or_else(|| format!("short address {addr:?}"))?;
        u32::from_str_radix(hex, 16)
            .map(u32::to_ne_bytes)
            .map_err(|e| format!("bad address {addr:?}: {e}"))
    };
    let ip = match family {
        Family::Ipv4 if addr.len() == 8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        Family::Ipv6 if addr.len() == 32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(format!("address {addr:?} has the wrong length")),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ipv4_listener() {
        let l = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        let e = parse_line(Protocol::Tcp, Family::Ipv4, l).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(e.local, "127.0.0.1:8080".parse().unwrap());
        }
        assert_eq!(e.state, SocketState::Listen);
        assert_eq!((e.uid, e.inode), (1000, 4242));
        assert_eq!(e.remote, None);
    }

    #[test]
    fn parses_ipv6_udp() {
        let l = "  1: 00000000000000000000000001000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0";
        let e = parse_line(Protocol::Udp, Family::Ipv6, l).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(e.local, "[::1]:53".parse().unwrap());
        }
        assert_eq!(e.state, SocketState::Unconn);
    }

    #[test]
    fn a_socket_written_twice_is_listed_once() {
        let dir = std::env::temp_dir().join(format!("portolan-procnet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        let a = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0";
        let b = "   1: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 100 0 0 10 0";
        // The walk shifted: the same socket again under another slot number.
        let a_again = a.replacen("   0:", "   2:", 1);
        // TIME-WAIT mini-sockets share inode 0 and differ by their peer.
        let tw1 = "   3: 0100007F:1F92 0100007F:D000 06 00000000:00000000 03:00000100 00000000     0        0 0 3 0000000000000000";
        let tw2 = "   4: 0100007F:1F92 0100007F:D001 06 00000000:00000000 03:00000100 00000000     0        0 0 3 0000000000000000";
        let text = [head, a, b, &a_again, tw1, tw2].join("\n") + "\n";
        std::fs::write(dir.join("tcp"), text).unwrap();
        let src = ProcNet { dir: dir.clone() };
        let got = src
            .dump(Protocol::Tcp, Family::Ipv4, u32::MAX, None)
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let inodes: Vec<u64> = got.iter().map(|e| e.inode).collect();
        assert_eq!(inodes, [4242, 4243, 0, 0], "{got:#?}");
    }

    #[test]
    fn hostile_lines_are_errors_not_panics() {
        for l in [
            "",
            "0:",
            "0: zz:zz",
            "0: 0100007F:1F90 00000000:0000 FF 0:0 0:0 0 0 0 1",
            "0: 0100007F:FFFFF 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "0: 0100007F 00000000:0000 0A 0:0 0:0 0 0 0 1",
            "0: 0100007F:1F90 00000000:0000 0A 00000000 0:0 0 0 0 1",
            "0: 0100007F:1F90 00000000:0000 0A 0:0 0:0 0 -1 0 1",
            "0: ÿÿÿÿÿÿÿÿ:1F90 00000000:0000 0A 0:0 0:0 0 0 0 1",
        ] {
            assert!(parse_line(Protocol::Tcp, Family::Ipv4, l).is_err(), "{l:?}");
        }
    }
}
