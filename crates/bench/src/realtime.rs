//! The `/realtime` ticketing contract as a client speaks it: connect as a user (the
//! development-mode `?userId=` query), join an event room, hold and release seats, read
//! `availability-update`s. Shared by the scenarios that measure that contract, so the
//! same bytes go to Switchboard and to the peers in `bench/peers/`.
//!
//! Owns: event names and payload fields. Never: timing or counting (the scenarios do).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sio::{Client, Incoming, Namespace, PacketKind, SioError, Target};

/// The namespace of the contract.
pub const NAMESPACE: &str = "/realtime";
/// Categories per event in the demo catalog that every server in a comparison serves:
/// a join is complete when the ack and this many `availability-update`s have arrived.
pub const DEMO_CATEGORIES_PER_EVENT: usize = 3;

const AVAILABILITY_PREFIX: &str = "[\"availability-update\"";
const CONNECTED_PREFIX: &str = "[\"connected\"";

/// One `availability-update` (the fields the scenarios check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Update {
    pub event_id: i64,
    pub category_id: i64,
    pub available_tickets: i64,
    pub locked_tickets: i64,
    pub total_tickets: i64,
}

impl Update {
    /// Whether the numbers are possible: no seat held twice, none below zero.
    pub fn consistent(&self) -> bool {
        self.available_tickets >= 0
            && self.locked_tickets >= 0
            && self.available_tickets + self.locked_tickets <= self.total_tickets
    }
}

/// Connects `user` to `/realtime` (development auth: the `userId` query parameter) and
/// waits for the contract's `connected` event: a server may run its connection handler
/// after answering the Socket.IO CONNECT (socketioxide does), and events sent before
/// that handler ran would find no listener.
pub async fn connect(
    target: &Target,
    nsp: &Arc<Namespace>,
    user: &str,
) -> Result<Client, SioError> {
    connect_from(target, None, nsp, user).await
}

/// [`connect`] from the local address `source` (`None`: the kernel chooses).
pub async fn connect_from(
    target: &Target,
    source: Option<std::net::IpAddr>,
    nsp: &Arc<Namespace>,
    user: &str,
) -> Result<Client, SioError> {
    let mut client =
        Client::connect_from(target, source, &format!("userId={user}"), nsp, None).await?;
    wait_connected(&mut client).await?;
    Ok(client)
}

/// Waits for the contract's `connected` event (see [`connect`]).
pub async fn wait_connected<S>(client: &mut Client<S>) -> Result<(), SioError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let p = client.recv_packet().await?;
        if p.kind == PacketKind::Event && p.data().starts_with(CONNECTED_PREFIX) {
            return Ok(());
        }
    }
}

/// Whether a packet is an `availability-update` event. Checks the name only (no JSON
/// parse): this runs once per delivery in the fan-out scenarios.
pub fn is_availability(p: &Incoming) -> bool {
    p.kind == PacketKind::Event && p.data().starts_with(AVAILABILITY_PREFIX)
}

/// The update carried by an `availability-update` packet (a trailing recovery offset,
/// as Switchboard appends, is ignored).
pub fn parse_update(p: &Incoming) -> Option<Update> {
    if !is_availability(p) {
        return None;
    }
    let args: Vec<&RawValue> = serde_json::from_str(p.data()).ok()?;
    serde_json::from_str(args.get(1)?.get()).ok()
}

/// Emits `join-event-room {eventId}` with an ack and waits for the ack and the
/// `initial` availability updates the server sends on a join; returns those updates
/// that parsed.
pub async fn join_event<S>(
    client: &mut Client<S>,
    event_id: i64,
    initial: usize,
) -> Result<Vec<Update>, SioError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let arg = format!("{{\"eventId\":{event_id}}}");
    let id = client.emit_with_ack("join-event-room", &[&arg]).await?;
    let mut acked = false;
    let mut updates = Vec::with_capacity(initial);
    let mut seen = 0;
    while !acked || seen < initial {
        let p = client.recv_packet().await?;
        match p.kind {
            PacketKind::Ack if p.id == Some(id) => {
                if !answer_success(&p) {
                    return Err(SioError::ConnectRefused(format!(
                        "join-event-room {event_id}: {}",
                        p.data()
                    )));
                }
                acked = true;
            }
            PacketKind::Event if is_availability(&p) => {
                seen += 1;
                updates.extend(parse_update(&p));
            }
            _ => {}
        }
    }
    Ok(updates)
}

/// Emits `lock-tickets` with an ack; returns the answer's `success`.
pub async fn lock(
    client: &mut Client,
    event_id: i64,
    category_id: i64,
    quantity: u32,
) -> Result<bool, SioError> {
    let arg =
        format!("{{\"eventId\":{event_id},\"categoryId\":{category_id},\"quantity\":{quantity}}}");
    let id = client.emit_with_ack("lock-tickets", &[&arg]).await?;
    Ok(answer_success(&client.wait_ack(id).await?))
}

/// Emits `unlock-tickets` with an ack; returns the answer's `success`.
pub async fn unlock(
    client: &mut Client,
    event_id: i64,
    category_id: i64,
) -> Result<bool, SioError> {
    let arg = format!("{{\"eventId\":{event_id},\"categoryId\":{category_id}}}");
    let id = client.emit_with_ack("unlock-tickets", &[&arg]).await?;
    Ok(answer_success(&client.wait_ack(id).await?))
}

/// `success` of an ack's first argument (`[{"success":true,...}]`).
fn answer_success(p: &Incoming) -> bool {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        success: bool,
    }
    serde_json::from_str::<Vec<&RawValue>>(p.data())
        .ok()
        .and_then(|args| serde_json::from_str::<Answer>(args.first()?.get()).ok())
        .is_some_and(|a| a.success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency() {
        let u = |a, l, t| Update {
            event_id: 1,
            category_id: 1,
            available_tickets: a,
            locked_tickets: l,
            total_tickets: t,
        };
        assert!(u(18, 2, 20).consistent());
        assert!(!u(-1, 21, 20).consistent());
        assert!(!u(10, 11, 20).consistent());
    }
}
