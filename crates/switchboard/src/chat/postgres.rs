//! The chat store on PostgreSQL (`database_url`), shared by every node of a fleet: the
//! same tables as [`super::sqlite`], each write one statement or one transaction,
//! committed (`synchronous_commit` as the server has it, on by default) before it returns.
//!
//! A few connections, each made on first use and again after it broke; the schema is
//! created on the first connection of a process, under an advisory lock so nodes
//! starting together do not race. Idempotent sends rely on the unique index: of two
//! nodes inserting the same `clientMsgId`, one inserts and the other reads its row.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::model::{
    Member, Message, MessageType, NewMessage, Retention, Role, Room, RoomKind, RoomOf,
};
use super::store::{ChatStore, Checked, Fut, StoreError};

/// Connections kept per process.
const POOL: usize = 4;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chat_rooms (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
    private BOOLEAN NOT NULL, metadata TEXT, created_by TEXT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS chat_members (room_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
    joined_at BIGINT NOT NULL, read_seq BIGINT NOT NULL DEFAULT 0, read_at BIGINT,
    PRIMARY KEY (room_id, user_id));
CREATE INDEX IF NOT EXISTS chat_members_user ON chat_members (user_id);
CREATE TABLE IF NOT EXISTS chat_messages (seq BIGSERIAL PRIMARY KEY, room_id TEXT NOT NULL,
    sender_id TEXT NOT NULL, content TEXT NOT NULL, type TEXT NOT NULL, metadata TEXT,
    reply_to TEXT, client_msg_id TEXT, created_at BIGINT NOT NULL, edited_at BIGINT,
    deleted BOOLEAN NOT NULL DEFAULT false, delivered BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS chat_messages_room ON chat_messages (room_id, seq);
CREATE INDEX IF NOT EXISTS chat_messages_age ON chat_messages (created_at);
CREATE UNIQUE INDEX IF NOT EXISTS chat_messages_client ON chat_messages (sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS chat_presence (user_id TEXT PRIMARY KEY, last_seen BIGINT NOT NULL);
";

const MESSAGE_COLUMNS: &str = "seq, room_id, sender_id, content, type, metadata, reply_to, \
     client_msg_id, created_at, edited_at, deleted, delivered";
const ROOM_COLUMNS: &str = "id, kind, name, private, metadata, created_by, created_at";
const MEMBER_COLUMNS: &str = "user_id, role, joined_at, read_seq, read_at";

pub struct PgChat {
    config: tokio_postgres::Config,
    pool: Vec<Mutex<Option<PgConn>>>,
    next: AtomicUsize,
    schema: OnceCell<()>,
}

impl std::fmt::Debug for PgChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgChat").finish_non_exhaustive()
    }
}

impl PgChat {
    /// A store on `url` (`postgresql://user[:password]@host[:port]/db[?options=...]`).
    /// Connects on first use.
    pub fn new(url: &str) -> Result<PgChat, StoreError> {
        let config: tokio_postgres::Config = url.parse()?;
        Ok(PgChat {
            config,
            pool: (0..POOL).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            schema: OnceCell::new(),
        })
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "chat database connection ended");
            }
        });
        Ok(client)
    }

    /// Runs `f` with one of the pool's connections (made if missing or broken).
    fn with<'a, T, F>(&'a self, f: F) -> Fut<'a, T>
    where
        T: Send + 'a,
        F: for<'c> FnOnce(&'c mut PgConn) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'a,
    {
        Box::pin(async move {
            // A free connection if there is one, else wait for the next in turn.
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let free = (0..POOL).find_map(|i| self.pool[(start + i) % POOL].try_lock().ok());
            let mut guard = match free {
                Some(g) => g,
                None => self.pool[start % POOL].lock().await,
            };
            if guard.as_ref().is_none_or(|c| c.client.is_closed()) {
                *guard = Some(PgConn {
                    client: self.connect().await?,
                    insert: None,
                });
            }
            let client = guard.as_mut().expect("just connected");
            self.schema
                .get_or_try_init(|| async {
                    let tx = client.transaction().await?;
                    tx.execute("SELECT pg_advisory_xact_lock(7216014519)", &[])
                        .await?;
                    tx.batch_execute(SCHEMA).await?;
                    tx.commit().await?;
                    Ok::<(), StoreError>(())
                })
                .await?;
            f(client).await
        })
    }
}

/// One pooled connection and the send path's statement, prepared once on it (without
/// it every send was a Parse/Describe round trip before its insert).
struct PgConn {
    client: Client,
    insert: Option<Statement>,
}

impl PgConn {
    /// The send's insert, prepared on this connection the first time.
    async fn insert_statement(&mut self) -> Result<Statement, StoreError> {
        if let Some(s) = &self.insert {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&INSERT_CHECKED).await?;
        self.insert = Some(s.clone());
        Ok(s)
    }
}

impl std::ops::Deref for PgConn {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConn {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The checked insert of a send: one statement on the happy path, the checks its WHERE.
static INSERT_CHECKED: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO chat_messages (room_id, sender_id, content, type, metadata, reply_to, client_msg_id, created_at, delivered)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
         WHERE EXISTS (SELECT 1 FROM chat_rooms WHERE id = $1)
           AND (NOT $10 OR EXISTS (SELECT 1 FROM chat_members WHERE room_id = $1 AND user_id = $2))
         ON CONFLICT (sender_id, client_msg_id) WHERE client_msg_id IS NOT NULL DO NOTHING
         RETURNING {MESSAGE_COLUMNS}"
    )
});

fn json_col(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn room_row(r: &Row) -> Result<Room, StoreError> {
    let kind: String = r.try_get(1)?;
    Ok(Room {
        id: r.try_get(0)?,
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Group),
        name: r.try_get(2)?,
        private: r.try_get(3)?,
        metadata: json_col(r.try_get(4)?),
        created_by: r.try_get(5)?,
        created_at: r.try_get(6)?,
    })
}

fn member_row(r: &Row) -> Result<Member, StoreError> {
    let role: String = r.try_get(1)?;
    Ok(Member {
        user_id: r.try_get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Member),
        joined_at: r.try_get(2)?,
        read_seq: r.try_get(3)?,
        last_read_at: r.try_get(4)?,
    })
}

fn message_row(r: &Row) -> Result<Message, StoreError> {
    let kind: String = r.try_get(4)?;
    Ok(Message {
        seq: r.try_get(0)?,
        room_id: r.try_get(1)?,
        sender_id: r.try_get(2)?,
        content: r.try_get(3)?,
        kind: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        metadata: json_col(r.try_get(5)?),
        reply_to: r.try_get(6)?,
        client_msg_id: r.try_get(7)?,
        created_at: r.try_get(8)?,
        edited_at: r.try_get(9)?,
        deleted: r.try_get(10)?,
        delivered: r.try_get(11)?,
    })
}

async fn get_room(
    c: &impl tokio_postgres::GenericClient,
    id: &str,
) -> Result<Option<Room>, StoreError> {
    c.query_opt(
        &format!("SELECT {ROOM_COLUMNS} FROM chat_rooms WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|r| room_row(&r))
    .transpose()
}

async fn get_message(
    c: &impl tokio_postgres::GenericClient,
    seq: i64,
) -> Result<Option<Message>, StoreError> {
    c.query_opt(
        &format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE seq = $1"),
        &[&seq],
    )
    .await?
    .map(|r| message_row(&r))
    .transpose()
}

async fn unread_of(c: &Client, room: &str, user: &str) -> Result<i64, StoreError> {
    let row = c
        .query_one(
            "SELECT COUNT(*) FROM chat_messages m JOIN chat_members b ON b.room_id = m.room_id AND b.user_id = $2
             WHERE m.room_id = $1 AND m.seq > b.read_seq AND m.sender_id <> $2 AND NOT m.deleted",
            &[&room, &user],
        )
        .await?;
    Ok(row.try_get(0)?)
}

impl ChatStore for PgChat {
    fn create_room(&self, room: Room, members: Vec<(String, Role)>) -> Fut<'_, (Room, bool)> {
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await?;
                let metadata = room.metadata.as_ref().map(Value::to_string);
                let n = tx
                    .execute(
                        "INSERT INTO chat_rooms (id, kind, name, private, metadata, created_by, created_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                        &[
                            &room.id,
                            &room.kind.as_str(),
                            &room.name,
                            &room.private,
                            &metadata,
                            &room.created_by,
                            &room.created_at,
                        ],
                    )
                    .await?;
                if n == 0 {
                    let existing = get_room(&tx, &room.id)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("room vanished".into()))?;
                    return Ok((existing, false));
                }
                for (user, role) in &members {
                    tx.execute(
                        "INSERT INTO chat_members (room_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT DO NOTHING",
                        &[&room.id, user, &role.as_str(), &room.created_at],
                    )
                    .await?;
                }
                tx.commit().await?;
                Ok((room, true))
            })
        })
    }

    fn room(&self, id: String) -> Fut<'_, Option<Room>> {
        self.with(move |c| Box::pin(async move { get_room(&**c, &id).await }))
    }

    fn member(&self, room: String, user: String) -> Fut<'_, Option<Member>> {
        self.with(move |c| {
            Box::pin(async move {
                c.query_opt(
                    &format!("SELECT {MEMBER_COLUMNS} FROM chat_members WHERE room_id = $1 AND user_id = $2"),
                    &[&room, &user],
                )
                .await?
                .map(|r| member_row(&r))
                .transpose()
            })
        })
    }

    fn members(&self, room: String) -> Fut<'_, Vec<Member>> {
        self.with(move |c| {
            Box::pin(async move {
                c.query(
                    &format!("SELECT {MEMBER_COLUMNS} FROM chat_members WHERE room_id = $1 ORDER BY joined_at, user_id"),
                    &[&room],
                )
                .await?
                .iter()
                .map(member_row)
                .collect()
            })
        })
    }

    fn add_member(&self, room: String, user: String, role: Role, at: i64) -> Fut<'_, bool> {
        self.with(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "INSERT INTO chat_members (room_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT DO NOTHING",
                        &[&room, &user, &role.as_str(), &at],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
    }

    fn remove_member(&self, room: String, user: String) -> Fut<'_, bool> {
        self.with(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "DELETE FROM chat_members WHERE room_id = $1 AND user_id = $2",
                        &[&room, &user],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
    }

    fn set_role(&self, room: String, user: String, role: Role) -> Fut<'_, bool> {
        self.with(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE chat_members SET role = $3 WHERE room_id = $1 AND user_id = $2",
                        &[&room, &user, &role.as_str()],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
    }

    fn rooms_of(&self, user: String) -> Fut<'_, Vec<RoomOf>> {
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT r.id, r.kind, r.name, r.private, r.metadata, r.created_by, r.created_at, m.role
                         FROM chat_members m JOIN chat_rooms r ON r.id = m.room_id WHERE m.user_id = $1 ORDER BY r.id",
                        &[&user],
                    )
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let room = room_row(&row)?;
                    let role: String = row.try_get(7)?;
                    let unread = unread_of(c, &room.id, &user).await?;
                    out.push(RoomOf {
                        room,
                        role: Role::parse(&role).unwrap_or(Role::Member),
                        unread,
                    });
                }
                Ok(out)
            })
        })
    }

    fn room_ids_of(&self, user: String) -> Fut<'_, Vec<String>> {
        self.with(move |c| {
            Box::pin(async move {
                c.query(
                    "SELECT room_id FROM chat_members WHERE user_id = $1",
                    &[&user],
                )
                .await?
                .iter()
                .map(|r| r.try_get(0).map_err(StoreError::from))
                .collect()
            })
        })
    }

    fn insert_checked(&self, msg: NewMessage, member_required: bool) -> Fut<'_, Checked> {
        self.with(move |c| {
            Box::pin(async move {
                let metadata = msg.metadata.as_ref().map(Value::to_string);
                // One statement on the happy path: the checks are its WHERE.
                let insert = c.insert_statement().await?;
                let inserted = c
                    .query_opt(
                        &insert,
                        &[
                            &msg.room_id,
                            &msg.sender_id,
                            &msg.content,
                            &msg.kind.as_str(),
                            &metadata,
                            &msg.reply_to,
                            &msg.client_msg_id,
                            &msg.created_at,
                            &msg.delivered,
                            &member_required,
                        ],
                    )
                    .await?;
                if let Some(row) = inserted {
                    return Ok(Checked::Stored(message_row(&row)?, true));
                }
                // Why not: no room, not a member, or a repeated clientMsgId.
                if get_room(&**c, &msg.room_id).await?.is_none() {
                    return Ok(Checked::NoRoom);
                }
                if member_required
                    && c.query_opt(
                        "SELECT 1 FROM chat_members WHERE room_id = $1 AND user_id = $2",
                        &[&msg.room_id, &msg.sender_id],
                    )
                    .await?
                    .is_none()
                {
                    return Ok(Checked::NotMember);
                }
                let first = c
                    .query_one(
                        &format!(
                            "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE sender_id = $1 AND client_msg_id = $2"
                        ),
                        &[&msg.sender_id, &msg.client_msg_id],
                    )
                    .await?;
                Ok(Checked::Stored(message_row(&first)?, false))
            })
        })
    }

    fn message(&self, seq: i64) -> Fut<'_, Option<Message>> {
        self.with(move |c| Box::pin(async move { get_message(&**c, seq).await }))
    }

    fn update_message(
        &self,
        seq: i64,
        content: Option<String>,
        deleted: bool,
        at: i64,
    ) -> Fut<'_, Option<Message>> {
        self.with(move |c| {
            Box::pin(async move {
                let row = if deleted {
                    c.query_opt(
                        &format!(
                            "UPDATE chat_messages SET deleted = true, content = '', metadata = NULL, edited_at = $2
                             WHERE seq = $1 RETURNING {MESSAGE_COLUMNS}"
                        ),
                        &[&seq, &at],
                    )
                    .await?
                } else {
                    c.query_opt(
                        &format!(
                            "UPDATE chat_messages SET content = $2, edited_at = $3 WHERE seq = $1 AND NOT deleted
                             RETURNING {MESSAGE_COLUMNS}"
                        ),
                        &[&seq, &content, &at],
                    )
                    .await?
                };
                row.map(|r| message_row(&r)).transpose()
            })
        })
    }

    fn history(
        &self,
        room: String,
        before: Option<i64>,
        limit: usize,
    ) -> Fut<'_, (Vec<Message>, bool)> {
        self.with(move |c| {
            Box::pin(async move {
                let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
                let before = before.unwrap_or(i64::MAX);
                let rows = c
                    .query(
                        &format!(
                            "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
                        ),
                        &[&room, &before, &fetch],
                    )
                    .await?;
                let mut msgs: Vec<Message> = rows.iter().map(message_row).collect::<Result<_, _>>()?;
                let more = msgs.len() > limit;
                msgs.truncate(limit);
                msgs.reverse();
                Ok((msgs, more))
            })
        })
    }

    fn mark_read(&self, room: String, user: String, seq: i64, at: i64) -> Fut<'_, bool> {
        self.with(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE chat_members SET read_seq = $3, read_at = $4 WHERE room_id = $1 AND user_id = $2 AND read_seq < $3",
                        &[&room, &user, &seq, &at],
                    )
                    .await?;
                Ok(n == 1)
            })
        })
    }

    fn mark_delivered(&self, room: String, user: String) -> Fut<'_, ()> {
        self.with(move |c| {
            Box::pin(async move {
                c.execute(
                    "UPDATE chat_messages SET delivered = true WHERE room_id = $1 AND sender_id <> $2 AND NOT delivered",
                    &[&room, &user],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn unread(&self, room: String, user: String) -> Fut<'_, i64> {
        self.with(move |c| Box::pin(async move { unread_of(c, &room, &user).await }))
    }

    fn set_last_seen(&self, user: String, at: i64) -> Fut<'_, ()> {
        self.with(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO chat_presence (user_id, last_seen) VALUES ($1, $2)
                     ON CONFLICT (user_id) DO UPDATE SET last_seen = GREATEST(chat_presence.last_seen, EXCLUDED.last_seen)",
                    &[&user, &at],
                )
                .await?;
                Ok(())
            })
        })
    }

    fn last_seen(&self, users: Vec<String>) -> Fut<'_, Vec<(String, i64)>> {
        self.with(move |c| {
            Box::pin(async move {
                let rows = c
                    .query(
                        "SELECT user_id, last_seen FROM chat_presence WHERE user_id = ANY($1)",
                        &[&users],
                    )
                    .await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            })
        })
    }

    fn prune(&self, retention: Retention, now_ms: i64) -> Fut<'_, u64> {
        self.with(move |c| {
            Box::pin(async move {
                let mut removed = 0;
                if retention.days > 0 {
                    let cutoff =
                        now_ms.saturating_sub((retention.days as i64).saturating_mul(86_400_000));
                    removed += c
                        .execute("DELETE FROM chat_messages WHERE created_at < $1", &[&cutoff])
                        .await?;
                }
                if retention.max_per_room > 0 {
                    let keep = retention.max_per_room as i64;
                    removed += c
                        .execute(
                            "DELETE FROM chat_messages WHERE seq IN (
                               SELECT seq FROM (
                                 SELECT seq, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY seq DESC) AS n
                                 FROM chat_messages) ranked WHERE n > $1)",
                            &[&keep],
                        )
                        .await?;
                }
                Ok(removed)
            })
        })
    }
}
