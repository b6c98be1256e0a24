//! Counts across nodes: `GET /api/rooms[/{room}]` asks every live Switchboard node for
//! its share and adds them up.
//!
//! A request is JSON `{"id", "from", "room"?}` on `<prefix>-sb-census#`; each other node
//! answers on `<prefix>-sb-census#<from>#` with `{"id", "node", "rooms"}` (every room
//! with its members) or `{"id", "node", "room"}` (one room's detail, or null). The asker
//! waits for every node its heartbeats list as alive, at most `CENSUS_TIMEOUT`; a node
//! that did not answer in time is named, and the answer is marked partial.
//!
//! Never: keeps counts of its own (each answer is read from the hub when asked).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hub::{Hub, RoomInfo};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

use super::link::BusMetrics;
use super::nodes::Nodes;

/// How long an asker waits for the other nodes.
const CENSUS_TIMEOUT: Duration = Duration::from_millis(1500);

#[derive(Serialize, Deserialize)]
struct Ask {
    id: u64,
    from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    room: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Answer {
    id: u64,
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rooms: Option<Vec<(String, usize)>>,
    #[serde(default)]
    room: Option<RoomShare>,
}

/// One node's share of a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomShare {
    /// Members on that node.
    pub members: usize,
    /// Members per transport there.
    pub by_transport: Vec<(String, usize)>,
    /// Users present there.
    pub users: Vec<String>,
    /// Messages kept for replay there.
    pub history: usize,
    /// The room's newest offset there.
    pub last_offset: u64,
}

impl From<RoomInfo> for RoomShare {
    fn from(r: RoomInfo) -> RoomShare {
        RoomShare {
            members: r.members,
            by_transport: r.by_transport,
            users: r.users,
            history: r.history,
            last_offset: r.last_offset,
        }
    }
}

/// The fleet's answers to one question: per node, and the nodes that did not answer.
#[derive(Debug)]
pub struct Tally<T> {
    /// `(node id, its answer)`, this node first.
    pub answers: Vec<(String, T)>,
    /// Live nodes that did not answer in time.
    pub missing: Vec<String>,
}

/// Asks and answers room counts for one node.
pub struct Census {
    me: String,
    /// Questions go here; answers to node N on `<ask_channel>N#`.
    ask_channel: String,
    hub: Arc<Hub>,
    nodes: Arc<Nodes>,
    con: ConnectionManager,
    metrics: Arc<BusMetrics>,
    max_message: usize,
    next: AtomicU64,
    waiting: super::waiting::Waiting<u64, Answer>,
}

impl std::fmt::Debug for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Census").field("node", &self.me).finish()
    }
}

fn local_rooms(hub: &Hub) -> Vec<(String, usize)> {
    hub.rooms()
        .into_iter()
        .filter(|(r, _)| !r.starts_with("sid:") && !r.starts_with("nsp:"))
        .collect()
}

impl Census {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        prefix: &str,
        me: &str,
        hub: Arc<Hub>,
        nodes: Arc<Nodes>,
        con: ConnectionManager,
        metrics: Arc<BusMetrics>,
        max_message: usize,
    ) -> Census {
        Census {
            me: me.to_owned(),
            ask_channel: format!("{prefix}-sb-census#"),
            hub,
            nodes,
            con,
            metrics,
            max_message,
            next: AtomicU64::new(1),
            waiting: Default::default(),
        }
    }

    /// The channels this node subscribes to: the questions and its own answers.
    pub(crate) fn channels(&self) -> [String; 2] {
        [self.ask_channel.clone(), self.reply_channel(&self.me)]
    }

    fn reply_channel(&self, node: &str) -> String {
        format!("{}{node}#", self.ask_channel)
    }

    /// Whether `channel` is one of the census' channels.
    pub(crate) fn owns(&self, channel: &str) -> bool {
        channel == self.ask_channel || channel == self.reply_channel(&self.me)
    }

    /// A message on one of [`Census::channels`].
    pub(crate) fn on_message(&self, channel: &str, bytes: &[u8]) {
        if bytes.len() > self.max_message {
            return self.drop("oversized");
        }
        if channel == self.ask_channel {
            let Ok(ask) = serde_json::from_slice::<Ask>(bytes) else {
                return self.drop("bad census question");
            };
            if ask.from == self.me {
                return;
            }
            let answer = self.answer(&ask);
            let channel = self.reply_channel(&ask.from);
            let mut con = self.con.clone();
            tokio::spawn(async move {
                let json = serde_json::to_vec(&answer).unwrap_or_default();
                let sent: Result<redis::RedisResult<i64>, _> = tokio::time::timeout(
                    CENSUS_TIMEOUT,
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(json)
                        .query_async(&mut con),
                )
                .await;
                if !matches!(sent, Ok(Ok(_))) {
                    tracing::debug!("cluster census: an answer could not be sent");
                }
            });
        } else {
            let Ok(answer) = serde_json::from_slice::<Answer>(bytes) else {
                return self.drop("bad census answer");
            };
            let id = answer.id;
            self.waiting.deliver(&id, answer);
        }
    }

    fn drop(&self, why: &str) {
        self.metrics.dropped_request.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(reason = why, "cluster census: dropped a message");
    }

    fn answer(&self, ask: &Ask) -> Answer {
        match &ask.room {
            None => Answer {
                id: ask.id,
                node: self.me.clone(),
                rooms: Some(local_rooms(&self.hub)),
                room: None,
            },
            Some(room) => Answer {
                id: ask.id,
                node: self.me.clone(),
                rooms: None,
                room: self.hub.room_info(room).map(RoomShare::from),
            },
        }
    }

    /// Every room with members, per node.
    pub async fn rooms(&self) -> Tally<Vec<(String, usize)>> {
        let mut tally = self.ask(None).await;
        let answers = std::mem::take(&mut tally.answers);
        Tally {
            answers: std::iter::once((self.me.clone(), local_rooms(&self.hub)))
                .chain(
                    answers
                        .into_iter()
                        .map(|(n, a)| (n, a.rooms.unwrap_or_default())),
                )
                .collect(),
            missing: tally.missing,
        }
    }

    /// One room's share on each node (`None`: no members there).
    pub async fn room(&self, room: &str) -> Tally<Option<RoomShare>> {
        let mut tally = self.ask(Some(room.to_owned())).await;
        let answers = std::mem::take(&mut tally.answers);
        Tally {
            answers: std::iter::once((
                self.me.clone(),
                self.hub.room_info(room).map(RoomShare::from),
            ))
            .chain(answers.into_iter().map(|(n, a)| (n, a.room)))
            .collect(),
            missing: tally.missing,
        }
    }

    /// Asks every other live node; waits for all of them or the timeout.
    async fn ask(&self, room: Option<String>) -> Tally<Answer> {
        let mut expected: Vec<String> = self
            .nodes
            .alive()
            .into_iter()
            .map(|n| n.id)
            .filter(|id| *id != self.me)
            .collect();
        if expected.is_empty() {
            return Tally {
                answers: Vec::new(),
                missing: Vec::new(),
            };
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut waiter = self.waiting.register(id);
        let ask = Ask {
            id,
            from: self.me.clone(),
            room,
        };
        let mut con = self.con.clone();
        let json = serde_json::to_vec(&ask).unwrap_or_default();
        let sent: Result<redis::RedisResult<i64>, _> = tokio::time::timeout(
            CENSUS_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&self.ask_channel)
                .arg(json)
                .query_async(&mut con),
        )
        .await;
        let mut answers = Vec::new();
        if matches!(sent, Ok(Ok(_))) {
            let deadline = tokio::time::Instant::now() + CENSUS_TIMEOUT;
            while !expected.is_empty() {
                let Some(answer) = waiter.next(deadline).await else {
                    break;
                };
                if let Some(p) = expected.iter().position(|n| *n == answer.node) {
                    expected.swap_remove(p);
                    answers.push((answer.node.clone(), answer));
                }
            }
        }
        drop(waiter);
        expected.sort();
        Tally {
            answers,
            missing: expected,
        }
    }
}
