//! The idle run against a scripted in-process Socket.IO server (no Switchboard needed):
//! it pings before answering the namespace connect, acks `join`, or refuses the connect.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::{IdleConfig, run};

#[derive(Default)]
struct Seen {
    pongs: AtomicUsize,
    joins: AtomicUsize,
}

/// Serves `/e2e` like Switchboard's conformance mode, minus everything idle clients skip.
async fn fake_server(refuse: bool) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Seen::default());
    let counters = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = Arc::clone(&counters);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                let _ = ws
                    .send(Message::text(r#"0{"sid":"e","pingInterval":300}"#))
                    .await;
                while let Some(Ok(Message::Text(t))) = ws.next().await {
                    let reply = match t.as_str() {
                        "40/e2e," if refuse => r#"44/e2e,{"message":"no"}"#.to_owned(),
                        "40/e2e," => {
                            // A heartbeat first: the client must answer it mid-handshake.
                            let _ = ws.send(Message::text("2")).await;
                            r#"40/e2e,{"sid":"s"}"#.to_owned()
                        }
                        "3" => {
                            seen.pongs.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        text => match text.strip_prefix("42/e2e,") {
                            Some(rest) if rest.contains(r#"["join","room1"]"#) => {
                                seen.joins.fetch_add(1, Ordering::Relaxed);
                                let id: String =
                                    rest.chars().take_while(char::is_ascii_digit).collect();
                                format!(r#"43/e2e,{id}["room1"]"#)
                            }
                            _ => continue,
                        },
                    };
                    if ws.send(Message::text(reply)).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn config(url: &str) -> IdleConfig {
    IdleConfig {
        clients: 8,
        concurrency: 3,
        settle: Duration::ZERO,
        hold: Duration::ZERO,
        ..IdleConfig::smoke(url, "/e2e", Some("room1"))
    }
}

#[tokio::test]
async fn every_client_connects_answers_pings_and_joins() {
    let (url, seen) = fake_server(false).await;
    let report = run(&config(&url), CancellationToken::new())
        .await
        .expect("run");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.joined, 8);
    assert_eq!(seen.joins.load(Ordering::Relaxed), 8);
    assert_eq!(seen.pongs.load(Ordering::Relaxed), 8);
    assert_eq!(report.pings_answered, 8);
    assert!(report.server_rss_before_bytes.is_none());
    assert!(report.markdown().contains("| idle | 8 |"));
}

#[tokio::test]
async fn refused_connects_are_counted_by_cause() {
    let (url, _) = fake_server(true).await;
    let report = run(&config(&url), CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(report.joined, 0);
    assert_eq!(report.failures, 8);
    assert_eq!(report.failure_kinds.get("connect_error"), Some(&8));
    assert!(!report.ok());
}

#[tokio::test]
async fn a_closed_port_fails_every_client_quickly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let report = run(&config(&url), CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(report.failure_kinds.get("tcp"), Some(&8));
}
