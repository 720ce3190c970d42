pub mod alert;
pub mod metrics;
pub mod model;
