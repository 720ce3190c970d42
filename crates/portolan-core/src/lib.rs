//! Domain types for portolan, with no I/O: ports, port ranges and specs, protocols, socket
//! states, endpoints, exposure, and the escaping every renderer applies to untrusted text.
//!
//! Everything here parses from and displays to the forms a person types and reads. This crate
//! must not touch the network, the file system or the terminal: engines and renderers build
//! on it, so it stays pure and cheap to test.

pub mod cidr;
pub mod civil;
mod error;
pub mod escape;
mod exposure;
pub mod listener;
mod port;
mod proto;
mod query;
mod scan_record;
mod scanports;
mod service_target;
mod state;
mod target;
pub mod when;

pub use cidr::{Cidr, CidrError};
pub use error::{located, ParseError};
pub use exposure::{Exposure, StackScope};
pub use listener::{Listener, ListenerKey, Owner};
pub use port::{Port, PortRange, PortSpec, RangeClass};
pub use proto::Protocol;
pub use query::{LocalTarget, PortQuery};
pub use scan_record::{PortState, ScanRecord, ServiceSource, SCAN_CSV_HEADER};
pub use scanports::ScanPorts;
pub use service_target::{ServiceHost, ServiceTarget};
pub use state::{SocketState, StateFilter};
pub use target::{TargetSpec, MAX_TARGETS_PER_SPEC};
