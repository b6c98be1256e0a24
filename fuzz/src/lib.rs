//! The fuzz targets' bodies: one function per decoder of outside bytes, each taking
//! arbitrary bytes and returning nothing. A panic anywhere (the server's tasks included:
//! [`abort_on_panic`]) or a hang is a finding.
//!
//! Pure decoders are called directly. Decoders that live inside a session (Socket.IO
//! binary reassembly, `/ws` JSON actions, SSE `Last-Event-ID`) are reached through a real
//! server in this process on 127.0.0.1:0, started once; each input is one connection that
//! the target closes and drains, so the server has read every frame before the next input.
//!
//! Compiled twice: by cargo-fuzz (`fuzz_targets/*.rs`, nightly, libFuzzer) and, through
//! `#[path]`, by `crates/switchboard/tests/fuzz_corpus.rs`, which replays `fuzz/corpus` and
//! `fuzz/regressions` on stable.

use std::net::SocketAddr;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::codec::Decoder as _;

/// Makes any panic, on any thread, end the process: a server task's panic would otherwise
/// be caught by tokio (or by the Socket.IO layer's handler guard) and go unseen.
pub fn abort_on_panic() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::abort();
        }));
    });
}

/// Engine.IO packets and long-polling payloads.
pub fn engineio_packet(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = engineio::packet::Packet::decode_text(&text) {
        let mut out = String::new();
        p.encode_text_into(&mut out);
        // What we encode, we decode to the same packet.
        assert_eq!(
            engineio::packet::Packet::decode_text(&out).ok(),
            Some(p),
            "round trip of {out:?}"
        );
    }
    let _ = engineio::packet::decode_payload(&text);
}

/// Socket.IO packets: header, namespace, ack id, attachments count, JSON arguments.
pub fn socketio_packet(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = socketio::packet::Packet::decode(&text, 10) {
        let _ = p.event();
        let _ = p.ack_args();
    }
}

/// NestJS TCP frames (`<len>#<json>`, lengths in UTF-16 units), pushed in the pieces the
/// first byte chooses, as a socket would deliver them.
pub fn nest_tcp_frames(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 16) + 1;
    let mut codec = switchboard::nest::FrameCodec::new(4096);
    let mut buf = bytes::BytesMut::new();
    for piece in rest.chunks(step) {
        buf.extend_from_slice(piece);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
    let _ = codec.decode_eof(&mut buf);
}

/// RabbitMQ message bodies in the NestJS RMQ format, applied to a hold service (in
/// memory) as the consumer would: the verdict (ack, reply, dead letter) must come back.
pub fn rmq_message(data: &[u8]) {
    let s = servers();
    let can_reply = data.first().is_some_and(|b| b & 1 == 1);
    let _ = switchboard::nest::decode_packet(data);
    let verdict = s.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), s.handler.handle(data, can_reply)).await
    });
    assert!(verdict.is_ok(), "a broker message hung the handler");
}

/// Socket.IO over a real WebSocket session (conformance server: `/`, `/custom`, `/e2e`):
/// frames separated by 0xFF, each a text frame (first byte even) or a binary attachment.
pub fn socketio_session(data: &[u8]) {
    let s = servers();
    let frames: Vec<Message> = data
        .split(|b| *b == 0xff)
        .filter_map(|f| {
            let (&kind, body) = f.split_first()?;
            Some(if kind & 1 == 0 {
                Message::Text(String::from_utf8_lossy(body).into_owned().into())
            } else {
                Message::Binary(body.to_vec().into())
            })
        })
        .collect();
    s.rt.block_on(websocket_exchange(
        s.conformance,
        "/socket.io/?EIO=4&transport=websocket",
        frames,
    ));
}

/// `/ws` JSON frames (events of the ticket contract and room actions), as one client.
pub fn ws_json(data: &[u8]) {
    let s = servers();
    let frames = data
        .split(|b| *b == 0xff)
        .map(|f| Message::Text(String::from_utf8_lossy(f).into_owned().into()))
        .collect();
    s.rt.block_on(websocket_exchange(s.production, "/ws?userId=fuzz", frames));
}

/// SSE resume: arbitrary `Last-Event-ID` header (first byte even) or `lastEventId` query.
pub fn sse_last_event_id(data: &[u8]) {
    let s = servers();
    let Some((&how, id)) = data.split_first() else {
        return;
    };
    let request = if how & 1 == 0 {
        // A header value cannot hold CR, LF or NUL; anything else goes in as is.
        let value: Vec<u8> = id
            .iter()
            .map(|&b| {
                if matches!(b, b'\r' | b'\n' | 0) {
                    b' '
                } else {
                    b
                }
            })
            .collect();
        let mut r = b"GET /events?userId=fuzz&channels=fuzz-room HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\nLast-Event-ID: ".to_vec();
        r.extend_from_slice(&value);
        r.extend_from_slice(b"\r\n\r\n");
        r
    } else {
        let mut q = String::new();
        for b in id {
            q.push_str(&format!("%{b:02X}"));
        }
        format!("GET /events?userId=fuzz&channels=fuzz-room&lastEventId={q} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n").into_bytes()
    };
    s.rt.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(s.production)
            .await
            .expect("connect");
        tcp.write_all(&request).await.expect("write");
        // The resume position is decided before the response head: the head is enough.
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "no answer to an /events request");
        let status = got.get(9..12);
        assert!(
            matches!(status, Some(b"200") | Some(b"400")),
            "unexpected answer: {}",
            String::from_utf8_lossy(&got)
        );
    });
}

/// Config text: the TOML file, and `key=value` lines as flags.
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let overrides = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let _ = switchboard::Config::load(&switchboard::config::Sources {
        file: Some(("fuzz.toml".into(), text.clone())),
        ..Default::default()
    });
    let _ = switchboard::Config::load(&switchboard::config::Sources {
        overrides,
        ..Default::default()
    });
}

struct Servers {
    rt: tokio::runtime::Runtime,
    conformance: SocketAddr,
    production: SocketAddr,
    handler: switchboard::ingest::Handler,
}

fn config(pairs: &[(&str, &str)]) -> switchboard::Config {
    switchboard::Config::load(&switchboard::config::Sources {
        overrides: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
    .expect("fuzz config")
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        abort_on_panic();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let production_config = config(&[
            ("data_dir", "memory"),
            ("coalesce_ms", "0"),
            ("rate_limit_per_sec", "0"),
            ("ping_interval_ms", "60000"),
        ]);
        let (conformance, production, handler) = rt.block_on(async {
            let serve = |app: switchboard::App| async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let addr = listener.local_addr().expect("addr");
                tokio::spawn(switchboard::run(
                    listener,
                    app,
                    std::future::pending::<()>(),
                    Duration::from_secs(1),
                ));
                addr
            };
            let conformance = serve(switchboard::build_conformance(
                &config(&[("ping_interval_ms", "60000"), ("ping_timeout_ms", "60000")])
                    .conformance(),
            ))
            .await;
            let production =
                serve(switchboard::build(&production_config).expect("production app")).await;
            let hub = hub::Hub::new(production_config.hub());
            let holds = switchboard::tickets::HoldService::open(
                production_config.holds(),
                switchboard::tickets::demo_catalog(),
                Box::new(switchboard::tickets::SqliteStore::memory().expect("memory store")),
                hub.clone(),
                Duration::ZERO,
            )
            .expect("hold service");
            let handler = switchboard::ingest::Handler { holds, hub };
            (conformance, production, handler)
        });
        Servers {
            rt,
            conformance,
            production,
            handler,
        }
    })
}

/// Connects, sends `frames`, closes, and reads until the server has closed too (the
/// server reads in order, so it has taken every frame by then).
async fn websocket_exchange(addr: SocketAddr, path: &str, frames: Vec<Message>) {
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
            .await
            .expect("websocket connect");
        for f in frames {
            if ws.send(f).await.is_err() {
                break;
            }
        }
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(done.is_ok(), "the server did not finish a session in 10 s");
}

/// A target's body.
pub type Target = fn(&[u8]);

/// For the stable replay: every target by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("engineio_packet", engineio_packet),
    ("socketio_packet", socketio_packet),
    ("socketio_session", socketio_session),
    ("nest_tcp_frames", nest_tcp_frames),
    ("rmq_message", rmq_message),
    ("ws_json", ws_json),
    ("sse_last_event_id", sse_last_event_id),
    ("config_toml", config_toml),
];
