//! UDP sessions (being written).

use std::sync::Arc;

use portolan_core::Port;
use tokio::net::UdpSocket;

use crate::server::RuleState;

/// Serves one listening UDP socket of a rule until aborted.
pub async fn serve(_socket: UdpSocket, _port: Port, _state: Arc<RuleState>) {
    std::future::pending::<()>().await;
}
