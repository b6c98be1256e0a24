//! Where the chat keeps rooms, memberships, read positions and messages.
//!
//! Owns: the storage operations the chat rules need, each one atomic. Every write is
//! durable when its future completes (the service acknowledges nothing before that).
//! Never: rules (who may do what is decided in `service`). Implementations: SQLite in
//! the data dir ([`super::sqlite`]) for one node; PostgreSQL (`database_url`,
//! [`super::postgres`]) shared by a fleet.

use futures_util::future::BoxFuture;

use super::model::{Member, Message, NewMessage, Retention, Role, Room, RoomOf};

/// What a storage operation returns.
pub type Fut<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Why the store could not do an operation. Clients see "storage unavailable" only.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("corrupt chat store: {0}")]
    Corrupt(String),
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("no chat room {0}")]
    NoRoom(String),
}

/// What [`ChatStore::insert_checked`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// No such room: nothing written.
    NoRoom,
    /// The sender is not a member: nothing written.
    NotMember,
    /// Stored (`true`), or the first message of that `clientMsgId` (`false`).
    Stored(Message, bool),
}

/// The chat's storage.
pub trait ChatStore: Send + Sync {
    /// Creates `room` with its first members; if a room by that id exists, nothing is
    /// written and the existing room comes back with `false`.
    fn create_room(&self, room: Room, members: Vec<(String, Role)>) -> Fut<'_, (Room, bool)>;
    fn room(&self, id: String) -> Fut<'_, Option<Room>>;
    fn member(&self, room: String, user: String) -> Fut<'_, Option<Member>>;
    fn members(&self, room: String) -> Fut<'_, Vec<Member>>;
    /// Adds a member (false: already one, nothing changed).
    fn add_member(&self, room: String, user: String, role: Role, at: i64) -> Fut<'_, bool>;
    /// Removes a member (false: was not one).
    fn remove_member(&self, room: String, user: String) -> Fut<'_, bool>;
    fn set_role(&self, room: String, user: String, role: Role) -> Fut<'_, bool>;
    /// The rooms `user` is a member of, with role and unread count.
    fn rooms_of(&self, user: String) -> Fut<'_, Vec<RoomOf>>;
    /// Only the ids of `rooms_of` (presence announcements).
    fn room_ids_of(&self, user: String) -> Fut<'_, Vec<String>>;
    /// Stores a message if the room exists and, when `member_required`, the sender is
    /// one of its members: the checks and the insert in one round trip (the send path's
    /// cost). A message of the same sender with the same `client_msg_id` comes back
    /// instead (`Stored(first, false)`) and nothing is written.
    fn insert_checked(&self, msg: NewMessage, member_required: bool) -> Fut<'_, Checked>;
    /// [`ChatStore::insert_checked`] without the membership check, for a room that
    /// exists (`StoreError::NoRoom` otherwise): the stored message, or the first one of
    /// its `client_msg_id`, and whether it is new.
    fn insert_message(&self, msg: NewMessage) -> Fut<'_, (Message, bool)> {
        Box::pin(async move {
            let room = msg.room_id.clone();
            match self.insert_checked(msg, false).await? {
                Checked::Stored(m, fresh) => Ok((m, fresh)),
                Checked::NoRoom | Checked::NotMember => Err(StoreError::NoRoom(room)),
            }
        })
    }
    fn message(&self, seq: i64) -> Fut<'_, Option<Message>>;
    /// Replaces a message's content (edit) or marks it deleted (content emptied).
    fn update_message(
        &self,
        seq: i64,
        content: Option<String>,
        deleted: bool,
        at: i64,
    ) -> Fut<'_, Option<Message>>;
    /// Up to `limit` messages of `room` before `before` (or the newest), oldest first,
    /// and whether older ones exist.
    fn history(
        &self,
        room: String,
        before: Option<i64>,
        limit: usize,
    ) -> Fut<'_, (Vec<Message>, bool)>;
    /// Moves `user`'s read position in `room` up to `seq` (never back); true if it moved.
    fn mark_read(&self, room: String, user: String, seq: i64, at: i64) -> Fut<'_, bool>;
    /// Marks the messages others sent to `room` as delivered to a member.
    fn mark_delivered(&self, room: String, user: String) -> Fut<'_, ()>;
    /// Messages of others in `room` after `user`'s read position.
    fn unread(&self, room: String, user: String) -> Fut<'_, i64>;
    fn set_last_seen(&self, user: String, at: i64) -> Fut<'_, ()>;
    /// The stored last-seen times of those of `users` that have one.
    fn last_seen(&self, users: Vec<String>) -> Fut<'_, Vec<(String, i64)>>;
    /// Drops messages older than the retention allows; returns how many.
    fn prune(&self, retention: Retention, now_ms: i64) -> Fut<'_, u64>;
}
