//! The events-service client against misbehaving peers on 127.0.0.1: down, silent,
//! garbage, oversized frames, an `err` answer, a malformed answer. Each is a refusal
//! (`Failed to verify ticket availability`) that changes nothing; a well-behaved peer
//! (our own codec, non-ASCII names) is accepted. The real NestJS peer is in
//! `e2e/test/nestjs-tcp.test.mjs`.

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::*;
use futures_util::{SinkExt, StreamExt};
use switchboard::config::{Config, Sources};
use tokio_tungstenite::tungstenite::Message;

use serde_json::{Value, json};
use switchboard::nest::{FrameCodec, encode_frame};
use switchboard::tickets::{EventsClient, EventsServiceConfig, SourceError};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::codec::FramedRead;

fn client(port: u16) -> std::sync::Arc<EventsClient> {
    EventsClient::new(EventsServiceConfig {
        addr: format!("127.0.0.1:{port}"),
        timeout: Duration::from_millis(500),
        cache_ttl: Duration::from_millis(0),
        max_frame: 4096,
    })
}

/// A peer that answers each request frame with `answer(request)` raw bytes.
async fn peer(answer: impl Fn(&Value) -> Vec<u8> + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let (read, mut write) = s.into_split();
            let mut requests = FramedRead::new(read, FrameCodec::new(1 << 20));
            while let Some(Ok(text)) = requests.next().await {
                let req: Value = serde_json::from_str(&text).expect("request json");
                if write.write_all(&answer(&req)).await.is_err() {
                    break;
                }
            }
        }
    });
    port
}

fn frame(v: Value) -> Vec<u8> {
    encode_frame(&v.to_string())
}

#[tokio::test]
async fn a_well_behaved_peer_with_non_ascii_names_is_understood() {
    let port = peer(|req| {
        assert_eq!(req["pattern"], "get-ticket-categories");
        assert_eq!(req["data"], 42);
        // Split the answer across two frames the NestJS way: response, then disposal.
        let mut out = frame(json!({"id": req["id"], "response": [
            {"id": 1, "name": "Zoné VIP — 🎟️ 前列", "price": 10.5, "totalSeats": 5, "availableSeats": 4}
        ]}));
        out.extend(frame(json!({"id": req["id"], "isDisposed": true})));
        out
    })
    .await;
    let c = client(port);
    for _ in 0..3 {
        let cats = c.categories(42).await.expect("answer");
        assert_eq!(cats[0].name, "Zoné VIP — 🎟️ 前列");
        assert_eq!(cats[0].available_seats, 4);
    }
}

#[tokio::test]
async fn misbehaving_peers_are_clear_errors_within_the_timeout() {
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cases: Vec<(&str, u16)> = vec![
        ("down", down),
        ("silent", peer(|_| Vec::new()).await),
        ("garbage", peer(|_| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()).await),
        ("oversized", peer(|_| b"99999999#{".to_vec()).await),
        (
            "err",
            peer(|r| frame(json!({"id": r["id"], "err": {"status": "error", "message": "db down"}, "isDisposed": true}))).await,
        ),
        (
            "malformed",
            peer(|r| frame(json!({"id": r["id"], "response": {"not": "a list"}, "isDisposed": true}))).await,
        ),
        (
            "inconsistent",
            peer(|r| frame(json!({"id": r["id"], "response": [{"id": 1, "name": "x", "price": 1, "totalSeats": 1, "availableSeats": 9}], "isDisposed": true}))).await,
        ),
        ("no id", peer(|_| frame(json!({"response": []}))).await),
    ];
    for (name, port) in cases {
        let c = client(port);
        let started = Instant::now();
        let e = c.categories(1).await.expect_err(name);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{name}: took {:?}",
            started.elapsed()
        );
        let ok = match name {
            "down" => matches!(e, SourceError::Unreachable(_)),
            "silent" | "no id" => matches!(e, SourceError::Timeout | SourceError::Malformed(_)),
            "garbage" | "oversized" => matches!(e, SourceError::Malformed(_)),
            "err" => e == SourceError::Remote("db down".into()),
            _ => matches!(e, SourceError::Malformed(_)),
        };
        assert!(ok, "{name}: {e:?}");
    }
}

/// Through the server: a refused hold changes nothing.
#[tokio::test]
async fn refused_holds_change_nothing() {
    let garbage = peer(|_| b"12#not json at".to_vec()).await;
    let config = Config::load(&Sources {
        overrides: vec![
            ("data_dir".into(), "memory".into()),
            ("catalog_source".into(), "events-service".into()),
            ("events_service".into(), format!("127.0.0.1:{garbage}")),
            ("events_service_timeout_ms".into(), "300".into()),
        ],
        ..Sources::default()
    })
    .expect("config");
    let s = serve(switchboard::build(&config).expect("build")).await;
    let mut ws = ws(s.addr, "/socket.io/?EIO=4&transport=websocket&userId=t1").await;
    next_text(&mut ws).await;
    ws.send(Message::Text("40/realtime,{}".into()))
        .await
        .expect("send");
    next_text(&mut ws).await;
    next_text(&mut ws).await; // connected
    ws.send(Message::Text(
        "42/realtime,[\"lock-tickets\",{\"eventId\":1,\"categoryId\":1,\"quantity\":1}]".into(),
    ))
    .await
    .expect("send");
    let answer = next_text(&mut ws).await;
    assert!(
        answer.contains("\"success\":false")
            && answer.contains("Failed to verify ticket availability"),
        "{answer}"
    );
    let (_, stats) = get_text(s.addr, "/stats").await;
    let stats: Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(stats["ticketLocks"]["totalLocks"], 0, "{stats}");
    assert_eq!(stats["eventsService"]["failures"], 1, "{stats}");
    s.stop().await;
}
