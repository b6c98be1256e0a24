//! Room fan-out: one publish to a room of 1,000 members. Members here do nothing with
//! the envelope (a real one queues a clone of the shared frames), so this measures the
//! hub's own part: offsets, history, membership walk, the encode cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use hub::{Delivery, Envelope, FormatId, Hub, HubConfig, Member, Payload, Publish};

/// Counts deliveries and touches the shared encoding, as a transport would.
struct NoopMember {
    format: FormatId,
    seen: AtomicU64,
}

impl Member for NoopMember {
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        let frame: Arc<str> = envelope.encoded(self.format, |e| Arc::from(&*e.payload.args));
        black_box(frame);
        self.seen.fetch_add(1, Ordering::Relaxed);
        Delivery::Delivered
    }

    fn transport(&self) -> &'static str {
        "bench"
    }
}

fn publish_to_room(c: &mut Criterion) {
    let format = FormatId::register();
    let mut group = c.benchmark_group("publish");
    for members in [1_000usize] {
        let hub = Hub::new(HubConfig::default());
        for _ in 0..members {
            let id = hub.add_member(Arc::new(NoopMember {
                format,
                seen: AtomicU64::new(0),
            }));
            hub.join(id, "event_1").expect("room limit not reached");
        }
        let payload = Payload::raw_args([r#"{"eventId":1,"categoryId":2,"availableTickets":198}"#]);
        group.throughput(Throughput::Elements(members as u64));
        group.bench_function(format!("room_of_{members}"), |b| {
            b.iter(|| {
                let (_, delivered) = hub.publish(Publish {
                    rooms: std::iter::once(Arc::from("event_1")).collect(),
                    event: "availability-update".into(),
                    payload: payload.clone(),
                    persist: true,
                    ..Publish::default()
                });
                black_box(delivered)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, publish_to_room);
criterion_main!(benches);
