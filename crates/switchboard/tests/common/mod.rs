//! Test support: a server on port 0 with an injected shutdown, and tiny clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use switchboard::config::{Config, Sources};
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

/// One HTTP/1.1 request with a `text/plain` body; returns (status, body).
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

/// Like [`http`], with extra header lines (each ending in `\r\n`). The request goes out
/// on a fresh connection through hyper's HTTP/1 client, with `Host`, `Connection: close`
/// and `Content-Length` as a browser would send them; the body comes back de-chunked.
pub(crate) async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let req = request(addr, method, path, headers)
        .header(http::header::CONNECTION, "close")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("a valid request");
    let exchange = async {
        // The connection task ends with the response (`Connection: close`).
        let (res, _conn) = send_request(addr, req).await;
        let status = res.status().as_u16();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, body.to_vec())
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("response in time")
}

/// A request to the server at `addr` with `Host` and the given header lines (each
/// `Name: value\r\n`), to finish with a body.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> http::request::Builder {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for line in headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("a header line `Name: value`");
        req = req.header(name.trim(), value.trim());
    }
    req
}

/// Sends `req` on a new HTTP/1 connection (hyper's client) and returns the response head
/// with its streaming body, and the task that drives the connection (abort it to close
/// the connection at once).
pub(crate) async fn send_request<B>(
    addr: SocketAddr,
    req: http::Request<B>,
) -> (
    http::Response<hyper::body::Incoming>,
    tokio::task::JoinHandle<()>,
)
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await.expect("response");
    (res, conn)
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
