//! The chat across a cluster (`redis_url`): what `live` decides for one node, made true
//! for the fleet with the cluster's presence books (`cluster::PresenceBook`), the same
//! mechanism as `member_joined` / `member_left`.
//!
//! - book `chat`, pairs (room, user): `user_joined` when a user's first connection
//!   anywhere enters the room, `user_left` when their last one anywhere leaves it (or its
//!   node dies: the node that retires it announces);
//! - book `chat-online`, pairs (`online`, user): `presence:update online` when a user's
//!   first chat connection anywhere opens, `offline` (with last seen stored) when their
//!   last one closes or its node dies;
//! - a hash `<prefix>-sb:chat-status`, user -> `status lastSeen` (`away lastSeen chosen`
//!   for a user who chose away), written with every presence announcement, so
//!   `GET /api/presence` on any node tells a user connected to another one;
//! - the typing throttle, the quiet typer's stop and the idle timer (`fleet_live`);
//! - the signal `chat-kick`: a member removed on one node leaves the room on every node.
//!
//! Never: the rules (`service`), local bookkeeping (`live`).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::fleet_live::FleetLive;
use super::live::Status;
use crate::cluster::{Cluster, PresenceBook};

/// The one "room" of the online book.
pub(crate) const ONLINE: &str = "online";
/// The signal that takes a removed member out of a room on the other nodes.
pub(crate) const KICK_SIGNAL: &str = "chat-kick";
/// Presence changes waiting for the chat's worker, at most (beyond: dropped, logged).
pub(crate) const QUEUE: usize = 10_000;
/// How long a status read may take before the caller answers without it.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A user's fleet-wide presence changed (the online book announced it).
#[derive(Debug)]
pub(crate) enum Change {
    Online(String),
    Offline(String),
}

/// The chat's view of the cluster.
pub(crate) struct Fleet {
    pub(crate) rooms: Arc<PresenceBook>,
    pub(crate) online: Arc<PresenceBook>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) live: FleetLive,
    con: ConnectionManager,
    status_key: String,
}

impl Fleet {
    pub(crate) fn new(
        cluster: Arc<Cluster>,
        rooms: Arc<PresenceBook>,
        online: Arc<PresenceBook>,
    ) -> Fleet {
        let status_key = format!("{}-sb:chat-status", cluster.prefix());
        Fleet {
            rooms,
            online,
            live: FleetLive::new(
                cluster.connection(),
                cluster.prefix(),
                cluster.node_id(),
                &status_key,
            ),
            con: cluster.connection(),
            status_key,
            cluster,
        }
    }

    /// Records a user's announced status (`offline`: forgets it; `chosen`: an away the
    /// user chose, which activity does not end).
    pub(crate) async fn set_status(
        &self,
        user: &str,
        status: Status,
        last_seen: i64,
        chosen: bool,
    ) {
        let mut con = self.con.clone();
        let write = async {
            if status == Status::Offline {
                redis::cmd("HDEL")
                    .arg(&self.status_key)
                    .arg(user)
                    .query_async::<()>(&mut con)
                    .await
            } else {
                redis::cmd("HSET")
                    .arg(&self.status_key)
                    .arg(user)
                    .arg(if chosen && status == Status::Away {
                        format!("away {last_seen} chosen")
                    } else {
                        format!("{} {last_seen}", status.as_str())
                    })
                    .query_async::<()>(&mut con)
                    .await
            }
        };
        match tokio::time::timeout(READ_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "chat presence: writing a status to Redis"),
            Err(_) => tracing::warn!("chat presence: writing a status to Redis timed out"),
        }
    }

    /// The announced status of users connected to any node (`None` each: not online
    /// anywhere, or Redis did not answer).
    pub(crate) async fn statuses(&self, users: &[String]) -> Vec<Option<(Status, i64)>> {
        if users.is_empty() {
            return Vec::new();
        }
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.status_key).arg(users);
        let read = cmd.query_async::<Vec<Option<String>>>(&mut con);
        let Ok(Ok(found)) = tokio::time::timeout(READ_TIMEOUT, read).await else {
            return vec![None; users.len()];
        };
        found
            .into_iter()
            .map(|f| f.and_then(|s| parse(&s)))
            .collect()
    }

    /// Users with a connection in `room` on any node (`None`: the book cannot say now).
    pub(crate) async fn users_in(&self, room: &str) -> Option<Vec<String>> {
        self.rooms
            .members(room)
            .await
            .map(|m| m.into_iter().map(|(u, _)| u).collect())
    }
}

fn parse(s: &str) -> Option<(Status, i64)> {
    let (status, at) = s.split_once(' ')?;
    let at = at.strip_suffix(" chosen").unwrap_or(at);
    let status = match status {
        "online" => Status::Online,
        "away" => Status::Away,
        _ => return None,
    };
    Some((status, at.parse().ok()?))
}

/// The sender the online book's announcer queues changes on, and its receiver.
pub(crate) fn channel() -> (mpsc::Sender<Change>, mpsc::Receiver<Change>) {
    mpsc::channel(QUEUE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse() {
        assert_eq!(parse("online 5"), Some((Status::Online, 5)));
        assert_eq!(parse("away 7"), Some((Status::Away, 7)));
        assert_eq!(parse("away 8 chosen"), Some((Status::Away, 8)));
        for bad in ["offline 5", "online", "online x", ""] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
