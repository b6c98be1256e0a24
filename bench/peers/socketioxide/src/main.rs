//! The `/realtime` ticketing contract on socketioxide, written the way a Rust team would
//! write it with that crate: axum + socketioxide defaults, one `Mutex` over the hold map,
//! availability broadcast to `event_{id}` on every change. A benchmark peer of Switchboard.
//!
//! Usage: `socketioxide-peer [PORT]` (or `PORT=...`); listens on 127.0.0.1 only.
//! Development auth only: the user is the `userId` query parameter (as Switchboard's
//! development mode). The catalog is Switchboard's demo catalog.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};

const HOLD_TTL_MS: i64 = 5 * 60 * 1000;
const MAX_QUANTITY: i64 = 10;

#[derive(Debug, Clone, Copy)]
struct Category {
    event_id: i64,
    id: i64,
    total: i64,
    available: i64,
    locked: i64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Hold {
    lock_id: String,
    user_id: String,
    event_id: i64,
    category_id: i64,
    quantity: i64,
    expires_at: i64,
    #[serde(skip)]
    session_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Availability {
    event_id: i64,
    category_id: i64,
    available_tickets: i64,
    locked_tickets: i64,
    total_tickets: i64,
    timestamp: i64,
}

#[derive(Default)]
struct Holds {
    /// (event, category) -> seats.
    categories: HashMap<(i64, i64), Category>,
    /// (user, event, category) -> the user's one hold there.
    holds: HashMap<(String, i64, i64), Hold>,
}

struct App {
    state: Mutex<Holds>,
    next_lock: AtomicU64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn availability(c: &Category) -> Availability {
    Availability {
        event_id: c.event_id,
        category_id: c.id,
        available_tickets: c.available,
        locked_tickets: c.locked,
        total_tickets: c.total,
        timestamp: now_ms(),
    }
}

/// Switchboard's demo catalog: two events, three categories each.
fn demo_catalog() -> Holds {
    let mut h = Holds::default();
    for (event_id, id, seats) in [
        (1, 1, 20),
        (1, 2, 200),
        (1, 3, 100),
        (2, 4, 30),
        (2, 5, 300),
        (2, 6, 500),
    ] {
        h.categories.insert(
            (event_id, id),
            Category {
                event_id,
                id,
                total: seats,
                available: seats,
                locked: 0,
            },
        );
    }
    h
}

impl Holds {
    fn release(&mut self, hold: &Hold) {
        if let Some(c) = self.categories.get_mut(&(hold.event_id, hold.category_id)) {
            c.available += hold.quantity;
            c.locked -= hold.quantity;
        }
    }

    /// Drops expired holds; returns the categories that changed.
    fn expire(&mut self, now: i64) -> Vec<(i64, i64)> {
        let expired: Vec<Hold> = self
            .holds
            .values()
            .filter(|h| h.expires_at <= now)
            .cloned()
            .collect();
        let mut touched = Vec::new();
        for h in expired {
            self.holds
                .remove(&(h.user_id.clone(), h.event_id, h.category_id));
            self.release(&h);
            touched.push((h.event_id, h.category_id));
        }
        touched
    }

    fn event_availability(&self, event_id: i64) -> Vec<Availability> {
        let mut v: Vec<Availability> = self
            .categories
            .values()
            .filter(|c| c.event_id == event_id)
            .map(availability)
            .collect();
        v.sort_by_key(|a| a.category_id);
        v
    }
}

/// An id given as a number or a numeric string.
fn id(data: &Value, name: &str) -> Option<i64> {
    match data.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn user_of(socket: &SocketRef) -> String {
    socket
        .req_parts()
        .uri
        .query()
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("userId="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("anonymous-{}", socket.id))
}

/// Answers through the ack when the client asked for one, and as an event.
fn respond(socket: &SocketRef, ack: AckSender, event: &str, body: &Value) {
    ack.send(body).ok();
    socket.emit(event, body).ok();
}

impl App {
    async fn broadcast(&self, io: &SocketIo, touched: Vec<(i64, i64)>) {
        for (event_id, category_id) in touched {
            let update = {
                let state = self.state.lock();
                state
                    .categories
                    .get(&(event_id, category_id))
                    .map(availability)
            };
            if let (Some(update), Some(nsp)) = (update, io.of("/realtime")) {
                nsp.to(format!("event_{event_id}"))
                    .emit("availability-update", &update)
                    .await
                    .ok();
            }
        }
    }

    fn lock(&self, user: &str, session: &str, data: &Value) -> (Value, Vec<(i64, i64)>) {
        let (Some(event_id), Some(category_id), Some(quantity)) = (
            id(data, "eventId"),
            id(data, "categoryId"),
            id(data, "quantity"),
        ) else {
            return (
                json!({"success": false, "message": "eventId, categoryId and quantity are required"}),
                Vec::new(),
            );
        };
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return (
                json!({"success": false, "message": format!("Invalid quantity: must be between 1 and {MAX_QUANTITY}")}),
                Vec::new(),
            );
        }
        let now = now_ms();
        let mut guard = self.state.lock();
        let state = &mut *guard;
        let mut touched = state.expire(now);
        let key = (user.to_owned(), event_id, category_id);
        let already = state.holds.contains_key(&key);
        let body = match state.categories.get_mut(&(event_id, category_id)) {
            None => json!({"success": false, "message": "Category not found"}),
            Some(_) if already => json!({
                "success": false,
                "message": "You already hold tickets in this category",
            }),
            Some(c) if c.available < quantity => json!({
                "success": false,
                "message": "Not enough tickets available",
                "availableTickets": c.available,
            }),
            Some(c) => {
                c.available -= quantity;
                c.locked += quantity;
                let available = c.available;
                let hold = Hold {
                    lock_id: format!("lock_{}", self.next_lock.fetch_add(1, Ordering::Relaxed)),
                    user_id: user.to_owned(),
                    event_id,
                    category_id,
                    quantity,
                    expires_at: now + HOLD_TTL_MS,
                    session_id: session.to_owned(),
                };
                let body = json!({
                    "success": true,
                    "lockId": hold.lock_id,
                    "expiresAt": hold.expires_at,
                    "message": format!("Locked {quantity} ticket(s)"),
                    "availableTickets": available,
                });
                state.holds.insert(key, hold);
                touched.push((event_id, category_id));
                body
            }
        };
        (body, touched)
    }

    fn unlock(&self, user: &str, data: &Value) -> (Value, Vec<(i64, i64)>) {
        let (Some(event_id), Some(category_id)) = (id(data, "eventId"), id(data, "categoryId"))
        else {
            return (
                json!({"success": false, "message": "eventId and categoryId are required"}),
                Vec::new(),
            );
        };
        let mut state = self.state.lock();
        let mut touched = state.expire(now_ms());
        let body = match state
            .holds
            .remove(&(user.to_owned(), event_id, category_id))
        {
            Some(hold) => {
                state.release(&hold);
                touched.push((event_id, category_id));
                json!({"success": true, "message": format!("Released {} ticket(s)", hold.quantity)})
            }
            None => json!({"success": false, "message": "No hold to release"}),
        };
        (body, touched)
    }

    fn release_session(&self, session: &str) -> Vec<(i64, i64)> {
        let mut state = self.state.lock();
        let gone: Vec<Hold> = state
            .holds
            .values()
            .filter(|h| h.session_id == session)
            .cloned()
            .collect();
        gone.iter()
            .map(|h| {
                state
                    .holds
                    .remove(&(h.user_id.clone(), h.event_id, h.category_id));
                state.release(h);
                (h.event_id, h.category_id)
            })
            .collect()
    }
}

fn on_connect(socket: SocketRef, app: Arc<App>, io: SocketIo) {
    let user = user_of(&socket);
    socket.join(format!("user:{user}"));

    let a = app.clone();
    socket.on(
        "join-event-room",
        async move |s: SocketRef, Data(data): Data<Value>, ack: AckSender| {
            let Some(event_id) = id(&data, "eventId") else {
                respond(&s, ack, "error", &json!({"success": false, "message": "Missing field: eventId"}));
                return;
            };
            let categories = a.state.lock().event_availability(event_id);
            if categories.is_empty() {
                let body = json!({"success": false, "eventId": event_id, "message": format!("Event {event_id} not found")});
                respond(&s, ack, "joined-event-room", &body);
                return;
            }
            s.join(format!("event_{event_id}"));
            let body = json!({"success": true, "eventId": event_id, "message": format!("Joined event {event_id}")});
            respond(&s, ack, "joined-event-room", &body);
            for c in &categories {
                s.emit("availability-update", c).ok();
            }
        },
    );

    socket.on(
        "leave-event-room",
        async |s: SocketRef, Data(data): Data<Value>, ack: AckSender| {
            let event_id = id(&data, "eventId").unwrap_or_default();
            s.leave(format!("event_{event_id}"));
            let body = json!({"success": true, "eventId": event_id, "message": format!("Left event {event_id}")});
            respond(&s, ack, "left-event-room", &body);
        },
    );

    let (a, i, u) = (app.clone(), io.clone(), user.clone());
    socket.on(
        "lock-tickets",
        async move |s: SocketRef, Data(data): Data<Value>, ack: AckSender| {
            let (body, touched) = a.lock(&u, s.id.as_str(), &data);
            a.broadcast(&i, touched).await;
            respond(&s, ack, "lock-tickets-response", &body);
        },
    );

    let (a, i, u) = (app.clone(), io.clone(), user.clone());
    socket.on(
        "unlock-tickets",
        async move |s: SocketRef, Data(data): Data<Value>, ack: AckSender| {
            let (body, touched) = a.unlock(&u, &data);
            a.broadcast(&i, touched).await;
            respond(&s, ack, "unlock-tickets-response", &body);
        },
    );

    let (a, u) = (app.clone(), user);
    socket.on("get-my-locks", async move |s: SocketRef, ack: AckSender| {
        let locks: Vec<Hold> = a
            .state
            .lock()
            .holds
            .values()
            .filter(|h| h.user_id == u)
            .cloned()
            .collect();
        respond(&s, ack, "my-locks-response", &json!({"locks": locks}));
    });

    socket.on("heartbeat", async |s: SocketRef, ack: AckSender| {
        respond(
            &s,
            ack,
            "heartbeat-response",
            &json!({"success": true, "timestamp": now_ms()}),
        );
    });

    socket.on_disconnect(async move |s: SocketRef| {
        let touched = app.release_session(s.id.as_str());
        app.broadcast(&io, touched).await;
    });

    // Last: socketioxide answers CONNECT before this handler runs, so `connected` is
    // what tells a client its events will find their listeners.
    socket
        .emit(
            "connected",
            &json!({"success": true, "sessionId": socket.id, "message": "Connected to realtime service"}),
        )
        .ok();
}

/// Expires holds at most a second late and broadcasts the freed seats.
async fn expiry(app: Arc<App>, io: SocketIo) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let touched = app.state.lock().expire(now_ms());
        app.broadcast(&io, touched).await;
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(8880);
    let app = Arc::new(App {
        state: Mutex::new(demo_catalog()),
        next_lock: AtomicU64::new(1),
    });
    let (layer, io) = SocketIo::new_layer();
    let (a, i) = (app.clone(), io.clone());
    io.ns("/realtime", async move |socket: SocketRef| {
        on_connect(socket, a.clone(), i.clone());
    });
    tokio::spawn(expiry(app.clone(), io.clone()));

    let stats = {
        let app = app.clone();
        move || async move {
            let state = app.state.lock();
            axum::Json(json!({"service": "socketioxide-peer", "activeLocks": state.holds.len()}))
        }
    };
    let router = axum::Router::new()
        .route("/health", axum::routing::get(async || "ok"))
        .route("/stats", axum::routing::get(stats))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "socketioxide peer listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await
}
