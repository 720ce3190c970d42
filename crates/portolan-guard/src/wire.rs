//! placeholder until the kernel branch lands
use std::net::IpAddr;

use crate::L4;

#[derive(Debug, Clone)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: L4,
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
}
pub fn parse(_p: &[u8]) -> Option<Seen> {
    None
}
