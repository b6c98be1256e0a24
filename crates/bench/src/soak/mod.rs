//! `soak`: thousands of `/realtime` clients churn for a long time (connect, join, hold,
//! release, disconnect, reconnect with connection state recovery), with HTTP publishes
//! and SSE readers that resume from `Last-Event-ID`, while the server's RSS, open file
//! descriptors, tokio tasks and hub rooms are sampled. The verdict: after the warm-up,
//! nothing grows without bound (the last samples are within a tolerance of the first).
//!
//! `config` holds the flags, `run` the clients and the sampler, `report` the samples,
//! the verdict and the CSV the plot is drawn from (`bench/soak`).

mod config;
mod report;
mod run;

pub use config::{SoakArgs, SoakConfig};
pub use report::{Sample, SoakReport, Trend};
pub use run::{SoakError, run};
