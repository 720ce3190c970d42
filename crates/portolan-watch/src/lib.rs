//! Watching this machine's listeners over time: samples (`sampler`), the events between
//! them (`tracker`), the shared shape of both (`model`), where events go (`alert`,
//! `metrics`, `store`) and the loop that joins them (`daemon`).

pub mod alert;
pub mod daemon;
pub mod metrics;
pub mod model;
pub mod sampler;
pub mod store;
pub mod tracker;
