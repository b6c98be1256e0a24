//! The `/chat` Socket.IO namespace: tokens as on `/realtime` (the same middleware), each
//! event handed to [`super::dispatch`], answered through its ack (or an `error` event
//! when the client asked for none).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use hub::Payload;
use serde_json::Value;
use socketio::{
    ConnectError, ConnectRequest, DisconnectReason, Event, Identity, NamespaceHandler, Socket,
};

use super::live::ChatConn;
use super::service::Chat;
use super::wire::{ChatConnected, ChatRefusal};
use crate::realtime::{Realtime, user_room};

pub struct ChatNamespace {
    pub chat: Arc<Chat>,
    /// `/realtime`'s handler, for its connect middleware (tokens, per-user limits).
    pub realtime: Arc<Realtime>,
}

impl std::fmt::Debug for ChatNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatNamespace").finish_non_exhaustive()
    }
}

/// A `/chat` socket as the chat sees it.
struct SioConn {
    id: String,
    user: String,
    socket: Arc<Socket>,
}

impl ChatConn for SioConn {
    fn conn_id(&self) -> &str {
        &self.id
    }
    fn user_id(&self) -> &str {
        &self.user
    }
    fn subscribe(&self, room: &str) -> Result<(), hub::JoinError> {
        self.socket.join(room)
    }
    fn unsubscribe(&self, room: &str) {
        self.socket.leave(room)
    }
}

fn conn_id(socket: &Socket) -> String {
    format!("sio:{}", socket.id())
}

fn conn_of(socket: &Arc<Socket>) -> SioConn {
    SioConn {
        id: conn_id(socket),
        user: socket.user().unwrap_or("anonymous").to_owned(),
        socket: socket.clone(),
    }
}

impl NamespaceHandler for ChatNamespace {
    fn authorize_async<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ConnectError>> {
        self.realtime.authorize_async(req)
    }

    fn on_connect<'a>(&'a self, socket: Arc<Socket>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let conn = conn_of(&socket);
            // Every connection of a user is in its user room: the chat skips a user's
            // own connections by it, and sends them their room list changes.
            let _ = socket.join(&user_room(&conn.user));
            let user = conn.user.clone();
            self.chat.connected(Arc::new(conn)).await;
            socket.emit(
                "connected",
                Payload::json(&ChatConnected {
                    session_id: socket.id().to_owned(),
                    success: true,
                    user_id: user,
                }),
            );
        })
    }

    fn on_event<'a>(&'a self, socket: Arc<Socket>, event: Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let data = match event.args.first() {
                Some(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
                None => Value::Null,
            };
            let conn = conn_of(&socket);
            let refused = super::dispatch::room_to_authorize(&event.name, &data).and_then(|room| {
                self.realtime
                    .rooms
                    .check(
                        crate::transport::access::Via::SocketIo,
                        &room,
                        socket.user(),
                        socket.grants(),
                    )
                    .err()
            });
            let result = match refused {
                Some(e) => Some(Err(super::ChatError::BadRoomName(e.to_string()))),
                None => super::dispatch(&self.chat, &conn, &event.name, &data).await,
            };
            let error = match result {
                Some(Ok(v)) => {
                    if let Some(id) = event.ack {
                        socket.ack(id, &Payload::json(&v));
                    }
                    return;
                }
                Some(Err(e)) => {
                    e.log();
                    e.to_string()
                }
                None => format!("Unknown event: {}", event.name),
            };
            let body = Payload::json(&ChatRefusal {
                error,
                event: event.name.clone(),
                success: false,
            });
            match event.ack {
                Some(id) => socket.ack(id, &body),
                None => {
                    socket.emit("error", body);
                }
            }
        })
    }

    fn on_disconnect<'a>(
        &'a self,
        socket: Arc<Socket>,
        _reason: DisconnectReason,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.chat.disconnected(&conn_id(&socket)).await;
        })
    }
}
