//! The hold state machine: the catalog copy, live holds and their indexes.
//!
//! Only live holds are stored; an ended hold is removed at once from every index (and
//! only counted), so no map grows with history. Collections are ordered so that results
//! and snapshots are deterministic.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Availability, Category, CategoryKey, Event};
use crate::change::{Change, Effects, OrderEffect, OrderKind, Outcome};
use crate::config::HoldConfig;
use crate::error::{
    CatalogError, ConfigError, ConfirmError, LockError, OrderError, RestoreError, UnlockError,
};
use crate::hold::{Hold, HoldRequest, HoldStatus, OrderMessage};
use crate::recent::Recent;
use crate::snapshot::{EndedCounts, ProcessedOrder, Snapshot};
use crate::stats::{LocksByStatus, Stats};

#[derive(Debug, Clone)]
struct CategoryEntry {
    category: Category,
    /// Seats in live holds of this category.
    held: u64,
}

#[derive(Debug, Clone)]
struct EventEntry {
    name: String,
    categories: BTreeMap<i64, CategoryEntry>,
}

/// The ticket-hold state machine. See the [crate docs](crate) for what it owns.
#[derive(Debug, Clone)]
pub struct State {
    config: HoldConfig,
    events: BTreeMap<i64, EventEntry>,
    /// Live holds by lock id.
    holds: BTreeMap<String, Hold>,
    /// user -> category -> lock id of that user's live hold there.
    by_user: BTreeMap<String, BTreeMap<CategoryKey, String>>,
    /// session -> lock ids of its live holds.
    by_session: BTreeMap<String, BTreeSet<String>>,
    /// (expires_at, lock id) of every live hold.
    deadlines: BTreeSet<(i64, String)>,
    confirmed: u64,
    ended: EndedCounts,
    next_lock_seq: u64,
    orders: Recent<String, OrderKind>,
    ended_locks: Recent<String, HoldStatus>,
    /// Whether outcomes carry change records (see [`State::set_change_records`]).
    change_records: bool,
}

impl State {
    /// An empty state (no catalog, no holds).
    pub fn new(config: HoldConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let capacity = config.recent_capacity;
        Ok(Self {
            config,
            events: BTreeMap::new(),
            holds: BTreeMap::new(),
            by_user: BTreeMap::new(),
            by_session: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            confirmed: 0,
            ended: EndedCounts::default(),
            next_lock_seq: 1,
            orders: Recent::new(capacity),
            ended_locks: Recent::new(capacity),
            change_records: true,
        })
    }

    /// Whether outcomes carry change records (on by default). A driver that persists
    /// nothing (holds kept in memory only) turns them off: [`Outcome::changes`] is then
    /// always empty and its copies of holds and ids are never made. The rules, the
    /// values returned and [`Outcome::touched`] are the same either way.
    pub fn set_change_records(&mut self, on: bool) {
        self.change_records = on;
    }

    fn effects(&self) -> Effects {
        Effects::new(self.change_records)
    }

    /// Rebuilds a state from what a store persisted. Everything is validated; holds whose
    /// deadline has passed are kept, and the next [`State::expire_due`] ends them.
    pub fn restore(config: HoldConfig, snapshot: Snapshot) -> Result<Self, RestoreError> {
        let mut state = Self::new(config)?;
        for event in snapshot.events {
            if state.events.contains_key(&event.id) {
                return Err(RestoreError::DuplicateEvent(event.id));
            }
            // Restoring needs no change records.
            let _ = state.upsert_event(event)?;
        }
        for hold in snapshot.holds {
            if !hold.status.is_live() {
                return Err(RestoreError::NotLive {
                    lock_id: hold.lock_id,
                    status: hold.status,
                });
            }
            if hold.quantity == 0 {
                return Err(RestoreError::ZeroQuantity {
                    lock_id: hold.lock_id,
                });
            }
            if state.holds.contains_key(&hold.lock_id) {
                return Err(RestoreError::DuplicateLockId(hold.lock_id));
            }
            if state.category_entry(hold.key()).is_none() {
                return Err(RestoreError::UnknownCategory {
                    lock_id: hold.lock_id,
                    event_id: hold.event_id,
                    category_id: hold.category_id,
                });
            }
            if state.live_hold_id(&hold.user_id, hold.key()).is_some() {
                return Err(RestoreError::DuplicateUserHold {
                    user_id: hold.user_id,
                    event_id: hold.event_id,
                    category_id: hold.category_id,
                });
            }
            state.insert_hold(hold);
        }
        for order in snapshot.processed_orders {
            state.orders.insert(order.order_id, order.kind);
        }
        state.ended = snapshot.ended;
        state.next_lock_seq = snapshot.next_lock_seq.max(1);
        Ok(state)
    }

    /// Everything a store needs to [`restore`](State::restore) this state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            events: self.catalog(),
            holds: self.holds.values().cloned().collect(),
            processed_orders: self
                .orders
                .iter()
                .map(|(order_id, kind)| ProcessedOrder {
                    order_id: order_id.clone(),
                    kind,
                })
                .collect(),
            ended: self.ended,
            next_lock_seq: self.next_lock_seq,
        }
    }

    /// The limits and timeouts the rules apply.
    pub fn config(&self) -> &HoldConfig {
        &self.config
    }

    // ----- catalog -------------------------------------------------------------------

    /// Adds an event or updates its name and the categories it lists. Categories it does
    /// not list are kept. Existing holds are kept even if capacity shrinks below them.
    /// Nothing changes unless every category is valid.
    pub fn upsert_event(&mut self, event: Event) -> Result<Outcome<()>, CatalogError> {
        let mut seen = BTreeSet::new();
        for category in &event.categories {
            check_category(event.id, category)?;
            if !seen.insert(category.id) {
                return Err(CatalogError::DuplicateCategory {
                    event_id: event.id,
                    category_id: category.id,
                });
            }
        }
        let mut fx = self.effects();
        let entry = self.events.entry(event.id).or_insert_with(|| EventEntry {
            name: String::new(),
            categories: BTreeMap::new(),
        });
        entry.name.clone_from(&event.name);
        fx.record(Change::EventUpserted {
            event_id: event.id,
            name: event.name,
        });
        for category in event.categories {
            let key = CategoryKey::new(event.id, category.id);
            put_category(entry, category.clone());
            fx.touch(key);
            fx.record(Change::CategoryUpserted {
                event_id: event.id,
                category,
            });
        }
        Ok(fx.finish(()))
    }

    /// Adds or replaces one category of a known event.
    pub fn upsert_category(
        &mut self,
        event_id: i64,
        category: Category,
    ) -> Result<Outcome<()>, CatalogError> {
        check_category(event_id, &category)?;
        let mut fx = self.effects();
        let entry = self
            .events
            .get_mut(&event_id)
            .ok_or(CatalogError::UnknownEvent(event_id))?;
        fx.touch(CategoryKey::new(event_id, category.id));
        put_category(entry, category.clone());
        fx.record(Change::CategoryUpserted { event_id, category });
        Ok(fx.finish(()))
    }

    /// `event-capacity-changed`: sets a known category's seat counts. Existing holds are
    /// kept; if they now exceed `available_seats`, availability shows 0 until they end.
    pub fn change_capacity(
        &mut self,
        event_id: i64,
        category_id: i64,
        total_seats: u32,
        available_seats: u32,
    ) -> Result<Outcome<Availability>, CatalogError> {
        let key = CategoryKey::new(event_id, category_id);
        let entry = self
            .events
            .get_mut(&event_id)
            .ok_or(CatalogError::UnknownEvent(event_id))?
            .categories
            .get_mut(&category_id)
            .ok_or(CatalogError::UnknownCategory {
                event_id,
                category_id,
            })?;
        let mut category = entry.category.clone();
        category.total_seats = total_seats;
        category.available_seats = available_seats;
        check_category(event_id, &category)?;
        entry.category = category.clone();
        let availability = availability_of(key, entry);
        let mut fx = self.effects();
        fx.touch(key);
        fx.record(Change::CategoryUpserted { event_id, category });
        Ok(fx.finish(availability))
    }

    /// The catalog as events with their categories.
    pub fn catalog(&self) -> Vec<Event> {
        self.events
            .iter()
            .map(|(&id, entry)| Event {
                id,
                name: entry.name.clone(),
                categories: entry
                    .categories
                    .values()
                    .map(|c| c.category.clone())
                    .collect(),
            })
            .collect()
    }

    /// One event with its categories, or `None` if it is unknown.
    pub fn event(&self, event_id: i64) -> Option<Event> {
        let entry = self.events.get(&event_id)?;
        Some(Event {
            id: event_id,
            name: entry.name.clone(),
            categories: entry
                .categories
                .values()
                .map(|c| c.category.clone())
                .collect(),
        })
    }

    /// What clients see of every category of an event, or `None` if it is unknown.
    pub fn event_availability(&self, event_id: i64) -> Option<Vec<Availability>> {
        let entry = self.events.get(&event_id)?;
        Some(
            entry
                .categories
                .iter()
                .map(|(&id, c)| availability_of(CategoryKey::new(event_id, id), c))
                .collect(),
        )
    }

    /// A category as the catalog describes it, or `None` if it is unknown.
    pub fn category(&self, event_id: i64, category_id: i64) -> Option<&Category> {
        self.category_entry(CategoryKey::new(event_id, category_id))
            .map(|e| &e.category)
    }

    /// What clients see of a category, or `None` if it is unknown.
    pub fn availability(&self, event_id: i64, category_id: i64) -> Option<Availability> {
        let key = CategoryKey::new(event_id, category_id);
        self.category_entry(key)
            .map(|entry| availability_of(key, entry))
    }

    // ----- holds ---------------------------------------------------------------------

    /// Grants a hold with a generated lock id (`lock_<seq>_<now_ms>`).
    pub fn lock(&mut self, request: HoldRequest, now_ms: i64) -> Result<Outcome<Hold>, LockError> {
        self.check_lock(&request)?;
        let lock_id = loop {
            let id = format!("lock_{}_{}", self.next_lock_seq, now_ms);
            self.next_lock_seq = self.next_lock_seq.saturating_add(1);
            // Only possible after a restore with a stale sequence; skipping ahead ends
            // because there are finitely many ids in use.
            if !self.holds.contains_key(&id) && self.ended_locks.get(id.as_str()).is_none() {
                break id;
            }
        };
        Ok(self.grant(lock_id, request, now_ms))
    }

    /// Grants a hold under a lock id chosen by the caller (e.g. unique across nodes).
    pub fn lock_with_id(
        &mut self,
        lock_id: String,
        request: HoldRequest,
        now_ms: i64,
    ) -> Result<Outcome<Hold>, LockError> {
        if self.holds.contains_key(&lock_id) || self.ended_locks.get(lock_id.as_str()).is_some() {
            return Err(LockError::DuplicateLockId(lock_id));
        }
        self.check_lock(&request)?;
        Ok(self.grant(lock_id, request, now_ms))
    }

    fn check_lock(&self, request: &HoldRequest) -> Result<(), LockError> {
        let max = self.config.max_quantity;
        if request.quantity == 0 || request.quantity > max {
            return Err(LockError::InvalidQuantity {
                requested: request.quantity,
                max,
            });
        }
        let key = CategoryKey::new(request.event_id, request.category_id);
        let entry = self.category_entry_checked(key)?;
        if let Some(lock_id) = self.live_hold_id(&request.user_id, key) {
            return Err(LockError::AlreadyHolding {
                lock_id: lock_id.to_owned(),
            });
        }
        let available = availability_of(key, entry).available_tickets;
        if request.quantity > available {
            return Err(LockError::NotEnoughSeats {
                requested: request.quantity,
                available,
            });
        }
        Ok(())
    }

    fn grant(&mut self, lock_id: String, request: HoldRequest, now_ms: i64) -> Outcome<Hold> {
        let hold = Hold {
            lock_id,
            user_id: request.user_id,
            event_id: request.event_id,
            category_id: request.category_id,
            quantity: request.quantity,
            session_id: request.session_id,
            created_at: now_ms,
            expires_at: now_ms.saturating_add(self.config.hold_ttl_ms),
            status: HoldStatus::Active,
        };
        let mut fx = self.effects();
        fx.touch(hold.key());
        fx.record_with(|| Change::HoldCreated(hold.clone()));
        self.insert_hold(hold.clone());
        fx.finish(hold)
    }

    /// Releases the user's active hold in a category.
    pub fn unlock(
        &mut self,
        user_id: &str,
        event_id: i64,
        category_id: i64,
    ) -> Result<Outcome<Hold>, UnlockError> {
        let key = CategoryKey::new(event_id, category_id);
        let Some(lock_id) = self.live_hold_id(user_id, key).map(str::to_owned) else {
            return Err(UnlockError::NoHold {
                event_id,
                category_id,
            });
        };
        if self
            .holds
            .get(&lock_id)
            .is_some_and(|h| h.status == HoldStatus::Confirmed)
        {
            return Err(UnlockError::Confirmed { lock_id });
        }
        let mut fx = self.effects();
        match self.end_hold(&lock_id, HoldStatus::Released, &mut fx) {
            Some(hold) => Ok(fx.finish(hold)),
            None => Err(UnlockError::NoHold {
                event_id,
                category_id,
            }),
        }
    }

    /// Releases the *active* holds of a session that ended. Confirmed holds belong to an
    /// order in progress (the buyer may be on a payment page) and are left to the order
    /// outcome or the order timeout.
    pub fn release_session(&mut self, session_id: &str) -> Outcome<Vec<Hold>> {
        let ids: Vec<String> = self
            .by_session
            .get(session_id)
            .map(|ids| {
                ids.iter()
                    .filter(|id| {
                        self.holds
                            .get(*id)
                            .is_some_and(|h| h.status == HoldStatus::Active)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        self.end_all(&ids, HoldStatus::Released)
    }

    /// Marks an active hold as confirmed: it now ends at `now_ms + order_timeout_ms`
    /// instead of its hold deadline. Confirming a confirmed hold is a no-op success.
    pub fn confirm(&mut self, lock_id: &str, now_ms: i64) -> Result<Outcome<Hold>, ConfirmError> {
        let order_deadline = now_ms.saturating_add(self.config.order_timeout_ms);
        let Some(hold) = self.holds.get_mut(lock_id) else {
            return Err(match self.ended_locks.get(lock_id) {
                Some(HoldStatus::Expired) => ConfirmError::Expired(lock_id.to_owned()),
                Some(status) => ConfirmError::Ended {
                    lock_id: lock_id.to_owned(),
                    status,
                },
                None => ConfirmError::UnknownLock(lock_id.to_owned()),
            });
        };
        match hold.status {
            HoldStatus::Confirmed => return Ok(Outcome::unchanged(hold.clone())),
            // Past its deadline but not yet swept by `expire_due`.
            _ if hold.expires_at <= now_ms => {
                return Err(ConfirmError::Expired(lock_id.to_owned()));
            }
            _ => {}
        }
        self.deadlines
            .remove(&(hold.expires_at, hold.lock_id.clone()));
        hold.status = HoldStatus::Confirmed;
        hold.expires_at = order_deadline;
        self.deadlines
            .insert((order_deadline, hold.lock_id.clone()));
        self.confirmed += 1;
        let hold = hold.clone();
        let mut fx = self.effects();
        fx.record(Change::HoldStatus {
            lock_id: hold.lock_id.clone(),
            status: HoldStatus::Confirmed,
            expires_at: order_deadline,
        });
        Ok(fx.finish(hold))
    }

    /// The earliest deadline of any live hold: a driver sleeps until then and calls
    /// [`State::expire_due`].
    pub fn next_deadline(&self) -> Option<i64> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// Ends every live hold whose deadline is at or before `now_ms`, earliest first.
    pub fn expire_due(&mut self, now_ms: i64) -> Outcome<Vec<Hold>> {
        let due: Vec<String> = self
            .deadlines
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .map(|(_, id)| id.clone())
            .collect();
        self.end_all(&due, HoldStatus::Expired)
    }

    /// `order_completed`: the user's live hold in the category becomes `quantity` sold
    /// seats. Without a matching hold nothing is sold ([`OrderError::NoMatchingHold`]), so
    /// seats can never be sold twice, even for an order id too old to be remembered.
    pub fn order_completed(
        &mut self,
        order: &OrderMessage,
    ) -> Result<Outcome<OrderEffect>, OrderError> {
        if let Some(kind) = self.orders.get(order.order_id.as_str()) {
            return Ok(Outcome::unchanged(OrderEffect::AlreadyApplied { kind }));
        }
        if order.quantity == 0 {
            return Err(OrderError::InvalidQuantity {
                order_id: order.order_id.clone(),
            });
        }
        let key = CategoryKey::new(order.event_id, order.category_id);
        let lock_id = self.matching_hold(order)?;
        let (Some(hold), Some(entry)) = (self.holds.get(&lock_id), self.category_entry(key)) else {
            return Err(no_matching_hold(order));
        };
        // The order may differ from its hold: it may use the hold's seats plus free ones,
        // never seats held by others.
        let available_seats = entry.category.available_seats;
        let held_by_others = entry.held.saturating_sub(u64::from(hold.quantity));
        let sellable = clamp_u32(u64::from(available_seats).saturating_sub(held_by_others));
        if order.quantity > sellable {
            return Err(OrderError::NotEnoughSeats {
                order_id: order.order_id.clone(),
                requested: order.quantity,
                available: sellable,
            });
        }
        let mut fx = self.effects();
        let Some(hold) = self.end_hold(&lock_id, HoldStatus::Completed, &mut fx) else {
            return Err(no_matching_hold(order));
        };
        if let Some(entry) = self.category_entry_mut(key) {
            entry.category.available_seats = available_seats.saturating_sub(order.quantity);
            fx.record(Change::SeatsSold {
                event_id: order.event_id,
                category_id: order.category_id,
                quantity: order.quantity,
                available_seats: entry.category.available_seats,
            });
        }
        self.record_order(order, OrderKind::Completed, &mut fx);
        Ok(fx.finish(OrderEffect::Applied(hold)))
    }

    /// `order_cancelled`: releases the user's live hold in the category.
    pub fn order_cancelled(
        &mut self,
        order: &OrderMessage,
    ) -> Result<Outcome<OrderEffect>, OrderError> {
        if let Some(kind) = self.orders.get(order.order_id.as_str()) {
            return Ok(Outcome::unchanged(OrderEffect::AlreadyApplied { kind }));
        }
        let lock_id = self.matching_hold(order)?;
        let mut fx = self.effects();
        let Some(hold) = self.end_hold(&lock_id, HoldStatus::Released, &mut fx) else {
            return Err(no_matching_hold(order));
        };
        self.record_order(order, OrderKind::Cancelled, &mut fx);
        Ok(fx.finish(OrderEffect::Applied(hold)))
    }

    /// `event_cancelled`: releases every live hold of the event (active and confirmed).
    /// The catalog is left as it is; stopping sales is the catalog owner's call.
    pub fn event_cancelled(&mut self, event_id: i64) -> Outcome<Vec<Hold>> {
        let ids: Vec<String> = self
            .holds
            .values()
            .filter(|h| h.event_id == event_id)
            .map(|h| h.lock_id.clone())
            .collect();
        self.end_all(&ids, HoldStatus::Released)
    }

    // ----- queries -------------------------------------------------------------------

    /// A live hold by lock id (ended holds are gone).
    pub fn hold(&self, lock_id: &str) -> Option<&Hold> {
        self.holds.get(lock_id)
    }

    /// Every live hold, by lock id.
    pub fn holds(&self) -> impl Iterator<Item = &Hold> {
        self.holds.values()
    }

    /// The user's live holds, oldest first.
    pub fn holds_of_user(&self, user_id: &str) -> Vec<Hold> {
        let mut holds: Vec<Hold> = self
            .by_user
            .get(user_id)
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|id| self.holds.get(id).cloned())
            .collect();
        holds.sort_by(|a, b| (a.created_at, &a.lock_id).cmp(&(b.created_at, &b.lock_id)));
        holds
    }

    /// The counters of `/stats`: live holds now, ended holds since the last restore.
    pub fn stats(&self) -> Stats {
        let live = self.holds.len() as u64;
        let active = live.saturating_sub(self.confirmed);
        let by_status = LocksByStatus {
            active,
            confirmed: self.confirmed,
            expired: self.ended.expired,
            released: self.ended.released,
            completed: self.ended.completed,
        };
        let categories = self
            .events
            .values()
            .flat_map(|e| e.categories.values())
            .filter(|c| c.held > 0)
            .count() as u64;
        Stats {
            total_locks: live
                .saturating_add(self.ended.expired)
                .saturating_add(self.ended.released)
                .saturating_add(self.ended.completed),
            active_locks: live,
            users_with_locks: self.by_user.len() as u64,
            categories_with_locks: categories,
            locks_by_status: by_status,
        }
    }

    // ----- internals -----------------------------------------------------------------

    fn category_entry(&self, key: CategoryKey) -> Option<&CategoryEntry> {
        self.events
            .get(&key.event_id)?
            .categories
            .get(&key.category_id)
    }

    fn category_entry_checked(&self, key: CategoryKey) -> Result<&CategoryEntry, LockError> {
        self.events
            .get(&key.event_id)
            .ok_or(LockError::UnknownEvent(key.event_id))?
            .categories
            .get(&key.category_id)
            .ok_or(LockError::UnknownCategory {
                event_id: key.event_id,
                category_id: key.category_id,
            })
    }

    fn category_entry_mut(&mut self, key: CategoryKey) -> Option<&mut CategoryEntry> {
        self.events
            .get_mut(&key.event_id)?
            .categories
            .get_mut(&key.category_id)
    }

    fn live_hold_id(&self, user_id: &str, key: CategoryKey) -> Option<&str> {
        self.by_user.get(user_id)?.get(&key).map(String::as_str)
    }

    fn matching_hold(&self, order: &OrderMessage) -> Result<String, OrderError> {
        self.live_hold_id(
            &order.user_id,
            CategoryKey::new(order.event_id, order.category_id),
        )
        .map(str::to_owned)
        .ok_or_else(|| no_matching_hold(order))
    }

    fn record_order(&mut self, order: &OrderMessage, kind: OrderKind, fx: &mut Effects) {
        self.orders.insert(order.order_id.clone(), kind);
        fx.record(Change::OrderRecorded {
            order_id: order.order_id.clone(),
            kind,
        });
    }

    /// Adds a live hold to every index. The caller has checked it is admissible.
    fn insert_hold(&mut self, hold: Hold) {
        let key = hold.key();
        if let Some(entry) = self.category_entry_mut(key) {
            entry.held = entry.held.saturating_add(u64::from(hold.quantity));
        }
        self.by_user
            .entry(hold.user_id.clone())
            .or_default()
            .insert(key, hold.lock_id.clone());
        self.by_session
            .entry(hold.session_id.clone())
            .or_default()
            .insert(hold.lock_id.clone());
        self.deadlines
            .insert((hold.expires_at, hold.lock_id.clone()));
        if hold.status == HoldStatus::Confirmed {
            self.confirmed += 1;
        }
        self.holds.insert(hold.lock_id.clone(), hold);
    }

    fn end_all(&mut self, ids: &[String], status: HoldStatus) -> Outcome<Vec<Hold>> {
        let mut fx = self.effects();
        let ended = ids
            .iter()
            .filter_map(|id| self.end_hold(id, status, &mut fx))
            .collect();
        fx.finish(ended)
    }

    /// Removes a live hold from every index and records how it ended.
    fn end_hold(&mut self, lock_id: &str, status: HoldStatus, fx: &mut Effects) -> Option<Hold> {
        let mut hold = self.holds.remove(lock_id)?;
        let key = hold.key();
        if let Some(entry) = self.category_entry_mut(key) {
            entry.held = entry.held.saturating_sub(u64::from(hold.quantity));
        }
        if let Some(mine) = self.by_user.get_mut(&hold.user_id) {
            mine.remove(&key);
            if mine.is_empty() {
                self.by_user.remove(&hold.user_id);
            }
        }
        if let Some(ids) = self.by_session.get_mut(&hold.session_id) {
            ids.remove(lock_id);
            if ids.is_empty() {
                self.by_session.remove(&hold.session_id);
            }
        }
        self.deadlines
            .remove(&(hold.expires_at, hold.lock_id.clone()));
        if hold.status == HoldStatus::Confirmed {
            self.confirmed = self.confirmed.saturating_sub(1);
        }
        let counter = match status {
            HoldStatus::Expired => &mut self.ended.expired,
            HoldStatus::Completed => &mut self.ended.completed,
            HoldStatus::Released | HoldStatus::Active | HoldStatus::Confirmed => {
                &mut self.ended.released
            }
        };
        *counter = counter.saturating_add(1);
        hold.status = status;
        self.ended_locks.insert(hold.lock_id.clone(), status);
        fx.touch(key);
        fx.record_with(|| Change::HoldStatus {
            lock_id: hold.lock_id.clone(),
            status,
            expires_at: hold.expires_at,
        });
        Some(hold)
    }
}

fn check_category(event_id: i64, category: &Category) -> Result<(), CatalogError> {
    if category.available_seats > category.total_seats {
        return Err(CatalogError::AvailableExceedsTotal {
            event_id,
            category_id: category.id,
            available: category.available_seats,
            total: category.total_seats,
        });
    }
    Ok(())
}

fn put_category(event: &mut EventEntry, category: Category) {
    match event.categories.get_mut(&category.id) {
        Some(entry) => entry.category = category,
        None => {
            event
                .categories
                .insert(category.id, CategoryEntry { category, held: 0 });
        }
    }
}

fn availability_of(key: CategoryKey, entry: &CategoryEntry) -> Availability {
    Availability {
        event_id: key.event_id,
        category_id: key.category_id,
        available_tickets: clamp_u32(
            u64::from(entry.category.available_seats).saturating_sub(entry.held),
        ),
        locked_tickets: clamp_u32(entry.held),
        total_tickets: entry.category.total_seats,
    }
}

fn clamp_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn no_matching_hold(order: &OrderMessage) -> OrderError {
    OrderError::NoMatchingHold {
        order_id: order.order_id.clone(),
        user_id: order.user_id.clone(),
        event_id: order.event_id,
        category_id: order.category_id,
    }
}
