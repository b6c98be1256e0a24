//! The long-polling transport: the opening GET, the heartbeat task that owns a
//! polling-born session's lifecycle (also after an upgrade), and each GET and POST.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use super::routing::{HttpError, empty, error, text_response};
use super::{Body, Engine, Handler, handshake_of};
use crate::frame::Frame;
use crate::heartbeat::{Beat, Heartbeat};
use crate::kind::{CloseReason, TransportKind};
use crate::packet::decode_payload;
use crate::session::{PollAnswer, Session, Sid};

/// How long a poll waits for a pending upgrade to settle.
const UPGRADE_SETTLE: Duration = Duration::from_millis(100);

impl<H: Handler> Engine<H> {
    pub(super) fn open_polling<B>(
        self: &Arc<Self>,
        raw_query: &str,
        req: &Request<B>,
    ) -> Response<Body> {
        let Some(session) = self.new_session(handshake_of(raw_query, req), TransportKind::Polling)
        else {
            return error(HttpError::BadRequest);
        };
        let mut body = String::new();
        self.handshake_packet(session.sid(), true)
            .encode_polling(&mut body);
        self.handler.on_open(&session);
        // The handshake answers the opening GET at once; anything the handler queued
        // waits for the next poll, as in Node.
        let this = self.clone();
        let s = session.clone();
        let opened = Instant::now();
        self.tasks
            .spawn(async move { this.polling_lifecycle(s, opened).await });
        text_response(StatusCode::OK, body)
    }

    /// Heartbeat and close of a polling-born session (also after it upgrades).
    async fn polling_lifecycle(self: Arc<Self>, session: Arc<Session<H::Data>>, opened: Instant) {
        let mut hb = Heartbeat::new(self.config.ping_interval, self.config.ping_timeout, opened);
        loop {
            if session.is_closed() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(hb.deadline()) => {
                    match hb.on_deadline(Instant::now()) {
                        Beat::SendPing => session.ping_sent(hb.deadline()),
                        Beat::TimedOut => session.close(CloseReason::PingTimeout),
                    }
                }
                _ = session.control.notified() => {
                    if session.take_pong() {
                        hb.on_pong(Instant::now());
                    }
                }
            }
        }
        // A polling client learns of a server-side close (and reads what was queued before
        // it, e.g. a DISCONNECT) from its next poll: keep the session until then, briefly.
        let linger = Instant::now() + self.config.ping_timeout.min(Duration::from_secs(2));
        loop {
            let drained = !session.owes_client();
            if drained
                || tokio::time::timeout_at(linger, session.control.notified())
                    .await
                    .is_err()
            {
                break;
            }
        }
        self.finish(&session);
    }

    pub(super) async fn poll(self: &Arc<Self>, sid: Sid) -> Response<Body> {
        let Some(session) = self.lookup(sid) else {
            return error(HttpError::UnknownSid);
        };
        session.check_ping_timeout(Instant::now());
        // A new poll while a WebSocket is upgrading races the client's `2probe`/`5` on that
        // WebSocket: give the upgrade a moment (at most 100 ms) to settle. Real clients
        // pause polling during an upgrade and rarely wait here.
        session.upgrade_settled(UPGRADE_SETTLE).await;
        let _poll = match session.begin_poll() {
            Ok(guard) => guard,
            Err(refused) => return error(refused.into()),
        };
        let mut body = String::new();
        match session.poll_answer().await {
            PollAnswer::Frames(frames) => {
                for (i, f) in frames.iter().enumerate() {
                    if i > 0 {
                        body.push(crate::packet::SEPARATOR);
                    }
                    f.encode_polling(&mut body);
                }
            }
            PollAnswer::Closed { server_side: true } => Frame::Close.encode_polling(&mut body),
            PollAnswer::Closed { server_side: false } | PollAnswer::Noop => {
                Frame::noop().encode_polling(&mut body)
            }
        }
        text_response(StatusCode::OK, body)
    }

    pub(super) async fn post<B>(self: &Arc<Self>, sid: Sid, body: B) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(session) = self.lookup(sid) else {
            return error(HttpError::UnknownSid);
        };
        session.check_ping_timeout(Instant::now());
        if let Err(refused) = session.begin_post() {
            return error(refused.into());
        }
        let result = self.post_inner(&session, body).await;
        session.end_post();
        match result {
            Ok(()) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/html")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap_or_else(|_| empty(StatusCode::OK)),
            Err(e) => {
                session.close(CloseReason::InvalidPacket);
                error(e)
            }
        }
    }

    async fn post_inner<B>(&self, session: &Arc<Session<H::Data>>, body: B) -> Result<(), HttpError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let bytes = Limited::new(body, self.config.max_payload)
            .collect()
            .await
            .map_err(|_| HttpError::PayloadTooLarge)?
            .to_bytes();
        let text = std::str::from_utf8(&bytes).map_err(|_| HttpError::BadRequest)?;
        let packets = decode_payload(text).map_err(|_| HttpError::BadRequest)?;
        for p in packets {
            if session.is_closed() {
                break;
            }
            self.inbound(session, p).await;
        }
        Ok(())
    }
}
