//! Placeholder until the kernel side lands (being written on branch relay-kernel).

use std::io;

use crate::spec::{Listen, Proto};
use crate::RelayError;

/// An nftables redirect of a listening range into one socket.
#[derive(Debug)]
pub struct Redirect;

pub fn redirect(_proto: Proto, _listen: &Listen, _to_port: u16) -> Result<Redirect, RelayError> {
    Err(RelayError::Nft(
        "range_mode = redirect is not available yet".into(),
    ))
}

pub fn original_port(_sock: &socket2::SockRef<'_>) -> io::Result<u16> {
    Err(io::Error::other("not available yet"))
}

/// A kernel forward as loaded.
#[derive(Debug, Clone)]
pub struct KernelForward {
    pub proto: Proto,
    pub listen: Listen,
    pub target: crate::spec::Target,
    pub name: String,
}

pub fn list() -> Result<Vec<KernelForward>, RelayError> {
    Ok(Vec::new())
}
