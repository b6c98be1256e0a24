//! Test-only failure injection (`failpoint` setting), for the tests that prove a broker
//! message is acked only after its effect is durable (ARCHITECTURE.md, invariant 15).
//!
//! Wraps the hold store; off (the default), the store is used unwrapped. Never: anything a
//! production deployment would set (the setting is documented as test-only).

use tickets::{Change, Snapshot};

use crate::tickets::{HoldStore, StoreError};

/// What to break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// The process aborts right after a processed order is stored, before anything else
    /// (the reply, the broker ack) happens: `kill -9` at the worst moment.
    AbortAfterOrderStored,
    /// The first store write that records a processed order fails (nothing is written).
    OrderStoreFailsOnce,
}

impl Failpoint {
    /// The setting's values: `""` (off) or one of these names.
    pub fn parse(s: &str) -> Result<Option<Failpoint>, String> {
        match s {
            "" => Ok(None),
            "abort-after-order-stored" => Ok(Some(Failpoint::AbortAfterOrderStored)),
            "order-store-fails-once" => Ok(Some(Failpoint::OrderStoreFailsOnce)),
            other => Err(format!(
                "{other:?}: expected \"\", \"abort-after-order-stored\" or \"order-store-fails-once\" (tests only)"
            )),
        }
    }
}

/// A hold store with a failpoint.
pub(crate) struct FailpointStore {
    inner: Box<dyn HoldStore + Send>,
    point: Failpoint,
    fired: bool,
}

impl FailpointStore {
    pub(crate) fn wrap(inner: Box<dyn HoldStore + Send>, point: Failpoint) -> Self {
        tracing::warn!(?point, "test failpoint armed");
        FailpointStore {
            inner,
            point,
            fired: false,
        }
    }
}

fn records_order(changes: &[Change]) -> bool {
    changes
        .iter()
        .any(|c| matches!(c, Change::OrderRecorded { .. }))
}

impl HoldStore for FailpointStore {
    fn load(&mut self) -> Result<Option<Snapshot>, StoreError> {
        self.inner.load()
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if self.point == Failpoint::OrderStoreFailsOnce && !self.fired && records_order(changes) {
            self.fired = true;
            return Err(StoreError::Corrupt(
                "failpoint: order-store-fails-once".into(),
            ));
        }
        self.inner.apply(changes)?;
        if self.point == Failpoint::AbortAfterOrderStored && records_order(changes) {
            eprintln!("failpoint abort-after-order-stored: aborting after the store write");
            std::process::abort();
        }
        Ok(())
    }

    fn waits_on_disk(&self) -> bool {
        self.inner.waits_on_disk()
    }
}
