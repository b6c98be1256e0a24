//! The fleet operations from our side: what Node's `io.fetchSockets()`,
//! `io.socketsJoin()`, `io.socketsLeave()`, `io.disconnectSockets()`,
//! `io.serverSideEmit()` and `io.timeout(t).emit()` with acks do, for a Socket.IO
//! namespace, on this node and (in cluster mode) on every other node, Switchboard or
//! Node, through the Node adapter's request protocol.
//!
//! A request is JSON on `<prefix>-request#<nsp>#` with this node's uid and a fresh
//! `requestId`; answers arrive on `<prefix>-response#<nsp>#` (and `…#<uid>#`), and the
//! [`Requests`](super::requests) subscriber hands them here by id. How many answers to
//! wait for is what Node counts too: the request channel's subscribers (`PUBSUB NUMSUB`)
//! minus this node. Every wait has a timeout; what did not answer in time is reported
//! (`missing`), never waited for longer.
//!
//! Without `redis_url` the same calls act on this node alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_json::{Value as Json, json};
use socketio::{Namespace, Selector};

use super::requests::{describe, kind};

/// Answers to the Node adapter's requests, by request id.
pub(crate) type Waiting = super::waiting::Waiting<String, Json>;

/// The Redis side of the operations, on a cluster node.
pub(crate) struct Remote {
    pub(crate) uid: String,
    pub(crate) prefix: String,
    pub(crate) con: ConnectionManager,
    pub(crate) waiting: Arc<Waiting>,
}

/// What several nodes answered.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Gathered<T> {
    /// The answers: this node's first.
    pub items: Vec<T>,
    /// Other nodes that did not answer in time (0 on a single node).
    pub missing: usize,
}

/// The answer to a broadcast with acks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Acked {
    /// Clients the message went to, on every node that answered.
    pub clients: usize,
    /// Their acks (each client's first ack argument), in arrival order.
    pub acks: Vec<Json>,
    /// Clients that did not ack in time.
    pub missing_acks: usize,
    /// Nodes that never said how many clients they had.
    pub missing_nodes: usize,
}

/// Fleet operations on one Socket.IO namespace.
pub struct SocketOps {
    nsp: Arc<Namespace>,
    remote: Option<Arc<Remote>>,
    next: AtomicU64,
}

impl std::fmt::Debug for SocketOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketOps")
            .field("nsp", &self.nsp.name())
            .field("cluster", &self.remote.is_some())
            .finish()
    }
}

/// The longest wait a caller may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

impl SocketOps {
    /// The operations on `nsp`; `remote` in cluster mode.
    pub(crate) fn new(nsp: Arc<Namespace>, remote: Option<Arc<Remote>>) -> SocketOps {
        SocketOps {
            nsp,
            remote,
            next: AtomicU64::new(1),
        }
    }

    /// On this node alone (single-node mode).
    pub fn local(nsp: Arc<Namespace>) -> SocketOps {
        SocketOps::new(nsp, None)
    }

    /// The namespace these operations act on.
    pub fn namespace(&self) -> &str {
        self.nsp.name()
    }

    fn request_channel(&self, remote: &Remote) -> String {
        format!("{}-request#{}#", remote.prefix, self.nsp.name())
    }

    /// Publishes a request; returns how many other nodes will answer it.
    async fn publish(&self, remote: &Remote, request: &Json) -> redis::RedisResult<usize> {
        let channel = self.request_channel(remote);
        let mut con = remote.con.clone();
        let (_, subscribers): (String, usize) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(&channel)
            .query_async(&mut con)
            .await?;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(request.to_string())
            .query_async(&mut con)
            .await?;
        Ok(subscribers.saturating_sub(1))
    }

    /// Sends a request and collects answers until `expected(answers so far)` says done
    /// or `timeout`; returns the answers and how many nodes were expected.
    async fn ask(
        &self,
        mut request: Json,
        timeout: Duration,
        mut done: impl FnMut(&[Json], usize) -> bool,
    ) -> (Vec<Json>, usize) {
        let Some(remote) = &self.remote else {
            return (Vec::new(), 0);
        };
        let id = format!(
            "{}-{}",
            remote.uid,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        request["uid"] = Json::from(remote.uid.as_str());
        request["requestId"] = Json::from(id.as_str());
        let mut waiter = remote.waiting.register(id);
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_TIMEOUT);
        let mut answers = Vec::new();
        let expected = match tokio::time::timeout_at(deadline, self.publish(remote, &request)).await
        {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cluster: a request could not be sent");
                return (answers, usize::MAX);
            }
            Err(_) => return (answers, usize::MAX),
        };
        while !done(&answers, expected) {
            match waiter.next(deadline).await {
                Some(a) => answers.push(a),
                None => break,
            }
        }
        (answers, expected)
    }

    /// Sends a request nobody answers (Node's joins, leaves and disconnects by selector).
    async fn tell(&self, mut request: Json) -> bool {
        let Some(remote) = &self.remote else {
            return true;
        };
        request["uid"] = Json::from(remote.uid.as_str());
        tokio::time::timeout(Duration::from_secs(2), self.publish(remote, &request))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn opts(sel: &Selector) -> Json {
        json!({"rooms": sel.rooms, "except": sel.except})
    }

    /// `fetchSockets()`: every chosen socket on every node, described as Node does
    /// (`{id, handshake, rooms, data}`).
    pub async fn fetch_sockets(&self, sel: &Selector, timeout: Duration) -> Gathered<Json> {
        let mut items: Vec<Json> = self.nsp.select(sel).iter().map(describe).collect();
        let (answers, expected) = self
            .ask(
                json!({"type": kind::REMOTE_FETCH, "opts": Self::opts(sel)}),
                timeout,
                |a, n| a.len() >= n,
            )
            .await;
        let answered = answers.len();
        for a in answers {
            if let Some(Json::Array(sockets)) = a.get("sockets") {
                items.extend(sockets.iter().cloned());
            }
        }
        Gathered {
            items,
            missing: missing(expected, answered),
        }
    }

    /// `socketsJoin(rooms)`: the chosen sockets, on every node, join `rooms`. Returns
    /// how many were chosen here and whether the other nodes were told.
    pub async fn sockets_join(&self, sel: &Selector, rooms: &[String]) -> (usize, bool) {
        let here = self.nsp.sockets_join(sel, rooms);
        let told = self
            .tell(json!({"type": kind::REMOTE_JOIN, "opts": Self::opts(sel), "rooms": rooms}))
            .await;
        (here, told)
    }

    /// `socketsLeave(rooms)`, likewise.
    pub async fn sockets_leave(&self, sel: &Selector, rooms: &[String]) -> (usize, bool) {
        let here = self.nsp.sockets_leave(sel, rooms);
        let told = self
            .tell(json!({"type": kind::REMOTE_LEAVE, "opts": Self::opts(sel), "rooms": rooms}))
            .await;
        (here, told)
    }

    /// `disconnectSockets(close)`, likewise.
    pub async fn disconnect_sockets(&self, sel: &Selector, close: bool) -> (usize, bool) {
        let here = self.nsp.disconnect_sockets(sel, close);
        let told = self
            .tell(json!({"type": kind::REMOTE_DISCONNECT, "opts": Self::opts(sel), "close": close}))
            .await;
        (here, told)
    }

    /// `serverSideEmit(event, ...args)` to every other node. With `ack`, waits up to it
    /// for one answer per node (Node's `serverSideEmitWithAck`) and returns them.
    pub async fn server_side_emit(
        &self,
        event: &str,
        args: &[Json],
        ack: Option<Duration>,
    ) -> Gathered<Json> {
        let mut data = vec![Json::from(event)];
        data.extend(args.iter().cloned());
        let request = json!({"type": kind::SERVER_SIDE_EMIT, "data": data});
        let Some(timeout) = ack else {
            self.tell(request).await;
            return Gathered::default();
        };
        let (answers, expected) = self.ask(request, timeout, |a, n| a.len() >= n).await;
        let answered = answers.len();
        Gathered {
            items: answers
                .into_iter()
                .map(|mut a| a.get_mut("data").map(Json::take).unwrap_or(Json::Null))
                .collect(),
            missing: missing(expected, answered),
        }
    }

    /// `io.timeout(t).emit(event, ...args)` with acks: to the chosen sockets on every
    /// node; waits up to `timeout` for every client's ack.
    pub async fn emit_with_acks(
        &self,
        sel: &Selector,
        event: &str,
        args: &[Json],
        timeout: Duration,
    ) -> Acked {
        let timeout = timeout.min(MAX_TIMEOUT);
        let encoded: Vec<String> = args.iter().map(Json::to_string).collect();
        let payload = hub::Payload::raw_args(encoded.iter().map(String::as_str));
        let local = async {
            let mut count = 0;
            let mut acks = Vec::new();
            self.nsp
                .emit_with_acks(
                    sel,
                    event,
                    payload,
                    timeout,
                    |n| count = n,
                    |answer| {
                        if let Ok(p) = answer {
                            acks.push(first_arg(&p));
                        }
                    },
                )
                .await;
            (count, acks)
        };
        let mut data = vec![Json::from(event)];
        data.extend(args.iter().cloned());
        let request = json!({
            "type": kind::BROADCAST,
            "packet": {"type": 2, "data": data, "nsp": self.nsp.name()},
            "opts": {"rooms": sel.rooms, "except": sel.except, "flags": {"timeout": timeout.as_millis() as u64}},
        });
        // Done when every node gave its count and every counted client acked.
        let remote = self.ask(request, timeout, |answers, nodes| {
            let counts: Vec<u64> = answers
                .iter()
                .filter(|a| a["type"] == kind::BROADCAST_CLIENT_COUNT)
                .filter_map(|a| a["clientCount"].as_u64())
                .collect();
            let acks = answers
                .iter()
                .filter(|a| a["type"] == kind::BROADCAST_ACK)
                .count() as u64;
            counts.len() >= nodes && acks >= counts.iter().sum::<u64>()
        });
        let ((count, mut acks), (answers, nodes)) = tokio::join!(local, remote);
        let mut clients = count;
        let mut counted_nodes = 0;
        for a in answers {
            if a["type"] == kind::BROADCAST_CLIENT_COUNT {
                counted_nodes += 1;
                clients += a["clientCount"].as_u64().unwrap_or(0) as usize;
            } else if a["type"] == kind::BROADCAST_ACK {
                acks.push(a.get("packet").cloned().unwrap_or(Json::Null));
            }
        }
        Acked {
            clients,
            missing_acks: clients.saturating_sub(acks.len()),
            acks,
            missing_nodes: missing(nodes, counted_nodes),
        }
    }
}

/// Nodes expected but not heard from; every one of them when the request could not be
/// sent (`usize::MAX` expected: reported as 1, the number is unknown).
fn missing(expected: usize, answered: usize) -> usize {
    if expected == usize::MAX {
        1
    } else {
        expected.saturating_sub(answered)
    }
}

/// The first argument of an ack, as JSON (Node's `emitWithAck` resolves with it).
fn first_arg(p: &hub::Payload) -> Json {
    let text = format!("[{}]", p.args);
    serde_json::from_str::<Vec<Json>>(&text)
        .ok()
        .and_then(|v| v.into_iter().next())
        .unwrap_or(Json::Null)
}
