//! Flags of `switchboard-bench publish` and the validated [`PublishConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::report::RunArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Socket.IO members (`/realtime`, `join-event-room`).
    #[arg(long, default_value_t = 300)]
    pub sio: usize,
    /// Plain WebSocket members (`/ws`, `{"action":"join"}`).
    #[arg(long, default_value_t = 300)]
    pub ws: usize,
    /// SSE members (`GET /events?channels=`).
    #[arg(long, default_value_t = 300)]
    pub sse: usize,
    /// Event whose room (`event_{id}`) everyone joins and the publishes go to.
    #[arg(long, default_value_t = 1)]
    pub event: i64,
    /// Bearer key of the publish API (the server's `api_key`).
    #[arg(long, env = "SWITCHBOARD_API_KEY", default_value = "bench-key")]
    pub api_key: String,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Publishes the slowest member may lag behind.
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds after the last publish for every member to catch up.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// CI scale: 5 members of each kind, 1 s.
    /// Grow each message's data to about this many bytes of JSON (a seat map: repeated
    /// keys, as real payloads have); 0 sends `{"seq": N}` alone.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// WebSocket members (Socket.IO and `/ws`) offer permessage-deflate, as Node's `ws`
    /// and browsers do; the report gives the bytes each delivery took on the wire.
    #[arg(long)]
    pub compress: bool,
    #[arg(long)]
    pub smoke: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub url: String,
    pub server: String,
    /// Processes whose CPU is measured, summed (the nodes and their Redis).
    pub server_pids: Vec<u32>,
    /// Overrides the report's comparison row.
    pub label: Option<String>,
    pub sio: usize,
    pub ws: usize,
    pub sse: usize,
    pub event: i64,
    pub api_key: String,
    pub duration: Duration,
    pub window: u64,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub drain: Duration,
    /// Approximate JSON size of each message's data (0: `{"seq": N}` only).
    pub payload_bytes: usize,
    /// WebSocket members offer permessage-deflate.
    pub compress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("at least one member (--sio, --ws, --sse) is needed")]
    NoMembers,
    #[error("--window and --duration-secs must be at least 1")]
    Zero,
}

impl PublishConfig {
    pub fn smoke(url: &str, api_key: &str) -> Self {
        Self {
            url: url.into(),
            server: "switchboard".into(),
            server_pids: Vec::new(),
            label: None,
            sio: 5,
            ws: 5,
            sse: 5,
            event: 1,
            api_key: api_key.into(),
            duration: Duration::from_secs(1),
            window: 8,
            concurrency: 15,
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(10),
            payload_bytes: 0,
            compress: false,
        }
    }

    /// The fields added to each message's data after `seq`: `,"seats":[...]` of about
    /// `payload_bytes` bytes, built once.
    pub fn extra_fields(&self) -> String {
        if self.payload_bytes == 0 {
            return String::new();
        }
        let mut out = String::from(",\"seats\":[");
        let mut i = 0usize;
        while out.len() < self.payload_bytes {
            if i > 0 {
                out.push(',');
            }
            let row = (b'A' + (i % 26) as u8) as char;
            out.push_str(&format!(
                "{{\"seat\":\"{row}-{i}\",\"price\":{},\"free\":{}}}",
                40 + i % 7,
                !i.is_multiple_of(3)
            ));
            i += 1;
        }
        out.push(']');
        out
    }

    pub fn members(&self) -> usize {
        self.sio + self.ws + self.sse
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.members() == 0 {
            return Err(ConfigError::NoMembers);
        }
        if self.window == 0 || self.duration.is_zero() {
            return Err(ConfigError::Zero);
        }
        Ok(())
    }
}

impl TryFrom<&PublishArgs> for PublishConfig {
    type Error = ConfigError;

    fn try_from(a: &PublishArgs) -> Result<Self, ConfigError> {
        let mut c = Self {
            url: a.run.url.clone(),
            server: a.run.server.clone(),
            server_pids: a.run.server_pid.clone(),
            label: a.run.label.clone(),
            sio: a.sio,
            ws: a.ws,
            sse: a.sse,
            event: a.event,
            api_key: a.api_key.clone(),
            duration: Duration::from_secs(a.duration_secs),
            window: a.window,
            concurrency: a.concurrency.max(1),
            connect_timeout: Duration::from_secs(30),
            drain: Duration::from_secs(a.drain_secs),
            payload_bytes: a.payload_bytes,
            compress: a.compress,
        };
        if a.smoke {
            let s = Self::smoke(&c.url, &c.api_key);
            (c.sio, c.ws, c.sse, c.duration) = (s.sio, s.ws, s.sse, s.duration);
        }
        c.validate()?;
        Ok(c)
    }
}
