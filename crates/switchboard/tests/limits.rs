//! Connection admission over real sockets: the server, per-address and handshake-rate
//! limits refuse with 503 + `Retry-After` before any work, on every transport; counts are
//! released when connections end; `X-Forwarded-For` counts only from a trusted proxy.
//! Also the polling body limit at exactly and one over `max_payload`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchboard::config::{Config, Sources};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

fn config(pairs: &[(&str, &str)]) -> Config {
    let mut overrides: Vec<(String, String)> = vec![
        ("data_dir".into(), "memory".into()),
        ("api_key".into(), "k".into()),
    ];
    overrides.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources {
        overrides,
        ..Sources::default()
    })
    .expect("config")
}

/// Sends a GET with `headers` and returns the status and the raw response head.
async fn get_head(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let (status, head, _) = open_head(addr, path, headers).await;
    (status, head)
}

/// Like [`get_head`], keeping the connection (a streaming response stays open).
async fn open_head(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head only: an SSE response or a long poll keeps streaming.
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&raw).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, s)
}

fn retry_after(head: &str) -> Option<u32> {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().parse().ok())
        })
        .flatten()
}

const HANDSHAKE: &str = "/socket.io/?EIO=4&transport=polling";

/// A burst of 300 handshakes from one address with a limit of 50: exactly 50 sessions,
/// 250 refusals with `Retry-After`, counted; the healthy sessions keep working.
#[tokio::test]
async fn burst_from_one_address_gets_exactly_the_per_address_limit() {
    let s = serve(switchboard::build(&config(&[("max_connections_per_ip", "50")])).expect("build"))
        .await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let addr = s.addr;
        burst.spawn(async move { get_head(addr, HANDSHAKE, "").await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(done) = burst.join_next().await {
        let (status, head) = done.expect("task");
        match status {
            200 => ok += 1,
            503 => {
                assert_eq!(retry_after(&head), Some(5), "{head}");
                refused += 1;
            }
            other => panic!("unexpected status {other}: {head}"),
        }
    }
    assert_eq!((ok, refused), (50, 250));
    assert_eq!(s.app.limits.open(), 50);
    assert_eq!(s.app.session_count(), 50);
    let stats = s.app.limits.stats();
    assert_eq!(
        stats.refused[1].load(std::sync::atomic::Ordering::Relaxed),
        250,
        "counted as max_connections_per_ip"
    );
    let (_, open) = get_text(s.addr, HANDSHAKE).await;
    assert!(open.contains("too many connections"), "{open}");
    s.stop().await;
}

/// Every transport is refused at `max_connections`, and a closed connection frees its
/// place (the per-address entry is forgotten when nothing is open and the bucket is full).
#[tokio::test]
async fn server_limit_covers_every_transport_and_is_released() {
    let s = serve(switchboard::build(&config(&[("max_connections", "2")])).expect("build")).await;
    let mut ws1 = ws(s.addr, "/ws?userId=a").await;
    let (status, _, sse) = open_head(s.addr, "/events?userId=b", "").await;
    assert_eq!(status, 200, "an SSE stream is the second connection");
    assert_eq!(s.app.limits.open(), 2);
    for path in [
        "/ws?userId=c",
        "/events?userId=c",
        "/socket.io/?EIO=4&transport=polling",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        let (status, head) = get_head(
            s.addr,
            path,
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        )
        .await;
        assert_eq!(status, 503, "{path}: {head}");
        assert!(retry_after(&head).is_some(), "{path}: {head}");
    }
    let (status, metrics) = http_with(
        s.addr,
        "GET",
        "/metrics",
        "Authorization: Bearer k\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).expect("utf-8");
    assert!(
        metrics.contains("switchboard_connections_refused_total{limit=\"max_connections\"} 4"),
        "{metrics}"
    );
    ws1.close(None).await.expect("close");
    while ws1.next().await.is_some() {}
    eventually("a place freed", || s.app.limits.open() == 1).await;
    let mut ws3 = ws(s.addr, "/ws?userId=c").await;
    assert_eq!(s.app.limits.open(), 2);
    ws3.close(None).await.expect("close");
    while ws3.next().await.is_some() {}
    eventually("released", || s.app.limits.open() == 1).await;
    drop(sse);
    s.stop().await;
}

/// The handshake bucket: a burst, then one refusal whose `Retry-After` says when a token
/// is back; closed connections free nothing of the rate.
#[tokio::test]
async fn handshake_rate_per_address() {
    let s = start(conformance_config(&[
        ("handshake_rate_per_ip", "1"),
        ("handshake_burst_per_ip", "3"),
    ]))
    .await;
    for _ in 0..3 {
        assert_eq!(get_head(s.addr, HANDSHAKE, "").await.0, 200);
    }
    let (status, head) = get_head(s.addr, HANDSHAKE, "").await;
    assert_eq!((status, retry_after(&head)), (503, Some(1)), "{head}");
    assert_eq!(
        s.app.limits.stats().refused[2].load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    s.stop().await;
}

/// `X-Forwarded-For` names the client only when the peer is a trusted proxy.
#[tokio::test]
async fn forwarded_for_is_honoured_from_trusted_proxies_only() {
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let trusted = serve(
        switchboard::build(&config(&[
            ("max_connections_per_ip", "2"),
            ("trusted_proxies", "127.0.0.0/8"),
        ]))
        .expect("build"),
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            get_head(trusted.addr, HANDSHAKE, &xff("203.0.113.1"))
                .await
                .0,
            200
        );
    }
    assert_eq!(
        get_head(trusted.addr, HANDSHAKE, &xff("203.0.113.1"))
            .await
            .0,
        503
    );
    assert_eq!(
        get_head(trusted.addr, HANDSHAKE, &xff("203.0.113.2"))
            .await
            .0,
        200,
        "another client behind the same proxy has its own count"
    );
    trusted.stop().await;

    let untrusted = serve(
        switchboard::build(&config(&[
            ("max_connections_per_ip", "2"),
            ("trusted_proxies", "10.0.0.0/8"),
        ]))
        .expect("build"),
    )
    .await;
    for (i, client) in ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .enumerate()
    {
        let want = if i < 2 { 200 } else { 503 };
        assert_eq!(
            get_head(untrusted.addr, HANDSHAKE, &xff(client)).await.0,
            want,
            "an untrusted peer's header is ignored: every request is 127.0.0.1"
        );
    }
    untrusted.stop().await;
}

/// A polling body of exactly `max_payload` bytes is taken; one byte more is 413 and ends
/// that session only.
#[tokio::test]
async fn polling_body_at_and_one_over_max_payload() {
    // Odd, so that 1024 noop packets joined by the separator are exactly the limit.
    let s = serve(switchboard::build(&config(&[("max_payload", "2047")])).expect("build")).await;
    let noops = vec!["6"; 1024].join("\x1e");
    assert_eq!(noops.len(), 2047);
    let mut sessions = Vec::new();
    for (body, want) in [(noops.clone(), 200u16), (format!("{noops}\x1e"), 413)] {
        let (_, open) = get_text(s.addr, HANDSHAKE).await;
        let v: serde_json::Value = serde_json::from_str(&open[1..]).expect("handshake");
        let path = format!("{HANDSHAKE}&sid={}", v["sid"].as_str().expect("sid"));
        let (status, answer) = http(s.addr, "POST", &path, body.as_bytes()).await;
        assert_eq!(
            status,
            want,
            "{} bytes: {}",
            body.len(),
            String::from_utf8_lossy(&answer)
        );
        sessions.push(path);
    }
    eventually("only the session over the limit ended", || {
        s.app.session_count() == 1
    })
    .await;
    assert_eq!(
        get_text(s.addr, &sessions[1]).await.0,
        400,
        "that session is gone"
    );
    s.stop().await;
}

/// A Socket.IO `/realtime` client as `query` says (e.g. `userId=ann`), sending `auth` in
/// its CONNECT; returns the socket and the CONNECT answer.
async fn realtime_as(addr: SocketAddr, query: &str, auth: &str) -> (Ws, String) {
    let mut ws = ws(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&{query}"),
    )
    .await;
    assert!(next_text(&mut ws).await.starts_with('0'));
    ws.send(Message::Text(format!("40/realtime,{auth}").into()))
        .await
        .expect("send");
    let answer = next_text(&mut ws).await;
    (ws, answer)
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (status, body) =
        http_with(addr, "GET", "/metrics", "Authorization: Bearer k\r\n", b"").await;
    assert_eq!(status, 200);
    String::from_utf8(body).expect("utf-8")
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// `max_connections_per_user` counts one user's connections on every transport together:
/// over it `/ws` and `/events` get 503 + `Retry-After` before any work and a Socket.IO
/// CONNECT a `connect_error` naming the limit; other users are not affected; a closed
/// connection frees its place; a Socket.IO session waiting for recovery keeps its place,
/// and recovering it is not a new connection.
#[tokio::test]
async fn per_user_connection_limit_covers_every_transport() {
    let s =
        serve(switchboard::build(&config(&[("max_connections_per_user", "2")])).expect("build"))
            .await;
    let (mut sio, answer) = realtime_as(s.addr, "userId=ann", "{}").await;
    assert!(answer.starts_with("40/realtime,{\"sid\""), "{answer}");
    let pid = serde_json::from_str::<serde_json::Value>(&answer["40/realtime,".len()..])
        .expect("connect answer")["pid"]
        .as_str()
        .expect("pid")
        .to_owned();
    let mut ws1 = ws(s.addr, "/ws?userId=ann").await;
    assert!(next_text(&mut ws1).await.contains("\"connected\""));

    for path in ["/ws?userId=ann", "/events?userId=ann"] {
        let (status, head) = get_head(s.addr, path, UPGRADE).await;
        assert_eq!(status, 503, "{path}: {head}");
        assert_eq!(retry_after(&head), Some(5), "{path}: {head}");
        assert!(head.contains("max_connections_per_user"), "{path}: {head}");
    }
    let (_, refused) = realtime_as(s.addr, "userId=ann", "{}").await;
    assert_eq!(
        refused,
        "44/realtime,{\"message\":\"Too many connections for this user\",\"data\":{\"limit\":\"max_connections_per_user\",\"retryAfter\":5}}"
    );
    let (_bob, bob) = realtime_as(s.addr, "userId=bob", "{}").await;
    assert!(
        bob.starts_with("40/realtime,{\"sid\""),
        "another user: {bob}"
    );
    let m = metrics_text(s.addr).await;
    assert!(
        m.contains("switchboard_connections_refused_total{limit=\"max_connections_per_user\"} 3"),
        "{m}"
    );
    assert!(m.contains("switchboard_limit_tracked_users 2"), "{m}");

    // A message to ann's user room gives the Socket.IO client an offset to recover from.
    let (status, _) = http_with(
        s.addr,
        "POST",
        "/api/publish",
        "Authorization: Bearer k\r\nContent-Type: application/json\r\n",
        br#"{"user":"ann","event":"note","data":1}"#,
    )
    .await;
    assert_eq!(status, 200);
    let offset = loop {
        let frame = next_text(&mut sio).await;
        if let Some(rest) = frame.strip_prefix("42/realtime,[\"note\",1,\"") {
            break rest.trim_end_matches("\"]").to_owned();
        }
    };
    // The transport drops: the session waits for recovery and keeps ann's place.
    drop(sio);
    eventually("the session is detached", || s.app.hub.stats().members == 2).await;
    let (status, _) = get_head(s.addr, "/events?userId=ann", "").await;
    assert_eq!(status, 503, "a session waiting for recovery still counts");
    let (_sio, resumed) = realtime_as(
        s.addr,
        "userId=ann",
        &format!("{{\"pid\":\"{pid}\",\"offset\":\"{offset}\"}}"),
    )
    .await;
    assert!(
        resumed.contains(&format!("\"pid\":\"{pid}\"")),
        "recovered at the limit: {resumed}"
    );
    let (status, _) = get_head(s.addr, "/ws?userId=ann", UPGRADE).await;
    assert_eq!(status, 503, "the recovered session holds the same place");

    ws1.close(None).await.expect("close");
    while ws1.next().await.is_some() {}
    let mut freed = false;
    for _ in 0..100 {
        let url = format!("ws://{}/ws?userId=ann", s.addr);
        if let Ok((mut w, _)) = tokio_tungstenite::connect_async(url).await {
            freed = true;
            let _ = w.close(None).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(freed, "the closed /ws connection's place was released");
    s.stop().await;
}

/// One event bucket per user, shared by its connections on every transport, on top of
/// each connection's own: the fourth event of a burst of three is refused wherever it is
/// sent, with a message that says so, and counted; another user has its own bucket.
#[tokio::test]
async fn per_user_event_rate_is_shared_by_the_users_connections() {
    let s = serve(
        switchboard::build(&config(&[
            ("rate_limit_per_sec", "0"),
            ("rate_limit_per_user_per_sec", "1"),
            ("rate_limit_per_user_burst", "3"),
        ]))
        .expect("build"),
    )
    .await;
    let mut a = ws(s.addr, "/ws?userId=ann").await;
    assert!(next_text(&mut a).await.contains("\"connected\""));
    let mut b = ws(s.addr, "/ws?userId=ann").await;
    assert!(next_text(&mut b).await.contains("\"connected\""));
    let (mut sio, answer) = realtime_as(s.addr, "userId=ann", "{}").await;
    assert!(answer.starts_with("40/realtime,"), "{answer}");
    assert!(next_text(&mut sio).await.contains("\"connected\""));

    for (i, first) in [true, false, true].into_iter().enumerate() {
        let conn = if first { &mut a } else { &mut b };
        conn.send(Message::Text("{\"action\":\"ping\"}".into()))
            .await
            .expect("send");
        let answer = next_text(conn).await;
        assert!(answer.contains("\"pong\""), "event {i}: {answer}");
    }
    sio.send(Message::Text(
        "42/realtime,7[\"join-event-room\",{\"eventId\":1}]".into(),
    ))
    .await
    .expect("send");
    let refused = next_text(&mut sio).await;
    assert!(
        refused.starts_with("43/realtime,7[{")
            && refused.contains("\"success\":false")
            && refused.contains("per user, across all of its connections"),
        "{refused}"
    );
    b.send(Message::Text("{\"action\":\"ping\"}".into()))
        .await
        .expect("send");
    let refused = next_text(&mut b).await;
    assert!(
        refused.contains("\"error\"") && refused.contains("per user"),
        "{refused}"
    );

    let mut bob = ws(s.addr, "/ws?userId=bob").await;
    assert!(next_text(&mut bob).await.contains("\"connected\""));
    bob.send(Message::Text("{\"action\":\"ping\"}".into()))
        .await
        .expect("send");
    assert!(
        next_text(&mut bob).await.contains("\"pong\""),
        "bob's own bucket"
    );

    let m = metrics_text(s.addr).await;
    for (transport, n) in [("socketio", 1), ("ws", 1), ("pusher", 0)] {
        let line = format!("switchboard_user_rate_limited_total{{transport=\"{transport}\"}} {n}");
        assert!(m.contains(&line), "{line} in {m}");
    }
    s.stop().await;
}
