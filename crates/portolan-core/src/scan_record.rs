//! One port of a scan: what `portolan scan --json`/`--jsonl` write and `portolan audit
//! --from-scan` reads back. One type for both sides, so the file format cannot drift.
//!
//! The probe engine's TLS and HTTP details are type parameters: core knows nothing of
//! them (the probe engine depends on core, not the other way round). The scanner writes
//! `ScanRecord<TlsInfo, HttpInfo>`; a reader that does not need them uses the defaults,
//! which skip whatever is there (`serde::de::IgnoredAny`), and one that does can read them
//! as any `Deserialize` type (a `serde_json::Value`, say).

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize};

use crate::escape::for_terminal;
use crate::Protocol;

/// The state of a scanned port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Open,
    Closed,
    Filtered,
    /// No answer to a UDP probe, after every retry: an open port that ignored the probe's
    /// payload, or a firewall that dropped it (nmap's `open|filtered`).
    #[serde(rename = "open|filtered")]
    OpenFiltered,
}

impl PortState {
    pub const fn as_str(self) -> &'static str {
        match self {
            PortState::Open => "open",
            PortState::Closed => "closed",
            PortState::Filtered => "filtered",
            PortState::OpenFiltered => "open|filtered",
        }
    }
}

impl fmt::Display for PortState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a port's service name came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceSource {
    /// Service detection heard the service say what it is.
    Probe,
    /// Only the port number's registered name: a guess (nmap prints it as `http?`).
    PortTable,
    /// An answer that resembles the protocol without proving it (a signature marked
    /// `weak`): heard, but a guess all the same, shown as `name?`.
    Weak,
}

impl ServiceSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            ServiceSource::Probe => "probe",
            ServiceSource::PortTable => "port-table",
            ServiceSource::Weak => "weak",
        }
    }

    /// Whether the name is a guess (the port table's, or a weak match's), not a detection.
    pub const fn is_guess(self) -> bool {
        matches!(self, ServiceSource::PortTable | ServiceSource::Weak)
    }
}

/// One scanned port. Key names are the JSON format's; `service` and `hostname` are always
/// written (null when unknown), the details of service detection only when present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanRecord<Tls = IgnoredAny, Http = IgnoredAny> {
    #[serde(deserialize_with = "host_field")]
    pub host: IpAddr,
    #[serde(deserialize_with = "port_field")]
    pub port: u16,
    pub proto: Protocol,
    pub state: PortState,
    /// Why: `syn-ack`, `conn-refused`, `no-response`, `host-unreach`, `net-unreach`,
    /// `admin-prohibited`, `local-error`.
    #[serde(default)]
    pub reason: Cow<'static, str>,
    /// Time to the answer, for answered probes, in milliseconds (two decimals).
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// The answer's IP TTL (raw scans of IPv4 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u8>,
    /// What answered (with service detection), else the port's registered name; none with
    /// `-n` or for an unregistered port.
    #[serde(default)]
    pub service: Option<Cow<'static, str>>,
    /// Where `service` came from; absent when there is no service name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_source: Option<ServiceSource>,
    /// The name the user gave for the host, else its reverse name.
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpe: Option<String>,
    /// The first bytes the service sent, escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
    /// The TLS handshake, when the port speaks TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// HTTP details (status, title, frameworks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Http>,
}

impl<T, H> ScanRecord<T, H> {
    /// A record with no service details.
    pub fn new(host: IpAddr, port: u16, proto: Protocol, state: PortState) -> Self {
        ScanRecord {
            host,
            port,
            proto,
            state,
            reason: Cow::Borrowed(""),
            rtt_ms: None,
            ttl: None,
            service: None,
            service_source: None,
            hostname: None,
            product: None,
            version: None,
            info: None,
            cpe: None,
            banner: None,
            tls: None,
            http: None,
        }
    }

    pub fn is_open(&self) -> bool {
        self.state == PortState::Open
    }

    /// The service name as a person should read it: a name from the port table or from a
    /// weak match gets a `?` when `detection` ran (it was not proven, only guessed).
    pub fn service_guess_marked(&self, detection: bool) -> Option<String> {
        let s = self.service.as_deref()?;
        Some(
            if detection && self.service_source.is_some_and(ServiceSource::is_guess) {
                format!("{s}?")
            } else {
                s.to_owned()
            },
        )
    }
}

/// The columns of the CSV form, in order.
pub const SCAN_CSV_HEADER: [&str; 11] = [
    "host",
    "port",
    "proto",
    "state",
    "reason",
    "rtt_ms",
    "service",
    "hostname",
    "product",
    "version",
    "service_source",
];

impl<T, H> ScanRecord<T, H> {
    /// The record's CSV fields, in [`SCAN_CSV_HEADER`]'s order (not yet escaped).
    pub fn csv_fields(&self) -> [String; 11] {
        [
            self.host.to_string(),
            self.port.to_string(),
            self.proto.as_str().into(),
            self.state.as_str().into(),
            self.reason.to_string(),
            self.rtt_ms.map(|v| v.to_string()).unwrap_or_default(),
            self.service.as_deref().unwrap_or_default().into(),
            self.hostname.clone().unwrap_or_default(),
            self.product.clone().unwrap_or_default(),
            self.version.clone().unwrap_or_default(),
            self.service_source
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
        ]
    }
}

fn host_field<'de, D: Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    let s = Cow::<'de, str>::deserialize(d)?;
    s.parse().map_err(|_| {
        D::Error::custom(format!(
            "`host` = \"{}\" is not an IP address",
            for_terminal(&s)
        ))
    })
}

fn port_field<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let n = u64::deserialize(d)?;
    u16::try_from(n)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| D::Error::custom(format!("`port` = {n} is not a port (1 to 65535)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_source_words() {
        let mut r: ScanRecord<(), ()> =
            ScanRecord::new([127, 0, 0, 1].into(), 80, Protocol::Tcp, PortState::Open);
        r.service = Some("http".into());
        r.service_source = Some(ServiceSource::PortTable);
        assert_eq!(r.service_guess_marked(true).as_deref(), Some("http?"));
        assert_eq!(r.service_guess_marked(false).as_deref(), Some("http"));
        r.service_source = Some(ServiceSource::Probe);
        assert_eq!(r.service_guess_marked(true).as_deref(), Some("http"));
        assert_eq!(r.csv_fields()[10], "probe");
    }
}
