//! `storm`: many buyers race for seats in every category of several events. Each buyer
//! holds a random quantity in each category (in its own random order), then releases
//! them, until the time is up; the last round's holds stay. Measures holds per second
//! and checks that no category was oversold: every update an observer in each room
//! saw was consistent, and at the end the server's held seats equal what the buyers
//! were granted, within capacity.

mod config;
mod report;
mod run;

pub use config::{StormArgs, StormConfig};
pub use report::{CategoryCheck, StormReport};
pub use run::{StormError, run};
