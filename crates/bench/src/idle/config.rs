//! Flags of `switchboard-bench idle` and the validated [`IdleConfig`] they become.

use std::path::PathBuf;
use std::time::Duration;

/// Flags as typed by a person.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Server base URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8880")]
    pub url: String,
    /// Clients to open and keep idle.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Socket.IO namespace every client connects to.
    #[arg(long, default_value = "/")]
    pub namespace: String,
    /// Handshake auth as JSON, e.g. '{"token":"x"}'.
    #[arg(long)]
    pub auth: Option<String>,
    /// Room each client joins with `emit("join", ROOM)`, waiting for the ack.
    #[arg(long)]
    pub join: Option<String>,
    /// The ticketing contract instead: connect to `/realtime` as user `idle{i}` and
    /// `join-event-room` this event (waiting for the ack and its availability updates).
    #[arg(long, conflicts_with_all = ["join", "namespace"])]
    pub event: Option<i64>,
    /// Pusher clients instead: connect to `/app/{KEY}` and subscribe to the public
    /// channel of `--join` (default `idle`).
    #[arg(long, conflicts_with_all = ["event", "namespace", "auth"])]
    pub pusher_key: Option<String>,
    /// Socket.IO clients offer permessage-deflate (as Node's `ws` and browsers do), so the
    /// server's memory per client is measured with compression negotiated.
    #[arg(long, conflicts_with = "pusher_key")]
    pub compress: bool,
    /// Name of the server under test, carried into the report.
    #[arg(long, default_value = "switchboard")]
    pub server: String,
    /// Server process whose RSS is read before and after (skipped when absent).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Handshakes (connect + join) in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Seconds between the last join and the second RSS reading.
    #[arg(long, default_value_t = 3)]
    pub settle_secs: u64,
    /// Seconds to keep the clients open (answering pings) after the RSS reading.
    #[arg(long, default_value_t = 0)]
    pub hold_secs: u64,
    /// Give up on one client's connect + join after this many seconds.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout_secs: u64,
    /// Loopback source addresses the clients connect from, 127.0.0.1 to 127.0.0.N
    /// round-robin (one address gives ~28,000 ephemeral ports); 0: one per 20,000 clients.
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// `/realtime` only: while the clients are held, one more client holds and releases a
    /// seat of `--paced-event` this many times a second and times the answers; 0: none.
    #[arg(long, default_value_t = 0.0, requires = "event")]
    pub paced_rate: f64,
    /// The event of the paced operations; the idle clients are not in its room.
    #[arg(long, default_value_t = 2)]
    pub paced_event: i64,
    /// The category of `--paced-event` held and released (the demo catalog's event 2
    /// has categories 4 to 6).
    #[arg(long, default_value_t = 4)]
    pub paced_category: i64,
    /// Name of the comparison row (default `idle-N`).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// CI scale: 20 clients, 1 s settle, 1 s hold (overrides those flags).
    #[arg(long)]
    pub smoke: bool,
}

/// What a run needs, checked.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub url: String,
    pub clients: usize,
    pub namespace: String,
    pub auth: Option<String>,
    pub join: Option<String>,
    /// Join this event of the `/realtime` contract (see [`IdleArgs::event`]).
    pub event: Option<i64>,
    /// Pusher clients with this app key (see [`IdleArgs::pusher_key`]).
    pub pusher_key: Option<String>,
    /// Socket.IO clients offer permessage-deflate (see [`IdleArgs::compress`]).
    pub compress: bool,
    pub server: String,
    pub server_pid: Option<u32>,
    pub concurrency: usize,
    pub settle: Duration,
    pub hold: Duration,
    pub connect_timeout: Duration,
    /// Source addresses asked for (0: automatic, see [`crate::sio::Sources`]).
    pub sources: usize,
    /// Paced operations per second during the hold (0: none).
    pub paced_rate: f64,
    pub paced_event: i64,
    pub paced_category: i64,
    pub label: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--clients must be at least 1")]
    NoClients,
    #[error("--concurrency must be at least 1")]
    NoConcurrency,
    #[error("--namespace must start with '/' and contain no ',' (got {0:?})")]
    Namespace(String),
    #[error("--auth is not JSON: {0}")]
    Auth(serde_json::Error),
    #[error("--connect-timeout-secs must be at least 1")]
    NoTimeout,
    #[error(transparent)]
    Sources(#[from] crate::sio::SourcesError),
    #[error("--paced-rate must be between 0 and 1000 operations per second (got {0})")]
    PacedRate(f64),
    #[error("--paced-rate needs --hold-secs: the paced operations run while the clients are held")]
    PacedWithoutHold,
    #[error(
        "--paced-event must differ from --event: the paced operations must not fan out to the idle clients"
    )]
    PacedEvent,
}

impl IdleConfig {
    /// The settings `--smoke` stands for: small enough for CI, long enough to see pings.
    pub fn smoke(url: &str, namespace: &str, join: Option<&str>) -> Self {
        Self {
            url: url.into(),
            clients: 20,
            namespace: namespace.into(),
            auth: None,
            join: join.map(Into::into),
            event: None,
            pusher_key: None,
            compress: false,
            server: "switchboard".into(),
            server_pid: None,
            concurrency: 20,
            settle: Duration::from_secs(1),
            hold: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(10),
            sources: 0,
            paced_rate: 0.0,
            paced_event: 2,
            paced_category: 4,
            label: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.clients == 0 {
            return Err(ConfigError::NoClients);
        }
        if self.concurrency == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        if !self.namespace.starts_with('/') || self.namespace.contains(',') {
            return Err(ConfigError::Namespace(self.namespace.clone()));
        }
        if let Some(auth) = &self.auth {
            serde_json::from_str::<serde_json::Value>(auth).map_err(ConfigError::Auth)?;
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::NoTimeout);
        }
        crate::sio::Sources::new(self.sources, self.clients)?;
        if !(0.0..=1000.0).contains(&self.paced_rate) {
            return Err(ConfigError::PacedRate(self.paced_rate));
        }
        if self.paced_rate > 0.0 {
            if self.hold.is_zero() {
                return Err(ConfigError::PacedWithoutHold);
            }
            if self.event == Some(self.paced_event) {
                return Err(ConfigError::PacedEvent);
            }
        }
        Ok(())
    }
}

impl TryFrom<&IdleArgs> for IdleConfig {
    type Error = ConfigError;

    fn try_from(a: &IdleArgs) -> Result<Self, ConfigError> {
        let mut c = Self {
            url: a.url.clone(),
            clients: a.clients,
            namespace: if a.event.is_some() {
                crate::realtime::NAMESPACE.to_owned()
            } else {
                a.namespace.clone()
            },
            auth: a.auth.clone(),
            join: a.join.clone(),
            event: a.event,
            pusher_key: a.pusher_key.clone(),
            compress: a.compress,
            server: a.server.clone(),
            server_pid: a.server_pid,
            concurrency: a.concurrency,
            settle: Duration::from_secs(a.settle_secs),
            hold: Duration::from_secs(a.hold_secs),
            connect_timeout: Duration::from_secs(a.connect_timeout_secs),
            sources: a.sources,
            paced_rate: a.paced_rate,
            paced_event: a.paced_event,
            paced_category: a.paced_category,
            label: a.label.clone(),
        };
        if c.pusher_key.is_some() && c.join.is_none() {
            c.join = Some("idle".into());
        }
        if a.smoke {
            let smoke = Self::smoke(&a.url, &a.namespace, a.join.as_deref());
            c.clients = smoke.clients;
            c.concurrency = c.concurrency.min(smoke.concurrency);
            c.settle = smoke.settle;
            c.hold = smoke
                .hold
                .max(Duration::from_secs(if c.paced_rate > 0.0 { 2 } else { 0 }));
        }
        c.validate()?;
        Ok(c)
    }
}
