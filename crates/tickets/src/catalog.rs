//! Catalog records (events and their ticket categories) and the availability figures that
//! are broadcast as `availability-update`. The catalog's source of truth lives elsewhere
//! (embedded or the events-service); this module only holds the copy the rules need.

use serde::{Deserialize, Serialize};

/// Identifies one ticket category of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CategoryKey {
    /// The event's id.
    pub event_id: i64,
    /// The category's id within the event.
    pub category_id: i64,
}

impl CategoryKey {
    /// The key of category `category_id` of event `event_id`.
    pub fn new(event_id: i64, category_id: i64) -> Self {
        Self {
            event_id,
            category_id,
        }
    }
}

/// A ticket category as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Category {
    /// Unique within its event.
    pub id: i64,
    /// The name buyers see (e.g. `VIP`).
    pub name: String,
    /// The price of one seat, as the catalog states it (the rules never compute with it).
    pub price: f64,
    /// Seats the category has in all.
    pub total_seats: u32,
    /// Seats not sold yet (held seats are still counted here). Never above `total_seats`.
    pub available_seats: u32,
}

/// An event with its categories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique in the catalog.
    pub id: i64,
    /// The name buyers see.
    pub name: String,
    /// Its ticket categories, each with its own seats.
    pub categories: Vec<Category>,
}

/// What clients see of one category: the payload of `availability-update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "typescript", derive(ts_rs::TS))]
pub struct Availability {
    /// The event's id.
    pub event_id: i64,
    /// The category's id within the event.
    pub category_id: i64,
    /// Seats that can be held right now: unsold minus held, never negative.
    pub available_tickets: u32,
    /// Seats in active or confirmed holds.
    pub locked_tickets: u32,
    /// Seats the category has in all (sold, held and free).
    pub total_tickets: u32,
}
