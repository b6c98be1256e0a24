//! The `/realtime` namespace. The ticketing contract (holds, availability, orders) is
//! built on this; for now it refuses unknown events with a clear `error`.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use hub::Payload;
use socketio::{Event, NamespaceHandler, Socket};

#[derive(Debug)]
pub struct Realtime;

impl NamespaceHandler for Realtime {
    fn on_event<'a>(&'a self, socket: Arc<Socket>, event: Event) -> BoxFuture<'a, ()> {
        let message = format!("Unknown event: {}", event.name);
        let payload = Payload::json(&serde_json::json!({ "message": message }));
        match event.ack {
            Some(id) => socket.ack(id, &payload),
            None => {
                socket.emit("error", payload);
            }
        }
        Box::pin(async {})
    }
}
