//! One room per command, each the same shape: its clap arguments, validated, go to one
//! engine session; the typed report that comes back goes to `render::emit`. No command
//! imports another: what two commands need lives in an engine, in core, or in `render/`.

pub mod audit;
pub mod diff;
pub mod firewall;
pub mod free;
pub mod generate;
pub mod history;
pub mod info;
pub mod kill;
pub mod ls;
pub mod overview;
pub mod policy;
pub mod probe;
pub mod scan;
pub mod watch;
pub mod who;
