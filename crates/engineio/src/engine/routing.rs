//! The HTTP side of an engine's path: routing by query (`EIO`, `transport`, `sid`), CORS,
//! and the error answers as Node's engine.io gives them.
//!
//! Owns: which request goes to which transport. Never: session state (the transports
//! and the session do that).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;

use super::{Body, Engine, Handler};
use crate::config::Cors;
use crate::session::{Refused, Sid};

impl<H: Handler> Engine<H> {
    /// Serves one HTTP request addressed to this engine's path.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut res = self.route(req).await;
        self.apply_cors(origin.as_ref(), res.headers_mut());
        res
    }

    async fn route<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        if req.method() == Method::OPTIONS {
            return empty(StatusCode::NO_CONTENT);
        }
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        let q = parse_query(&raw_query);
        if q.eio.as_deref() != Some("4") {
            return error(HttpError::UnsupportedVersion);
        }
        let sid = match q.sid.as_deref() {
            Some(s) => match Sid::parse(s) {
                Some(sid) => Some(sid),
                None => return error(HttpError::UnknownSid),
            },
            None => None,
        };
        match q.transport.as_deref() {
            Some("polling") if self.config.allow_polling => match (req.method(), sid) {
                (&Method::GET, None) => self.open_polling(&raw_query, &req),
                (&Method::GET, Some(sid)) => self.poll(sid).await,
                (&Method::POST, Some(sid)) => self.post(sid, req.into_body()).await,
                (_, None) => error(HttpError::BadHandshakeMethod),
                _ => error(HttpError::BadRequest),
            },
            Some("websocket") if self.config.allow_websocket => {
                if req.method() != Method::GET {
                    return error(HttpError::BadRequest);
                }
                self.accept_websocket(req, &raw_query, sid)
            }
            _ => error(HttpError::UnknownTransport),
        }
    }

    fn apply_cors(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin else { return };
        let allowed = match &self.config.cors {
            Cors::Off => return,
            Cors::AnyOrigin => HeaderValue::from_static("*"),
            Cors::Origins {
                origins,
                credentials,
            } => {
                if !origins.iter().any(|o| o.as_bytes() == origin.as_bytes()) {
                    return;
                }
                if *credentials {
                    headers.insert(
                        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                        HeaderValue::from_static("true"),
                    );
                }
                headers.insert(header::VARY, HeaderValue::from_static("Origin"));
                origin.clone()
            }
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, authorization"),
        );
    }
}

/// Engine.IO's error answers (code and message as Node's engine.io sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HttpError {
    UnknownTransport,
    UnknownSid,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedVersion,
    PayloadTooLarge,
}

impl HttpError {
    fn code_and_message(self) -> (u8, &'static str) {
        match self {
            HttpError::UnknownTransport => (0, "Transport unknown"),
            HttpError::UnknownSid => (1, "Session ID unknown"),
            HttpError::BadHandshakeMethod => (2, "Bad handshake method"),
            HttpError::BadRequest | HttpError::PayloadTooLarge => (3, "Bad request"),
            HttpError::UnsupportedVersion => (5, "Unsupported protocol version"),
        }
    }
}

impl From<Refused> for HttpError {
    fn from(r: Refused) -> HttpError {
        match r {
            Refused::Gone => HttpError::UnknownSid,
            Refused::WrongTransport | Refused::Concurrent => HttpError::BadRequest,
        }
    }
}

/// The query parameters routing looks at (first occurrence of each, percent-decoded).
#[derive(Debug, Default)]
struct Query<'a> {
    eio: Option<Cow<'a, str>>,
    transport: Option<Cow<'a, str>>,
    sid: Option<Cow<'a, str>>,
}

fn parse_query(q: &str) -> Query<'_> {
    let mut out = Query::default();
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let slot = match &*k {
            "EIO" => &mut out.eio,
            "transport" => &mut out.transport,
            "sid" => &mut out.sid,
            _ => continue,
        };
        slot.get_or_insert(v);
    }
    out
}

pub(super) fn empty(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

pub(super) fn text_response(status: StatusCode, body: String) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    res
}

pub(super) fn error(e: HttpError) -> Response<Body> {
    let (code, message) = e.code_and_message();
    let status = if e == HttpError::PayloadTooLarge {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut res = Response::new(Full::new(Bytes::from(format!(
        "{{\"code\":{code},\"message\":\"{message}\"}}"
    ))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_takes_the_first_of_each_parameter() {
        let q = parse_query("EIO=4&transport=polling&sid=abc&EIO=3&transport=websocket");
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some("polling"));
        assert_eq!(q.sid.as_deref(), Some("abc"));
        assert!(parse_query("").eio.is_none());
    }
}
