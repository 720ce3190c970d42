//! This machine's port-related kernel settings.

use portolan_core::{Port, PortRange};

/// `net.ipv4.ip_unprivileged_port_start`, `ip_local_port_range`, `ip_local_reserved_ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSysctls {
    /// Ports below this need CAP_NET_BIND_SERVICE to bind.
    pub unprivileged_port_start: u16,
    /// The ephemeral range, used for outgoing connections and port-0 binds.
    pub ephemeral: PortRange,
    /// Ports excluded from ephemeral allocation.
    pub reserved: Vec<PortRange>,
}

/// Linux's default `ip_local_port_range`.
const DEFAULT_EPHEMERAL: PortRange = PortRange::from_bounds(Port::new(32768), Port::new(60999));

fn read(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}")).ok()
}

impl PortSysctls {
    /// Reads the live values; kernel defaults where a file is missing (old kernels).
    pub fn read() -> Self {
        let unprivileged_port_start = read("ip_unprivileged_port_start")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1024);
        let ephemeral = read("ip_local_port_range")
            .and_then(|s| {
                let mut it = s.split_ascii_whitespace().map(|x| x.parse::<u16>().ok());
                let (a, b) = (it.next()??, it.next()??);
                PortRange::new(Port::new(a), Port::new(b))
            })
            .unwrap_or(DEFAULT_EPHEMERAL);
        let reserved = read("ip_local_reserved_ports")
            .map(|s| s.trim().split(',').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default();
        PortSysctls {
            unprivileged_port_start,
            ephemeral,
            reserved,
        }
    }

    pub fn needs_privilege(&self, p: Port) -> bool {
        p.get() != 0 && p.get() < self.unprivileged_port_start
    }

    pub fn is_ephemeral(&self, p: Port) -> bool {
        self.ephemeral.contains(p)
    }

    pub fn is_reserved(&self, p: Port) -> bool {
        self.reserved.iter().any(|r| r.contains(p))
    }
}
