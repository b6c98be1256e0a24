//! Property tests (our fuzz targets) for the Engine.IO decoders: arbitrary input never
//! panics, and what we encode decodes back to the same packets.

use bytes::Bytes;
use engineio::packet::{Inbound, Packet, decode_payload, encode_payload};
use proptest::prelude::*;

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        Just(Packet::Close),
        any::<bool>().prop_map(|probe| Packet::Ping { probe }),
        any::<bool>().prop_map(|probe| Packet::Pong { probe }),
        "[^\u{1e}]{0,40}".prop_map(|s| Packet::Message(s.into())),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Packet::Binary(Bytes::from(v))),
        Just(Packet::Upgrade),
        Just(Packet::Noop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_text_never_panics(s in "\\PC{0,64}") {
        let _ = Inbound::decode(&s);
        let _ = decode_payload(&s);
    }

    #[test]
    fn decoding_arbitrary_bytes_as_lossy_text_never_panics(b in proptest::collection::vec(any::<u8>(), 0..128)) {
        let s = String::from_utf8_lossy(&b);
        let _ = decode_payload(&s);
    }

    #[test]
    fn payloads_round_trip(packets in proptest::collection::vec(packet(), 1..8)) {
        let body = encode_payload(&packets);
        let back: Vec<Packet> = body
            .split('\u{1e}')
            .map(|r| Packet::decode_text(r).expect("what we encode decodes"))
            .collect();
        prop_assert_eq!(back, packets);
    }
}
