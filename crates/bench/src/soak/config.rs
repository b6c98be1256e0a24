//! Flags of `switchboard-bench soak` and the validated [`SoakConfig`].

use std::path::PathBuf;
use std::time::Duration;

use crate::report::RunArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Socket.IO `/realtime` clients, each churning on its own connection.
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// SSE readers, each on a random event room, resuming with `Last-Event-ID`.
    #[arg(long, default_value_t = 200)]
    pub sse: usize,
    /// Event ids 1..=N the clients spread over (the catalog must have them).
    #[arg(long, default_value_t = 200)]
    pub events: i64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 1800)]
    pub duration_secs: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    pub sample_secs: u64,
    /// Seconds over which the clients start (an even spread).
    #[arg(long, default_value_t = 60)]
    pub ramp_secs: u64,
    /// A connection lasts a random time in this range (seconds), then drops.
    #[arg(long, default_value = "60-180", value_parser = parse_range)]
    pub session_secs: (u64, u64),
    /// A hold is kept, and the pause after its release lasts, a random time in this
    /// range (seconds).
    #[arg(long, default_value = "10-40", value_parser = parse_range)]
    pub hold_secs: (u64, u64),
    /// Time offline between two connections (seconds).
    #[arg(long, default_value = "1-5", value_parser = parse_range)]
    pub offline_secs: (u64, u64),
    /// One connection in N ends with `socket.disconnect()` (no recovery, holds released,
    /// a new user next time); the others drop the transport and recover.
    #[arg(long, default_value_t = 5)]
    pub final_every: u64,
    /// HTTP publishes per second to random event rooms (and one in ten to a user).
    #[arg(long, default_value_t = 10.0)]
    pub publish_per_sec: f64,
    /// API key of the publish endpoint.
    #[arg(long, default_value = "soak-key")]
    pub api_key: String,
    /// Samples as CSV (one row per sample).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// CI scale: 40 clients, 8 SSE readers, 12 s, a sample every 2 s.
    #[arg(long)]
    pub smoke: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected MIN-MAX seconds, e.g. 10-40"))?;
    let a: u64 = a
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: bad minimum"))?;
    let b: u64 = b
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: bad maximum"))?;
    if a > b {
        return Err(format!("{s:?}: the minimum is above the maximum"));
    }
    Ok((a, b))
}

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub url: String,
    pub server: String,
    pub server_pid: Option<u32>,
    pub clients: usize,
    pub sse: usize,
    pub events: i64,
    pub duration: Duration,
    pub sample_every: Duration,
    pub ramp: Duration,
    pub session_secs: (u64, u64),
    pub hold_secs: (u64, u64),
    pub offline_secs: (u64, u64),
    pub final_every: u64,
    pub publish_per_sec: f64,
    pub api_key: String,
    pub csv: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--clients must be at least 1")]
    NoClients,
    #[error("--events must be at least 1")]
    NoEvents,
    #[error("--duration-secs must be at least 1 and at least two samples long")]
    TooShort,
    #[error("--sample-secs must be at least 1")]
    NoSampling,
    #[error("--session-secs must be at least 1 second long")]
    NoSession,
    #[error("--final-every must be at least 1")]
    FinalEvery,
    #[error("--publish-per-sec must be between 0 and 10000")]
    PublishRate,
    #[error("--server-pid: the soak samples one server process")]
    ManyPids,
}

impl SoakConfig {
    /// Seconds, small enough for CI: every path runs (recoveries, final disconnects,
    /// SSE resumes, publishes) a few times.
    pub fn smoke(url: &str) -> Self {
        Self {
            url: url.into(),
            server: "switchboard".into(),
            server_pid: None,
            clients: 40,
            sse: 8,
            events: 2,
            duration: Duration::from_secs(12),
            sample_every: Duration::from_secs(2),
            ramp: Duration::from_secs(1),
            session_secs: (2, 4),
            hold_secs: (0, 1),
            offline_secs: (0, 1),
            final_every: 3,
            publish_per_sec: 20.0,
            api_key: "soak-key".into(),
            csv: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.clients == 0 {
            return Err(ConfigError::NoClients);
        }
        if self.events < 1 {
            return Err(ConfigError::NoEvents);
        }
        if self.sample_every.is_zero() {
            return Err(ConfigError::NoSampling);
        }
        if self.duration < 2 * self.sample_every {
            return Err(ConfigError::TooShort);
        }
        if self.session_secs.1 == 0 {
            return Err(ConfigError::NoSession);
        }
        if self.final_every == 0 {
            return Err(ConfigError::FinalEvery);
        }
        if !(0.0..=10_000.0).contains(&self.publish_per_sec) {
            return Err(ConfigError::PublishRate);
        }
        Ok(())
    }
}

impl TryFrom<&SoakArgs> for SoakConfig {
    type Error = ConfigError;

    fn try_from(a: &SoakArgs) -> Result<Self, ConfigError> {
        let server_pid = match a.run.server_pid[..] {
            [] => None,
            [pid] => Some(pid),
            _ => return Err(ConfigError::ManyPids),
        };
        let mut c = Self {
            url: a.run.url.clone(),
            server: a.run.server.clone(),
            server_pid,
            clients: a.clients,
            sse: a.sse,
            events: a.events,
            duration: Duration::from_secs(a.duration_secs),
            sample_every: Duration::from_secs(a.sample_secs),
            ramp: Duration::from_secs(a.ramp_secs),
            session_secs: a.session_secs,
            hold_secs: a.hold_secs,
            offline_secs: a.offline_secs,
            final_every: a.final_every,
            publish_per_sec: a.publish_per_sec,
            api_key: a.api_key.clone(),
            csv: a.csv.clone(),
        };
        if a.smoke {
            let s = Self::smoke(&c.url);
            c = Self {
                server_pid: c.server_pid,
                api_key: c.api_key,
                csv: c.csv,
                server: c.server,
                ..s
            };
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("3-15"), Ok((3, 15)));
        assert_eq!(parse_range("0-0"), Ok((0, 0)));
        assert!(parse_range("15-3").is_err());
        assert!(parse_range("7").is_err());
        assert!(parse_range("a-3").is_err());
    }

    #[test]
    fn smoke_is_valid_and_bad_values_are_refused() {
        let s = SoakConfig::smoke("http://127.0.0.1:1");
        assert!(s.validate().is_ok());
        let bad = SoakConfig {
            duration: Duration::from_secs(3),
            ..s.clone()
        };
        assert!(matches!(bad.validate(), Err(ConfigError::TooShort)));
        let bad = SoakConfig {
            final_every: 0,
            ..s.clone()
        };
        assert!(matches!(bad.validate(), Err(ConfigError::FinalEvery)));
        let bad = SoakConfig { clients: 0, ..s };
        assert!(matches!(bad.validate(), Err(ConfigError::NoClients)));
    }
}
