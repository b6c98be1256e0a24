use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;
use smallvec::SmallVec;

use crate::envelope::{Envelope, Payload};

/// A room's name. Transports map their own names onto the fabric (see the socketio crate).
pub type RoomId = Arc<str>;

/// A member of the hub: one client connection of any transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

/// What a transport implements to receive envelopes.
pub trait Member: Send + Sync {
    /// Hands one envelope to the client's queue. Called under the hub lock: it must not
    /// block and must not call back into the hub.
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery;
    /// The transport's name, for per-transport counts (`socketio`, `ws`, `sse`).
    fn transport(&self) -> &'static str;
    /// The authenticated user behind this member, if any (presence counts users once).
    fn user(&self) -> Option<&str> {
        None
    }
}

/// Where publishes go when this hub is one node of a cluster.
///
/// A relay sequences messages for the whole cluster: it gives each one its cluster-wide
/// offset and hands it to every node, this one included, which then delivers it with
/// [`Hub::deliver_sequenced`]. Every node therefore delivers a room's messages in one
/// order, with the same offsets.
pub trait Relay: Send + Sync {
    /// Takes a message to sequence. Must not block and must not call back into the hub.
    /// Gives the message back when the cluster cannot take it now (the hub then delivers
    /// it to this node's members only). `done`, if any, is called with the offset and
    /// this node's recipients once the message is delivered here.
    // The message goes back by value: boxing it would allocate on every refusal.
    #[allow(clippy::result_large_err)]
    fn relay(&self, msg: Publish, done: Option<Done>) -> Result<(), (Publish, Option<Done>)>;

    /// Calls `f` with the newest latest-value message this node delivered under `key`
    /// (the relay decides which messages are latest-value, and their keys and versions),
    /// while no other message of that key can be delivered here: whatever `f` sends a
    /// client is ordered with the key's deliveries. A relay without latest values calls
    /// `f(None)`.
    fn with_latest(&self, key: &str, f: LatestFn<'_>) {
        let _ = key;
        f(None);
    }
}

/// Given the newest latest-value message delivered under a key, and its version
/// ([`Relay::with_latest`]).
pub type LatestFn<'a> = &'a mut dyn FnMut(Option<(u64, &Publish)>);

/// Called once a publish is delivered on this node: its offset and recipients here.
pub type Done = Box<dyn FnOnce(u64, usize) + Send>;

/// What a member did with an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued for the client.
    Delivered,
    /// Volatile, and the client's queue was full.
    Dropped,
    /// The client is gone or was just disconnected as too slow.
    Closed,
}

/// Limits of the hub. Every one is a setting.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Messages kept per room for replay.
    pub history_len: usize,
    /// How long a message stays replayable.
    pub history_age: Duration,
    /// Rooms one member may be in at once.
    pub max_rooms_per_member: usize,
    /// The offset before the first one this hub assigns. Start each process above every
    /// offset an earlier process handed out (e.g. the start time in microseconds) so a
    /// client resuming from an older life gets a gap, never a wrong replay.
    pub first_offset: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_len: 1000,
            history_age: Duration::from_secs(120),
            max_rooms_per_member: 256,
            first_offset: 0,
        }
    }
}

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// Target rooms; a member in several of them gets the message once.
    pub rooms: SmallVec<[RoomId; 1]>,
    /// Members of these rooms are skipped.
    pub except: SmallVec<[RoomId; 1]>,
    /// The event name.
    pub event: Box<str>,
    /// The arguments.
    pub payload: Payload,
    /// May be dropped for slow clients; never kept in history.
    pub volatile: bool,
    /// Kept in room history for replay.
    pub persist: bool,
    /// This member is skipped (a sender that should not hear its own message).
    pub except_member: Option<MemberId>,
    /// To every member of the hub, whatever its rooms; history kept in [`EVERYONE`].
    pub everyone: bool,
}

/// The history room of messages published to everyone. Replays that should include
/// broadcasts add it to their rooms; no member ever joins it.
pub const EVERYONE: &str = "*";

/// How a join or leave changed who is present in a room (users counted once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The member's user was not present before this join / is gone after this leave.
    Changed,
    /// The user has another connection in the room; nothing to announce.
    Unchanged,
    /// No user, or the room is over the presence limit: not tracked.
    Untracked,
}

/// The replay cannot be complete: history no longer reaches back to the offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Why a member could not join a room.
pub enum JoinError {
    /// The member is in `max_rooms_per_client` rooms already.
    TooManyRooms,
    /// No such member (it was removed).
    UnknownMember,
}

/// A room as reported by the admin API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomInfo {
    /// The room's name.
    pub room: String,
    /// Members now in the room.
    pub members: usize,
    /// Members per transport name.
    pub by_transport: Vec<(String, usize)>,
    /// Distinct users present (a user with several connections counts once).
    pub users: Vec<String>,
    /// Messages in the room's history.
    pub history: usize,
    /// The offset of the room's last message.
    pub last_offset: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
/// Hub-wide counts for `/stats` and `/metrics`.
pub struct HubStats {
    /// Members (connections in every transport).
    pub members: usize,
    /// Rooms the hub knows.
    pub rooms: usize,
    /// Messages kept in all rooms' histories.
    pub history_entries: usize,
    /// The last offset assigned.
    pub last_offset: u64,
}

/// A room's members: inline while few (most rooms are one user's or one chat's), a hash
/// map once many. A one-member room then costs no allocation besides the room itself.
/// The map is boxed: every room is a slot of the hub's room table, and an inline map
/// would make each of those slots (one per connected user, for its user room) 16 bytes
/// larger for the sake of the few big rooms.
enum Members {
    Few(SmallVec<[(MemberId, Arc<dyn Member>); 1]>),
    // Deliberate: the box keeps the enum, and so every room slot, 16 bytes smaller.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<MemberId, Arc<dyn Member>>>),
}

impl Members {
    /// Above this many members, lookups switch to the hash map.
    const FEW: usize = 8;

    fn insert(&mut self, id: MemberId, sink: Arc<dyn Member>) {
        match self {
            Members::Few(v) => {
                if let Some(e) = v.iter_mut().find(|(i, _)| *i == id) {
                    e.1 = sink;
                } else if v.len() < Self::FEW {
                    v.push((id, sink));
                } else {
                    let mut map: HashMap<_, _> = v.drain(..).collect();
                    map.insert(id, sink);
                    *self = Members::Many(Box::new(map));
                }
            }
            Members::Many(m) => {
                m.insert(id, sink);
            }
        }
    }

    fn remove(&mut self, id: &MemberId) {
        match self {
            Members::Few(v) => {
                if let Some(p) = v.iter().position(|(i, _)| i == id) {
                    v.swap_remove(p);
                }
            }
            Members::Many(m) => {
                m.remove(id);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::Few(v) => v.len(),
            Members::Many(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&MemberId, &Arc<dyn Member>)> {
        let (few, many) = match self {
            Members::Few(v) => (Some(v.iter().map(|(i, m)| (i, m))), None),
            Members::Many(m) => (None, Some(m.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    fn keys(&self) -> impl Iterator<Item = &MemberId> {
        self.iter().map(|(i, _)| i)
    }

    fn values(&self) -> impl Iterator<Item = &Arc<dyn Member>> {
        self.iter().map(|(_, m)| m)
    }
}

/// A room's kept messages, allocated at the first one: most rooms (every connected
/// user's own) never keep any, and an empty `VecDeque` inline would make each room slot
/// of the hub's table 24 bytes larger.
#[derive(Default)]
// Deliberate: 8 bytes per room slot instead of an empty `VecDeque`'s 32.
#[allow(clippy::box_collection)]
struct History(Option<Box<VecDeque<Arc<Envelope>>>>);

impl History {
    fn push_back(&mut self, e: Arc<Envelope>) {
        self.0.get_or_insert_default().push_back(e);
    }

    fn front(&self) -> Option<&Arc<Envelope>> {
        self.0.as_ref()?.front()
    }

    fn pop_front(&mut self) {
        if let Some(q) = &mut self.0 {
            q.pop_front();
        }
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept messages with an offset above `offset`, oldest first.
    fn after(&self, offset: u64) -> impl Iterator<Item = &Arc<Envelope>> {
        self.0.iter().flat_map(move |q| {
            let start = q.partition_point(|e| e.offset <= offset);
            q.range(start..)
        })
    }

    /// Gives the memory back once nothing is kept.
    fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.0 = None;
        }
    }
}

struct Room {
    members: Members,
    history: History,
    /// Highest offset dropped from `history`: a replay from below it would have a gap.
    evicted_upto: u64,
    last_offset: u64,
}

impl Room {
    /// A room created now may have had messages in an earlier life (pruned, or before a
    /// restart): replays from before `floor` are gaps.
    fn new(floor: u64) -> Room {
        Room {
            members: Members::Few(SmallVec::new()),
            history: History::default(),
            evicted_upto: floor,
            last_offset: 0,
        }
    }

    /// Is `user` present through a member other than `id`? Scans: only for small rooms.
    fn has_user_besides(&self, id: MemberId, user: &str) -> bool {
        self.members
            .iter()
            .any(|(m, sink)| *m != id && sink.user() == Some(user))
    }
}

struct MemberEntry {
    sink: Arc<dyn Member>,
    /// Inline for three: a `/realtime` socket is in its namespace's room, its user's room
    /// and one event room. One slot per connection in the member table, so every inline
    /// room it does not use costs each connection 16 bytes (and more with the table's
    /// spare slots).
    rooms: SmallVec<[RoomId; 3]>,
}

struct Inner {
    seq: u64,
    next_member: u64,
    rooms: HashMap<RoomId, Room>,
    members: HashMap<MemberId, MemberEntry>,
    /// Highest `evicted_upto` of rooms removed for being empty: rooms that no longer exist
    /// may have had messages up to here.
    removed_floor: u64,
}

/// The room fabric. Cheap to share (`Arc<Hub>`).
pub struct Hub {
    config: HubConfig,
    inner: Mutex<Inner>,
    /// Set once when this hub is a cluster node.
    relay: OnceLock<Arc<dyn Relay>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("stats", &self.stats()).finish()
    }
}

impl Hub {
    /// A hub with no rooms; its offsets continue from `config.first_offset`.
    pub fn new(config: HubConfig) -> Arc<Hub> {
        let first = config.first_offset;
        Arc::new(Hub {
            config,
            inner: Mutex::new(Inner {
                seq: first,
                next_member: 1,
                rooms: HashMap::new(),
                members: HashMap::new(),
                removed_floor: first,
            }),
            relay: OnceLock::new(),
        })
    }

    /// Makes this hub a cluster node: from now on publishes go through `relay`. Set once;
    /// a second call is ignored and returns false.
    pub fn set_relay(&self, relay: Arc<dyn Relay>) -> bool {
        self.relay.set(relay).is_ok()
    }

    /// Is this hub a cluster node?
    pub fn is_clustered(&self) -> bool {
        self.relay.get().is_some()
    }

    /// The settings this hub runs with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// Adds a member (in no room yet) and returns its id.
    pub fn add_member(&self, sink: Arc<dyn Member>) -> MemberId {
        let mut inner = self.inner.lock();
        let id = MemberId(inner.next_member);
        inner.next_member += 1;
        inner.members.insert(
            id,
            MemberEntry {
                sink,
                rooms: SmallVec::new(),
            },
        );
        id
    }

    /// Removes a member from every room; returns the rooms it was in.
    pub fn remove_member(&self, id: MemberId) -> Vec<RoomId> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.members.remove(&id) else {
            return Vec::new();
        };
        for room in &entry.rooms {
            if let Some(r) = inner.rooms.get_mut(room) {
                r.members.remove(&id);
            }
        }
        entry.rooms.into_vec()
    }

    /// Puts a member in a room.
    pub fn join(&self, id: MemberId, room: &str) -> Result<(), JoinError> {
        let mut inner = self.inner.lock();
        Self::join_locked(&mut inner, id, room, self.config.max_rooms_per_member)
    }

    fn join_locked(
        inner: &mut Inner,
        id: MemberId,
        room: &str,
        max: usize,
    ) -> Result<(), JoinError> {
        let entry = inner.members.get_mut(&id).ok_or(JoinError::UnknownMember)?;
        if entry.rooms.iter().any(|r| &**r == room) {
            return Ok(());
        }
        if entry.rooms.len() >= max {
            return Err(JoinError::TooManyRooms);
        }
        let key: RoomId = match inner.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => Arc::from(room),
        };
        entry.rooms.push(key.clone());
        let sink = entry.sink.clone();
        let floor = inner.removed_floor;
        inner
            .rooms
            .entry(key)
            .or_insert_with(|| Room::new(floor))
            .members
            .insert(id, sink);
        Ok(())
    }

    /// Joins and reports whether the member's user just became present. Presence is
    /// tracked only in rooms of at most `limit` members (it costs a scan of the room).
    pub fn join_presence(
        &self,
        id: MemberId,
        room: &str,
        limit: usize,
    ) -> Result<Presence, JoinError> {
        let mut inner = self.inner.lock();
        let already = inner
            .members
            .get(&id)
            .is_some_and(|e| e.rooms.iter().any(|r| &**r == room));
        Self::join_locked(&mut inner, id, room, self.config.max_rooms_per_member)?;
        if already {
            return Ok(Presence::Unchanged);
        }
        Ok(Self::presence_locked(&inner, id, room, limit))
    }

    /// Leaves and reports whether the member's user is no longer present.
    pub fn leave_presence(&self, id: MemberId, room: &str, limit: usize) -> Presence {
        let mut inner = self.inner.lock();
        let was_in = inner
            .members
            .get(&id)
            .is_some_and(|e| e.rooms.iter().any(|r| &**r == room));
        if !was_in {
            return Presence::Unchanged;
        }
        let presence = Self::presence_locked(&inner, id, room, limit);
        if let Some(entry) = inner.members.get_mut(&id) {
            entry.rooms.retain(|r| &**r != room);
        }
        if let Some(r) = inner.rooms.get_mut(room) {
            r.members.remove(&id);
        }
        presence
    }

    /// Would `id`'s user be alone in `room` (counting `id`, which must be a member)?
    fn presence_locked(inner: &Inner, id: MemberId, room: &str, limit: usize) -> Presence {
        let (Some(entry), Some(r)) = (inner.members.get(&id), inner.rooms.get(room)) else {
            return Presence::Untracked;
        };
        let Some(user) = entry.sink.user() else {
            return Presence::Untracked;
        };
        if r.members.len() > limit {
            return Presence::Untracked;
        }
        if r.has_user_besides(id, user) {
            Presence::Unchanged
        } else {
            Presence::Changed
        }
    }

    /// Removes a member; returns the rooms (of at most `limit` members) its user left
    /// for good, for presence announcements.
    pub fn remove_member_presence(&self, id: MemberId, limit: usize) -> Vec<RoomId> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.members.remove(&id) else {
            return Vec::new();
        };
        let user = entry.sink.user();
        let mut gone = Vec::new();
        for room in &entry.rooms {
            if let Some(r) = inner.rooms.get_mut(room) {
                let small = r.members.len() <= limit;
                r.members.remove(&id);
                if let Some(u) = user
                    && small
                    && !r.has_user_besides(id, u)
                {
                    gone.push(room.clone());
                }
            }
        }
        gone
    }

    /// Takes a member out of a room (nothing happens if it was not in it).
    pub fn leave(&self, id: MemberId, room: &str) {
        let mut inner = self.inner.lock();
        if let Some(entry) = inner.members.get_mut(&id) {
            entry.rooms.retain(|r| &**r != room);
        }
        if let Some(r) = inner.rooms.get_mut(room) {
            r.members.remove(&id);
        }
    }

    /// Whether a member is in a room.
    pub fn is_member(&self, id: MemberId, room: &str) -> bool {
        let inner = self.inner.lock();
        inner
            .members
            .get(&id)
            .is_some_and(|e| e.rooms.iter().any(|r| &**r == room))
    }

    /// The rooms a member is in.
    pub fn rooms_of(&self, id: MemberId) -> Vec<RoomId> {
        let inner = self.inner.lock();
        inner
            .members
            .get(&id)
            .map(|e| e.rooms.to_vec())
            .unwrap_or_default()
    }

    /// Publishes a message; returns its offset and how many members received it. On a
    /// cluster node the relay sequences it and this returns `(0, 0)`: the message is
    /// delivered here, as on every node, when it comes back sequenced (or at once, to
    /// this node only, when the relay gives it back).
    pub fn publish(&self, msg: Publish) -> (u64, usize) {
        let msg = match self.relay.get() {
            Some(relay) => match relay.relay(msg, None) {
                Ok(()) => return (0, 0),
                Err((msg, _)) => msg,
            },
            None => msg,
        };
        self.publish_local(msg)
    }

    /// Publishes and calls `done` with the offset and this node's recipients once the
    /// message is delivered here: at once on a single node, after the cluster sequenced
    /// it on a cluster node.
    pub fn publish_then(&self, msg: Publish, done: Done) {
        let (msg, done) = match self.relay.get() {
            Some(relay) => match relay.relay(msg, Some(done)) {
                Ok(()) => return,
                Err((msg, done)) => (msg, done),
            },
            None => (msg, Some(done)),
        };
        let (offset, delivered) = self.publish_local(msg);
        if let Some(done) = done {
            done(offset, delivered);
        }
    }

    /// See [`Relay::with_latest`]; on a single node, `f(None)`.
    pub fn with_latest(&self, key: &str, f: LatestFn<'_>) {
        match self.relay.get() {
            Some(relay) => relay.with_latest(key, f),
            None => f(None),
        }
    }

    /// Publishes to this node's members only, with an offset of this hub's own sequence.
    pub fn publish_local(&self, msg: Publish) -> (u64, usize) {
        let mut inner = self.inner.lock();
        inner.seq += 1;
        let offset = inner.seq;
        let delivered = self.deliver_locked(&mut inner, offset, msg);
        (offset, delivered)
    }

    /// Delivers a message the cluster sequenced at `offset` (this node's own or another's)
    /// to this node's members, keeping it in history. Offsets only grow: one at or below
    /// the newest this hub has seen is delivered without being kept (never replayed
    /// out of order).
    pub fn deliver_sequenced(&self, offset: u64, mut msg: Publish) -> usize {
        let mut inner = self.inner.lock();
        if offset <= inner.seq {
            msg.persist = false;
        } else {
            inner.seq = offset;
        }
        self.deliver_locked(&mut inner, offset, msg)
    }

    /// Marks everything up to the newest offset as a gap for replays: after an outage
    /// of the cluster link, messages other nodes published meanwhile never arrived here.
    pub fn mark_gap(&self) {
        let mut inner = self.inner.lock();
        let upto = inner.seq;
        inner.removed_floor = inner.removed_floor.max(upto);
        for room in inner.rooms.values_mut() {
            room.evicted_upto = room.evicted_upto.max(upto);
        }
    }

    fn deliver_locked(&self, inner: &mut Inner, offset: u64, msg: Publish) -> usize {
        let now = Instant::now();
        let persist = msg.persist && !msg.volatile;
        let rooms: SmallVec<[Arc<str>; 1]> = msg
            .rooms
            .iter()
            .map(|r| {
                inner
                    .rooms
                    .get_key_value(&**r)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_else(|| r.clone())
            })
            .collect();
        let env = Arc::new(Envelope::new(
            offset,
            msg.event,
            msg.payload,
            msg.volatile,
            rooms,
        ));
        let mut except: HashSet<MemberId> = msg
            .except
            .iter()
            .filter_map(|r| inner.rooms.get(&**r))
            .flat_map(|r| r.members.keys().copied())
            .collect();
        except.extend(msg.except_member);
        let (history_len, history_age) = (self.config.history_len, self.config.history_age);
        let mut delivered = 0;
        let mut seen: HashSet<MemberId> = HashSet::new();
        let multi = env.rooms.len() > 1;
        let floor = inner.removed_floor;
        if msg.everyone {
            if persist {
                let room = inner
                    .rooms
                    .entry(Arc::from(EVERYONE))
                    .or_insert_with(|| Room::new(floor));
                room.last_offset = offset;
                room.history.push_back(env.clone());
                trim(room, history_len, history_age, now);
            }
            for (id, m) in &inner.members {
                if !except.contains(id) && m.sink.deliver(&env) == Delivery::Delivered {
                    delivered += 1;
                }
            }
            return delivered;
        }
        for room_id in env.rooms.iter() {
            let room = if persist {
                Some(
                    inner
                        .rooms
                        .entry(room_id.clone())
                        .or_insert_with(|| Room::new(floor)),
                )
            } else {
                inner.rooms.get_mut(&**room_id)
            };
            let Some(room) = room else { continue };
            room.last_offset = offset;
            if persist {
                room.history.push_back(env.clone());
                trim(room, history_len, history_age, now);
            }
            for (id, m) in room.members.iter() {
                if except.contains(id) || (multi && !seen.insert(*id)) {
                    continue;
                }
                if m.deliver(&env) == Delivery::Delivered {
                    delivered += 1;
                }
            }
        }
        delivered
    }

    /// The newest offset assigned so far.
    pub fn last_offset(&self) -> u64 {
        self.inner.lock().seq
    }

    /// Joins `rooms` and collects every persisted message of those rooms after `after`,
    /// in offset order, atomically with respect to publishing: `then` runs under the hub
    /// lock with the replay, so it can queue the replay before any live message. Nothing
    /// is joined when the history has a gap. Returns the rooms (of at most
    /// `presence_limit` members) where the member's user just became present.
    pub fn join_with_replay(
        &self,
        id: MemberId,
        rooms: &[RoomId],
        after: u64,
        presence_limit: usize,
        then: impl FnOnce(&[Arc<Envelope>]),
    ) -> Result<Vec<RoomId>, Gap> {
        let mut inner = self.inner.lock();
        let replay = Self::replay_locked(&inner, rooms, after)?;
        let mut arrived = Vec::new();
        for r in rooms {
            let already = inner
                .members
                .get(&id)
                .is_some_and(|e| e.rooms.iter().any(|x| x == r));
            // A member over its room limit cannot have been in these rooms; skip quietly.
            if Self::join_locked(&mut inner, id, r, self.config.max_rooms_per_member).is_ok()
                && !already
                && Self::presence_locked(&inner, id, r, presence_limit) == Presence::Changed
            {
                arrived.push(r.clone());
            }
        }
        then(&replay);
        Ok(arrived)
    }

    /// Every persisted message of `rooms` after `after`, or [`Gap`] if some may be missing.
    pub fn replay(&self, rooms: &[RoomId], after: u64) -> Result<Vec<Arc<Envelope>>, Gap> {
        let inner = self.inner.lock();
        Self::replay_locked(&inner, rooms, after)
    }

    fn replay_locked(
        inner: &Inner,
        rooms: &[RoomId],
        after: u64,
    ) -> Result<Vec<Arc<Envelope>>, Gap> {
        if after > inner.seq {
            return Err(Gap);
        }
        let mut out: Vec<Arc<Envelope>> = Vec::new();
        // Messages to everyone reached every member: a replay includes them too.
        let everyone: RoomId = Arc::from(EVERYONE);
        let with_everyone = (!rooms.iter().any(|r| &**r == EVERYONE)).then_some(&everyone);
        for r in rooms.iter().chain(with_everyone) {
            match inner.rooms.get(&**r) {
                Some(room) => {
                    if room.evicted_upto > after {
                        return Err(Gap);
                    }
                    out.extend(room.history.after(after).cloned());
                }
                None => {
                    if inner.removed_floor > after {
                        return Err(Gap);
                    }
                }
            }
        }
        out.sort_by_key(|e| e.offset);
        out.dedup_by_key(|e| e.offset);
        Ok(out)
    }

    /// Drops history older than the configured age and rooms left with nothing.
    pub fn prune(&self, now: Instant) {
        let mut inner = self.inner.lock();
        let (len, age) = (self.config.history_len, self.config.history_age);
        let mut floor = inner.removed_floor;
        inner.rooms.retain(|_, room| {
            trim(room, len, age, now);
            let keep = !room.members.is_empty() || !room.history.is_empty();
            if !keep {
                floor = floor.max(room.evicted_upto);
            }
            keep
        });
        inner.removed_floor = floor;
    }

    /// A room as the admin API reports it; `None` if the hub does not know it.
    pub fn room_info(&self, room: &str) -> Option<RoomInfo> {
        let inner = self.inner.lock();
        let r = inner.rooms.get(room)?;
        let mut by_transport: Vec<(String, usize)> = Vec::new();
        let mut users: Vec<String> = Vec::new();
        for m in r.members.values() {
            match by_transport.iter_mut().find(|(t, _)| t == m.transport()) {
                Some((_, n)) => *n += 1,
                None => by_transport.push((m.transport().to_owned(), 1)),
            }
            if let Some(u) = m.user() {
                users.push(u.to_owned());
            }
        }
        users.sort();
        users.dedup();
        by_transport.sort();
        Some(RoomInfo {
            room: room.to_owned(),
            members: r.members.len(),
            by_transport,
            users,
            history: r.history.len(),
            last_offset: r.last_offset,
        })
    }

    /// Names of rooms that have members, with their member counts.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let inner = self.inner.lock();
        let mut v: Vec<_> = inner
            .rooms
            .iter()
            .filter(|(_, r)| !r.members.is_empty())
            .map(|(k, r)| (k.to_string(), r.members.len()))
            .collect();
        v.sort();
        v
    }

    /// Hub-wide counts.
    pub fn stats(&self) -> HubStats {
        let inner = self.inner.lock();
        HubStats {
            members: inner.members.len(),
            rooms: inner.rooms.len(),
            history_entries: inner.rooms.values().map(|r| r.history.len()).sum(),
            last_offset: inner.seq,
        }
    }
}

fn trim(room: &mut Room, len: usize, age: Duration, now: Instant) {
    while let Some(front) = room.history.front() {
        let too_many = room.history.len() > len;
        let too_old = now.saturating_duration_since(front.at) > age;
        if !(too_many || too_old) {
            break;
        }
        room.evicted_upto = room.evicted_upto.max(front.offset);
        room.history.pop_front();
    }
    room.history.release_if_empty();
}

#[cfg(test)]
mod tests;
