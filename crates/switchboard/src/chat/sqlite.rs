//! The chat store on SQLite: `chat.db` in the data dir (or an in-memory database when
//! `data_dir = "memory"`), WAL with `synchronous = FULL`, one transaction per write, so
//! an acknowledged message survives a crash of the process or the machine.
//!
//! Blocking calls run on tokio's blocking pool, one at a time on one connection. Sends
//! are group-committed (`sqlite_sends`): those that arrive during a commit share the next
//! transaction and its `fsync`.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use super::model::{
    Member, Message, MessageType, NewMessage, Retention, Role, Room, RoomKind, RoomOf,
};
use super::sqlite_sends::Sends;
use super::store::{ChatStore, Checked, Fut, StoreError};

#[derive(Clone)]
pub struct SqliteChat {
    conn: Arc<Mutex<Connection>>,
    sends: Arc<Sends>,
}

impl std::fmt::Debug for SqliteChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteChat")
            .field("send_commits", &self.sends.commits())
            .finish_non_exhaustive()
    }
}

const SCHEMA: &str = "BEGIN;
CREATE TABLE chat_rooms (id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
    private INTEGER NOT NULL, metadata TEXT, created_by TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE chat_members (room_id TEXT NOT NULL, user_id TEXT NOT NULL, role TEXT NOT NULL,
    joined_at INTEGER NOT NULL, read_seq INTEGER NOT NULL DEFAULT 0, read_at INTEGER,
    PRIMARY KEY (room_id, user_id));
CREATE INDEX chat_members_user ON chat_members (user_id);
CREATE TABLE chat_messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, room_id TEXT NOT NULL,
    sender_id TEXT NOT NULL, content TEXT NOT NULL, type TEXT NOT NULL, metadata TEXT,
    reply_to TEXT, client_msg_id TEXT, created_at INTEGER NOT NULL, edited_at INTEGER,
    deleted INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0);
CREATE INDEX chat_messages_room ON chat_messages (room_id, seq);
CREATE INDEX chat_messages_age ON chat_messages (created_at);
CREATE UNIQUE INDEX chat_messages_client ON chat_messages (sender_id, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
CREATE TABLE chat_presence (user_id TEXT PRIMARY KEY, last_seen INTEGER NOT NULL);
PRAGMA user_version = 1;
COMMIT;";

const MESSAGE_COLUMNS: &str = "seq, room_id, sender_id, content, type, metadata, reply_to, \
     client_msg_id, created_at, edited_at, deleted, delivered";

impl SqliteChat {
    /// Opens (creating if needed) `chat.db` in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteChat, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.display().to_string(), e))?;
        let conn = Connection::open(dir.join("chat.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::migrate(conn)
    }

    /// The same store in memory (nothing kept across restarts).
    pub fn memory() -> Result<SqliteChat, StoreError> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(conn: Connection) -> Result<SqliteChat, StoreError> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => conn.execute_batch(SCHEMA)?,
            1 => {}
            v => return Err(StoreError::Corrupt(format!("unknown schema version {v}"))),
        }
        let conn = Arc::new(Mutex::new(conn));
        Ok(SqliteChat {
            sends: Arc::new(Sends::new(conn.clone())),
            conn,
        })
    }

    /// Transactions committed for sends so far (a group commit takes several sends).
    pub fn send_commits(&self) -> u64 {
        self.sends.commits()
    }

    /// Runs `f` on the connection, off the async runtime.
    fn run<T, F>(&self, f: F) -> Fut<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&mut conn.lock()))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

fn json_col(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn room_row(r: &Row<'_>) -> rusqlite::Result<Room> {
    let kind: String = r.get(1)?;
    Ok(Room {
        id: r.get(0)?,
        kind: RoomKind::parse(&kind).unwrap_or(RoomKind::Group),
        name: r.get(2)?,
        private: r.get(3)?,
        metadata: json_col(r.get(4)?),
        created_by: r.get(5)?,
        created_at: r.get(6)?,
    })
}

fn member_row(r: &Row<'_>) -> rusqlite::Result<Member> {
    let role: String = r.get(1)?;
    Ok(Member {
        user_id: r.get(0)?,
        role: Role::parse(&role).unwrap_or(Role::Member),
        joined_at: r.get(2)?,
        read_seq: r.get(3)?,
        last_read_at: r.get(4)?,
    })
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<Message> {
    let kind: String = r.get(4)?;
    Ok(Message {
        seq: r.get(0)?,
        room_id: r.get(1)?,
        sender_id: r.get(2)?,
        content: r.get(3)?,
        kind: MessageType::parse(&kind).unwrap_or(MessageType::Text),
        metadata: json_col(r.get(5)?),
        reply_to: r.get(6)?,
        client_msg_id: r.get(7)?,
        created_at: r.get(8)?,
        edited_at: r.get(9)?,
        deleted: r.get(10)?,
        delivered: r.get(11)?,
    })
}

fn get_room(c: &Connection, id: &str) -> rusqlite::Result<Option<Room>> {
    c.query_row(
        "SELECT id, kind, name, private, metadata, created_by, created_at FROM chat_rooms WHERE id = ?1",
        [id],
        room_row,
    )
    .optional()
}

fn get_message(c: &Connection, seq: i64) -> rusqlite::Result<Option<Message>> {
    c.query_row(
        &format!("SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE seq = ?1"),
        [seq],
        message_row,
    )
    .optional()
}

fn unread_of(c: &Connection, room: &str, user: &str) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT COUNT(*) FROM chat_messages m JOIN chat_members b ON b.room_id = m.room_id AND b.user_id = ?2
         WHERE m.room_id = ?1 AND m.seq > b.read_seq AND m.sender_id != ?2 AND m.deleted = 0",
        params![room, user],
        |r| r.get(0),
    )
}

/// `ChatStore::insert_checked` inside a caller's transaction (a savepoint of a batch).
pub(super) fn checked(
    c: &Connection,
    msg: NewMessage,
    member_required: bool,
) -> Result<Checked, StoreError> {
    let room: Option<i64> = c
        .prepare_cached("SELECT 1 FROM chat_rooms WHERE id = ?1")?
        .query_row([&msg.room_id], |r| r.get(0))
        .optional()?;
    if room.is_none() {
        return Ok(Checked::NoRoom);
    }
    if member_required {
        let member: Option<i64> = c
            .prepare_cached("SELECT 1 FROM chat_members WHERE room_id = ?1 AND user_id = ?2")?
            .query_row(params![msg.room_id, msg.sender_id], |r| r.get(0))
            .optional()?;
        if member.is_none() {
            return Ok(Checked::NotMember);
        }
    }
    let (m, created) = insert(c, msg)?;
    Ok(Checked::Stored(m, created))
}

/// Stores `msg` (or finds the first one of its `client_msg_id`), inside the caller's
/// transaction.
fn insert(c: &Connection, msg: NewMessage) -> Result<(Message, bool), StoreError> {
    if let Some(client) = &msg.client_msg_id {
        let first = c
            .prepare_cached(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE sender_id = ?1 AND client_msg_id = ?2"
                ),
            )?
            .query_row(params![msg.sender_id, client], message_row)
            .optional()?;
        if let Some(first) = first {
            return Ok((first, false));
        }
    }
    c.prepare_cached(
        "INSERT INTO chat_messages (room_id, sender_id, content, type, metadata, reply_to, client_msg_id, created_at, delivered)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
            msg.room_id,
            msg.sender_id,
            msg.content,
            msg.kind.as_str(),
            msg.metadata.as_ref().map(Value::to_string),
            msg.reply_to,
            msg.client_msg_id,
            msg.created_at,
            msg.delivered
    ])?;
    let seq = c.last_insert_rowid();
    Ok((
        Message {
            seq,
            room_id: msg.room_id,
            sender_id: msg.sender_id,
            content: msg.content,
            kind: msg.kind,
            metadata: msg.metadata,
            reply_to: msg.reply_to,
            client_msg_id: msg.client_msg_id,
            created_at: msg.created_at,
            edited_at: None,
            deleted: false,
            delivered: msg.delivered,
        },
        true,
    ))
}

impl ChatStore for SqliteChat {
    fn create_room(&self, room: Room, members: Vec<(String, Role)>) -> Fut<'_, (Room, bool)> {
        self.run(move |c| {
            let tx = c.transaction()?;
            if let Some(existing) = get_room(&tx, &room.id)? {
                return Ok((existing, false));
            }
            tx.execute(
                "INSERT INTO chat_rooms (id, kind, name, private, metadata, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    room.id,
                    room.kind.as_str(),
                    room.name,
                    room.private,
                    room.metadata.as_ref().map(Value::to_string),
                    room.created_by,
                    room.created_at
                ],
            )?;
            for (user, role) in &members {
                tx.execute(
                    "INSERT OR IGNORE INTO chat_members (room_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
                    params![room.id, user, role.as_str(), room.created_at],
                )?;
            }
            tx.commit()?;
            Ok((room, true))
        })
    }

    fn room(&self, id: String) -> Fut<'_, Option<Room>> {
        self.run(move |c| Ok(get_room(c, &id)?))
    }

    fn member(&self, room: String, user: String) -> Fut<'_, Option<Member>> {
        self.run(move |c| {
            Ok(c.query_row(
                "SELECT user_id, role, joined_at, read_seq, read_at FROM chat_members WHERE room_id = ?1 AND user_id = ?2",
                params![room, user],
                member_row,
            )
            .optional()?)
        })
    }

    fn members(&self, room: String) -> Fut<'_, Vec<Member>> {
        self.run(move |c| {
            let mut st = c.prepare_cached(
                "SELECT user_id, role, joined_at, read_seq, read_at FROM chat_members WHERE room_id = ?1 ORDER BY joined_at, user_id",
            )?;
            let rows = st.query_map([room], member_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn add_member(&self, room: String, user: String, role: Role, at: i64) -> Fut<'_, bool> {
        self.run(move |c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO chat_members (room_id, user_id, role, joined_at) VALUES (?1, ?2, ?3, ?4)",
                params![room, user, role.as_str(), at],
            )?;
            Ok(n == 1)
        })
    }

    fn remove_member(&self, room: String, user: String) -> Fut<'_, bool> {
        self.run(move |c| {
            let n = c.execute(
                "DELETE FROM chat_members WHERE room_id = ?1 AND user_id = ?2",
                params![room, user],
            )?;
            Ok(n == 1)
        })
    }

    fn set_role(&self, room: String, user: String, role: Role) -> Fut<'_, bool> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE chat_members SET role = ?3 WHERE room_id = ?1 AND user_id = ?2",
                params![room, user, role.as_str()],
            )?;
            Ok(n == 1)
        })
    }

    fn rooms_of(&self, user: String) -> Fut<'_, Vec<RoomOf>> {
        self.run(move |c| {
            let rows: Vec<(Room, String)> = {
                let mut st = c.prepare_cached(
                    "SELECT r.id, r.kind, r.name, r.private, r.metadata, r.created_by, r.created_at, m.role
                     FROM chat_members m JOIN chat_rooms r ON r.id = m.room_id WHERE m.user_id = ?1 ORDER BY r.id",
                )?;
                st.query_map([&user], |r| Ok((room_row(r)?, r.get(7)?)))?
                    .collect::<Result<_, _>>()?
            };
            let mut out = Vec::with_capacity(rows.len());
            for (room, role) in rows {
                let unread = unread_of(c, &room.id, &user)?;
                out.push(RoomOf {
                    room,
                    role: Role::parse(&role).unwrap_or(Role::Member),
                    unread,
                });
            }
            Ok(out)
        })
    }

    fn room_ids_of(&self, user: String) -> Fut<'_, Vec<String>> {
        self.run(move |c| {
            let mut st = c.prepare_cached("SELECT room_id FROM chat_members WHERE user_id = ?1")?;
            let rows = st.query_map([user], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn insert_checked(&self, msg: NewMessage, member_required: bool) -> Fut<'_, Checked> {
        Box::pin(self.sends.submit(msg, member_required))
    }

    fn message(&self, seq: i64) -> Fut<'_, Option<Message>> {
        self.run(move |c| Ok(get_message(c, seq)?))
    }

    fn update_message(
        &self,
        seq: i64,
        content: Option<String>,
        deleted: bool,
        at: i64,
    ) -> Fut<'_, Option<Message>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = if deleted {
                tx.execute(
                    "UPDATE chat_messages SET deleted = 1, content = '', metadata = NULL, edited_at = ?2 WHERE seq = ?1",
                    params![seq, at],
                )?
            } else {
                tx.execute(
                    "UPDATE chat_messages SET content = ?2, edited_at = ?3 WHERE seq = ?1 AND deleted = 0",
                    params![seq, content, at],
                )?
            };
            let out = if n == 1 { get_message(&tx, seq)? } else { None };
            tx.commit()?;
            Ok(out)
        })
    }

    fn history(
        &self,
        room: String,
        before: Option<i64>,
        limit: usize,
    ) -> Fut<'_, (Vec<Message>, bool)> {
        self.run(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE room_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            ))?;
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
            let mut rows: Vec<Message> = st
                .query_map(
                    params![room, before.unwrap_or(i64::MAX), fetch],
                    message_row,
                )?
                .collect::<Result<_, _>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            rows.reverse();
            Ok((rows, more))
        })
    }

    fn mark_read(&self, room: String, user: String, seq: i64, at: i64) -> Fut<'_, bool> {
        self.run(move |c| {
            let n = c.execute(
                "UPDATE chat_members SET read_seq = ?3, read_at = ?4 WHERE room_id = ?1 AND user_id = ?2 AND read_seq < ?3",
                params![room, user, seq, at],
            )?;
            Ok(n == 1)
        })
    }

    fn mark_delivered(&self, room: String, user: String) -> Fut<'_, ()> {
        self.run(move |c| {
            c.execute(
                "UPDATE chat_messages SET delivered = 1 WHERE room_id = ?1 AND sender_id != ?2 AND delivered = 0",
                params![room, user],
            )?;
            Ok(())
        })
    }

    fn unread(&self, room: String, user: String) -> Fut<'_, i64> {
        self.run(move |c| Ok(unread_of(c, &room, &user)?))
    }

    fn set_last_seen(&self, user: String, at: i64) -> Fut<'_, ()> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO chat_presence (user_id, last_seen) VALUES (?1, ?2)
                 ON CONFLICT(user_id) DO UPDATE SET last_seen = MAX(last_seen, ?2)",
                params![user, at],
            )?;
            Ok(())
        })
    }

    fn last_seen(&self, users: Vec<String>) -> Fut<'_, Vec<(String, i64)>> {
        self.run(move |c| {
            let mut st =
                c.prepare_cached("SELECT last_seen FROM chat_presence WHERE user_id = ?1")?;
            let mut out = Vec::new();
            for u in users {
                if let Some(at) = st.query_row([&u], |r| r.get(0)).optional()? {
                    out.push((u, at));
                }
            }
            Ok(out)
        })
    }

    fn prune(&self, retention: Retention, now_ms: i64) -> Fut<'_, u64> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let mut removed = 0usize;
            if retention.days > 0 {
                let cutoff =
                    now_ms.saturating_sub((retention.days as i64).saturating_mul(86_400_000));
                removed +=
                    tx.execute("DELETE FROM chat_messages WHERE created_at < ?1", [cutoff])?;
            }
            if retention.max_per_room > 0 {
                removed += tx.execute(
                    "DELETE FROM chat_messages WHERE seq IN (
                       SELECT seq FROM (
                         SELECT seq, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY seq DESC) AS n
                         FROM chat_messages) WHERE n > ?1)",
                    [retention.max_per_room as i64],
                )?;
            }
            tx.commit()?;
            Ok(removed as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str, private: bool) -> Room {
        Room {
            id: id.into(),
            kind: RoomKind::Group,
            name: id.into(),
            private,
            metadata: Some(serde_json::json!({"topic": "t"})),
            created_by: "ana".into(),
            created_at: 1,
        }
    }

    fn msg(room: &str, sender: &str, content: &str, client: Option<&str>, at: i64) -> NewMessage {
        NewMessage {
            room_id: room.into(),
            sender_id: sender.into(),
            content: content.into(),
            kind: MessageType::Text,
            metadata: None,
            reply_to: None,
            client_msg_id: client.map(str::to_owned),
            created_at: at,
            delivered: false,
        }
    }

    #[tokio::test]
    async fn rooms_members_and_idempotent_sends_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("sb-chat-store-{}", rand::random::<u64>()));
        {
            let s = SqliteChat::open(&dir).expect("open");
            let members = vec![
                ("ana".to_owned(), Role::Owner),
                ("bob".to_owned(), Role::Member),
            ];
            let (r, created) = s
                .create_room(room("r", true), members.clone())
                .await
                .expect("create");
            assert!(created);
            assert_eq!(r.metadata, Some(serde_json::json!({"topic": "t"})));
            let (_, again) = s
                .create_room(room("r", false), members)
                .await
                .expect("create");
            assert!(!again, "an existing room is not replaced");
            let (m1, new1) = s
                .insert_message(msg("r", "ana", "one", Some("c1"), 10))
                .await
                .expect("insert");
            let (m1b, new1b) = s
                .insert_message(msg("r", "ana", "changed", Some("c1"), 11))
                .await
                .expect("insert");
            assert!(new1 && !new1b);
            assert_eq!(m1, m1b, "a repeated clientMsgId returns the first message");
            // Another sender may use the same clientMsgId.
            let (_, other) = s
                .insert_message(msg("r", "bob", "two", Some("c1"), 12))
                .await
                .expect("insert");
            assert!(other);
            assert!(
                s.mark_read("r".into(), "bob".into(), m1.seq, 20)
                    .await
                    .expect("read")
            );
            assert!(
                !s.mark_read("r".into(), "bob".into(), m1.seq - 1, 21)
                    .await
                    .expect("read"),
                "never back"
            );
        }
        let s = SqliteChat::open(&dir).expect("reopen");
        let r = s.room("r".into()).await.expect("room").expect("kept");
        assert!(r.private);
        let members = s.members("r".into()).await.expect("members");
        assert_eq!(members.len(), 2);
        let bob = members.iter().find(|m| m.user_id == "bob").expect("bob");
        assert_eq!((bob.read_seq, bob.last_read_at), (1, Some(20)));
        let (page, more) = s.history("r".into(), None, 10).await.expect("history");
        assert_eq!(
            page.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert!(!more);
        assert_eq!(s.unread("r".into(), "ana".into()).await.expect("unread"), 1);
        assert_eq!(s.unread("r".into(), "bob".into()).await.expect("unread"), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn history_pages_newest_last_and_retention_prunes() {
        let s = SqliteChat::memory().expect("memory");
        s.create_room(room("a", false), vec![]).await.expect("room");
        s.create_room(room("b", false), vec![]).await.expect("room");
        for i in 0..10 {
            s.insert_message(msg("a", "ana", &format!("a{i}"), None, 1_000 + i))
                .await
                .expect("a");
            s.insert_message(msg("b", "ana", &format!("b{i}"), None, 1_000 + i))
                .await
                .expect("b");
        }
        let (page, more) = s.history("a".into(), None, 3).await.expect("page");
        assert_eq!(
            page.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["a7", "a8", "a9"]
        );
        assert!(more);
        let (older, _) = s
            .history("a".into(), Some(page[0].seq), 2)
            .await
            .expect("older");
        assert_eq!(
            older.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["a5", "a6"]
        );

        let removed = s
            .prune(
                Retention {
                    days: 0,
                    max_per_room: 4,
                },
                0,
            )
            .await
            .expect("prune");
        assert_eq!(removed, 12);
        let (kept, more) = s.history("b".into(), None, 100).await.expect("b");
        assert_eq!(
            kept.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
            ["b6", "b7", "b8", "b9"]
        );
        assert!(!more);
        // Everything is older than one day at 1 day + 2 s.
        let removed = s
            .prune(
                Retention {
                    days: 1,
                    max_per_room: 0,
                },
                86_400_000 + 2_000,
            )
            .await
            .expect("prune");
        assert_eq!(removed, 8);
    }

    #[tokio::test]
    async fn edits_deletes_and_last_seen() {
        let s = SqliteChat::memory().expect("memory");
        s.create_room(room("r", false), vec![]).await.expect("room");
        let (m, _) = s
            .insert_message(msg("r", "ana", "x", None, 1))
            .await
            .expect("m");
        let e = s
            .update_message(m.seq, Some("y".into()), false, 2)
            .await
            .expect("edit")
            .expect("found");
        assert_eq!((e.content.as_str(), e.edited_at), ("y", Some(2)));
        let d = s
            .update_message(m.seq, None, true, 3)
            .await
            .expect("delete")
            .expect("found");
        assert!(d.deleted && d.content.is_empty());
        assert!(
            s.update_message(m.seq, Some("z".into()), false, 4)
                .await
                .expect("edit")
                .is_none(),
            "a deleted message stays deleted"
        );
        use crate::chat::store::Checked;
        assert_eq!(
            s.insert_checked(msg("nowhere", "ana", "x", None, 5), true)
                .await
                .expect("checked"),
            Checked::NoRoom
        );
        assert_eq!(
            s.insert_checked(msg("r", "eve", "x", None, 5), true)
                .await
                .expect("checked"),
            Checked::NotMember
        );
        assert!(matches!(
            s.insert_checked(msg("r", "eve", "x", None, 5), false)
                .await
                .expect("checked"),
            Checked::Stored(_, true)
        ));
        s.set_last_seen("ana".into(), 50).await.expect("seen");
        s.set_last_seen("ana".into(), 40).await.expect("seen");
        assert_eq!(
            s.last_seen(vec!["ana".into(), "bob".into()])
                .await
                .expect("seen"),
            [("ana".to_owned(), 50)]
        );
    }

    /// Sends that arrive together share a transaction (one `fsync`), and each still gets
    /// its own answer: stored in order, a repeated `clientMsgId` inside the same batch
    /// answered with the first, unknown rooms and non-members refused with nothing written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_share_commits_and_keep_their_own_answers() {
        let dir = std::env::temp_dir().join(format!("sb-chat-group-{}", rand::random::<u64>()));
        let s = SqliteChat::open(&dir).expect("open");
        s.create_room(room("r", true), vec![("ana".to_owned(), Role::Owner)])
            .await
            .expect("create");
        let before = s.send_commits();
        let sends = (0..60).map(|i| {
            let s = s.clone();
            async move {
                let m = match i % 6 {
                    0 => msg("nowhere", "ana", "x", None, i),
                    1 => msg("r", "eve", "x", None, i),
                    // Every third message repeats the client id of the message before it.
                    2 | 3 => msg(
                        "r",
                        "ana",
                        &format!("m{i}"),
                        Some(&format!("c{}", i / 2)),
                        i,
                    ),
                    _ => msg("r", "ana", &format!("m{i}"), None, i),
                };
                s.insert_checked(m, true).await.expect("answered")
            }
        });
        let answers = futures_util::future::join_all(sends).await;
        let commits = s.send_commits() - before;
        assert!(commits < 20, "60 concurrent sends took {commits} commits");
        let mut stored = Vec::new();
        for (i, a) in answers.iter().enumerate() {
            match (i % 6, a) {
                (0, Checked::NoRoom) | (1, Checked::NotMember) => {}
                (2 | 4 | 5, Checked::Stored(m, true)) => stored.push(m.clone()),
                (3, Checked::Stored(m, false)) => {
                    assert_eq!(
                        m.content,
                        format!("m{}", i - 1),
                        "the first of its client id"
                    );
                }
                other => panic!("send {i}: {other:?}"),
            }
        }
        let (history, _) = s.history("r".into(), None, 100).await.expect("history");
        assert_eq!(
            history, stored,
            "every stored message once, in the order answered"
        );
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A send whose write fails (the database is locked by another writer) answers an
    /// error and writes nothing; the sends after it are stored as usual.
    #[tokio::test]
    async fn a_failed_send_writes_nothing_and_the_next_ones_work() {
        let dir = std::env::temp_dir().join(format!("sb-chat-busy-{}", rand::random::<u64>()));
        let s = SqliteChat::open(&dir).expect("open");
        s.create_room(room("r", false), vec![])
            .await
            .expect("create");
        s.conn
            .lock()
            .busy_timeout(std::time::Duration::ZERO)
            .expect("timeout");
        let other = Connection::open(dir.join("chat.db")).expect("second connection");
        other.execute_batch("BEGIN IMMEDIATE").expect("write lock");
        let failed = s
            .insert_checked(msg("r", "ana", "lost", None, 1), false)
            .await;
        assert!(
            matches!(&failed, Err(StoreError::Sqlite(e)) if e.to_string().contains("locked")),
            "{failed:?}"
        );
        other.execute_batch("ROLLBACK").expect("unlock");
        assert!(matches!(
            s.insert_checked(msg("r", "ana", "kept", None, 2), false)
                .await
                .expect("stored"),
            Checked::Stored(_, true)
        ));
        let (history, _) = s.history("r".into(), None, 10).await.expect("history");
        let contents: Vec<_> = history.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["kept"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
