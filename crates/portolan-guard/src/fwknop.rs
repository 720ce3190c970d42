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
