//! Property tests (our fuzz targets) for the Socket.IO decoder: arbitrary and mutated input
//! never panics, and encoded events decode back to the same name and arguments.

use engineio::Frame;
use hub::Payload;
use proptest::prelude::*;
use socketio::packet::{Packet, PacketType, encode_event};

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_text_never_panics(s in "\\PC{0,80}") {
        if let Ok(p) = Packet::decode(&s, 10) {
            let _ = p.event();
            let _ = p.ack_args();
        }
    }

    #[test]
    fn decoding_packet_shaped_text_never_panics(
        kind in 0u8..8,
        att in proptest::option::of("[0-9a-z]{0,3}"),
        nsp in proptest::option::of("/[a-z,/]{0,6}"),
        id in proptest::option::of("[0-9]{0,25}"),
        body in "[\\[\\]{}\",:0-9a-z\u{e9}\\\\]{0,30}",
    ) {
        let s = format!(
            "{kind}{}{}{}{body}",
            att.map(|a| format!("{a}-")).unwrap_or_default(),
            nsp.map(|n| format!("{n},")).unwrap_or_default(),
            id.unwrap_or_default()
        );
        if let Ok(p) = Packet::decode(&s, 10) {
            prop_assert!(p.attachments <= 10);
            let _ = p.event();
        }
    }

    #[test]
    fn events_round_trip(
        nsp in "/[a-z]{0,8}",
        name in "\\PC{1,12}",
        args in proptest::collection::vec(any::<i64>(), 0..5),
        id in proptest::option::of(any::<u64>()),
    ) {
        let raw: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let payload = Payload::raw_args(raw.iter().map(String::as_str));
        let frames = encode_event(&nsp, &name, &payload, id, None);
        let Frame::Text(text) = &frames[0] else { panic!("text frame") };
        // Strip the Engine.IO message type.
        let p = Packet::decode(&text[1..], 10).expect("decodes");
        prop_assert_eq!(p.kind, PacketType::Event);
        prop_assert_eq!(p.nsp, if nsp == "/" { "/" } else { nsp.as_str() });
        prop_assert_eq!(p.id, id);
        let ev = p.event().expect("event");
        prop_assert_eq!(ev.name, name);
        let got: Vec<String> = ev.args.iter().map(|a| a.get().to_owned()).collect();
        prop_assert_eq!(got, raw);
    }
}
