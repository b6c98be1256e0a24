//! The typed contract: the TypeScript declarations of every payload a client sends (to
//! `/realtime`, `/chat`, `/ws` chat actions, the HTTP API) or receives (tickets, chat,
//! presence, publish API), generated from the
//! Rust types the server serializes with `ts-rs`. `clients/typescript/` holds the output,
//! checked in; `tests/typescript.rs` regenerates it (a plain `cargo test`), and CI fails
//! when that changed a file (`scripts/test`).
//!
//! Never: a type of its own. Each type lives beside the code that sends it (`chat::wire`,
//! `tickets::wire`, `api`, `chat::api`; what clients send in `chat::requests` and
//! `tickets::requests`); this module only lists them.

use std::path::Path;

use ts_rs::{Config, ExportError, TS};

use crate::chat::wire as chat;
use crate::tickets::wire as tickets;

/// Writes one `<Type>.ts` file per type (and per type they use) into `dir`. Integers are
/// `number`: every id and time the server sends fits in 2^53.
pub fn export_typescript(dir: &Path) -> Result<(), ExportError> {
    let cfg = Config::new().with_large_int("number").with_out_dir(dir);
    // /realtime: the ticket contract.
    tickets::RealtimeConnected::export_all(&cfg)?;
    tickets::EventRoomAnswer::export_all(&cfg)?;
    tickets::LockAnswer::export_all(&cfg)?;
    tickets::Outcome::export_all(&cfg)?;
    tickets::MyLocks::export_all(&cfg)?;
    tickets::HeartbeatAnswer::export_all(&cfg)?;
    tickets::ErrorEvent::export_all(&cfg)?;
    tickets::AvailabilityUpdate::export_all(&cfg)?;
    tickets::OrderOutcome::export_all(&cfg)?;
    // /realtime: what clients send (event name -> argument).
    crate::tickets::requests::RealtimeRequests::export_all(&cfg)?;
    // /chat, /ws chat actions, SSE: events and acks.
    chat::ChatMessage::export_all(&cfg)?;
    chat::RoomInfo::export_all(&cfg)?;
    chat::RoomEntry::export_all(&cfg)?;
    chat::MemberInfo::export_all(&cfg)?;
    chat::UserInRoom::export_all(&cfg)?;
    chat::ReadReceipt::export_all(&cfg)?;
    chat::PresenceUpdate::export_all(&cfg)?;
    chat::MemberRemoved::export_all(&cfg)?;
    chat::RoleChanged::export_all(&cfg)?;
    chat::ChatConnected::export_all(&cfg)?;
    chat::ChatRefusal::export_all(&cfg)?;
    chat::JoinAck::export_all(&cfg)?;
    chat::RoomAck::export_all(&cfg)?;
    chat::Sent::export_all(&cfg)?;
    chat::MessageAck::export_all(&cfg)?;
    chat::ReadAck::export_all(&cfg)?;
    chat::HistoryPage::export_all(&cfg)?;
    chat::PresenceAck::export_all(&cfg)?;
    chat::RoomsAck::export_all(&cfg)?;
    chat::RoomCreated::export_all(&cfg)?;
    chat::Kicked::export_all(&cfg)?;
    // /chat and /ws chat actions: what clients send.
    crate::chat::requests::ChatRequests::export_all(&cfg)?;
    crate::chat::requests::WsChatAction::export_all(&cfg)?;
    // HTTP: presence, chat messages, the publish API.
    chat::UserPresence::export_all(&cfg)?;
    crate::chat::api::PostMessage::export_all(&cfg)?;
    crate::api::PublishRequest::export_all(&cfg)?;
    crate::api::Published::export_all(&cfg)?;
    crate::api::ErrorBody::export_all(&cfg)?;
    Ok(())
}
