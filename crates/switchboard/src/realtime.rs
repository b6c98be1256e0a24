//! The `/realtime` namespace: the ticketing platform's event contract (names and payload
//! fields exactly as its Next.js front end expects them).
//!
//! Owns: decoding each event's fields (ids as numbers or numeric strings), answering by
//! emit and by ack, room membership (`event_{id}`, `user:{id}`). Never: hold rules (the
//! hold service) or token checks (`auth`). Transport-neutral: Socket.IO sockets and
//! plain WebSocket clients (`transport::ws`) both speak it through [`Client`].

use std::sync::Arc;

use futures_util::future::BoxFuture;
use hub::Payload;
use serde_json::{Value, json};
use socketio::{
    ConnectError, ConnectRequest, DisconnectReason, Event, Identity, NamespaceHandler, Socket,
};
use tickets::HoldRequest;

use crate::auth::Auth;
use crate::tickets::wire::{
    ErrorEvent, EventRoomAnswer, HeartbeatAnswer, LockAnswer, MyLocks, Outcome, RealtimeConnected,
};
use crate::tickets::{CatalogSource, HoldService, ServiceError};
use crate::transport::access::{RoomPolicy, Via};

pub struct Realtime {
    pub auth: Auth,
    /// Who may join which room (every transport).
    pub rooms: RoomPolicy,
    pub holds: Arc<HoldService>,
    /// Checks holds against the events-service when that is the catalog source.
    pub catalog: CatalogSource,
    /// Per-user connection counts and event buckets, shared by every transport.
    pub limits: Arc<crate::limits::Limits>,
}

impl std::fmt::Debug for Realtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realtime")
            .field("auth", &self.auth)
            .finish()
    }
}

/// One client of the ticket contract, whatever its transport.
pub trait Client: Send + Sync {
    /// The session id holds are tied to (released when the session ends).
    fn id(&self) -> &str;
    fn user(&self) -> Option<&str>;
    /// The room patterns of the client's token (`rooms` claim), if it had one.
    fn grants(&self) -> Option<&[String]>;
    /// The transport, for refusal counts.
    fn via(&self) -> Via;
    fn join(&self, room: &str) -> Result<(), hub::JoinError>;
    fn leave(&self, room: &str);
    /// An event to this client alone.
    fn emit(&self, event: &str, payload: Payload);
    /// The answer to the client's event `id`.
    fn ack(&self, id: u64, payload: &Payload);
}

impl Client for Socket {
    fn id(&self) -> &str {
        Socket::id(self)
    }
    fn user(&self) -> Option<&str> {
        Socket::user(self)
    }
    fn grants(&self) -> Option<&[String]> {
        Socket::grants(self)
    }
    fn via(&self) -> Via {
        Via::SocketIo
    }
    fn join(&self, room: &str) -> Result<(), hub::JoinError> {
        Socket::join(self, room)
    }
    fn leave(&self, room: &str) {
        Socket::leave(self, room)
    }
    fn emit(&self, event: &str, payload: Payload) {
        Socket::emit(self, event, payload);
    }
    fn ack(&self, id: u64, payload: &Payload) {
        Socket::ack(self, id, payload)
    }
}

/// Whether a session ended because the server is shutting down (SIGTERM/SIGINT): its
/// holds are kept until their `expiresAt`, on every transport.
pub fn is_shutdown(reason: DisconnectReason) -> bool {
    reason == DisconnectReason::Transport(engineio::CloseReason::ServerShutdown)
}

/// The per-user room that receives order notifications on every transport.
pub fn user_room(user: &str) -> String {
    format!("user:{user}")
}

/// A bad field, reported to the client as `{success: false, message}`.
#[derive(Debug)]
struct BadInput(String);

fn field<'a>(data: &'a Value, name: &str) -> Result<&'a Value, BadInput> {
    data.get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| BadInput(format!("Missing field: {name}")))
}

/// An id: an integer, or a string of one. Anything else is refused with a message.
fn id(data: &Value, name: &str) -> Result<i64, BadInput> {
    let v = field(data, name)?;
    let parsed = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| BadInput(format!("Invalid {name}: expected an integer id")))
}

/// A quantity: a whole number (or numeric string) within 1..=max.
fn quantity(data: &Value, max: u32) -> Result<u32, BadInput> {
    let v = field(data, "quantity")?;
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 1e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| BadInput("Invalid quantity: expected a whole number".into()))?;
    if n < 1 || n > i64::from(max) {
        return Err(BadInput(format!(
            "Invalid quantity: must be between 1 and {max}"
        )));
    }
    Ok(n as u32)
}

/// Sends a response as an event and, when the client asked for one, through its ack.
fn respond(socket: &dyn Client, ack: Option<u64>, event: &str, body: impl serde::Serialize) {
    let payload = Payload::json(&body);
    if let Some(id) = ack {
        socket.ack(id, &payload);
    }
    socket.emit(event, payload);
}

/// The answer to `join-event-room` / `leave-event-room`.
fn room_answer(event_id: i64, success: bool, message: String) -> EventRoomAnswer {
    EventRoomAnswer {
        event_id,
        message,
        success,
    }
}

impl Realtime {
    /// Handles one event of the contract; refusals and bad input are answered to the
    /// client as an `error` event (and through its ack, when it asked for one).
    pub async fn dispatch(&self, client: &dyn Client, name: &str, data: Value, ack: Option<u64>) {
        if let Err(BadInput(message)) = self.handle(client, name, data, ack).await {
            if let Some(id) = ack {
                let body = Outcome {
                    message: message.clone(),
                    success: false,
                };
                client.ack(id, &Payload::json(&body));
            }
            client.emit("error", Payload::json(&ErrorEvent { message }));
        }
    }

    /// Releases the holds of a session that ended for good.
    pub async fn session_ended(&self, session: &str) {
        if let Err(e) = self.holds.release_session(session).await {
            tracing::warn!(error = %e, "releasing a session's holds failed");
        }
    }

    async fn handle(
        &self,
        socket: &dyn Client,
        name: &str,
        data: Value,
        ack: Option<u64>,
    ) -> Result<(), BadInput> {
        let data = if data.is_null() { json!({}) } else { data };
        if !data.is_object() {
            return Err(BadInput("Invalid payload: expected an object".into()));
        }
        let user = socket.user().unwrap_or("anonymous").to_owned();
        match name {
            "join-event-room" => {
                let event_id = id(&data, "eventId")?;
                self.catalog.refresh(&self.holds, event_id).await;
                let categories = match self.holds.join_snapshot(event_id).await {
                    Ok(c) => c,
                    Err(e) => {
                        respond(
                            socket,
                            ack,
                            "joined-event-room",
                            room_answer(event_id, false, e.to_string()),
                        );
                        return Ok(());
                    }
                };
                let Some(categories) = categories else {
                    respond(
                        socket,
                        ack,
                        "joined-event-room",
                        room_answer(event_id, false, format!("Event {event_id} not found")),
                    );
                    return Ok(());
                };
                let room = crate::tickets::event_room(event_id);
                if let Err(e) =
                    self.rooms
                        .check(socket.via(), &room, socket.user(), socket.grants())
                {
                    respond(
                        socket,
                        ack,
                        "joined-event-room",
                        room_answer(event_id, false, e.to_string()),
                    );
                    return Ok(());
                }
                if socket.join(&room).is_err() {
                    respond(
                        socket,
                        ack,
                        "joined-event-room",
                        room_answer(event_id, false, "Too many rooms joined".to_owned()),
                    );
                    return Ok(());
                }
                respond(
                    socket,
                    ack,
                    "joined-event-room",
                    room_answer(event_id, true, format!("Joined event {event_id}")),
                );
                self.holds
                    .send_snapshot(&categories, &mut |event, payload| {
                        socket.emit(event, payload)
                    });
            }
            "leave-event-room" => {
                let event_id = id(&data, "eventId")?;
                socket.leave(&crate::tickets::event_room(event_id));
                respond(
                    socket,
                    ack,
                    "left-event-room",
                    room_answer(event_id, true, format!("Left event {event_id}")),
                );
            }
            "lock-tickets" => {
                let req = HoldRequest {
                    user_id: user,
                    session_id: socket.id().to_owned(),
                    event_id: id(&data, "eventId")?,
                    category_id: id(&data, "categoryId")?,
                    quantity: quantity(&data, self.holds.config().max_quantity)?,
                };
                let (ev, cat) = (req.event_id, req.category_id);
                let verified = self.catalog.verify_hold(&self.holds, ev, cat).await;
                let (granted, seats) = match verified {
                    Ok(()) => {
                        let (granted, after) = self.holds.lock_counted(req).await;
                        (granted.map_err(ServiceError::from), after)
                    }
                    Err(refusal) => {
                        let after = self.holds.availability(ev, cat).await.ok().flatten();
                        (Err(ServiceError::Refused(refusal)), after)
                    }
                };
                let available = seats.map(|a| a.available_tickets);
                let body = match granted {
                    Ok(hold) => LockAnswer {
                        available_tickets: available,
                        expires_at: Some(hold.expires_at),
                        message: format!("Locked {} ticket(s)", hold.quantity),
                        lock_id: Some(hold.lock_id),
                        success: true,
                    },
                    Err(e) => LockAnswer {
                        available_tickets: available,
                        expires_at: None,
                        lock_id: None,
                        message: e.to_string(),
                        success: false,
                    },
                };
                respond(socket, ack, "lock-tickets-response", body);
            }
            "unlock-tickets" => {
                let (ev, cat) = (id(&data, "eventId")?, id(&data, "categoryId")?);
                let body = match self.holds.unlock(&user, ev, cat).await {
                    Ok(hold) => Outcome {
                        message: format!("Released {} ticket(s)", hold.quantity),
                        success: true,
                    },
                    Err(e) => Outcome {
                        message: e.to_string(),
                        success: false,
                    },
                };
                respond(socket, ack, "unlock-tickets-response", body);
            }
            "get-my-locks" => {
                let body = match self.holds.holds_of_user(&user).await {
                    Ok(locks) => MyLocks {
                        locks,
                        message: None,
                        success: None,
                    },
                    Err(e) => MyLocks {
                        locks: Vec::new(),
                        message: Some(e.to_string()),
                        success: Some(false),
                    },
                };
                // Through a JSON value, so each hold's keys stay sorted as they always were
                // on the wire (`Hold` declares its fields in another order).
                respond(socket, ack, "my-locks-response", serde_json::json!(body));
            }
            "heartbeat" => {
                respond(
                    socket,
                    ack,
                    "heartbeat-response",
                    HeartbeatAnswer {
                        success: true,
                        timestamp: crate::tickets::now_ms(),
                    },
                );
            }
            other => return Err(BadInput(format!("Unknown event: {other}"))),
        }
        Ok(())
    }
}

impl NamespaceHandler for Realtime {
    fn authorize_async<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ConnectError>> {
        Box::pin(async move {
            let auth: Value = serde_json::from_str(req.auth).unwrap_or(Value::Null);
            let token = auth
                .get("token")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| req.handshake.query_param("token"));
            let query_user = req.handshake.query_param("userId");
            match self
                .auth
                .identify(token.as_deref(), query_user.as_deref())
                .await
            {
                Ok(id) => match self.limits.admit_user_named(&id.user) {
                    Ok((admission, user)) => Ok(Identity {
                        user: Some(user),
                        grants: id.rooms,
                        admission,
                    }),
                    Err(refused) => Err(crate::limits::connect_error(refused)),
                },
                Err(e) => {
                    tracing::debug!(error = %e, cause = ?std::error::Error::source(&e), "socket.io connect refused");
                    Err(ConnectError::new(e.to_string()))
                }
            }
        })
    }

    fn on_connect<'a>(&'a self, socket: Arc<Socket>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(user) = socket.user() {
                let _ = socket.join(&user_room(user));
            }
            socket.emit(
                "connected",
                Payload::json(&RealtimeConnected {
                    message: if socket.recovered() {
                        "Session recovered"
                    } else {
                        "Connected to realtime service"
                    }
                    .to_owned(),
                    session_id: socket.id().to_owned(),
                    success: true,
                }),
            );
        })
    }

    fn on_event<'a>(&'a self, socket: Arc<Socket>, event: Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let data = match event.args.first() {
                Some(raw) => match serde_json::from_str(raw.get()) {
                    Ok(v) => v,
                    Err(_) => Value::String(String::new()),
                },
                None => Value::Null,
            };
            self.dispatch(&*socket, &event.name, data, event.ack).await;
        })
    }

    fn on_disconnect<'a>(
        &'a self,
        socket: Arc<Socket>,
        reason: DisconnectReason,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // A graceful restart takes no one's seats, as on `/ws` (with recovery on, a
            // shutdown never gets here: the session waits for a window the process
            // does not outlive).
            if !is_shutdown(reason) {
                self.session_ended(socket.id()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_numbers_and_numeric_strings_only() {
        let d = json!({"a": 5, "b": "6", "c": 1.5, "d": "x", "e": 1e20, "f": null});
        assert_eq!(id(&d, "a").ok(), Some(5));
        assert_eq!(id(&d, "b").ok(), Some(6));
        for bad in ["c", "d", "e", "f", "missing"] {
            assert!(id(&d, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_are_whole_and_in_range() {
        let q = |v: Value| quantity(&json!({ "quantity": v }), 10).ok();
        assert_eq!(q(json!(3)), Some(3));
        assert_eq!(q(json!("4")), Some(4));
        assert_eq!(q(json!(2.0)), Some(2));
        for bad in [
            json!(0),
            json!(-1),
            json!(11),
            json!(1.5),
            json!("many"),
            json!(1e300),
            json!([1]),
            json!(u64::MAX),
        ] {
            assert_eq!(q(bad.clone()), None, "{bad}");
        }
    }
}
