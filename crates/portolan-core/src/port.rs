use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{echo, ParseError};

/// A transport-layer port number. Port 0 is representable (IANA lists it as reserved, and
/// binding it asks the kernel for any free port), so the full `u16` range is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Port(u16);

impl Port {
    pub const MIN: Port = Port(0);
    pub const MAX: Port = Port(u16::MAX);

    pub const fn new(n: u16) -> Self {
        Port(n)
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    /// The IANA class of this port number.
    pub const fn class(self) -> RangeClass {
        match self.0 {
            0..=1023 => RangeClass::WellKnown,
            1024..=49151 => RangeClass::Registered,
            _ => RangeClass::Dynamic,
        }
    }
}

impl From<u16> for Port {
    fn from(n: u16) -> Self {
        Port(n)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Port {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty { what: "port" });
        }
        if !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::InvalidPort { input: echo(t) });
        }
        // All digits: the only failure left is overflow. Leading zeros are accepted ("0080").
        t.parse::<u16>()
            .map(Port)
            .map_err(|_| ParseError::PortOutOfRange { input: echo(t) })
    }
}

/// The three classes of RFC 6335: well-known (system) 0-1023, registered (user) 1024-49151,
/// dynamic (private/ephemeral) 49152-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RangeClass {
    WellKnown,
    Registered,
    Dynamic,
}

impl RangeClass {
    pub const fn bounds(self) -> (u16, u16) {
        match self {
            RangeClass::WellKnown => (0, 1023),
            RangeClass::Registered => (1024, 49151),
            RangeClass::Dynamic => (49152, 65535),
        }
    }

    pub const fn label(self) -> &'static str {
        match self {
            RangeClass::WellKnown => "well-known",
            RangeClass::Registered => "registered",
            RangeClass::Dynamic => "dynamic/private",
        }
    }
}

impl fmt::Display for RangeClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An inclusive range of ports, `start <= end` guaranteed by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    start: Port,
    end: Port,
}

impl PortRange {
    /// Builds a range; `None` when `start > end`.
    pub fn new(start: Port, end: Port) -> Option<Self> {
        (start <= end).then_some(PortRange { start, end })
    }

    /// A range from known-good constants; `start` and `end` are swapped if needed.
    pub const fn from_bounds(a: Port, b: Port) -> Self {
        if a.0 <= b.0 {
            PortRange { start: a, end: b }
        } else {
            PortRange { start: b, end: a }
        }
    }

    pub const fn single(p: Port) -> Self {
        PortRange { start: p, end: p }
    }

    pub const fn start(self) -> Port {
        self.start
    }

    pub const fn end(self) -> Port {
        self.end
    }

    pub fn contains(self, p: Port) -> bool {
        self.start <= p && p <= self.end
    }

    /// Number of ports in the range (1..=65536).
    pub fn len(self) -> u32 {
        u32::from(self.end.0) - u32::from(self.start.0) + 1
    }

    /// A range is never empty; provided for clippy's `len_without_is_empty`.
    pub fn is_empty(self) -> bool {
        false
    }

    pub fn iter(self) -> impl Iterator<Item = Port> {
        (self.start.0..=self.end.0).map(Port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(ParseError::Empty { what: "port range" });
        }
        let Some((a, b)) = t.split_once('-') else {
            return t.parse().map(PortRange::single);
        };
        let bad = |reason| ParseError::InvalidRange {
            input: echo(t),
            reason,
        };
        if a.trim().is_empty() {
            return Err(bad("the range has no start (write e.g. 1-1024)"));
        }
        if b.trim().is_empty() {
            return Err(bad("the range has no end (write e.g. 1024-65535)"));
        }
        let start: Port = a.parse()?;
        let end: Port = b.parse()?;
        PortRange::new(start, end).ok_or_else(|| bad("the start is greater than the end"))
    }
}

/// A set of ports as a person writes it: `22`, `22,80,443`, `8000-8100`, `1-1024,8080`.
/// Stored as sorted, merged ranges, so membership is a binary search and iteration never
/// repeats a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortSpec {
    ranges: Vec<PortRange>,
}

impl PortSpec {
    pub fn from_ranges(mut ranges: Vec<PortRange>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(r.start.0) <= u32::from(last.end.0) + 1 => {
                    if r.end > last.end {
                        last.end = r.end;
                    }
                }
                _ => merged.push(r),
            }
        }
        PortSpec { ranges: merged }
    }

    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    pub fn contains(&self, p: Port) -> bool {
        self.ranges
            .binary_search_by(|r| {
                if r.end < p {
                    std::cmp::Ordering::Less
                } else if r.start > p {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    }

    /// Total number of distinct ports.
    pub fn len(&self) -> u32 {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Port> + '_ {
        self.ranges.iter().flat_map(|r| r.iter())
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for PortSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(ParseError::Empty { what: "port list" });
        }
        let mut ranges = Vec::new();
        for part in s.split(',') {
            if part.trim().is_empty() {
                return Err(ParseError::InvalidRange {
                    input: echo(s.trim()),
                    reason: "the list has an empty item (two commas in a row, or a trailing comma)",
                });
            }
            ranges.push(part.parse()?);
        }
        Ok(PortSpec::from_ranges(ranges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        assert_eq!("443".parse::<Port>().unwrap().get(), 443);
        assert_eq!(" 0080 ".parse::<Port>().unwrap().get(), 80);
        assert_eq!("65535".parse::<Port>().unwrap(), Port::MAX);
    }

    #[test]
    fn hostile_ports_are_rejected_with_reason() {
        for (input, needle) in [
            ("70000", "out of range"),
            ("99999999999999999999999", "out of range"),
            ("-5", "invalid port"),
            ("+5", "invalid port"),
            ("0x50", "invalid port"),
            ("", "empty"),
            ("8 0", "invalid port"),
            ("٣", "invalid port"),
            ("80\x1b[2J", "invalid port"),
        ] {
            let err = input.parse::<Port>().unwrap_err().to_string();
            assert!(err.contains(needle), "{input:?}: {err}");
            assert!(!err.contains('\x1b'), "escape leaked: {err:?}");
        }
    }

    #[test]
    fn ranges_parse_and_reject() {
        let r: PortRange = "6000-6063".parse().unwrap();
        assert_eq!((r.start().get(), r.end().get(), r.len()), (6000, 6063, 64));
        assert_eq!("22".parse::<PortRange>().unwrap().len(), 1);
        assert!("1-"
            .parse::<PortRange>()
            .unwrap_err()
            .to_string()
            .contains("no end"));
        assert!("-1"
            .parse::<PortRange>()
            .unwrap_err()
            .to_string()
            .contains("no start"));
        assert!("9-1"
            .parse::<PortRange>()
            .unwrap_err()
            .to_string()
            .contains("greater"));
        assert!("1-2-3".parse::<PortRange>().is_err());
        assert!("1-70000".parse::<PortRange>().is_err());
        assert_eq!("0-65535".parse::<PortRange>().unwrap().len(), 65536);
    }

    #[test]
    fn spec_merges_and_searches() {
        let s: PortSpec = "80,22,20-25,443,444,1-3".parse().unwrap();
        assert_eq!(s.to_string(), "1-3,20-25,80,443-444");
        assert!(s.contains(Port::new(22)) && s.contains(Port::new(444)));
        assert!(!s.contains(Port::new(4)) && !s.contains(Port::new(445)));
        assert_eq!(s.len(), 3 + 6 + 1 + 2);
        assert!("22,,80".parse::<PortSpec>().is_err());
        assert!("22,".parse::<PortSpec>().is_err());
        assert!(" ".parse::<PortSpec>().is_err());
    }

    #[test]
    fn classes() {
        assert_eq!(Port::new(1023).class(), RangeClass::WellKnown);
        assert_eq!(Port::new(1024).class(), RangeClass::Registered);
        assert_eq!(Port::new(49152).class(), RangeClass::Dynamic);
    }

    #[test]
    fn long_hostile_input_is_cut_in_errors() {
        let long = "9".repeat(10_000);
        let err = long.parse::<Port>().unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
