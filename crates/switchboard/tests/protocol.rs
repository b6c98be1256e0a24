//! The Engine.IO / Socket.IO contract in our own words, against a real server on port 0.
//! Every bad input gets the protocol's answer, and a healthy client beside it keeps working.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn sid_of(open: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&open[1..]).expect("handshake json");
    v["sid"].as_str().expect("sid").to_owned()
}

#[tokio::test]
async fn polling_handshake_has_exactly_the_expected_fields() {
    let s = start(conformance_config(&[])).await;
    let (status, body) = get_text(s.addr, "/socket.io/?EIO=4&transport=polling").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body[1..]).expect("json");
    let mut keys: Vec<_> = v.as_object().expect("object").keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    assert_eq!(v["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(
        (v["pingInterval"].as_u64(), v["pingTimeout"].as_u64()),
        (Some(300), Some(200))
    );
    s.stop().await;
}

#[tokio::test]
async fn bad_handshakes_get_400() {
    let s = start(conformance_config(&[])).await;
    for path in [
        "/socket.io/?transport=polling",
        "/socket.io/?EIO=3&transport=polling",
        "/socket.io/?EIO=4",
        "/socket.io/?EIO=4&transport=carrier-pigeon",
        "/socket.io/?EIO=4&transport=polling&sid=unknownunknownunknow",
        "/socket.io/?EIO=4&transport=polling&sid=%00%01",
    ] {
        assert_eq!(get_text(s.addr, path).await.0, 400, "{path}");
    }
    let (status, _) = http(s.addr, "POST", "/socket.io/?EIO=4&transport=polling", b"40").await;
    assert_eq!(status, 400, "POST without sid");
    s.stop().await;
}

#[tokio::test]
async fn polling_session_round_trip_and_invalid_packet_ends_only_that_session() {
    let s = start(conformance_config(&[
        ("ping_interval_ms", "5000"),
        ("ping_timeout_ms", "5000"),
    ]))
    .await;
    let mut healthy = sio_main(s.addr).await;
    let (_, open) = get_text(s.addr, "/socket.io/?EIO=4&transport=polling").await;
    let sid = sid_of(&open);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    assert_eq!(
        http(s.addr, "POST", &path, b"40").await,
        (200, b"ok".to_vec())
    );
    let (_, body) = get_text(s.addr, &path).await;
    assert!(body.starts_with("40{\"sid\":"), "{body}");
    // The conformance server sends `auth` in a write of its own, just after the CONNECT
    // answer: it comes in the same poll or the next one.
    if !body.ends_with("\x1e42[\"auth\",{}]") {
        let (_, next) = get_text(s.addr, &path).await;
        assert_eq!(next, "42[\"auth\",{}]");
    }
    assert_eq!(
        http(
            s.addr,
            "POST",
            &path,
            b"42[\"message\",1]\x1e42[\"message\",2]"
        )
        .await
        .0,
        200
    );
    let (_, body) = get_text(s.addr, &path).await;
    assert_eq!(body, "42[\"message-back\",1]\x1e42[\"message-back\",2]");
    // Not Engine.IO: 400 and the session is gone.
    assert_eq!(http(s.addr, "POST", &path, b"abc").await.0, 400);
    assert_eq!(get_text(s.addr, &path).await.0, 400);
    assert_echo(&mut healthy, "still here").await;
    s.stop().await;
}

#[tokio::test]
async fn polling_rejects_invalid_utf8_and_oversized_bodies() {
    let s = start(conformance_config(&[
        ("max_payload", "2048"),
        ("ping_interval_ms", "5000"),
        ("ping_timeout_ms", "5000"),
    ]))
    .await;
    let mut healthy = sio_main(s.addr).await;
    for (body, want) in [(vec![b'4', 0xff, 0xfe], 400u16), (vec![b'4'; 4096], 413)] {
        let (_, open) = get_text(s.addr, "/socket.io/?EIO=4&transport=polling").await;
        let path = format!("/socket.io/?EIO=4&transport=polling&sid={}", sid_of(&open));
        assert_eq!(http(s.addr, "POST", &path, &body).await.0, want);
        assert_eq!(
            get_text(s.addr, &path).await.0,
            400,
            "session closed after bad body"
        );
    }
    assert_echo(&mut healthy, "unaffected").await;
    s.stop().await;
}

#[tokio::test]
async fn websocket_bad_input_closes_only_the_offender() {
    let s = start(conformance_config(&[
        ("max_payload", "4096"),
        ("max_attachments", "2"),
        ("ping_interval_ms", "10000"),
        ("ping_timeout_ms", "10000"),
    ]))
    .await;
    let mut healthy = sio_main(s.addr).await;
    let deep = format!("42[\"message\",{}{}]", "[".repeat(200), "]".repeat(200));
    let big = format!("42[\"message\",\"{}\"]", "x".repeat(10_000));
    let cases: Vec<(&str, Message)> = vec![
        ("unknown packet type", Message::Text("4abc".into())),
        ("event payload not an array", Message::Text("42{}".into())),
        ("invalid ack id", Message::Text("42abc[\"message\"]".into())),
        ("event name not a string", Message::Text("42[1,2]".into())),
        (
            "too many attachments",
            Message::Text("453-[\"message\",1]".into()),
        ),
        ("deeply nested json", Message::Text(deep.into())),
        (
            "truncated multibyte text",
            Message::Text("42[\"message\",\"\u{e9}".into()),
        ),
        ("oversized message", Message::Text(big.into())),
        (
            "binary without a pending packet",
            Message::Binary(vec![1, 2, 3].into()),
        ),
        ("not engine.io", Message::Text("9".into())),
        (
            "event for a namespace never joined",
            Message::Text("42/custom,[\"message\"]".into()),
        ),
        (
            "client sends CONNECT_ERROR",
            Message::Text("44{\"message\":\"x\"}".into()),
        ),
    ];
    for (what, msg) in cases {
        let mut bad = sio_main(s.addr).await;
        bad.send(msg).await.expect("send");
        expect_closed(&mut bad, Duration::from_secs(3)).await;
        assert_echo(&mut healthy, what).await;
    }
    // Invalid UTF-8 in a text frame is refused by the WebSocket layer itself.
    eventually("offenders' sessions released", || {
        s.app.session_count() == 1
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn unknown_namespace_and_duplicate_connect_get_connect_error() {
    let s = start(conformance_config(&[])).await;
    let mut ws = sio_main(s.addr).await;
    ws.send(Message::Text("40/random,".into()))
        .await
        .expect("send");
    assert_eq!(
        next_text(&mut ws).await,
        "44/random,{\"message\":\"Invalid namespace\"}"
    );
    ws.send(Message::Text("40".into())).await.expect("send");
    assert_eq!(
        next_text(&mut ws).await,
        "44{\"message\":\"Already connected to this namespace\"}"
    );
    // The existing socket keeps its state and its handlers ran once.
    assert_echo(&mut ws, "same socket").await;
    s.stop().await;
}

#[tokio::test]
async fn binary_event_and_ack_keep_placeholders_and_attachments() {
    let s = start(conformance_config(&[])).await;
    let mut ws = sio_main(s.addr).await;
    ws.send(Message::Text(
        "451-12[\"message-with-ack\",{\"_placeholder\":true,\"num\":0}]".into(),
    ))
    .await
    .expect("send");
    ws.send(Message::Binary(vec![9, 8, 7].into()))
        .await
        .expect("send");
    assert_eq!(
        next_text(&mut ws).await,
        "461-12[{\"_placeholder\":true,\"num\":0}]"
    );
    let bin = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut ws),
    )
    .await
    .expect("frame");
    assert_eq!(
        bin.expect("frame").expect("ok"),
        Message::Binary(vec![9, 8, 7].into())
    );
    // Text while attachments are outstanding is a corrupt stream.
    ws.send(Message::Text(
        "451-[\"message\",{\"_placeholder\":true,\"num\":0}]".into(),
    ))
    .await
    .expect("send");
    ws.send(Message::Text("42[\"message\"]".into()))
        .await
        .expect("send");
    expect_closed(&mut ws, Duration::from_secs(3)).await;
    s.stop().await;
}

#[tokio::test]
async fn client_that_never_connects_is_closed_after_connect_timeout() {
    let s = start(conformance_config(&[
        ("ping_interval_ms", "10000"),
        ("ping_timeout_ms", "10000"),
        ("connect_timeout_ms", "200"),
    ]))
    .await;
    let mut ws = ws(s.addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut ws).await.starts_with('0'));
    expect_closed(&mut ws, Duration::from_secs(3)).await;
    eventually("session released", || s.app.session_count() == 0).await;
    s.stop().await;
}

#[tokio::test]
async fn client_that_stops_answering_pings_is_closed() {
    let s = start(conformance_config(&[])).await;
    let mut mute = ws(s.addr, "/socket.io/?EIO=4&transport=websocket").await;
    // Read without answering: the server pings at 300 ms and gives up 200 ms later.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        let mut pings = 0;
        loop {
            match futures_util::StreamExt::next(&mut mute).await {
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => pings += 1,
                Some(Ok(Message::Text(_))) => {}
                _ => return pings,
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(closed, 1, "exactly one unanswered ping, then the close");
    eventually("session released", || s.app.session_count() == 0).await;
    let mut fresh = sio_main(s.addr).await;
    assert_echo(&mut fresh, "server still serving").await;
    s.stop().await;
}

#[tokio::test]
async fn rooms_reach_members_only_and_sessions_are_released() {
    let s = start(conformance_config(&[
        ("ping_interval_ms", "10000"),
        ("ping_timeout_ms", "10000"),
    ]))
    .await;
    let connect_e2e = || async {
        let mut ws = ws(s.addr, "/socket.io/?EIO=4&transport=websocket").await;
        next_text(&mut ws).await;
        ws.send(Message::Text("40/e2e,".into()))
            .await
            .expect("send");
        let ok = next_text(&mut ws).await;
        assert!(
            ok.starts_with("40/e2e,{\"sid\":") && ok.contains("\"pid\""),
            "{ok}"
        );
        ws
    };
    let mut a = connect_e2e().await;
    let mut b = connect_e2e().await;
    let mut c = connect_e2e().await;
    for ws in [&mut a, &mut b] {
        ws.send(Message::Text("42/e2e,1[\"join\",\"r1\"]".into()))
            .await
            .expect("send");
        assert_eq!(next_text(ws).await, "43/e2e,1[\"r1\"]");
    }
    c.send(Message::Text(
        "42/e2e,[\"to-room\",\"r1\",\"hello\",{\"n\":1}]".into(),
    ))
    .await
    .expect("send");
    for ws in [&mut a, &mut b] {
        let got = next_text(ws).await;
        assert!(
            got.starts_with("42/e2e,[\"hello\",{\"n\":1},\""),
            "offset appended: {got}"
        );
    }
    // C was not in the room: its next frame is its own ack, not the broadcast.
    c.send(Message::Text("42/e2e,5[\"rooms\"]".into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut c).await, "43/e2e,5[[]]");
    assert_eq!(s.app.hub.room_info("/e2e#r1").map(|r| r.members), Some(2));
    drop(a);
    drop(b);
    drop(c);
    eventually("sessions released", || s.app.session_count() == 0).await;
    s.stop().await;
}

#[tokio::test]
async fn recovery_with_unknown_pid_or_offset_starts_fresh() {
    let s = start(conformance_config(&[])).await;
    let mut ws = ws(s.addr, "/socket.io/?EIO=4&transport=websocket").await;
    next_text(&mut ws).await;
    ws.send(Message::Text(
        "40/e2e,{\"pid\":\"nope\",\"offset\":\"12\"}".into(),
    ))
    .await
    .expect("send");
    let ok = next_text(&mut ws).await;
    assert!(
        ok.starts_with("40/e2e,{\"sid\":") && !ok.contains("\"nope\""),
        "{ok}"
    );
    s.stop().await;
}

#[tokio::test]
async fn shutdown_closes_sessions_with_going_away_and_returns() {
    let s = start(conformance_config(&[
        ("ping_interval_ms", "10000"),
        ("ping_timeout_ms", "10000"),
    ]))
    .await;
    let mut ws = sio_main(s.addr).await;
    let addr = s.addr;
    let stopping = tokio::spawn(s.stop());
    let code = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match futures_util::StreamExt::next(&mut ws).await {
                Some(Ok(Message::Close(Some(f)))) => return Some(u16::from(f.code)),
                None | Some(Err(_)) | Some(Ok(Message::Close(None))) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed in time");
    assert_eq!(code, Some(1001), "going away");
    stopping.await.expect("stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

/// A burst of connections larger than tokio's default backlog (128) is queued by the
/// kernel while nothing accepts, instead of losing SYNs (a 1 s retry for those clients).
#[tokio::test]
async fn listener_queues_a_connection_burst() {
    let listener = switchboard::server::bind("127.0.0.1:0".parse().expect("addr"), 1024)
        .expect("bind with a backlog");
    let addr = listener.local_addr().expect("addr");
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..600 {
        connects.spawn(async move {
            tokio::time::timeout(
                std::time::Duration::from_millis(700),
                tokio::net::TcpStream::connect(addr),
            )
            .await
        });
    }
    let mut open = Vec::new();
    while let Some(done) = connects.join_next().await {
        let stream = done
            .expect("task")
            .expect("connected within 700 ms (no SYN retry)")
            .expect("connect");
        open.push(stream);
    }
    assert_eq!(open.len(), 600);
    drop(listener);
}

/// A successful recovery replays every missed room message, the first one included, in
/// order, after the CONNECT answer that names the same `pid`.
#[tokio::test]
async fn recovery_replays_every_missed_message_from_the_first() {
    let s = start(conformance_config(&[
        ("ping_interval_ms", "10000"),
        ("ping_timeout_ms", "10000"),
    ]))
    .await;
    let connect_e2e = |auth: String| async move {
        let mut ws = ws(s.addr, "/socket.io/?EIO=4&transport=websocket").await;
        next_text(&mut ws).await;
        ws.send(Message::Text(format!("40/e2e,{auth}").into()))
            .await
            .expect("send");
        let ok = next_text(&mut ws).await;
        let body: serde_json::Value =
            serde_json::from_str(ok.strip_prefix("40/e2e,").expect("connect answer"))
                .expect("json");
        (ws, body["pid"].as_str().expect("pid").to_owned())
    };
    let (mut a, pid) = connect_e2e(String::new()).await;
    let (mut b, _) = connect_e2e(String::new()).await;
    a.send(Message::Text("42/e2e,1[\"join\",\"r1\"]".into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut a).await, "43/e2e,1[\"r1\"]");
    let to_room = |n: u32| Message::Text(format!("42/e2e,[\"to-room\",\"r1\",\"m\",{n}]").into());
    b.send(to_room(0)).await.expect("send");
    let seen = next_text(&mut a).await;
    let offset = seen
        .strip_prefix("42/e2e,[\"m\",0,\"")
        .and_then(|r| r.strip_suffix("\"]"))
        .unwrap_or_else(|| panic!("an offset: {seen}"))
        .to_owned();
    // The transport is lost (not a client disconnect): the session waits for recovery.
    drop(a);
    eventually("a detached, recoverable session", || {
        s.app.hub.room_info("/e2e#r1").map(|r| r.members) == Some(0)
    })
    .await;
    for n in 1..=3 {
        b.send(to_room(n)).await.expect("send");
    }
    // B is in no room: its ack-less sends are done once the hub holds all three.
    eventually("three more messages in the room's history", || {
        s.app.hub.room_info("/e2e#r1").map(|r| r.history) == Some(4)
    })
    .await;
    let (mut a, again) =
        connect_e2e(format!("{{\"pid\":\"{pid}\",\"offset\":\"{offset}\"}}")).await;
    assert_eq!(again, pid, "the same session is recovered");
    for n in 1..=3 {
        let got = next_text(&mut a).await;
        assert!(
            got.starts_with(&format!("42/e2e,[\"m\",{n},\"")),
            "missed message {n} replayed in order, got {got}"
        );
    }
    s.stop().await;
}
