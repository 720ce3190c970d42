//! TLS on any port: a handshake that reports what was negotiated and the certificate the
//! server showed (never trusted, only described), and a stream to probe again inside.
//!
//! The certificate chain is accepted whatever it is (a probe describes, it does not
//! authenticate), but the handshake signatures are still verified with the provider's
//! algorithms, so the certificate described is one whose key the server really holds.
//! SNI is sent only for a host name the user gave, never for an address.
//!
//! Every read is bounded by a deadline ([`Guarded`]), so a server that says nothing, stalls
//! halfway through a handshake, sends garbage or never stops sending cannot hold a probe
//! past its limits.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use portolan_core::civil::rfc3339;
use portolan_core::escape::for_terminal;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion, SignatureScheme,
    StreamOwned,
};
use serde::Serialize;
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Error, X509Name};
use x509_parser::public_key::PublicKey;

/// What a TLS handshake told. Every string is escaped (it came off the wire).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// "TLSv1.3", "TLSv1.2".
    pub version: String,
    /// The negotiated cipher suite, by its IANA name.
    pub cipher: String,
    /// The protocol chosen by ALPN ("h2", "http/1.1"), if any.
    pub alpn: Option<String>,
    /// How TLS was reached: `None` when the port speaks TLS at once, else the protocol
    /// whose upgrade command was used ("smtp", "imap", "pop3", "ftp", "postgresql", ...).
    pub starttls: Option<String>,
    /// The server's (leaf) certificate.
    pub cert: Option<CertInfo>,
    /// How many certificates the server sent (leaf and intermediates).
    pub chain_len: usize,
}

/// A certificate, described.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// RFC 4514 form: "CN=example.org,O=Example".
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses of the subjectAltName extension.
    pub sans: Vec<String>,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    pub self_signed: bool,
    pub expired: bool,
    /// Not valid yet (not_before in the future).
    pub not_yet_valid: bool,
    /// "RSA 2048", "EC P-256", "Ed25519".
    pub key: Option<String>,
    /// "sha256WithRSAEncryption" style name of the signature algorithm.
    pub signature: Option<String>,
    /// Hex serial number.
    pub serial: String,
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256: String,
}

/// Ports where TLS is the usual first thing (HTTPS, SMTPS, NNTPS, LDAPS, DNS over TLS,
/// FTPS, telnets, IMAPS, IRCS, POP3S, Docker, global catalog over TLS, SIP-TLS, WinRM over
/// HTTPS, Kubernetes API, syslog-TLS, MQTT over TLS, AMQPS, kubelet, the common HTTPS
/// alternatives). On these the probe's first connection starts with a ClientHello.
pub const USUAL_PORTS: &[u16] = &[
    443, 465, 563, 636, 853, 989, 990, 992, 993, 994, 995, 2376, 3269, 4443, 5061, 5671, 5986,
    6443, 6514, 6697, 8443, 8883, 9443, 10250,
];

/// Whether TLS is the usual first thing on `port`.
pub fn usual_port(port: u16) -> bool {
    USUAL_PORTS.contains(&port)
}

/// Protocols whose cleartext session can be upgraded to TLS, by the service name their
/// identity carries. The upgrade is tried on the connection that identified the service.
pub const STARTTLS_SERVICES: &[&str] = &["smtp", "imap", "pop3", "ftp", "postgresql"];

/// Whether a cleartext answer says the port wants TLS: a TLS record (an alert, 0x15 0x03),
/// or an HTTP 400 telling that a plain request reached an HTTPS port.
pub fn wants_tls(answer: &[u8]) -> bool {
    if answer.len() >= 2 && answer[0] == 0x15 && answer[1] == 0x03 {
        return true;
    }
    let head = &answer[..answer.len().min(4096)];
    if !(head.starts_with(b"HTTP/1.") && head.get(8..13) == Some(b" 400 ")) {
        return false;
    }
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    [
        "https port",
        "https server",
        "ssl-enabled",
        "tls-enabled",
        "plain http",
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// Which protocols to offer by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// "h2" and "http/1.1": the first handshake on a port, to learn what the server prefers.
    Web,
    /// "http/1.1" alone: connections that carry an HTTP/1.1 probe.
    Http1,
    /// None: after STARTTLS, where the protocol is already fixed.
    Off,
}

/// A TCP socket whose every read ends by a deadline: a read waits at most `wait`, and
/// none starts after `deadline`. rustls reads through it, so no loop inside rustls can
/// outlive the deadline either.
#[derive(Debug)]
pub(crate) struct Guarded {
    tcp: TcpStream,
    wait: Duration,
    deadline: Instant,
}

impl Guarded {
    /// Each read from now on waits at most `wait`, and none starts after `deadline`.
    pub(crate) fn limit(&mut self, wait: Duration, deadline: Instant) {
        self.wait = wait;
        self.deadline = deadline;
    }
}

impl Read for Guarded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
        }
        self.tcp.set_read_timeout(Some(self.wait.min(left)))?;
        self.tcp.read(buf)
    }
}

impl Write for Guarded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A TLS client session over a guarded TCP socket.
pub(crate) type TlsStream = StreamOwned<ClientConnection, Guarded>;

/// Accepts any certificate chain (it is described, not trusted) but checks the handshake
/// signatures with the provider's algorithms.
#[derive(Debug)]
struct DescribeOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for DescribeOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client configuration: TLS 1.3 and 1.2 with the ring provider, no client certificate,
/// no session resumption (every probe connection shows a full handshake).
fn config(alpn: Alpn) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(DescribeOnly {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = match alpn {
        Alpn::Web => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::Off => Vec::new(),
    };
    Ok(Arc::new(c))
}

/// The name the handshake is for: the user's host name (sent as SNI), or the address
/// (no SNI) when the user gave none or gave an address.
pub(crate) fn server_name(addr: SocketAddr, name: Option<&str>) -> ServerName<'static> {
    if let Some(n) = name {
        if n.parse::<IpAddr>().is_err() {
            if let Ok(dns) = ServerName::try_from(n.to_owned()) {
                return dns;
            }
        }
    }
    ServerName::IpAddress(addr.ip().into())
}

/// The limits of one handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long the server may take to send its first bytes (a ServerHello).
    pub first: Duration,
    /// How long the whole handshake may take.
    pub total: Duration,
}

/// A TLS handshake on `tcp`. On success, the session (ready for application data) and
/// what it negotiated; otherwise why it failed (plain text, not escaped: our own words
/// around rustls' error, which names no peer bytes).
pub(crate) fn handshake(
    tcp: TcpStream,
    server: ServerName<'static>,
    alpn: Alpn,
    limits: Limits,
) -> Result<(TlsStream, TlsInfo), String> {
    let mut conn = ClientConnection::new(config(alpn)?, server).map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(limits.total))
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut sock = Guarded {
        tcp,
        wait: limits.first,
        deadline: start + limits.first,
    };
    let mut heard = false;
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock)
                .map_err(|e| format!("sending the handshake: {e}"))?;
        }
        if !conn.is_handshaking() {
            break;
        }
        let n = conn
            .read_tls(&mut sock)
            .map_err(|e| format!("no TLS answer: {e}"))?;
        if n == 0 {
            return Err("the server closed the connection during the handshake".into());
        }
        if !heard {
            heard = true;
            sock.limit(limits.total, start + limits.total);
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the server why (an alert), at most once, and give up.
            let _ = conn.write_tls(&mut sock);
            return Err(format!("not a TLS handshake: {e}"));
        }
    }
    let info = describe_session(&conn);
    Ok((StreamOwned::new(conn, sock), info))
}

/// What a finished handshake negotiated.
fn describe_session(conn: &ClientConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| iana_cipher(s.suite()))
        .unwrap_or_default();
    let alpn = conn
        .alpn_protocol()
        .map(|p| for_terminal(&String::from_utf8_lossy(p)).into_owned());
    let certs = conn.peer_certificates().unwrap_or_default();
    TlsInfo {
        version,
        cipher,
        alpn,
        starttls: None,
        cert: certs.first().and_then(|c| describe_cert(c.as_ref())),
        chain_len: certs.len(),
    }
}

/// The IANA name of a cipher suite: rustls calls the TLS 1.3 ones `TLS13_*`.
fn iana_cipher(suite: rustls::CipherSuite) -> String {
    match suite.as_str() {
        Some(name) => match name.strip_prefix("TLS13_") {
            Some(rest) => format!("TLS_{rest}"),
            None => name.to_owned(),
        },
        None => format!("0x{:04x}", u16::from(suite)),
    }
}

/// Describes a DER certificate (`None` when it does not parse). Every string is escaped.
pub fn describe_cert(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let v = cert.validity();
    let (from, until) = (v.not_before.timestamp(), v.not_after.timestamp());
    let same_name = cert.subject().as_raw() == cert.issuer().as_raw();
    // Only a signature that definitely does not verify with the certificate's own key
    // says "not self-signed"; an algorithm ring cannot check leaves the names to decide.
    let self_signed = same_name
        && !matches!(
            cert.verify_signature(None),
            Err(X509Error::SignatureVerificationError)
        );
    Some(CertInfo {
        subject: rfc4514(cert.subject()),
        issuer: rfc4514(cert.issuer()),
        sans: sans(&cert),
        not_before: rfc3339(from),
        not_after: rfc3339(until),
        self_signed,
        expired: until < now,
        not_yet_valid: from > now,
        key: Some(key_text(&cert)),
        signature: Some(oid_name(&cert.signature_algorithm.algorithm)),
        serial: hex(cert.raw_serial()),
        sha256: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
    })
}

/// Lowercase hex, no separators.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The short name of an OID when the registry knows it, else its dotted form.
fn oid_name(oid: &Oid<'_>) -> String {
    x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
        .map_or_else(|_| oid.to_id_string(), str::to_owned)
}

/// A name in RFC 4514 form: the RDNs last to first, `+` inside a multi-valued RDN, values
/// with RFC 4514's special characters escaped; then escaped for a terminal.
fn rfc4514(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<_> = name.iter_rdn().collect();
    rdns.reverse();
    let rdns: Vec<String> = rdns
        .into_iter()
        .map(|rdn| {
            rdn.iter()
                .map(|atv| {
                    let value = match atv.as_str() {
                        Ok(s) => rfc4514_value(s),
                        Err(_) => format!("#{}", hex(atv.attr_value().data)),
                    };
                    format!("{}={value}", oid_name(atv.attr_type()))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    for_terminal(&rdns.join(",")).into_owned()
}

/// RFC 4514 section 2.4: escape `"+,;<>\`, a leading `#` or space, a trailing space, NUL.
fn rfc4514_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let last = s.chars().count().saturating_sub(1);
    for (i, c) in s.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            _ => out.push(c),
        }
    }
    out
}

/// DNS names and IP addresses of the subjectAltName extension, escaped.
fn sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(for_terminal(d).into_owned()),
            GeneralName::IPAddress(ip) => Some(ip_text(ip)),
            _ => None,
        })
        .collect()
}

/// An IP address from its SAN encoding (4 or 16 bytes), else hex.
fn ip_text(raw: &[u8]) -> String {
    if let Ok(v4) = <[u8; 4]>::try_from(raw) {
        Ipv4Addr::from(v4).to_string()
    } else if let Ok(v6) = <[u8; 16]>::try_from(raw) {
        Ipv6Addr::from(v6).to_string()
    } else {
        format!("#{}", hex(raw))
    }
}

/// "RSA 2048", "EC P-256", "Ed25519": the key's type and size.
fn key_text(cert: &X509Certificate<'_>) -> String {
    let spki = cert.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.2.840.113549.1.1.1" | "1.2.840.113549.1.1.10" => match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => format!("RSA {}", bits(rsa.modulus)),
            _ => "RSA".to_owned(),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| Oid::try_from(p.clone()).ok())
                .map(|o| match o.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_owned(),
                    "1.3.132.0.34" => "P-384".to_owned(),
                    "1.3.132.0.35" => "P-521".to_owned(),
                    _ => oid_name(&o),
                });
            match curve {
                Some(c) => format!("EC {c}"),
                None => "EC".to_owned(),
            }
        }
        "1.3.101.112" => "Ed25519".to_owned(),
        "1.3.101.113" => "Ed448".to_owned(),
        _ => for_terminal(&oid_name(&spki.algorithm.algorithm)).into_owned(),
    }
}

/// The bit length of a big-endian unsigned integer.
fn bits(n: &[u8]) -> usize {
    let n = &n[n.iter().take_while(|b| **b == 0).count()..];
    match n.first() {
        Some(b) => n.len() * 8 - b.leading_zeros() as usize,
        None => 0,
    }
}

// ---------------------------------------------------------------------------------------
// STARTTLS

/// Bytes a STARTTLS dialogue may read at most.
const DIALOGUE_LIMIT: usize = 16 * 1024;

/// Asks a cleartext session of `service` to switch to TLS. `tcp` is positioned after the
/// service's greeting (text protocols) or after its 'S' to an SSLRequest (PostgreSQL,
/// where there is nothing left to ask). True when the server agreed: the next bytes on
/// `tcp` are a TLS handshake.
pub(crate) fn upgrade(tcp: &mut TcpStream, service: &str, deadline: Instant) -> bool {
    match service {
        "smtp" => {
            let mut offered = false;
            dialogue(tcp, b"EHLO portolan.invalid\r\n", deadline, |line| {
                match reply(line) {
                    Some((250, more)) => {
                        if line.len() > 4 && line[4..].to_ascii_uppercase().starts_with(b"STARTTLS")
                        {
                            offered = true;
                        }
                        (!more).then_some(offered)
                    }
                    // The rest of a multi-line greeting.
                    Some((220, _)) | None => None,
                    Some((_, more)) => (!more).then_some(false),
                }
            }) && dialogue(tcp, b"STARTTLS\r\n", deadline, |line| match reply(line) {
                Some((code, false)) => Some(code == 220),
                _ => None,
            })
        }
        "imap" => dialogue(tcp, b"a1 STARTTLS\r\n", deadline, |line| {
            line.strip_prefix(b"a1 ")
                .map(|rest| rest.to_ascii_uppercase().starts_with(b"OK"))
        }),
        "pop3" => dialogue(tcp, b"STLS\r\n", deadline, |line| {
            if line.starts_with(b"+OK") {
                Some(true)
            } else if line.starts_with(b"-ERR") {
                Some(false)
            } else {
                None
            }
        }),
        "ftp" => dialogue(tcp, b"AUTH TLS\r\n", deadline, |line| match reply(line) {
            Some((220, _) | (_, true)) | None => None,
            Some((code, false)) => Some(code == 234),
        }),
        "postgresql" => true,
        _ => false,
    }
}

/// PostgreSQL's SSLRequest (length 8, code 80877103) on a fresh connection: true when the
/// server answers 'S' (its next bytes are a TLS handshake); 'N' or anything else is false.
pub(crate) fn postgres_ssl_request(tcp: &mut TcpStream, deadline: Instant) -> bool {
    const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero()
        || tcp.set_write_timeout(Some(left)).is_err()
        || tcp.set_read_timeout(Some(left)).is_err()
        || tcp.write_all(&SSL_REQUEST).is_err()
    {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(tcp.read(&mut b), Ok(1)) && b[0] == b'S'
}

/// A numbered reply line (SMTP, FTP): the code, and whether more lines follow (`ddd-`).
fn reply(line: &[u8]) -> Option<(u16, bool)> {
    let code = line.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = code
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    Some((n, line.get(3) == Some(&b'-')))
}

/// Sends `command`, then reads lines (CRLF cut off) and hands each to `judge` until it
/// decides; false when the peer closes, the deadline passes or too many bytes came.
fn dialogue(
    tcp: &mut TcpStream,
    command: &[u8],
    deadline: Instant,
    mut judge: impl FnMut(&[u8]) -> Option<bool>,
) -> bool {
    if tcp.write_all(command).is_err() {
        return false;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0;
    let mut buf = [0u8; 1024];
    loop {
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(verdict) = judge(line) {
                return verdict;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || total >= DIALOGUE_LIMIT || tcp.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                total += n;
                pending.extend_from_slice(&buf[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn rfc4514_escapes_specials_and_controls() {
        assert_eq!(rfc4514_value("a,b+c"), "a\\,b\\+c");
        assert_eq!(rfc4514_value("#x "), "\\#x\\ ");
        assert_eq!(bits(&[0x00, 0x80, 0, 0]), 24);
        assert_eq!(bits(&[0x01]), 1);
        assert_eq!(bits(&[]), 0);
    }

    #[test]
    fn answers_that_want_tls() {
        assert!(wants_tls(b"\x15\x03\x01\x00\x02\x02\x46"));
        assert!(wants_tls(
            b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n<center>The plain HTTP request was sent to HTTPS port</center>"
        ));
        assert!(wants_tls(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
        ));
        assert!(!wants_tls(b"HTTP/1.1 400 Bad Request\r\n\r\nbad header"));
        assert!(!wants_tls(b"HTTP/1.1 200 OK\r\n\r\nplain http is fine"));
        assert!(!wants_tls(b"\x15"));
        assert!(!wants_tls(b""));
    }

    #[test]
    fn numbered_replies() {
        assert_eq!(reply(b"250-STARTTLS"), Some((250, true)));
        assert_eq!(reply(b"220 ready"), Some((220, false)));
        assert_eq!(reply(b"2x0 no"), None);
        assert_eq!(reply(b"25"), None);
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(describe_cert(b"").is_none());
        assert!(describe_cert(&[0x30, 0x82, 0xff, 0xff, 0x00]).is_none());
    }
}
