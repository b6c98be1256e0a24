//! Flags of `switchboard-bench fanout` and the validated [`FanoutConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::report::RunArgs;

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum ModeArg {
    Closed,
    Paced,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// `closed`: as fast as answers come; `paced`: `--rate` operations per second.
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: ModeArg,
    /// Receivers joined to the event room.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Event whose room the receivers join.
    #[arg(long, default_value_t = 1)]
    pub event: i64,
    /// Category the buyer holds and releases (one seat at a time).
    #[arg(long, default_value_t = 2)]
    pub category: i64,
    /// Seconds of operations.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Closed mode: operations the slowest receiver may lag behind.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// Paced mode: operations per second.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Handshakes (connect + join) in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Give up on one client's connect + join after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout_secs: u64,
    /// Seconds after the last operation for every receiver to catch up.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// CI scale: 10 receivers, 1 s of operations.
    #[arg(long)]
    pub smoke: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Closed { window: u64 },
    Paced { rate: f64 },
}

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub url: String,
    pub server: String,
    /// Processes whose CPU is measured, summed (the nodes and their Redis).
    pub server_pids: Vec<u32>,
    /// Overrides the report's comparison row.
    pub label: Option<String>,
    pub mode: Mode,
    pub clients: usize,
    pub event: i64,
    pub category: i64,
    pub duration: Duration,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub drain: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--clients must be at least 1")]
    NoClients,
    #[error("--window must be at least 1")]
    NoWindow,
    #[error("--rate must be above 0 and at most 100000")]
    Rate,
    #[error("--duration-secs must be at least 1")]
    NoDuration,
}

impl FanoutConfig {
    /// Small enough for CI, long enough for a few hundred operations.
    pub fn smoke(url: &str, mode: Mode) -> Self {
        Self {
            url: url.into(),
            server: "switchboard".into(),
            server_pids: Vec::new(),
            label: None,
            mode,
            clients: 10,
            event: 1,
            category: 2,
            duration: Duration::from_secs(1),
            concurrency: 10,
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.clients == 0 {
            return Err(ConfigError::NoClients);
        }
        match self.mode {
            Mode::Closed { window: 0 } => return Err(ConfigError::NoWindow),
            Mode::Paced { rate } if !(rate > 0.0 && rate <= 100_000.0) => {
                return Err(ConfigError::Rate);
            }
            _ => {}
        }
        if self.duration.is_zero() {
            return Err(ConfigError::NoDuration);
        }
        Ok(())
    }
}

impl TryFrom<&FanoutArgs> for FanoutConfig {
    type Error = ConfigError;

    fn try_from(a: &FanoutArgs) -> Result<Self, ConfigError> {
        let mode = match a.mode {
            ModeArg::Closed => Mode::Closed { window: a.window },
            ModeArg::Paced => Mode::Paced { rate: a.rate },
        };
        let mut c = Self {
            url: a.run.url.clone(),
            server: a.run.server.clone(),
            server_pids: a.run.server_pid.clone(),
            label: a.run.label.clone(),
            mode,
            clients: a.clients,
            event: a.event,
            category: a.category,
            duration: Duration::from_secs(a.duration_secs),
            concurrency: a.concurrency.max(1),
            connect_timeout: Duration::from_secs(a.connect_timeout_secs.max(1)),
            drain: Duration::from_secs(a.drain_secs),
        };
        if a.smoke {
            let s = Self::smoke(&c.url, mode);
            c.clients = s.clients;
            c.duration = s.duration;
        }
        c.validate()?;
        Ok(c)
    }
}
