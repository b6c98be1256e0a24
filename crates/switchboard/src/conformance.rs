//! `switchboard conformance`: exactly the server the official Engine.IO and Socket.IO
//! protocol suites expect, plus the `/e2e` namespace the project's own Node tests use
//! (rooms, server-to-client acks, recovery). See `e2e/README.md` for the contract.

use std::sync::Arc;
use std::time::Duration;

use engineio::{CloseReason, Frame, Handshake, Message, Session};
use futures_util::future::BoxFuture;
use hub::Payload;
use socketio::{Event, NamespaceConfig, NamespaceHandler, Socket, SocketIo};

/// The plain Engine.IO echo server at `/engine.io/`.
#[derive(Debug)]
pub struct Echo;

impl engineio::Handler for Echo {
    type Data = ();

    fn new_data(&self, _: &Handshake) {}

    fn on_open(&self, _: &Arc<Session<()>>) {}

    fn on_message<'a>(
        &'a self,
        session: &'a Arc<Session<()>>,
        msg: Message<'a>,
    ) -> BoxFuture<'a, ()> {
        let frame = match msg {
            Message::Text(t) => Frame::message(t),
            Message::Binary(b) => Frame::Binary(b),
        };
        session.push(frame, false);
        Box::pin(async {})
    }

    fn on_close(&self, _: &Arc<Session<()>>, _: CloseReason) {}
}

/// `/` and `/custom`: echo the handshake auth on connect; `/` echoes messages and acks.
struct Suite {
    echo_messages: bool,
}

impl NamespaceHandler for Suite {
    fn on_connect<'a>(&'a self, socket: Arc<Socket>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // The suite's client (ws 8.5) loses a second frame that arrives in the same
            // read as the CONNECT answer, so `auth` goes out in a write of its own, as
            // Node's server does (it sends the next packet only after the previous
            // write completed).
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            socket.emit("auth", Payload::raw_args([socket.auth()]));
        })
    }

    fn on_event<'a>(&'a self, socket: Arc<Socket>, event: Event) -> BoxFuture<'a, ()> {
        if self.echo_messages {
            match (event.name.as_str(), event.ack) {
                ("message", _) => {
                    socket.emit("message-back", event.payload());
                }
                ("message-with-ack", Some(id)) => socket.ack(id, &event.payload()),
                _ => {}
            }
        }
        Box::pin(async {})
    }
}

/// `/e2e`: rooms, broadcasts, server-to-client acks and recovery for the Node tests.
struct E2e;

fn str_arg(event: &Event, i: usize) -> Option<String> {
    event
        .args
        .get(i)
        .and_then(|a| serde_json::from_str::<String>(a.get()).ok())
}

fn rest(event: &Event, from: usize) -> Payload {
    let mut p = Payload::raw_args(event.args.iter().skip(from).map(|a| a.get()));
    p.attachments = event.attachments.clone();
    p
}

impl NamespaceHandler for E2e {
    fn on_event<'a>(&'a self, socket: Arc<Socket>, event: Event) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let ack = |p: Payload| {
                if let Some(id) = event.ack {
                    socket.ack(id, &p);
                }
            };
            match event.name.as_str() {
                "join" | "leave" => {
                    let Some(room) = str_arg(&event, 0) else {
                        return;
                    };
                    if event.name == "join" {
                        let _ = socket.join(&room);
                    } else {
                        socket.leave(&room);
                    }
                    ack(Payload::json(&room));
                }
                "to-room" | "to-room-except-me" => {
                    let (Some(room), Some(name)) = (str_arg(&event, 0), str_arg(&event, 1)) else {
                        return;
                    };
                    if event.name == "to-room" {
                        socket
                            .namespace()
                            .emit_to(&[&room], &[], &name, rest(&event, 2), false);
                    } else {
                        socket.broadcast_to(&[&room], &name, rest(&event, 2));
                    }
                }
                "to-all" => {
                    let Some(name) = str_arg(&event, 0) else {
                        return;
                    };
                    socket
                        .namespace()
                        .emit_to(&[], &[], &name, rest(&event, 1), false);
                }
                "ask" => {
                    let Some(name) = str_arg(&event, 0) else {
                        return;
                    };
                    let mut args = event
                        .args
                        .get(1)
                        .and_then(|a| {
                            serde_json::from_str::<Vec<Box<serde_json::value::RawValue>>>(a.get())
                                .ok()
                        })
                        .map(|v| Payload::raw_args(v.iter().map(|a| a.get())))
                        .unwrap_or_default();
                    args.attachments = event.attachments.clone();
                    let answer = match socket
                        .emit_with_ack(&name, args, Duration::from_secs(2))
                        .await
                    {
                        Ok(resp) => {
                            let mut p = Payload {
                                args: format!("[{}]", resp.args),
                                arg_count: 1,
                                attachments: resp.attachments,
                            };
                            if resp.arg_count == 0 {
                                p.args = "[]".into();
                            }
                            p
                        }
                        Err(_) => Payload::json(&serde_json::json!({"error": "timeout"})),
                    };
                    ack(answer);
                }
                "rooms" => ack(Payload::json(&socket.rooms())),
                "disconnect-me" => socket.disconnect(true),
                _ => {}
            }
        })
    }
}

/// Adds `/`, `/custom` (no recovery) and `/e2e` (recovery, 2 minutes).
pub fn namespaces(sio: &mut SocketIo) {
    let plain = |name: &str| NamespaceConfig {
        name: name.into(),
        recovery: None,
        fabric: false,
    };
    sio.add_namespace(
        plain("/"),
        Arc::new(Suite {
            echo_messages: true,
        }),
    );
    sio.add_namespace(
        plain("/custom"),
        Arc::new(Suite {
            echo_messages: false,
        }),
    );
    sio.add_namespace(
        NamespaceConfig {
            name: "/e2e".into(),
            recovery: Some(Duration::from_secs(120)),
            fabric: false,
        },
        Arc::new(E2e),
    );
}
