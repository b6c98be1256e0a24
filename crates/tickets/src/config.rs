//! Limits and timeouts of the hold rules. Validated once, when a [`State`](crate::State)
//! is built; never read from the environment here.

use crate::error::ConfigError;

/// Tunables of the hold rules. `Default` gives the seed contract's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldConfig {
    /// Largest quantity one hold may take (at least 1).
    pub max_quantity: u32,
    /// How long an active hold lives after creation, in milliseconds.
    pub hold_ttl_ms: i64,
    /// How long a confirmed hold waits for its order outcome, in milliseconds from
    /// confirmation.
    pub order_timeout_ms: i64,
    /// How many processed order ids (and, separately, ended lock ids) are remembered.
    /// Older ones are forgotten first, so memory stays bounded.
    pub recent_capacity: usize,
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            max_quantity: 10,
            hold_ttl_ms: 5 * 60 * 1000,
            order_timeout_ms: 15 * 60 * 1000,
            recent_capacity: 10_000,
        }
    }
}

impl HoldConfig {
    /// Checks that every limit makes sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_quantity == 0 {
            return Err(ConfigError::ZeroMaxQuantity);
        }
        if self.hold_ttl_ms <= 0 {
            return Err(ConfigError::NonPositiveHoldTtl(self.hold_ttl_ms));
        }
        if self.order_timeout_ms <= 0 {
            return Err(ConfigError::NonPositiveOrderTimeout(self.order_timeout_ms));
        }
        if self.recent_capacity == 0 {
            return Err(ConfigError::ZeroRecentCapacity);
        }
        Ok(())
    }
}
