//! Command-line flags. Flags are the last and strongest config source.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Sources;

#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about = "A realtime gateway: Socket.IO v4, WebSocket and SSE in one binary"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    /// TOML config file (see switchboard.example.toml).
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides `listen`).
    #[arg(long, global = true)]
    pub listen: Option<String>,
    /// `text` or `json` logs (overrides `log_format`).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// Catalog file (overrides `catalog`).
    #[arg(long, global = true)]
    pub catalog: Option<String>,
    /// Data directory for holds (overrides `data_dir`).
    #[arg(long, global = true)]
    pub data_dir: Option<String>,
    /// RabbitMQ URL of the NestJS orders/events messages (overrides `amqp_url`).
    #[arg(long, global = true)]
    pub amqp_url: Option<String>,
    /// Redis URL of the cluster (overrides `redis_url`); empty runs one node.
    #[arg(long, global = true)]
    pub redis_url: Option<String>,
    /// Any setting as KEY=VALUE, e.g. `--set ping_interval_ms=10000` (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Validate the configuration, print it as TOML, and exit.
    CheckConfig,
    /// Serve what the official Socket.IO/Engine.IO protocol suites expect (default
    /// 127.0.0.1:3000, ping 300/200 ms, connectTimeout 1000 ms).
    Conformance,
}

/// Why the flags do not name usable config sources.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--config` names a file that cannot be read.
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        /// The path as given.
        path: String,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// A `--set` argument without `=`.
    #[error("--set {0}: expected KEY=VALUE")]
    Set(String),
}

impl Cli {
    /// The config sources these flags name, with `env` injected.
    pub fn sources(
        &self,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Sources, CliError> {
        let file = match &self.common.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| CliError::ReadConfig {
                        path: path.display().to_string(),
                        source,
                    })?;
                Some((path.display().to_string(), text))
            }
            None => None,
        };
        let mut overrides = Vec::new();
        if matches!(self.command, Some(Command::Conformance)) {
            overrides.push(("listen".to_owned(), "127.0.0.1:3000".to_owned()));
        }
        for kv in &self.common.set {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| CliError::Set(kv.clone()))?;
            overrides.push((k.trim().to_owned(), v.to_owned()));
        }
        if let Some(l) = &self.common.listen {
            overrides.push(("listen".to_owned(), l.clone()));
        }
        if let Some(c) = &self.common.catalog {
            overrides.push(("catalog".to_owned(), c.clone()));
        }
        if let Some(d) = &self.common.data_dir {
            overrides.push(("data_dir".to_owned(), d.clone()));
        }
        if let Some(u) = &self.common.amqp_url {
            overrides.push(("amqp_url".to_owned(), u.clone()));
        }
        if let Some(u) = &self.common.redis_url {
            overrides.push(("redis_url".to_owned(), u.clone()));
        }
        if let Some(f) = &self.common.log_format {
            overrides.push(("log_format".to_owned(), f.clone()));
        }
        Ok(Sources {
            file,
            env,
            overrides,
        })
    }
}
