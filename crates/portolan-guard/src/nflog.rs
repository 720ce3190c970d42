//! placeholder until the kernel branch lands
use std::time::Duration;

use crate::GuardError;

#[derive(Debug, Clone)]
pub struct Logged {
    pub group: u16,
    pub payload: Vec<u8>,
}
#[derive(Debug)]
pub struct Nflog;
impl Nflog {
    pub fn bind(_g: u16) -> Result<Nflog, GuardError> {
        Err(GuardError::Netlink("not yet".into()))
    }
    pub fn lost(&self) -> u64 {
        0
    }
    pub fn recv(&mut self, _t: Option<Duration>) -> Result<Vec<Logged>, GuardError> {
        Ok(Vec::new())
    }
}
