//! `switchboard-bench`: parse flags, run one scenario, print markdown, write JSON.
//! Exit 0 when the run was correct (every client served, nothing lost or oversold),
//! 1 when it was not, 64 on bad flags or setup.

use std::path::Path;
use std::process::ExitCode;

use bench::cli::{Cli, Command};
use bench::{chat, compare, fanout, idle, publish, report, soak, storm};
use clap::Parser;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

const SETUP: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let shutdown = CancellationToken::new();
    let on_ctrl_c = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_ctrl_c.cancel();
    });
    match Cli::parse().command {
        Command::Idle(args) => match idle::IdleConfig::try_from(&args) {
            Err(e) => setup(e),
            Ok(c) => match idle::run(&c, shutdown).await {
                Ok(r) => finish(&r.markdown(), &r, r.ok(), args.json.as_deref()),
                Err(
                    e @ (idle::IdleError::Target(_)
                    | idle::IdleError::Sources(_)
                    | idle::IdleError::FdLimit { .. }),
                ) => setup(e),
                Err(e) => failed(e),
            },
        },
        Command::Fanout(args) => match fanout::FanoutConfig::try_from(&args) {
            Err(e) => setup(e),
            Ok(c) => match fanout::run(&c, shutdown).await {
                Ok(r) => finish(&r.markdown(), &r, r.ok(), args.json.as_deref()),
                Err(e) => setup(e),
            },
        },
        Command::Storm(args) => match storm::StormConfig::try_from(&args) {
            Err(e) => setup(e),
            Ok(c) => match storm::run(&c, shutdown).await {
                Ok(r) => finish(&r.markdown(), &r, r.ok(), args.json.as_deref()),
                Err(e) => setup(e),
            },
        },
        Command::Publish(args) => match publish::PublishConfig::try_from(&args) {
            Err(e) => setup(e),
            Ok(c) => match publish::run(&c, shutdown).await {
                Ok(r) => finish(&r.markdown(), &r, r.ok(), args.json.as_deref()),
                Err(e) => setup(e),
            },
        },
        Command::Chat(args) => match chat::ChatConfig::try_from(&args) {
            Err(e) => setup(e),
            Ok(c) => match chat::run(&c, shutdown).await {
                Ok(r) => finish(&r.markdown(), &r, r.ok(), args.json.as_deref()),
                Err(e) => setup(e),
            },
        },
        Command::Soak(args) => match soak::SoakConfig::try_from(&args) {
            Err(e) => setup(e),
            Ok(c) => match soak::run(&c, shutdown).await {
                Ok(r) => finish(&r.markdown(), &r, r.ok(), args.json.as_deref()),
                Err(e) => setup(e),
            },
        },
        Command::Compare(args) => match compare::render(&args) {
            Ok(text) => {
                print_out(&text);
                ExitCode::SUCCESS
            }
            Err(e) => setup(e),
        },
    }
}

fn setup(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchboard-bench: {e}");
    ExitCode::from(SETUP)
}

fn failed(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchboard-bench: {e}");
    ExitCode::from(1)
}

/// Prints to stdout; a closed stdout (`| head`) is not worth a panic.
fn print_out(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

fn finish<T: Serialize>(markdown: &str, report: &T, ok: bool, json: Option<&Path>) -> ExitCode {
    print_out(markdown);
    if let Some(path) = json
        && let Err(e) = report::write_json(path, report)
    {
        return failed(format!("cannot write {}: {e}", path.display()));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
