//! Flags of `switchboard-bench publish`.

use std::path::PathBuf;

use crate::report::RunArgs;

#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// CI scale.
    #[arg(long)]
    pub smoke: bool,
    /// Write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct PublishConfig {
    pub url: String,
}
