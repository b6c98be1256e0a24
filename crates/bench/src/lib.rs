//! `switchboard-bench`: a load generator that measures a Switchboard server over
//! loopback. Every scenario is bounded in clients and time and stops by itself.
//!
//! # Layout
//! - [`sio`]: a minimal Socket.IO-over-WebSocket client (packets, target, connection),
//!   shared by every scenario.
//! - [`idle`]: one scenario per module, each with its `config`, `run` and `report`.
//!   Later scenarios (fan-out, paced latency, hold storm, HTTP publish) sit beside it.
//! - [`sys`]: what is read from `/proc` (RSS, open-files limit).
//! - [`report`]: markdown tables and `--json` output.
//! - [`cli`]: the flags; `main.rs` only parses them and calls a scenario's `run`.

pub mod cli;
pub mod idle;
pub mod report;
pub mod sio;
pub mod sys;
