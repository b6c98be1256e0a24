//! What each pattern means: decode its data, apply it to the hold service (durably), tell
//! the clients, and say what the transport must do with the message ([`Verdict`]).
//!
//! No broker here, so every rule is testable without one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hub::{Hub, Payload, Publish};
use serde_json::{Value, json};
use tickets::{CatalogError, ConfirmError, Hold, OrderEffect, OrderError, OrderKind, OrderMessage};

use crate::nest::{self, Packet};
use crate::realtime::user_room;
use crate::tickets::ApplyError;
use crate::tickets::wire::{OrderOutcome, OrderStatus};
use crate::tickets::{HoldService, event_room, now_ms};

/// Why a message was dead-lettered (the `x-switchboard-reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not JSON, not an object, or no pattern.
    Unparsable,
    /// A pattern nobody handles.
    UnknownPattern,
    /// A field is missing or has the wrong type or range.
    InvalidData,
    /// It refers to nothing: an unknown lock, event or category, or no matching hold.
    NotFound,
    /// The rules refused it (e.g. the lock expired, not enough seats).
    Refused,
}

impl Reason {
    pub const ALL: [Reason; 5] = [
        Reason::Unparsable,
        Reason::UnknownPattern,
        Reason::InvalidData,
        Reason::NotFound,
        Reason::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparsable => "unparsable",
            Self::UnknownPattern => "unknown-pattern",
            Self::InvalidData => "invalid-data",
            Self::NotFound => "not-found",
            Self::Refused => "refused",
        }
    }
}

/// A reply body for a request, and whether it carries `err`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub body: Vec<u8>,
    pub is_err: bool,
}

impl Reply {
    fn ok(body: Vec<u8>) -> Option<Reply> {
        Some(Reply {
            body,
            is_err: false,
        })
    }
    fn err(body: Vec<u8>) -> Option<Reply> {
        Some(Reply { body, is_err: true })
    }
}

/// What the transport does with a message once it was handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The effect is durable (or there was none to make): send `reply` if any, then ack.
    Done {
        reply: Option<Reply>,
        duplicate: bool,
    },
    /// Publish to the dead-letter queue with the reason (and send `reply` if any), then ack.
    DeadLetter {
        reason: Reason,
        message: String,
        reply: Option<Reply>,
    },
    /// The store failed and nothing changed: put the message back, later.
    Retry(String),
}

/// Why a pattern's handler failed.
#[derive(Debug)]
enum Failure {
    Invalid(String),
    NotFound(String),
    Refused(String),
    UnknownPattern,
    Storage(String),
}

impl<E> From<ApplyError<E>> for Failure
where
    E: Into<Failure>,
{
    fn from(e: ApplyError<E>) -> Failure {
        match e {
            ApplyError::Rules(e) => e.into(),
            ApplyError::Storage(cause) => Failure::Storage(cause),
        }
    }
}

impl From<ConfirmError> for Failure {
    fn from(e: ConfirmError) -> Failure {
        match e {
            ConfirmError::UnknownLock(_) => Failure::NotFound(e.to_string()),
            ConfirmError::Expired(_) | ConfirmError::Ended { .. } => {
                Failure::Refused(e.to_string())
            }
        }
    }
}

impl From<OrderError> for Failure {
    fn from(e: OrderError) -> Failure {
        match e {
            OrderError::NoMatchingHold { .. } => Failure::NotFound(e.to_string()),
            OrderError::InvalidQuantity { .. } => Failure::Invalid(e.to_string()),
            OrderError::NotEnoughSeats { .. } => Failure::Refused(e.to_string()),
        }
    }
}

impl From<CatalogError> for Failure {
    fn from(e: CatalogError) -> Failure {
        match e {
            CatalogError::UnknownEvent(_) | CatalogError::UnknownCategory { .. } => {
                Failure::NotFound(e.to_string())
            }
            CatalogError::AvailableExceedsTotal { .. } | CatalogError::DuplicateCategory { .. } => {
                Failure::Invalid(e.to_string())
            }
        }
    }
}

impl From<std::convert::Infallible> for Failure {
    fn from(e: std::convert::Infallible) -> Failure {
        match e {}
    }
}

/// A pattern's successful result: the response a request gets, and whether the message
/// had been applied before.
struct Applied {
    response: Value,
    duplicate: bool,
}

/// The rest of a started message: it waits until the effect is durable, tells the clients,
/// and says what to do with the message.
pub type Finish = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// What a pattern's effect still has to do once applied: wait for durability, notify.
type Rest = Pin<Box<dyn Future<Output = Result<Applied, Failure>> + Send>>;

/// Applies NestJS packets to the hold service and publishes what clients must hear.
#[derive(Debug, Clone)]
pub struct Handler {
    pub holds: Arc<HoldService>,
    pub hub: Arc<Hub>,
}

impl Handler {
    /// Handles one message body. `can_reply`: the message names a reply queue and a
    /// correlation id, so a request can be answered.
    pub async fn handle(&self, body: &[u8], can_reply: bool) -> Verdict {
        self.start(body, can_reply).await.await
    }

    /// Applies one message's effect (with the local hold authority: in memory, so
    /// messages started one after another apply in that order) and returns the rest,
    /// which waits until the effect is durable (its batch committed), tells the clients
    /// and gives the verdict. Several messages may wait at once.
    pub async fn start(&self, body: &[u8], can_reply: bool) -> Finish {
        let packet = match nest::decode_packet(body) {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                let verdict = Verdict::DeadLetter {
                    reason: Reason::Unparsable,
                    reply: if can_reply {
                        Reply::err(nest::reply_err(None, &message))
                    } else {
                        None
                    },
                    message,
                };
                return Box::pin(std::future::ready(verdict));
            }
        };
        let begun = self.begin(&packet).await;
        Box::pin(async move {
            let result = match begun {
                Ok(rest) => rest.await,
                Err(f) => Err(f),
            };
            verdict(&packet, can_reply, result)
        })
    }
}

/// What the transport does with a message, given its pattern's result.
fn verdict(packet: &Packet, can_reply: bool, result: Result<Applied, Failure>) -> Verdict {
    // A request is a packet with an id (NestJS's own test), answerable only with a
    // reply queue; one that cannot be answered is treated like an event.
    let reply_id = packet.id.as_ref().filter(|_| can_reply);
    match (result, reply_id) {
        (Ok(a), Some(id)) => Verdict::Done {
            reply: Reply::ok(nest::reply_ok(Some(id), &a.response)),
            duplicate: a.duplicate,
        },
        (Ok(a), None) => Verdict::Done {
            reply: None,
            duplicate: a.duplicate,
        },
        (Err(Failure::Storage(cause)), _) => Verdict::Retry(cause),
        (Err(Failure::UnknownPattern), Some(id)) => Verdict::Done {
            reply: Reply::err(nest::reply_no_handler(Some(id))),
            duplicate: false,
        },
        (Err(f), Some(id)) => {
            let message = match f {
                Failure::Invalid(m) | Failure::NotFound(m) | Failure::Refused(m) => m,
                Failure::UnknownPattern | Failure::Storage(_) => String::new(),
            };
            Verdict::Done {
                reply: Reply::err(nest::reply_err(Some(id), &message)),
                duplicate: false,
            }
        }
        (Err(f), None) => {
            let (reason, message) = match f {
                Failure::Invalid(m) => (Reason::InvalidData, m),
                Failure::NotFound(m) => (Reason::NotFound, m),
                Failure::Refused(m) => (Reason::Refused, m),
                Failure::UnknownPattern => (
                    Reason::UnknownPattern,
                    format!("no handler for pattern {}", packet.pattern),
                ),
                Failure::Storage(m) => return Verdict::Retry(m),
            };
            Verdict::DeadLetter {
                reason,
                message,
                reply: None,
            }
        }
    }
}

impl Handler {
    /// Applies the pattern's effect; the returned rest awaits its durability and tells
    /// the clients.
    async fn begin(&self, packet: &Packet) -> Result<Rest, Failure> {
        let data = &packet.data;
        match packet.pattern.as_str() {
            "confirm-ticket-lock" => {
                let lock_id = text(data, "lockId")?;
                let pending = self.holds.confirm_typed(&lock_id).await;
                Ok(Box::pin(async move {
                    let hold = pending.settled().await?;
                    Ok(Applied {
                        response: json!({
                            "success": true,
                            "lockId": hold.lock_id,
                            "status": hold.status,
                            "expiresAt": hold.expires_at,
                        }),
                        duplicate: false,
                    })
                }))
            }
            "order-completed" | "order-cancelled" => {
                let completed = packet.pattern == "order-completed";
                let order = order(data)?;
                let kind = if completed {
                    OrderKind::Completed
                } else {
                    OrderKind::Cancelled
                };
                let pending = self.holds.order_typed(kind, order.clone()).await;
                let this = self.clone();
                Ok(Box::pin(async move {
                    Ok(match pending.settled().await? {
                        OrderEffect::Applied(hold) => {
                            this.notify_order(kind, &order, &hold);
                            Applied {
                                response: json!({
                                    "success": true,
                                    "orderId": order.order_id,
                                    "lockId": hold.lock_id,
                                    "status": hold.status,
                                }),
                                duplicate: false,
                            }
                        }
                        OrderEffect::AlreadyApplied { kind } => Applied {
                            response: json!({
                                "success": true,
                                "orderId": order.order_id,
                                "status": kind,
                                "duplicate": true,
                            }),
                            duplicate: true,
                        },
                    })
                }))
            }
            "event-capacity-changed" => {
                let (event_id, category_id) = (int(data, "eventId")?, int(data, "categoryId")?);
                let total = seats(data, "totalSeats")?;
                let available = seats(data, "availableSeats")?;
                let pending = self
                    .holds
                    .change_capacity_typed(event_id, category_id, total, available)
                    .await;
                Ok(Box::pin(async move {
                    let a = pending.settled().await?;
                    Ok(Applied {
                        response: json!({
                            "success": true,
                            "eventId": a.event_id,
                            "categoryId": a.category_id,
                            "availableTickets": a.available_tickets,
                            "lockedTickets": a.locked_tickets,
                            "totalTickets": a.total_tickets,
                        }),
                        duplicate: false,
                    })
                }))
            }
            "event-cancelled" => {
                let event_id = int(data, "eventId")?;
                let known = self
                    .holds
                    .event(event_id)
                    .await
                    .map_err(|e| Failure::Storage(format!("{e:?}")))?;
                if known.is_none() {
                    return Err(Failure::NotFound(format!("event {event_id} not found")));
                }
                let pending = self.holds.event_cancelled_typed(event_id).await;
                let hub = self.hub.clone();
                Ok(Box::pin(async move {
                    let released = pending.settled().await?;
                    hub.publish(Publish {
                        rooms: std::iter::once(event_room(event_id).into()).collect(),
                        event: "event-cancelled".into(),
                        payload: Payload::json(&json!({
                            "eventId": event_id,
                            "message": format!("Event {event_id} was cancelled; held tickets were released"),
                            "releasedLocks": released.len(),
                            "timestamp": now_ms(),
                        })),
                        persist: true,
                        ..Publish::default()
                    });
                    Ok(Applied {
                        response: json!({
                            "success": true,
                            "eventId": event_id,
                            "releasedLocks": released.len(),
                        }),
                        duplicate: false,
                    })
                }))
            }
            _ => Err(Failure::UnknownPattern),
        }
    }

    /// Tells the order's user, on every transport they use (their hub room).
    fn notify_order(&self, kind: OrderKind, order: &OrderMessage, hold: &Hold) {
        let event = match kind {
            OrderKind::Completed => "order-completed",
            OrderKind::Cancelled => "order-cancelled",
        };
        let (status, message) = if kind == OrderKind::Completed {
            (
                OrderStatus::Completed,
                format!("Order {} completed", order.order_id),
            )
        } else {
            (
                OrderStatus::Cancelled,
                format!(
                    "Order {} cancelled; your tickets were released",
                    order.order_id
                ),
            )
        };
        self.hub.publish(Publish {
            rooms: std::iter::once(user_room(&order.user_id).into()).collect(),
            event: event.into(),
            payload: Payload::json(&OrderOutcome {
                category_id: order.category_id,
                event_id: order.event_id,
                lock_id: hold.lock_id.clone(),
                message,
                order_id: order.order_id.clone(),
                quantity: order.quantity,
                status,
                success: true,
                timestamp: now_ms(),
                user_id: order.user_id.clone(),
            }),
            persist: true,
            ..Publish::default()
        });
    }
}

// ----- fields -------------------------------------------------------------------------

fn field<'a>(data: &'a Value, name: &str) -> Result<&'a Value, Failure> {
    if !data.is_object() {
        return Err(Failure::Invalid("data must be an object".into()));
    }
    data.get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| Failure::Invalid(format!("missing field {name}")))
}

/// An integer, or a string of one.
fn int(data: &Value, name: &str) -> Result<i64, Failure> {
    match field(data, name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| Failure::Invalid(format!("{name} must be an integer")))
}

/// A seat count: an integer in `0..=u32::MAX`.
fn seats(data: &Value, name: &str) -> Result<u32, Failure> {
    u32::try_from(int(data, name)?)
        .map_err(|_| Failure::Invalid(format!("{name} must be between 0 and {}", u32::MAX)))
}

/// A non-empty identifier: a string, or a number written as one.
fn text(data: &Value, name: &str) -> Result<String, Failure> {
    let s = match field(data, name)? {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if s.is_empty() || s.len() > 256 {
        return Err(Failure::Invalid(format!(
            "{name} must be a non-empty string of at most 256 bytes"
        )));
    }
    Ok(s)
}

fn order(data: &Value) -> Result<OrderMessage, Failure> {
    let quantity = int(data, "quantity")?;
    let quantity = u32::try_from(quantity)
        .ok()
        .filter(|q| *q >= 1)
        .ok_or_else(|| Failure::Invalid("quantity must be a positive integer".into()))?;
    Ok(OrderMessage {
        order_id: text(data, "orderId")?,
        event_id: int(data, "eventId")?,
        category_id: int(data, "categoryId")?,
        quantity,
        user_id: text(data, "userId")?,
    })
}
