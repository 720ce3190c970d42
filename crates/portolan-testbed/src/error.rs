//! The crate's one error type. Every variant names the operation (and the command line or
//! the address) that failed.

use std::io;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestbedError {
    /// Creating namespaces, TUN devices and nftables rules needs root.
    #[error(
        "the testbed needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to create network namespaces"
    )]
    NotRoot,
    /// A program the testbed drives is not installed.
    #[error("`{program}` not found in PATH: install the Debian package `{package}`")]
    MissingTool {
        program: &'static str,
        package: &'static str,
    },
    /// The builder's parameters or a host spec are inconsistent.
    #[error("invalid testbed spec: {0}")]
    Spec(String),
    /// An `ip` or `nft` command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// A UDP service (dnsmasq, snmpd, ntpd) exited or did not bind its port in time;
    /// `reason` carries the end of its log.
    #[error("cannot start the {service} service ({program}): {reason}")]
    Service {
        service: &'static str,
        program: &'static str,
        reason: String,
    },
    /// A system call failed; `op` says what was being done, with which name or address.
    #[error("cannot {op}: {source}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
}

impl TestbedError {
    pub(crate) fn io(op: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self::Io {
            op: op.into(),
            source: source.into(),
        }
    }
}
