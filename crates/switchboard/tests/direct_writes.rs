//! Direct writes (engineio `outbox` and `wire`): frames written by the flushers, by a
//! connection's own answers and by tungstenite or hyper (pings, the close frame, the last
//! chunk) keep their order; a client that stops reading is closed as slow without holding
//! anyone else back. Run with the flushers off (each connection's task writes), one and
//! two flushers, on every transport: Socket.IO over WebSocket, `/ws` and SSE.

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

// ---- `/ws` and SSE ---------------------------------------------------------------------

const KEY: &str = "test-api-key";

/// The full server (not the conformance one): `/ws`, `/events`, the publish API; no
/// rate limits, so a sender can publish as fast as it can.
async fn full_server(pairs: &[(&str, &str)]) -> TestServer {
    let overrides: Vec<(String, String)> = [
        ("data_dir", "memory"),
        ("coalesce_ms", "0"),
        ("api_key", KEY),
        ("rate_limit_per_sec", "0"),
        ("rate_limit_per_user_per_sec", "0"),
    ]
    .iter()
    .chain(pairs)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = switchboard::config::Config::load(&switchboard::config::Sources {
        overrides,
        ..Default::default()
    })
    .expect("config");
    serve(switchboard::build(&config).expect("build")).await
}

fn json_of(frame: &str) -> serde_json::Value {
    serde_json::from_str(frame).unwrap_or_else(|e| panic!("{e}: {frame}"))
}

/// A `/ws` client past its `connected` frame, in `room` if given.
async fn ws_client_on(mut w: Ws, room: Option<&str>) -> Ws {
    assert_eq!(json_of(&next_text(&mut w).await)["event"], "connected");
    if let Some(room) = room {
        w.send(Message::Text(
            format!("{{\"action\":\"join\",\"roomId\":\"{room}\",\"ack\":1}}").into(),
        ))
        .await
        .expect("send");
        let joined = json_of(&next_text(&mut w).await);
        assert_eq!(joined["ack"], 1, "{joined}");
    }
    w
}

async fn ws_client(addr: std::net::SocketAddr, user: &str, room: Option<&str>) -> Ws {
    ws_client_on(ws(addr, &format!("/ws?userId={user}")).await, room).await
}

/// The `n` of a room message (`{"event":"message","data":{"content":{"n":7},..},..}`).
fn message_n(v: &serde_json::Value) -> Option<u64> {
    (v["event"] == "message").then(|| v["data"]["content"]["n"].as_u64())?
}

/// A raw SSE reader: the response bytes as they come, split into events.
struct SseReader {
    tcp: tokio::net::TcpStream,
    /// Bytes as received (chunked).
    buf: Vec<u8>,
    head: bool,
    /// The body, de-chunked, not yet split into events.
    body: Vec<u8>,
    /// The last chunk came.
    ended: bool,
}

impl SseReader {
    async fn open(tcp: tokio::net::TcpStream, channels: &str) -> SseReader {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tcp;
        tcp.write_all(
            format!(
                "GET /events?channels={channels}&userId=sse HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("request");
        SseReader {
            tcp,
            buf: Vec::new(),
            head: false,
            body: Vec::new(),
            ended: false,
        }
    }

    /// More bytes; false at the end of the connection.
    async fn fill(&mut self) -> bool {
        use tokio::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(20), self.tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no SSE bytes for 20 s"),
        }
    }

    /// The next event's (name, data) as the client sees it: chunked framing removed.
    /// None when the body ends (the last chunk) or the connection does.
    async fn next(&mut self) -> Option<(String, String)> {
        if !self.head {
            while !self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
                if !self.fill().await {
                    return None;
                }
            }
            let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            let head = String::from_utf8_lossy(&self.buf[..end]).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(head.contains("transfer-encoding: chunked"), "{head}");
            self.buf.drain(..end);
            self.head = true;
            self.body = Vec::new();
        }
        loop {
            // Whole chunks into the body.
            while let Some(line) = self.buf.windows(2).position(|w| w == b"\r\n")
                && !self.ended
            {
                let len = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..line]).expect("chunk size"),
                    16,
                )
                .unwrap_or_else(|_| panic!("bad chunk size line {:?}", &self.buf[..line]));
                if len == 0 {
                    self.ended = true;
                    break;
                }
                if self.buf.len() < line + 2 + len + 2 {
                    break;
                }
                assert_eq!(&self.buf[line + 2 + len..line + 4 + len], b"\r\n");
                let data: Vec<u8> = self.buf[line + 2..line + 2 + len].to_vec();
                self.body.extend_from_slice(&data);
                self.buf.drain(..line + 4 + len);
            }
            if let Some(end) = self.body.windows(2).position(|w| w == b"\n\n") {
                let event = String::from_utf8(self.body[..end].to_vec()).expect("utf-8");
                self.body.drain(..end + 2);
                if event.starts_with(':') || event.starts_with("retry:") {
                    continue;
                }
                let mut name = String::new();
                let mut data = String::new();
                for line in event.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = n.to_owned();
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                return Some((name, data));
            }
            if self.ended || !self.fill().await {
                return None;
            }
        }
    }
}

async fn sse_reader(addr: std::net::SocketAddr, channels: &str) -> SseReader {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut r = SseReader::open(tcp, channels).await;
    let (event, _) = r.next().await.expect("connected");
    assert_eq!(event, "connected");
    r
}

/// A `/ws` sender publishes as fast as it can to a room whose members are two `/ws`
/// clients and an SSE client; one `/ws` client asks for an answer every 100 messages it
/// reads (written inline, between flushed messages). Everyone sees every message in
/// order, and the close frame or last chunk comes after them.
async fn ws_and_sse_keep_their_order(flushers: &str) {
    let s = full_server(&[("ws_flushers", flushers)]).await;
    let mut a = ws_client(s.addr, "a", Some("r1")).await;
    let mut b = ws_client(s.addr, "b", Some("r1")).await;
    let mut c = sse_reader(s.addr, "r1").await;
    let sender = ws_client(s.addr, "sender", Some("r1")).await;
    const N: u64 = 600;
    let (mut tx, mut rx) = futures_util::StreamExt::split(sender);
    let publish = async {
        for n in 0..N {
            tx.send(Message::Text(
                format!("{{\"action\":\"message\",\"roomId\":\"r1\",\"content\":{{\"n\":{n}}}}}")
                    .into(),
            ))
            .await
            .expect("send");
        }
    };
    // The sender reads its `sent` answers (and the others' presence) as they come.
    let drain_sender = async {
        use futures_util::StreamExt;
        let mut sent = 0;
        while sent < N {
            match rx.next().await {
                Some(Ok(Message::Text(t))) if json_of(&t)["event"] == "sent" => sent += 1,
                Some(Ok(_)) => {}
                other => panic!("sender: {other:?}"),
            }
        }
    };
    let read_a = async {
        let (mut next, mut asked, mut answered) = (0u64, 0u64, 0u64);
        while next < N || answered < asked {
            let v = json_of(&next_text(&mut a).await);
            if let Some(n) = message_n(&v) {
                assert_eq!(n, next, "A got messages out of order");
                next += 1;
                if next % 100 == 0 {
                    asked += 1;
                    a.send(Message::Text(
                        format!("{{\"action\":\"ping\",\"ack\":{}}}", 1000 + asked).into(),
                    ))
                    .await
                    .expect("send");
                }
            } else if v.get("ack").is_some() {
                answered += 1;
                assert_eq!(v["ack"], 1000 + answered, "A's answers in order: {v}");
            }
        }
        (next, answered)
    };
    let read_b = async {
        let mut next = 0;
        while next < N {
            if let Some(n) = message_n(&json_of(&next_text(&mut b).await)) {
                assert_eq!(n, next, "B got messages out of order");
                next += 1;
            }
        }
    };
    let read_c = async {
        let mut next = 0;
        while next < N {
            let (event, data) = c.next().await.expect("SSE event");
            if event == "message" {
                assert_eq!(
                    json_of(&data)["content"]["n"],
                    next,
                    "SSE: messages out of order"
                );
                next += 1;
            }
        }
    };
    let ((), (), (a_got, a_answers), (), ()) =
        tokio::join!(publish, drain_sender, read_a, read_b, read_c);
    assert_eq!(a_got, N);
    assert_eq!(a_answers, N / 100);
    // The goodbye comes after everything: a close frame (1001), the body's last chunk.
    s.stop().await;
    assert_eq!(close_code(&mut b).await, Some(1001));
    assert_eq!(c.next().await, None, "the SSE body ends cleanly");
}

async fn close_code(w: &mut Ws) -> Option<u16> {
    use futures_util::StreamExt;
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed in time")
}

#[tokio::test]
async fn ws_and_sse_order_holds_with_one_flusher() {
    ws_and_sse_keep_their_order("1").await;
}

#[tokio::test]
async fn ws_and_sse_order_holds_with_two_flushers() {
    ws_and_sse_keep_their_order("2").await;
}

#[tokio::test]
async fn ws_and_sse_order_holds_with_direct_writes_off() {
    ws_and_sse_keep_their_order("0").await;
}

/// A `/ws` client and an SSE client that stop reading (4 KB receive windows) while 40 MB
/// are published are closed as slow clients; what they do read is whole frames or events,
/// in order; a `/ws` client and an SSE client that read get everything.
async fn stalled_ws_and_sse_readers_are_closed_as_slow(flushers: &str) {
    let s = full_server(&[
        ("ws_flushers", flushers),
        ("client_queue", "16"),
        ("heartbeat_timeout_secs", "1"),
    ])
    .await;
    let small = || {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        sock
    };
    let stalled_ws = {
        let stream = small().connect(s.addr).await.expect("connect");
        let (w, _) = tokio_tungstenite::client_async(
            format!("ws://{}/ws?userId=stalled", s.addr),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await
        .expect("websocket handshake");
        ws_client_on(w, Some("big")).await
    };
    let mut stalled_sse = {
        let stream = small().connect(s.addr).await.expect("connect");
        let mut r = SseReader::open(stream, "big").await;
        assert_eq!(r.next().await.expect("connected").0, "connected");
        r
    };
    let mut reader = ws_client(s.addr, "reader", Some("big")).await;
    let mut sse = sse_reader(s.addr, "big").await;
    const N: u64 = 400;
    let blob = "x".repeat(100_000);
    let publish = async {
        for n in 0..N {
            let body = format!(
                "{{\"room\":\"big\",\"event\":\"message\",\"data\":{{\"content\":{{\"n\":{n}}},\"b\":\"{blob}\"}}}}"
            );
            let (status, _) = http_with(
                s.addr,
                "POST",
                "/api/publish",
                &format!("Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"),
                body.as_bytes(),
            )
            .await;
            assert_eq!(status, 200);
        }
    };
    let read = async {
        let mut next = 0;
        while next < N {
            if let Some(n) = message_n(&json_of(&next_text(&mut reader).await)) {
                assert_eq!(n, next, "the /ws reader lost or reordered a message");
                next += 1;
            }
        }
    };
    let read_sse = async {
        let mut next = 0;
        while next < N {
            let (event, data) = sse.next().await.expect("SSE event");
            if event == "message" {
                assert_eq!(
                    json_of(&data)["content"]["n"],
                    next,
                    "the SSE reader lost or reordered"
                );
                next += 1;
            }
        }
    };
    tokio::join!(publish, read, read_sse);
    let metrics = || async {
        let (_, text) = get_text(s.addr, "/metrics").await;
        text
    };
    let slow = |text: &str, transport: &str| {
        let key = format!(
            "switchboard_connections_closed_total{{transport=\"{transport}\",reason=\"slow client\"}} 1"
        );
        text.contains(&key)
    };
    // The `/ws` one at once (its task or a flusher notices); the SSE one once its stream
    // is polled, which without direct writes waits until hyper can write again.
    let mut closed = false;
    for _ in 0..500 {
        if slow(&metrics().await, "ws") {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed,
        "the stalled /ws client was closed as slow:\n{}",
        metrics().await
    );
    // What they read is whole frames / events, in order, then the end.
    let ws_read = async {
        use futures_util::StreamExt;
        let mut stalled_ws = stalled_ws;
        let mut expected = 0;
        loop {
            match stalled_ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    if let Some(n) = message_n(&json_of(&t)) {
                        assert_eq!(n, expected, "stalled /ws client read a reordered frame");
                        expected += 1;
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    assert_eq!(frame.map(|f| u16::from(f.code)), Some(4009));
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return expected,
            }
        }
    };
    let sse_read = async {
        let (mut expected, mut told) = (0, false);
        while let Some((event, data)) = stalled_sse.next().await {
            match event.as_str() {
                "message" => {
                    assert_eq!(
                        json_of(&data)["content"]["n"],
                        expected,
                        "stalled SSE reordered"
                    );
                    expected += 1;
                }
                "error" => told = true,
                _ => {}
            }
        }
        (expected, told)
    };
    let (ws_got, (sse_got, told)) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(ws_read, sse_read)
    })
    .await
    .expect("the stalled connections ended");
    assert!(
        ws_got < N && sse_got < N,
        "a stalled client cannot have got everything"
    );
    assert!(told, "the stalled SSE client was told it is too slow");
    assert!(slow(&metrics().await, "sse"), "{}", metrics().await);
    s.stop().await;
}

#[tokio::test]
async fn stalled_ws_and_sse_readers_are_closed_as_slow_with_direct_writes() {
    stalled_ws_and_sse_readers_are_closed_as_slow("1").await;
}

#[tokio::test]
async fn stalled_ws_and_sse_readers_are_closed_as_slow_with_direct_writes_off() {
    stalled_ws_and_sse_readers_are_closed_as_slow("0").await;
}

/// An HTTP/1.0 SSE request has no chunked encoding: its events are written by hyper, as
/// they were before direct writes (a close-delimited body, no chunk framing).
#[tokio::test]
async fn an_http_1_0_sse_stream_is_not_chunked() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = full_server(&[("ws_flushers", "1")]).await;
    let mut tcp = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    tcp.write_all(b"GET /events?channels=old&userId=old HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .expect("request");
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut published = false;
    let body = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "stream ended early: {}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&chunk[..n]);
            let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let body = &got[end + 4..];
            if !published && body.windows(9).any(|w| w == b"connected") {
                published = true;
                let (status, _) = http_with(
                    s.addr,
                    "POST",
                    "/api/publish",
                    &format!("Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"),
                    br#"{"room":"old","event":"message","data":{"content":{"n":0}}}"#,
                )
                .await;
                assert_eq!(status, 200);
            }
            if body.windows(14).any(|w| w == b"event: message") && body.ends_with(b"\n\n") {
                return (
                    String::from_utf8_lossy(&got[..end]).to_lowercase(),
                    body.to_vec(),
                );
            }
        }
    })
    .await
    .expect("the message in time");
    let (head, body) = body;
    assert!(!head.contains("chunked"), "{head}");
    assert!(
        body.starts_with(b"retry: 2000\n\n"),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        !body.windows(2).any(|w| w == b"\r\n"),
        "no chunk framing in an HTTP/1.0 body: {:?}",
        String::from_utf8_lossy(&body)
    );
    s.stop().await;
}
