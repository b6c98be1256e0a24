//! Durable hold storage: change records written to SQLite, one transaction per batch of
//! mutations (`tickets::commit` groups them), `synchronous = FULL`, so a hold is on disk
//! before the client hears it was granted.
//!
//! Behind [`HoldStore`] so Redis can replace it for many nodes. `memory` mode has no store
//! at all ([`MemoryStore`]); `SqliteStore::memory` (an in-memory database) stays for tests and
//! failpoints, which need a store that can be reloaded after a failed write.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use tickets::{
    Category, Change, EndedCounts, Event, Hold, HoldStatus, OrderKind, ProcessedOrder, Snapshot,
};

/// Where the hold service keeps its state between restarts.
pub trait HoldStore: Send {
    /// The persisted state, or `None` on a first start.
    fn load(&mut self) -> Result<Option<Snapshot>, StoreError>;
    /// Makes one mutation's change records durable, all or nothing.
    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError>;
    /// Whether `apply` may wait on a disk (then it runs off the async runtime).
    fn waits_on_disk(&self) -> bool {
        true
    }
    /// Whether the store keeps nothing at all ([`MemoryStore`]): the hold service then writes
    /// no change records anywhere, the state in memory is all there is.
    fn keeps_nothing(&self) -> bool {
        false
    }
}

/// `data_dir = memory`: no store. Holds live in the process's memory only (as the
/// peers in `bench/` keep them) and are gone after a restart; nothing is written, so an
/// operation is the rules under the state lock and nothing else.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl HoldStore for MemoryStore {
    fn load(&mut self) -> Result<Option<Snapshot>, StoreError> {
        Ok(None)
    }

    fn apply(&mut self, _changes: &[Change]) -> Result<(), StoreError> {
        Ok(())
    }

    fn waits_on_disk(&self) -> bool {
        false
    }

    fn keeps_nothing(&self) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

/// How many processed order ids are kept (older ones are forgotten first).
const ORDER_MEMORY: i64 = 10_000;

#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    /// An in-memory database: `apply` never touches a disk.
    in_memory: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) `holds.db` in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir(dir.display().to_string(), e))?;
        let conn = Connection::open(dir.join("holds.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::migrate(conn)
    }

    /// The same store on an in-memory database (keeps nothing across restarts).
    pub fn memory() -> Result<SqliteStore, StoreError> {
        Self::migrate(Connection::open_in_memory()?)
    }

    fn migrate(conn: Connection) -> Result<SqliteStore, StoreError> {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version == 0 {
            conn.execute_batch(
                "BEGIN;
                 CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT NOT NULL, position INTEGER NOT NULL);
                 CREATE TABLE categories (event_id INTEGER NOT NULL, id INTEGER NOT NULL, name TEXT NOT NULL,
                     price REAL NOT NULL, total_seats INTEGER NOT NULL, available_seats INTEGER NOT NULL,
                     position INTEGER NOT NULL, PRIMARY KEY (event_id, id));
                 CREATE TABLE holds (lock_id TEXT PRIMARY KEY, body TEXT NOT NULL);
                 CREATE TABLE processed_orders (seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, kind TEXT NOT NULL);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 PRAGMA user_version = 1;
                 COMMIT;",
            )?;
        } else if version != 1 {
            return Err(StoreError::Corrupt(format!(
                "unknown schema version {version}"
            )));
        }
        let in_memory = conn.path().is_none_or(str::is_empty);
        Ok(SqliteStore { conn, in_memory })
    }

    /// The processed order ids kept, oldest first.
    fn load_orders(&self) -> Result<Vec<ProcessedOrder>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT order_id, kind FROM processed_orders ORDER BY seq")?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(order_id, kind)| {
                let kind = match kind.as_str() {
                    "completed" => OrderKind::Completed,
                    "cancelled" => OrderKind::Cancelled,
                    other => return Err(StoreError::Corrupt(format!("order kind {other}"))),
                };
                Ok(ProcessedOrder { order_id, kind })
            })
            .collect()
    }
}

fn bump(tx: &rusqlite::Transaction<'_>, key: &str, by: i64) -> rusqlite::Result<()> {
    exec(
        tx,
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = value + ?2",
        params![key, by],
    )?;
    Ok(())
}

/// Holds a batch ended, by how they ended (added to the `ended_*` counters once).
#[derive(Default)]
struct Ended {
    expired: i64,
    released: i64,
    completed: i64,
}

fn kind_str(k: OrderKind) -> &'static str {
    match k {
        OrderKind::Completed => "completed",
        OrderKind::Cancelled => "cancelled",
    }
}

/// The sequence number inside a generated lock id (`lock_<seq>_<ms>`).
fn lock_seq(lock_id: &str) -> Option<i64> {
    lock_id
        .strip_prefix("lock_")?
        .split('_')
        .next()?
        .parse()
        .ok()
}

impl HoldStore for SqliteStore {
    fn waits_on_disk(&self) -> bool {
        !self.in_memory
    }

    fn load(&mut self) -> Result<Option<Snapshot>, StoreError> {
        let corrupt = |e: serde_json::Error| StoreError::Corrupt(e.to_string());
        let mut events: Vec<Event> = {
            let mut st = self
                .conn
                .prepare("SELECT id, name FROM events ORDER BY position, id")?;
            st.query_map([], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    categories: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?
        };
        if events.is_empty() {
            return Ok(None);
        }
        {
            let mut st = self.conn.prepare(
                "SELECT event_id, id, name, price, total_seats, available_seats FROM categories ORDER BY position, id",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    Category {
                        id: r.get(1)?,
                        name: r.get(2)?,
                        price: r.get(3)?,
                        total_seats: r.get(4)?,
                        available_seats: r.get(5)?,
                    },
                ))
            })?;
            for row in rows {
                let (event_id, cat) = row?;
                let event = events
                    .iter_mut()
                    .find(|e| e.id == event_id)
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("category of unknown event {event_id}"))
                    })?;
                event.categories.push(cat);
            }
        }
        let holds: Vec<Hold> = {
            let mut st = self
                .conn
                .prepare("SELECT body FROM holds ORDER BY lock_id")?;
            let bodies: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
            bodies
                .iter()
                .map(|b| serde_json::from_str(b))
                .collect::<Result<_, _>>()
                .map_err(corrupt)?
        };
        let processed_orders = self.load_orders()?;
        let meta = |key: &str| -> Result<i64, StoreError> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        };
        Ok(Some(Snapshot {
            events,
            holds,
            processed_orders,
            ended: EndedCounts {
                expired: meta("ended_expired")? as u64,
                released: meta("ended_released")? as u64,
                completed: meta("ended_completed")? as u64,
            },
            next_lock_seq: meta("next_lock_seq")? as u64,
        }))
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        // What many changes of a batch add up to is written once, after them: the ended
        // counters (sums), the next lock sequence (a maximum) and the trim of the
        // processed orders (the newest `ORDER_MEMORY` are kept either way).
        let mut ended = Ended::default();
        let mut next_lock_seq: Option<i64> = None;
        let mut orders_recorded = false;
        for change in changes {
            match change {
                Change::EventUpserted { event_id, name } => {
                    exec(&tx,
                        "INSERT INTO events (id, name, position) VALUES (?1, ?2, (SELECT COUNT(*) FROM events))
                         ON CONFLICT(id) DO UPDATE SET name = ?2",
                        params![event_id, name],
                    )?;
                }
                Change::CategoryUpserted {
                    event_id,
                    category: c,
                } => {
                    exec(&tx,
                        "INSERT INTO categories (event_id, id, name, price, total_seats, available_seats, position)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, (SELECT COUNT(*) FROM categories))
                         ON CONFLICT(event_id, id) DO UPDATE SET name = ?3, price = ?4, total_seats = ?5, available_seats = ?6",
                        params![event_id, c.id, c.name, c.price, c.total_seats, c.available_seats],
                    )?;
                }
                Change::HoldCreated(hold) => {
                    let body = serde_json::to_string(hold)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    exec(
                        &tx,
                        "INSERT INTO holds (lock_id, body) VALUES (?1, ?2)",
                        params![hold.lock_id, body],
                    )?;
                    if let Some(seq) = lock_seq(&hold.lock_id) {
                        next_lock_seq = next_lock_seq.max(Some(seq + 1));
                    }
                }
                Change::HoldStatus {
                    lock_id,
                    status,
                    expires_at,
                } => {
                    if status.is_live() {
                        let body: Option<String> = tx
                            .prepare_cached("SELECT body FROM holds WHERE lock_id = ?1")?
                            .query_row([lock_id], |r| r.get(0))
                            .optional()?;
                        let mut hold: Hold = serde_json::from_str(&body.ok_or_else(|| {
                            StoreError::Corrupt(format!("status of unknown hold {lock_id}"))
                        })?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        hold.status = *status;
                        hold.expires_at = *expires_at;
                        let body = serde_json::to_string(&hold)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                        exec(
                            &tx,
                            "UPDATE holds SET body = ?2 WHERE lock_id = ?1",
                            params![lock_id, body],
                        )?;
                    } else {
                        exec(&tx, "DELETE FROM holds WHERE lock_id = ?1", [lock_id])?;
                        match status {
                            HoldStatus::Expired => ended.expired += 1,
                            HoldStatus::Completed => ended.completed += 1,
                            _ => ended.released += 1,
                        }
                    }
                }
                Change::SeatsSold {
                    event_id,
                    category_id,
                    available_seats,
                    ..
                } => {
                    exec(
                        &tx,
                        "UPDATE categories SET available_seats = ?3 WHERE event_id = ?1 AND id = ?2",
                        params![event_id, category_id, available_seats],
                    )?;
                }
                Change::OrderRecorded { order_id, kind } => {
                    exec(
                        &tx,
                        "INSERT INTO processed_orders (order_id, kind) VALUES (?1, ?2)",
                        params![order_id, kind_str(*kind)],
                    )?;
                    orders_recorded = true;
                }
            }
        }
        if let Some(seq) = next_lock_seq {
            exec(
                &tx,
                "INSERT INTO meta (key, value) VALUES ('next_lock_seq', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = MAX(value, ?1)",
                params![seq],
            )?;
        }
        for (key, by) in [
            ("ended_expired", ended.expired),
            ("ended_released", ended.released),
            ("ended_completed", ended.completed),
        ] {
            if by > 0 {
                bump(&tx, key, by)?;
            }
        }
        if orders_recorded {
            exec(
                &tx,
                "DELETE FROM processed_orders WHERE seq <= (SELECT MAX(seq) FROM processed_orders) - ?1",
                [ORDER_MEMORY],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}

/// Runs a statement through the connection's statement cache: every write of a hold
/// operation reuses its parsed SQL instead of preparing it again.
fn exec(
    conn: &rusqlite::Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickets::{HoldConfig, HoldRequest, OrderMessage, State};

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchboard-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn catalog() -> Event {
        let c = |id, seats| Category {
            id,
            name: format!("c{id}"),
            price: 10.0,
            total_seats: seats,
            available_seats: seats,
        };
        Event {
            id: 1,
            name: "Show".into(),
            categories: vec![c(1, 10), c(2, 5)],
        }
    }

    fn req(user: &str, cat: i64, q: u32) -> HoldRequest {
        HoldRequest {
            user_id: user.into(),
            session_id: format!("s-{user}"),
            event_id: 1,
            category_id: cat,
            quantity: q,
        }
    }

    #[test]
    fn restart_restores_holds_confirmations_and_sales() {
        let dir = temp_dir("restart");
        let mut store = SqliteStore::open(&dir).expect("open");
        assert!(store.load().expect("load").is_none(), "first start");
        let mut state = State::new(HoldConfig::default()).expect("state");
        let t = 1_700_000_000_000;
        let mut run = |out: Vec<Change>| store.apply(&out).expect("apply");
        run(state.upsert_event(catalog()).expect("event").changes);
        let a = state.lock(req("a", 1, 3), t).expect("lock a");
        run(a.changes);
        let b = state.lock(req("b", 1, 2), t).expect("lock b");
        run(b.changes);
        let c = state.lock(req("c", 2, 1), t).expect("lock c");
        run(c.changes);
        let lock_b = b.value.lock_id.clone();
        run(state.confirm(&lock_b, t + 1000).expect("confirm").changes);
        let sold = OrderMessage {
            order_id: "o1".into(),
            event_id: 1,
            category_id: 1,
            quantity: 3,
            user_id: "a".into(),
        };
        run(state.order_completed(&sold).expect("sold").changes);
        run(state.unlock("c", 1, 2).expect("unlock").changes);

        drop(store);

        let mut reopened = SqliteStore::open(&dir).expect("reopen");
        let snapshot = reopened.load().expect("load").expect("data");
        assert_eq!(snapshot, state.snapshot());
        let restored = State::restore(HoldConfig::default(), snapshot).expect("restore");
        assert_eq!(restored.availability(1, 1), state.availability(1, 1));
        assert_eq!(
            restored.hold(&lock_b).map(|h| (h.status, h.expires_at)),
            state.hold(&lock_b).map(|h| (h.status, h.expires_at))
        );
        // Generated lock ids stay unique after a restart.
        let mut restored = restored;
        let next = restored
            .lock(req("d", 2, 1), t + 5000)
            .expect("lock after restart");
        assert!(next.value.lock_id != b.value.lock_id && next.value.lock_id != a.value.lock_id);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One `apply` holding many operations' changes (as a group commit writes them): the
    /// counters, the lock sequence and the order memory it writes once per batch come out
    /// as if every operation had been written alone.
    #[test]
    fn one_batch_of_many_operations_restores_the_same_state() {
        let dir = temp_dir("batch");
        let mut store = SqliteStore::open(&dir).expect("open");
        let mut state = State::new(HoldConfig::default()).expect("state");
        let t = 1_700_000_000_000;
        let mut batch: Vec<Change> = state.upsert_event(catalog()).expect("event").changes;
        let mut locks = Vec::new();
        for (i, user) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let held = state.lock(req(user, 1, 1), t + i as i64).expect("lock");
            locks.push(held.value.lock_id.clone());
            batch.extend(held.changes);
        }
        batch.extend(state.confirm(&locks[1], t + 10).expect("confirm").changes);
        let sold = OrderMessage {
            order_id: "o1".into(),
            event_id: 1,
            category_id: 1,
            quantity: 1,
            user_id: "a".into(),
        };
        batch.extend(state.order_completed(&sold).expect("sold").changes);
        batch.extend(state.unlock("c", 1, 1).expect("unlock c").changes);
        batch.extend(state.unlock("d", 1, 1).expect("unlock d").changes);
        // Holds expire later than the batch's writes above; ones created after stay.
        let expired = state.expire_due(t + 3_600_000);
        assert!(!expired.changes.is_empty(), "something expired");
        batch.extend(expired.changes);
        let late = state.lock(req("f", 2, 1), t + 3_600_001).expect("lock f");
        batch.extend(late.changes);
        store.apply(&batch).expect("one batch");
        // A second batch adds to the counters the first one wrote.
        store
            .apply(&state.unlock("f", 1, 2).expect("unlock f").changes)
            .expect("second batch");
        drop(store);
        let snapshot = SqliteStore::open(&dir)
            .expect("reopen")
            .load()
            .expect("load")
            .expect("data");
        assert_eq!(snapshot, state.snapshot());
        assert_eq!(
            (
                snapshot.ended.released,
                snapshot.ended.completed,
                snapshot.ended.expired
            ),
            (3, 1, 2)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The order memory keeps the newest `ORDER_MEMORY` ids when a batch records more.
    #[test]
    fn a_batch_of_orders_keeps_the_newest_in_memory() {
        let mut store = SqliteStore::memory().expect("memory");
        let total = ORDER_MEMORY as usize + 5;
        let orders: Vec<Change> = (0..total)
            .map(|i| Change::OrderRecorded {
                order_id: format!("o{i}"),
                kind: OrderKind::Completed,
            })
            .collect();
        let (first, rest) = orders.split_at(3);
        store.apply(first).expect("first batch");
        store.apply(rest).expect("second batch");
        let kept = store.load_orders().expect("orders");
        assert_eq!(kept.len(), ORDER_MEMORY as usize);
        assert_eq!(kept[0].order_id, "o5");
        assert_eq!(kept[kept.len() - 1].order_id, format!("o{}", total - 1));
    }

    #[test]
    fn corrupt_database_is_an_error_not_a_panic() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("holds.db"),
            b"this is not a database at all, not even close........",
        )
        .expect("write");
        let result = SqliteStore::open(&dir).and_then(|mut s| s.load());
        assert!(result.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
