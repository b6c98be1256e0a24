//! Hold counters for `/stats`.

use serde::{Deserialize, Serialize};

/// Hold counts. `active`/`confirmed` are current; `expired`/`released`/`completed` count
/// holds that ended since the counters were last restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocksByStatus {
    /// Holds granted and not yet confirmed or ended.
    pub active: u64,
    /// Holds whose deadline passed.
    pub expired: u64,
    /// Holds whose order is being paid for.
    pub confirmed: u64,
    /// Holds unlocked, ended with their session, or cancelled with their order or event.
    pub released: u64,
    /// Holds whose order completed.
    pub completed: u64,
}

/// The `locks` part of `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Every hold counted in `locks_by_status` (live and ended).
    pub total_locks: u64,
    /// Holds that still take seats (active + confirmed).
    pub active_locks: u64,
    /// Users with at least one live hold.
    pub users_with_locks: u64,
    /// Categories with at least one live hold.
    pub categories_with_locks: u64,
    /// The same holds, by status.
    pub locks_by_status: LocksByStatus,
}
