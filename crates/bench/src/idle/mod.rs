//! `idle`: how much server memory one connected, room-joined, silent client costs, and
//! how fast clients can connect and join. Owns its flags, run and report; knows nothing
//! of other scenarios.

mod config;
mod paced;
mod pusher;
mod report;
mod run;
#[cfg(test)]
mod tests;

pub use config::{ConfigError, IdleArgs, IdleConfig};
pub use paced::PacedReport;
pub use report::{IdleReport, Percentiles};
pub use run::{IdleError, run};
