//! Presence across nodes: `member_joined` / `member_left` once per user, fleet-wide.
//!
//! Each node decides locally when a user arrives in or leaves a room (the hub counts a
//! user's connections on this node once); this book turns those local changes into
//! fleet-wide ones. In Redis:
//!
//! - `<prefix>-sb:presence:<room>`: a hash, user -> on how many nodes the user is present;
//! - `<prefix>-sb:presence-node:<node>`: a set of `room \0 user`, what one node holds;
//! - `<prefix>-sb:presence-info:<room>`: a hash, user -> the user's `user_info` JSON, for
//!   the users that came with one (Pusher presence channels), kept while the user is
//!   present anywhere, so any node can list a room's members with their info
//!   ([`PresenceBook::members`]).
//!
//! A local arrival adds the pair to the node's set and, only if it was new there,
//! increments the room's count; a count going 0 -> 1 is announced (`member_joined`), a
//! count reaching 0 on a departure likewise (`member_left`). Each step is one Lua script,
//! so two nodes racing on one user never both announce. The per-node sets make the book
//! repairable: a dead node's set is dropped by the node that retired it (each of its
//! users whose count reaches 0 announced once), and a node that lost Redis for a while,
//! or was itself retired while alive, reconciles its set with its hub (`RESYNC`).
//!
//! One worker per node applies the changes in the order they happened, pipelined.
//! While Redis is unreachable a change is announced as the node decided it (this node's
//! clients are still told; the relay keeps the announcement local) and the book is
//! reconciled once Redis answers again: arrivals and departures since are announced to
//! the fleet, even when Redis came back empty (a departure this node could only tell its
//! own clients is announced again if its user is now absent everywhere).
//!
//! Never: deciding local presence (the hub), delivering (the hub and relay).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hub::{MemberId, RoomId};
use redis::aio::ConnectionManager;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

/// Adds a pair to a node's set; 1 when the user just became present fleet-wide. A
/// non-empty ARGV[4] is the user's info (KEYS[4]): set when the user is new to the fleet,
/// else kept if another node set one.
const JOIN_LUA: &str = r"
redis.call('SADD', KEYS[3], ARGV[3])
local new = 0
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], 1) == 1 then new = 1 end
end
if ARGV[4] ~= '' then
  if new == 1 then
    redis.call('HSET', KEYS[4], ARGV[2], ARGV[4])
  else
    redis.call('HSETNX', KEYS[4], ARGV[2], ARGV[4])
  end
end
return new
";

/// Removes a pair from a node's set; 1 when the user is no longer present anywhere
/// (its info, KEYS[3], goes too).
const LEAVE_LUA: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    redis.call('HDEL', KEYS[3], ARGV[2])
    return 1
  end
end
return 0
";

/// Makes a node's set (KEYS[1], node ARGV[2]) exactly the n = ARGV[3] pairs
/// ARGV[5 .. 4+n], adjusting the rooms' counts; returns {arrived, gone}: the pairs that
/// became present / absent fleet-wide. ARGV[5+n .. 4+2n] are the pairs' infos (empty:
/// none), written back (a Redis that lost its data gets them again; another node's info
/// for the same user is kept); ARGV[4] is the info hashes' key prefix.
/// With no pairs it drops the node (a dead node, or this one at start-up). The pairs
/// after the infos are departures this node could only announce to its own clients (Redis
/// was unreachable); each one whose user is now absent fleet-wide counts as gone too, so
/// a Redis that lost its data still hears of them.
/// KEYS[2] is the registry of nodes with a set (JOIN adds to it too), which finds the
/// sets of nodes that died unseen (see `sweep`).
/// ARGV[1] is the rooms' key prefix. The room keys are derived inside the script, so
/// this one (unlike JOIN and LEAVE) needs every key on one Redis, not a Redis Cluster.
const RESYNC_LUA: &str = r"
local n = tonumber(ARGV[3])
local want, wanted, info = {}, {}, {}
for i = 5, 4 + n do
  want[ARGV[i]] = true; wanted[ARGV[i]] = true; info[ARGV[i]] = ARGV[i + n]
end
local arrived, gone, seen = {}, {}, {}
local function split(m)
  local i = string.find(m, '\0', 1, true)
  return string.sub(m, 1, i - 1), string.sub(m, i + 1)
end
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if want[m] then
    want[m] = nil
  else
    local room, user = split(m)
    redis.call('SREM', KEYS[1], m)
    if redis.call('HINCRBY', ARGV[1] .. room, user, -1) <= 0 then
      redis.call('HDEL', ARGV[1] .. room, user)
      redis.call('HDEL', ARGV[4] .. room, user)
      table.insert(gone, m)
      seen[m] = true
    end
  end
end
for m, _ in pairs(want) do
  local room, user = split(m)
  redis.call('SADD', KEYS[1], m)
  if redis.call('HINCRBY', ARGV[1] .. room, user, 1) == 1 then
    table.insert(arrived, m)
    if info[m] ~= '' then redis.call('HSET', ARGV[4] .. room, user, info[m]) end
  end
end
for m, _ in pairs(wanted) do
  if info[m] ~= '' then
    local room, user = split(m)
    redis.call('HSETNX', ARGV[4] .. room, user, info[m])
  end
end
for i = 5 + 2 * n, #ARGV do
  local m = ARGV[i]
  if not wanted[m] and not seen[m] then
    local room, user = split(m)
    if redis.call('HEXISTS', ARGV[1] .. room, user) == 0 then
      redis.call('HDEL', ARGV[4] .. room, user)
      table.insert(gone, m)
      seen[m] = true
    end
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
return {arrived, gone}
";

/// Announces a change: `(room, event, user, member to skip, user info)`; `event` is
/// `member_joined` (with the user's info when it came with one) or `member_left`.
pub type Announce =
    Arc<dyn Fn(&str, &'static str, &str, Option<MemberId>, Option<&str>) + Send + Sync>;

enum Change {
    Joined {
        room: RoomId,
        user: String,
        except: Option<MemberId>,
        info: Option<Arc<str>>,
    },
    Left {
        room: RoomId,
        user: String,
    },
}

/// The fleet's presence book, as one node writes it.
pub struct PresenceBook {
    tx: mpsc::UnboundedSender<Change>,
    /// Set when Redis missed a change: the worker reconciles before anything else.
    dirty: Arc<AtomicBool>,
    /// For [`PresenceBook::members`], a read apart from the worker's writes.
    con: ConnectionManager,
    room_prefix: String,
    info_prefix: String,
}

/// A room's members fleet-wide, as [`PresenceBook::members`] reads them: each user with
/// its info JSON when it has one.
pub type Members = Vec<(String, Option<String>)>;

impl std::fmt::Debug for PresenceBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresenceBook").finish_non_exhaustive()
    }
}

struct Worker {
    me: String,
    /// The relay's link: the book is written only while announcements can be relayed.
    link: Arc<super::link::LinkState>,
    node_key: String,
    registry: String,
    fleet_key: String,
    node_timeout: Duration,
    /// Registered nodes missing from the heartbeats, and since when.
    orphans: std::collections::HashMap<String, tokio::time::Instant>,
    room_prefix: String,
    info_prefix: String,
    node_prefix: String,
    con: ConnectionManager,
    announce: Announce,
    dirty: Arc<AtomicBool>,
    /// Departures announced to this node's clients only while the book was out of sync.
    missed: Vec<String>,
    /// The pairs this node has put in its share (or announced while out of sync), with
    /// their user's info: a departure from any other pair was never announced and costs
    /// no Redis call.
    mine: std::collections::HashMap<String, Option<Arc<str>>>,
    /// The last failed attempt to reconcile (at most four a second while Redis is away).
    failed_resync: Option<tokio::time::Instant>,
    /// When a reconciliation may run after the relay link came back from an outage
    /// (`None`: the link is down). The other nodes resubscribe to the relay at their own
    /// pace after a Redis outage; announcing the differences before they have would
    /// lose them. At start-up the other nodes are already listening: no wait.
    settled_at: Option<tokio::time::Instant>,
    /// Whether the link has been up since this node started.
    was_up: bool,
}

/// Changes applied in one pipeline, at most.
const BATCH: usize = 256;
/// Departures remembered while out of sync, at most (beyond: not re-announced).
const MAX_MISSED: usize = 10_000;
/// How long one pipeline may take before the book counts as out of sync.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long the relay link must have been back before a reconciliation announces.
const RESYNC_SETTLE: Duration = Duration::from_secs(1);

fn pair(room: &str, user: &str) -> String {
    format!("{room}\0{user}")
}

fn split(m: &str) -> Option<(&str, &str)> {
    m.split_once('\0')
}

impl PresenceBook {
    /// Starts the worker of the book named `kind` (`presence`: the rooms' users; another
    /// name keeps another book with the same rules under its own keys). `deaths` are the
    /// nodes this node retired (it drops their sets); `rejoined` fires when this node
    /// finds it had been retired while alive.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        prefix: &str,
        kind: &str,
        node_id: &str,
        node_timeout: Duration,
        link: Arc<super::link::LinkState>,
        con: ConnectionManager,
        announce: Announce,
        deaths: broadcast::Receiver<String>,
        rejoined: Arc<tokio::sync::Notify>,
        tasks: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) -> Arc<PresenceBook> {
        let (tx, rx) = mpsc::unbounded_channel();
        // A restarted node (same id) may find its previous life's pairs: reconcile first.
        let dirty = Arc::new(AtomicBool::new(true));
        let worker = Worker {
            me: node_id.to_owned(),
            link,
            node_key: format!("{prefix}-sb:{kind}-node:{node_id}"),
            registry: format!("{prefix}-sb:{kind}-nodes"),
            fleet_key: format!("{prefix}-sb:nodes"),
            node_timeout,
            orphans: std::collections::HashMap::new(),
            room_prefix: format!("{prefix}-sb:{kind}:"),
            info_prefix: format!("{prefix}-sb:{kind}-info:"),
            node_prefix: format!("{prefix}-sb:{kind}-node:"),
            con: con.clone(),
            announce,
            dirty: dirty.clone(),
            missed: Vec::new(),
            mine: std::collections::HashMap::new(),
            failed_resync: None,
            settled_at: None,
            was_up: false,
        };
        tasks.spawn(worker.run(rx, deaths, rejoined, stop.clone()));
        Arc::new(PresenceBook {
            tx,
            dirty,
            con,
            room_prefix: format!("{prefix}-sb:{kind}:"),
            info_prefix: format!("{prefix}-sb:{kind}-info:"),
        })
    }

    /// The users present in `room` on every node, with their infos; `None` while the
    /// book is out of sync or Redis does not answer (the caller falls back to what its
    /// node knows). A change being applied may be missing: callers add their own
    /// node's members.
    pub async fn members(&self, room: &str) -> Option<Members> {
        if !self.is_synced() {
            return None;
        }
        let mut con = self.con.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HKEYS")
            .arg(format!("{}{room}", self.room_prefix))
            .cmd("HGETALL")
            .arg(format!("{}{room}", self.info_prefix));
        let read =
            pipe.query_async::<(Vec<String>, std::collections::HashMap<String, String>)>(&mut con);
        let (users, mut infos) = tokio::time::timeout(TIMEOUT, read).await.ok()?.ok()?;
        Some(
            users
                .into_iter()
                .map(|u| {
                    let info = infos.remove(&u);
                    (u, info)
                })
                .collect(),
        )
    }

    /// Whether the book holds this node's presence (false from start-up or an outage
    /// until the node has reconciled its share).
    pub fn is_synced(&self) -> bool {
        !self.dirty.load(Ordering::Relaxed)
    }

    /// A user became present in `room` on this node (`except`: the member that joined,
    /// which is not told about itself; `info`: the user's info JSON, kept fleet-wide
    /// while the user is present and carried in the announcement).
    pub fn joined(&self, room: &str, user: &str, except: Option<MemberId>, info: Option<&str>) {
        let change = Change::Joined {
            room: Arc::from(room),
            user: user.to_owned(),
            except,
            info: info.map(Arc::from),
        };
        if self.tx.send(change).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// A user is no longer present in `room` on this node.
    pub fn left(&self, room: &str, user: &str) {
        let change = Change::Left {
            room: Arc::from(room),
            user: user.to_owned(),
        };
        if self.tx.send(change).is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
    }
}

impl Worker {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Change>,
        mut deaths: broadcast::Receiver<String>,
        rejoined: Arc<tokio::sync::Notify>,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            let due = self
                .failed_resync
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(250));
            let now = tokio::time::Instant::now();
            let up = self.link.is_up();
            self.settled_at = match (up, self.settled_at) {
                (false, _) => None,
                (true, None) if !self.was_up => Some(now),
                (true, None) => Some(now + RESYNC_SETTLE),
                (true, settled) => settled,
            };
            self.was_up |= up;
            let settled = self.settled_at.is_some_and(|t| now >= t);
            if self.dirty.load(Ordering::Relaxed) && due && settled {
                self.resync().await;
            }
            // The stop first: the departures a shutdown causes are not applied (the relay
            // that would announce them is stopping too); the node's share stays in Redis
            // and the node that retires it announces them (see `Nodes::leave`).
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 || stop.is_cancelled() { return }
                    self.apply(&mut batch).await;
                }
                dead = deaths.recv() => match dead {
                    Ok(node) => self.drop_node(&node).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = rejoined.notified() => self.dirty.store(true, Ordering::Relaxed),
                _ = tick.tick() => {
                    ticks += 1;
                    if ticks.is_multiple_of(4) {
                        self.sweep().await;
                    }
                }
            }
        }
    }

    /// Applies queued changes in order; announces what changed fleet-wide.
    async fn apply(&mut self, batch: &mut Vec<Change>) {
        let mut changes = std::mem::take(batch);
        // A departure from a pair that never arrived through the book (a user's own room,
        // an audience that shrank below the presence limit) announces nothing.
        changes.retain(|c| match c {
            Change::Joined {
                room, user, info, ..
            } => {
                self.mine.insert(pair(room, user), info.clone());
                true
            }
            Change::Left { room, user } => self.mine.remove(&pair(room, user)).is_some(),
        });
        if changes.is_empty() {
            return;
        }
        if !self.link.is_up() {
            // What the book would announce could not reach the other nodes now.
            self.dirty.store(true, Ordering::Relaxed);
        }
        if self.dirty.load(Ordering::Relaxed) {
            // Out of sync: announce as decided here; the next resync repairs the book.
            for c in changes {
                self.announce_unsynced(c);
            }
            return;
        }
        let mut pipe = redis::pipe();
        for c in &changes {
            match c {
                Change::Joined {
                    room, user, info, ..
                } => pipe
                    .cmd("EVAL")
                    .arg(JOIN_LUA)
                    .arg(4)
                    .arg(&self.node_key)
                    .arg(format!("{}{room}", self.room_prefix))
                    .arg(&self.registry)
                    .arg(format!("{}{room}", self.info_prefix))
                    .arg(pair(room, user))
                    .arg(user)
                    .arg(&self.me)
                    .arg(info.as_deref().unwrap_or("")),
                Change::Left { room, user } => pipe
                    .cmd("EVAL")
                    .arg(LEAVE_LUA)
                    .arg(3)
                    .arg(&self.node_key)
                    .arg(format!("{}{room}", self.room_prefix))
                    .arg(format!("{}{room}", self.info_prefix))
                    .arg(pair(room, user))
                    .arg(user),
            };
        }
        let result: Result<redis::RedisResult<Vec<i64>>, _> =
            tokio::time::timeout(TIMEOUT, pipe.query_async(&mut self.con)).await;
        match result {
            Ok(Ok(flags)) if flags.len() == changes.len() => {
                for (c, flag) in changes.into_iter().zip(flags) {
                    if flag == 1 {
                        self.announce_local(c);
                    }
                }
            }
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "timed out".into(),
                    Ok(Ok(_)) => "short answer".into(),
                };
                tracing::warn!(error = %why, "cluster presence: Redis missed changes; announcing locally until it is back");
                self.dirty.store(true, Ordering::Relaxed);
                // A change may or may not have been applied: resync decides.
                for c in changes {
                    self.announce_unsynced(c);
                }
            }
        }
    }

    /// Announces a change as this node decided it, the book being out of sync.
    fn announce_unsynced(&mut self, c: Change) {
        if let Change::Left { room, user } = &c
            && self.missed.len() < MAX_MISSED
        {
            self.missed.push(pair(room, user));
        }
        self.announce_local(c);
    }

    fn announce_local(&self, c: Change) {
        match c {
            Change::Joined {
                room,
                user,
                except,
                info,
            } => {
                (self.announce)(&room, "member_joined", &user, except, info.as_deref());
            }
            Change::Left { room, user } => {
                (self.announce)(&room, "member_left", &user, None, None);
            }
        }
    }

    /// Makes this node's set match its hub; announces the differences fleet-wide.
    async fn resync(&mut self) {
        // Exactly the pairs that arrived through the book and have not left: rooms joined
        // otherwise (the ticket contract's event rooms) were never announced, so a
        // reconciliation must not announce them either.
        let key = self.node_key.clone();
        let mut pairs: Vec<(String, Option<Arc<str>>)> = self
            .mine
            .iter()
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        pairs.sort();
        let mut missed = std::mem::take(&mut self.missed);
        missed.sort();
        missed.dedup();
        if self.run_resync(&key, &pairs, &missed).await {
            self.dirty.store(false, Ordering::Relaxed);
            self.failed_resync = None;
        } else {
            self.missed = missed;
            self.failed_resync = Some(tokio::time::Instant::now());
        }
    }

    /// Finds nodes whose presence is registered but that have had no heartbeat entry
    /// for a whole node timeout (a node that died while Redis had lost the fleet list,
    /// before it beat again), and drops their sets like any dead node's.
    async fn sweep(&mut self) {
        let read = async {
            let registered: Vec<String> = redis::cmd("SMEMBERS")
                .arg(&self.registry)
                .query_async(&mut self.con)
                .await?;
            let beating: Vec<String> = redis::cmd("HKEYS")
                .arg(&self.fleet_key)
                .query_async(&mut self.con)
                .await?;
            Ok::<_, redis::RedisError>((registered, beating))
        };
        let Ok(Ok((registered, beating))) = tokio::time::timeout(TIMEOUT, read).await else {
            return;
        };
        let now = tokio::time::Instant::now();
        self.orphans
            .retain(|n, _| registered.contains(n) && !beating.contains(n));
        let mut dead = Vec::new();
        for node in registered {
            if node == self.me || beating.contains(&node) {
                continue;
            }
            let since = *self.orphans.entry(node.clone()).or_insert(now);
            if now.duration_since(since) >= self.node_timeout {
                dead.push(node);
            }
        }
        for node in dead {
            tracing::warn!(node = %node, "cluster presence: dropping the members of a node with no heartbeat");
            self.orphans.remove(&node);
            self.drop_node(&node).await;
        }
    }

    /// Drops a dead node's set: each of its users gone from the fleet is announced.
    async fn drop_node(&mut self, node: &str) {
        let key = format!("{}{node}", self.node_prefix);
        if !self.run_resync(&key, &[], &[]).await {
            tracing::warn!(
                node,
                "cluster presence: could not drop a dead node's members"
            );
        }
    }

    async fn run_resync(
        &mut self,
        key: &str,
        pairs: &[(String, Option<Arc<str>>)],
        missed: &[String],
    ) -> bool {
        let mut cmd = redis::cmd("EVAL");
        let node = key.strip_prefix(&self.node_prefix).unwrap_or(key);
        cmd.arg(RESYNC_LUA)
            .arg(2)
            .arg(key)
            .arg(&self.registry)
            .arg(&self.room_prefix)
            .arg(node)
            .arg(pairs.len())
            .arg(&self.info_prefix);
        for (p, _) in pairs {
            cmd.arg(p);
        }
        for (_, info) in pairs {
            cmd.arg(info.as_deref().unwrap_or(""));
        }
        for p in missed {
            cmd.arg(p);
        }
        let result: Result<redis::RedisResult<(Vec<String>, Vec<String>)>, _> =
            tokio::time::timeout(TIMEOUT, cmd.query_async(&mut self.con)).await;
        match result {
            Ok(Ok((arrived, gone))) => {
                for m in &arrived {
                    if let Some((room, user)) = split(m) {
                        let info = self.mine.get(m).cloned().flatten();
                        (self.announce)(room, "member_joined", user, None, info.as_deref());
                    }
                }
                for m in &gone {
                    if let Some((room, user)) = split(m) {
                        (self.announce)(room, "member_left", user, None, None);
                    }
                }
                if !arrived.is_empty() || !gone.is_empty() {
                    tracing::info!(
                        set = key,
                        arrived = arrived.len(),
                        gone = gone.len(),
                        "cluster presence: reconciled"
                    );
                }
                true
            }
            _ => false,
        }
    }
}
