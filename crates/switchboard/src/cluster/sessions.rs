//! Recoverable Socket.IO sessions, shared by the fleet: each node writes its live
//! sessions' rooms to Redis (`<prefix>-sb:session:<nsp>:<pid>`, JSON, with a TTL of the
//! recovery window plus the node timeout, refreshed while the session lives), so a client
//! whose node died can resume on any other node: that node reads the rooms and replays
//! from its own history, which holds every node's messages (see `relay`).
//!
//! Owns the records and their refresh. Never blocks a socket: writes go through a
//! bounded queue to one task; a lookup waits at most a second and then answers "unknown"
//! (the client gets a fresh session, never a partial one).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use socketio::{SessionDirectory, SessionRecord};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A change to write.
enum Write {
    Put(String, String),
    Delete(String),
}

/// The fleet's session directory, as one node sees it.
pub(crate) struct Sessions {
    prefix: String,
    node: String,
    ttl: Duration,
    con: ConnectionManager,
    tx: mpsc::Sender<Write>,
    /// This node's live records (key -> JSON), refreshed before their TTL runs out.
    live: Mutex<HashMap<String, String>>,
}

impl Sessions {
    pub(crate) fn new(
        prefix: &str,
        node: &str,
        ttl: Duration,
        con: ConnectionManager,
        tasks: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) -> Arc<Sessions> {
        let (tx, rx) = mpsc::channel(8192);
        let s = Arc::new(Sessions {
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            ttl,
            con: con.clone(),
            tx,
            live: Mutex::new(HashMap::new()),
        });
        tasks.spawn(writer(s.clone(), rx, con, stop.clone()));
        s
    }

    fn key(&self, nsp: &str, pid: &str) -> String {
        format!("{}-sb:session:{nsp}:{pid}", self.prefix)
    }
}

impl SessionDirectory for Sessions {
    fn record(&self, nsp: &str, session: &SessionRecord) {
        let key = self.key(nsp, &session.pid);
        let json = serde_json::json!({
            "node": self.node,
            "sid": session.sid,
            "user": session.user,
            "rooms": session.rooms,
            "grants": session.grants,
        })
        .to_string();
        self.live.lock().insert(key.clone(), json.clone());
        // A full queue loses a refresh, not the session: the periodic refresh rewrites it.
        let _ = self.tx.try_send(Write::Put(key, json));
    }

    fn detach(&self, nsp: &str, pid: &str) {
        // Still recoverable elsewhere until its TTL, but no longer refreshed by us.
        self.live.lock().remove(&self.key(nsp, pid));
    }

    fn forget(&self, nsp: &str, pid: &str) {
        let key = self.key(nsp, pid);
        self.live.lock().remove(&key);
        let _ = self.tx.try_send(Write::Delete(key));
    }

    fn lookup<'a>(&'a self, nsp: &'a str, pid: &'a str) -> BoxFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let mut con = self.con.clone();
            let key = self.key(nsp, pid);
            let got: Option<String> =
                tokio::time::timeout(Duration::from_secs(1), con.get::<_, Option<String>>(&key))
                    .await
                    .ok()?
                    .ok()?;
            let v: serde_json::Value = serde_json::from_str(&got?).ok()?;
            let rooms = v["rooms"]
                .as_array()?
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect();
            Some(SessionRecord {
                pid: pid.to_owned(),
                sid: v["sid"].as_str()?.to_owned(),
                user: v["user"].as_str().map(str::to_owned),
                rooms,
                grants: v["grants"].as_array().map(|g| {
                    g.iter()
                        .filter_map(|r| r.as_str().map(str::to_owned))
                        .collect()
                }),
                node: v["node"].as_str().map(str::to_owned),
            })
        })
    }

    fn owner<'a>(&'a self, nsp: &'a str, pid: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move { self.lookup(nsp, pid).await.and_then(|r| r.node) })
    }

    fn node(&self) -> &str {
        &self.node
    }
}

/// Writes changes, and refreshes this node's live records every third of the TTL.
async fn writer(
    s: Arc<Sessions>,
    mut rx: mpsc::Receiver<Write>,
    mut con: ConnectionManager,
    stop: CancellationToken,
) {
    let ttl_ms = s.ttl.as_millis() as u64;
    let mut refresh = tokio::time::interval((s.ttl / 3).max(Duration::from_secs(1)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 { return }
                let mut pipe = redis::pipe();
                for w in batch.drain(..) {
                    match w {
                        Write::Put(k, v) => { pipe.cmd("SET").arg(k).arg(v).arg("PX").arg(ttl_ms).ignore(); }
                        Write::Delete(k) => { pipe.cmd("DEL").arg(k).ignore(); }
                    }
                }
                let _: redis::RedisResult<()> = pipe.query_async(&mut con).await;
            }
            _ = refresh.tick() => {
                let live: Vec<(String, String)> =
                    s.live.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for chunk in live.chunks(512) {
                    let mut pipe = redis::pipe();
                    for (k, v) in chunk {
                        pipe.cmd("SET").arg(k).arg(v).arg("PX").arg(ttl_ms).ignore();
                    }
                    let _: redis::RedisResult<()> = pipe.query_async(&mut con).await;
                }
            }
        }
    }
}
