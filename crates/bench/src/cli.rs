//! Command-line flags: one subcommand per scenario.

use clap::{Parser, Subcommand};

use crate::idle::IdleArgs;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Loopback load generator for Switchboard (Socket.IO over WebSocket)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open N clients, join a room, and measure server RSS per idle client.
    Idle(IdleArgs),
}
