//! Socket.IO packet encode and decode: the per-message work of every event a client
//! sends (decode + event split) and of every broadcast (one encode, shared).

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use hub::Payload;
use socketio::packet::{Packet, encode_ack, encode_event};

/// What a buyer sends to hold seats (without the Engine.IO `4`).
const LOCK: &str = r#"2/realtime,12["lock-tickets",{"eventId":1,"categoryId":2,"quantity":2}]"#;
/// An availability update as the hold service publishes it.
const UPDATE: &str = r#"{"eventId":1,"categoryId":2,"availableTickets":198,"lockedTickets":2,"totalTickets":200,"timestamp":1767225600000}"#;

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(LOCK.len() as u64));
    group.bench_function("lock_tickets_event", |b| {
        b.iter(|| {
            let p = Packet::decode(black_box(LOCK), 10).expect("valid packet");
            let e = p.event().expect("an event");
            black_box((e.name.len(), e.args.len()))
        });
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let payload = Payload::raw_args([UPDATE]);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("availability_update_with_offset", |b| {
        b.iter(|| {
            black_box(encode_event(
                black_box("/realtime"),
                "availability-update",
                &payload,
                None,
                Some(123_456),
            ))
        });
    });
    group.bench_function("ack", |b| {
        b.iter(|| black_box(encode_ack(black_box("/realtime"), 12, &payload)));
    });
    group.finish();
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
