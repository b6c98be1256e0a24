//! The WebSocket transport: the handshake, a WebSocket-born session's loop with its
//! inline heartbeat, and the upgrade of a polling session (probe, then take-over).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{
    CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode,
};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage, Utf8Bytes};

use super::routing::{HttpError, empty, error};
use super::{Body, Engine, Handler, Message, handshake_of};
use crate::deflate::{self, Inflating};
use crate::frame::Frame;
use crate::heartbeat::{Beat, Heartbeat};
use crate::kind::{CloseReason, TransportKind};
use crate::outbox::{Encoding, Wire};
use crate::packet::Inbound;
use crate::session::{Handshake, Session, Sid};
use crate::wire::direct_io;
use crate::wire::with_buf;

impl<H: Handler> Engine<H> {
    pub(super) fn accept_websocket<B>(
        self: &Arc<Self>,
        mut req: Request<B>,
        raw_query: &str,
        sid: Option<Sid>,
    ) -> Response<Body>
    where
        B: Send + 'static,
    {
        let Some(accept) = websocket_accept(req.headers()) else {
            return error(HttpError::BadRequest);
        };
        // An upgrade must name a live polling session that is not upgrading already.
        // A session that is already upgrading or upgraded gets its WebSocket accepted and
        // closed at once, as Node does (clients expect a close, not a failed handshake).
        let mut refuse = false;
        let upgrading = match sid {
            Some(sid) => {
                let Some(session) = self.lookup(sid) else {
                    return error(HttpError::UnknownSid);
                };
                if session.begin_upgrade() {
                    Some(session)
                } else {
                    refuse = true;
                    None
                }
            }
            None => None,
        };
        let handshake = handshake_of(raw_query, &req);
        let encoding = Encoding::negotiate(req.headers(), self.config.ws_compression);
        let compress = encoding.compresses();
        let max = self.config.max_payload;
        let on_upgrade = hyper::upgrade::on(&mut req);
        let this = self.clone();
        let fut = async move {
            // Boxed: one-shot futures must not size the long-lived connection task.
            let io = match Box::pin(on_upgrade).await {
                Ok(io) => io,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    if let Some(s) = upgrading {
                        s.abandon_upgrade();
                    }
                    return;
                }
            };
            // Direct writes need the TCP stream itself (our own server's connections).
            let io = if this.flushers.enabled() {
                match direct_io(io, this.config.ws_max_write_buffer) {
                    Ok((wire, io)) => {
                        let ws = Box::pin(this.serve_websocket(
                            Inflating::new(io, compress, max),
                            (Some(wire), encoding),
                            refuse,
                            upgrading,
                            handshake,
                        ));
                        return ws.await;
                    }
                    Err(io) => io,
                }
            } else {
                io
            };
            let ws = Box::pin(this.serve_websocket(
                Inflating::new(TokioIo::new(io), compress, max),
                (None, encoding),
                refuse,
                upgrading,
                handshake,
            ));
            ws.await
        };
        self.tasks.spawn(fut);
        let mut res = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept);
        if compress {
            res = res.header(header::SEC_WEBSOCKET_EXTENSIONS, deflate::RESPONSE);
        }
        res.body(Full::new(Bytes::new()))
            .unwrap_or_else(|_| empty(StatusCode::INTERNAL_SERVER_ERROR))
    }

    /// The upgraded connection: a new WebSocket session, or the upgrade of a polling one.
    /// `direct`: the connection's wire for direct writes, if it has one, and how frames
    /// are encoded on it.
    async fn serve_websocket<S>(
        self: Arc<Self>,
        io: S,
        direct: (Option<Arc<Wire>>, Encoding),
        refuse: bool,
        upgrading: Option<Arc<Session<H::Data>>>,
        handshake: Handshake,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut ws = Box::pin(WebSocketStream::from_raw_socket(
            io,
            Role::Server,
            Some(self.ws_config()),
        ))
        .await;
        if refuse {
            let _ = Box::pin(ws.close(None)).await;
            return;
        }
        match upgrading {
            Some(session) => Box::pin(self.run_upgrade(session, ws, direct)).await,
            None => {
                let session = self.new_session(handshake, TransportKind::WebSocket);
                // Nothing of the request outlives the handshake (now in the session):
                // the connection's long life is a task of its own, sized for its loop
                // alone (this handshake task, and its allocation, end here).
                if let Some(session) = session {
                    let tasks = self.tasks.clone();
                    tasks.spawn(self.run_websocket(session, ws, direct));
                }
            }
        }
    }

    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(self.config.ws_read_buffer)
            .write_buffer_size(0)
            .max_write_buffer_size(self.config.ws_max_write_buffer)
            .max_message_size(Some(self.config.max_payload))
            .max_frame_size(Some(self.config.max_payload))
    }

    /// A WebSocket-born session: handshake, then the loop with an inline heartbeat.
    ///
    /// Not an `async fn`: its arguments would be stored twice in the future (once as
    /// arguments, once as the locals they are moved into; rust-lang/rust#62958). Captured
    /// by an `async move` block they are stored once, which keeps this long-lived task
    /// about 400 bytes smaller per connection.
    #[allow(clippy::manual_async_fn)] // deliberate: see the doc comment
    fn run_websocket<S>(
        self: Arc<Self>,
        session: Arc<Session<H::Data>>,
        mut ws: WebSocketStream<S>,
        (wire, encoding): (Option<Arc<Wire>>, Encoding),
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let open = self.handshake_packet(session.sid(), false);
            if let Frame::Text(t) = open
                && Box::pin(ws.send(WsMessage::Text(t))).await.is_err()
            {
                session.close(CloseReason::TransportError);
                self.finish(&session);
                return;
            }
            self.handler.on_open(&session);
            self.attach(&session, wire, encoding);
            let mut hb = Heartbeat::new(
                self.config.ping_interval,
                self.config.ping_timeout,
                Instant::now(),
            );
            self.ws_loop(&session, &mut ws, Some(&mut hb)).await;
            self.finish(&session);
        }
    }

    /// A WebSocket joining a polling session: probe, then take over the transport.
    async fn run_upgrade<S>(
        self: Arc<Self>,
        session: Arc<Session<H::Data>>,
        mut ws: WebSocketStream<S>,
        (wire, encoding): (Option<Arc<Wire>>, Encoding),
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let deadline = tokio::time::Instant::now() + self.config.upgrade_timeout;
        let upgraded = tokio::time::timeout_at(deadline, async {
            // Expect `2probe`, answer `3probe`, then expect `5`.
            let mut probed = false;
            while let Some(Ok(msg)) = ws.next().await {
                let WsMessage::Text(text) = msg else { continue };
                match (probed, Inbound::decode(&text)) {
                    (false, Ok(Inbound::Ping { probe: true })) => {
                        if ws
                            .send(WsMessage::Text(Utf8Bytes::from_static("3probe")))
                            .await
                            .is_err()
                        {
                            return false;
                        }
                        probed = true;
                        // Releases a pending poll with a noop so the client can finish.
                        session.upgrade_probed();
                    }
                    (true, Ok(Inbound::Upgrade)) => return true,
                    _ => return false,
                }
            }
            false
        })
        .await
        .unwrap_or(false);

        // Whatever waited for the next poll now goes out on the WebSocket.
        if !upgraded || !session.complete_upgrade() {
            session.abandon_upgrade();
            let _ = ws.close(None).await;
            return;
        }
        self.attach(&session, wire, encoding);
        // The polling lifecycle task keeps the heartbeat and finishes the session.
        self.ws_loop(&session, &mut ws, None).await;
    }

    /// Reads client frames and writes the outbox until the session or socket closes.
    async fn ws_loop<S>(
        &self,
        session: &Arc<Session<H::Data>>,
        ws: &mut WebSocketStream<S>,
        mut heartbeat: Option<&mut Heartbeat>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        // Attached before the loop starts, detached when it ends (crate::wire).
        let wire = session.out.wire();
        // A message over `max_payload` (inflated, if compressed) closes with 1009.
        let mut too_big = false;
        loop {
            if let Some(reason) = session.closed_reason() {
                // The outbox may have closed itself (a failed direct write): the lifecycle
                // owner of an upgraded polling-born session waits on `control`, not `wake`.
                session.control.notify_one();
                // Flush what is queued (an error event, a disconnect packet), then close;
                // bounded, so a client that stopped reading cannot keep its task. A slow
                // client's socket is full already: it gets what fits at once, no more.
                let goodbye = async {
                    let _ = match &wire {
                        Some(w) => session.out.flush_direct(w, true).await.map_err(drop),
                        None => self.flush_outbox(session, ws).await,
                    };
                    let code = if too_big {
                        CloseCode::Size
                    } else if reason == CloseReason::ServerShutdown {
                        CloseCode::Away
                    } else {
                        CloseCode::Normal
                    };
                    let _ = ws
                        .close(Some(CloseFrame {
                            code,
                            reason: Utf8Bytes::from_static(""),
                        }))
                        .await;
                };
                let grace = if reason == CloseReason::SlowClient {
                    Duration::ZERO
                } else {
                    self.config.ping_timeout
                };
                let _ = tokio::time::timeout(grace, Box::pin(goodbye)).await;
                break;
            }
            let deadline = heartbeat.as_ref().map_or(far, |h| h.deadline());
            // A direct session whose socket is full waits for it here, while still
            // reading, pinging and noticing a close.
            let blocked = wire.as_ref().is_some_and(|w| w.lock().is_blocked());
            tokio::select! {
                biased;
                _ = session.out.wake.notified() => {
                    // Boxed (like every one-off future here) so an idle connection's task
                    // is only as large as its waiting state.
                    match &wire {
                        // Never waits: a full socket is drained by the branch below.
                        Some(_) if blocked => {}
                        Some(_) => {
                            with_buf(|buf| session.out.write_direct(buf, false));
                        }
                        // The task writes itself: a socket that takes nothing for a
                        // ping timeout belongs to a client that stopped reading.
                        None => match tokio::time::timeout(
                            self.config.ping_timeout,
                            Box::pin(self.flush_outbox(session, ws)),
                        )
                        .await
                        {
                            Ok(Ok(())) => {}
                            Ok(Err(())) => session.close(CloseReason::TransportError),
                            Err(_) => session.close(CloseReason::SlowClient),
                        },
                    }
                }
                drained = std::future::poll_fn(|cx| match &wire {
                    Some(w) => w.poll_drain(cx),
                    None => std::task::Poll::Pending,
                }), if blocked => match drained {
                    Ok(()) => {
                        with_buf(|buf| session.out.write_direct(buf, false));
                    }
                    Err(_) => session.close(CloseReason::TransportError),
                },
                frame = ws.next() => {
                    match frame {
                        Some(Ok(WsMessage::Text(text))) => match Inbound::decode(&text) {
                            Ok(Inbound::Pong { probe: false }) => match heartbeat.as_deref_mut() {
                                Some(hb) => hb.on_pong(Instant::now()),
                                None => session.pong(),
                            },
                            Ok(p) => Box::pin(self.inbound(session, p)).await,
                            Err(_) => session.close(CloseReason::InvalidPacket),
                        },
                        Some(Ok(WsMessage::Binary(data))) => {
                            self.stats.messages_in[1].fetch_add(1, Ordering::Relaxed);
                            Box::pin(self.handler.on_message(session, Message::Binary(data))).await
                        }
                        Some(Ok(WsMessage::Close(_))) | None => session.close(CloseReason::TransportClose),
                        Some(Ok(_)) => {}
                        Some(Err(WsError::Capacity(_))) => {
                            too_big = true;
                            session.close(CloseReason::TransportError);
                        }
                        Some(Err(_)) => session.close(CloseReason::TransportError),
                    }
                    // The answer to what the client sent goes out now, not behind the
                    // sessions already on the flush queue.
                    if wire.is_some() {
                        with_buf(|buf| session.out.write_direct(buf, false));
                    }
                }
                _ = tokio::time::sleep_until(deadline), if heartbeat.is_some() => {
                    if let Some(hb) = heartbeat.as_deref_mut() {
                        match hb.on_deadline(Instant::now()) {
                            Beat::SendPing => { session.push(Frame::ping(), false); }
                            Beat::TimedOut => session.close(CloseReason::PingTimeout),
                        }
                    }
                }
            }
        }
        session.out.detach_direct();
    }

    async fn flush_outbox<S>(
        &self,
        session: &Session<H::Data>,
        ws: &mut WebSocketStream<S>,
    ) -> Result<(), ()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let frames = session.out.take();
        if frames.is_empty() {
            return Ok(());
        }
        for msg in frames.iter().filter_map(Frame::to_ws_message) {
            ws.feed(msg).await.map_err(|_| ())?;
        }
        ws.flush().await.map_err(|_| ())
    }
}

/// The `Sec-WebSocket-Accept` value for a valid WebSocket upgrade request (`Upgrade:
/// websocket`, version 13, a key), or `None` if the request is not one.
pub fn websocket_accept(headers: &HeaderMap) -> Option<String> {
    let is_upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
    (is_upgrade && version_ok).then(|| derive_accept_key(key.as_bytes()))
}
