//! `chat`: messages through the `/chat` namespace. Senders (room members that never
//! join the live room) send in a closed loop, one message in flight each, and wait for
//! the ack: the message is stored by then. Receivers join the room and must each get
//! every acknowledged message. Reports messages stored per second, deliveries per second,
//! the ack latency (send → stored → ack) and the delivery latency (send → receipt).
//! Switchboard only: the peers have no chat.

mod config;
mod report;
mod run;

pub use config::{ChatArgs, ChatConfig};
pub use report::ChatReport;
pub use run::{ChatError, run};
