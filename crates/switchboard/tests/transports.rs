//! `/ws`, `/events` and the publish API over real sockets: one room fabric for every
//! transport, presence, resume, and bad input that must change nothing else.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchboard::config::{Config, Sources};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const KEY: &str = "test-api-key";

fn config(pairs: &[(&str, &str)]) -> Config {
    let mut overrides: Vec<(String, String)> = vec![
        ("data_dir".into(), "memory".into()),
        ("coalesce_ms".into(), "0".into()),
        ("api_key".into(), KEY.into()),
    ];
    overrides.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources {
        overrides,
        ..Sources::default()
    })
    .expect("config")
}

async fn server(pairs: &[(&str, &str)]) -> TestServer {
    serve(switchboard::build(&config(pairs)).expect("build")).await
}

/// A `/ws` client in development mode, past its `connected` frame.
async fn wsc(addr: SocketAddr, user: &str) -> Ws {
    let mut ws = ws(addr, &format!("/ws?userId={user}")).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["event"], "connected", "{hello}");
    assert_eq!(hello["data"]["userId"], user);
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("json frame")
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// Asserts nothing arrives for a moment (the absence of a message).
async fn silent(ws: &mut Ws) {
    let got = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(got.is_err(), "expected silence, got {got:?}");
}

async fn api(addr: SocketAddr, method: &str, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let (status, body) = http_with(
        addr,
        method,
        path,
        &format!("Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"),
        body.to_string().as_bytes(),
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn publish(addr: SocketAddr, body: Value) -> Value {
    let (status, v) = api(addr, "POST", "/api/publish", KEY, &body).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    end.expect("closed in time")
}

/// A small SSE client: hyper's HTTP/1 client, the event stream read as it arrives.
struct Sse {
    body: hyper::body::Incoming,
    /// Bytes received and not yet split into events.
    buf: Vec<u8>,
    /// Drives the connection; aborted on drop, which closes it.
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Sse {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, headers: &str) -> Result<Sse, (u16, String)> {
        let req = request(addr, "GET", path, headers)
            .header(http::header::ACCEPT, "text/event-stream")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("a valid request");
        let (res, conn) = tokio::time::timeout(Duration::from_secs(5), send_request(addr, req))
            .await
            .expect("head in time");
        let status = res.status().as_u16();
        if status != 200 {
            let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
                .await
                .expect("body in time")
                .expect("body")
                .to_bytes();
            conn.abort();
            return Err((status, String::from_utf8_lossy(&body).to_string()));
        }
        let header = |name| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            header(http::header::CONTENT_TYPE).starts_with("text/event-stream"),
            "{res:?}"
        );
        assert_eq!(
            header(http::header::CACHE_CONTROL),
            "no-cache, no-transform"
        );
        assert_eq!(
            header(http::header::HeaderName::from_static("x-accel-buffering")),
            "no"
        );
        Ok(Sse {
            body: res.into_body(),
            buf: Vec::new(),
            conn,
        })
    }

    /// The next event as (id, event, data), skipping comments; None when the stream ends.
    async fn next(&mut self) -> Option<(Option<u64>, String, Value)> {
        loop {
            while let Some(p) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..p + 2).collect();
                let (mut id, mut event, mut data) = (None, String::new(), Vec::new());
                for line in std::str::from_utf8(&block).expect("utf-8").lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                if !event.is_empty() {
                    return Some((
                        id,
                        event,
                        serde_json::from_str(&data.join("\n")).expect("data json"),
                    ));
                }
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("event in time");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None | Some(Err(_)) => return None,
            }
        }
    }

    async fn expect(&mut self, event: &str) -> (Option<u64>, Value) {
        let (id, e, data) = self.next().await.expect("an event");
        assert_eq!(e, event, "{data}");
        (id, data)
    }
}

#[tokio::test]
async fn rooms_messages_and_presence_over_ws() {
    let s = server(&[]).await;
    let mut a = wsc(s.addr, "alice").await;
    let mut b = wsc(s.addr, "bob").await;
    send(
        &mut a,
        json!({"action": "join", "roomId": "lobby", "ack": 1}),
    )
    .await;
    assert_eq!(
        next_json(&mut a).await,
        json!({"ack": 1, "data": {"success": true, "roomId": "lobby"}})
    );
    send(&mut b, json!({"action": "join", "roomId": "lobby"})).await;
    assert_eq!(next_json(&mut b).await["event"], "joined");
    let joined = next_json(&mut a).await;
    assert_eq!(joined["event"], "member_joined");
    assert_eq!(joined["data"], json!({"roomId": "lobby", "userId": "bob"}));
    assert_eq!(joined["room"], "lobby");

    // A second connection of bob is not news.
    let mut b2 = wsc(s.addr, "bob").await;
    send(&mut b2, json!({"action": "join", "roomId": "lobby"})).await;
    assert_eq!(next_json(&mut b2).await["event"], "joined");
    silent(&mut a).await;

    // Messages carry the server's sender id and time; the sender does not hear itself.
    send(&mut b, json!({"action": "message", "roomId": "lobby", "content": {"text": "hi"}, "senderId": "mallory", "ack": 7})).await;
    let sent = next_json(&mut b).await;
    assert_eq!(sent["ack"], 7);
    let offset = sent["data"]["offset"].as_u64().expect("offset");
    for ws in [&mut a, &mut b2] {
        let m = next_json(ws).await;
        assert_eq!(m["event"], "message");
        assert_eq!(m["data"]["content"], json!({"text": "hi"}));
        assert_eq!(m["data"]["senderId"], "bob");
        assert!(m["data"]["timestamp"].as_i64().is_some());
        assert_eq!(m["offset"].as_u64(), Some(offset));
    }
    silent(&mut b).await;

    let (status, room) = api(s.addr, "GET", "/api/rooms/lobby", KEY, &Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(room["members"], 3);
    assert_eq!(room["transports"], json!({"ws": 3}));
    assert_eq!(room["users"], json!(["alice", "bob"]));
    let (_, list) = api(s.addr, "GET", "/api/rooms", KEY, &Value::Null).await;
    assert!(
        list["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .any(|r| r["room"] == "lobby")
    );

    // bob leaves for good only when his last connection goes.
    send(&mut b, json!({"action": "leave", "roomId": "lobby"})).await;
    assert_eq!(next_json(&mut b).await["event"], "left");
    silent(&mut a).await;
    drop(b2);
    let left = next_json(&mut a).await;
    assert_eq!(left["event"], "member_left");
    assert_eq!(left["data"]["userId"], "bob");

    send(&mut a, json!({"action": "ping"})).await;
    assert_eq!(next_json(&mut a).await["event"], "pong");
    s.stop().await;
}

#[tokio::test]
async fn bad_ws_input_gets_an_error_and_changes_nothing() {
    let s = server(&[("max_payload", "4096"), ("max_rooms_per_client", "5")]).await;
    let mut a = wsc(s.addr, "alice").await;
    let mut other = wsc(s.addr, "olga").await;
    send(&mut other, json!({"action": "join", "roomId": "r"})).await;
    next_json(&mut other).await;

    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("not json".into()), "Invalid JSON"),
        (Message::Text("[1,2]".into()), "Expected a JSON object"),
        (Message::Text("{}".into()), "Expected {"),
        (
            Message::Text(json!({"action": "dance"}).to_string().into()),
            "Unknown action: dance",
        ),
        (
            Message::Text(json!({"action": 5}).to_string().into()),
            "action must be a string",
        ),
        (
            Message::Text(json!({"action": "join"}).to_string().into()),
            "roomId",
        ),
        (
            Message::Text(
                json!({"action": "join", "roomId": "user:olga"})
                    .to_string()
                    .into(),
            ),
            "reserved",
        ),
        (
            Message::Text(
                json!({"action": "join", "roomId": "sid:x"})
                    .to_string()
                    .into(),
            ),
            "reserved",
        ),
        (
            Message::Text(json!({"action": "join", "roomId": ""}).to_string().into()),
            "Invalid room name",
        ),
        (
            Message::Text(
                json!({"action": "message", "roomId": "r", "content": "x"})
                    .to_string()
                    .into(),
            ),
            "Join room",
        ),
        (
            Message::Text(
                json!({"action": "message", "roomId": "r"})
                    .to_string()
                    .into(),
            ),
            "content is required",
        ),
        (
            Message::Text(json!({"event": "no-such-event"}).to_string().into()),
            "Unknown event",
        ),
        (
            Message::Text(
                json!({"event": "lock-tickets", "data": {"eventId": "x"}})
                    .to_string()
                    .into(),
            ),
            "Invalid eventId",
        ),
        (
            Message::Text(json!({"event": "heartbeat", "ack": -1}).to_string().into()),
            "ack must be",
        ),
        (Message::Binary(vec![1u8, 2, 3].into()), "Binary frames"),
    ];
    for (frame, expect) in cases {
        let shown = format!("{frame:?}");
        a.send(frame).await.expect("send");
        let e = next_json(&mut a).await;
        assert_eq!(e["event"], "error", "{shown}: {e}");
        let msg = e["data"]["message"].as_str().expect("message");
        assert!(msg.contains(expect), "{shown}: {msg:?} lacks {expect:?}");
    }
    // Too many rooms: 5 allowed, one is the user's own.
    for i in 0..4 {
        send(
            &mut a,
            json!({"action": "join", "roomId": format!("room{i}")}),
        )
        .await;
        assert_eq!(next_json(&mut a).await["event"], "joined");
    }
    send(&mut a, json!({"action": "join", "roomId": "one-too-many"})).await;
    let e = next_json(&mut a).await;
    assert!(
        e["data"]["message"]
            .as_str()
            .expect("msg")
            .contains("Too many rooms"),
        "{e}"
    );
    // Still fully working, and nobody else heard anything.
    send(&mut a, json!({"action": "ping", "ack": 3})).await;
    assert_eq!(next_json(&mut a).await["ack"], 3);
    silent(&mut other).await;

    // An oversized frame closes that connection (1009) and only that one.
    a.send(Message::Text("x".repeat(10_000).into()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut a).await, Some(1009));
    send(&mut other, json!({"action": "ping", "ack": 1})).await;
    assert_eq!(next_json(&mut other).await["ack"], 1);
    eventually("closed client counted out", || s.app.session_count() == 1).await;
    s.stop().await;
}

fn hs256(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

fn exp_in(secs: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + secs
}

#[tokio::test]
async fn ws_and_sse_auth_with_jwt() {
    let s = server(&[("jwt_secret", "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!")]).await;
    let good = hs256(
        "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!",
        json!({"sub": "u42", "exp": exp_in(600)}),
    );
    let expired = hs256(
        "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!",
        json!({"sub": "u42", "exp": exp_in(-600)}),
    );
    let forged = hs256("other", json!({"sub": "u42", "exp": exp_in(600)}));

    for (query, code) in [
        (String::new(), 4001),
        (format!("?token={forged}"), 4001),
        ("?token=garbage".to_owned(), 4001),
        (format!("?token={expired}"), 4003),
    ] {
        let mut ws = ws(s.addr, &format!("/ws{query}")).await;
        assert_eq!(close_code(&mut ws).await, Some(code), "{query}");
    }
    // The token as a subprotocol: accepted, and echoed as browsers require.
    let mut req = format!("ws://{}/ws", s.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", good.parse().expect("header"));
    let (mut ws, res) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    assert_eq!(
        res.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(good.as_str())
    );
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["data"]["userId"], "u42");
    let mut q = wsc_token(s.addr, &good).await;
    send(&mut q, json!({"action": "ping", "ack": 1})).await;
    assert_eq!(next_json(&mut q).await["ack"], 1);

    // SSE: header or query token; refusals are 401 with a reason.
    for (path, headers, reason) in [
        ("/events".to_owned(), String::new(), "no token"),
        (
            format!("/events?token={forged}"),
            String::new(),
            "Invalid token",
        ),
        (
            "/events".to_owned(),
            format!("Authorization: Bearer {expired}\r\n"),
            "expired",
        ),
    ] {
        match Sse::open(s.addr, &path, &headers).await {
            Err((status, body)) => {
                assert_eq!(status, 401);
                assert!(body.contains(reason), "{body}");
            }
            Ok(_) => panic!("{path} accepted"),
        }
    }
    let mut sse = Sse::open(
        s.addr,
        "/events",
        &format!("Authorization: Bearer {good}\r\n"),
    )
    .await
    .expect("open");
    let (_, hello) = sse.expect("connected").await;
    assert_eq!(hello["userId"], "u42");
    s.stop().await;
}

async fn wsc_token(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = ws(addr, &format!("/ws?token={token}")).await;
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    ws
}

#[tokio::test]
async fn one_publish_reaches_socketio_ws_and_sse_alike() {
    let s = server(&[]).await;
    // Socket.IO on /realtime in event_1 (its rooms are fabric rooms).
    let mut sio = ws(s.addr, "/socket.io/?EIO=4&transport=websocket&userId=carol").await;
    next_text(&mut sio).await;
    sio.send(Message::Text("40/realtime,".into()))
        .await
        .expect("send");
    assert!(next_text(&mut sio).await.starts_with("40/realtime,"));
    assert!(next_text(&mut sio).await.contains("connected"));
    sio.send(Message::Text(
        "42/realtime,[\"join-event-room\",{\"eventId\":1}]".into(),
    ))
    .await
    .expect("send");
    loop {
        if next_text(&mut sio).await.contains("joined-event-room") {
            break;
        }
    }
    let mut w = wsc(s.addr, "dave").await;
    send(&mut w, json!({"action": "join", "roomId": "event_1"})).await;
    next_json(&mut w).await;
    let mut sse = Sse::open(s.addr, "/events?channels=event_1&userId=frank", "")
        .await
        .expect("open");
    let (_, hello) = sse.expect("connected").await;
    assert_eq!(hello["channels"], json!(["event_1"]));
    // The room hears that frank arrived (the Socket.IO ticket flow announces nobody).
    let joined = next_json(&mut w).await;
    assert_eq!(joined["event"], "member_joined");
    assert_eq!(joined["data"]["userId"], "frank");

    let p = publish(
        s.addr,
        json!({"room": "event_1", "event": "ticket-purchased", "data": {"seats": 2}}),
    )
    .await;
    let offset = p["offset"].as_u64().expect("offset");
    assert_eq!(p["delivered"], 3);
    let frame = loop {
        let t = next_text(&mut sio).await;
        if t.contains("ticket-purchased") {
            break t;
        }
    };
    assert!(
        frame.starts_with("42/realtime,[\"ticket-purchased\",{\"seats\":2}"),
        "{frame}"
    );
    let m = next_json(&mut w).await;
    assert_eq!(
        m,
        json!({"event": "ticket-purchased", "data": {"seats": 2}, "room": "event_1", "offset": offset})
    );
    let (id, data) = sse.expect("ticket-purchased").await;
    assert_eq!((id, data), (Some(offset), json!({"seats": 2})));

    // To a user: every connection of that user on every transport.
    let mut w2 = wsc(s.addr, "erin").await;
    let mut sse2 = Sse::open(s.addr, "/events?userId=erin", "")
        .await
        .expect("open");
    sse2.expect("connected").await;
    publish(
        s.addr,
        json!({"user": "erin", "event": "notification", "data": "hello"}),
    )
    .await;
    assert_eq!(next_json(&mut w2).await["data"], "hello");
    assert_eq!(sse2.expect("notification").await.1, json!("hello"));
    silent(&mut w).await;

    // To everyone.
    let p = publish(
        s.addr,
        json!({"broadcast": true, "event": "system-announcement", "data": {"m": 1}}),
    )
    .await;
    assert!(p["delivered"].as_u64().expect("n") >= 5, "{p}");
    assert_eq!(next_json(&mut w).await["event"], "system-announcement");
    assert_eq!(sse.expect("system-announcement").await.1, json!({"m": 1}));

    // Batch: in order, with offsets.
    let (status, v) = api(
        s.addr,
        "POST",
        "/api/publish/batch",
        KEY,
        &json!([
            {"room": "event_1", "event": "a", "data": 1},
            {"room": "event_1", "event": "b", "data": 2},
        ]),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let offsets: Vec<u64> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["offset"].as_u64().expect("o"))
        .collect();
    assert!(offsets[0] < offsets[1]);
    assert_eq!(next_json(&mut w).await["data"], 1);
    assert_eq!(next_json(&mut w).await["data"], 2);
    s.stop().await;
}

#[tokio::test]
async fn bad_publishes_are_refused_and_publish_nothing() {
    let s = server(&[]).await;
    let mut w = wsc(s.addr, "dave").await;
    send(&mut w, json!({"action": "join", "roomId": "r"})).await;
    next_json(&mut w).await;
    let body = json!({"room": "r", "event": "e", "data": 1});
    assert_eq!(
        api(s.addr, "POST", "/api/publish", "wrong", &body).await.0,
        401
    );
    let (status, _) = http_with(
        s.addr,
        "POST",
        "/api/publish",
        "Content-Type: application/json\r\n",
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    for (bad, why) in [
        (json!({"event": "e"}), "exactly one target"),
        (
            json!({"room": "r", "user": "u", "event": "e"}),
            "exactly one target",
        ),
        (
            json!({"broadcast": false, "event": "e"}),
            "exactly one target",
        ),
        (json!({"room": "r"}), "invalid request body"),
        (json!({"room": "r", "event": ""}), "event must be"),
        (json!({"room": "r", "event": "connect"}), "reserved"),
        (json!({"room": "sid:abc", "event": "e"}), "internal"),
        (
            json!({"room": "r", "event": "e", "colour": 1}),
            "unknown field",
        ),
        (json!("just a string"), "invalid request body"),
    ] {
        let (status, v) = api(s.addr, "POST", "/api/publish", KEY, &bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(
            v["error"].as_str().expect("error").contains(why),
            "{bad}: {v}"
        );
    }
    let (status, _) = http_with(
        s.addr,
        "POST",
        "/api/publish",
        &format!("Authorization: Bearer {KEY}\r\n"),
        b"{not json",
    )
    .await;
    assert_eq!(status, 400);
    // One bad message in a batch: nothing of it is published.
    let (status, v) = api(
        s.addr,
        "POST",
        "/api/publish/batch",
        KEY,
        &json!([
            {"room": "r", "event": "fine", "data": 1},
            {"event": "no-target"},
        ]),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .expect("error")
            .starts_with("message 1:"),
        "{v}"
    );
    silent(&mut w).await;
    assert_eq!(
        api(s.addr, "GET", "/api/rooms/nope", KEY, &Value::Null)
            .await
            .0,
        404
    );

    // Without a key configured the API is off.
    let off = serve(switchboard::build(&config(&[("api_key", "")])).expect("build")).await;
    assert_eq!(
        api(off.addr, "POST", "/api/publish", "", &body).await.0,
        503
    );
    off.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn sse_resume_replays_exactly_the_missed_events_or_says_reset() {
    let s = server(&[("history_len", "5")]).await;
    let mut sse = Sse::open(s.addr, "/events?channels=news,sport&userId=fan", "")
        .await
        .expect("open");
    sse.expect("connected").await;
    let mut last = 0;
    for i in 0..2 {
        publish(s.addr, json!({"room": "news", "event": "n", "data": i})).await;
        let (id, data) = sse.expect("n").await;
        assert_eq!(data, json!(i));
        last = id.expect("id");
    }
    drop(sse);
    // Missed while away: two news, one sport, one volatile (never replayed), one elsewhere.
    let mut missed = Vec::new();
    for (room, event, volatile) in [
        ("news", "n", false),
        ("sport", "s", false),
        ("news", "n", true),
        ("other", "o", false),
        ("news", "n", false),
    ] {
        let p = publish(
            s.addr,
            json!({"room": room, "event": event, "data": room, "volatile": volatile}),
        )
        .await;
        if !volatile && room != "other" {
            missed.push(p["offset"].as_u64().expect("offset"));
        }
    }
    let mut sse = Sse::open(
        s.addr,
        "/events?channels=news,sport&userId=fan",
        &format!("Last-Event-ID: {last}\r\n"),
    )
    .await
    .expect("open");
    sse.expect("connected").await;
    let mut got = Vec::new();
    for _ in 0..missed.len() {
        let (id, event, _) = sse.next().await.expect("replayed");
        assert!(event == "n" || event == "s");
        got.push(id.expect("id"));
    }
    assert_eq!(got, missed);
    let p = publish(s.addr, json!({"room": "sport", "event": "live", "data": 1})).await;
    assert_eq!(sse.expect("live").await.0, p["offset"].as_u64());
    drop(sse);

    // Too far back (history holds 5 per room): a reset, then live events.
    for i in 0..8 {
        publish(s.addr, json!({"room": "news", "event": "n", "data": i})).await;
    }
    for (header, query) in [
        (format!("Last-Event-ID: {last}\r\n"), ""),
        (String::new(), "&lastEventId=banana"),
        (format!("Last-Event-ID: {}\r\n", u64::MAX), ""),
    ] {
        let mut sse = Sse::open(
            s.addr,
            &format!("/events?channels=news&userId=fan{query}"),
            &header,
        )
        .await
        .expect("open");
        sse.expect("connected").await;
        let (id, reset) = sse.expect("reset").await;
        assert!(
            reset["reason"]
                .as_str()
                .expect("reason")
                .contains("refetch"),
            "{reset}"
        );
        assert!(id.is_some());
        let p = publish(s.addr, json!({"room": "news", "event": "after", "data": 0})).await;
        assert_eq!(sse.expect("after").await.0, p["offset"].as_u64());
    }

    // Channels that are not allowed: 403 (reserved) or 400 (not a room name), naming
    // the channel; nothing opened.
    for (bad, status) in [("user:someone-else", 403), ("sid:x", 403), ("%01", 400)] {
        let r = Sse::open(s.addr, &format!("/events?channels={bad}&userId=fan"), "").await;
        assert!(
            matches!(&r, Err((st, b)) if *st == status && b.contains("channel")),
            "{bad}: {:?}",
            r.as_ref().err()
        );
    }
    let many: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    let r = Sse::open(s.addr, &format!("/events?channels={}", many.join(",")), "").await;
    assert!(matches!(r, Err((400, ref b)) if b.contains("too many channels")));
    s.stop().await;
}

#[tokio::test]
async fn a_slow_sse_reader_is_disconnected_and_others_get_everything() {
    let s = server(&[("client_queue", "8")]).await;
    let mut slow = Sse::open(s.addr, "/events?channels=feed", "")
        .await
        .expect("open");
    slow.expect("connected").await;
    let mut fast = Sse::open(s.addr, "/events?channels=feed", "")
        .await
        .expect("open");
    fast.expect("connected").await;
    let big = "x".repeat(64 * 1024);
    let total = 120;
    // The fast reader tells each `big` it reads; the next publish waits for that.
    let (read_one, mut got_one) = tokio::sync::mpsc::channel::<()>(1);
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let (_, e, _) = fast.next().await.expect("event");
            if e == "big" {
                n += 1;
                let _ = read_one.send(()).await;
            }
        }
        (n, fast)
    });
    for _ in 0..total {
        publish(s.addr, json!({"room": "feed", "event": "big", "data": big})).await;
        tokio::time::timeout(Duration::from_secs(10), got_one.recv())
            .await
            .expect("the fast reader got it in time");
    }
    let (n, _fast) = reader.await.expect("reader");
    assert_eq!(n, total);
    // The slow one got some, then the slow-client error, then the end of the stream.
    let mut saw_error = false;
    while let Some((_, e, data)) = slow.next().await {
        if e == "error" {
            assert!(data["message"].as_str().expect("m").contains("Slow client"));
            saw_error = true;
        }
    }
    assert!(saw_error, "slow reader was never told");
    eventually("slow reader gone", || s.app.session_count() == 1).await;
    s.stop().await;
}

// On a paused clock: the 3.5 s of silence below pass in no real time.
#[tokio::test(start_paused = true)]
async fn ws_heartbeat_closes_a_silent_client_and_ticket_events_work() {
    let s = server(&[("heartbeat_secs", "1"), ("heartbeat_timeout_secs", "1")]).await;
    let mut w = wsc(s.addr, "buyer").await;
    send(
        &mut w,
        json!({"event": "join-event-room", "data": {"eventId": 1}, "ack": 1}),
    )
    .await;
    let ack = next_json(&mut w).await;
    assert_eq!(ack["ack"], 1);
    assert_eq!(ack["data"]["success"], true);
    send(&mut w, json!({"event": "lock-tickets", "data": {"eventId": 1, "categoryId": 1, "quantity": 2}, "ack": 2})).await;
    let lock = loop {
        let m = next_json(&mut w).await;
        if m["ack"] == 2 {
            break m;
        }
    };
    assert_eq!(lock["data"]["success"], true, "{lock}");
    let stats = |addr| async move {
        serde_json::from_str::<Value>(&get_text(addr, "/stats").await.1).expect("json")
    };
    assert_eq!(stats(s.addr).await["ticketLocks"]["activeLocks"], 1);
    assert_eq!(stats(s.addr).await["connections"]["ws"], 1);
    // Stop reading (so no pong is sent): the server closes with 4008 and the hold goes.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(close_code(&mut w).await, Some(4008));
    let mut released = false;
    for _ in 0..100 {
        if stats(s.addr).await["ticketLocks"]["activeLocks"] == 0 {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released, "hold of the dead connection was not released");
    s.stop().await;
}

#[tokio::test]
async fn openapi_describes_the_publish_api() {
    let s = server(&[]).await;
    let (status, body) = get_text(s.addr, "/api/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with('3'));
    for path in [
        "/api/publish",
        "/api/publish/batch",
        "/api/rooms",
        "/api/rooms/{room}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let props = &doc["components"]["schemas"]["PublishRequest"]["properties"];
    for field in ["room", "user", "broadcast", "event", "data", "volatile"] {
        assert!(props[field].is_object(), "{field} missing: {props}");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
    s.stop().await;
}
