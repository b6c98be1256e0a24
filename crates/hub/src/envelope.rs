use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use smallvec::SmallVec;

/// The data of an event: its arguments as JSON text, and binary attachments.
///
/// `args` holds the arguments' JSON joined by commas, without brackets (`1,"two"`), so
/// encoders can wrap them as they need without parsing. Binary arguments appear as
/// Socket.IO placeholders (`{"_placeholder":true,"num":N}`) indexing `attachments`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    /// The arguments' JSON, joined by commas, without brackets.
    pub args: String,
    /// How many arguments `args` holds.
    pub arg_count: usize,
    /// Binary arguments, indexed by the placeholders in `args`.
    pub attachments: Vec<Bytes>,
}

impl Payload {
    /// A payload of one JSON value.
    pub fn json(value: &impl serde::Serialize) -> Payload {
        let args = serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned());
        Payload {
            args,
            arg_count: 1,
            attachments: Vec::new(),
        }
    }

    /// A payload of several raw JSON values (each must be valid JSON).
    pub fn raw_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Payload {
        let mut out = String::new();
        let mut n = 0;
        for a in args {
            if n > 0 {
                out.push(',');
            }
            out.push_str(a);
            n += 1;
        }
        Payload {
            args: out,
            arg_count: n,
            attachments: Vec::new(),
        }
    }

    /// The payload as one JSON value: the single argument, `null`, or an array.
    pub fn as_single_json(&self) -> String {
        match self.arg_count {
            0 => "null".to_owned(),
            1 => self.args.clone(),
            _ => format!("[{}]", self.args),
        }
    }
}

/// Identifies one wire format (a transport, or a Socket.IO namespace) for the encode cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FormatId(u32);

impl FormatId {
    /// A new, process-unique format id. Register once per format at start-up.
    pub fn register() -> FormatId {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        FormatId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

type Cached = Arc<dyn Any + Send + Sync>;

/// One published message, shared by every recipient and by room histories.
pub struct Envelope {
    /// The message's offset in the hub-wide sequence.
    pub offset: u64,
    /// The event name.
    pub event: Box<str>,
    /// The arguments.
    pub payload: Payload,
    /// May be dropped for slow clients; never kept in history.
    pub volatile: bool,
    /// The rooms it was published to (one, usually).
    pub rooms: SmallVec<[Arc<str>; 1]>,
    /// When it was published (history ages out from this).
    pub at: Instant,
    cache: Mutex<SmallVec<[(FormatId, Cached); 2]>>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("offset", &self.offset)
            .field("event", &self.event)
            .field("rooms", &self.rooms)
            .finish()
    }
}

impl Envelope {
    pub(crate) fn new(
        offset: u64,
        event: Box<str>,
        payload: Payload,
        volatile: bool,
        rooms: SmallVec<[Arc<str>; 1]>,
    ) -> Envelope {
        Envelope {
            offset,
            event,
            payload,
            volatile,
            rooms,
            at: Instant::now(),
            cache: Mutex::new(SmallVec::new()),
        }
    }

    /// This envelope encoded for `format`: built by `encode` for the first recipient of
    /// that format, then shared. `T` should be cheap to clone (an `Arc`, or ref-counted bytes).
    pub fn encoded<T>(&self, format: FormatId, encode: impl FnOnce(&Envelope) -> T) -> T
    where
        T: Any + Send + Sync + Clone,
    {
        let mut cache = self.cache.lock();
        if let Some(t) = cache
            .iter()
            .find(|(f, _)| *f == format)
            .and_then(|(_, v)| v.downcast_ref::<T>())
        {
            return t.clone();
        }
        let t = encode(self);
        cache.push((format, Arc::new(t.clone())));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_once_per_format() {
        let env = Envelope::new(1, "e".into(), Payload::json(&1), false, SmallVec::new());
        let f1 = FormatId::register();
        let f2 = FormatId::register();
        let mut calls = 0;
        let a: Arc<str> = env.encoded(f1, |_| {
            calls += 1;
            Arc::from("one")
        });
        let b: Arc<str> = env.encoded(f1, |_| {
            calls += 1;
            Arc::from("again")
        });
        assert!(Arc::ptr_eq(&a, &b));
        let c: Arc<str> = env.encoded(f2, |_| {
            calls += 1;
            Arc::from("two")
        });
        assert_eq!(&*c, "two");
        assert_eq!(calls, 2);
    }

    #[test]
    fn single_json_view() {
        assert_eq!(Payload::raw_args([]).as_single_json(), "null");
        assert_eq!(Payload::raw_args(["1"]).as_single_json(), "1");
        assert_eq!(
            Payload::raw_args(["1", "\"a\""]).as_single_json(),
            "[1,\"a\"]"
        );
    }
}
