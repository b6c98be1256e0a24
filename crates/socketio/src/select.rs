//! A namespace's connected sockets, chosen the way Node's in-memory adapter chooses
//! them: a socket matches `rooms` when it is in any of them (every socket when `rooms`
//! is empty) and is in none of `except`. As in Node, every socket is also in the room
//! named by its own id.
//!
//! These are the local halves of the cluster operations (`fetchSockets`, `socketsJoin`,
//! `socketsLeave`, `disconnectSockets`, broadcast with acks).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hub::Payload;

use crate::namespace::Namespace;
use crate::socket::{AckError, Socket};

/// Which sockets of a namespace an operation applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Sockets in any of these rooms; all sockets when empty.
    pub rooms: Vec<String>,
    /// Minus the sockets in any of these rooms.
    pub except: Vec<String>,
}

impl Selector {
    /// Every socket of the namespace.
    pub fn all() -> Selector {
        Selector::default()
    }

    /// Whether a socket with this id, in these rooms (sorted), is chosen.
    fn matches(&self, id: &str, rooms: &[String]) -> bool {
        let is_in = |r: &String| r == id || rooms.binary_search(r).is_ok();
        (self.rooms.is_empty() || self.rooms.iter().any(is_in)) && !self.except.iter().any(is_in)
    }
}

impl Namespace {
    pub(crate) fn track(&self, socket: &Arc<Socket>) {
        self.sockets.lock().insert(socket.sid(), socket.clone());
    }

    pub(crate) fn untrack(&self, socket: &Arc<Socket>) {
        let mut sockets = self.sockets.lock();
        if sockets
            .get(&socket.sid())
            .is_some_and(|s| Arc::ptr_eq(s, socket))
        {
            sockets.remove(&socket.sid());
        }
    }

    /// The connected socket with this id.
    pub fn socket(&self, id: &str) -> Option<Arc<Socket>> {
        let id = engineio::Sid::parse(id)?;
        self.sockets.lock().get(&id).cloned()
    }

    /// Every connected socket (in no particular order).
    pub fn sockets(&self) -> Vec<Arc<Socket>> {
        self.sockets.lock().values().cloned().collect()
    }

    /// The connected sockets `sel` chooses.
    pub fn select(&self, sel: &Selector) -> Vec<Arc<Socket>> {
        self.sockets()
            .into_iter()
            .filter(|s| sel.matches(s.id(), &s.rooms()))
            .collect()
    }

    /// Every room with a connected socket in it, socket-id rooms included (Node's
    /// `adapter.rooms.keys()`), sorted.
    pub fn all_rooms(&self) -> Vec<String> {
        let mut rooms: Vec<String> = Vec::new();
        for s in self.sockets() {
            rooms.push(s.id().to_owned());
            rooms.extend(s.rooms());
        }
        rooms.sort();
        rooms.dedup();
        rooms
    }

    /// Makes the chosen sockets join `rooms`; returns how many sockets were chosen.
    /// A socket at its room limit skips the rooms over it.
    pub fn sockets_join(&self, sel: &Selector, rooms: &[String]) -> usize {
        let chosen = self.select(sel);
        for s in &chosen {
            for r in rooms {
                if let Err(e) = s.join(r) {
                    tracing::debug!(socket = s.id(), room = %r, error = ?e, "remote join refused");
                }
            }
        }
        chosen.len()
    }

    /// Makes the chosen sockets leave `rooms`; returns how many sockets were chosen.
    pub fn sockets_leave(&self, sel: &Selector, rooms: &[String]) -> usize {
        let chosen = self.select(sel);
        for s in &chosen {
            for r in rooms {
                s.leave(r);
            }
        }
        chosen.len()
    }

    /// Disconnects the chosen sockets (with `close`, their whole connections); returns
    /// how many.
    pub fn disconnect_sockets(&self, sel: &Selector, close: bool) -> usize {
        let chosen = self.select(sel);
        for s in &chosen {
            s.disconnect(close);
        }
        chosen.len()
    }

    /// Emits `event` to the chosen sockets, each waiting up to `timeout` for its ack.
    /// `on_count` learns how many sockets were chosen before any ack comes back;
    /// `on_ack` gets each answer (or error) as it arrives. Returns when all are in.
    pub async fn emit_with_acks(
        &self,
        sel: &Selector,
        event: &str,
        payload: Payload,
        timeout: Duration,
        on_count: impl FnOnce(usize),
        mut on_ack: impl FnMut(Result<Payload, AckError>),
    ) {
        let chosen = self.select(sel);
        on_count(chosen.len());
        let mut waiting: FuturesUnordered<_> = chosen
            .iter()
            .map(|s| s.emit_with_ack(event, payload.clone(), timeout))
            .collect();
        while let Some(answer) = waiting.next().await {
            on_ack(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Selector;

    fn sel(rooms: &[&str], except: &[&str]) -> Selector {
        Selector {
            rooms: rooms.iter().map(|r| (*r).to_owned()).collect(),
            except: except.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn rooms_or_all_minus_except_and_the_own_id_room() {
        let rooms = vec!["a".to_owned(), "b".to_owned()];
        assert!(Selector::all().matches("s1", &rooms));
        assert!(Selector::all().matches("s1", &[]));
        assert!(sel(&["b", "z"], &[]).matches("s1", &rooms));
        assert!(!sel(&["z"], &[]).matches("s1", &rooms));
        assert!(sel(&["s1"], &[]).matches("s1", &[]));
        assert!(!sel(&["a"], &["b"]).matches("s1", &rooms));
        assert!(!sel(&[], &["s1"]).matches("s1", &rooms));
        assert!(sel(&[], &["z"]).matches("s1", &rooms));
    }
}
