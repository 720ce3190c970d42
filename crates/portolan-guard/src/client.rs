//! The client's side (`portolan knock`): make the packet, send it, knock a sequence, and
//! wait until the port answers.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::keys::{unb64_32, ClientKeyFile, KeyKind};
use crate::spa::{seal, Body, SealKey};
use crate::{GuardError, PortProto, L4};

/// Seals a request with a client key file's key.
pub fn spa_packet(
    key: &ClientKeyFile,
    ports: &[PortProto],
    duration: Option<Duration>,
    open_for: Option<IpAddr>,
    now_unix: i64,
) -> Result<Vec<u8>, GuardError> {
    let bad = |reason: String| GuardError::Key {
        path: format!("of client {:?}", key.client),
        reason,
    };
    let secret = unb64_32(&key.secret).map_err(bad)?;
    let seal_key = match key.kind {
        KeyKind::Psk => SealKey::psk(&secret),
        KeyKind::X25519 => {
            let sp = unb64_32(key.server_public.as_deref().unwrap_or_default()).map_err(bad)?;
            let cp = crate::keys::public_of(&secret);
            SealKey::x25519(&secret, &sp, &cp, &sp)
                .ok_or_else(|| bad("the guard's public key is not usable".into()))?
        }
    };
    seal(
        &seal_key,
        &Body {
            timestamp: now_unix,
            duration,
            open_for,
            ports: ports.to_vec(),
        },
    )
    .map_err(GuardError::Config)
}

/// fwknop's keys from the text `fwknop --key-gen` prints or a `.fwknoprc` stanza:
/// `KEY_BASE64` and `HMAC_KEY_BASE64` lines (`NAME: VALUE` or `NAME VALUE`).
pub fn fwknop_keys_from_text(text: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    use base64::Engine as _;
    let mut key = None;
    let mut hmac = None;
    for line in text.lines() {
        let line = line.trim();
        let (name, value) = match line.split_once(|c: char| c == ':' || c.is_whitespace()) {
            Some((n, v)) => (n.trim(), v.trim().trim_start_matches(':').trim()),
            None => continue,
        };
        let slot = match name {
            "KEY_BASE64" => &mut key,
            "HMAC_KEY_BASE64" => &mut hmac,
            _ => continue,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| format!("{name}: not base64 ({e})"))?;
        if bytes.is_empty() || bytes.len() > 128 {
            return Err(format!("{name}: {} bytes is not a key", bytes.len()));
        }
        *slot = Some(bytes);
    }
    match (key, hmac) {
        (Some(k), Some(h)) => Ok((k, h)),
        _ => Err("expected KEY_BASE64 and HMAC_KEY_BASE64 lines (from fwknop --key-gen)".into()),
    }
}

/// Sends one datagram to `host:port` from an ephemeral port.
pub fn send_udp(host: IpAddr, port: u16, payload: &[u8]) -> Result<(), GuardError> {
    let any: IpAddr = match host {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0))
        .map_err(|e| GuardError::io("cannot open a UDP socket", e))?;
    s.send_to(payload, SocketAddr::new(host, port))
        .map_err(|e| GuardError::io(format!("cannot send to {host} port {port}"), e))?;
    Ok(())
}

/// The local address this machine would send from to reach `host` (no packet is sent).
pub fn source_for(host: IpAddr) -> Option<IpAddr> {
    let any: IpAddr = match host {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    s.connect(SocketAddr::new(host, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Knocks each port in order: a TCP SYN (a connect given up at once) or a one-byte UDP
/// datagram, `gap` apart.
pub fn knock_sequence(host: IpAddr, seq: &[PortProto], gap: Duration) -> Result<(), GuardError> {
    for (i, p) in seq.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        match p.proto {
            L4::Udp => send_udp(host, p.port, &[0])?,
            L4::Tcp => {
                // The SYN leaves at once; the connect is given up after a moment (the
                // port is dropped: nothing answers). Only the first SYN matters.
                let _ = TcpStream::connect_timeout(
                    &SocketAddr::new(host, p.port),
                    Duration::from_millis(1),
                );
            }
        }
    }
    Ok(())
}

/// Connects to `host:port` until it accepts or `within` passes; the time it took.
pub fn wait_open(host: IpAddr, port: u16, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let addr = SocketAddr::new(host, port);
    loop {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return None;
        }
        match TcpStream::connect_timeout(&addr, left.min(Duration::from_millis(250))) {
            Ok(_) => return Some(start.elapsed()),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                // Open for us but nothing listens (or not yet): keep trying briefly.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fwknop_key_text() {
        let text = "KEY_BASE64: wDx8fuU+QfyVR/aUrSwBNtC7kG3Dpqg4ac8LUnf51Uw=\nHMAC_KEY_BASE64: 2FsBq+NDCIVYqgpZE8zJQtSLaP+Jf1Yl7SOz8kWmkQ3MgaN/AkfPxS94EVFQ5ik9ayMoCHPutpAmrYv1IWrUJg==\n";
        let (k, h) = fwknop_keys_from_text(text).unwrap();
        assert_eq!((k.len(), h.len()), (32, 64));
        let rc = "[default]\nKEY_BASE64            wDx8fuU+QfyVR/aUrSwBNtC7kG3Dpqg4ac8LUnf51Uw=\nHMAC_KEY_BASE64       2FsBq+NDCIVYqgpZE8zJQtSLaP+Jf1Yl7SOz8kWmkQ3MgaN/AkfPxS94EVFQ5ik9ayMoCHPutpAmrYv1IWrUJg==\n";
        assert_eq!(fwknop_keys_from_text(rc).unwrap().0, k);
        assert!(fwknop_keys_from_text("").is_err());
        assert!(fwknop_keys_from_text("KEY_BASE64: !!!\nHMAC_KEY_BASE64: AAAA").is_err());
    }

    #[test]
    fn source_address_for_loopback() {
        assert_eq!(
            source_for("127.0.0.1".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
