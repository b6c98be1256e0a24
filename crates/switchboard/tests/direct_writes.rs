//! Direct WebSocket writes (engineio `wire`): frames written by the flushers, by a
//! socket's own answers and by tungstenite (close) keep their order; a client that stops
//! reading is closed as slow without holding anyone else back. Run with the flushers off
//! (each connection's task writes), one and two flushers.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

/// No pings during the test: a client that stops reading must be closed as slow, not for
/// missing a pong (the conformance setup pings every 300 ms).
fn quiet(mut config: switchboard::config::Config) -> switchboard::config::Config {
    config.ping_interval_ms = 60_000;
    config.ping_timeout_ms = 60_000;
    config
}

async fn e2e_client(addr: std::net::SocketAddr, room: Option<&str>) -> Ws {
    e2e_client_on(
        ws(addr, "/socket.io/?EIO=4&transport=websocket").await,
        room,
    )
    .await
}

/// A client whose socket's receive buffer is 4 KB (no autotuning): what it does not read
/// backs up into the server at once.
async fn small_window_client(addr: std::net::SocketAddr, room: Option<&str>) -> Ws {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = sock.connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("websocket handshake");
    e2e_client_on(ws, room).await
}

async fn e2e_client_on(mut ws: Ws, room: Option<&str>) -> Ws {
    assert!(next_text(&mut ws).await.starts_with('0'));
    ws.send(Message::Text("40/e2e,".into()))
        .await
        .expect("send");
    assert!(next_text(&mut ws).await.starts_with("40/e2e,{\"sid\":"));
    if let Some(room) = room {
        ws.send(Message::Text(
            format!("42/e2e,1[\"join\",\"{room}\"]").into(),
        ))
        .await
        .expect("send");
        assert_eq!(next_text(&mut ws).await, format!("43/e2e,1[\"{room}\"]"));
    }
    ws
}

/// The `n` of a `hello` broadcast (`42/e2e,["hello",{"n":7,...},"<offset>"]`).
fn hello_n(frame: &str) -> Option<u64> {
    let rest = frame.strip_prefix("42/e2e,[\"hello\",{\"n\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

async fn broadcasts_and_answers_keep_their_order(flushers: &str) {
    let s = start(quiet(conformance_config(&[("ws_flushers", flushers)]))).await;
    let mut a = e2e_client(s.addr, Some("r1")).await;
    let mut b = e2e_client(s.addr, Some("r1")).await;
    let mut sender = e2e_client(s.addr, None).await;
    const N: u64 = 600;
    // The sender publishes as fast as it can; A asks for an ack every 100 broadcasts it
    // reads, so its answers are written (inline) between broadcasts (flushed).
    let publish = async {
        for n in 0..N {
            sender
                .send(Message::Text(
                    format!("42/e2e,[\"to-room\",\"r1\",\"hello\",{{\"n\":{n}}}]").into(),
                ))
                .await
                .expect("send");
        }
        sender
    };
    let read_a = async {
        let (mut next, mut acks_asked, mut acks_got) = (0u64, 0u64, 0u64);
        while next < N || acks_got < acks_asked {
            let frame = next_text(&mut a).await;
            if let Some(n) = hello_n(&frame) {
                assert_eq!(n, next, "A got broadcasts out of order");
                next += 1;
                if next % 100 == 0 {
                    acks_asked += 1;
                    let id = 1000 + acks_asked;
                    a.send(Message::Text(format!("42/e2e,{id}[\"rooms\"]").into()))
                        .await
                        .expect("send");
                }
            } else {
                acks_got += 1;
                assert_eq!(frame, format!("43/e2e,{}[[\"r1\"]]", 1000 + acks_got));
            }
        }
        (next, acks_got)
    };
    let read_b = async {
        for n in 0..N {
            let frame = next_text(&mut b).await;
            assert_eq!(hello_n(&frame), Some(n), "B: {frame}");
        }
    };
    let (_sender, (a_got, a_acks), ()) = tokio::join!(publish, read_a, read_b);
    assert_eq!(a_got, N);
    assert_eq!(a_acks, N / 100);
    // The close frame (tungstenite's write) comes after everything queued before it.
    s.stop().await;
    expect_closed(&mut a, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn order_holds_with_one_flusher() {
    broadcasts_and_answers_keep_their_order("1").await;
}

#[tokio::test]
async fn order_holds_with_two_flushers() {
    broadcasts_and_answers_keep_their_order("2").await;
}

#[tokio::test]
async fn order_holds_with_direct_writes_off() {
    broadcasts_and_answers_keep_their_order("0").await;
}

#[tokio::test]
async fn a_stalled_reader_is_closed_as_slow_with_direct_writes() {
    stalled_reader_is_closed_as_slow("1", 60_000).await;
}

/// Without direct writes the connection's task blocks in its write; it gives up after a
/// ping timeout.
#[tokio::test]
async fn a_stalled_reader_is_closed_as_slow_with_direct_writes_off() {
    stalled_reader_is_closed_as_slow("0", 1_000).await;
}

async fn stalled_reader_is_closed_as_slow(flushers: &str, ping_timeout_ms: u64) {
    let mut config = quiet(conformance_config(&[
        ("ws_flushers", flushers),
        ("max_buffered_packets", "16"),
    ]));
    config.ping_timeout_ms = ping_timeout_ms;
    let s = start(config).await;
    let mut stalled = e2e_client(s.addr, Some("big")).await;
    let mut reader = e2e_client(s.addr, Some("big")).await;
    let mut sender = e2e_client(s.addr, None).await;
    // 400 × 100 KB = 40 MB: far more than both kernels' socket buffers hold, so the
    // server's writes to `stalled` block, its unsent bytes wait, then its outbox overflows.
    const N: u64 = 400;
    let blob = "x".repeat(100_000);
    let publish = async {
        for n in 0..N {
            sender
                .send(Message::Text(
                    format!(
                        "42/e2e,[\"to-room\",\"big\",\"hello\",{{\"n\":{n},\"b\":\"{blob}\"}}]"
                    )
                    .into(),
                ))
                .await
                .expect("send");
        }
    };
    let read = async {
        for n in 0..N {
            let frame = next_text(&mut reader).await;
            assert_eq!(
                hello_n(&frame),
                Some(n),
                "reader lost or reordered a broadcast"
            );
        }
    };
    tokio::join!(publish, read);
    // Reader and sender stay; the stalled client is gone from the server.
    for _ in 0..500 {
        if s.app.session_count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.app.session_count(), 2, "the stalled client is gone");
    let closes: Vec<_> = engineio::CloseReason::ALL
        .iter()
        .map(|r| (r.as_str(), s.app.closed_as(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(closes, [("slow client", 1)]);
    // What it does read is whole frames, in order, then the end of the connection.
    let mut expected = 0;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        use futures_util::StreamExt;
        loop {
            match stalled.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Some(n) = hello_n(&t) {
                        assert_eq!(n, expected, "stalled client read a reordered frame");
                        expected += 1;
                    }
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stalled connection ended");
    assert!(
        expected < N,
        "the stalled client cannot have received everything"
    );
    // The others are unaffected: the sender still gets answers.
    sender
        .send(Message::Text("42/e2e,9[\"rooms\"]".into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut sender).await, "43/e2e,9[[]]");
    s.stop().await;
}

/// A client that pauses reading with less than `ws_max_write_buffer` behind keeps its
/// connection and gets everything, in order, when it reads again.
#[tokio::test]
async fn a_pausing_reader_within_the_write_buffer_gets_everything() {
    let s = start(quiet(conformance_config(&[
        ("ws_flushers", "1"),
        ("max_buffered_packets", "16"),
    ])))
    .await;
    let mut paused = small_window_client(s.addr, Some("r")).await;
    let mut sender = e2e_client(s.addr, None).await;
    let before = s.app.frames_out();
    // 300 × 10 KB = 3 MB: far more than the 16 frames of the outbox bound and what the
    // two kernels buffer for a 4 KB window, less than the 4 MB write buffer.
    const N: u64 = 300;
    let blob = "y".repeat(10_000);
    for n in 0..N {
        sender
            .send(Message::Text(
                format!("42/e2e,[\"to-room\",\"r\",\"hello\",{{\"n\":{n},\"b\":\"{blob}\"}}]")
                    .into(),
            ))
            .await
            .expect("send");
    }
    // Everything was published while `paused` read nothing.
    sender
        .send(Message::Text("42/e2e,7[\"rooms\"]".into()))
        .await
        .expect("send");
    assert_eq!(next_text(&mut sender).await, "43/e2e,7[[]]");
    // Wait until the server has taken every broadcast out of `paused`'s outbox (into its
    // write buffer), all while `paused` reads nothing: its N broadcasts and the sender's
    // answer are the only frames since `before`.
    eventually("the paused client's broadcasts left its outbox", || {
        s.app.frames_out() - before == N + 1
    })
    .await;
    for n in 0..N {
        let frame = next_text(&mut paused).await;
        assert_eq!(hello_n(&frame), Some(n));
    }
    assert_eq!(s.app.closed_as(engineio::CloseReason::SlowClient), 0);
    s.stop().await;
}
