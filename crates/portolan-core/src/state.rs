use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{echo, ParseError};
use crate::Protocol;

/// The state of a socket as the kernel reports it. TCP sockets use the TCP state machine;
/// an unconnected UDP socket (the kernel's `TCP_CLOSE` on a datagram socket) is `Unconn`,
/// as `ss` calls it, and a connected one is `Established`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    Unconn,
}

const NAMES: &str = "established, syn-sent, syn-recv, fin-wait-1, fin-wait-2, time-wait, close, \
close-wait, last-ack, listen, closing, unconn, or the groups connected, all";

impl SocketState {
    /// Maps the kernel's numeric state (`include/net/tcp_states.h`) for a protocol.
    /// `TCP_NEW_SYN_RECV` (12) is a request socket waiting for the final ACK: `SynRecv`.
    pub fn from_kernel(proto: Protocol, state: u8) -> Option<Self> {
        Some(match state {
            1 => SocketState::Established,
            2 => SocketState::SynSent,
            3 | 12 => SocketState::SynRecv,
            4 => SocketState::FinWait1,
            5 => SocketState::FinWait2,
            6 => SocketState::TimeWait,
            7 if proto == Protocol::Udp => SocketState::Unconn,
            7 => SocketState::Close,
            8 => SocketState::CloseWait,
            9 => SocketState::LastAck,
            10 => SocketState::Listen,
            11 => SocketState::Closing,
            _ => return None,
        })
    }

    /// The kernel's numeric state, the inverse of [`SocketState::from_kernel`].
    pub const fn kernel_code(self) -> u8 {
        match self {
            SocketState::Established => 1,
            SocketState::SynSent => 2,
            SocketState::SynRecv => 3,
            SocketState::FinWait1 => 4,
            SocketState::FinWait2 => 5,
            SocketState::TimeWait => 6,
            SocketState::Close | SocketState::Unconn => 7,
            SocketState::CloseWait => 8,
            SocketState::LastAck => 9,
            SocketState::Listen => 10,
            SocketState::Closing => 11,
        }
    }

    /// The short upper-case name `ss` prints (`ESTAB`, `LISTEN`, `UNCONN`, ...).
    pub const fn ss_name(self) -> &'static str {
        match self {
            SocketState::Established => "ESTAB",
            SocketState::SynSent => "SYN-SENT",
            SocketState::SynRecv => "SYN-RECV",
            SocketState::FinWait1 => "FIN-WAIT-1",
            SocketState::FinWait2 => "FIN-WAIT-2",
            SocketState::TimeWait => "TIME-WAIT",
            SocketState::Close => "CLOSE",
            SocketState::CloseWait => "CLOSE-WAIT",
            SocketState::LastAck => "LAST-ACK",
            SocketState::Listen => "LISTEN",
            SocketState::Closing => "CLOSING",
            SocketState::Unconn => "UNCONN",
        }
    }

    /// The snake_case name used in JSON and CSV.
    pub const fn json_name(self) -> &'static str {
        match self {
            SocketState::Established => "established",
            SocketState::SynSent => "syn_sent",
            SocketState::SynRecv => "syn_recv",
            SocketState::FinWait1 => "fin_wait1",
            SocketState::FinWait2 => "fin_wait2",
            SocketState::TimeWait => "time_wait",
            SocketState::Close => "close",
            SocketState::CloseWait => "close_wait",
            SocketState::LastAck => "last_ack",
            SocketState::Listen => "listen",
            SocketState::Closing => "closing",
            SocketState::Unconn => "unconn",
        }
    }

    /// A socket that accepts new peers: a TCP listener or an unconnected (bound) UDP socket.
    pub const fn is_listening(self) -> bool {
        matches!(self, SocketState::Listen | SocketState::Unconn)
    }
}

impl fmt::Display for SocketState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ss_name())
    }
}

/// A `--state` filter: one state, or a group as `ss` understands them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    One(SocketState),
    /// Every state but listening, closed and unconnected.
    Connected,
    All,
}

impl StateFilter {
    pub fn matches(self, s: SocketState) -> bool {
        match self {
            StateFilter::One(want) => want == s,
            StateFilter::Connected => !matches!(
                s,
                SocketState::Listen | SocketState::Close | SocketState::Unconn
            ),
            StateFilter::All => true,
        }
    }
}

impl FromStr for StateFilter {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        let state = match norm.as_str() {
            "all" => return Ok(StateFilter::All),
            "connected" => return Ok(StateFilter::Connected),
            "established" | "estab" => SocketState::Established,
            "synsent" => SocketState::SynSent,
            "synrecv" => SocketState::SynRecv,
            "finwait1" => SocketState::FinWait1,
            "finwait2" => SocketState::FinWait2,
            "timewait" => SocketState::TimeWait,
            "close" | "closed" => SocketState::Close,
            "closewait" => SocketState::CloseWait,
            "lastack" => SocketState::LastAck,
            "listen" | "listening" => SocketState::Listen,
            "closing" => SocketState::Closing,
            "unconn" | "unconnected" => SocketState::Unconn,
            _ => {
                return Err(ParseError::UnknownState {
                    input: echo(s),
                    expected: NAMES,
                })
            }
        };
        Ok(StateFilter::One(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_codes_round_trip() {
        for code in 1..=11u8 {
            for proto in [Protocol::Tcp, Protocol::Udp] {
                let s = SocketState::from_kernel(proto, code).unwrap();
                assert_eq!(s.kernel_code(), code);
            }
        }
        assert_eq!(
            SocketState::from_kernel(Protocol::Tcp, 12),
            Some(SocketState::SynRecv)
        );
        assert_eq!(SocketState::from_kernel(Protocol::Tcp, 0), None);
        assert_eq!(SocketState::from_kernel(Protocol::Tcp, 200), None);
    }

    #[test]
    fn filters_parse() {
        assert_eq!(
            "TIME-WAIT".parse::<StateFilter>().unwrap(),
            StateFilter::One(SocketState::TimeWait)
        );
        assert_eq!(
            "fin_wait_1".parse::<StateFilter>().unwrap(),
            StateFilter::One(SocketState::FinWait1)
        );
        assert!(StateFilter::Connected.matches(SocketState::CloseWait));
        assert!(!StateFilter::Connected.matches(SocketState::Listen));
        let err = "bogus\x1b".parse::<StateFilter>().unwrap_err().to_string();
        assert!(err.contains("unknown socket state") && !err.contains('\x1b'));
    }
}
