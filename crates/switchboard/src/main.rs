//! `switchboard`: parse flags, load config (exit 64 if bad), log, bind, serve, drain.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use switchboard::cli::{Cli, Command};
use switchboard::config::{Config, Sources};
use switchboard::{app, server, telemetry};

/// mimalloc instead of glibc malloc: the server allocates and frees many small and
/// mid-sized blocks per request (boxed handler futures, frames, Redis replies); see
/// ARCHITECTURE.md, "Choices" (memory allocator), and README, "Allocator".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli
        .sources(Sources::process_env())
        .map_err(|e| e.to_string())
        .and_then(|s| Config::load(&s).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::CheckConfig = command {
        println!(
            "{}",
            toml::to_string(&config.redacted()).unwrap_or_default()
        );
        eprintln!("switchboard: configuration ok");
        return ExitCode::SUCCESS;
    }
    telemetry::init(config.log_format);
    let (config, app) = match command {
        Command::Conformance => {
            let config = config.conformance();
            let app = app::build_conformance(&config);
            (config, app)
        }
        _ => match app::build(&config) {
            Ok(app) => (config, app),
            Err(e) => {
                tracing::error!(error = %app::error_chain(&e), "cannot start");
                return ExitCode::from(64);
            }
        },
    };
    let listener = match server::bind(config.listen, config.listen_backlog) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen");
            return ExitCode::from(1);
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let tls = app.tls.is_some();
    tracing::info!(tls, listen = %addr, "switchboard listening");
    server::run_until_signalled(
        listener,
        app,
        Duration::from_millis(config.shutdown_grace_ms),
    )
    .await;
    ExitCode::SUCCESS
}
