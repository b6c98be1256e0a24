//! Flags of `switchboard-bench storm` and the validated [`StormConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::report::RunArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Buyers (distinct users), each on its own connection.
    #[arg(long, default_value_t = 200)]
    pub buyers: usize,
    /// Events whose every category the buyers race for (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub events: Vec<i64>,
    /// Seconds of racing.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Each hold asks for 1..=this many seats.
    #[arg(long, default_value_t = 4)]
    pub max_quantity: u32,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Give up on one buyer's connect after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub connect_timeout_secs: u64,
    /// CI scale: 20 buyers, 1 s.
    #[arg(long)]
    pub smoke: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct StormConfig {
    pub url: String,
    pub server: String,
    /// Processes whose CPU is measured, summed (the nodes and their Redis).
    pub server_pids: Vec<u32>,
    /// Overrides the report's comparison row.
    pub label: Option<String>,
    pub buyers: usize,
    pub events: Vec<i64>,
    pub duration: Duration,
    pub max_quantity: u32,
    pub concurrency: usize,
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--buyers must be at least 1")]
    NoBuyers,
    #[error("--events must name at least one event")]
    NoEvents,
    #[error("--max-quantity must be 1..=10 (the contract's limit)")]
    Quantity,
    #[error("--duration-secs must be at least 1")]
    NoDuration,
}

impl StormConfig {
    pub fn smoke(url: &str) -> Self {
        Self {
            url: url.into(),
            server: "switchboard".into(),
            server_pids: Vec::new(),
            label: None,
            buyers: 20,
            events: vec![1, 2],
            duration: Duration::from_secs(1),
            max_quantity: 4,
            concurrency: 20,
            connect_timeout: Duration::from_secs(10),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.buyers == 0 {
            return Err(ConfigError::NoBuyers);
        }
        if self.events.is_empty() {
            return Err(ConfigError::NoEvents);
        }
        if !(1..=10).contains(&self.max_quantity) {
            return Err(ConfigError::Quantity);
        }
        if self.duration.is_zero() {
            return Err(ConfigError::NoDuration);
        }
        Ok(())
    }
}

impl TryFrom<&StormArgs> for StormConfig {
    type Error = ConfigError;

    fn try_from(a: &StormArgs) -> Result<Self, ConfigError> {
        let mut c = Self {
            url: a.run.url.clone(),
            server: a.run.server.clone(),
            server_pids: a.run.server_pid.clone(),
            label: a.run.label.clone(),
            buyers: a.buyers,
            events: a.events.clone(),
            duration: Duration::from_secs(a.duration_secs),
            max_quantity: a.max_quantity,
            concurrency: a.concurrency.max(1),
            connect_timeout: Duration::from_secs(a.connect_timeout_secs.max(1)),
        };
        if a.smoke {
            let s = Self::smoke(&c.url);
            c.buyers = s.buyers;
            c.duration = s.duration;
        }
        c.validate()?;
        Ok(c)
    }
}
