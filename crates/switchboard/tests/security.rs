//! Safe to expose (issue #15, part A), over real sockets: tokens from an identity
//! provider's JWKS (a local key server, with key rotation), room authorization on every
//! transport, browser origins, API key rotation. TLS is in `tls.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard::auth::{Auth, AuthError, Claims, JwksConfig};
use switchboard::config::{Config, Sources};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ISSUER: &str = "https://id.test";
const AUDIENCE: &str = "switchboard";

/// A local identity provider: serves its key set at `/jwks` (or 503 while "down"),
/// counting requests.
struct KeyServer {
    addr: SocketAddr,
    set: Arc<parking_lot::Mutex<Option<JwkSet>>>,
    hits: Arc<AtomicUsize>,
}

impl KeyServer {
    async fn start(keys: Vec<Jwk>) -> KeyServer {
        let set = Arc::new(parking_lot::Mutex::new(Some(JwkSet { keys })));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h) = (set.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (s, h) = (s.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    match s.lock().clone() {
                        Some(set) => Ok(axum::Json(set)),
                        None => Err(axum::http::StatusCode::SERVICE_UNAVAILABLE),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        KeyServer { addr, set, hits }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    fn publish(&self, keys: Vec<Jwk>) {
        *self.set.lock() = Some(JwkSet { keys });
    }

    fn go_down(&self) {
        *self.set.lock() = None;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A signing key of the identity provider and its public JWK.
struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    /// A fresh P-256 key, generated here.
    fn ec(kid: &str) -> Signer {
        let pair = rcgen::KeyPair::generate().expect("P-256 key");
        Signer {
            kid: kid.into(),
            alg: Algorithm::ES256,
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
        }
    }

    /// The RSA test key of `fixtures/` (RSA generation is too slow for a debug test).
    fn rsa(kid: &str) -> Signer {
        let pem = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/rsa_private.pem"
        ))
        .expect("fixture");
        Signer {
            kid: kid.into(),
            alg: Algorithm::RS256,
            key: EncodingKey::from_rsa_pem(&pem).expect("rsa pem"),
        }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).expect("jwk");
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A token signed by this key, with `kid` in its header.
    fn token(&self, claims: Value) -> String {
        self.token_as(&self.kid, claims)
    }

    fn token_as(&self, kid: &str, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &self.key).expect("sign")
    }
}

fn exp_in(secs: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + secs
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": exp_in(600), "iss": ISSUER, "aud": AUDIENCE})
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// A token with `alg: none` and no signature.
fn unsigned(kid: &str, claims: Value) -> String {
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": kid})),
        b64(claims)
    )
}

fn jwks_auth(url: String, max_age: Duration, min_refresh: Duration) -> Auth {
    Auth::jwks(
        JwksConfig {
            url,
            max_age,
            min_refresh,
            timeout: Duration::from_secs(2),
        },
        Claims {
            issuer: vec![ISSUER.into()],
            audience: vec![AUDIENCE.into()],
            leeway_secs: 0,
        },
    )
}

/// Moves tokio's clock forward by `d` at once, so the key cache's intervals pass in no
/// real time. The clock is paused for the jump only, not for the whole test as
/// `start_paused` would: a paused clock skips to the next timer whenever the runtime waits
/// on a socket, and the key fetch is real HTTP under a 2 s timeout.
async fn skip(d: Duration) {
    tokio::time::pause();
    tokio::time::advance(d).await;
    tokio::time::resume();
}

async fn kind(auth: &Auth, token: &str) -> Result<String, &'static str> {
    auth.identify(Some(token), None)
        .await
        .map(|i| i.user)
        .map_err(|e| e.kind())
}

#[tokio::test]
async fn jwks_keys_by_kid_rotation_and_refusals() {
    let a = Signer::ec("a");
    let r = Signer::rsa("r");
    let idp = KeyServer::start(vec![a.jwk(), r.jwk()]).await;
    // Intervals far longer than the test's real steps take (on a loaded machine too):
    // they pass only when the test skips the clock past them.
    let auth = jwks_auth(idp.url(), Duration::from_secs(600), Duration::from_secs(30));
    assert_eq!(idp.hits(), 0, "nothing fetched before the first token");
    // ES256 and RS256 keys of one set, chosen by kid; one fetch serves both.
    assert_eq!(kind(&auth, &a.token(claims("ann"))).await, Ok("ann".into()));
    assert_eq!(kind(&auth, &r.token(claims("rob"))).await, Ok("rob".into()));
    assert_eq!(idp.hits(), 1);

    // A wrong kid: refused; within the refresh interval no second fetch.
    assert_eq!(
        kind(&auth, &a.token_as("nope", claims("ann"))).await,
        Err("unknown-key")
    );
    assert_eq!(idp.hits(), 1, "refresh rate limit");
    // `alg: none` (even naming a real kid), a key's kid on another key's signature, an
    // RSA signature under an EC key's kid, a wrong audience or issuer: refused, and none
    // of them costs a fetch.
    for (what, token) in [
        ("alg none", unsigned("a", claims("ann"))),
        (
            "wrong key for kid",
            Signer::ec("x").token_as("a", claims("ann")),
        ),
        ("algorithm of another key", r.token_as("a", claims("ann"))),
        (
            "wrong audience",
            a.token(with(claims("ann"), json!({"aud": "other-service"}))),
        ),
        (
            "wrong issuer",
            a.token(with(claims("ann"), json!({"iss": "https://evil.test"}))),
        ),
        (
            "expired",
            a.token(with(claims("ann"), json!({"exp": exp_in(-60)}))),
        ),
    ] {
        let got = kind(&auth, &token).await;
        assert!(
            got == Err("invalid") || (what == "expired" && got == Err("expired")),
            "{what}: {got:?}"
        );
    }
    assert_eq!(idp.hits(), 1);

    // Rotation: the provider replaces `a` by `b`. A token signed with the new key is
    // accepted after one fetch (once the rate limit allows it); the removed key is not.
    let b = Signer::ec("b");
    idp.publish(vec![b.jwk(), r.jwk()]);
    skip(Duration::from_secs(31)).await;
    assert_eq!(kind(&auth, &b.token(claims("bea"))).await, Ok("bea".into()));
    assert_eq!(idp.hits(), 2);
    skip(Duration::from_secs(31)).await;
    assert_eq!(
        kind(&auth, &a.token(claims("ann"))).await,
        Err("unknown-key"),
        "removed key"
    );
    assert_eq!(idp.hits(), 3);
}

#[tokio::test]
async fn an_expired_or_unreachable_key_set_refuses_tokens() {
    let a = Signer::ec("a");
    let idp = KeyServer::start(vec![a.jwk()]).await;
    let auth = jwks_auth(idp.url(), Duration::from_secs(300), Duration::from_secs(5));
    assert_eq!(kind(&auth, &a.token(claims("ann"))).await, Ok("ann".into()));
    // The provider goes away: the set still serves until it is older than its max age...
    idp.go_down();
    assert_eq!(kind(&auth, &a.token(claims("ann"))).await, Ok("ann".into()));
    // ...then every token is refused, with a message that says why.
    skip(Duration::from_secs(301)).await;
    let e = auth
        .identify(Some(&a.token(claims("ann"))), None)
        .await
        .expect_err("stale set");
    assert!(matches!(e, AuthError::KeysUnavailable(_)), "{e:?}");
    assert_eq!(e.to_string(), "Signing keys unavailable: try again later");
    assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
    // Back up: served again.
    idp.publish(vec![a.jwk()]);
    skip(Duration::from_secs(6)).await;
    assert_eq!(kind(&auth, &a.token(claims("ann"))).await, Ok("ann".into()));

    // Nothing listening at all.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let auth = jwks_auth(
        format!("http://{dead}/jwks"),
        Duration::from_secs(60),
        Duration::from_millis(50),
    );
    assert_eq!(
        kind(&auth, &a.token(claims("ann"))).await,
        Err("keys-unavailable")
    );
}

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

async fn next_json(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).expect("json frame")
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("send");
}

/// The answer to `/ws` frame `{.., "ack": id}`.
async fn ws_ack(ws: &mut Ws, id: u64) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["ack"] == id {
            return v["data"].clone();
        }
    }
}

/// A `/ws` client with `token`, past `connected`.
async fn ws_with(addr: SocketAddr, token: &str) -> Ws {
    let mut ws = ws(addr, &format!("/ws?token={token}")).await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["event"], "connected", "{hello}");
    ws
}

/// The close code `/ws` answers a token with.
async fn ws_refusal(addr: SocketAddr, token: &str) -> u16 {
    let mut ws = ws(addr, &format!("/ws?token={token}")).await;
    loop {
        match tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::StreamExt::next(&mut ws),
        )
        .await
        .expect("close in time")
        {
            Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return 0,
            Some(Ok(_)) => {}
        }
    }
}

/// A Socket.IO client of `/realtime` over WebSocket with `token`; the CONNECT answer.
async fn sio_realtime(addr: SocketAddr, token: &str) -> (Ws, String) {
    let mut ws = ws(addr, "/socket.io/?EIO=4&transport=websocket").await;
    assert!(next_text(&mut ws).await.starts_with('0'));
    ws.send(Message::Text(
        format!("40/realtime,{}", json!({ "token": token })).into(),
    ))
    .await
    .expect("send");
    let answer = next_text(&mut ws).await;
    (ws, answer)
}

/// The ack of Socket.IO event `id` on `/realtime`.
async fn sio_ack(ws: &mut Ws, id: u64) -> Value {
    let prefix = format!("43/realtime,{id}");
    loop {
        let t = next_text(ws).await;
        if let Some(rest) = t.strip_prefix(&prefix) {
            let args: Value = serde_json::from_str(rest).expect("ack args");
            return args[0].clone();
        }
    }
}

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name_and_labels} not in /metrics"))
}

#[tokio::test]
async fn rooms_a_token_does_not_allow_are_refused_on_every_transport() {
    let k = Signer::ec("k1");
    let idp = KeyServer::start(vec![k.jwk()]).await;
    let s = serve(
        switchboard::build(&config(&[
            ("jwt_jwks_url", &idp.url()),
            ("jwt_issuer", ISSUER),
            ("jwt_audience", AUDIENCE),
            ("private_room_prefixes", "private:,vip_"),
        ]))
        .expect("build"),
    )
    .await;
    let scoped = k.token(with(
        claims("ann"),
        json!({"rooms": ["event_1", "chat:team-1", "private:ops"]}),
    ));
    let plain = k.token(claims("bob"));

    // /ws: allowed rooms join; others get {success: false, message}.
    let mut ann = ws_with(s.addr, &scoped).await;
    send(
        &mut ann,
        json!({"action": "join", "roomId": "chat:team-1", "ack": 1}),
    )
    .await;
    assert_eq!(ws_ack(&mut ann, 1).await["success"], true);
    send(
        &mut ann,
        json!({"action": "join", "roomId": "private:ops", "ack": 2}),
    )
    .await;
    assert_eq!(ws_ack(&mut ann, 2).await["success"], true);
    for (i, room) in [(3, "chat:team-2"), (4, "lobby"), (5, "private:hr")] {
        send(
            &mut ann,
            json!({"action": "join", "roomId": room, "ack": i}),
        )
        .await;
        let a = ws_ack(&mut ann, i).await;
        assert_eq!(a["success"], false, "{room}: {a}");
        assert_eq!(a["message"], format!("Not allowed to join room {room:?}"));
    }
    // The ticket contract's join over /ws: event_1 is granted, event_2 is not.
    send(
        &mut ann,
        json!({"event": "join-event-room", "data": {"eventId": 1}, "ack": 6}),
    )
    .await;
    assert_eq!(ws_ack(&mut ann, 6).await["success"], true);
    send(
        &mut ann,
        json!({"event": "join-event-room", "data": {"eventId": 2}, "ack": 7}),
    )
    .await;
    let a = ws_ack(&mut ann, 7).await;
    assert_eq!(a["success"], false, "{a}");
    assert_eq!(a["message"], "Not allowed to join room \"event_2\"");
    // A token without a rooms claim: today's rules, but no private rooms.
    let mut bob = ws_with(s.addr, &plain).await;
    send(
        &mut bob,
        json!({"action": "join", "roomId": "lobby", "ack": 1}),
    )
    .await;
    assert_eq!(ws_ack(&mut bob, 1).await["success"], true);
    for (i, room) in [(2, "private:ops"), (3, "vip_lounge"), (4, "user:ann")] {
        send(
            &mut bob,
            json!({"action": "join", "roomId": room, "ack": i}),
        )
        .await;
        assert_eq!(ws_ack(&mut bob, i).await["success"], false, "{room}");
    }

    // Socket.IO /realtime: join-event-room answered {success: false, message}.
    let (mut sio, answer) = sio_realtime(s.addr, &scoped).await;
    assert!(answer.starts_with("40/realtime,{\"sid\""), "{answer}");
    sio.send(Message::Text(
        "42/realtime,1[\"join-event-room\",{\"eventId\":2}]".into(),
    ))
    .await
    .expect("send");
    let a = sio_ack(&mut sio, 1).await;
    assert_eq!(a["success"], false, "{a}");
    assert_eq!(a["message"], "Not allowed to join room \"event_2\"");
    sio.send(Message::Text(
        "42/realtime,2[\"join-event-room\",{\"eventId\":1}]".into(),
    ))
    .await
    .expect("send");
    assert_eq!(sio_ack(&mut sio, 2).await["success"], true);

    // SSE: 403 naming the channel, nothing opened; allowed channels stream.
    let (status, body) = http_with(
        s.addr,
        "GET",
        "/events?channels=chat:team-1,chat:team-2",
        &format!("Authorization: Bearer {scoped}\r\n"),
        b"",
    )
    .await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("chat:team-2"), "{body}");
    let (status, body) = http_with(
        s.addr,
        "GET",
        "/events?channels=private:ops",
        &format!("Authorization: Bearer {plain}\r\n"),
        b"",
    )
    .await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));

    // Every refusal is counted per transport.
    let (_, text) = get_text(s.addr, "/metrics").await;
    assert_eq!(
        metric(&text, "switchboard_room_refused_total{transport=\"ws\"}"),
        7
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_room_refused_total{transport=\"socketio\"}"
        ),
        1
    );
    assert_eq!(
        metric(&text, "switchboard_room_refused_total{transport=\"sse\"}"),
        2
    );

    // Bad tokens never connect: alg none, a wrong kid, a wrong audience.
    let bad = [
        unsigned("k1", claims("eve")),
        k.token_as("k2", claims("eve")),
        k.token(with(claims("eve"), json!({"aud": "another-api"}))),
    ];
    for token in &bad {
        assert_eq!(ws_refusal(s.addr, token).await, 4001, "{token}");
        let (_, answer) = sio_realtime(s.addr, token).await;
        assert!(answer.starts_with("44/realtime,"), "{answer}");
        let (status, _) = http_with(
            s.addr,
            "GET",
            "/events",
            &format!("Authorization: Bearer {token}\r\n"),
            b"",
        )
        .await;
        assert_eq!(status, 401);
    }
    s.stop().await;
}

/// An upgrade or stream request with `Origin`; the status line's code.
async fn status_with_origin(addr: SocketAddr, path: &str, origin: &str, upgrade: bool) -> u16 {
    let mut headers = format!("Origin: {origin}\r\n");
    if upgrade {
        headers.push_str(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn websockets_and_streams_from_other_origins_are_refused() {
    let s = serve(
        switchboard::build(&config(&[("allowed_origins", "https://app.example")])).expect("build"),
    )
    .await;
    let own = format!("http://{}", s.addr);
    let sio = "/socket.io/?EIO=4&transport=websocket";
    for (path, upgrade) in [
        ("/ws?userId=a", true),
        (sio, true),
        ("/events?userId=a", false),
    ] {
        let ok = if upgrade { 101 } else { 200 };
        assert_eq!(
            status_with_origin(s.addr, path, "https://evil.example", upgrade).await,
            403,
            "{path}"
        );
        assert_eq!(
            status_with_origin(s.addr, path, "null", upgrade).await,
            403,
            "{path}"
        );
        assert_eq!(
            status_with_origin(s.addr, path, "https://app.example", upgrade).await,
            ok,
            "{path}"
        );
        assert_eq!(
            status_with_origin(s.addr, path, &own, upgrade).await,
            ok,
            "{path}: same origin"
        );
    }
    // Long-polling stays under CORS (no Upgrade): not refused here.
    let (status, _) = http_with(
        s.addr,
        "GET",
        "/socket.io/?EIO=4&transport=polling",
        "Origin: https://evil.example\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 200);
    // Non-browser clients send no Origin and connect.
    let mut ws = ws(s.addr, "/ws?userId=cli").await;
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    let (_, text) = get_text(s.addr, "/metrics").await;
    for t in ["ws", "socketio", "sse"] {
        assert_eq!(
            metric(
                &text,
                &format!("switchboard_origin_refused_total{{transport=\"{t}\"}}")
            ),
            2,
            "{t}"
        );
    }
    s.stop().await;

    // By default the WebSocket origins follow cors_origins.
    let s = serve(
        switchboard::build(&config(&[("cors_origins", "https://shop.example")])).expect("build"),
    )
    .await;
    assert_eq!(
        status_with_origin(s.addr, "/ws", "https://evil.example", true).await,
        403
    );
    assert_eq!(
        status_with_origin(s.addr, "/ws", "https://shop.example", true).await,
        101
    );
    s.stop().await;
    let s = serve(switchboard::build(&config(&[])).expect("build")).await;
    assert_eq!(
        status_with_origin(s.addr, "/ws", "https://any.example", true).await,
        101,
        "cors_origins = [\"*\"]"
    );
    // A tungstenite client request with an Origin header, end to end.
    let mut req = format!("ws://{}/ws?userId=x", s.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("origin", "https://any.example".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    assert_eq!(next_json(&mut ws).await["event"], "connected");
    s.stop().await;
}

#[tokio::test]
async fn api_keys_rotate_and_wrong_keys_are_refused() {
    let publish = |addr, key: &'static str| async move {
        http_with(
            addr,
            "POST",
            "/api/publish",
            &format!("Content-Type: application/json\r\nAuthorization: Bearer {key}\r\n"),
            br#"{"room":"r","event":"e","data":1}"#,
        )
        .await
        .0
    };
    // Rotation, step 1: the old key and the new one both work.
    let s = serve(
        switchboard::build(&config(&[("api_key", "old-key"), ("api_keys", "new-key")]))
            .expect("build"),
    )
    .await;
    assert_eq!(publish(s.addr, "old-key").await, 200);
    assert_eq!(publish(s.addr, "new-key").await, 200);
    for wrong in ["old-ke", "old-keyy", "new-key2", "NEW-KEY", "x"] {
        assert_eq!(publish(s.addr, wrong).await, 401, "{wrong:?}");
    }
    s.stop().await;
    // Step 2: the old key is removed and refused.
    let s = serve(switchboard::build(&config(&[("api_keys", "new-key")])).expect("build")).await;
    assert_eq!(publish(s.addr, "old-key").await, 401);
    assert_eq!(publish(s.addr, "new-key").await, 200);
    let (_, stats) = get_text(s.addr, "/api/rooms").await;
    assert!(stats.contains("invalid or missing API key"), "{stats}");
    s.stop().await;
}
