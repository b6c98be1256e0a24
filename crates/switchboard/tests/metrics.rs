//! `/metrics` (checked by `promtool`), the dashboard feed, and the per-connection rate
//! limit, over real sockets.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard::config::{Config, Sources};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

fn config(pairs: &[(&str, &str)]) -> Config {
    let mut overrides: Vec<(String, String)> = vec![
        ("data_dir".into(), "memory".into()),
        ("coalesce_ms".into(), "0".into()),
        ("api_key".into(), "k".into()),
    ];
    overrides.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources {
        overrides,
        ..Sources::default()
    })
    .expect("config")
}

async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("json")
}

/// The value of one sample line (`name{labels} value`), exactly as written.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series}"))
        .parse()
        .expect("number")
}

/// `promtool check metrics`: required in CI, skipped with a message elsewhere.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            skipped(&format!(
                "promtool check metrics: promtool not installed (Debian package `prometheus`): {e}"
            ));
            return;
        }
    };
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (status, body) = get_text(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

#[tokio::test]
async fn metrics_are_valid_prometheus_and_count_what_happened() {
    let s = serve(
        switchboard::build(&config(&[
            ("rate_limit_per_sec", "5"),
            ("rate_limit_burst", "5"),
        ]))
        .expect("build"),
    )
    .await;
    let before = metrics_text(s.addr).await;
    promtool_check(&before);
    assert_eq!(
        sample(&before, "switchboard_connections{transport=\"ws\"}"),
        0.0
    );

    // A /ws client that floods: 5 answered, the rest refused by the rate limit.
    let mut w = ws(s.addr, "/ws?userId=flood").await;
    next_json(&mut w).await;
    for i in 0..12 {
        w.send(Message::Text(
            json!({"action": "ping", "ack": i}).to_string().into(),
        ))
        .await
        .expect("send");
    }
    let (mut acks, mut limited) = (0, 0);
    for _ in 0..12 {
        let f = next_json(&mut w).await;
        if f["ack"].is_number() {
            acks += 1;
        } else if f["event"] == "error" {
            assert!(
                f["data"]["message"]
                    .as_str()
                    .expect("m")
                    .contains("Rate limit")
            );
            limited += 1;
        }
    }
    assert_eq!((acks, limited), (5, 7));

    // A Socket.IO buyer holds seats (a hold operation, an active hold).
    let mut sio = ws(s.addr, "/socket.io/?EIO=4&transport=websocket&userId=buyer").await;
    next_text(&mut sio).await;
    sio.send(Message::Text("40/realtime,".into()))
        .await
        .expect("send");
    next_text(&mut sio).await;
    next_text(&mut sio).await;
    sio.send(Message::Text(
        "42/realtime,1[\"lock-tickets\",{\"eventId\":1,\"categoryId\":1,\"quantity\":2}]".into(),
    ))
    .await
    .expect("send");
    loop {
        if next_text(&mut sio).await.starts_with("43/realtime,1") {
            break;
        }
    }
    // Socket.IO events over the limit are refused too, with an error and their ack.
    for i in 10..20 {
        sio.send(Message::Text(
            format!("42/realtime,{i}[\"heartbeat\",{{}}]").into(),
        ))
        .await
        .expect("send");
    }
    let mut sio_refused = 0;
    for _ in 0..40 {
        let t = tokio::time::timeout(Duration::from_millis(500), sio.next()).await;
        let Ok(Some(Ok(Message::Text(t)))) = t else {
            break;
        };
        if t.contains("Rate limit exceeded") && t.starts_with("43/realtime,") {
            sio_refused += 1;
        }
    }
    assert!(sio_refused >= 5, "{sio_refused} refused");

    let (status, _) = http_with(
        s.addr,
        "POST",
        "/api/publish",
        "Authorization: Bearer k\r\nContent-Type: application/json\r\n",
        br#"{"broadcast": true, "event": "hello", "data": 1}"#,
    )
    .await;
    assert_eq!(status, 200);

    let after = metrics_text(s.addr).await;
    promtool_check(&after);
    assert_eq!(
        sample(&after, "switchboard_connections{transport=\"ws\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "switchboard_connections{transport=\"socketio-websocket\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "switchboard_rate_limited_total{transport=\"ws\"}"),
        7.0
    );
    assert!(
        sample(
            &after,
            "switchboard_rate_limited_total{transport=\"socketio\"}"
        ) >= 5.0
    );
    assert_eq!(sample(&after, "switchboard_holds{status=\"active\"}"), 1.0);
    assert!(sample(&after, "switchboard_hold_operation_seconds_count") >= 1.0);
    assert_eq!(
        sample(
            &after,
            "switchboard_messages_total{direction=\"in\",transport=\"http\",type=\"publish\"}"
        ),
        1.0
    );
    assert!(
        sample(
            &after,
            "switchboard_messages_total{direction=\"out\",transport=\"ws\",type=\"frame\"}"
        ) >= 13.0
    );
    assert!(
        sample(
            &after,
            "switchboard_delivery_seconds_count{transport=\"ws\"}"
        ) >= 13.0
    );
    assert!(
        sample(
            &after,
            "switchboard_delivery_seconds_count{transport=\"socketio\"}"
        ) >= 1.0
    );
    // No per-socket or per-user label anywhere.
    assert!(!after.contains("flood") && !after.contains("buyer"));

    drop(w);
    let mut closed = 0.0;
    for _ in 0..100 {
        let t = metrics_text(s.addr).await;
        closed = sample(
            &t,
            "switchboard_connections_closed_total{transport=\"ws\",reason=\"client close\"}",
        );
        if closed == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closed, 1.0);
    s.stop().await;
}

/// Reads the first `stats` event of the dashboard feed.
async fn first_stats(addr: SocketAddr, path: &str) -> Result<Value, u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("in time")
            .expect("read");
        assert!(n > 0, "eof");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0);
        if status != 200 && text.contains("\r\n\r\n") {
            return Err(status);
        }
        if let Some(i) = text.find("event: stats\ndata: ") {
            let rest = &text[i + "event: stats\ndata: ".len()..];
            if let Some(end) = rest.find('\n') {
                return Ok(serde_json::from_str(&rest[..end]).expect("json"));
            }
        }
    }
}

#[tokio::test]
async fn dashboard_feed_reports_aggregates_and_needs_the_key_outside_development() {
    let s = serve(switchboard::build(&config(&[])).expect("build")).await;
    let mut w = ws(s.addr, "/ws?userId=viewer").await;
    next_json(&mut w).await;
    let stats = first_stats(s.addr, "/dashboard/stream")
        .await
        .expect("open in dev mode");
    assert_eq!(stats["connections"]["ws"], 1);
    assert!(stats["messages"]["out"].as_u64().expect("out") >= 1);
    assert_eq!(stats["holds"]["active"], 0);
    assert!(stats["topRooms"].is_array());
    s.stop().await;

    let s = serve(
        switchboard::build(&config(&[(
            "jwt_secret",
            "x-secret-of-at-least-thirty-two-b",
        )]))
        .expect("build"),
    )
    .await;
    assert_eq!(
        first_stats(s.addr, "/dashboard/stream").await.err(),
        Some(401)
    );
    assert_eq!(
        first_stats(s.addr, "/dashboard/stream?key=wrong")
            .await
            .err(),
        Some(401)
    );
    assert!(first_stats(s.addr, "/dashboard/stream?key=k").await.is_ok());
    s.stop().await;
}

/// A `[pusher]` app (client events on, one a second) on top of the usual overrides.
fn pusher_config() -> Config {
    let file = "[pusher]\nclient_events_per_sec = 1\n[[pusher.apps]]\nid = \"7\"\nkey = \"pk\"\nsecret = \"pusher-secret\"\nclient_events = true\n";
    Config::load(&Sources {
        file: Some(("pusher.toml".into(), file.into())),
        overrides: vec![
            ("data_dir".into(), "memory".into()),
            ("api_key".into(), "k".into()),
        ],
        ..Sources::default()
    })
    .expect("config")
}

#[tokio::test]
async fn pusher_connections_subscriptions_client_events_and_errors_are_counted() {
    use hmac::{Hmac, Mac};
    let s = serve(switchboard::build(&pusher_config()).expect("build")).await;
    let before = metrics_text(s.addr).await;
    promtool_check(&before);
    assert_eq!(
        sample(&before, "switchboard_connections{transport=\"pusher\"}"),
        0.0
    );
    assert_eq!(sample(&before, "switchboard_pusher_subscriptions"), 0.0);

    let mut a = ws(s.addr, "/app/pk?protocol=7&client=test&version=1").await;
    let hello = next_json(&mut a).await;
    let data: Value =
        serde_json::from_str(hello["data"].as_str().expect("data")).expect("json data");
    let id = data["socket_id"].as_str().expect("socket id").to_owned();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"pusher-secret").expect("key");
    mac.update(format!("{id}:private-q").as_bytes());
    let sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for (channel, auth) in [("public-a", None), ("private-q", Some(format!("pk:{sig}")))] {
        a.send(Message::text(
            json!({"event": "pusher:subscribe", "data": {"channel": channel, "auth": auth}})
                .to_string(),
        ))
        .await
        .expect("send");
        let f = next_json(&mut a).await;
        assert_eq!(f["event"], "pusher_internal:subscription_succeeded", "{f}");
    }
    // One client event a second: the second at once is refused with 4301.
    for _ in 0..2 {
        a.send(Message::text(
            json!({"event": "client-x", "channel": "private-q", "data": {}}).to_string(),
        ))
        .await
        .expect("send");
    }
    let e = next_json(&mut a).await;
    assert_eq!(e["event"], "pusher:error", "{e}");
    // An unknown app: 4001, refused at the upgrade.
    let mut bad = ws(s.addr, "/app/nope?protocol=7").await;
    expect_closed(&mut bad, Duration::from_secs(5)).await;

    let after = metrics_text(s.addr).await;
    promtool_check(&after);
    assert_eq!(
        sample(&after, "switchboard_connections{transport=\"pusher\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "switchboard_connections_opened_total{transport=\"pusher\"}"
        ),
        1.0
    );
    assert_eq!(sample(&after, "switchboard_pusher_subscriptions"), 2.0);
    assert_eq!(
        sample(&after, "switchboard_pusher_client_events_total"),
        1.0
    );
    assert_eq!(
        sample(&after, "switchboard_pusher_errors_total{code=\"4301\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "switchboard_pusher_errors_total{code=\"4001\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "switchboard_pusher_refused_total{cause=\"unknown_app\"}"
        ),
        1.0
    );

    let (status, body) = get_text(s.addr, "/stats").await;
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(stats["connections"]["pusher"], 1, "{stats}");
    let feed = first_stats(s.addr, "/dashboard/stream")
        .await
        .expect("open in dev mode");
    assert_eq!(feed["connections"]["pusher"], 1, "{feed}");

    // Gone: the gauges come back to 0.
    a.close(None).await.expect("close");
    for _ in 0..100 {
        let m = metrics_text(s.addr).await;
        if sample(&m, "switchboard_connections{transport=\"pusher\"}") == 0.0
            && sample(&m, "switchboard_pusher_subscriptions") == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = metrics_text(s.addr).await;
    assert_eq!(
        sample(&end, "switchboard_connections{transport=\"pusher\"}"),
        0.0
    );
    assert_eq!(sample(&end, "switchboard_pusher_subscriptions"), 0.0);
    s.stop().await;
}

/// Sends a `/ws` action and returns its ack's `data` (frames before it are skipped).
async fn ws_ask(w: &mut Ws, mut action: Value, id: u64) -> Value {
    action["ack"] = id.into();
    w.send(Message::Text(action.to_string().into()))
        .await
        .expect("send");
    loop {
        let f = next_json(w).await;
        if f["ack"] == id {
            return f["data"].clone();
        }
    }
}

#[tokio::test]
async fn chat_counters_are_valid_prometheus_and_count_what_happened() {
    let s = serve(switchboard::build(&config(&[])).expect("build")).await;
    let before = metrics_text(s.addr).await;
    promtool_check(&before);
    assert_eq!(
        sample(&before, "switchboard_chat_messages_stored_total"),
        0.0
    );
    assert_eq!(sample(&before, "switchboard_chat_store_seconds_count"), 0.0);

    let mut w = ws(s.addr, "/ws?userId=ana").await;
    next_json(&mut w).await;
    let created = ws_ask(&mut w, json!({"action": "room:create", "roomId": "m1"}), 1).await;
    assert_eq!(created["success"], true, "{created}");
    assert_eq!(
        ws_ask(&mut w, json!({"action": "join", "roomId": "m1"}), 2).await["success"],
        true
    );
    let send = json!({"action": "message", "roomId": "m1", "content": "hi", "clientMsgId": "c1"});
    assert_eq!(ws_ask(&mut w, send.clone(), 3).await["duplicate"], false);
    assert_eq!(
        ws_ask(&mut w, send, 4).await["duplicate"],
        true,
        "stores nothing"
    );
    let empty = json!({"action": "message", "roomId": "m1", "content": ""});
    assert_eq!(ws_ask(&mut w, empty, 5).await["success"], false);
    let typing = json!({"action": "typing", "roomId": "m1"});
    assert_eq!(ws_ask(&mut w, typing.clone(), 6).await["success"], true);
    assert_eq!(ws_ask(&mut w, typing, 7).await["success"], false);
    // The HTTP API's refusals are counted with the others.
    let (status, _) = http_with(
        s.addr,
        "POST",
        "/api/rooms/nowhere/messages",
        "Authorization: Bearer k\r\nContent-Type: application/json\r\n",
        br#"{"content": "x"}"#,
    )
    .await;
    assert_eq!(status, 404);

    let after = metrics_text(s.addr).await;
    promtool_check(&after);
    assert_eq!(
        sample(&after, "switchboard_chat_messages_stored_total"),
        1.0
    );
    // Every checked insert is timed: the two sends, and the API's (refused by the store:
    // no such room). The empty message never reached the store.
    assert_eq!(sample(&after, "switchboard_chat_store_seconds_count"), 3.0);
    let refused = |reason: &str| {
        sample(
            &after,
            &format!("switchboard_chat_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("empty_content"), 1.0);
    assert_eq!(refused("typing_throttled"), 1.0);
    assert_eq!(refused("unknown_room"), 1.0);
    assert_eq!(refused("not_member"), 0.0);
    assert_eq!(
        sample(&after, "switchboard_chat_typing_total{outcome=\"relayed\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "switchboard_chat_typing_total{outcome=\"throttled\"}"
        ),
        1.0
    );
}
