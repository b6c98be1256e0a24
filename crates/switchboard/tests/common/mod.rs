//! Test support: a server on port 0 with an injected shutdown, and tiny clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard::config::{Config, Sources};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub app: switchboard::App,
    shutdown: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) fn conformance_config(overrides: &[(&str, &str)]) -> Config {
    let sources = Sources {
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Sources::default()
    };
    Config::load(&sources).expect("test config").conformance()
}

/// Serves the conformance app on 127.0.0.1:0 until `stop`.
pub(crate) async fn start(config: Config) -> TestServer {
    serve(switchboard::build_conformance(&config)).await
}

/// Serves any built app on 127.0.0.1:0 until `stop`.
pub(crate) async fn serve(app: switchboard::App) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(switchboard::run(
        listener,
        app.clone(),
        async {
            let _ = rx.await;
        },
        Duration::from_secs(2),
    ));
    TestServer {
        addr,
        app,
        shutdown: Some(tx),
        done: Some(done),
    }
}

impl TestServer {
    pub(crate) fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(10), done)
                .await
                .expect("shutdown within grace")
                .expect("run task");
        }
    }
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub(crate) async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    http_with(
        addr,
        method,
        path,
        "Content-Type: text/plain;charset=UTF-8\r\n",
        body,
    )
    .await
}

/// Like [`http`], with extra header lines (each ending in `\r\n`).
pub(crate) async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let text_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..text_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut body = raw[text_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 4 + n..];
    }
}

pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> (u16, String) {
    let (s, b) = http(addr, "GET", path, b"").await;
    (s, String::from_utf8(b).expect("utf-8 body"))
}

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn ws(addr: SocketAddr, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("websocket connect");
    ws
}

/// Next text frame, skipping pings (`2`) which it answers.
pub(crate) async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time");
        match msg {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.expect("pong");
            }
            Some(Ok(Message::Text(t))) => return t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Waits until the server closes the socket (close frame or EOF), answering nothing.
pub(crate) async fn expect_closed(ws: &mut Ws, within: Duration) {
    let closed = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "server did not close the connection in time"
    );
}

/// A Socket.IO client on the main namespace over WebSocket, past CONNECT and `auth`.
pub(crate) async fn sio_main(addr: SocketAddr) -> Ws {
    let mut ws = ws(addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut ws).await.starts_with('0'));
    ws.send(Message::Text("40".into())).await.expect("send");
    assert!(next_text(&mut ws).await.starts_with("40{\"sid\""));
    assert_eq!(next_text(&mut ws).await, "42[\"auth\",{}]");
    ws
}

/// Proves a client still works: an echo round trip.
pub(crate) async fn assert_echo(ws: &mut Ws, tag: &str) {
    ws.send(Message::Text(format!("42[\"message\",\"{tag}\"]").into()))
        .await
        .expect("send");
    assert_eq!(
        next_text(ws).await,
        format!("42[\"message-back\",\"{tag}\"]")
    );
}

/// Polls until `f` is true (bounded), for state that settles asynchronously.
pub(crate) async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Says on the terminal that a test did not run what it names, past the test harness's
/// output capture (which swallows `eprintln!` of a passing test), so a local green run
/// shows what it did not test. Under `CI=true` a missing dependency is a failure instead.
pub(crate) fn skipped(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "required in CI: {why}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}
