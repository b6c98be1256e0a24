//! The chat store on a real PostgreSQL (127.0.0.1:5432, database `test`, or
//! `SWITCHBOARD_TEST_DATABASE_URL`), each test in its own schema: two stores stand for
//! two nodes sharing one database.

use std::sync::Arc;

use switchboard::chat::model::{MessageType, NewMessage, Retention, Role, Room, RoomKind};
use switchboard::chat::postgres::PgChat;
use switchboard::chat::store::{ChatStore, Checked};

fn base_url() -> String {
    std::env::var("SWITCHBOARD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema (dropped when the guard goes); the URL puts every connection in it.
struct Schema {
    name: String,
    url: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok((c, conn)) =
                        tokio_postgres::connect(&base_url(), tokio_postgres::NoTls).await
                    {
                        tokio::spawn(conn);
                        let _ = c
                            .batch_execute(&format!("DROP SCHEMA {name} CASCADE"))
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

async fn schema() -> Schema {
    let name = format!("sb_chat_{:016x}", rand::random::<u64>());
    let (client, conn) = tokio_postgres::connect(&base_url(), tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (database test) is required");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .expect("create schema");
    Schema {
        url: format!("{}?options=-csearch_path%3D{name}", base_url()),
        name,
    }
}

fn room(id: &str) -> Room {
    Room {
        id: id.into(),
        kind: RoomKind::Channel,
        name: id.into(),
        private: true,
        metadata: Some(serde_json::json!({"a": [1, 2]})),
        created_by: "ana".into(),
        created_at: 1,
    }
}

fn msg(room: &str, sender: &str, content: &str, client: Option<&str>, at: i64) -> NewMessage {
    NewMessage {
        room_id: room.into(),
        sender_id: sender.into(),
        content: content.into(),
        kind: MessageType::Text,
        metadata: None,
        reply_to: None,
        client_msg_id: client.map(str::to_owned),
        created_at: at,
        delivered: false,
    }
}

#[tokio::test]
async fn two_nodes_share_rooms_messages_and_idempotency() {
    let schema = schema().await;
    let a = Arc::new(PgChat::new(&schema.url).expect("url"));
    let b = Arc::new(PgChat::new(&schema.url).expect("url"));
    let members = vec![
        ("ana".to_owned(), Role::Owner),
        ("bob".to_owned(), Role::Member),
    ];
    // Both nodes create the schema and the room at once: one wins, nothing breaks.
    let (ra, rb) = tokio::join!(
        a.create_room(room("r"), members.clone()),
        b.create_room(room("r"), members)
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert!(ra.1 ^ rb.1, "exactly one created it");
    assert_eq!(ra.0, rb.0);

    // The same clientMsgId sent through both nodes at once: one message.
    let mut sends = Vec::new();
    for i in 0..10 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        sends.push(tokio::spawn(async move {
            store
                .insert_message(msg("r", "ana", "once", Some("c1"), 10))
                .await
                .expect("insert")
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for s in sends {
        let (m, new) = s.await.expect("task");
        created += usize::from(new);
        ids.insert(m.seq);
    }
    assert_eq!((created, ids.len()), (1, 1));

    for i in 0..5 {
        b.insert_message(msg("r", "bob", &format!("b{i}"), None, 20 + i))
            .await
            .expect("insert");
    }
    let (page, more) = a.history("r".into(), None, 3).await.expect("history");
    assert_eq!(
        page.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["b2", "b3", "b4"]
    );
    assert!(more);
    let (older, more) = b
        .history("r".into(), Some(page[0].seq), 100)
        .await
        .expect("older");
    assert_eq!(
        older.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["once", "b0", "b1"]
    );
    assert!(!more);

    assert!(
        a.mark_read("r".into(), "ana".into(), page[1].seq, 30)
            .await
            .expect("read")
    );
    assert!(
        !b.mark_read("r".into(), "ana".into(), page[0].seq, 31)
            .await
            .expect("read")
    );
    assert_eq!(b.unread("r".into(), "ana".into()).await.expect("unread"), 1);
    assert_eq!(b.unread("r".into(), "bob".into()).await.expect("unread"), 1);
    let rooms = b.rooms_of("bob".into()).await.expect("rooms");
    assert_eq!(
        (rooms[0].room.id.as_str(), rooms[0].role, rooms[0].unread),
        ("r", Role::Member, 1)
    );
    assert_eq!(
        rooms[0].room.metadata,
        Some(serde_json::json!({"a": [1, 2]}))
    );

    let e = a
        .update_message(page[2].seq, Some("edited".into()), false, 40)
        .await
        .expect("edit")
        .expect("found");
    assert_eq!((e.content.as_str(), e.edited_at), ("edited", Some(40)));
    let d = b
        .update_message(page[2].seq, None, true, 41)
        .await
        .expect("delete")
        .expect("found");
    assert!(d.deleted);

    a.set_last_seen("bob".into(), 50).await.expect("seen");
    b.set_last_seen("bob".into(), 45).await.expect("seen");
    assert_eq!(
        a.last_seen(vec!["bob".into(), "cy".into()])
            .await
            .expect("seen"),
        [("bob".to_owned(), 50)]
    );
    assert!(
        b.add_member("r".into(), "cy".into(), Role::Member, 60)
            .await
            .expect("add")
    );
    assert!(
        a.set_role("r".into(), "cy".into(), Role::Admin)
            .await
            .expect("role")
    );
    assert_eq!(
        b.member("r".into(), "cy".into())
            .await
            .expect("member")
            .map(|m| m.role),
        Some(Role::Admin)
    );
    assert!(
        a.remove_member("r".into(), "cy".into())
            .await
            .expect("remove")
    );

    // The send path's one round trip: checks, insert, idempotency.
    assert_eq!(
        a.insert_checked(msg("nowhere", "ana", "x", None, 70), true)
            .await
            .expect("checked"),
        Checked::NoRoom
    );
    assert_eq!(
        b.insert_checked(msg("r", "eve", "x", None, 70), true)
            .await
            .expect("checked"),
        Checked::NotMember
    );
    let Checked::Stored(m, true) = b
        .insert_checked(msg("r", "eve", "from the API", Some("k"), 70), false)
        .await
        .expect("checked")
    else {
        panic!("a server-side sender needs no membership")
    };
    assert_eq!(
        a.insert_checked(msg("r", "eve", "again", Some("k"), 71), false)
            .await
            .expect("checked"),
        Checked::Stored(m, false)
    );

    let removed = a
        .prune(
            Retention {
                days: 0,
                max_per_room: 2,
            },
            0,
        )
        .await
        .expect("prune");
    assert_eq!(removed, 5);
    let (kept, _) = b.history("r".into(), None, 100).await.expect("history");
    assert_eq!(kept.len(), 2);
}
