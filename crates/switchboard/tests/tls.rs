//! TLS on the listener with certificates made here (`rcgen`): HTTPS, WSS `/ws` and
//! Socket.IO over WSS, and a certificate swap on SIGHUP (the real binary) while an
//! established WSS connection keeps working.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A certificate authority and a server certificate for `localhost` / 127.0.0.1 it
/// signed, written as PEM files.
struct Pki {
    ca: CertificateDer<'static>,
}

impl Pki {
    fn issue(dir: &Path) -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "switchboard test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("ca key"),
        )
        .expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).expect("sign");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
        Pki {
            ca: ca.der().clone(),
        }
    }

    /// A client that trusts only this authority.
    fn client(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).expect("ca root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-tls-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

async fn tls(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
}

async fn https_get(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    path: &str,
) -> (u16, String) {
    let mut s = tls(connector, addr).await.expect("TLS handshake");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut raw = Vec::new();
    // A peer may close without close_notify after the answer; what arrived is enough.
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

async fn wss(connector: &tokio_rustls::TlsConnector, addr: SocketAddr, path: &str) -> Wss {
    let stream = tls(connector, addr).await.expect("TLS handshake");
    let (ws, _) = tokio_tungstenite::client_async(format!("wss://localhost{path}"), stream)
        .await
        .expect("websocket over TLS");
    ws
}

async fn next_text(ws: &mut Wss) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
        {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::Text("3".into())).await.expect("pong");
            }
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(_)) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// A `/ws` ping round trip: the connection still works.
async fn ws_ping(ws: &mut Wss, id: u64) {
    ws.send(Message::Text(
        json!({"action": "ping", "ack": id}).to_string().into(),
    ))
    .await
    .expect("send");
    loop {
        let v: Value = serde_json::from_str(&next_text(ws).await).expect("json");
        if v["ack"] == id {
            assert!(v["data"]["timestamp"].is_number(), "{v}");
            return;
        }
    }
}

/// The real binary with the listener's TLS files; its address from the start-up log.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Its log lines after the start-up line.
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    #[allow(clippy::zombie_processes)] // the returned Server waits for it on drop
    fn start(dir: &Path) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        for (k, _) in std::env::vars() {
            if k.starts_with("SWITCHBOARD_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .args(["--listen", "127.0.0.1:0", "--data-dir", "memory"])
            .args([
                "--set",
                &format!("tls_cert_file={}", dir.join("cert.pem").display()),
            ])
            .args([
                "--set",
                &format!("tls_key_file={}", dir.join("key.pem").display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchboard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Up to 20 s: 100 waits of 200 ms.
        for _ in 0..100 {
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if line.contains("switchboard listening") {
                assert!(line.contains("tls=true"), "{line}");
                let addr = line
                    .rsplit("listen=")
                    .next()
                    .and_then(|a| a.trim().parse().ok())
                    .expect("listen address in the log");
                return Server {
                    child,
                    addr,
                    log: rx,
                };
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("switchboard did not start");
    }

    /// The next log line containing `needle` (others are skipped); fails after 10 s
    /// without a line.
    fn wait_log(&self, needle: &str) -> String {
        loop {
            match self.log.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?}: {e}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn https_wss_and_socketio_over_tls_and_a_certificate_swap_on_sighup() {
    let dir = temp_dir("swap");
    let first = Pki::issue(&dir);
    let server = Server::start(&dir);
    let addr = server.addr;
    let trusts_first = first.client();

    // HTTPS.
    let (status, body) = https_get(&trusts_first, addr, "/health").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ok\""), "{body}");
    // Plain HTTP on the TLS port gets no answer.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .map_or(0, |r| r.unwrap_or(0));
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));

    // WSS /ws, kept open across the swap.
    let mut kept = wss(&trusts_first, addr, "/ws?userId=kept").await;
    let hello: Value = serde_json::from_str(&next_text(&mut kept).await).expect("json");
    assert_eq!(hello["event"], "connected", "{hello}");
    ws_ping(&mut kept, 1).await;

    // Socket.IO over WSS: open, CONNECT to /realtime, an event with an ack.
    let mut sio = wss(&trusts_first, addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut sio).await.starts_with("0{\"sid\""));
    sio.send(Message::Text("40/realtime,{}".into()))
        .await
        .expect("send");
    assert!(
        next_text(&mut sio)
            .await
            .starts_with("40/realtime,{\"sid\"")
    );
    sio.send(Message::Text("42/realtime,1[\"heartbeat\",{}]".into()))
        .await
        .expect("send");
    loop {
        let t = next_text(&mut sio).await;
        if t.starts_with("43/realtime,1") {
            assert!(t.contains("\"success\":true"), "{t}");
            break;
        }
    }

    // A certificate from another authority replaces the files; SIGHUP reloads it.
    let second = Pki::issue(&dir);
    let trusts_second = second.client();
    assert!(
        tls(&trusts_second, addr).await.is_err(),
        "not before the reload"
    );
    server.signal("HUP");
    let mut swapped = false;
    for _ in 0..100 {
        if tls(&trusts_second, addr).await.is_ok() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "new handshakes use the new certificate");
    assert!(
        tls(&trusts_first, addr).await.is_err(),
        "the old certificate is no longer presented"
    );
    let (status, _) = https_get(&trusts_second, addr, "/health").await;
    assert_eq!(status, 200);
    // The connections made before the reload keep working.
    ws_ping(&mut kept, 2).await;
    sio.send(Message::Text("42/realtime,2[\"heartbeat\",{}]".into()))
        .await
        .expect("send");
    loop {
        if next_text(&mut sio).await.starts_with("43/realtime,2") {
            break;
        }
    }

    // A broken file on the next SIGHUP: the reload fails, the current certificate stays.
    std::fs::write(dir.join("cert.pem"), "not a certificate").expect("write");
    server.signal("HUP");
    server.wait_log("TLS reload failed");
    let (status, _) = https_get(&trusts_second, addr, "/health").await;
    assert_eq!(status, 200, "still serving the last good certificate");
    ws_ping(&mut kept, 3).await;
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_tls_files_refuse_to_start() {
    let dir = temp_dir("bad");
    let out = |pairs: &[(&str, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir", "memory"]);
        for (k, v) in pairs {
            cmd.args(["--set", &format!("{k}={v}")]);
        }
        cmd.stdin(Stdio::null()).output().expect("run")
    };
    // Only one of the two files.
    let o = out(&[("tls_cert_file", dir.join("cert.pem").display().to_string())]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tls_key_file"));
    // Files that do not exist, or hold no certificate.
    std::fs::write(dir.join("junk.pem"), "junk").expect("write");
    for cert in ["missing.pem", "junk.pem"] {
        let o = out(&[
            ("tls_cert_file", dir.join(cert).display().to_string()),
            ("tls_key_file", dir.join("junk.pem").display().to_string()),
        ]);
        assert_eq!(o.status.code(), Some(64), "{cert}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(cert), "{cert}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS listener with a certificate no public authority signed: every handshake a client
/// starts is reported (the server side's outcome).
async fn untrusted_tls_listener(dir: &Path) -> (SocketAddr, tokio::sync::mpsc::Receiver<String>) {
    Pki::issue(dir);
    let tls = switchboard::tls::Tls::load(
        &dir.join("cert.pem").display().to_string(),
        &dir.join("key.pem").display().to_string(),
    )
    .expect("tls");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let outcome = match tls.acceptor().accept(stream).await {
                Ok(_) => "accepted".to_owned(),
                Err(e) => e.to_string(),
            };
            if tx.send(outcome).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn amqps_and_rediss_speak_tls_and_verify_the_certificate() {
    let dir = temp_dir("brokers");
    let (addr, mut handshakes) = untrusted_tls_listener(&dir).await;

    // rediss:// (the redis crate's rustls support): a TLS handshake, refused by the client
    // because no trusted authority signed the server's certificate.
    let client = redis::Client::open(format!("rediss://localhost:{}/", addr.port())).expect("url");
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("answer in time")
    .expect_err("untrusted certificate");
    let seen = tokio::time::timeout(Duration::from_secs(5), handshakes.recv())
        .await
        .expect("a TLS handshake reached the server")
        .expect("outcome");
    assert_ne!(seen, "accepted", "{e}");
    let text = format!("{e:?}").to_lowercase();
    assert!(
        text.contains("certificate") || text.contains("issuer"),
        "{text}"
    );

    // amqps:// (lapin with rustls): the consumer connects with TLS and reports why it
    // cannot, in /ready.
    let config = switchboard::config::Config::load(&switchboard::config::Sources {
        overrides: vec![
            ("data_dir".into(), "memory".into()),
            (
                "amqp_url".into(),
                format!("amqps://guest:guest@localhost:{}/%2f", addr.port()),
            ),
            ("amqp_reconnect_max_ms".into(), "200".into()),
        ],
        ..Default::default()
    })
    .expect("amqps accepted");
    let app = switchboard::build(&config).expect("build");
    let seen = tokio::time::timeout(Duration::from_secs(10), handshakes.recv())
        .await
        .expect("the consumer started a TLS handshake")
        .expect("outcome");
    assert_ne!(seen, "accepted");
    let mut last_error = String::new();
    for _ in 0..100 {
        let res = tower::ServiceExt::oneshot(
            app.router.clone(),
            axum::http::Request::get("/ready")
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
        assert_eq!(res.status(), 503);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .expect("body")
            .to_bytes();
        let v: Value = serde_json::from_slice(&body).expect("json");
        last_error = v["broker"]["lastError"]
            .as_str()
            .unwrap_or("")
            .to_lowercase();
        if !last_error.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        last_error.contains("certificate")
            || last_error.contains("issuer")
            || last_error.contains("tls"),
        "{last_error}"
    );
    app.close_sessions();
    let _ = std::fs::remove_dir_all(&dir);
}
