//! fwknop's SPA format (being written on its own branch; this placeholder keeps the
//! engine compiling and accepts nothing).

use crate::{Rejection, Request};

#[derive(Debug, Clone)]
pub struct FwknopKey {
    pub client: String,
    pub key: Vec<u8>,
    pub hmac_key: Vec<u8>,
}

pub fn decode(_datagram: &[u8], _keys: &[FwknopKey]) -> Result<Request, Rejection> {
    Err(Rejection::BadMac)
}

pub fn encode(
    _key: &FwknopKey,
    _username: &str,
    _open_for: std::net::IpAddr,
    _ports: &[crate::PortProto],
    _client_timeout: Option<u32>,
    _now_unix: i64,
) -> Vec<u8> {
    Vec::new()
}
