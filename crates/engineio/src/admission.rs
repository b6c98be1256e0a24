//! The hook by which the server's connection limits follow an Engine.IO session.
//!
//! The layer in front of the engine (the server's router) decides whether a handshake
//! may open a session, before any work, and puts a [`Permit`] into the request's
//! extensions. The engine keeps it in the session's [`Handshake`](crate::Handshake) and
//! releases it exactly when the session ends. The engine knows no limit itself.

use std::sync::Arc;

use parking_lot::Mutex;

/// The guard's slot, allocated once with the guard inside (no second box for the guard:
/// every connection holds one or two permits, so each allocation counts per client).
trait Slot: Send + Sync {
    /// Drops the guard now, if still held.
    fn release(&self);
    fn is_held(&self) -> bool;
}

impl<G: Send> Slot for Mutex<Option<G>> {
    fn release(&self) {
        let guard = self.lock().take();
        drop(guard);
    }

    fn is_held(&self) -> bool {
        self.lock().is_some()
    }
}

/// A connection's admission: whatever the guard releases when dropped (counts, slots)
/// is released by [`Permit::release`] or when the last clone is dropped, whichever comes
/// first. Clones share one guard. The default permit holds nothing.
#[derive(Clone, Default)]
pub struct Permit(Option<Arc<dyn Slot>>);

impl Permit {
    /// A permit holding `guard` until released.
    pub fn new<G: Send + 'static>(guard: G) -> Permit {
        Permit(Some(Arc::new(Mutex::new(Some(guard)))))
    }

    /// Drops the guard now (idempotent).
    pub fn release(&self) {
        if let Some(slot) = &self.0 {
            slot.release();
        }
    }

    /// Whether the guard is still held.
    pub fn is_held(&self) -> bool {
        self.0.as_ref().is_some_and(|slot| slot.is_held())
    }
}

/// Two permits are equal when they share one guard (or both hold none).
impl PartialEq for Permit {
    fn eq(&self, other: &Permit) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            _ => false,
        }
    }
}

impl Eq for Permit {}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Permit").field(&self.is_held()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count(Arc<AtomicUsize>);
    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn released_once_by_release_or_by_the_last_clone() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let p = Permit::new(Count(dropped.clone()));
        let q = p.clone();
        q.release();
        p.release();
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        assert!(!p.is_held());
        let p = Permit::new(Count(dropped.clone()));
        let q = p.clone();
        drop(p);
        assert_eq!(dropped.load(Ordering::SeqCst), 1, "a clone still holds it");
        drop(q);
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        Permit::default().release();
    }
}
