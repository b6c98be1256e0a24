//! The Node adapter's request/response protocol, answered for our Socket.IO namespaces.
//!
//! A Node node (`@socket.io/redis-adapter`) sends a request on
//! `<prefix>-request#<nsp>#` and waits for one answer per subscriber of that channel
//! (`PUBSUB NUMSUB`), so every Switchboard node subscribes to it for each namespace it
//! serves and answers every request type: SOCKETS, ALL_ROOMS, REMOTE_JOIN,
//! REMOTE_LEAVE, REMOTE_DISCONNECT (by sid, or by rooms/except without an answer, as
//! Node does), REMOTE_FETCH, SERVER_SIDE_EMIT (acks through [`ServerSideHandler`]) and
//! BROADCAST with acks (BROADCAST_CLIENT_COUNT, then one BROADCAST_ACK per client).
//! Answers go to the shared `<prefix>-response#<nsp>#` channel, which every Node node
//! reads whatever its `publishOnSpecificResponseChannel`.
//!
//! Requests are JSON when the first byte is `{`, msgpack otherwise. Anything unreadable,
//! oversized, too deep or of an unknown type is logged, counted
//! (`BusMetrics::dropped_request`) and dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use rmpv::Value;
use serde_json::{Value as Json, json};
use socketio::{Namespace, Selector, Socket};

use super::codec;
use super::link::BusMetrics;

/// The adapter's request types (its `RequestType` enum).
pub(crate) mod kind {
    pub(crate) const SOCKETS: u64 = 0;
    pub(crate) const ALL_ROOMS: u64 = 1;
    pub(crate) const REMOTE_JOIN: u64 = 2;
    pub(crate) const REMOTE_LEAVE: u64 = 3;
    pub(crate) const REMOTE_DISCONNECT: u64 = 4;
    pub(crate) const REMOTE_FETCH: u64 = 5;
    pub(crate) const SERVER_SIDE_EMIT: u64 = 6;
    pub(crate) const BROADCAST: u64 = 7;
    pub(crate) const BROADCAST_CLIENT_COUNT: u64 = 8;
    pub(crate) const BROADCAST_ACK: u64 = 9;
}

/// How long a client may take to ack a broadcast another node asked for, when the
/// request names no timeout (Node's `requestsTimeout` default).
const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest ack wait a request may ask for.
const MAX_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// A server-side event another node emitted (`io.serverSideEmit(event, ...args)`).
#[derive(Debug, Clone)]
pub struct ServerSideEvent {
    /// The namespace it was emitted on.
    pub nsp: String,
    /// The event name.
    pub event: String,
    /// Its arguments.
    pub args: Vec<Json>,
    /// Whether the emitter waits for an answer from every node.
    pub wants_ack: bool,
}

/// The application's side of server-side events. The answer (`Some`) is sent back when
/// the emitter waits for acks; `None` leaves it waiting (it times out), as a Node
/// server without a listener does.
pub type ServerSideHandler = Arc<dyn Fn(&ServerSideEvent) -> Option<Json> + Send + Sync>;

/// The default handler: logs the event and acks with `{"node": <this node's id>}`, so
/// a Node emitter waiting for acks learns which Switchboard nodes saw it.
pub fn log_and_ack(node_id: String) -> ServerSideHandler {
    Arc::new(move |e: &ServerSideEvent| {
        tracing::info!(nsp = %e.nsp, event = %e.event, args = e.args.len(), "cluster: server-side event");
        Some(json!({ "node": node_id }))
    })
}

/// Answers the Node adapter's requests for this node's namespaces.
pub(crate) struct Requests {
    node_id: String,
    prefix: String,
    namespaces: HashMap<String, Arc<Namespace>>,
    con: ConnectionManager,
    metrics: Arc<BusMetrics>,
    max_message: usize,
    server_side: ServerSideHandler,
    /// This node's own requests waiting for answers (`ops`).
    waiting: Arc<super::ops::Waiting>,
}

/// A request, decoded: JSON fields, and the binary values of a msgpack request as
/// attachments (referenced by placeholders, as in a Socket.IO payload).
struct Request {
    body: Json,
    attachments: Vec<Bytes>,
}

impl Requests {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        node_id: String,
        prefix: String,
        namespaces: Vec<Arc<Namespace>>,
        con: ConnectionManager,
        metrics: Arc<BusMetrics>,
        max_message: usize,
        server_side: ServerSideHandler,
        waiting: Arc<super::ops::Waiting>,
    ) -> Requests {
        Requests {
            node_id,
            prefix,
            namespaces: namespaces
                .into_iter()
                .map(|n| (n.name().to_owned(), n))
                .collect(),
            con,
            metrics,
            max_message,
            server_side,
            waiting,
        }
    }

    /// The channels to subscribe to: each namespace's request and response channels.
    pub(crate) fn channels(&self) -> Vec<String> {
        let mut out = Vec::new();
        for nsp in self.namespaces.keys() {
            out.push(self.request_channel(nsp));
            out.push(self.response_channel(nsp));
            out.push(format!("{}{}#", self.response_channel(nsp), self.node_id));
        }
        out.sort();
        out
    }

    fn request_channel(&self, nsp: &str) -> String {
        format!("{}-request#{nsp}#", self.prefix)
    }

    fn response_channel(&self, nsp: &str) -> String {
        format!("{}-response#{nsp}#", self.prefix)
    }

    fn drop_request(&self, why: &str) {
        self.metrics.dropped_request.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(reason = why, "cluster: dropped a request");
    }

    /// One message on a request or response channel.
    pub(crate) fn on_message(&self, channel: &str, bytes: &[u8]) {
        let request_prefix = format!("{}-request#", self.prefix);
        let Some(nsp) = channel
            .strip_prefix(&request_prefix)
            .and_then(|rest| rest.strip_suffix('#'))
        else {
            return self.on_response(bytes);
        };
        let Some(namespace) = self.namespaces.get(nsp) else {
            return;
        };
        if bytes.len() > self.max_message {
            return self.drop_request("oversized");
        }
        let request = match decode(bytes) {
            Ok(r) => r,
            Err(why) => return self.drop_request(why),
        };
        if let Err(why) = self.handle(namespace, request) {
            self.drop_request(why);
        }
    }

    /// An answer on a response channel: handed to this node's waiting request, if it
    /// is one of ours (answers to other nodes' requests are ignored, uncounted).
    fn on_response(&self, bytes: &[u8]) {
        if bytes.len() > self.max_message {
            return self.drop_request("oversized");
        }
        let Ok(answer) = decode(bytes) else {
            return self.drop_request("malformed answer");
        };
        let Some(id) = answer.body.get("requestId").and_then(Json::as_str) else {
            return;
        };
        let id = id.to_owned();
        self.waiting.deliver(&id, answer.body);
    }

    fn handle(&self, nsp: &Arc<Namespace>, req: Request) -> Result<(), &'static str> {
        let body = &req.body;
        let kind = body
            .get("type")
            .and_then(Json::as_u64)
            .ok_or("no request type")?;
        let request_id = body.get("requestId").cloned().unwrap_or(Json::Null);
        let uid = body.get("uid").and_then(Json::as_str).unwrap_or_default();
        if uid == self.node_id {
            return Ok(());
        }
        match kind {
            kind::SOCKETS => {
                let sel = Selector {
                    rooms: strings(body.get("rooms")),
                    except: Vec::new(),
                };
                let ids: Vec<String> = nsp.select(&sel).iter().map(|s| s.id().to_owned()).collect();
                self.respond(nsp, json!({"requestId": request_id, "sockets": ids}));
            }
            kind::ALL_ROOMS => {
                self.respond(
                    nsp,
                    json!({"requestId": request_id, "rooms": nsp.all_rooms()}),
                );
            }
            kind::REMOTE_JOIN | kind::REMOTE_LEAVE => {
                let join = kind == kind::REMOTE_JOIN;
                if let Some(opts) = body.get("opts").filter(|o| o.is_object()) {
                    let rooms = strings(body.get("rooms"));
                    let sel = selector(opts);
                    if join {
                        nsp.sockets_join(&sel, &rooms);
                    } else {
                        nsp.sockets_leave(&sel, &rooms);
                    }
                    return Ok(());
                }
                let sid = body.get("sid").and_then(Json::as_str).ok_or("no sid")?;
                let room = body.get("room").and_then(Json::as_str).ok_or("no room")?;
                let Some(socket) = nsp.socket(sid) else {
                    return Ok(());
                };
                if join {
                    let _ = socket.join(room);
                } else {
                    socket.leave(room);
                }
                self.respond(nsp, json!({"requestId": request_id}));
            }
            kind::REMOTE_DISCONNECT => {
                let close = body.get("close").and_then(Json::as_bool).unwrap_or(false);
                if let Some(opts) = body.get("opts").filter(|o| o.is_object()) {
                    nsp.disconnect_sockets(&selector(opts), close);
                    return Ok(());
                }
                let sid = body.get("sid").and_then(Json::as_str).ok_or("no sid")?;
                let Some(socket) = nsp.socket(sid) else {
                    return Ok(());
                };
                socket.disconnect(close);
                self.respond(nsp, json!({"requestId": request_id}));
            }
            kind::REMOTE_FETCH => {
                let sel = body.get("opts").map(selector).unwrap_or_default();
                let sockets: Vec<Json> = nsp.select(&sel).iter().map(describe).collect();
                self.respond(nsp, json!({"requestId": request_id, "sockets": sockets}));
            }
            kind::SERVER_SIDE_EMIT => {
                let data = body.get("data").and_then(Json::as_array).ok_or("no data")?;
                let event = data.first().and_then(Json::as_str).ok_or("no event name")?;
                let wants_ack = !request_id.is_null();
                let e = ServerSideEvent {
                    nsp: nsp.name().to_owned(),
                    event: event.to_owned(),
                    args: data[1..].to_vec(),
                    wants_ack,
                };
                let answer = (self.server_side)(&e);
                if let (true, Some(answer)) = (wants_ack, answer) {
                    self.respond(
                        nsp,
                        json!({"type": kind::SERVER_SIDE_EMIT, "requestId": request_id, "data": answer}),
                    );
                }
            }
            kind::BROADCAST => self.broadcast(nsp, req)?,
            kind::BROADCAST_CLIENT_COUNT | kind::BROADCAST_ACK => {}
            _ => return Err("unknown request type"),
        }
        Ok(())
    }

    /// A broadcast with acks: count the chosen clients, then forward each ack.
    fn broadcast(&self, nsp: &Arc<Namespace>, req: Request) -> Result<(), &'static str> {
        let body = req.body;
        let request_id = body.get("requestId").cloned().ok_or("no requestId")?;
        let packet = body.get("packet").ok_or("no packet")?;
        let data = packet
            .get("data")
            .and_then(Json::as_array)
            .ok_or("no packet data")?;
        let event = data
            .first()
            .and_then(Json::as_str)
            .ok_or("no event name")?
            .to_owned();
        let opts = body.get("opts").cloned().unwrap_or(Json::Null);
        let sel = selector(&opts);
        let timeout = opts
            .get("flags")
            .and_then(|f| f.get("timeout"))
            .and_then(Json::as_u64)
            .map_or(DEFAULT_ACK_TIMEOUT, Duration::from_millis)
            .min(MAX_ACK_TIMEOUT);
        let args: Vec<String> = data[1..].iter().map(Json::to_string).collect();
        let mut payload = hub::Payload::raw_args(args.iter().map(String::as_str));
        payload.attachments = req.attachments;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let count_tx = tx.clone();
        let id_for_count = request_id.clone();
        let nsp = nsp.clone();
        let channel = self.response_channel(nsp.name());
        let mut con = self.con.clone();
        tokio::spawn(async move {
            let emit = nsp.emit_with_acks(
                &sel,
                &event,
                payload,
                timeout,
                |n| {
                    let msg = json!({"type": kind::BROADCAST_CLIENT_COUNT, "requestId": id_for_count, "clientCount": n});
                    let _ = count_tx.send(msg.to_string().into_bytes());
                },
                |answer| {
                    let Ok(answer) = answer else { return };
                    let first = codec::args_to_msgpack(&answer)
                        .into_iter()
                        .next()
                        .unwrap_or(Value::Nil);
                    let msg = Value::Map(vec![
                        (Value::from("type"), Value::from(kind::BROADCAST_ACK)),
                        (
                            Value::from("requestId"),
                            codec::json_to_msgpack(&request_id, &[]),
                        ),
                        (Value::from("packet"), first),
                    ]);
                    let mut buf = Vec::new();
                    if rmpv::encode::write_value(&mut buf, &msg).is_ok() {
                        let _ = tx.send(buf);
                    }
                },
            );
            let publish = async {
                while let Some(msg) = rx.recv().await {
                    let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(msg)
                        .query_async(&mut con)
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "cluster: could not answer a broadcast");
                    }
                }
            };
            // The senders live in the emit future's callbacks: once every ack is in
            // (or timed out), the publisher drains and ends.
            tokio::join!(emit, publish);
        });
        Ok(())
    }

    /// Publishes a JSON answer on the namespace's response channel.
    fn respond(&self, nsp: &Namespace, answer: Json) {
        let channel = self.response_channel(nsp.name());
        let mut con = self.con.clone();
        tokio::spawn(async move {
            let r: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(answer.to_string())
                .query_async(&mut con)
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster: could not answer a request");
            }
        });
    }
}

/// A request's bytes: JSON when the first byte is `{` (as Node tells them apart),
/// msgpack otherwise.
fn decode(bytes: &[u8]) -> Result<Request, &'static str> {
    if bytes.first() == Some(&b'{') {
        let body: Json = serde_json::from_slice(bytes).map_err(|_| "malformed JSON")?;
        return Ok(Request {
            body,
            attachments: Vec::new(),
        });
    }
    let mut rd = bytes;
    let value = rmpv::decode::read_value_with_max_depth(&mut rd, codec::MAX_DEPTH)
        .map_err(|_| "malformed msgpack")?;
    if !rd.is_empty() {
        return Err("trailing bytes");
    }
    let mut attachments = Vec::new();
    let body = codec::msgpack_to_json(&value, &mut attachments);
    Ok(Request { body, attachments })
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| match x {
                    Json::String(s) => Some(s.clone()),
                    Json::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `{rooms, except}` of a request's `opts`.
fn selector(opts: &Json) -> Selector {
    Selector {
        rooms: strings(opts.get("rooms")),
        except: strings(opts.get("except")),
    }
}

/// A socket as Node's `fetchSockets()` describes it: id, handshake, rooms (its own id
/// first, as Node lists it), data (`{user}`). The handshake has what Engine.IO kept:
/// query, auth, address, issue time; no headers and no `time` string.
pub(crate) fn describe(socket: &Arc<Socket>) -> Json {
    let hs = socket.conn().handshake();
    let query: serde_json::Map<String, Json> = form_urlencoded::parse(hs.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), Json::String(v.into_owned())))
        .collect();
    let issued = socket
        .issued()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let auth: Json = serde_json::from_str(socket.auth()).unwrap_or_else(|_| json!({}));
    let mut rooms = vec![socket.id().to_owned()];
    rooms.extend(socket.rooms());
    json!({
        "id": socket.id(),
        "handshake": {
            "headers": {},
            "address": hs.remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            "xdomain": false,
            "secure": false,
            "issued": issued,
            "url": format!("/socket.io/?{}", hs.query),
            "query": query,
            "auth": auth,
        },
        "rooms": rooms,
        "data": { "user": socket.user() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_msgpack_requests_are_told_apart_by_the_first_byte() {
        let r = decode(br#"{"type":0,"requestId":"a","rooms":["x"]}"#).expect("json");
        assert_eq!(r.body["type"], 0);
        assert_eq!(strings(r.body.get("rooms")), vec!["x".to_owned()]);
        let msg = Value::Map(vec![
            (Value::from("type"), Value::from(7)),
            (Value::from("bin"), Value::Binary(vec![1, 2])),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &msg).expect("encode");
        let r = decode(&buf).expect("msgpack");
        assert_eq!(r.body["type"], 7);
        assert_eq!(r.body["bin"]["_placeholder"], true);
        assert_eq!(r.attachments, vec![Bytes::from_static(&[1, 2])]);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        assert!(decode(b"{not json").is_err());
        assert!(decode(&[0xc1, 0xff]).is_err());
        assert!(decode(&[]).is_err());
        let mut deep = vec![0x91; 200];
        deep.push(0xc0);
        assert!(decode(&deep).is_err());
        let mut trailing = Vec::new();
        rmpv::encode::write_value(&mut trailing, &Value::from(1)).expect("encode");
        trailing.push(0xc0);
        assert!(decode(&trailing).is_err());
    }

    #[test]
    fn selector_of_opts_takes_rooms_and_except_as_strings() {
        let sel = selector(&json!({"rooms": ["a", 5, null], "except": ["b"]}));
        assert_eq!(sel.rooms, vec!["a".to_owned(), "5".to_owned()]);
        assert_eq!(sel.except, vec!["b".to_owned()]);
        assert_eq!(selector(&Json::Null), Selector::all());
    }
}
