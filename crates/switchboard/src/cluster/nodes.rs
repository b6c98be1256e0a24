//! Node liveness: each node writes a heartbeat (`{connections, lastSeen}`) into one Redis
//! hash every quarter of `node_timeout_secs` and reads everyone's. A node whose heartbeat
//! is older than two thirds of the timeout is dead: it is left out of the counts, removed
//! from the hash and announced to whoever listens (presence). A node that dies is so
//! found within the timeout (at most 2/3 of it old, plus one beat of the finder), and a
//! live node has a margin of more than a beat. A node that stops gracefully writes a
//! heartbeat of 0, so the next beat of any other node retires it at once.
//!
//! Owns the view of the fleet. Never: decisions about a dead node's members (listeners
//! make those).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::link::{Conn, LinkState};

/// One node as `/stats` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The node's id (`node_id`).
    pub id: String,
    /// Its open client connections, every transport, at its last heartbeat.
    pub connections: u64,
    /// Its last heartbeat, milliseconds since the Unix epoch.
    pub last_seen: u64,
}

/// The fleet as this node last saw it.
pub(crate) struct Nodes {
    key: String,
    me: String,
    timeout: Duration,
    alive: Mutex<Vec<NodeInfo>>,
    deaths: broadcast::Sender<String>,
    /// Fire when this node's beat found its own entry gone (retired while alive, or a
    /// Redis that lost its data): what it wrote into the fleet's books may be gone too.
    /// One per book (each is told once).
    rejoined: Mutex<Vec<Arc<tokio::sync::Notify>>>,
    /// Whether a beat has been written (the first one always adds the entry).
    beaten: std::sync::atomic::AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Nodes {
    pub(crate) fn new(prefix: &str, me: String, timeout: Duration) -> Arc<Nodes> {
        Arc::new(Nodes {
            key: format!("{prefix}-sb:nodes"),
            me,
            timeout,
            alive: Mutex::new(Vec::new()),
            deaths: broadcast::channel(64).0,
            rejoined: Mutex::default(),
            beaten: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Live nodes, this one included, sorted by id.
    pub(crate) fn alive(&self) -> Vec<NodeInfo> {
        self.alive.lock().clone()
    }

    /// Ids of nodes found dead from now on.
    pub(crate) fn deaths(&self) -> broadcast::Receiver<String> {
        self.deaths.subscribe()
    }

    /// Notified when this node finds it had been retired (see the field); a new
    /// notifier for each caller.
    pub(crate) fn rejoined(&self) -> Arc<tokio::sync::Notify> {
        let notify = Arc::<tokio::sync::Notify>::default();
        self.rejoined.lock().push(notify.clone());
        notify
    }

    /// Heartbeats older than this are dead: two thirds of the timeout.
    fn cutoff(&self) -> u64 {
        now_ms().saturating_sub(self.timeout.as_millis() as u64 * 2 / 3)
    }

    /// One heartbeat: write ours, read everyone's, retire the dead.
    async fn beat(&self, con: &mut ConnectionManager, connections: u64) -> redis::RedisResult<()> {
        let me = NodeInfo {
            id: self.me.clone(),
            connections,
            last_seen: now_ms(),
        };
        let json = serde_json::to_string(&me).unwrap_or_default();
        let added: i64 = con.hset(&self.key, &self.me, json).await?;
        let first = !self.beaten.swap(true, std::sync::atomic::Ordering::Relaxed);
        if added == 1 && !first {
            for notify in self.rejoined.lock().iter() {
                notify.notify_one();
            }
        }
        let all: Vec<(String, String)> = con.hgetall(&self.key).await?;
        let cutoff = self.cutoff();
        let mut alive = Vec::new();
        for (id, raw) in all {
            let info = serde_json::from_str::<NodeInfo>(&raw).ok();
            match info {
                Some(n) if n.last_seen >= cutoff => alive.push(n),
                _ => {
                    // Whoever deletes it announces it: one announcement per death.
                    let removed: i64 = con.hdel(&self.key, &id).await?;
                    if removed == 1 {
                        tracing::warn!(node = %id, "cluster: node timed out");
                        let _ = self.deaths.send(id);
                    }
                }
            }
        }
        alive.sort_by(|a, b| a.id.cmp(&b.id));
        *self.alive.lock() = alive;
        Ok(())
    }

    /// Leaves the fleet at a graceful shutdown: a heartbeat of 0, which the next beat of
    /// any other node retires (and announces, so presence drops this node's users).
    async fn leave(&self, con: &mut ConnectionManager) {
        let gone = NodeInfo {
            id: self.me.clone(),
            connections: 0,
            last_seen: 0,
        };
        let json = serde_json::to_string(&gone).unwrap_or_default();
        let _: redis::RedisResult<i64> = con.hset(&self.key, &self.me, json).await;
    }
}

/// Beats every quarter of the timeout until `stop`, then leaves.
pub(crate) async fn heartbeat(
    nodes: Arc<Nodes>,
    mut con: ConnectionManager,
    link: Arc<LinkState>,
    connections: Arc<dyn Fn() -> usize + Send + Sync>,
    stop: CancellationToken,
) {
    let period = (nodes.timeout / 4).max(Duration::from_millis(250));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), nodes.leave(&mut con)).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let beat = tokio::time::timeout(period, nodes.beat(&mut con, connections() as u64)).await;
        match beat {
            Ok(Ok(())) => link.up(Conn::Commands),
            Ok(Err(e)) => link.down(Conn::Commands, &e.to_string()),
            Err(_) => link.down(Conn::Commands, "heartbeat timed out"),
        }
    }
}
