//! The RabbitMQ consumer against the real broker on 127.0.0.1:5672 (guest/guest): NestJS
//! packets published with lapin, effects seen by Socket.IO clients, replies, dead
//! letters, and a chaos run that cuts the connection while 1,000 orders flow.
//!
//! Without a broker these tests skip with a message, except under `CI=true`, where they
//! fail. Every test uses its own queue names and deletes them at the end.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use common::*;
use futures_util::{SinkExt, StreamExt};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{Value, json};
use switchboard::config::{Config, Sources};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const BROKER: &str = "127.0.0.1:5672";

fn broker_url(addr: &str) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// A publisher connection, or `None` (skip) when no broker runs outside CI.
async fn broker() -> Option<Connection> {
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        Connection::connect(&broker_url(BROKER), ConnectionProperties::default()),
    )
    .await;
    match conn {
        Ok(Ok(c)) => Some(c),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".into(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("RabbitMQ is required in CI on {BROKER}: {why}");
            }
            skipped(&format!(
                "no RabbitMQ on {BROKER} ({why}); CI runs these tests"
            ));
            None
        }
    }
}

fn unique(name: &str) -> String {
    format!("sb_test_{name}_{:08x}", rand::random::<u32>())
}

fn config(queue: &str, url: &str, extra: &[(&str, &str)]) -> Config {
    let mut overrides: Vec<(String, String)> = vec![
        ("data_dir".into(), "memory".into()),
        ("coalesce_ms".into(), "0".into()),
        // Test clients lock hundreds of holds as fast as they can: no rate limit here.
        ("rate_limit_per_sec".into(), "0".into()),
        ("rate_limit_per_user_per_sec".into(), "0".into()),
        ("amqp_url".into(), url.into()),
        ("amqp_queue".into(), queue.into()),
        ("amqp_reconnect_max_ms".into(), "500".into()),
    ];
    overrides.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(&Sources {
        overrides,
        ..Sources::default()
    })
    .expect("config")
}

async fn stats(addr: SocketAddr) -> Value {
    let (status, body) = get_text(addr, "/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

/// Polls `/ready` until it answers `want` (bounded).
async fn wait_ready(addr: SocketAddr, want: u16, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get_text(addr, "/ready").await;
        if status == want {
            return serde_json::from_str(&body).expect("json");
        }
        assert!(
            Instant::now() < deadline,
            "/ready stayed {status} ({body}), wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cleanup(ch: &Channel, queue: &str) {
    for q in [queue.to_owned(), format!("{queue}.dlq")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .exchange_delete(
            format!("{queue}.dlq.x").as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await;
}

async fn publish(ch: &Channel, queue: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body,
        props.with_delivery_mode(2),
    )
    .await
    .expect("publish")
    .await
    .expect("confirm");
}

async fn emit(ch: &Channel, queue: &str, pattern: &str, data: Value) {
    let body = json!({"pattern": pattern, "data": data}).to_string();
    publish(ch, queue, body.as_bytes(), BasicProperties::default()).await;
}

/// The replies to requests published on `ch` with `reply_to = amq.rabbitmq.reply-to`.
async fn reply_to_consumer(ch: &Channel) -> lapin::Consumer {
    ch.basic_consume(
        "amq.rabbitmq.reply-to".into(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("direct reply-to consumer")
}

/// A request the way a NestJS `ClientProxy.send` makes it: direct reply-to.
struct Requester {
    ch: Channel,
    replies: lapin::Consumer,
}

impl Requester {
    async fn new(conn: &Connection) -> Requester {
        let ch = conn.create_channel().await.expect("channel");
        let replies = reply_to_consumer(&ch).await;
        Requester { ch, replies }
    }

    async fn send(&mut self, queue: &str, pattern: &str, data: Value) -> Value {
        let id = format!("{:016x}", rand::random::<u64>());
        let body = json!({"pattern": pattern, "data": data, "id": id}).to_string();
        self.ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default()
                    .with_reply_to("amq.rabbitmq.reply-to".into())
                    .with_correlation_id(id.as_str().into()),
            )
            .await
            .expect("publish");
        let d = tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .expect("a reply in time")
            .expect("stream")
            .expect("delivery");
        assert_eq!(
            d.properties.correlation_id().as_ref().map(|c| c.as_str()),
            Some(id.as_str())
        );
        let reply: Value = serde_json::from_slice(&d.data).expect("json reply");
        assert_eq!(reply["id"], json!(id), "{reply}");
        assert_eq!(reply["isDisposed"], json!(true), "{reply}");
        reply
    }
}

// ----- a /realtime client over WebSocket -----------------------------------------------

struct Client {
    ws: Ws,
}

/// `(event, payload)` of a `/realtime` event frame.
fn parse_event(frame: &str) -> Option<(String, Value)> {
    let rest = frame.strip_prefix("42/realtime,")?;
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    let v: Value = serde_json::from_str(rest).ok()?;
    Some((v[0].as_str()?.to_owned(), v[1].clone()))
}

impl Client {
    async fn connect(addr: SocketAddr, user: &str) -> Client {
        let mut ws = ws(
            addr,
            &format!("/socket.io/?EIO=4&transport=websocket&userId={user}"),
        )
        .await;
        next_text(&mut ws).await;
        ws.send(Message::Text("40/realtime,{}".into()))
            .await
            .expect("send");
        assert!(next_text(&mut ws).await.starts_with("40/realtime,{\"sid\""));
        let mut c = Client { ws };
        c.expect("connected").await;
        c
    }

    async fn emit(&mut self, event: &str, data: Value) {
        self.ws
            .send(Message::Text(
                format!("42/realtime,{}", json!([event, data])).into(),
            ))
            .await
            .expect("send");
    }

    /// The next `event`, skipping others.
    async fn expect(&mut self, event: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no {event} in time");
            let frame = next_text(&mut self.ws).await;
            if let Some((name, payload)) = parse_event(&frame)
                && name == event
            {
                return payload;
            }
        }
    }

    /// Asserts no `event` arrives within `quiet`.
    async fn expect_none(&mut self, event: &str, quiet: Duration) {
        let end = Instant::now() + quiet;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout(left, self.ws.next()).await
            else {
                continue;
            };
            if let Some((name, payload)) = parse_event(&t) {
                assert_ne!(name, event, "unexpected {event}: {payload}");
            }
        }
    }

    async fn lock(&mut self, event: i64, category: i64, quantity: u32) -> String {
        self.emit(
            "lock-tickets",
            json!({"eventId": event, "categoryId": category, "quantity": quantity}),
        )
        .await;
        let r = self.expect("lock-tickets-response").await;
        assert_eq!(r["success"], true, "{r}");
        r["lockId"].as_str().expect("lockId").to_owned()
    }
}

// ----- tests -----------------------------------------------------------------------------

#[tokio::test]
async fn requests_are_answered_and_orders_apply_once() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = unique("orders");
    let s =
        serve(switchboard::build(&config(&queue, &broker_url(BROKER), &[])).expect("build")).await;
    let ready = wait_ready(s.addr, 200, Duration::from_secs(10)).await;
    assert_eq!(ready["broker"]["state"], "connected", "{ready}");

    let mut buyer = Client::connect(s.addr, "u1").await;
    let mut watcher = Client::connect(s.addr, "w").await;
    watcher.emit("join-event-room", json!({"eventId": 1})).await;
    watcher.expect("joined-event-room").await;
    let lock = buyer.lock(1, 2, 2).await;
    let mut req = Requester::new(&conn).await;

    // confirm-ticket-lock as a request: the NestJS response shape.
    let r = req
        .send(&queue, "confirm-ticket-lock", json!({"lockId": lock}))
        .await;
    assert_eq!(r["err"], Value::Null, "{r}");
    assert_eq!(r["response"]["success"], true, "{r}");
    assert_eq!(r["response"]["lockId"], json!(lock));
    assert_eq!(r["response"]["status"], "confirmed");
    // An unknown lock: a reply with err, and nothing else happens.
    let r = req
        .send(
            &queue,
            "confirm-ticket-lock",
            json!({"lockId": "lock_nope"}),
        )
        .await;
    assert_eq!(r["err"]["message"], "lock lock_nope not found", "{r}");
    assert!(r.get("response").is_none(), "{r}");
    // An unknown request pattern: NestJS's own answer.
    let r = req.send(&queue, "no-such-pattern", json!({})).await;
    assert_eq!(
        r["err"],
        "There is no matching message handler defined in the remote service."
    );

    // order-completed as an event: the user hears it, the room sees seats sold.
    let order =
        json!({"orderId": "o-1", "eventId": 1, "categoryId": 2, "quantity": 2, "userId": "u1"});
    emit(&ch, &queue, "order-completed", order.clone()).await;
    let n = buyer.expect("order-completed").await;
    assert_eq!(
        (&n["orderId"], &n["status"], &n["lockId"]),
        (&json!("o-1"), &json!("completed"), &json!(lock))
    );
    let a = loop {
        let a = watcher.expect("availability-update").await;
        if a["categoryId"] == 2 && a["availableTickets"] == 198 && a["lockedTickets"] == 0 {
            break a;
        }
    };
    assert_eq!(
        (
            &a["categoryId"],
            &a["availableTickets"],
            &a["lockedTickets"],
            &a["totalTickets"]
        ),
        (&json!(2), &json!(198), &json!(0), &json!(200)),
        "{a}"
    );
    // The same order again (a redelivery): no second effect.
    emit(&ch, &queue, "order-completed", order.clone()).await;
    // ...and as a request: answered, still no effect.
    let r = req.send(&queue, "order-completed", order).await;
    assert_eq!(r["response"]["duplicate"], true, "{r}");
    buyer
        .expect_none("order-completed", Duration::from_millis(300))
        .await;

    // order-cancelled as a request for another hold.
    let lock2 = buyer.lock(1, 3, 1).await;
    let r = req
        .send(
            &queue,
            "order-cancelled",
            json!({"orderId": 77, "eventId": "1", "categoryId": 3, "quantity": 1, "userId": "u1"}),
        )
        .await;
    assert_eq!(r["response"]["status"], "released", "{r}");
    let n = buyer.expect("order-cancelled").await;
    assert_eq!((&n["orderId"], &n["lockId"]), (&json!("77"), &json!(lock2)));

    // The last delivery is acked just after its reply and notification went out.
    let mut st = stats(s.addr).await;
    for _ in 0..100 {
        if st["amqp"]["consumed"] == st["amqp"]["acked"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        st = stats(s.addr).await;
    }
    let a = &st["amqp"];
    assert_eq!(a["duplicates"], 2, "{st}");
    assert_eq!(a["replies"], 5, "{st}");
    assert_eq!(a["errorReplies"], 2, "{st}");
    assert_eq!(a["consumed"], a["acked"], "{st}");
    assert_eq!(st["ticketLocks"]["locksByStatus"]["completed"], 1, "{st}");
    cleanup(&ch, &queue).await;
    s.stop().await;
}

#[tokio::test]
async fn capacity_changes_and_cancelled_events_reach_the_room() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = unique("events");
    let s =
        serve(switchboard::build(&config(&queue, &broker_url(BROKER), &[])).expect("build")).await;
    wait_ready(s.addr, 200, Duration::from_secs(10)).await;
    let mut buyer = Client::connect(s.addr, "u2").await;
    buyer.emit("join-event-room", json!({"eventId": 2})).await;
    buyer.expect("joined-event-room").await;
    buyer.lock(2, 4, 3).await;

    emit(
        &ch,
        &queue,
        "event-capacity-changed",
        json!({"eventId": 2, "categoryId": 5, "totalSeats": 350, "availableSeats": 340}),
    )
    .await;
    loop {
        let a = buyer.expect("availability-update").await;
        if a["categoryId"] == 5 {
            assert_eq!(
                (&a["availableTickets"], &a["totalTickets"]),
                (&json!(340), &json!(350))
            );
            break;
        }
    }
    let mut req = Requester::new(&conn).await;
    let r = req
        .send(&queue, "event-cancelled", json!({"eventId": 2}))
        .await;
    assert_eq!(r["response"]["releasedLocks"], 1, "{r}");
    let c = buyer.expect("event-cancelled").await;
    assert_eq!((&c["eventId"], &c["releasedLocks"]), (&json!(2), &json!(1)));
    buyer.emit("get-my-locks", json!({})).await;
    let locks = buyer.expect("my-locks-response").await;
    assert_eq!(locks["locks"], json!([]), "{locks}");
    // As an event too: nothing left to release, the room is told again.
    emit(&ch, &queue, "event-cancelled", json!({"eventId": "2"})).await;
    let c = buyer.expect("event-cancelled").await;
    assert_eq!(c["releasedLocks"], 0);
    cleanup(&ch, &queue).await;
    s.stop().await;
}

#[tokio::test]
async fn poison_and_dangling_messages_are_dead_lettered_with_a_reason() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = unique("poison");
    let s =
        serve(switchboard::build(&config(&queue, &broker_url(BROKER), &[])).expect("build")).await;
    wait_ready(s.addr, 200, Duration::from_secs(10)).await;
    let before = stats(s.addr).await["ticketLocks"].clone();

    let bad: Vec<(&[u8], &str)> = vec![
        (b"not json at all", "unparsable"),
        (b"{\"data\":{}}", "unparsable"),
        (b"[1,2,3]", "unparsable"),
        (br#"{"pattern":"refund-everything","data":{}}"#, "unknown-pattern"),
        (br#"{"pattern":"order-completed","data":{"orderId":"x"}}"#, "invalid-data"),
        (br#"{"pattern":"order-completed","data":"o-1"}"#, "invalid-data"),
        (br#"{"pattern":"order-completed","data":{"orderId":"o","eventId":1,"categoryId":1,"quantity":-3,"userId":"u"}}"#, "invalid-data"),
        (br#"{"pattern":"event-capacity-changed","data":{"eventId":1,"categoryId":1,"totalSeats":5,"availableSeats":9}}"#, "invalid-data"),
        (br#"{"pattern":"order-completed","data":{"orderId":"o","eventId":1,"categoryId":1,"quantity":1,"userId":"nobody"}}"#, "not-found"),
        (br#"{"pattern":"order-cancelled","data":{"orderId":"o2","eventId":99,"categoryId":1,"quantity":1,"userId":"u"}}"#, "not-found"),
        (br#"{"pattern":"confirm-ticket-lock","data":{"lockId":"lock_gone"}}"#, "not-found"),
        (br#"{"pattern":"event-cancelled","data":{"eventId":404}}"#, "not-found"),
        (br#"{"pattern":"event-capacity-changed","data":{"eventId":1,"categoryId":404,"totalSeats":5,"availableSeats":5}}"#, "not-found"),
    ];
    for (body, _) in &bad {
        let props = BasicProperties::default().with_headers({
            let mut h = FieldTable::default();
            h.insert("x-trace".into(), AMQPValue::LongString("t1".into()));
            h
        });
        publish(&ch, &queue, body, props).await;
    }
    // An unparsable request still gets a reply.
    let mut req = Requester::new(&conn).await;
    req.ch
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"{oops",
            BasicProperties::default()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id("c-1".into()),
        )
        .await
        .expect("publish");
    let d = tokio::time::timeout(Duration::from_secs(10), req.replies.next())
        .await
        .expect("reply in time")
        .expect("stream")
        .expect("delivery");
    let reply: Value = serde_json::from_slice(&d.data).expect("json");
    assert!(
        reply["err"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not JSON")),
        "{reply}"
    );

    let dlq = format!("{queue}.dlq");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < bad.len() + 1 {
        assert!(Instant::now() < deadline, "dead letters so far: {got:?}");
        match ch
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
        {
            Some(m) => {
                let h = m.delivery.properties.headers().clone().expect("headers");
                let text = |k: &str| match h.inner().get(k) {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("header {k}: {other:?}"),
                };
                if got.len() < bad.len() {
                    assert_eq!(text("x-trace"), "t1", "original headers are kept");
                }
                assert_eq!(text("x-switchboard-queue"), queue);
                assert!(!text("x-switchboard-error").is_empty());
                got.push((m.delivery.data.clone(), text("x-switchboard-reason")));
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    for (i, (body, reason)) in bad.iter().enumerate() {
        assert_eq!(got[i].0, body.to_vec(), "message {i} in order");
        assert_eq!(got[i].1, *reason, "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(got[bad.len()], (b"{oops".to_vec(), "unparsable".to_owned()));
    let st = stats(s.addr).await;
    let dl = &st["amqp"]["deadLettered"];
    assert_eq!(
        (
            &dl["unparsable"],
            &dl["unknown-pattern"],
            &dl["invalid-data"],
            &dl["not-found"]
        ),
        (&json!(4), &json!(1), &json!(4), &json!(5)),
        "{st}"
    );
    assert_eq!(st["ticketLocks"], before, "nothing else changed");
    // The server still works: a Socket.IO client can hold seats.
    Client::connect(s.addr, "after").await.lock(1, 1, 1).await;
    cleanup(&ch, &queue).await;
    s.stop().await;
}

// ----- chaos ----------------------------------------------------------------------------

/// A TCP proxy to the broker that can cut every connection and refuse new ones: a real
/// connection loss for the consumer, without disturbing other users of the broker.
struct Proxy {
    addr: SocketAddr,
    refuse: Arc<AtomicBool>,
    /// Connections refused so far.
    refused: Arc<AtomicUsize>,
    generation: Arc<parking_lot::Mutex<CancellationToken>>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let refuse = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let generation = Arc::new(parking_lot::Mutex::new(CancellationToken::new()));
        let (r, n, g) = (refuse.clone(), refused.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if r.load(Ordering::SeqCst) {
                    drop(inbound);
                    n.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let cut = g.lock().clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            refuse,
            refused,
            generation,
        }
    }

    /// Cuts every open connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.refuse.store(true, Ordering::SeqCst);
        let mut g = self.generation.lock();
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Connections refused so far.
    fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }

    fn restore(&self) {
        self.refuse.store(false, Ordering::SeqCst);
    }
}

fn catalog_file(categories: usize, seats: u32) -> std::path::PathBuf {
    let cats: Vec<Value> = (1..=categories)
        .map(|i| json!({"id": i, "name": format!("Block {i}"), "price": 10.0, "totalSeats": seats, "availableSeats": seats}))
        .collect();
    let p = std::env::temp_dir().join(format!(
        "switchboard-chaos-catalog-{:08x}.json",
        rand::random::<u32>()
    ));
    std::fs::write(
        &p,
        json!({"events": [{"id": 7, "name": "Chaos Live", "categories": cats}]}).to_string(),
    )
    .expect("write catalog");
    p
}

/// One user holds a seat in each of `n` categories (pipelined in batches).
async fn hold_everything(client: &mut Client, n: usize) {
    for batch in (1..=n).collect::<Vec<_>>().chunks(50) {
        for i in batch {
            client
                .ws
                .feed(Message::Text(
                    format!(
                        "42/realtime,{}",
                        json!(["lock-tickets", {"eventId": 7, "categoryId": i, "quantity": 1}])
                    )
                    .into(),
                ))
                .await
                .expect("feed");
        }
        client.ws.flush().await.expect("flush");
        for _ in batch {
            let r = client.expect("lock-tickets-response").await;
            assert_eq!(r["success"], true, "{r}");
        }
    }
}

struct ChaosReport {
    orders: usize,
    effects: usize,
    duplicates_suppressed: u64,
    redelivered: u64,
    reconnects: u64,
    outages_ms: Vec<u64>,
    dead_lettered: u64,
    elapsed: Duration,
}

/// `orders` order-completed messages (plus 5 poison ones) flow while the consumer's
/// connection is cut twice; every order must have exactly one effect.
async fn chaos(orders: usize, data_dir: &str) -> Option<ChaosReport> {
    if std::env::var("TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,lapin=trace,amq_protocol=info")
            .with_test_writer()
            .try_init();
    }
    let conn = broker().await?;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let proxy = Proxy::start(BROKER).await;
    let queue = unique("chaos");
    let catalog = catalog_file(orders, 5);
    let catalog_s = catalog.display().to_string();
    let s = serve(
        switchboard::build(&config(
            &queue,
            &broker_url(&proxy.addr.to_string()),
            &[
                ("catalog", &catalog_s),
                ("data_dir", data_dir),
                ("max_hold_quantity", "1"),
                ("max_buffered_packets", "100000"),
                ("history_len", "100"),
            ],
        ))
        .expect("build"),
    )
    .await;
    wait_ready(s.addr, 200, Duration::from_secs(10)).await;
    let mut buyer = Client::connect(s.addr, "chaos-buyer").await;
    hold_everything(&mut buyer, orders).await;

    // Count notifications as they come, from the start.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut ws = buyer.ws;
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(t) = msg {
                if t.as_str() == "2" {
                    let _ = ws.send(Message::Text("3".into())).await;
                } else if let Some((name, p)) = parse_event(&t)
                    && name == "order-completed"
                {
                    let _ = tx.send(p["orderId"].as_str().unwrap_or("").to_owned());
                }
            }
        }
    });

    let started = Instant::now();
    let publisher = {
        let ch = ch.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            for i in 1..=orders {
                let body = json!({"pattern": "order-completed", "data": {
                    "orderId": format!("chaos-{i}"), "eventId": 7, "categoryId": i,
                    "quantity": 1, "userId": "chaos-buyer"}})
                .to_string();
                publish(&ch, &queue, body.as_bytes(), BasicProperties::default()).await;
                if i % (orders / 5) == 0 {
                    publish(&ch, &queue, b"poison", BasicProperties::default()).await;
                }
            }
        })
    };

    let mut seen: Vec<String> = Vec::new();
    let mut outages = Vec::new();
    let deadline = started + Duration::from_secs(50);
    let mut cuts_done = 0;
    while seen.len() < orders {
        assert!(
            Instant::now() < deadline,
            "only {} of {orders} effects in time",
            seen.len()
        );
        if let Ok(Some(id)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
            seen.push(id);
        }
        // Cut at 30% and 70% of the orders, while messages are in flight.
        let due = [orders * 3 / 10, orders * 7 / 10];
        if cuts_done < due.len() && seen.len() >= due[cuts_done] {
            cuts_done += 1;
            let refused = proxy.refused();
            proxy.cut();
            let down = wait_ready(s.addr, 503, Duration::from_secs(5)).await;
            assert_ne!(down["broker"]["state"], "connected", "{down}");
            // The socket side keeps serving while the broker is away.
            let (status, _) = get_text(s.addr, "/socket.io/?EIO=4&transport=polling").await;
            assert_eq!(status, 200);
            // The outage lasts until the consumer has tried to reconnect and been refused.
            let retried = tokio::time::timeout(Duration::from_secs(5), async {
                while proxy.refused() == refused {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            assert!(retried.is_ok(), "the consumer never tried to reconnect");
            proxy.restore();
            wait_ready(s.addr, 200, Duration::from_secs(10)).await;
            let st = stats(s.addr).await;
            outages.push(st["amqp"]["lastOutageMs"].as_u64().unwrap_or(0));
        }
    }
    publisher.await.expect("publisher");
    // Let any duplicate that would slip through arrive.
    let settle = Instant::now() + Duration::from_millis(500);
    while let Some(left) = settle.checked_duration_since(Instant::now()) {
        if let Ok(Some(id)) = tokio::time::timeout(left, rx.recv()).await {
            seen.push(id);
        }
    }
    let elapsed = started.elapsed();
    let dlq = format!("{queue}.dlq");
    let dead = ch
        .queue_declare(
            dlq.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dlq")
        .message_count();
    let st = stats(s.addr).await;
    let unique_ids: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique_ids.len(), orders, "every order had its effect");
    assert_eq!(seen.len(), orders, "no order had two effects");
    assert_eq!(
        dead, 5,
        "the poison messages, and only they, are dead letters"
    );
    assert!(
        cuts_done == 2 && st["amqp"]["reconnects"].as_u64() >= Some(2),
        "{st}"
    );
    let (_, events) = get_text(s.addr, "/api/events").await;
    let events: Value = serde_json::from_str(&events).expect("json");
    let cats = events["events"][0]["categories"]
        .as_array()
        .expect("categories");
    assert!(
        cats.iter().all(|c| c["availableSeats"] == 4),
        "each category sold exactly one seat"
    );
    assert_eq!(
        st["ticketLocks"]["locksByStatus"]["completed"],
        json!(orders)
    );
    reader.abort();
    cleanup(&ch, &queue).await;
    let _ = std::fs::remove_file(catalog);
    s.stop().await;
    Some(ChaosReport {
        orders,
        effects: unique_ids.len(),
        duplicates_suppressed: st["amqp"]["duplicates"].as_u64().unwrap_or(0),
        redelivered: st["amqp"]["redelivered"].as_u64().unwrap_or(0),
        reconnects: st["amqp"]["reconnects"].as_u64().unwrap_or(0),
        outages_ms: outages,
        dead_lettered: dead as u64,
        elapsed,
    })
}

fn print(r: &ChaosReport) {
    eprintln!(
        "CHAOS: {} orders, {} effects, {} duplicates suppressed, {} redelivered, {} reconnects, \
         outages {:?} ms (each cut lasts until a reconnect is refused), {} dead letters, {:.1} s",
        r.orders,
        r.effects,
        r.duplicates_suppressed,
        r.redelivered,
        r.reconnects,
        r.outages_ms,
        r.dead_lettered,
        r.elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn chaos_connection_cut_twice_while_1000_orders_flow() {
    let dir = std::env::temp_dir().join(format!("sb-chaos-{:08x}", rand::random::<u32>()));
    let Some(r) = chaos(1000, &dir.display().to_string()).await else {
        return;
    };
    print(&r);
    let _ = std::fs::remove_dir_all(dir);
}

// ----- measurement (ignored: prints numbers, asserts no speed) --------------------------

/// `orders` order-completed events through the real broker to their durable effect and
/// the user's notification; prints messages per second. Run with
/// `cargo test --release -p switchboard --test amqp throughput -- --ignored --nocapture`.
async fn throughput(orders: usize, data_dir: &str) {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = unique("rate");
    let catalog = catalog_file(orders, 5);
    let catalog_s = catalog.display().to_string();
    let mut settings = vec![
        ("catalog", catalog_s.as_str()),
        ("data_dir", data_dir),
        ("max_hold_quantity", "1"),
        ("max_buffered_packets", "100000"),
        ("history_len", "100"),
    ];
    // THROUGHPUT_PREFETCH=N: the consumer's prefetch for this run (default: the config's).
    let prefetch = std::env::var("THROUGHPUT_PREFETCH").unwrap_or_default();
    if !prefetch.is_empty() {
        settings.push(("amqp_prefetch", prefetch.as_str()));
    }
    let s =
        serve(switchboard::build(&config(&queue, &broker_url(BROKER), &settings)).expect("build"))
            .await;
    wait_ready(s.addr, 200, Duration::from_secs(10)).await;
    let mut buyer = Client::connect(s.addr, "rate-buyer").await;
    hold_everything(&mut buyer, orders).await;
    let started = Instant::now();
    let publisher = {
        let ch = ch.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let ids: Vec<usize> = (1..=orders).collect();
            for batch in ids.chunks(500) {
                let mut confirms = Vec::new();
                for i in batch {
                    let body = json!({"pattern": "order-completed", "data": {
                        "orderId": format!("rate-{i}"), "eventId": 7, "categoryId": i,
                        "quantity": 1, "userId": "rate-buyer"}})
                    .to_string();
                    confirms.push(
                        ch.basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .expect("publish"),
                    );
                }
                for c in confirms {
                    c.await.expect("confirm");
                }
            }
            started.elapsed()
        })
    };
    let mut seen = 0;
    let mut first = None;
    while seen < orders {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{seen} effects only"
        );
        let frame = next_text(&mut buyer.ws).await;
        if let Some((name, _)) = parse_event(&frame)
            && name == "order-completed"
        {
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let total = started.elapsed();
    let published = publisher.await.expect("publisher");
    eprintln!(
        "THROUGHPUT ({data_dir}): {orders} order-completed events, published in {:.2} s, \
         all effects in {:.2} s from the first publish: {:.0} msg/s end to end",
        published.as_secs_f64(),
        total.as_secs_f64(),
        orders as f64 / total.as_secs_f64()
    );
    cleanup(&ch, &queue).await;
    let _ = std::fs::remove_file(catalog);
    s.stop().await;
}

#[tokio::test]
#[ignore = "measurement; prints numbers"]
async fn throughput_10k_orders_durable_store() {
    let dir = std::env::temp_dir().join(format!("sb-rate-{:08x}", rand::random::<u32>()));
    throughput(10_000, &dir.display().to_string()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
#[ignore = "measurement; prints numbers"]
async fn throughput_10k_orders_memory_store() {
    throughput(10_000, "memory").await;
}

// ----- ack after the effect, proven by breaking things between them ------------------------

/// Polls `/stats` until `done` holds for it (bounded); returns the last answer.
async fn stats_until(addr: SocketAddr, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = stats(addr).await;
        if done(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "waited for {what}: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn order_of(order_id: &str) -> Value {
    json!({"orderId": order_id, "eventId": 1, "categoryId": 2, "quantity": 2, "userId": "u1"})
}

/// The store fails on the order's write: the message goes back to the queue (nothing was
/// acked), is redelivered and applied exactly once.
#[tokio::test]
async fn a_failing_store_requeues_and_the_order_applies_exactly_once() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = unique("failstore");
    let s = serve(
        switchboard::build(&config(
            &queue,
            &broker_url(BROKER),
            &[("failpoint", "order-store-fails-once")],
        ))
        .expect("build"),
    )
    .await;
    wait_ready(s.addr, 200, Duration::from_secs(10)).await;
    let mut buyer = Client::connect(s.addr, "u1").await;
    buyer.lock(1, 2, 2).await;
    emit(&ch, &queue, "order-completed", order_of("o-fail")).await;
    let n = buyer.expect("order-completed").await;
    assert_eq!(n["orderId"], "o-fail");
    buyer
        .expect_none("order-completed", Duration::from_millis(300))
        .await;
    let st = stats_until(s.addr, "the redelivery acked", |st| {
        st["amqp"]["acked"] == 1
    })
    .await;
    let a = &st["amqp"];
    assert_eq!(
        (
            &a["requeued"],
            &a["redelivered"],
            &a["consumed"],
            &a["duplicates"]
        ),
        (&json!(1), &json!(1), &json!(2), &json!(0)),
        "{st}"
    );
    assert_eq!(st["ticketLocks"]["locksByStatus"]["completed"], 1, "{st}");
    cleanup(&ch, &queue).await;
    s.stop().await;
}

/// A server on a free port as its own process (so it can die), with its log on stderr.
fn spawn_server(
    port: u16,
    data_dir: &std::path::Path,
    queue: &str,
    extra: &[&str],
) -> std::process::Child {
    spawn_server_on(port, data_dir, Some(queue), extra)
}

/// [`spawn_server`], consuming `queue` if given (without: no broker at all).
fn spawn_server_on(
    port: u16,
    data_dir: &std::path::Path,
    queue: Option<&str>,
    extra: &[&str],
) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SWITCHBOARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", &data_dir.display().to_string()]);
    if let Some(queue) = queue {
        cmd.args(["--amqp-url", &broker_url(BROKER)])
            .args(["--set", &format!("amqp_queue={queue}")]);
    }
    cmd.args([
        "--set",
        "coalesce_ms=0",
        "--set",
        "amqp_reconnect_max_ms=500",
    ]);
    for e in extra {
        cmd.args(["--set", e]);
    }
    cmd.env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn switchboard")
}

/// `kill -9` between the effect and the ack: the process aborts right after the order is
/// stored. The broker redelivers the unacked message to the next process on the same
/// store, which recognizes it (no second effect) and acks it.
#[tokio::test]
async fn a_crash_between_effect_and_ack_redelivers_and_applies_exactly_once() {
    let Some(conn) = broker().await else { return };
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let queue = unique("crash");
    let dir = std::env::temp_dir().join(format!("sb-crash-{}", rand::random::<u32>()));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        l.local_addr().expect("addr").port()
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut first = spawn_server(port, &dir, &queue, &["failpoint=abort-after-order-stored"]);
    wait_ready_spawned(addr).await;
    let mut buyer = Client::connect(addr, "u1").await;
    buyer.lock(1, 2, 2).await;
    emit(&ch, &queue, "order-completed", order_of("o-crash")).await;
    let status = tokio::task::spawn_blocking(move || first.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        !status.success(),
        "the failpoint aborted the process: {status}"
    );
    drop(buyer);

    let mut second = spawn_server(port, &dir, &queue, &[]);
    wait_ready_spawned(addr).await;
    let st = stats_until(addr, "the redelivered order recognized and acked", |st| {
        st["amqp"]["acked"] == 1
    })
    .await;
    let a = &st["amqp"];
    assert_eq!(
        (&a["redelivered"], &a["duplicates"], &a["consumed"]),
        (&json!(1), &json!(1), &json!(1)),
        "the unacked message came back and had no second effect: {st}"
    );
    assert_eq!(
        st["ticketLocks"]["locksByStatus"]["completed"], 1,
        "the effect stored before the crash survived: {st}"
    );
    let _ = second.kill();
    let _ = second.wait();
    cleanup(&ch, &queue).await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_ready_spawned(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            let (status, _) = get_text(addr, "/ready").await;
            if status == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server on {addr} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A spawned server killed however the test ends (a panic included).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

/// One buyer taking one seat in each of `categories`, one hold after the other; every
/// granted hold's lock id goes into `answered` as soon as it is answered. Ends quietly
/// when the server goes away.
async fn hold_stream(
    addr: SocketAddr,
    user: String,
    categories: std::ops::RangeInclusive<usize>,
    answered: Arc<parking_lot::Mutex<Vec<(String, String)>>>,
) {
    let mut c = Client::connect(addr, &user).await;
    for cat in categories {
        let frame = json!(["lock-tickets", {"eventId": 7, "categoryId": cat, "quantity": 1}]);
        if c.ws
            .send(Message::Text(format!("42/realtime,{frame}").into()))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(5), c.ws.next()).await
            else {
                return;
            };
            let Message::Text(t) = msg else { continue };
            if t.as_str() == "2" {
                let _ = c.ws.send(Message::Text("3".into())).await;
                continue;
            }
            if let Some((name, r)) = parse_event(&t)
                && name == "lock-tickets-response"
            {
                assert_eq!(r["success"], true, "{r}");
                let lock = r["lockId"].as_str().expect("lockId").to_owned();
                answered.lock().push((user.clone(), lock));
                break;
            }
        }
    }
}

/// The live lock ids of `user` (`get-my-locks`).
async fn locks_of(addr: SocketAddr, user: &str) -> HashSet<String> {
    let mut c = Client::connect(addr, user).await;
    c.emit("get-my-locks", json!({})).await;
    let r = c.expect("my-locks-response").await;
    r["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .map(|l| l["lockId"].as_str().expect("lockId").to_owned())
        .collect()
}

/// `kill -9` while holds (20 buyers at once, so their commits are shared) and orders
/// (pipelined requests, acked with `multiple`) stream in: after a restart on the same
/// data directory, every hold that was answered is there, every order that was replied
/// to or acked is sold, and each category is wholly one thing (held, sold, or free, with
/// the counters agreeing): nothing unanswered is half applied.
#[tokio::test]
async fn kill_9_during_batched_holds_and_orders_loses_nothing_answered_or_acked() {
    let Some(conn) = broker().await else { return };
    const ORDERS: usize = 500;
    const BUYERS: usize = 20;
    const HOLDS_EACH: usize = 50;
    let queue = unique("kill9");
    let dir = std::env::temp_dir().join(format!("sb-kill9-{:08x}", rand::random::<u32>()));
    let categories = ORDERS + BUYERS * HOLDS_EACH;
    let catalog = catalog_file(categories, 1);
    let catalog_set = format!("catalog={}", catalog.display());
    let settings = [
        catalog_set.as_str(),
        "max_hold_quantity=1",
        "rate_limit_per_sec=0",
        "rate_limit_per_user_per_sec=0",
    ];
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut first = Killed(spawn_server(port, &dir, &queue, &settings));
    wait_ready_spawned(addr).await;

    // Seats to order: the orders' buyer holds categories 1..=ORDERS.
    let mut orderer = Client::connect(addr, "orderer").await;
    hold_everything(&mut orderer, ORDERS).await;
    drop(orderer);

    // The buyers connect, then everything starts at once.
    let answered = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut buyers = Vec::new();
    for b in 0..BUYERS {
        let from = ORDERS + 1 + b * HOLDS_EACH;
        buyers.push(tokio::spawn(hold_stream(
            addr,
            format!("buyer-{b}"),
            from..=from + HOLDS_EACH - 1,
            answered.clone(),
        )));
    }
    let ch = conn.create_channel().await.expect("channel");
    let mut replies = reply_to_consumer(&ch).await;
    let replied = Arc::new(parking_lot::Mutex::new(HashSet::new()));
    let collector = {
        let replied = replied.clone();
        tokio::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let reply: Value = serde_json::from_slice(&d.data).expect("json reply");
                assert!(reply["err"].is_null(), "{reply}");
                let cat = d.properties.correlation_id().as_ref().expect("correlation");
                replied
                    .lock()
                    .insert(cat.as_str().parse::<usize>().expect("category"));
            }
        })
    };
    for i in 1..=ORDERS {
        let body = json!({"pattern": "order-completed", "id": format!("r{i}"), "data": {
            "orderId": format!("kill9-{i}"), "eventId": 7, "categoryId": i,
            "quantity": 1, "userId": "orderer"}})
        .to_string();
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(i.to_string().as_str().into()),
        )
        .await
        .expect("publish");
    }

    // Kill while both streams flow.
    let deadline = Instant::now() + Duration::from_secs(60);
    let acked = loop {
        assert!(Instant::now() < deadline, "the streams did not get going");
        let st = stats(addr).await;
        let acked = st["amqp"]["acked"].as_u64().unwrap_or(0) as usize;
        if answered.lock().len() >= 100 && acked >= 20 {
            break acked;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    first.0.kill().expect("kill -9");
    let _ = first.0.wait();
    let answered: Vec<(String, String)> = answered.lock().clone();
    for b in buyers {
        let _ = b.await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    collector.abort();
    let replied: HashSet<usize> = replied.lock().clone();
    assert!(
        answered.len() < BUYERS * HOLDS_EACH && acked.max(replied.len()) < ORDERS,
        "the kill came after the streams ended ({} holds, {} orders acked): it proves nothing",
        answered.len(),
        acked
    );
    assert!(
        replied.len() >= acked,
        "a delivery was acked before its reply was confirmed"
    );

    // The state as the crash left it: no broker, so nothing is redelivered meanwhile.
    let second = Killed(spawn_server_on(port, &dir, None, &settings));
    wait_ready_spawned(addr).await;
    let (_, events) = get_text(addr, "/api/events").await;
    let events: Value = serde_json::from_str(&events).expect("json");
    let seats: Vec<u64> = events["events"][0]["categories"]
        .as_array()
        .expect("categories")
        .iter()
        .map(|c| c["availableSeats"].as_u64().expect("seats"))
        .collect();
    assert_eq!(seats.len(), categories);
    let sold: HashSet<usize> = (1..=categories).filter(|i| seats[i - 1] == 0).collect();
    let orderer_holds = locks_of(addr, "orderer").await.len();
    assert!(
        sold.iter().all(|i| *i <= ORDERS),
        "only ordered categories are sold"
    );
    for i in &replied {
        assert!(sold.contains(i), "order {i} was replied to, then lost");
    }
    // Orders are acked in arrival order: the first `acked` are acked.
    for i in 1..=acked {
        assert!(sold.contains(&i), "order {i} was acked, then lost");
    }
    // Each ordered category is held or sold, never both or neither.
    assert_eq!(
        orderer_holds + sold.len(),
        ORDERS,
        "a category both held and sold, or neither"
    );
    let st = stats(addr).await;
    assert_eq!(
        st["ticketLocks"]["locksByStatus"]["completed"],
        json!(sold.len()),
        "the ended-holds counter agrees with the seats sold: {st}"
    );
    let mut live = 0;
    for b in 0..BUYERS {
        let user = format!("buyer-{b}");
        let mine = locks_of(addr, &user).await;
        live += mine.len();
        for (_, lock) in answered.iter().filter(|(u, _)| *u == user) {
            assert!(
                mine.contains(lock),
                "{user}'s answered hold {lock} was lost"
            );
        }
    }
    assert_eq!(
        st["ticketLocks"]["activeLocks"],
        json!(live + orderer_holds),
        "every live hold belongs to a buyer: {st}"
    );
    eprintln!(
        "KILL -9: {} holds answered ({live} on disk), {} orders replied, {acked} acked ({} sold)",
        answered.len(),
        replied.len(),
        sold.len()
    );
    drop(second);
    let ch = conn.create_channel().await.expect("channel");
    cleanup(&ch, &queue).await;
    let _ = std::fs::remove_file(catalog);
    let _ = std::fs::remove_dir_all(&dir);
}
