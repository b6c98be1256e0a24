//! The chat's rules, transport-neutral: who may join, send, edit, delete, read and page
//! which room; what each does to the store; what the room hears (through the hub, so
//! every transport's members of the fabric room get it).
//!
//! Order of every write: check, store (durable), then announce and answer. A refusal
//! writes nothing and announces nothing.

use std::sync::Arc;
use std::time::Duration;

use hub::{Hub, Payload, Publish};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ChatError;
use super::fleet::{self, Change, Fleet, KICK_SIGNAL, ONLINE};
use super::fleet_live::{Back, FleetError, Idle, touch_every};
use super::input::{CreateInput, SendInput};
use super::live::{ChatConn, Live, Status, Tick, Timing, TypingOutcome};
use super::model::{Member, Message, NewMessage, Retention, Role, Room, RoomKind, direct_room};
use super::store::{ChatStore, Checked};
use super::wire::{
    self, ChatMessage, HistoryPage, JoinAck, Kicked, MemberInfo, MemberRemoved, MessageAck,
    PresenceAck, PresenceUpdate, ReadAck, ReadReceipt, RoleChanged, RoomAck, RoomCreated,
    RoomEntry, RoomsAck, UserInRoom, UserPresence,
};
use crate::realtime::user_room;
use crate::tickets::now_ms;

/// The chat's settings.
#[derive(Debug, Clone, Copy)]
pub struct ChatConfig {
    /// Largest message content (`max_message_bytes`).
    pub max_message_bytes: usize,
    pub timing: Timing,
    pub retention: Retention,
}

/// Which typing event a client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingKind {
    /// `typing`: the others get `typing`.
    Typing,
    Start,
    Stop,
}

impl TypingKind {
    fn event(self) -> &'static str {
        match self {
            TypingKind::Typing => "typing",
            TypingKind::Start => "typing:start",
            TypingKind::Stop => "typing:stop",
        }
    }
}

/// How long a name is remembered as not a chat room ([`Chat::is_chat_room`]).
const NOT_CHAT_TTL: Duration = Duration::from_secs(2);
/// Names remembered at most (then forgotten all at once: a cache, never a leak).
const KNOWN_MAX: usize = 10_000;

/// The chat service.
pub struct Chat {
    store: Arc<dyn ChatStore>,
    hub: Arc<Hub>,
    live: Mutex<Live>,
    config: ChatConfig,
    /// Room name -> (is a chat room, when learned).
    known: Mutex<std::collections::HashMap<String, (bool, Instant)>>,
    /// Cluster mode: joins, leaves and presence decided fleet-wide.
    fleet: std::sync::OnceLock<Fleet>,
    metrics: super::metrics::ChatMetrics,
}

impl std::fmt::Debug for Chat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat").finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, ChatError>;

impl Chat {
    pub fn new(store: Arc<dyn ChatStore>, hub: Arc<Hub>, config: ChatConfig) -> Arc<Chat> {
        Arc::new(Chat {
            store,
            hub,
            live: Mutex::new(Live::default()),
            config,
            known: Mutex::new(std::collections::HashMap::new()),
            fleet: std::sync::OnceLock::new(),
            metrics: super::metrics::ChatMetrics::default(),
        })
    }

    /// Cluster mode: `user_joined` / `user_left` and online / offline become fleet-wide
    /// (see `fleet`), and a kick reaches every node.
    pub fn set_cluster(
        self: &Arc<Self>,
        cluster: Arc<crate::cluster::Cluster>,
        tasks: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) {
        let weak = Arc::downgrade(self);
        let rooms = cluster.book(
            "chat",
            Arc::new(move |room, event, user, _, _| {
                let Some(chat) = weak.upgrade() else { return };
                let name = if event == "member_joined" {
                    "user_joined"
                } else {
                    "user_left"
                };
                let rooms = [room.to_owned()];
                chat.emit(&rooms, name, &user_in(room, user), Some(user), false);
            }),
            tasks,
            stop,
        );
        let (tx, mut rx) = fleet::channel();
        let online = cluster.book(
            "chat-online",
            Arc::new(move |_, event, user, _, _| {
                let change = if event == "member_joined" {
                    Change::Online(user.to_owned())
                } else {
                    Change::Offline(user.to_owned())
                };
                if tx.try_send(change).is_err() {
                    tracing::warn!(user, "chat presence: queue full, a change is not announced");
                }
            }),
            tasks,
            stop,
        );
        let weak = Arc::downgrade(self);
        let stopped = stop.clone();
        tasks.spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = stopped.cancelled() => return,
                    c = rx.recv() => match c { Some(c) => c, None => return },
                };
                let Some(chat) = weak.upgrade() else { return };
                chat.fleet_change(change).await;
            }
        });
        let weak = Arc::downgrade(self);
        cluster.signals().on(
            KICK_SIGNAL,
            Arc::new(move |body| {
                let (Some(chat), Some(room), Some(user)) =
                    (weak.upgrade(), body["room"].as_str(), body["user"].as_str())
                else {
                    return;
                };
                chat.remove_here(room, user);
            }),
        );
        let _ = self.fleet.set(Fleet::new(cluster, rooms, online));
    }

    /// A user came online or went offline on the whole fleet.
    async fn fleet_change(&self, change: Change) {
        match change {
            Change::Online(user) => {
                self.announce_presence(&user, Status::Online, now_ms(), false)
                    .await;
            }
            Change::Offline(user) => {
                let at = now_ms();
                if let Err(e) = self.store.set_last_seen(user.clone(), at).await {
                    tracing::warn!(error = %e, "chat presence: storing last seen");
                }
                self.announce_presence(&user, Status::Offline, at, false)
                    .await;
            }
        }
    }

    /// A user's first connection entered the room (here): `user_joined`, once
    /// fleet-wide in cluster mode.
    fn arrived(&self, room: &str, user: &str) {
        match self.fleet.get() {
            Some(f) => f.rooms.joined(room, user, None, None),
            None => self.emit(
                &[room.to_owned()],
                "user_joined",
                &user_in(room, user),
                Some(user),
                false,
            ),
        }
    }

    /// A user's last connection (here) left the room: `user_left`, once fleet-wide in
    /// cluster mode.
    fn departed(&self, room: &str, user: &str) {
        match self.fleet.get() {
            Some(f) => f.rooms.left(room, user),
            None => self.emit(
                &[room.to_owned()],
                "user_left",
                &user_in(room, user),
                Some(user),
                false,
            ),
        }
    }

    /// Takes a removed member's connections on this node out of the room.
    fn remove_here(&self, room: &str, user: &str) {
        let conns = self.live.lock().conns_of(user);
        let mut last = false;
        for c in conns {
            let (l, _) = self.live.lock().leave(c.conn_id(), room);
            last |= l;
            c.unsubscribe(room);
        }
        if last {
            self.departed(room, user);
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// The chat's counters (`/metrics`).
    pub fn metrics(&self) -> &super::metrics::ChatMetrics {
        &self.metrics
    }

    /// Typing stops and idle users go away on time; old messages are pruned every minute.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune_at = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let ticks = self.live.lock().tick(now, &self.config.timing);
            for t in ticks {
                match t {
                    Tick::TypingStopped { room, user } => self.typing_stopped(&room, &user).await,
                    Tick::Away { user, last_seen } => self.idle(&user, last_seen).await,
                }
            }
            if now >= prune_at {
                prune_at = now + Duration::from_secs(60);
                let r = self.config.retention;
                if r != Retention::default() {
                    match self.store.prune(r, now_ms()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(removed = n, "chat retention pruned messages"),
                        Err(e) => tracing::warn!(error = %e, "chat retention failed"),
                    }
                }
            }
        }
    }

    /// Publishes to the fabric rooms; `except_user`'s connections are skipped.
    fn emit(
        &self,
        rooms: &[String],
        event: &str,
        body: &impl Serialize,
        except_user: Option<&str>,
        volatile: bool,
    ) {
        if rooms.is_empty() {
            return;
        }
        self.hub.publish(Publish {
            rooms: rooms.iter().map(|r| Arc::from(r.as_str())).collect(),
            except: except_user
                .map(|u| Arc::from(user_room(u).as_str()))
                .into_iter()
                .collect(),
            event: event.into(),
            payload: Payload::json(body),
            volatile,
            persist: !volatile,
            ..Publish::default()
        });
    }

    /// A decision the fleet could not make (Redis failed or was slow): this node's own
    /// stands, counted.
    fn fell_back(&self, what: &str, e: &FleetError) {
        self.metrics
            .fleet_fallback
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(error = %e, "chat: {what} decided by this node alone");
    }

    /// The user's typing in the room stopped here (went quiet, left, disconnected): the
    /// room hears `typing:stop` from the node that relayed the last start (cluster mode),
    /// else from this one.
    async fn typing_stopped(&self, room: &str, user: &str) {
        if let Some(f) = self.fleet.get() {
            match f.live.typing_quiet(room, user).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => self.fell_back("a typing stop", &e),
            }
        }
        self.emit(
            &[room.to_owned()],
            "typing:stop",
            &user_in(room, user),
            Some(user),
            true,
        );
    }

    /// The user has been idle here for `presence_idle_secs` (this node's status now says
    /// `away`): announced, unless (cluster mode) they were active on another node or
    /// another node announced it.
    async fn idle(&self, user: &str, last_seen: i64) {
        let Some(f) = self.fleet.get() else {
            self.announce_presence(user, Status::Away, last_seen, false)
                .await;
            return;
        };
        let now_at = now_ms();
        match f
            .live
            .claim_away(user, last_seen, now_at, self.config.timing.idle)
            .await
        {
            Ok(Idle::ActiveAt(at)) => {
                let ago = Duration::from_millis(now_at.saturating_sub(at).max(0) as u64);
                let now = Instant::now();
                let active = now.checked_sub(ago).unwrap_or(now);
                self.live.lock().active_elsewhere(user, active, at);
            }
            Ok(Idle::AlreadyAway) => {}
            Ok(Idle::Claimed { last_seen }) => {
                self.emit_presence(user, Status::Away, last_seen).await;
            }
            Err(e) => {
                self.fell_back("an away", &e);
                self.announce_presence(user, Status::Away, last_seen, false)
                    .await;
            }
        }
    }

    /// Cluster mode: writes the user's activity for the fleet's idle timers, at most once
    /// per `touch_every(idle)` per user from this node, without waiting for it.
    fn touch(&self, user: &str) {
        let Some(f) = self.fleet.get() else { return };
        let idle = self.config.timing.idle;
        if !self
            .live
            .lock()
            .touch_due(user, Instant::now(), touch_every(idle))
        {
            return;
        }
        let (fleet, user, at) = (f.live.clone(), user.to_owned(), now_ms());
        let metrics = self.metrics.fleet_fallback_counter();
        tokio::spawn(async move {
            if let Err(e) = fleet.touch(&user, at, idle * 2).await {
                metrics.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(error = %e, "chat presence: writing activity to Redis");
            }
        });
    }

    async fn announce_presence(&self, user: &str, status: Status, last_seen: i64, chosen: bool) {
        if let Some(f) = self.fleet.get() {
            f.set_status(user, status, last_seen, chosen).await;
        }
        self.emit_presence(user, status, last_seen).await;
    }

    /// `presence:update` to everyone who shares a room with the user.
    async fn emit_presence(&self, user: &str, status: Status, last_seen: i64) {
        let rooms = match self.store.room_ids_of(user.to_owned()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "chat presence: rooms of user");
                return;
            }
        };
        self.emit(
            &rooms,
            "presence:update",
            &PresenceUpdate {
                last_seen,
                status,
                user_id: user.to_owned(),
            },
            None,
            false,
        );
    }

    /// Marks the user active (a chat event); announces a return from away.
    async fn active(&self, user: &str) {
        let back = self.live.lock().activity(user, Instant::now(), now_ms());
        self.touch(user);
        if back {
            self.came_back(user).await;
        }
    }

    /// The user, away by this node's clock, is active here: `online` is announced, once
    /// fleet-wide in cluster mode (and not over an away they chose on another node).
    async fn came_back(&self, user: &str) {
        let at = now_ms();
        let Some(f) = self.fleet.get() else {
            self.announce_presence(user, Status::Online, at, false)
                .await;
            return;
        };
        match f.live.claim_back(user, at).await {
            Ok(Back::Claimed) => self.emit_presence(user, Status::Online, at).await,
            Ok(Back::AlreadyOnline) => {}
            Ok(Back::ChosenAway) => self.live.lock().chosen_elsewhere(user),
            Err(e) => {
                self.fell_back("a return from away", &e);
                self.announce_presence(user, Status::Online, at, false)
                    .await;
            }
        }
    }

    /// A connection opened (announces `online` for the user's first).
    pub async fn connected(&self, conn: Arc<dyn ChatConn>) {
        let user = conn.user_id().to_owned();
        let online = self.live.lock().connect(conn, Instant::now(), now_ms());
        self.touch(&user);
        if online {
            match self.fleet.get() {
                Some(f) => f.online.joined(ONLINE, &user, None, None),
                None => {
                    self.announce_presence(&user, Status::Online, now_ms(), false)
                        .await
                }
            }
        }
    }

    /// A connection closed: `typing:stop`, `user_left`, and `offline` for the user's last.
    pub async fn disconnected(&self, conn: &str) {
        let at = now_ms();
        let Some(gone) = self.live.lock().disconnect(conn, at) else {
            return;
        };
        for room in &gone.typing_stopped {
            self.typing_stopped(room, &gone.user).await;
        }
        for room in &gone.left {
            self.departed(room, &gone.user);
        }
        if let Some(f) = self.fleet.get() {
            if gone.offline_at.is_some() {
                f.online.left(ONLINE, &gone.user);
            }
        } else if let Some(at) = gone.offline_at {
            if let Err(e) = self.store.set_last_seen(gone.user.clone(), at).await {
                tracing::warn!(error = %e, "chat presence: storing last seen");
            }
            self.announce_presence(&gone.user, Status::Offline, at, false)
                .await;
        }
    }

    async fn room(&self, room: &str) -> Result<Room> {
        self.store
            .room(room.to_owned())
            .await?
            .ok_or_else(|| ChatError::UnknownRoom(room.to_owned()))
    }

    async fn member_of(&self, room: &str, user: &str) -> Result<Member> {
        self.store
            .member(room.to_owned(), user.to_owned())
            .await?
            .ok_or_else(|| ChatError::NotMember(room.to_owned()))
    }

    /// Whether `room` is a chat room (else the plain transports keep their own rules).
    /// Asked on every plain `/ws` join, leave and message, so answers are remembered: a
    /// chat room for good (rooms are never deleted), any other name for
    /// [`NOT_CHAT_TTL`] (a room another node just created is seen within it).
    pub async fn is_chat_room(&self, room: &str) -> Result<bool> {
        let now = Instant::now();
        if let Some(&(is, at)) = self.known.lock().get(room)
            && (is || now < at + NOT_CHAT_TTL)
        {
            return Ok(is);
        }
        let is = self.store.room(room.to_owned()).await?.is_some();
        let mut known = self.known.lock();
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(room.to_owned(), (is, now));
        Ok(is)
    }

    fn remember_chat_room(&self, room: &str) {
        let mut known = self.known.lock();
        if known.len() >= KNOWN_MAX {
            known.clear();
        }
        known.insert(room.to_owned(), (true, Instant::now()));
    }

    /// Room authorization on every transport: a private chat room only for members.
    pub async fn may_subscribe(&self, room: &str, user: &str) -> Result<()> {
        let Some(r) = self.store.room(room.to_owned()).await? else {
            return Ok(());
        };
        if r.private || r.kind == RoomKind::Direct {
            self.member_of(room, user).await?;
        }
        Ok(())
    }

    /// `join`: becomes a member of a public room, enters the fabric room; the others
    /// hear `user_joined` once per user.
    pub async fn join(&self, conn: &dyn ChatConn, room: &str) -> Result<Value> {
        let user = conn.user_id();
        crate::transport::check_room(room, Some(user))
            .map_err(|e| ChatError::BadRoomName(e.to_string()))?;
        let r = self.room(room).await?;
        let member = self.store.member(room.to_owned(), user.to_owned()).await?;
        if member.is_none() {
            if r.private || r.kind == RoomKind::Direct {
                return Err(ChatError::NotMember(room.to_owned()));
            }
            self.store
                .add_member(room.to_owned(), user.to_owned(), Role::Member, now_ms())
                .await?;
        }
        conn.subscribe(room).map_err(|_| ChatError::TooManyRooms)?;
        let first = self.live.lock().join(conn.conn_id(), room);
        if first {
            self.arrived(room, user);
        }
        self.store
            .mark_delivered(room.to_owned(), user.to_owned())
            .await?;
        self.active(user).await;
        let members = self.store.members(room.to_owned()).await?;
        let unread = self.store.unread(room.to_owned(), user.to_owned()).await?;
        let mut online = self.live.lock().users_in(room);
        if let Some(f) = self.fleet.get()
            && let Some(users) = f.users_in(room).await
        {
            online.extend(users);
        }
        let members = members
            .into_iter()
            .map(|m| MemberInfo {
                joined_at: m.joined_at,
                last_read_at: m.last_read_at,
                online: online.contains(&m.user_id),
                role: m.role,
                user_id: m.user_id,
            })
            .collect();
        Ok(wire::value(&JoinAck {
            members,
            room: r.wire(),
            room_id: room.to_owned(),
            success: true,
            unread,
        }))
    }

    /// `leave`: out of the fabric room (still a member); `user_left` for the user's last.
    pub async fn leave(&self, conn: &dyn ChatConn, room: &str) -> Result<Value> {
        let user = conn.user_id();
        let (last, typing) = self.live.lock().leave(conn.conn_id(), room);
        conn.unsubscribe(room);
        if typing {
            self.typing_stopped(room, user).await;
        }
        if last {
            self.departed(room, user);
        }
        Ok(room_ack(room))
    }

    /// `message`: stored (durable) before anyone hears of it; a repeated `clientMsgId`
    /// answers the first message and announces nothing. `sender` is the connection's
    /// user (never a payload field), or the HTTP API's sender (`as_api`: no membership
    /// needed, `system` allowed).
    pub async fn send(
        &self,
        sender: &str,
        input: SendInput,
        as_api: bool,
    ) -> Result<(ChatMessage, bool)> {
        if let Some(reply) = &input.reply_to {
            // The rare path: the room and membership first, so they are what a refusal names.
            let room = self.room(&input.room).await?;
            if !as_api {
                self.member_of(&room.id, sender).await?;
            }
            let seq = reply.parse::<i64>().unwrap_or(0);
            match self.store.message(seq).await? {
                Some(m) if m.room_id == room.id => {}
                Some(_) => return Err(ChatError::MessageNotInRoom(reply.clone(), room.id)),
                None => return Err(ChatError::UnknownMessage(reply.clone())),
            }
        }
        let mut delivered = self.live.lock().others_in(&input.room, sender);
        if !delivered && let Some(f) = self.fleet.get() {
            delivered = f
                .users_in(&input.room)
                .await
                .is_some_and(|users| users.iter().any(|u| u != sender));
        }
        let room_id = input.room.clone();
        let started = Instant::now();
        let checked = self
            .store
            .insert_checked(
                NewMessage {
                    room_id: input.room,
                    sender_id: sender.to_owned(),
                    content: input.content,
                    kind: input.kind,
                    metadata: input.metadata,
                    reply_to: input.reply_to,
                    client_msg_id: input.client_msg_id,
                    created_at: now_ms(),
                    delivered,
                },
                !as_api,
            )
            .await?;
        self.metrics.store_latency.observe(started.elapsed());
        let (msg, created) = match checked {
            Checked::Stored(m, created) => (m, created),
            Checked::NoRoom => return Err(ChatError::UnknownRoom(room_id)),
            Checked::NotMember => return Err(ChatError::NotMember(room_id)),
        };
        let body = if created {
            self.metrics
                .stored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let body = msg.wire(&[]);
            self.emit(
                std::slice::from_ref(&msg.room_id),
                "message",
                &body,
                None,
                false,
            );
            body
        } else {
            self.with_read_by(&msg).await?
        };
        if !as_api {
            self.active(sender).await;
        }
        Ok((body, created))
    }

    async fn with_read_by(&self, msg: &Message) -> Result<ChatMessage> {
        let members = self.store.members(msg.room_id.clone()).await?;
        Ok(msg.wire(&msg.read_by(&members)))
    }

    async fn message(&self, seq: i64) -> Result<Message> {
        match self.store.message(seq).await? {
            Some(m) if !m.deleted => Ok(m),
            _ => Err(ChatError::UnknownMessage(seq.to_string())),
        }
    }

    /// `message:edit`: the sender only; the room hears `message:edited`.
    pub async fn edit(&self, user: &str, seq: i64, content: String) -> Result<Value> {
        let msg = self.message(seq).await?;
        self.member_of(&msg.room_id, user).await?;
        if msg.sender_id != user {
            return Err(ChatError::NotYourMessage);
        }
        let updated = self
            .store
            .update_message(seq, Some(content), false, now_ms())
            .await?
            .ok_or_else(|| ChatError::UnknownMessage(seq.to_string()))?;
        let body = self.with_read_by(&updated).await?;
        self.emit(
            std::slice::from_ref(&updated.room_id),
            "message:edited",
            &body,
            None,
            false,
        );
        self.active(user).await;
        Ok(wire::value(&MessageAck {
            message: body,
            success: true,
        }))
    }

    /// `message:delete`: the sender or a room owner/admin; the room hears
    /// `message:deleted` (the message stays in history as a tombstone).
    pub async fn delete(&self, user: &str, seq: i64) -> Result<Value> {
        let msg = self.message(seq).await?;
        let member = self.member_of(&msg.room_id, user).await?;
        if msg.sender_id != user && !member.role.moderates() {
            return Err(ChatError::NotAllowedToDelete);
        }
        let updated = self
            .store
            .update_message(seq, None, true, now_ms())
            .await?
            .ok_or_else(|| ChatError::UnknownMessage(seq.to_string()))?;
        let body = updated.wire(&[]);
        self.emit(
            std::slice::from_ref(&updated.room_id),
            "message:deleted",
            &body,
            None,
            false,
        );
        self.active(user).await;
        Ok(wire::value(&MessageAck {
            message: body,
            success: true,
        }))
    }

    /// `read`: everything up to the message is read; the room hears `read` when the
    /// position moved.
    pub async fn read(&self, user: &str, room: &str, seq: i64) -> Result<Value> {
        self.room(room).await?;
        self.member_of(room, user).await?;
        let msg = self.message(seq).await?;
        if msg.room_id != room {
            return Err(ChatError::MessageNotInRoom(
                seq.to_string(),
                room.to_owned(),
            ));
        }
        let at = now_ms();
        let moved = self
            .store
            .mark_read(room.to_owned(), user.to_owned(), seq, at)
            .await?;
        let body = ReadReceipt {
            message_id: seq.to_string(),
            read_at: at,
            room_id: room.to_owned(),
            user_id: user.to_owned(),
        };
        if moved {
            self.emit(&[room.to_owned()], "read", &body, None, false);
        }
        self.active(user).await;
        Ok(wire::value(&ReadAck {
            message_id: body.message_id,
            moved,
            read_at: at,
            room_id: body.room_id,
            success: true,
            user_id: body.user_id,
        }))
    }

    /// `history`: up to `limit` messages before `before`, newest last. Members only,
    /// unless `user` is `None` (the HTTP API).
    pub async fn history(
        &self,
        user: Option<&str>,
        room: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.room(room).await?;
        if let Some(u) = user {
            self.member_of(room, u).await?;
        }
        let (msgs, more) = self.store.history(room.to_owned(), before, limit).await?;
        let members = self.store.members(room.to_owned()).await?;
        let messages = msgs.iter().map(|m| m.wire(&m.read_by(&members))).collect();
        if let Some(u) = user {
            self.active(u).await;
        }
        Ok(HistoryPage {
            has_more: more,
            messages,
            room_id: room.to_owned(),
            success: true,
        })
    }

    /// `typing`, `typing:start`, `typing:stop`: volatile, never stored, throttled.
    pub async fn typing(&self, conn: &dyn ChatConn, room: &str, kind: TypingKind) -> Result<Value> {
        let user = conn.user_id();
        let start = kind != TypingKind::Stop;
        let t = &self.config.timing;
        let outcome = {
            let mut live = self.live.lock();
            if !live.is_in(conn.conn_id(), room) {
                return Err(ChatError::NotJoined(room.to_owned()));
            }
            match self.fleet.get() {
                // Cluster mode: this node's throttle first (no Redis for a flood), then
                // the fleet's (below).
                Some(_) if start && !live.may_relay(room, user, Instant::now()) => {
                    TypingOutcome::Throttled
                }
                Some(_) if start => TypingOutcome::Relay,
                _ => live.typing(room, user, start, Instant::now(), t),
            }
        };
        let outcome = match self.fleet.get() {
            Some(f) if start && outcome == TypingOutcome::Relay => {
                match f
                    .live
                    .typing_start(room, user, t.typing_throttle, t.typing_quiet)
                    .await
                {
                    Ok(None) => {
                        self.live.lock().relayed(room, user, Instant::now(), t);
                        TypingOutcome::Relay
                    }
                    Ok(Some(left)) => {
                        self.live
                            .lock()
                            .throttled_elsewhere(room, user, Instant::now(), left);
                        TypingOutcome::Throttled
                    }
                    Err(e) => {
                        self.fell_back("a typing throttle", &e);
                        self.live.lock().typing(room, user, true, Instant::now(), t)
                    }
                }
            }
            // A client's stop: news when a start was on record anywhere.
            Some(f) if !start => match f.live.typing_stop(room, user).await {
                Ok(true) => TypingOutcome::Relay,
                Ok(false) => TypingOutcome::Idle,
                Err(e) => {
                    self.fell_back("a typing stop", &e);
                    outcome
                }
            },
            _ => outcome,
        };
        let counter = match outcome {
            TypingOutcome::Throttled => Some(&self.metrics.typing_throttled),
            TypingOutcome::Relay => Some(&self.metrics.typing_relayed),
            TypingOutcome::Idle => None,
        };
        if let Some(c) = counter {
            c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match outcome {
            TypingOutcome::Throttled => return Err(ChatError::TypingThrottled),
            TypingOutcome::Relay => self.emit(
                &[room.to_owned()],
                kind.event(),
                &user_in(room, user),
                Some(user),
                true,
            ),
            TypingOutcome::Idle => {}
        }
        if kind != TypingKind::Stop {
            self.active(user).await;
        }
        Ok(room_ack(room))
    }

    /// `presence:heartbeat` (`None`) or `presence:update {status}`.
    pub async fn presence(&self, user: &str, status: Option<Status>) -> Result<Value> {
        let now = Instant::now();
        let at = now_ms();
        let asked = status;
        let changed = match status {
            None => self.live.lock().activity(user, now, at),
            Some(s) => self.live.lock().choose(user, s, now, at),
        };
        let (status, last_seen) = self
            .live
            .lock()
            .presence(user)
            .unwrap_or((Status::Online, at));
        self.touch(user);
        let mut changed = changed;
        if let (Some(f), Some(chosen), false) = (self.fleet.get(), asked, changed) {
            // Cluster mode: what another node announced (an away chosen or decided by
            // its clock there) may differ from this choice, unchanged here.
            let recorded = f.statuses(&[user.to_owned()]).await.pop().flatten();
            changed = recorded.is_some_and(|(s, _)| s != status);
            if !changed && chosen == Status::Away {
                // Already away: now by choice, so activity elsewhere does not end it.
                f.set_status(user, status, last_seen, true).await;
            }
        }
        if changed {
            match status {
                Status::Online if asked.is_none() => self.came_back(user).await,
                _ => {
                    let chosen = asked == Some(Status::Away);
                    self.announce_presence(user, status, last_seen, chosen)
                        .await
                }
            }
        }
        Ok(wire::value(&PresenceAck {
            last_seen,
            status,
            success: true,
            user_id: user.to_owned(),
        }))
    }

    /// Presence of users, connected or not: `[{userId, status, lastSeen}]`. In cluster
    /// mode every node answers from the fleet's record of what was announced (a user
    /// connected to two nodes has one status, the last announced, and its time), then
    /// from its own connections (an announcement still on its way), then the store.
    pub async fn presence_of(&self, users: &[String]) -> Result<Vec<UserPresence>> {
        let mut out = Vec::with_capacity(users.len());
        let fleet = match self.fleet.get() {
            Some(f) => f.statuses(users).await,
            None => vec![None; users.len()],
        };
        let mut offline = Vec::new();
        {
            let live = self.live.lock();
            for (u, announced) in users.iter().zip(fleet) {
                match announced.or_else(|| live.presence(u)) {
                    Some((status, at)) => out.push(UserPresence {
                        last_seen: Some(at),
                        status,
                        user_id: u.clone(),
                    }),
                    None => offline.push(u.clone()),
                }
            }
        }
        let seen = self.store.last_seen(offline.clone()).await?;
        for u in offline {
            let at = seen.iter().find(|(v, _)| *v == u).map(|(_, at)| *at);
            out.push(UserPresence {
                last_seen: at,
                status: Status::Offline,
                user_id: u,
            });
        }
        // In the order asked.
        out.sort_by_key(|p| users.iter().position(|u| *u == p.user_id));
        Ok(out)
    }

    /// `room:create`: a group or channel room; the creator is its owner.
    pub async fn create_room(&self, user: &str, input: CreateInput) -> Result<Value> {
        let id = input
            .room
            .unwrap_or_else(|| format!("room_{:016x}", rand::random::<u64>()));
        crate::transport::check_room(&id, Some(user))
            .map_err(|e| ChatError::BadRoomName(e.to_string()))?;
        if id.starts_with("dm:") || id.starts_with("user:") || id.starts_with("event_") {
            return Err(ChatError::BadRoomName(format!(
                "{id:?}: dm:, user: and event_ rooms are not created this way"
            )));
        }
        // A room other clients already use on the fabric (a ticket room, a feed) must not
        // turn into a chat room under them: its joins would start following chat rules.
        if self.store.room(id.clone()).await?.is_some() {
            return Err(ChatError::RoomExists(id));
        }
        if self.hub.room_info(&id).is_some_and(|r| r.members > 0) {
            return Err(ChatError::RoomInUse(id));
        }
        let mut members = vec![(user.to_owned(), Role::Owner)];
        for m in input.members {
            if !members.iter().any(|(u, _)| *u == m) {
                members.push((m, Role::Member));
            }
        }
        let room = Room {
            name: input.name.unwrap_or_else(|| id.clone()),
            id,
            kind: input.kind,
            private: input.private,
            metadata: input.metadata,
            created_by: user.to_owned(),
            created_at: now_ms(),
        };
        let ids: Vec<String> = members.iter().map(|(u, _)| user_room(u)).collect();
        let (room, created) = self.store.create_room(room, members).await?;
        if !created {
            return Err(ChatError::RoomExists(room.id));
        }
        self.remember_chat_room(&room.id);
        let body = room.wire();
        self.emit(&ids, "room:added", &body, None, false);
        Ok(wire::value(&RoomCreated {
            created: None,
            room: body,
            success: true,
        }))
    }

    /// `room:direct {userId}`: the canonical private room of the two users.
    pub async fn direct(&self, user: &str, other: &str) -> Result<Value> {
        if other == user {
            return Err(ChatError::BadInput(
                "A direct room needs another user".into(),
            ));
        }
        let id = direct_room(user, other);
        let room = Room {
            name: id.clone(),
            id,
            kind: RoomKind::Direct,
            private: true,
            metadata: None,
            created_by: user.to_owned(),
            created_at: now_ms(),
        };
        let members = vec![
            (user.to_owned(), Role::Member),
            (other.to_owned(), Role::Member),
        ];
        let (room, created) = self.store.create_room(room, members).await?;
        self.remember_chat_room(&room.id);
        let body = room.wire();
        if created {
            self.emit(
                &[user_room(user), user_room(other)],
                "room:added",
                &body,
                None,
                false,
            );
        }
        Ok(wire::value(&RoomCreated {
            created: Some(created),
            room: body,
            success: true,
        }))
    }

    /// `room:kick {roomId, userId}`: an owner or admin removes a member (not an owner);
    /// their connections leave the room.
    pub async fn kick(&self, user: &str, room: &str, target: &str) -> Result<Value> {
        self.room(room).await?;
        let actor = self.member_of(room, user).await?;
        let victim = self.member_of(room, target).await?;
        if !actor.role.moderates() || victim.role >= actor.role {
            return Err(ChatError::NotModerator);
        }
        self.store
            .remove_member(room.to_owned(), target.to_owned())
            .await?;
        self.remove_here(room, target);
        if let Some(f) = self.fleet.get() {
            let body = serde_json::json!({"room": room, "user": target});
            if let Err(e) = f.cluster.signals().send(KICK_SIGNAL, body).await {
                tracing::warn!(error = %e, "chat: a kick did not reach the other nodes");
            }
        }
        let body = MemberRemoved {
            by: user.to_owned(),
            room_id: room.to_owned(),
            user_id: target.to_owned(),
        };
        self.emit(
            &[room.to_owned(), user_room(target)],
            "room:member_removed",
            &body,
            None,
            false,
        );
        Ok(wire::value(&Kicked {
            room_id: room.to_owned(),
            success: true,
            user_id: target.to_owned(),
        }))
    }

    /// `room:role {roomId, userId, role}`: the owner makes members admins or back.
    pub async fn set_role(
        &self,
        user: &str,
        room: &str,
        target: &str,
        role: Role,
    ) -> Result<Value> {
        self.room(room).await?;
        let actor = self.member_of(room, user).await?;
        let victim = self.member_of(room, target).await?;
        if actor.role != Role::Owner || role == Role::Owner || victim.role == Role::Owner {
            return Err(ChatError::NotModerator);
        }
        self.store
            .set_role(room.to_owned(), target.to_owned(), role)
            .await?;
        let mut body = RoleChanged {
            role,
            room_id: room.to_owned(),
            success: None,
            user_id: target.to_owned(),
        };
        self.emit(&[room.to_owned()], "room:role", &body, None, false);
        body.success = Some(true);
        Ok(wire::value(&body))
    }

    /// `rooms`: the user's rooms with unread counts.
    pub async fn rooms(&self, user: &str) -> Result<Value> {
        let rooms = self.store.rooms_of(user.to_owned()).await?;
        let rooms = rooms
            .iter()
            .map(|r| RoomEntry {
                room: r.room.wire(),
                role: r.role,
                unread: r.unread,
            })
            .collect();
        Ok(wire::value(&RoomsAck {
            rooms,
            success: true,
        }))
    }
}

fn user_in(room: &str, user: &str) -> UserInRoom {
    UserInRoom {
        room_id: room.to_owned(),
        user_id: user.to_owned(),
    }
}

fn room_ack(room: &str) -> Value {
    wire::value(&RoomAck {
        room_id: room.to_owned(),
        success: true,
    })
}
