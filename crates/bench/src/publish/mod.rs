//! `publish`: HTTP publishes (`POST /api/publish`) to one room whose members are
//! Socket.IO, plain WebSocket and SSE clients at once; every member must receive every
//! message. Closed loop: the next publish when the previous one is answered and the
//! slowest member is at most `--window` messages behind. Reports publishes and
//! deliveries per second and the latency from the publish to each receipt, per
//! transport. Switchboard only: the peers have no such endpoints.
//!
//! `clients` holds the three kinds of members (`sio`, `ws`, `sse`, each the smallest
//! client that speaks it); `run` drives them; `report` renders.

pub(crate) mod clients;
mod config;
mod report;
mod run;

pub use config::{PublishArgs, PublishConfig};
pub use report::{PublishReport, TransportResult};
pub use run::{PublishError, run};
