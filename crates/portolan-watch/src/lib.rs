//! Watching this machine's listeners over time: samples (`sampler`), the events between
//! them (`tracker`), the shared shape of both (`model`), where events go (`alert`,
//! `metrics`, `store`), the loop that joins them (`daemon`), and the questions asked of
//! the history (`history`: which store, this machine's name, `diff`, a port's last state).

pub mod alert;
pub mod daemon;
pub mod history;
pub mod metrics;
pub mod model;
pub mod sampler;
pub mod store;
pub mod tracker;
