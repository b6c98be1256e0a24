//! Small primitives several crates share, with no protocol knowledge: a latency
//! [`Histogram`] (Engine.IO delivery, hold-service latency) and a per-connection
//! [`rate_limit`] token bucket (Socket.IO events, `/ws` frames).
//!
//! Owns: the arithmetic. Never: I/O, metrics rendering, or what is being limited.

#![warn(missing_docs)]

pub mod histogram;
pub mod rate_limit;

pub use histogram::Histogram;
pub use rate_limit::{Bucket, RateLimit};
