//! Flags of `switchboard-bench chat` and the validated [`ChatConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::report::RunArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Clients that send (each one message in flight).
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Clients in the room that receive every message.
    #[arg(long, default_value_t = 100)]
    pub receivers: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Bytes of content per message (at most the server's `max_message_bytes`).
    #[arg(long, default_value_t = 100)]
    pub content_bytes: usize,
    /// Seconds after the last ack for every receiver to catch up.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// CI scale: 2 senders, 5 receivers, 1 s.
    #[arg(long)]
    pub smoke: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ChatConfig {
    pub url: String,
    pub server: String,
    pub server_pids: Vec<u32>,
    pub label: Option<String>,
    pub senders: usize,
    pub receivers: usize,
    pub duration: Duration,
    pub content_bytes: usize,
    pub connect_timeout: Duration,
    pub drain: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--senders, --receivers and --duration-secs must be at least 1")]
    Zero,
    #[error("--content-bytes must be 40 to 65536 (the content carries the send time)")]
    Content,
}

impl ChatConfig {
    pub fn smoke(url: &str) -> Self {
        Self {
            url: url.into(),
            server: "switchboard".into(),
            server_pids: Vec::new(),
            label: None,
            senders: 2,
            receivers: 5,
            duration: Duration::from_secs(1),
            content_bytes: 64,
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.senders == 0 || self.receivers == 0 || self.duration.is_zero() {
            return Err(ConfigError::Zero);
        }
        if !(40..=65536).contains(&self.content_bytes) {
            return Err(ConfigError::Content);
        }
        Ok(())
    }
}

impl TryFrom<&ChatArgs> for ChatConfig {
    type Error = ConfigError;

    fn try_from(a: &ChatArgs) -> Result<Self, ConfigError> {
        let mut c = Self {
            url: a.run.url.clone(),
            server: a.run.server.clone(),
            server_pids: a.run.server_pid.clone(),
            label: a.run.label.clone(),
            senders: a.senders,
            receivers: a.receivers,
            duration: Duration::from_secs(a.duration_secs),
            content_bytes: a.content_bytes,
            connect_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(a.drain_secs),
        };
        if a.smoke {
            let s = Self::smoke(&c.url);
            (c.senders, c.receivers, c.duration, c.content_bytes) =
                (s.senders, s.receivers, s.duration, s.content_bytes);
        }
        c.validate()?;
        Ok(c)
    }
}
