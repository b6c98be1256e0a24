//! `switchboard-bench`: parse flags, run one scenario, print markdown, write JSON.
//! Exit 0 when every client succeeded, 1 when some failed, 64 on bad flags or setup.

use std::process::ExitCode;

use bench::cli::{Cli, Command};
use bench::idle::{self, IdleConfig, IdleError};
use bench::report;
use clap::Parser;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Idle(args) = Cli::parse().command;
    let config = match IdleConfig::try_from(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard-bench: {e}");
            return ExitCode::from(64);
        }
    };
    let shutdown = CancellationToken::new();
    let on_ctrl_c = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_ctrl_c.cancel();
    });
    let result = match idle::run(&config, shutdown).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchboard-bench: {e}");
            let setup = matches!(e, IdleError::Target(_) | IdleError::FdLimit { .. });
            return ExitCode::from(if setup { 64 } else { 1 });
        }
    };
    println!("{}", result.markdown());
    if let Some(path) = &args.json
        && let Err(e) = report::write_json(path, &result)
    {
        eprintln!("switchboard-bench: cannot write {}: {e}", path.display());
        return ExitCode::from(1);
    }
    if result.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
