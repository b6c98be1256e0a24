use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
struct Sink {
    got: Mutex<Vec<u64>>,
    closed: bool,
    user: Option<String>,
}

impl Member for Sink {
    fn deliver(&self, e: &Arc<Envelope>) -> Delivery {
        if self.closed {
            return Delivery::Closed;
        }
        self.got.lock().push(e.offset);
        Delivery::Delivered
    }
    fn transport(&self) -> &'static str {
        "test"
    }
    fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

fn publish(hub: &Hub, rooms: &[&str], except: &[&str]) -> u64 {
    hub.publish(Publish {
        rooms: rooms.iter().map(|r| Arc::from(*r)).collect(),
        except: except.iter().map(|r| Arc::from(*r)).collect(),
        event: "e".into(),
        payload: Payload::json(&1),
        volatile: false,
        persist: true,
        ..Publish::default()
    })
    .0
}

fn user_member(hub: &Hub, user: &str) -> (MemberId, Arc<Sink>) {
    let s = Arc::new(Sink {
        user: Some(user.to_owned()),
        ..Sink::default()
    });
    (hub.add_member(s.clone()), s)
}

#[test]
fn everyone_reaches_every_member_and_is_replayable() {
    let hub = Hub::new(HubConfig::default());
    let (a, sa) = member(&hub);
    let (_b, sb) = member(&hub);
    hub.join(a, "r").expect("join");
    let (o, n) = hub.publish(Publish {
        everyone: true,
        except_member: Some(a),
        event: "e".into(),
        persist: true,
        ..Publish::default()
    });
    assert_eq!(n, 1);
    assert!(sa.got.lock().is_empty());
    assert_eq!(*sb.got.lock(), vec![o]);
    let replay = hub.replay(&[Arc::from(EVERYONE)], o - 1).expect("replay");
    assert_eq!(replay.iter().map(|e| e.offset).collect::<Vec<_>>(), vec![o]);
}

#[test]
fn offsets_start_after_first_offset_and_older_resumes_are_gaps() {
    let hub = Hub::new(HubConfig {
        first_offset: 1_000,
        ..HubConfig::default()
    });
    let o = publish(&hub, &["r"], &[]);
    assert_eq!(o, 1_001);
    // A client of an earlier process (offsets below 1,000) cannot be replayed.
    assert_eq!(hub.replay(&[Arc::from("r")], 500).err(), Some(Gap));
    assert_eq!(hub.replay(&[Arc::from("other")], 500).err(), Some(Gap));
    assert!(hub.replay(&[Arc::from("r")], 1_000).is_ok());
}

#[test]
fn a_room_recreated_after_pruning_keeps_its_gap() {
    let hub = Hub::new(HubConfig {
        history_len: 1,
        ..HubConfig::default()
    });
    let first = publish(&hub, &["r"], &[]);
    publish(&hub, &["r"], &[]);
    // History now holds only the second message; prune removes nothing yet (history).
    hub.prune(Instant::now() + Duration::from_secs(3600));
    assert_eq!(hub.stats().rooms, 0);
    let (a, _) = member(&hub);
    hub.join(a, "r").expect("join");
    assert_eq!(hub.replay(&[Arc::from("r")], first - 1).err(), Some(Gap));
}

#[test]
fn presence_counts_users_once() {
    let hub = Hub::new(HubConfig::default());
    let (a1, _) = user_member(&hub, "alice");
    let (a2, _) = user_member(&hub, "alice");
    let (b, sb) = user_member(&hub, "bob");
    let (anon, _) = member(&hub);
    assert_eq!(hub.join_presence(b, "r", 100), Ok(Presence::Changed));
    assert_eq!(hub.join_presence(a1, "r", 100), Ok(Presence::Changed));
    assert_eq!(hub.join_presence(a2, "r", 100), Ok(Presence::Unchanged));
    assert_eq!(hub.join_presence(a2, "r", 100), Ok(Presence::Unchanged));
    assert_eq!(hub.join_presence(anon, "r", 100), Ok(Presence::Untracked));
    assert_eq!(hub.leave_presence(a1, "r", 100), Presence::Unchanged);
    assert_eq!(
        hub.remove_member_presence(a2, 100),
        vec![Arc::<str>::from("r")]
    );
    assert_eq!(hub.leave_presence(a2, "r", 100), Presence::Unchanged);
    // Over the limit, nothing is tracked.
    assert_eq!(hub.leave_presence(b, "r", 0), Presence::Untracked);
    assert!(sb.got.lock().is_empty());
    assert_eq!(hub.join_presence(b, "r", 0), Ok(Presence::Untracked));
}

fn member(hub: &Hub) -> (MemberId, Arc<Sink>) {
    let s = Arc::new(Sink::default());
    (hub.add_member(s.clone()), s)
}

#[test]
fn room_members_get_messages_once_in_order() {
    let hub = Hub::new(HubConfig::default());
    let (a, sa) = member(&hub);
    let (b, sb) = member(&hub);
    let (_c, sc) = member(&hub);
    hub.join(a, "r1").expect("join");
    hub.join(a, "r2").expect("join");
    hub.join(b, "r1").expect("join");
    let o1 = publish(&hub, &["r1"], &[]);
    let o2 = publish(&hub, &["r1", "r2"], &[]);
    assert_eq!(*sa.got.lock(), vec![o1, o2]);
    assert_eq!(*sb.got.lock(), vec![o1, o2]);
    assert!(sc.got.lock().is_empty());
}

#[test]
fn except_skips_members_of_those_rooms() {
    let hub = Hub::new(HubConfig::default());
    let (a, sa) = member(&hub);
    let (b, sb) = member(&hub);
    hub.join(a, "r").expect("join");
    hub.join(a, "self-a").expect("join");
    hub.join(b, "r").expect("join");
    publish(&hub, &["r"], &["self-a"]);
    assert!(sa.got.lock().is_empty());
    assert_eq!(sb.got.lock().len(), 1);
}

#[test]
fn leave_and_remove_stop_delivery() {
    let hub = Hub::new(HubConfig::default());
    let (a, sa) = member(&hub);
    hub.join(a, "r").expect("join");
    hub.leave(a, "r");
    publish(&hub, &["r"], &[]);
    hub.join(a, "r").expect("join");
    assert_eq!(hub.remove_member(a), vec![Arc::<str>::from("r")]);
    publish(&hub, &["r"], &[]);
    assert!(sa.got.lock().is_empty());
    assert_eq!(hub.stats().members, 0);
}

#[test]
fn room_limit_is_enforced() {
    let hub = Hub::new(HubConfig {
        max_rooms_per_member: 2,
        ..HubConfig::default()
    });
    let (a, _) = member(&hub);
    hub.join(a, "1").expect("join");
    hub.join(a, "2").expect("join");
    hub.join(a, "2").expect("rejoining is free");
    assert_eq!(hub.join(a, "3"), Err(JoinError::TooManyRooms));
    assert_eq!(hub.rooms_of(a).len(), 2);
}

#[test]
fn replay_returns_missed_messages_in_order_without_duplicates() {
    let hub = Hub::new(HubConfig::default());
    let o1 = publish(&hub, &["r1"], &[]);
    let o2 = publish(&hub, &["r2"], &[]);
    let o3 = publish(&hub, &["r1", "r2"], &[]);
    let _other = publish(&hub, &["r3"], &[]);
    let rooms: Vec<RoomId> = vec!["r1".into(), "r2".into()];
    let got: Vec<u64> = hub
        .replay(&rooms, o1)
        .expect("complete")
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(got, vec![o2, o3]);
    assert_eq!(hub.replay(&rooms, 0).expect("complete").len(), 3);
    assert_eq!(
        hub.replay(&rooms, 999).err(),
        Some(Gap),
        "an offset from the future"
    );
}

#[test]
fn replay_refuses_when_history_was_evicted() {
    let hub = Hub::new(HubConfig {
        history_len: 2,
        ..HubConfig::default()
    });
    let o1 = publish(&hub, &["r"], &[]);
    publish(&hub, &["r"], &[]);
    publish(&hub, &["r"], &[]);
    let rooms: Vec<RoomId> = vec!["r".into()];
    assert!(hub.replay(&rooms, o1).is_ok(), "o2 and o3 are still kept");
    assert!(
        hub.replay(&rooms, 0).is_err(),
        "o1 was evicted: never a partial replay"
    );
}

#[test]
fn replay_refuses_after_pruned_room_is_gone() {
    let hub = Hub::new(HubConfig {
        history_age: Duration::from_millis(0),
        ..HubConfig::default()
    });
    publish(&hub, &["r"], &[]);
    hub.prune(Instant::now() + Duration::from_millis(5));
    assert_eq!(hub.stats().rooms, 0);
    let rooms: Vec<RoomId> = vec!["r".into()];
    assert!(hub.replay(&rooms, 0).is_err());
    assert!(hub.replay(&rooms, 1).is_ok());
}

#[test]
fn join_with_replay_is_atomic_and_joins() {
    let hub = Hub::new(HubConfig::default());
    let o1 = publish(&hub, &["r"], &[]);
    let o2 = publish(&hub, &["r"], &[]);
    let (a, sa) = member(&hub);
    let rooms: Vec<RoomId> = vec!["r".into()];
    let calls = AtomicUsize::new(0);
    hub.join_with_replay(a, &rooms, o1, 0, |replay| {
        calls.fetch_add(1, Ordering::SeqCst);
        assert_eq!(
            replay.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![o2]
        );
    })
    .expect("complete");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let o3 = publish(&hub, &["r"], &[]);
    assert_eq!(*sa.got.lock(), vec![o3]);
}

#[test]
fn room_info_counts_users_once() {
    let hub = Hub::new(HubConfig::default());
    for user in ["u1", "u1", "u2"] {
        let s = Arc::new(Sink {
            user: Some(user.into()),
            ..Sink::default()
        });
        let id = hub.add_member(s);
        hub.join(id, "r").expect("join");
    }
    let info = hub.room_info("r").expect("room");
    assert_eq!(info.members, 3);
    assert_eq!(info.users, vec!["u1".to_owned(), "u2".to_owned()]);
    assert_eq!(info.by_transport, vec![("test".to_owned(), 3)]);
}

#[test]
fn closed_members_do_not_count_as_delivered() {
    let hub = Hub::new(HubConfig::default());
    let s = Arc::new(Sink {
        closed: true,
        ..Sink::default()
    });
    let id = hub.add_member(s);
    hub.join(id, "r").expect("join");
    let (_, n) = hub.publish(Publish {
        rooms: ["r".into()].into_iter().collect(),
        event: "e".into(),
        ..Publish::default()
    });
    assert_eq!(n, 0);
}

#[test]
fn rooms_grow_from_few_to_many_members_and_back_without_losing_anyone() {
    let hub = Hub::new(HubConfig::default());
    let members: Vec<_> = (0..20).map(|_| member(&hub)).collect();
    for (id, _) in &members {
        hub.join(*id, "r").expect("join");
        hub.join(*id, "r").expect("joining twice is one membership");
    }
    assert_eq!(hub.room_info("r").map(|i| i.members), Some(20));
    for (id, _) in members.iter().step_by(2) {
        hub.leave(*id, "r");
    }
    let o = publish(&hub, &["r"], &[]);
    for (i, (_, sink)) in members.iter().enumerate() {
        let expect: Vec<u64> = if i % 2 == 0 { vec![] } else { vec![o] };
        assert_eq!(*sink.got.lock(), expect, "member {i}");
    }
    // A small room: leave and rejoin in any order.
    let (a, sa) = member(&hub);
    let (b, sb) = member(&hub);
    hub.join(a, "s").expect("join");
    hub.join(b, "s").expect("join");
    hub.leave(a, "s");
    let o2 = publish(&hub, &["s"], &[]);
    assert!(sa.got.lock().is_empty());
    assert_eq!(*sb.got.lock(), vec![o2]);
}

/// A relay that keeps what it is given, or refuses everything while `down`.
#[derive(Default)]
struct Queue {
    taken: Mutex<Vec<Publish>>,
    down: std::sync::atomic::AtomicBool,
}

impl Relay for Queue {
    #[allow(clippy::result_large_err)]
    fn relay(&self, msg: Publish, done: Option<Done>) -> Result<(), (Publish, Option<Done>)> {
        if self.down.load(Ordering::Relaxed) {
            return Err((msg, done));
        }
        self.taken.lock().push(msg);
        Ok(())
    }
}

#[test]
fn a_cluster_node_delivers_what_the_relay_sequenced_in_its_order() {
    let hub = Hub::new(HubConfig::default());
    let relay = Arc::new(Queue::default());
    assert!(hub.set_relay(relay.clone()));
    assert!(!hub.set_relay(relay.clone()), "set once");
    let (a, sa) = member(&hub);
    hub.join(a, "r").expect("join");
    assert_eq!(publish(&hub, &["r"], &[]), 0, "sequenced later");
    assert!(
        sa.got.lock().is_empty(),
        "not delivered before it is sequenced"
    );
    let msg = relay.taken.lock().pop().expect("relayed");
    // Another node's message sequenced first, then ours: delivered in that order.
    let other = Publish {
        rooms: std::iter::once(Arc::from("r")).collect(),
        event: "e".into(),
        persist: true,
        ..Publish::default()
    };
    assert_eq!(hub.deliver_sequenced(500, other), 1);
    assert_eq!(hub.deliver_sequenced(501, msg), 1);
    assert_eq!(*sa.got.lock(), vec![500, 501]);
    let replay = hub.replay(&[Arc::from("r")], 500).expect("replay");
    assert_eq!(
        replay.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![501]
    );
    // A stale offset is delivered but never kept (no out-of-order history).
    let stale = Publish {
        rooms: std::iter::once(Arc::from("r")).collect(),
        persist: true,
        ..Publish::default()
    };
    assert_eq!(hub.deliver_sequenced(400, stale), 1);
    assert_eq!(
        hub.replay(&[Arc::from("r")], 499).expect("replay").len(),
        2,
        "the stale one is not kept"
    );
}

#[test]
fn an_outage_delivers_locally_and_leaves_a_gap() {
    let hub = Hub::new(HubConfig::default());
    let relay = Arc::new(Queue::default());
    hub.set_relay(relay.clone());
    let (a, sa) = member(&hub);
    hub.join(a, "r").expect("join");
    hub.deliver_sequenced(
        1000,
        Publish {
            rooms: std::iter::once(Arc::from("r")).collect(),
            persist: true,
            ..Publish::default()
        },
    );
    relay.down.store(true, Ordering::Relaxed);
    let off = publish(&hub, &["r"], &[]);
    assert_eq!(off, 1001, "local sequence continues");
    assert_eq!(*sa.got.lock(), vec![1000, 1001]);
    assert!(hub.replay(&[Arc::from("r")], 999).is_ok());
    // The link is back: whatever other nodes published meanwhile never came here.
    hub.mark_gap();
    assert_eq!(
        hub.replay(&[Arc::from("r")], 999).map(|v| v.len()),
        Err(Gap)
    );
    assert_eq!(
        hub.replay(&[Arc::from("never-seen")], 1000)
            .map(|v| v.len()),
        Err(Gap)
    );
    assert_eq!(hub.replay(&[Arc::from("r")], 1001).map(|v| v.len()), Ok(0));
}

/// Every connected user has a room (its user room) and every connection a member entry:
/// their sizes are paid per client, so they are held to a budget (64-bit targets).
#[test]
#[cfg(target_pointer_width = "64")]
fn per_client_slots_stay_small() {
    assert!(
        std::mem::size_of::<Room>() <= 64,
        "{}",
        std::mem::size_of::<Room>()
    );
    assert!(
        std::mem::size_of::<MemberEntry>() <= 80,
        "{}",
        std::mem::size_of::<MemberEntry>()
    );
    // A socket in its namespace's, its user's and one event room allocates nothing more.
    let hub = Hub::new(HubConfig::default());
    let id = hub.add_member(Arc::new(Sink::default()));
    for room in ["/realtime#all", "user:1", "event_1"] {
        hub.join(id, room).expect("join");
    }
    let inner = hub.inner.lock();
    assert!(!inner.members[&id].rooms.spilled());
}
