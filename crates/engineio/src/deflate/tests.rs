use super::*;
use futures_util::StreamExt;
use http::HeaderValue;
use proptest::prelude::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn offer(v: &str) -> bool {
    let mut h = HeaderMap::new();
    h.append(
        SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_str(v).expect("test data"),
    );
    accepts(&h)
}

#[test]
fn offers_we_honour_and_offers_we_decline() {
    // Node's `ws` and Chromium both offer this.
    assert!(offer("permessage-deflate; client_max_window_bits"));
    assert!(offer("permessage-deflate"));
    assert!(offer(
        "Permessage-Deflate; server_no_context_takeover; client_no_context_takeover"
    ));
    assert!(offer("permessage-deflate; server_max_window_bits=15"));
    assert!(offer("permessage-deflate; client_max_window_bits=\"10\""));
    // A second offer is considered when the first is declined.
    assert!(offer(
        "permessage-deflate; server_max_window_bits=10, permessage-deflate"
    ));
    assert!(!offer("permessage-deflate; server_max_window_bits=10"));
    assert!(!offer("permessage-deflate; server_max_window_bits"));
    assert!(!offer("permessage-deflate; client_max_window_bits=7"));
    assert!(!offer("permessage-deflate; client_max_window_bits=+9"));
    assert!(!offer("permessage-deflate; server_no_context_takeover=1"));
    assert!(!offer(
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover"
    ));
    assert!(!offer("permessage-deflate; x_unknown"));
    assert!(!offer("x-webkit-deflate-frame"));
    assert!(!accepts(&HeaderMap::new()));
}

/// Inflates a raw deflate message the way a client does (tail appended).
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("test data");
    out
}

fn json(n: usize) -> Vec<u8> {
    let mut s = String::from("42[\"update\",[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("{{\"seat\":{i},\"free\":true}},"));
        i += 1;
    }
    s.push_str("0]]");
    s.into_bytes()
}

#[test]
fn a_message_deflates_alone_and_inflates_back() {
    let msg = json(4096);
    let d = deflate(&msg).expect("JSON compresses");
    assert!(d.len() < msg.len() / 4, "{} of {}", d.len(), msg.len());
    assert!(!d.ends_with(&TAIL));
    assert_eq!(inflate(&d), msg);
    // No context: the same message deflates to the same bytes every time.
    assert_eq!(deflate(&msg).expect("test data"), d);
    // Nothing gained: sent as it is.
    assert_eq!(deflate(b"2"), None);
}

/// A masked client frame.
fn frame(b0: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![b0];
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Feeds `bytes` to a scanner in pieces of `step`, collecting what it passes on.
fn scan(max: usize, bytes: &[u8], step: usize) -> (Vec<u8>, Box<Scanner>) {
    let mut sc = Box::new(Scanner::new(max));
    for piece in bytes.chunks(step.max(1)) {
        sc.feed(piece).expect("test data");
    }
    let out = sc.out[sc.out_pos..].to_vec();
    (out, sc)
}

/// The frames in scanner output: (first byte, payload unmasked).
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let hs = header_size(b[1]);
        let len = match b[1] & 0x7f {
            126 => u16::from_be_bytes([b[2], b[3]]) as usize,
            127 => u64::from_be_bytes(b[2..10].try_into().expect("test data")) as usize,
            n => n as usize,
        };
        let mask: [u8; 4] = b[hs - 4..hs].try_into().expect("test data");
        let p = b[hs..hs + len]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ mask[i % 4])
            .collect();
        v.push((b[0], p));
        b = &b[hs + len..];
    }
    v
}

#[test]
fn uncompressed_frames_pass_byte_for_byte() {
    let mut wire = frame(0x81, b"42[\"hello\"]", [1, 2, 3, 4]);
    wire.extend(frame(0x89, b"", [9, 9, 9, 9]));
    wire.extend(frame(0x82, &[7; 300], [5, 6, 7, 8]));
    for step in [1, 3, 7, 4096] {
        let (out, _) = scan(1 << 20, &wire, step);
        assert_eq!(out, wire, "step {step}");
    }
}

#[test]
fn a_compressed_message_arrives_inflated_with_rsv1_cleared() {
    let msg = json(3000);
    let z = deflate(&msg).expect("test data");
    let mut wire = frame(0xc1, &z, [0xa1, 0xb2, 0xc3, 0xd4]);
    wire.extend(frame(0x81, b"after", [1, 1, 1, 1]));
    for step in [1, 5, 1000, 1 << 16] {
        let (out, sc) = scan(1 << 20, &wire, step);
        let f = frames(&out);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0], (0x81, msg.clone()), "step {step}");
        assert_eq!(f[1], (0x81, b"after".to_vec()));
        assert!(sc.inflate.is_none(), "no inflate state after the message");
    }
}

#[test]
fn fragments_inflate_in_order_around_a_control_frame() {
    let msg = json(5000);
    let z = deflate(&msg).expect("test data");
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut wire = frame(0x41, a, [1, 2, 3, 4]);
    wire.extend(frame(0x89, b"hb", [4, 3, 2, 1]));
    wire.extend(frame(0x00, b, [5, 5, 5, 5]));
    wire.extend(frame(0x80, c, [6, 7, 8, 9]));
    for step in [1, 64, 1 << 16] {
        let (out, _) = scan(1 << 20, &wire, step);
        let f = frames(&out);
        assert_eq!(f.len(), 4, "step {step}");
        assert_eq!(f[0].0, 0x01);
        assert_eq!(f[1], (0x89, b"hb".to_vec()));
        assert_eq!(f[2].0, 0x00);
        assert_eq!(f[3].0, 0x80);
        let whole: Vec<u8> = [&f[0].1[..], &f[2].1[..], &f[3].1[..]].concat();
        assert_eq!(whole, msg);
    }
}

#[test]
fn a_bomb_is_refused_at_the_limit_without_inflating_it() {
    let zeros = vec![0u8; 8 << 20];
    let z = deflate(&zeros).expect("test data");
    assert!(z.len() < 16 * 1024);
    let max = 100_000;
    let (out, sc) = scan(max, &frame(0xc2, &z, [3, 1, 4, 1]), 4096);
    assert!(sc.dead);
    assert!(sc.frame.capacity() == 0 && sc.inflate.is_none());
    // One header announcing one byte over the limit, and nothing else.
    assert_eq!(out[0], 0x82);
    assert_eq!(out[1], 0x80 | 127);
    assert_eq!(&out[2..10], &(max as u64 + 1).to_be_bytes());
    assert_eq!(out.len(), 14);
    // A message exactly at the limit still passes.
    let fits = vec![b'a'; max];
    let (out, sc) = scan(
        max,
        &frame(0xc1, &deflate(&fits).expect("test data"), [0; 4]),
        4096,
    );
    assert!(!sc.dead);
    assert_eq!(frames(&out)[0].1, fits);
}

#[test]
fn a_server_frame_is_inflated_for_a_client_and_stays_unmasked() {
    let msg = json(2000);
    let mut wire = vec![0xc1, 126];
    let z = deflate(&msg).expect("test data");
    wire.extend_from_slice(&(z.len() as u16).to_be_bytes());
    wire.extend_from_slice(&z);
    let (out, _) = scan(1 << 20, &wire, 100);
    assert_eq!(out[0], 0x81);
    assert_eq!(out[1], 126, "no mask bit");
    assert_eq!(&out[4..], &msg[..]);
}

#[test]
fn a_client_passes_the_response_head_then_inflates() {
    let msg = json(1500);
    let z = deflate(&msg).expect("test data");
    let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let mut wire = head.to_vec();
    wire.extend_from_slice(&[0xc1, 126]);
    wire.extend_from_slice(&(z.len() as u16).to_be_bytes());
    wire.extend_from_slice(&z);
    for step in [1, 7, 4096] {
        let mut sc = Box::new(Scanner::new(1 << 20));
        sc.mode = Mode::Head(0);
        for piece in wire.chunks(step) {
            sc.feed(piece).expect("test data");
        }
        assert_eq!(&sc.out[..head.len()], head, "step {step}");
        assert_eq!(&sc.out[head.len()..head.len() + 2], &[0x81, 126]);
        assert_eq!(&sc.out[head.len() + 4..], &msg[..]);
    }
}

#[test]
fn corrupt_deflate_data_is_an_error() {
    let mut sc = Scanner::new(1 << 20);
    let err = sc
        .feed(&frame(0xc1, &[0xff, 0xff, 0xff, 0xff, 0xff], [0; 4]))
        .expect_err("corrupt data");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

proptest! {
    #[test]
    fn any_message_any_fragmentation_any_reads(
        msg in proptest::collection::vec(any::<u8>(), 0..3000),
        repeat in 1usize..4,
        cuts in proptest::collection::vec(any::<u16>(), 0..4),
        mask in any::<[u8; 4]>(),
        step in 1usize..600,
    ) {
        let msg: Vec<u8> = msg.iter().copied().cycle().take(msg.len() * repeat).collect();
        let z = deflate(&msg).map_or_else(|| {
            // Incompressible: deflate it anyway (the client may send it compressed).
            let mut c = Compress::new(Compression::fast(), false);
            let mut out = Vec::with_capacity(msg.len() * 2 + 64);
            c.compress_vec(&msg, &mut out, FlushCompress::Sync).expect("test data");
            out.truncate(out.len() - 4);
            out
        }, |z| z.to_vec());
        let mut at: Vec<usize> = cuts.iter().map(|c| *c as usize % (z.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut last = 0;
        for a in at.into_iter().chain([z.len()]) {
            pieces.push(&z[last..a]);
            last = a;
        }
        let mut wire = Vec::new();
        for (i, p) in pieces.iter().enumerate() {
            let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
            let b0 = if i == 0 { 0x42 | fin } else { fin };
            wire.extend(frame(b0, p, mask));
        }
        let (out, _) = scan(1 << 20, &wire, step);
        let whole: Vec<u8> = frames(&out).into_iter().flat_map(|(_, p)| p).collect();
        prop_assert_eq!(whole, msg);
    }
}

/// tungstenite reading through [`Inflating`] from an in-memory socket.
async fn tungstenite_reads(wire: Vec<u8>, max: usize) -> Vec<Result<Message, WsError>> {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let mut ws = WebSocketStream::from_raw_socket(
        Inflating::new(server, true, max),
        Role::Server,
        Some(config),
    )
    .await;
    assert!(!ws.get_ref().holds_state());
    tokio::spawn(async move {
        client.write_all(&wire).await.expect("test data");
        // Keep the client open until the reader is done.
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    });
    let mut got = Vec::new();
    while let Some(m) = ws.next().await {
        let stop = m.is_err() || matches!(m, Ok(Message::Close(_)));
        got.push(m);
        if stop {
            break;
        }
    }
    got
}

#[tokio::test]
async fn tungstenite_reads_compressed_messages_and_refuses_a_bomb_as_too_big() {
    let msg = json(2048);
    let mut wire = frame(0xc1, &deflate(&msg).expect("test data"), [9, 8, 7, 6]);
    wire.extend(frame(0x81, b"plain", [1, 2, 3, 4]));
    wire.extend(frame(
        0xc1,
        &deflate(&vec![b'x'; 1 << 20]).expect("test data"),
        [0; 4],
    ));
    let got = tungstenite_reads(wire, 64 * 1024).await;
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0].as_ref().expect("test data"),
        &Message::Text(String::from_utf8(msg).expect("test data").into())
    );
    assert_eq!(
        got[1].as_ref().expect("test data"),
        &Message::Text("plain".into())
    );
    assert!(matches!(got[2], Err(WsError::Capacity(_))), "{:?}", got[2]);
}

#[tokio::test]
async fn after_a_compressed_message_an_idle_connection_holds_nothing() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let mut ws =
        WebSocketStream::from_raw_socket(Inflating::new(server, true, 1 << 20), Role::Server, None)
            .await;
    let msg = json(3000);
    // Written in two pieces: the scanner holds the half frame in between.
    let wire = frame(0xc1, &deflate(&msg).expect("test data"), [7, 7, 7, 7]);
    let (a, b) = wire.split_at(wire.len() / 2);
    client.write_all(a).await.expect("test data");
    let read = tokio::spawn(async move {
        let m = ws.next().await.expect("test data").expect("test data");
        (m, ws)
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    client.write_all(b).await.expect("test data");
    let (m, ws) = read.await.expect("test data");
    assert_eq!(
        m,
        Message::Text(String::from_utf8(msg).expect("test data").into())
    );
    assert!(!ws.get_ref().holds_state());
}

#[tokio::test]
async fn rsv1_where_no_message_is_compressed_is_still_a_protocol_error() {
    // A ping with RSV1, and a continuation with RSV1: tungstenite refuses both.
    let got = tungstenite_reads(frame(0xc9, b"", [0; 4]), 1024).await;
    assert!(matches!(got[0], Err(WsError::Protocol(_))), "{:?}", got[0]);
    let mut wire = frame(0x01, b"a", [0; 4]);
    wire.extend(frame(0xc0, b"b", [0; 4]));
    let got = tungstenite_reads(wire, 1024).await;
    assert!(
        matches!(got.last(), Some(Err(WsError::Protocol(_)))),
        "{got:?}"
    );
    // Invalid UTF-8 inside a compressed text message is refused like any other.
    let got = tungstenite_reads(
        frame(0xc1, &deflate(&[0xff; 64]).expect("test data"), [0; 4]),
        1024,
    )
    .await;
    assert!(got[0].is_err(), "{:?}", got[0]);
}
