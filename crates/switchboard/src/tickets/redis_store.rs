//! Redis as the hold authority shared by every node.
//!
//! Owns: the key layout (documented in `lua/prelude.lua`), the scripts and the mapping of
//! their replies to the `tickets` crate's own types and errors. Every hold operation is one
//! Lua script run atomically on the event's keys (hash tag `{e:<id>}`), loaded once and
//! called by SHA (`redis::Script` reloads it on `NOSCRIPT`, e.g. after a Redis restart).
//! Each script first claims the event's due holds (`expired`, exactly once, by whichever
//! caller runs first) and answers what it changed, so the caller can announce it.
//!
//! Never: broadcasts, coalesces or keeps state of its own (the hold service does); decides
//! anything the rules do not (the model test `tests/holds_model.rs` runs the same random
//! sequences against the pure `State` and this store and requires identical answers).

use std::convert::Infallible;

use redis::aio::ConnectionManager;
use redis::{Script, Value};

use super::redis_batch::{Batches, Op, OpReply};
use tickets::{
    Availability, CatalogError, Category, CategoryKey, ConfirmError, Event, Hold, HoldConfig,
    HoldRequest, HoldStatus, LockError, OrderEffect, OrderKind, OrderMessage, Stats, UnlockError,
};

/// The store could not answer: nothing can be assumed to have changed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisStoreError {
    /// Redis is unreachable, timed out or refused the command.
    #[error("hold store unreachable")]
    Unavailable(#[source] redis::RedisError),
    /// A reply did not have the shape the scripts produce.
    #[error("hold store answered unexpectedly: {0}")]
    Reply(String),
}

impl From<redis::RedisError> for RedisStoreError {
    fn from(e: redis::RedisError) -> Self {
        RedisStoreError::Unavailable(e)
    }
}

/// What a script changed besides its answer: holds it found past their deadline (now
/// expired), the availability of every category it touched, and the event's next deadline.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Holds this call expired (announce them once: no other caller will see them).
    pub swept: Vec<Hold>,
    /// Availability of each touched category after the call, with its version (bumped
    /// once by every call that touched the category: a newer version is a newer state).
    pub availability: Vec<(Availability, u64)>,
    /// The earliest `expiresAt` of the event's live holds after the call.
    pub next_deadline: Option<i64>,
    /// Availability the script read without changing it (a refused lock's category, for
    /// its answer): never announced, and its version is not newer than what was.
    pub observed: Vec<(Availability, u64)>,
}

/// One script's answer: the rules' verdict and what changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Done<T, E> {
    /// The rules' answer.
    pub value: Result<T, E>,
    /// What changed, including on a refusal (the claim of due holds).
    pub effects: Effects,
}

/// A script result, or the store could not answer.
pub type StoreResult<T, E> = Result<Done<T, E>, RedisStoreError>;

macro_rules! script {
    ($name:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            "\n",
            include_str!(concat!("lua/", $name, ".lua"))
        ))
    };
}

struct Scripts {
    /// Lock and unlock, in batches (`redis_batch.rs`).
    ops: Script,
    confirm: Script,
    order: Script,
    event_cancelled: Script,
    capacity: Script,
    upsert: Script,
    sweep: Script,
    read: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            ops: Script::new(concat!(
                include_str!("lua/prelude.lua"),
                "\n",
                include_str!("lua/lock.lua"),
                "\n",
                include_str!("lua/unlock.lua"),
                "\n",
                include_str!("lua/release.lua"),
                "\n",
                include_str!("lua/ops.lua")
            )),
            confirm: script!("confirm"),
            order: script!("order"),
            event_cancelled: script!("event_cancelled"),
            capacity: script!("capacity"),
            upsert: script!("upsert"),
            sweep: script!("sweep"),
            read: script!("read"),
        }
    }
}

/// The Redis hold store. Cheap to clone (the connection manager is shared).
#[derive(Clone)]
pub struct RedisHolds {
    conn: ConnectionManager,
    prefix: String,
    node: String,
    config: HoldConfig,
    scripts: std::sync::Arc<Scripts>,
    batches: std::sync::Arc<Batches>,
}

impl std::fmt::Debug for RedisHolds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHolds")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish()
    }
}

/// Connects lazily (a node starts while Redis is down and recovers by itself): commands
/// fail fast while it is unreachable and the manager reconnects in the background.
pub fn connection(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(1)))
        .set_response_timeout(Some(std::time::Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(std::time::Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
}

impl RedisHolds {
    /// A store on `conn` (its own, or one shared with the cluster fabric). Keys start with
    /// `prefix`; holds granted here are tagged with `node` (released if that node dies).
    pub fn new(conn: ConnectionManager, prefix: &str, node: &str, config: HoldConfig) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            node: node.to_owned(),
            config,
            scripts: std::sync::Arc::new(Scripts::new()),
            batches: std::sync::Arc::default(),
        }
    }

    /// The rules' limits.
    pub fn config(&self) -> &HoldConfig {
        &self.config
    }

    /// This node's id, as written on the holds it grants.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The connection (for liveness keys kept beside the holds).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// A key outside every event's slot (`<prefix><name>`).
    pub(crate) fn global_key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn base(&self, event_id: i64) -> String {
        format!("{}{{e:{event_id}}}:", self.prefix)
    }

    fn catalog_key(&self) -> String {
        self.global_key("{catalog}:events")
    }

    /// A script's call on one event: its key, then the event's key base, the recent-ops
    /// capacity, the time and `args`.
    fn invocation<'a>(
        &self,
        script: &'a Script,
        event_id: i64,
        now: i64,
        args: &[&str],
    ) -> redis::ScriptInvocation<'a> {
        let base = self.base(event_id);
        let mut call = script.key(format!("{base}ev"));
        call.arg(&base)
            .arg(self.config.recent_capacity)
            .arg(now)
            .arg(args);
        call
    }

    async fn run(
        &self,
        script: &Script,
        event_id: i64,
        now: i64,
        args: &[&str],
    ) -> Result<Value, RedisStoreError> {
        let mut conn = self.conn.clone();
        let call = self.invocation(script, event_id, now, args);
        Ok(call.invoke_async::<Value>(&mut conn).await?)
    }

    /// Runs the read-only script. A read changes nothing, so one that fails because the
    /// connection had dropped (the first command after Redis restarts fails while the
    /// manager reconnects) is asked once more, on the new connection: a client joining
    /// right after Redis came back is answered, not told to try again.
    async fn read(&self, event_id: i64, now: i64, args: &[&str]) -> Result<Value, RedisStoreError> {
        let call = self.invocation(&self.scripts.read, event_id, now, args);
        Ok(once_more(|| {
            let mut conn = self.conn.clone();
            let call = &call;
            async move { call.invoke_async::<Value>(&mut conn).await }
        })
        .await?)
    }

    /// Runs a mutation script and splits its reply: `{code, value, swept, availability,
    /// next deadline, observed availability}`.
    async fn mutate(
        &self,
        script: &Script,
        event_id: i64,
        now: i64,
        args: &[&str],
    ) -> Result<(String, Vec<Value>, Effects), RedisStoreError> {
        let reply = array(self.run(script, event_id, now, args).await?)?;
        split(event_id, reply)
    }

    /// The batches of lock and unlock operations.
    pub(crate) fn batches(&self) -> &Batches {
        &self.batches
    }

    /// Runs a batch of one event's operations in one script (`lua/ops.lua`): one answer
    /// per operation, in order; the batch's effects ride on the first.
    pub(crate) async fn run_ops(
        &self,
        event_id: i64,
        now: i64,
        ops: &[Op],
    ) -> Result<Vec<OpReply>, RedisStoreError> {
        let count = ops.len().to_string();
        let mut args: Vec<&str> = vec![&count];
        for op in ops {
            match op {
                Op::Lock(a) => {
                    args.push("lock");
                    args.extend(a.iter().map(String::as_str));
                }
                Op::Unlock(user, cat) => args.extend(["unlock", user, cat]),
                Op::Release(by, id) => args.extend(["release", by, id]),
            }
        }
        let (_, results, mut effects) =
            self.mutate(&self.scripts.ops, event_id, now, &args).await?;
        if results.len() != ops.len() {
            return Err(bad("a batch answered a different number of operations"));
        }
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let mut parts = array(r)?.into_iter();
                let mut next = || parts.next().ok_or_else(|| bad("short operation reply"));
                let code = text(next()?)?;
                let value = array(next()?)?;
                let observed = array(next()?)?
                    .into_iter()
                    .map(|a| availability(event_id, a))
                    .collect::<Result<_, _>>()?;
                let effects = if i == 0 {
                    Effects {
                        observed,
                        ..std::mem::take(&mut effects)
                    }
                } else {
                    Effects {
                        observed,
                        ..Effects::default()
                    }
                };
                Ok(OpReply {
                    code,
                    value,
                    effects,
                })
            })
            .collect()
    }

    /// Grants a hold (lock id `lock_e<event>_<seq>_<now>`: unique cluster-wide, and it
    /// names its event so a `confirm` finds the keys).
    pub async fn lock(&self, req: &HoldRequest, now: i64) -> StoreResult<Hold, LockError> {
        let max = self.config.max_quantity;
        if req.quantity == 0 || req.quantity > max {
            return Ok(refused(LockError::InvalidQuantity {
                requested: req.quantity,
                max,
            }));
        }
        let expires = now.saturating_add(self.config.hold_ttl_ms);
        let op = Op::Lock([
            req.event_id.to_string(),
            req.category_id.to_string(),
            req.user_id.clone(),
            req.session_id.clone(),
            req.quantity.to_string(),
            expires.to_string(),
            self.node.clone(),
            now.to_string(),
        ]);
        let OpReply {
            code,
            value,
            effects,
        } = self.batches.submit(self, req.event_id, op, now).await?;
        let value = match code.as_str() {
            "ok" => {
                let mut v = value.into_iter();
                let lock_id = text(v.next().ok_or_else(|| bad("no lock id"))?)?;
                Ok(Hold {
                    lock_id,
                    user_id: req.user_id.clone(),
                    event_id: req.event_id,
                    category_id: req.category_id,
                    quantity: req.quantity,
                    session_id: req.session_id.clone(),
                    created_at: now,
                    expires_at: expires,
                    status: HoldStatus::Active,
                })
            }
            "unknown_event" => Err(LockError::UnknownEvent(req.event_id)),
            "unknown_category" => Err(LockError::UnknownCategory {
                event_id: req.event_id,
                category_id: req.category_id,
            }),
            "already_holding" => Err(LockError::AlreadyHolding {
                lock_id: first_text(value)?,
            }),
            "not_enough" => Err(LockError::NotEnoughSeats {
                requested: req.quantity,
                available: number(first(value)?)?,
            }),
            other => return Err(bad(&format!("lock answered {other}"))),
        };
        Ok(Done { value, effects })
    }

    /// Releases the user's active hold in a category.
    pub async fn unlock(
        &self,
        user: &str,
        event_id: i64,
        category_id: i64,
        now: i64,
    ) -> StoreResult<Hold, UnlockError> {
        let op = Op::Unlock(user.to_owned(), category_id.to_string());
        let OpReply {
            code,
            value,
            effects,
        } = self.batches.submit(self, event_id, op, now).await?;
        let value = match code.as_str() {
            "ok" => Ok(hold(event_id, Value::Array(value))?),
            "no_hold" => Err(UnlockError::NoHold {
                event_id,
                category_id,
            }),
            "confirmed" => Err(UnlockError::Confirmed {
                lock_id: first_text(value)?,
            }),
            other => return Err(bad(&format!("unlock answered {other}"))),
        };
        Ok(Done { value, effects })
    }

    /// Releases the active holds a session has in one event.
    pub async fn release_session(
        &self,
        event_id: i64,
        session: &str,
        now: i64,
    ) -> StoreResult<Vec<Hold>, Infallible> {
        self.release(event_id, "session", session, now).await
    }

    /// Releases the active holds granted through `node` in one event (the node died).
    pub async fn release_node(
        &self,
        event_id: i64,
        node: &str,
        now: i64,
    ) -> StoreResult<Vec<Hold>, Infallible> {
        self.release(event_id, "node", node, now).await
    }

    async fn release(
        &self,
        event_id: i64,
        by: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<Vec<Hold>, Infallible> {
        let op = Op::Release(by.to_owned(), id.to_owned());
        let OpReply { value, effects, .. } = self.batches.submit(self, event_id, op, now).await?;
        Ok(Done {
            value: Ok(holds(event_id, value)?),
            effects,
        })
    }

    /// Confirms a hold for an order (ends at `now + order_timeout_ms`).
    pub async fn confirm(&self, lock_id: &str, now: i64) -> StoreResult<Hold, ConfirmError> {
        let Some(event_id) = event_of_lock(lock_id) else {
            return Ok(refused(ConfirmError::UnknownLock(lock_id.to_owned())));
        };
        let deadline = now.saturating_add(self.config.order_timeout_ms).to_string();
        let (code, value, effects) = self
            .mutate(&self.scripts.confirm, event_id, now, &[lock_id, &deadline])
            .await?;
        let value = match code.as_str() {
            "ok" => Ok(hold(event_id, Value::Array(value))?),
            "expired" => Err(ConfirmError::Expired(lock_id.to_owned())),
            "ended" => Err(ConfirmError::Ended {
                lock_id: lock_id.to_owned(),
                status: status(&first_text(value)?)?,
            }),
            "unknown_lock" => Err(ConfirmError::UnknownLock(lock_id.to_owned())),
            other => return Err(bad(&format!("confirm answered {other}"))),
        };
        Ok(Done { value, effects })
    }

    /// `order_completed` / `order_cancelled`: the effect and its dedupe record together.
    pub async fn order(
        &self,
        kind: OrderKind,
        order: &OrderMessage,
        now: i64,
    ) -> StoreResult<OrderEffect, tickets::OrderError> {
        use tickets::OrderError;
        let kind_name = match kind {
            OrderKind::Completed => "completed",
            OrderKind::Cancelled => "cancelled",
        };
        let (cat, qty) = (order.category_id.to_string(), order.quantity.to_string());
        let args = [kind_name, &order.order_id, &cat, &qty, &order.user_id];
        let (code, value, effects) = self
            .mutate(&self.scripts.order, order.event_id, now, &args)
            .await?;
        let value = match code.as_str() {
            "ok" => Ok(OrderEffect::Applied(hold(
                order.event_id,
                Value::Array(value),
            )?)),
            "already" => Ok(OrderEffect::AlreadyApplied {
                kind: match first_text(value)?.as_str() {
                    "completed" => OrderKind::Completed,
                    "cancelled" => OrderKind::Cancelled,
                    other => return Err(bad(&format!("order kind {other}"))),
                },
            }),
            "invalid_quantity" => Err(OrderError::InvalidQuantity {
                order_id: order.order_id.clone(),
            }),
            "no_matching_hold" => Err(OrderError::NoMatchingHold {
                order_id: order.order_id.clone(),
                user_id: order.user_id.clone(),
                event_id: order.event_id,
                category_id: order.category_id,
            }),
            "not_enough" => Err(OrderError::NotEnoughSeats {
                order_id: order.order_id.clone(),
                requested: order.quantity,
                available: number(first(value)?)?,
            }),
            other => return Err(bad(&format!("order answered {other}"))),
        };
        Ok(Done { value, effects })
    }

    /// `event_cancelled`: releases every live hold of the event.
    pub async fn event_cancelled(
        &self,
        event_id: i64,
        now: i64,
    ) -> StoreResult<Vec<Hold>, Infallible> {
        let (_, value, effects) = self
            .mutate(&self.scripts.event_cancelled, event_id, now, &[])
            .await?;
        Ok(Done {
            value: Ok(holds(event_id, value)?),
            effects,
        })
    }

    /// `event-capacity-changed`.
    pub async fn change_capacity(
        &self,
        event_id: i64,
        category_id: i64,
        total: u32,
        available: u32,
        now: i64,
    ) -> StoreResult<Availability, CatalogError> {
        let (cat, t, a) = (
            category_id.to_string(),
            total.to_string(),
            available.to_string(),
        );
        let (code, value, effects) = self
            .mutate(&self.scripts.capacity, event_id, now, &[&cat, &t, &a])
            .await?;
        let value = match code.as_str() {
            "ok" => Ok(availability(event_id, Value::Array(value))?.0),
            "unknown_event" => Err(CatalogError::UnknownEvent(event_id)),
            "unknown_category" => Err(CatalogError::UnknownCategory {
                event_id,
                category_id,
            }),
            "exceeds_total" => Err(CatalogError::AvailableExceedsTotal {
                event_id,
                category_id,
                available,
                total,
            }),
            other => return Err(bad(&format!("capacity answered {other}"))),
        };
        Ok(Done { value, effects })
    }

    /// Adds or updates an event and the categories it lists (`seed`: only if the event is
    /// not known yet, so a starting node never overwrites what the fleet sold). Answers
    /// whether it was written.
    pub async fn upsert_event(
        &self,
        event: &Event,
        seed: bool,
        now: i64,
    ) -> StoreResult<bool, CatalogError> {
        if let Err(e) = validate_event(event) {
            return Ok(refused(e));
        }
        let mut args: Vec<String> = vec![
            if seed { "seed" } else { "upsert" }.to_owned(),
            event.name.clone(),
        ];
        for c in &event.categories {
            args.extend([
                c.id.to_string(),
                c.name.clone(),
                c.price.to_string(),
                c.total_seats.to_string(),
                c.available_seats.to_string(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, effects) = self
            .mutate(&self.scripts.upsert, event.id, now, &args)
            .await?;
        // The fleet's catalog index lives in another slot: written after the event.
        let mut conn = self.conn.clone();
        redis::cmd("SADD")
            .arg(self.catalog_key())
            .arg(event.id)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(Done {
            value: Ok(code == "ok"),
            effects,
        })
    }

    /// Claims the event's due holds.
    pub async fn sweep(&self, event_id: i64, now: i64) -> StoreResult<(), Infallible> {
        let (_, _, effects) = self.mutate(&self.scripts.sweep, event_id, now, &[]).await?;
        Ok(Done {
            value: Ok(()),
            effects,
        })
    }

    /// Every event id of the fleet's catalog.
    pub async fn event_ids(&self) -> Result<Vec<i64>, RedisStoreError> {
        let members = redis::cmd("SMEMBERS").arg(self.catalog_key()).clone();
        let ids: Vec<String> = once_more(|| {
            let mut conn = self.conn.clone();
            let members = members.clone();
            async move { members.query_async(&mut conn).await }
        })
        .await?;
        let mut ids: Vec<i64> = ids.iter().filter_map(|s| s.parse().ok()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// An event with its categories and their availability, or `None` if unknown.
    pub async fn event(
        &self,
        event_id: i64,
        now: i64,
    ) -> Result<Option<(Event, Vec<(Availability, u64)>)>, RedisStoreError> {
        let reply = array(self.read(event_id, now, &["event"]).await?)?;
        let mut parts = reply.into_iter();
        let (Some(name), Some(cats)) = (parts.next(), parts.next()) else {
            return Ok(None);
        };
        let mut rows = Vec::new();
        for c in array(cats)? {
            let f: Vec<String> = array(c)?.into_iter().map(text).collect::<Result<_, _>>()?;
            let [id, name, price, total, avail, held, version] =
                <[String; 7]>::try_from(f).map_err(|_| bad("category row"))?;
            let category = Category {
                id: parse(&id)?,
                name,
                price: parse(&price)?,
                total_seats: parse(&total)?,
                available_seats: parse(&avail)?,
            };
            let held: u64 = parse(&held)?;
            rows.push((category, held, parse::<u64>(&version)?));
        }
        rows.sort_by_key(|(c, _, _)| c.id);
        let availability = rows
            .iter()
            .map(|(c, held, version)| {
                let a = Availability {
                    event_id,
                    category_id: c.id,
                    available_tickets: clamp(u64::from(c.available_seats).saturating_sub(*held)),
                    locked_tickets: clamp(*held),
                    total_tickets: c.total_seats,
                };
                (a, *version)
            })
            .collect();
        let event = Event {
            id: event_id,
            name: text(name)?,
            categories: rows.into_iter().map(|(c, _, _)| c).collect(),
        };
        Ok(Some((event, availability)))
    }

    /// The user's live holds in one event.
    pub async fn holds_of_user(
        &self,
        event_id: i64,
        user: &str,
        now: i64,
    ) -> Result<Vec<Hold>, RedisStoreError> {
        let reply = self.read(event_id, now, &["user", user]).await?;
        holds(event_id, array(reply)?)
    }

    /// Every live hold of one event, in lock id order.
    pub async fn holds(&self, event_id: i64, now: i64) -> Result<Vec<Hold>, RedisStoreError> {
        let reply = self.read(event_id, now, &["holds"]).await?;
        let mut all = holds(event_id, array(reply)?)?;
        all.sort_by(|a, b| a.lock_id.cmp(&b.lock_id));
        Ok(all)
    }

    /// Hold counts of one event (users and categories counted within the event).
    pub async fn stats(&self, event_id: i64, now: i64) -> Result<Stats, RedisStoreError> {
        let reply = self.read(event_id, now, &["stats"]).await?;
        let n: Vec<u64> = array(reply)?
            .into_iter()
            .map(number::<u64>)
            .collect::<Result<_, _>>()?;
        let [live, confirmed, users, cats, expired, released, completed] =
            <[u64; 7]>::try_from(n).map_err(|_| bad("stats row"))?;
        Ok(Stats {
            total_locks: live + expired + released + completed,
            active_locks: live,
            users_with_locks: users,
            categories_with_locks: cats,
            locks_by_status: tickets::LocksByStatus {
                active: live.saturating_sub(confirmed),
                confirmed,
                expired,
                released,
                completed,
            },
        })
    }

    /// Deletes every key under this store's prefix (tests clean up after themselves).
    pub async fn delete_all(&self) -> Result<(), RedisStoreError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// The event a Redis lock id names (`lock_e<event>_<seq>_<ms>`).
pub fn event_of_lock(lock_id: &str) -> Option<i64> {
    let rest = lock_id.strip_prefix("lock_e")?;
    let (event, rest) = rest.split_once('_')?;
    let (seq, ms) = rest.split_once('_')?;
    if seq.parse::<u64>().is_err() || ms.parse::<i64>().is_err() {
        return None;
    }
    event.parse().ok()
}

/// The checks `State::upsert_event` makes before changing anything.
fn validate_event(event: &Event) -> Result<(), CatalogError> {
    let mut seen = std::collections::BTreeSet::new();
    for c in &event.categories {
        if c.available_seats > c.total_seats {
            return Err(CatalogError::AvailableExceedsTotal {
                event_id: event.id,
                category_id: c.id,
                available: c.available_seats,
                total: c.total_seats,
            });
        }
        if !seen.insert(c.id) {
            return Err(CatalogError::DuplicateCategory {
                event_id: event.id,
                category_id: c.id,
            });
        }
    }
    Ok(())
}

fn refused<T, E>(e: E) -> Done<T, E> {
    Done {
        value: Err(e),
        effects: Effects::default(),
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Splits a mutation script's reply: `{code, value, swept, availability, next deadline,
/// observed availability}`.
fn split(
    event_id: i64,
    reply: Vec<Value>,
) -> Result<(String, Vec<Value>, Effects), RedisStoreError> {
    let mut parts = reply.into_iter();
    let mut next = || parts.next().ok_or_else(|| bad("short reply"));
    let code = text(next()?)?;
    let value = array(next()?)?;
    let swept = array(next()?)?
        .into_iter()
        .map(|h| hold(event_id, h))
        .collect::<Result<_, _>>()?;
    let availability = array(next()?)?
        .into_iter()
        .map(|a| availability(event_id, a))
        .collect::<Result<_, _>>()?;
    let deadline = text(next()?)?;
    let next_deadline = if deadline.is_empty() {
        None
    } else {
        Some(
            deadline
                .parse::<f64>()
                .map_err(|_| bad("deadline is not a number"))? as i64,
        )
    };
    let observed = array(next()?)?
        .into_iter()
        .map(|a| self::availability(event_id, a))
        .collect::<Result<_, _>>()?;
    Ok((
        code,
        value,
        Effects {
            swept,
            availability,
            next_deadline,
            observed,
        },
    ))
}

/// Runs an idempotent command, and once more if it failed on a dropped connection (not on
/// a timeout: Redis may be slow, and waiting twice would double the wait).
async fn once_more<T, F, Fut>(mut command: F) -> redis::RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<T>>,
{
    match command().await {
        Err(e) if dropped(&e) => command().await,
        done => done,
    }
}

/// The connection was gone before Redis could answer (reset, closed, refused).
fn dropped(e: &redis::RedisError) -> bool {
    (e.is_connection_dropped() || e.is_connection_refusal()) && !e.is_timeout()
}

fn bad(what: &str) -> RedisStoreError {
    RedisStoreError::Reply(what.to_owned())
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn array(v: Value) -> Result<Vec<Value>, RedisStoreError> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(&format!("expected an array, got {other:?}"))),
    }
}

fn text(v: Value) -> Result<String, RedisStoreError> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| bad("not UTF-8")),
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".into()),
        other => Err(bad(&format!("expected a string, got {other:?}"))),
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, RedisStoreError> {
    s.parse()
        .map_err(|_| bad(&format!("unexpected value {s:?}")))
}

fn number<T: std::str::FromStr>(v: Value) -> Result<T, RedisStoreError> {
    parse(&text(v)?)
}

fn first(v: Vec<Value>) -> Result<Value, RedisStoreError> {
    v.into_iter().next().ok_or_else(|| bad("empty value"))
}

fn first_text(v: Vec<Value>) -> Result<String, RedisStoreError> {
    text(first(v)?)
}

fn status(s: &str) -> Result<HoldStatus, RedisStoreError> {
    Ok(match s {
        "active" => HoldStatus::Active,
        "confirmed" => HoldStatus::Confirmed,
        "expired" => HoldStatus::Expired,
        "released" => HoldStatus::Released,
        "completed" => HoldStatus::Completed,
        other => return Err(bad(&format!("hold status {other}"))),
    })
}

/// `{lock, user, cat, qty, sess, created, expires, status}`.
fn hold(event_id: i64, v: Value) -> Result<Hold, RedisStoreError> {
    let f: Vec<String> = array(v)?.into_iter().map(text).collect::<Result<_, _>>()?;
    let [lock_id, user_id, cat, qty, session_id, created, expires, st] =
        <[String; 8]>::try_from(f).map_err(|_| bad("hold row"))?;
    Ok(Hold {
        lock_id,
        user_id,
        event_id,
        category_id: parse(&cat)?,
        quantity: parse(&qty)?,
        session_id,
        created_at: parse(&created)?,
        expires_at: parse(&expires)?,
        status: status(&st)?,
    })
}

fn holds(event_id: i64, v: Vec<Value>) -> Result<Vec<Hold>, RedisStoreError> {
    v.into_iter().map(|h| hold(event_id, h)).collect()
}

/// `{cat, available, locked, total, version}`.
fn availability(event_id: i64, v: Value) -> Result<(Availability, u64), RedisStoreError> {
    let f: Vec<String> = array(v)?.into_iter().map(text).collect::<Result<_, _>>()?;
    let [cat, available, locked, total, version] =
        <[String; 5]>::try_from(f).map_err(|_| bad("availability row"))?;
    let key = CategoryKey::new(event_id, parse(&cat)?);
    let a = Availability {
        event_id: key.event_id,
        category_id: key.category_id,
        available_tickets: parse(&available)?,
        locked_tickets: parse(&locked)?,
        total_tickets: parse(&total)?,
    };
    Ok((a, parse(&version)?))
}

#[cfg(test)]
mod tests {
    use super::event_of_lock;

    #[test]
    fn lock_ids_name_their_event() {
        assert_eq!(event_of_lock("lock_e7_12_1700000000000"), Some(7));
        assert_eq!(event_of_lock("lock_e-3_1_1"), Some(-3));
        for bad in [
            "lock_1_2",
            "lock_ex_1_2",
            "lock_e1_x_2",
            "lock_e1_2",
            "",
            "lock_e1_2_3_4",
        ] {
            assert_eq!(event_of_lock(bad), None, "{bad}");
        }
    }
}
