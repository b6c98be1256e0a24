//! Command-line flags: one subcommand per scenario, plus `compare`.

use clap::{Parser, Subcommand};

use crate::chat::ChatArgs;
use crate::compare::CompareArgs;
use crate::fanout::FanoutArgs;
use crate::idle::IdleArgs;
use crate::publish::PublishArgs;
use crate::soak::SoakArgs;
use crate::storm::StormArgs;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Loopback load generator for Switchboard and its peers (Socket.IO over WebSocket, plain WebSocket, SSE)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N clients, join a room, and measure server RSS per idle client.
    Idle(IdleArgs),
    /// One buyer holds and releases; every client in the room receives each update.
    Fanout(FanoutArgs),
    /// Many buyers race for seats in many categories; checks nothing is oversold.
    Storm(StormArgs),
    /// HTTP publishes to a room of Socket.IO, WebSocket and SSE clients (Switchboard).
    Publish(PublishArgs),
    /// Chat messages sent, stored and fanned out on `/chat` (Switchboard).
    Chat(ChatArgs),
    /// Thousands of clients churn for a long time; RSS, fds, tasks and rooms sampled.
    Soak(SoakArgs),
    /// Reads the JSON reports of a comparison run and prints medians and ratios.
    Compare(CompareArgs),
}
