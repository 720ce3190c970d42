//! The ports of a scan, as `-p` takes them: `22,80,8000-8100`, `-` (all of 1-65535),
//! open-ended ranges (`-1024`, `60000-`), and protocol prefixes (`U:53,T:80,443`: a prefix
//! applies to its item and the ones after it). Port 0 cannot be scanned with connect().

use crate::error::{echo, ParseError};
use crate::{Port, PortRange, PortSpec};

/// TCP and UDP ports to scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPorts {
    pub tcp: PortSpec,
    pub udp: PortSpec,
}

fn bad(input: &str, reason: &'static str) -> ParseError {
    ParseError::InvalidRange {
        input: echo(input),
        reason,
    }
}

fn bound(s: &str, whole: &str) -> Result<u16, ParseError> {
    let p: Port = s.parse()?;
    if p.get() == 0 {
        return Err(bad(whole, "port 0 cannot be scanned"));
    }
    Ok(p.get())
}

impl ScanPorts {
    pub fn parse(s: &str) -> Result<ScanPorts, ParseError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty { what: "port list" });
        }
        let (mut tcp, mut udp) = (Vec::new(), Vec::new());
        let mut udp_now = false;
        for raw in t.split(',') {
            let mut item = raw.trim();
            if let Some(rest) = item.strip_prefix("T:").or_else(|| item.strip_prefix("t:")) {
                udp_now = false;
                item = rest;
            } else if let Some(rest) = item.strip_prefix("U:").or_else(|| item.strip_prefix("u:")) {
                udp_now = true;
                item = rest;
            } else if item.len() > 1 && item.as_bytes()[1] == b':' {
                return Err(bad(raw, "only T: (TCP) and U: (UDP) prefixes are known"));
            }
            if item.is_empty() {
                return Err(bad(t, "the list has an empty item"));
            }
            let range = match item.split_once('-') {
                None => {
                    let p = bound(item, raw)?;
                    PortRange::single(Port::new(p))
                }
                Some((a, b)) => {
                    let lo = if a.trim().is_empty() {
                        1
                    } else {
                        bound(a, raw)?
                    };
                    let hi = if b.trim().is_empty() {
                        65535
                    } else {
                        bound(b, raw)?
                    };
                    PortRange::new(Port::new(lo), Port::new(hi))
                        .ok_or_else(|| bad(raw, "the start is greater than the end"))?
                }
            };
            if udp_now {
                udp.push(range);
            } else {
                tcp.push(range);
            }
        }
        Ok(ScanPorts {
            tcp: PortSpec::from_ranges(tcp),
            udp: PortSpec::from_ranges(udp),
        })
    }

    /// Every TCP port, 1-65535.
    pub fn all_tcp() -> ScanPorts {
        ScanPorts {
            tcp: PortSpec::from_ranges(vec![PortRange::from_bounds(Port::new(1), Port::MAX)]),
            udp: PortSpec::from_ranges(Vec::new()),
        }
    }

    pub fn len(&self) -> u32 {
        self.tcp.len() + self.udp.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tcp.is_empty() && self.udp.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let p = ScanPorts::parse("22,80,8000-8100").unwrap();
        assert_eq!(p.tcp.len(), 103);
        assert!(p.udp.is_empty());
        assert_eq!(ScanPorts::parse("-").unwrap().tcp.len(), 65535);
        assert_eq!(ScanPorts::parse("-1024").unwrap().tcp.len(), 1024);
        assert_eq!(ScanPorts::parse("60000-").unwrap().tcp.len(), 5536);
        let m = ScanPorts::parse("U:53,161,T:80,443").unwrap();
        assert_eq!(m.udp.to_string(), "53,161");
        assert_eq!(m.tcp.to_string(), "80,443");
    }

    #[test]
    fn hostile() {
        for bad in [
            "", "0", "70000", "1-0", "S:80", "80,,81", "x", "U:", "\x1b", "5-3", "1--2",
        ] {
            let e = ScanPorts::parse(bad);
            assert!(e.is_err(), "{bad:?}");
            assert!(!e.unwrap_err().to_string().contains('\x1b'));
        }
    }
}
