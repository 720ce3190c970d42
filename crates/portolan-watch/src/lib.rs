//! Watching this machine's listeners over time: samples (`sampler`), the events between
//! them (`tracker`), and the shared shape of both (`model`).

pub mod model;
pub mod sampler;
pub mod tracker;
