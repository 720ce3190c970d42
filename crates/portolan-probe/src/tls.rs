//! TLS on any port: a handshake that reports what was negotiated and the certificate the
//! server showed (never trusted, only described), and a stream to probe again inside.

use serde::Serialize;

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
