//! `fanout`: one buyer holds and releases a seat over and over; every client in the
//! event room must receive each resulting `availability-update`. Two modes: `closed`
//! (the next operation as soon as the previous one is answered and every receiver is
//! at most `--window` updates behind: deliveries per second) and `paced` (a fixed rate:
//! delivery latency from sending the operation to each receiver's receipt).
//!
//! Owns its flags, run and report; counts lost deliveries exactly, because updates
//! of one room arrive in order and every answered operation yields exactly one.

mod config;
mod report;
mod run;

pub use config::{FanoutArgs, FanoutConfig, Mode};
pub use report::FanoutReport;
pub use run::{FanoutError, run};
