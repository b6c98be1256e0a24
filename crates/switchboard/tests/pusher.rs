//! The Pusher protocol over real sockets: bad input gets Pusher's answer and changes
//! nothing else (unknown app, bad signatures, client events where they are not allowed,
//! malformed frames, too many channels, stale or oversized API requests).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::Digest;
use serde_json::{Value, json};
use switchboard::config::{Config, Sources};
use tokio_tungstenite::tungstenite::Message;

const APP_ID: &str = "77";
const KEY: &str = "test-key";
const SECRET: &str = "test-secret-123";

fn config(client_events: bool) -> Config {
    config_with(client_events, "")
}

fn config_with(client_events: bool, pusher: &str) -> Config {
    let file = format!(
        "[pusher]\n{pusher}\n[[pusher.apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nclient_events = {client_events}\n"
    );
    Config::load(&Sources {
        file: Some(("pusher.toml".into(), file)),
        overrides: vec![
            ("data_dir".into(), "memory".into()),
            ("rate_limit_burst".into(), "1200".into()),
        ],
        ..Sources::default()
    })
    .expect("config")
}

async fn server(client_events: bool) -> TestServer {
    serve(switchboard::build(&config(client_events)).expect("build")).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(message: &str) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    m.update(message.as_bytes());
    hex(&m.finalize().into_bytes())
}

/// A connection past `connection_established`, with its socket id.
async fn connect(addr: SocketAddr) -> (Ws, String) {
    let mut ws = ws(
        addr,
        &format!("/app/{KEY}?protocol=7&client=test&version=1"),
    )
    .await;
    let hello = frame(&mut ws).await;
    assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
    let id = hello["data"]["socket_id"]
        .as_str()
        .expect("socket id")
        .to_owned();
    (ws, id)
}

/// The next frame, with a `data` string parsed when it holds JSON.
async fn frame(ws: &mut Ws) -> Value {
    let mut v: Value = serde_json::from_str(&next_text(ws).await).expect("json frame");
    if let Some(s) = v["data"].as_str()
        && let Ok(d) = serde_json::from_str::<Value>(s)
    {
        v["data"] = d;
    }
    v
}

async fn send(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

async fn subscribe(ws: &mut Ws, channel: &str, auth: Option<String>) -> Value {
    send(
        ws,
        &json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}}),
    )
    .await;
    frame(ws).await
}

async fn silent(ws: &mut Ws) {
    let got = tokio::time::timeout(Duration::from_millis(200), ws.next()).await;
    assert!(got.is_err(), "expected silence, got {got:?}");
}

async fn close_code(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed in time")
}

/// A signed API request as the Pusher SDKs sign them; `stamp` is the auth timestamp.
async fn api(addr: SocketAddr, method: &str, path: &str, body: &str, stamp: u64) -> (u16, String) {
    let mut query = vec![
        format!("auth_key={KEY}"),
        format!("auth_timestamp={stamp}"),
        "auth_version=1.0".to_owned(),
    ];
    if !body.is_empty() {
        query.push(format!(
            "body_md5={}",
            hex(&md5::Md5::digest(body.as_bytes()))
        ));
    }
    query.sort();
    let q = query.join("&");
    let signature = hmac(&format!("{method}\n{path}\n{q}"));
    let (status, body) = http_with(
        addr,
        method,
        &format!("{path}?{q}&auth_signature={signature}"),
        "Content-Type: application/json\r\n",
        body.as_bytes(),
    )
    .await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn no_app_configured_serves_nothing() {
    let s = serve(
        switchboard::build(
            &Config::load(&Sources {
                overrides: vec![("data_dir".into(), "memory".into())],
                ..Sources::default()
            })
            .expect("config"),
        )
        .expect("build"),
    )
    .await;
    assert_eq!(get_text(s.addr, "/app/any?protocol=7").await.0, 404);
    assert_eq!(http(s.addr, "POST", "/apps/1/events", b"{}").await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn unknown_app_and_bad_versions_are_refused_with_pushers_codes() {
    let s = server(false).await;
    for (path, code) in [
        ("/app/nope?protocol=7", 4001),
        (&*format!("/app/{KEY}?protocol=4"), 4007),
        (&*format!("/app/{KEY}"), 4008),
    ] {
        let mut ws = ws(s.addr, path).await;
        let err = frame(&mut ws).await;
        assert_eq!(err["event"], "pusher:error", "{path}");
        assert_eq!(err["data"]["code"], code, "{path}");
        assert_eq!(close_code(&mut ws).await, Some(code), "{path}");
    }
    s.stop().await;
}

#[tokio::test]
async fn bad_signatures_subscribe_nothing() {
    let s = server(true).await;
    let (mut a, id) = connect(s.addr).await;
    let good = format!("{KEY}:{}", hmac(&format!("{id}:private-x")));
    for auth in [
        None,
        Some(format!("{KEY}:{}", "0".repeat(64))),
        Some(format!("other:{}", hmac(&format!("{id}:private-x")))),
        // Signed for another socket or another channel.
        Some(format!("{KEY}:{}", hmac("1.2:private-x"))),
        Some(format!("{KEY}:{}", hmac(&format!("{id}:private-y")))),
    ] {
        let f = subscribe(&mut a, "private-x", auth.clone()).await;
        assert_eq!(f["event"], "pusher:subscription_error", "{auth:?}");
        assert_eq!(f["channel"], "private-x");
        assert_eq!(f["data"]["status"], 401);
    }
    // Nothing joined: an event to the channel reaches no one.
    let (status, _) = api(
        s.addr,
        "POST",
        &format!("/apps/{APP_ID}/events"),
        r#"{"name":"e","channel":"private-x","data":"{}"}"#,
        now(),
    )
    .await;
    assert_eq!(status, 200);
    silent(&mut a).await;
    assert!(
        s.app
            .hub
            .room_info("private-x")
            .is_none_or(|r| r.members == 0)
    );
    // Presence without channel_data, or with channel_data that is not what was signed.
    let data = r#"{"user_id":"u1"}"#;
    let sig = hmac(&format!("{id}:presence-p:{data}"));
    send(&mut a, &json!({"event": "pusher:subscribe", "data": {"channel": "presence-p", "auth": format!("{KEY}:{sig}")}})).await;
    assert_eq!(frame(&mut a).await["event"], "pusher:subscription_error");
    send(&mut a, &json!({"event": "pusher:subscribe", "data": {"channel": "presence-p", "auth": format!("{KEY}:{sig}"), "channel_data": r#"{"user_id":"admin"}"#}})).await;
    assert_eq!(frame(&mut a).await["event"], "pusher:subscription_error");
    // The right signature works.
    let f = subscribe(&mut a, "private-x", Some(good)).await;
    assert_eq!(f["event"], "pusher_internal:subscription_succeeded");
    // The user channel of someone this connection did not sign in as.
    let f = subscribe(&mut a, "#server-to-user-u1", None).await;
    assert_eq!(f["data"]["status"], 403);
    s.stop().await;
}

#[tokio::test]
async fn client_events_where_they_are_not_allowed_are_refused() {
    let s = server(true).await;
    let (mut a, _) = connect(s.addr).await;
    let (mut b, _) = connect(s.addr).await;
    for ws in [&mut a, &mut b] {
        assert_eq!(
            subscribe(ws, "public", None).await["event"],
            "pusher_internal:subscription_succeeded"
        );
    }
    send(
        &mut a,
        &json!({"event": "client-x", "channel": "public", "data": {}}),
    )
    .await;
    let e = frame(&mut a).await;
    assert_eq!(e["event"], "pusher:error");
    assert!(
        e["data"]["message"]
            .as_str()
            .expect("message")
            .contains("private and presence")
    );
    silent(&mut b).await;
    s.stop().await;

    // An app without client events refuses them on private channels too.
    let s = server(false).await;
    let (mut a, id) = connect(s.addr).await;
    let auth = format!("{KEY}:{}", hmac(&format!("{id}:private-q")));
    assert_eq!(
        subscribe(&mut a, "private-q", Some(auth)).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    send(
        &mut a,
        &json!({"event": "client-x", "channel": "private-q", "data": {}}),
    )
    .await;
    let e = frame(&mut a).await;
    assert!(
        e["data"]["message"]
            .as_str()
            .expect("message")
            .contains("not enabled")
    );
    s.stop().await;
}

#[tokio::test]
async fn malformed_frames_and_too_many_channels_get_errors_and_the_connection_stays() {
    let s = server(true).await;
    let (mut a, _) = connect(s.addr).await;
    for bad in [
        "{",
        "null",
        "[1]",
        r#"{"data":1}"#,
        r#"{"event":"pusher:subscribe","data":"not json"}"#,
        r#"{"event":"nope"}"#,
    ] {
        a.send(Message::Text(bad.into())).await.expect("send");
        let e = frame(&mut a).await;
        assert_eq!(e["event"], "pusher:error", "{bad}");
        assert_eq!(e["data"]["code"], Value::Null, "{bad}");
    }
    a.send(Message::Binary(vec![1, 2].into()))
        .await
        .expect("send");
    assert_eq!(frame(&mut a).await["event"], "pusher:error");
    for i in 0..1000 {
        send(
            &mut a,
            &json!({"event": "pusher:subscribe", "data": {"channel": format!("c{i}")}}),
        )
        .await;
    }
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..1000 {
        match frame(&mut a).await["event"].as_str() {
            Some("pusher_internal:subscription_succeeded") => ok += 1,
            Some("pusher:subscription_error") => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((ok, refused), (256, 744));
    send(&mut a, &json!({"event": "pusher:ping", "data": {}})).await;
    assert_eq!(frame(&mut a).await["event"], "pusher:pong");
    // A frame over the limit closes with 1009.
    let big = json!({"event": "client-x", "channel": "c1", "data": "x".repeat(20_000)});
    send(&mut a, &big).await;
    assert_eq!(close_code(&mut a).await, Some(1009));
    s.stop().await;
}

#[tokio::test]
async fn api_refuses_stale_unsigned_oversized_and_unknown() {
    let s = server(false).await;
    let (mut a, _) = connect(s.addr).await;
    assert_eq!(
        subscribe(&mut a, "feed", None).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let path = format!("/apps/{APP_ID}/events");
    let body = r#"{"name":"e","channel":"feed","data":"{\"n\":1}"}"#;
    let (status, text) = api(s.addr, "POST", &path, body, now() - 601).await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("Timestamp expired"), "{text}");
    let (status, _) = http(
        s.addr,
        "POST",
        &format!(
            "{path}?auth_key={KEY}&auth_timestamp={}&auth_version=1.0&auth_signature=00",
            now()
        ),
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    let big = format!(
        r#"{{"name":"e","channel":"feed","data":"{}"}}"#,
        "x".repeat(10_241)
    );
    assert_eq!(api(s.addr, "POST", &path, &big, now()).await.0, 413);
    let huge = format!(
        r#"{{"name":"e","channel":"feed","data":"{}"}}"#,
        "x".repeat(300_000)
    );
    assert_eq!(api(s.addr, "POST", &path, &huge, now()).await.0, 413);
    assert_eq!(
        api(s.addr, "POST", "/apps/78/events", body, now()).await.0,
        404
    );
    let many: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let too_many = json!({"name": "e", "channels": many, "data": "x"}).to_string();
    assert_eq!(api(s.addr, "POST", &path, &too_many, now()).await.0, 400);
    assert_eq!(api(s.addr, "POST", &path, "{not json", now()).await.0, 400);
    let batch = json!({"batch": (0..11).map(|_| json!({"name": "e", "channel": "feed", "data": "x"})).collect::<Vec<_>>()}).to_string();
    assert_eq!(
        api(
            s.addr,
            "POST",
            &format!("/apps/{APP_ID}/batch_events"),
            &batch,
            now()
        )
        .await
        .0,
        400
    );
    // A batch with one bad event publishes none of it.
    let half_bad = json!({"batch": [{"name": "e", "channel": "feed", "data": "x"}, {"name": "e", "channel": "bad name", "data": "x"}]}).to_string();
    assert_eq!(
        api(
            s.addr,
            "POST",
            &format!("/apps/{APP_ID}/batch_events"),
            &half_bad,
            now()
        )
        .await
        .0,
        400
    );
    silent(&mut a).await;
    // And a good one arrives.
    assert_eq!(api(s.addr, "POST", &path, body, now()).await.0, 200);
    let f = frame(&mut a).await;
    assert_eq!(
        f,
        json!({"event": "e", "channel": "feed", "data": {"n": 1}})
    );
    let (status, text) = api(
        s.addr,
        "GET",
        &format!("/apps/{APP_ID}/channels/feed"),
        "",
        now(),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&text).expect("json")),
        (200, json!({"occupied": true}))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_answer_the_servers_ping_is_closed_with_4201() {
    let s = serve(
        switchboard::build(&config_with(
            false,
            "activity_timeout_secs = 1\npong_timeout_secs = 1",
        ))
        .expect("build"),
    )
    .await;
    let (mut a, _) = connect(s.addr).await;
    // Silent: after 1 s + 1 s grace the server pings; no pong within 1 s closes.
    let ping = frame(&mut a).await;
    assert_eq!(ping["event"], "pusher:ping");
    let err = frame(&mut a).await;
    assert_eq!(err["event"], "pusher:error");
    assert_eq!(err["data"]["code"], 4201);
    assert_eq!(close_code(&mut a).await, Some(4201));
    // A client that answers stays.
    let (mut b, _) = connect(s.addr).await;
    assert_eq!(frame(&mut b).await["event"], "pusher:ping");
    send(&mut b, &json!({"event": "pusher:pong", "data": {}})).await;
    let got = tokio::time::timeout(Duration::from_millis(1500), frame(&mut b)).await;
    assert!(got.is_err(), "no close after a pong: {got:?}");
    s.stop().await;
}

/// `/app/{key}` checks the browser origin like `/ws` (cross-site WebSocket hijacking):
/// a refused origin gets 403 before the upgrade, counted as `transport="pusher"`, and
/// costs no admission; an allowed origin, the page's own and clients that send no
/// `Origin` connect.
#[tokio::test]
async fn pusher_websockets_from_other_origins_are_refused_before_the_upgrade() {
    let mut c = config(false);
    c.allowed_origins = vec!["https://shop.example".into()];
    c.max_connections = 1;
    let s = serve(switchboard::build(&c).expect("build")).await;
    let path = format!("/app/{KEY}?protocol=7&client=test&version=1");
    let upgrade = |origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            s.addr
        )
    };
    let status = |request: String| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut t = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        t.write_all(request.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), t.read(&mut buf))
            .await
            .expect("answer in time")
            .expect("read");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text, t)
    };
    for evil in ["https://evil.example", "null", "http://shop.example"] {
        let (code, text, _) = status(upgrade(evil)).await;
        assert_eq!(code, 403, "{evil}: {text}");
        assert!(text.contains("allowed_origins"), "{text}");
    }
    assert_eq!(
        s.app.limits.open(),
        0,
        "a refused origin costs no admission"
    );
    let (code, text, held) = status(upgrade("https://shop.example")).await;
    assert_eq!(code, 101, "an allowed origin: {text}");
    drop(held);
    eventually("the first connection's place is free", || {
        s.app.limits.open() == 0
    })
    .await;
    let (code, _, held) = status(upgrade(&format!("http://{}", s.addr))).await;
    assert_eq!(code, 101, "the page's own origin");
    drop(held);
    eventually("released", || s.app.limits.open() == 0).await;
    let (_ws, _) = connect(s.addr).await;
    let (_, metrics) = get_text(s.addr, "/metrics").await;
    assert!(
        metrics.contains("switchboard_origin_refused_total{transport=\"pusher\"} 3"),
        "{metrics}"
    );
    s.stop().await;
}
