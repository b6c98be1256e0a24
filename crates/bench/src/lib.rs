//! `switchboard-bench`: a load generator that measures a Switchboard server (and the
//! peers in `bench/peers/` that serve the same `/realtime` contract) over loopback.
//! Every scenario is bounded in clients and time and stops by itself.
//!
//! # Layout
//! - [`sio`]: a minimal Socket.IO-over-WebSocket client (packets, target, connection),
//!   shared by every scenario.
//! - [`realtime`]: the `/realtime` ticketing contract as a client speaks it; [`crowd`]
//!   opens many such clients at once.
//! - One module per scenario, each with its `config`, `run` and `report`: [`idle`],
//!   [`fanout`] (closed loop and paced), [`storm`], [`publish`], [`chat`] (messages stored
//!   and fanned out on `/chat`), [`soak`] (long churn, resource samples, a growth verdict).
//! - [`compare`]: medians and ratios over the JSON reports of a comparison run.
//! - [`sys`]: what is read from `/proc` (RSS, CPU time, load, open-files limit).
//! - [`report`]: markdown tables, the metadata every report carries, `--json` output.
//! - [`cli`]: the flags; `main.rs` only parses them and calls a scenario's `run`.

// The load generator measures a real server in real wall time: std's clock is right here.
#![allow(clippy::disallowed_types)]

pub mod chat;
pub mod cli;
pub mod compare;
pub mod crowd;
pub mod fanout;
pub mod idle;
pub mod publish;
pub mod realtime;
pub mod report;
pub mod sio;
pub mod soak;
pub mod storm;
pub mod sys;
