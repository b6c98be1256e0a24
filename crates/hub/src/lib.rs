//! The room fabric shared by every transport (DESIGN.md principle 1).
//!
//! # Layout
//! - [`Hub`]: rooms, membership, offsets and per-room history, behind one lock.
//! - [`Envelope`]: one published message, with a per-wire-format cache so a broadcast
//!   is encoded once per format and every recipient shares the bytes (principle 2).
//! - [`Member`]: what a transport implements to receive envelopes.
//! - [`Relay`]: what makes the hub one node of a cluster (publishes sequenced elsewhere,
//!   delivered here with [`Hub::deliver_sequenced`]).
//!
//! The hub never does I/O and never encodes for a wire format itself: members do, through
//! [`Envelope::encoded`]. Its lock is the one place offsets are assigned, so every member
//! sees a room's messages in offset order and a replay joined under the same lock can
//! neither miss nor repeat a message.

#![warn(missing_docs)]

mod envelope;
mod hub;

pub use envelope::{Envelope, FormatId, Payload};
pub use hub::{
    Delivery, Done, EVERYONE, Gap, Hub, HubConfig, HubStats, JoinError, LatestFn, Member, MemberId,
    Presence, Publish, Relay, RoomId, RoomInfo,
};
