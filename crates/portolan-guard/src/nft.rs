//! placeholder until the kernel branch lands
use std::net::IpAddr;
use std::time::Duration;

use crate::{GuardError, PortProto};

#[derive(Debug, Clone)]
pub struct TableSpec {
    pub group: u16,
    pub spa_port: u16,
    pub guarded: Vec<PortProto>,
    pub knock_ports: Vec<PortProto>,
    pub knock_ranges: Vec<(u16, u16)>,
    pub ssh_port: Option<u16>,
    pub ssh_client: Option<IpAddr>,
}

pub fn apply(_s: &TableSpec) -> Result<(), GuardError> {
    Err(GuardError::Config("not yet".into()))
}
pub fn remove() -> Result<bool, GuardError> {
    Ok(false)
}
pub fn open(_a: IpAddr, _p: PortProto, _d: Duration) -> Result<(), GuardError> {
    Ok(())
}
pub fn list() -> Result<Option<Vec<String>>, GuardError> {
    Ok(None)
}
