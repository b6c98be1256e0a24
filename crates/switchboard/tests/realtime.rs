//! `/realtime` over real sockets: auth refusals, /stats, the admin API, and bad input that
//! must change nothing.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use switchboard::config::{Config, Sources};
use tokio_tungstenite::tungstenite::Message;

fn config(pairs: &[(&str, &str)]) -> Config {
    let mut overrides: Vec<(String, String)> = vec![
        ("data_dir".into(), "memory".into()),
        ("coalesce_ms".into(), "0".into()),
    ];
    overrides.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources {
        overrides,
        ..Sources::default()
    })
    .expect("config")
}

async fn realtime(addr: std::net::SocketAddr, query: &str, auth: &str) -> (Ws, String) {
    let mut ws = ws(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket{query}"),
    )
    .await;
    next_text(&mut ws).await;
    ws.send(Message::Text(format!("40/realtime,{auth}").into()))
        .await
        .expect("send");
    let answer = next_text(&mut ws).await;
    (ws, answer)
}

async fn json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get_text(addr, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("json")
}

#[tokio::test]
async fn jwt_mode_refuses_missing_bad_and_expired_tokens_and_accepts_good_ones() {
    let s = serve(
        switchboard::build(&config(&[(
            "jwt_secret",
            "k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!",
        )]))
        .expect("build"),
    )
    .await;
    let (_, a) = realtime(s.addr, "", "{}").await;
    assert_eq!(
        a,
        "44/realtime,{\"message\":\"Authentication required: no token\"}"
    );
    let (_, a) = realtime(s.addr, "&token=nonsense", "{}").await;
    assert_eq!(a, "44/realtime,{\"message\":\"Invalid token\"}");
    let key = jsonwebtoken::EncodingKey::from_secret(b"k3y-k3y-k3y-k3y-k3y-k3y-k3y-k3y!");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let tok = |exp: i64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "u9", "exp": exp}),
            &key,
        )
        .expect("encode")
    };
    let (_, a) = realtime(s.addr, "", &format!("{{\"token\":\"{}\"}}", tok(now - 5))).await;
    assert_eq!(a, "44/realtime,{\"message\":\"Token expired\"}");
    let (mut ws, a) = realtime(
        s.addr,
        "&userId=impostor",
        &format!("{{\"token\":\"{}\"}}", tok(now + 60)),
    )
    .await;
    assert!(a.starts_with("40/realtime,{\"sid\""), "{a}");
    assert!(
        next_text(&mut ws)
            .await
            .starts_with("42/realtime,[\"connected\",{")
    );
    ws.send(Message::Text("42/realtime,1[\"get-my-locks\",{}]".into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut ws).await, "43/realtime,1[{\"locks\":[]}]");
    s.stop().await;
}

#[tokio::test]
async fn stats_and_admin_api() {
    let s = serve(switchboard::build(&config(&[("api_key", "adm1n")])).expect("build")).await;
    assert_eq!(json(s.addr, "/health").await["status"], "ok");
    assert_eq!(json(s.addr, "/ready").await["status"], "ready");
    let (mut ws, _) = realtime(
        s.addr,
        "&userId=7",
        "{\"token\":\"fake_jwt_token_for_testing\"}",
    )
    .await;
    next_text(&mut ws).await; // connected
    ws.send(Message::Text(
        "42/realtime,1[\"lock-tickets\",{\"eventId\":1,\"categoryId\":1,\"quantity\":2}]".into(),
    ))
    .await
    .expect("send");
    let ack = next_text(&mut ws).await;
    assert!(
        ack.starts_with("43/realtime,1[{") && ack.contains("\"success\":true"),
        "{ack}"
    );
    let stats = json(s.addr, "/stats").await;
    assert_eq!(stats["service"], "realtime-service");
    assert_eq!(stats["connectedUsers"], 1);
    assert_eq!(stats["ticketLocks"]["activeLocks"], 1);
    assert_eq!(stats["ticketLocks"]["usersWithLocks"], 1);
    assert_eq!(stats["ticketLocks"]["locksByStatus"]["active"], 1);

    let body = br#"{"name":"New show","categories":[{"id":1,"name":"GA","price":5.0,"totalSeats":50,"availableSeats":50}]}"#;
    let (st, _) = http_with(
        s.addr,
        "PUT",
        "/api/events/9",
        "Content-Type: application/json\r\n",
        body,
    )
    .await;
    assert_eq!(st, 401, "no key");
    let (st, _) = http_with(
        s.addr,
        "PUT",
        "/api/events/9",
        "Content-Type: application/json\r\nAuthorization: Bearer wrong\r\n",
        body,
    )
    .await;
    assert_eq!(st, 401, "wrong key");
    let auth = "Content-Type: application/json\r\nAuthorization: Bearer adm1n\r\n";
    let (st, _) = http_with(s.addr, "PUT", "/api/events/9", auth, b"{not json").await;
    assert_eq!(st, 400);
    let bad = br#"{"name":"x","categories":[{"id":1,"name":"GA","price":5.0,"totalSeats":5,"availableSeats":50}]}"#;
    let (st, _) = http_with(s.addr, "PUT", "/api/events/9", auth, bad).await;
    assert_eq!(st, 422, "available above total");
    let (st, b) = http_with(s.addr, "PUT", "/api/events/9", auth, body).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let events = json(s.addr, "/api/events").await;
    assert!(
        events["events"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e["id"] == 9)
    );

    // A capacity change reaches the event room.
    ws.send(Message::Text(
        "42/realtime,2[\"join-event-room\",{\"eventId\":1}]".into(),
    ))
    .await
    .expect("send");
    for _ in 0..6 {
        next_text(&mut ws).await; // the earlier lock-tickets-response, then ack, joined, 3 updates
    }
    let cat = br#"{"id":1,"name":"VIP","price":250.0,"totalSeats":30,"availableSeats":30}"#;
    let (st, _) = http_with(s.addr, "PUT", "/api/events/1/categories/1", auth, cat).await;
    assert_eq!(st, 200);
    let update = next_text(&mut ws).await;
    assert!(
        update.contains("\"availability-update\"") && update.contains("\"totalTickets\":30"),
        "{update}"
    );
    assert!(
        update.contains("\"availableTickets\":28"),
        "2 held: {update}"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_flood_of_lock_requests_is_served_in_order_and_grants_one_hold() {
    // Ordering and back-pressure under a flood, so the rate limit is off here (it has its
    // own test in tests/metrics.rs).
    let s = serve(
        switchboard::build(&config(&[
            ("rate_limit_per_sec", "0"),
            ("rate_limit_per_user_per_sec", "0"),
        ]))
        .expect("build"),
    )
    .await;
    let (mut ws, _) = realtime(s.addr, "&userId=flood", "{}").await;
    next_text(&mut ws).await; // connected
    for i in 0..500 {
        ws.feed(Message::Text(format!("42/realtime,{i}[\"lock-tickets\",{{\"eventId\":1,\"categoryId\":3,\"quantity\":1}}]").into()))
            .await
            .expect("feed");
    }
    ws.flush().await.expect("flush");
    let mut granted = 0;
    let mut acks = 0;
    while acks < 500 {
        let t = next_text(&mut ws).await;
        if t.starts_with("43/realtime,") {
            assert!(
                t.starts_with(&format!("43/realtime,{acks}[")),
                "in order: {t}"
            );
            acks += 1;
            if t.contains("\"success\":true") {
                granted += 1;
            }
        }
    }
    assert_eq!(granted, 1, "one hold per user per category");
    let stats = json(s.addr, "/stats").await;
    assert_eq!(stats["ticketLocks"]["activeLocks"], 1);
    // A megabyte payload is over max_payload: that connection closes, the server serves on.
    let big = format!(
        "42/realtime,[\"lock-tickets\",\"{}\"]",
        "x".repeat(1_100_000)
    );
    let _ = ws.send(Message::Text(big.into())).await;
    expect_closed(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(
        json(s.addr, "/stats").await["ticketLocks"]["activeLocks"],
        1,
        "a closed transport keeps holds while recoverable"
    );
    s.stop().await;
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_public_key_and_hs256_is_refused() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let s = serve(
        switchboard::build(&config(&[(
            "jwt_public_key_file",
            &format!("{dir}/rsa_public.pem"),
        )]))
        .expect("build"),
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let claims = serde_json::json!({"userId": 77, "exp": now + 60});
    let private = std::fs::read(format!("{dir}/rsa_private.pem")).expect("fixture");
    let rs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("key"),
    )
    .expect("sign");
    let (_, a) = realtime(s.addr, "", &format!("{{\"token\":\"{rs}\"}}")).await;
    assert!(a.starts_with("40/realtime,{\"sid\""), "{a}");
    // Algorithm confusion: HS256 signed with the public key's bytes is refused.
    let public = std::fs::read(format!("{dir}/rsa_public.pem")).expect("fixture");
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .expect("sign");
    let (_, a) = realtime(s.addr, "", &format!("{{\"token\":\"{hs}\"}}")).await;
    assert_eq!(a, "44/realtime,{\"message\":\"Invalid token\"}");
    s.stop().await;
}

#[tokio::test]
async fn holds_of_a_lost_transport_are_released_when_the_recovery_window_closes() {
    let s =
        serve(switchboard::build(&config(&[("recovery_window_secs", "1")])).expect("build")).await;
    let (mut ws, _) = realtime(s.addr, "&userId=gone", "{}").await;
    next_text(&mut ws).await; // connected
    ws.send(Message::Text(
        "42/realtime,1[\"lock-tickets\",{\"eventId\":2,\"categoryId\":4,\"quantity\":3}]".into(),
    ))
    .await
    .expect("send");
    assert!(next_text(&mut ws).await.contains("\"success\":true"));
    drop(ws); // the transport is lost, not a client disconnect
    let active = || async { json(s.addr, "/stats").await["ticketLocks"]["activeLocks"].as_u64() };
    assert_eq!(
        active().await,
        Some(1),
        "kept while the client may still recover"
    );
    for _ in 0..60 {
        if active().await == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(active().await, Some(0), "released when the window closed");
    s.stop().await;
}
