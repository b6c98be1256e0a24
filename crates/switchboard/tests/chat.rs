//! The chat's rules through its service, on the in-memory SQLite store and a real hub:
//! what each user may do, what each room hears, and that refusals change nothing.

use std::sync::Arc;
use std::time::Duration;

use hub::{Delivery, Envelope, Hub, HubConfig, Member, MemberId};
use parking_lot::Mutex;
use serde_json::{Value, json};
use switchboard::chat::input::{self, CreateInput};
use switchboard::chat::live::{Status, Timing};
use switchboard::chat::model::{Retention, RoomKind};
use switchboard::chat::service::TypingKind;
use switchboard::chat::sqlite::SqliteChat;
use switchboard::chat::{Chat, ChatConfig, ChatConn, ChatError};

/// One connection: a hub member that records what it is sent.
struct Conn {
    id: String,
    user: String,
    hub: Arc<Hub>,
    member: std::sync::OnceLock<MemberId>,
    got: Mutex<Vec<(String, Value)>>,
}

impl Member for Conn {
    fn deliver(&self, envelope: &Arc<Envelope>) -> Delivery {
        let data = serde_json::from_str(&envelope.payload.as_single_json()).unwrap_or(Value::Null);
        self.got.lock().push((envelope.event.to_string(), data));
        Delivery::Delivered
    }
    fn transport(&self) -> &'static str {
        "test"
    }
    fn user(&self) -> Option<&str> {
        Some(&self.user)
    }
}

impl ChatConn for Conn {
    fn conn_id(&self) -> &str {
        &self.id
    }
    fn user_id(&self) -> &str {
        &self.user
    }
    fn subscribe(&self, room: &str) -> Result<(), hub::JoinError> {
        self.hub.join(*self.member.get().expect("added"), room)
    }
    fn unsubscribe(&self, room: &str) {
        self.hub.leave(*self.member.get().expect("added"), room);
    }
}

impl Conn {
    /// Events named `event` received so far (taken).
    fn take(&self, event: &str) -> Vec<Value> {
        let mut got = self.got.lock();
        let (hit, rest): (Vec<_>, Vec<_>) = got.drain(..).partition(|(e, _)| e == event);
        *got = rest;
        hit.into_iter().map(|(_, v)| v).collect()
    }
}

struct World {
    hub: Arc<Hub>,
    chat: Arc<Chat>,
}

impl World {
    fn new() -> World {
        let hub = Hub::new(HubConfig::default());
        let store = SqliteChat::memory().expect("memory store");
        let chat = Chat::new(
            Arc::new(store),
            hub.clone(),
            ChatConfig {
                max_message_bytes: 16,
                timing: Timing {
                    typing_throttle: Duration::from_secs(2),
                    typing_quiet: Duration::from_secs(5),
                    idle: Duration::from_secs(60),
                },
                retention: Retention::default(),
            },
        );
        World { hub, chat }
    }

    async fn connect(&self, id: &str, user: &str) -> Arc<Conn> {
        let c = Arc::new(Conn {
            id: id.into(),
            user: user.into(),
            hub: self.hub.clone(),
            member: std::sync::OnceLock::new(),
            got: Mutex::new(Vec::new()),
        });
        let m = self.hub.add_member(c.clone());
        c.member.set(m).expect("once");
        self.hub
            .join(m, &format!("user:{user}"))
            .expect("user room");
        self.chat.connected(c.clone()).await;
        c
    }

    async fn send(&self, user: &str, room: &str, content: &str) -> Result<Value, ChatError> {
        let req = input::send(
            &json!({"roomId": room, "content": content}),
            None,
            Some(user),
            16,
            false,
        )?;
        Ok(serde_json::to_value(self.chat.send(user, req, false).await?.0).expect("json"))
    }
}

fn group(room: &str, private: bool, members: &[&str]) -> CreateInput {
    CreateInput {
        room: Some(room.into()),
        kind: RoomKind::Group,
        name: None,
        private,
        members: members.iter().map(|m| m.to_string()).collect(),
        metadata: None,
    }
}

#[tokio::test]
async fn members_only_private_rooms_and_every_refusal_changes_nothing() {
    let w = World::new();
    let ana = w.connect("a", "ana").await;
    let bob = w.connect("b", "bob").await;
    let eve = w.connect("e", "eve").await;
    w.chat
        .create_room("ana", group("team", true, &["bob"]))
        .await
        .expect("create");
    w.chat
        .create_room("ana", group("other", false, &["bob"]))
        .await
        .expect("create");
    w.chat.join(&*ana, "team").await.expect("owner joins");
    w.chat.join(&*bob, "team").await.expect("member joins");
    assert_eq!(
        ana.take("user_joined"),
        [json!({"userId": "bob", "roomId": "team"})]
    );
    assert!(bob.take("user_joined").is_empty(), "bob came second");

    // A plain fabric room with a member (a feed, a ticket room) cannot be taken over.
    bob.subscribe("lobby").expect("plain join");
    let first = w.send("ana", "team", "hello").await.expect("send");
    let elsewhere = w.send("ana", "other", "there").await.expect("send");
    let id = first["id"]
        .as_str()
        .expect("id")
        .parse::<i64>()
        .expect("numeric");
    let other_id = elsewhere["id"]
        .as_str()
        .expect("id")
        .parse::<i64>()
        .expect("numeric");
    assert_eq!(bob.take("message"), std::slice::from_ref(&first));
    assert!(eve.take("message").is_empty());

    let refusals: Vec<(&str, Result<Value, ChatError>)> = vec![
        ("private join", w.chat.join(&*eve, "team").await),
        ("unknown room", w.chat.join(&*eve, "nowhere").await),
        ("non-member send", w.send("eve", "team", "hi").await),
        ("oversized", w.send("ana", "team", &"x".repeat(17)).await),
        ("empty", w.send("ana", "team", "").await),
        (
            "non-member history",
            w.chat
                .history(Some("eve"), "team", None, 10)
                .await
                .map(|p| json!(p)),
        ),
        (
            "read across rooms",
            w.chat.read("bob", "team", other_id).await,
        ),
        (
            "edit of another's",
            w.chat.edit("bob", id, "mine".into()).await,
        ),
        ("member deletes another's", w.chat.delete("bob", id).await),
        ("member kicks", w.chat.kick("bob", "team", "ana").await),
        (
            "typing without joining",
            w.chat.typing(&*eve, "team", TypingKind::Typing).await,
        ),
        (
            "existing room",
            w.chat.create_room("eve", group("team", false, &[])).await,
        ),
        (
            "ticket room",
            w.chat.create_room("eve", group("event_1", true, &[])).await,
        ),
        (
            "a fabric room in use",
            w.chat.create_room("eve", group("lobby", true, &[])).await,
        ),
    ];
    for (what, r) in refusals {
        assert!(r.is_err(), "{what}: {r:?}");
    }
    let page = w
        .chat
        .history(Some("ana"), "team", None, 100)
        .await
        .expect("history");
    assert_eq!(json!(page.messages), json!([first]), "nothing changed");
    assert!(bob.take("message").is_empty() && bob.take("message:edited").is_empty());
    assert!(bob.take("read").is_empty() && bob.take("message:deleted").is_empty());
}

#[tokio::test]
async fn receipts_edits_deletes_and_kicks_reach_the_room() {
    let w = World::new();
    let ana = w.connect("a", "ana").await;
    let bob = w.connect("b", "bob").await;
    let cy = w.connect("c", "cy").await;
    w.chat
        .create_room("ana", group("r", false, &["bob"]))
        .await
        .expect("create");
    for c in [&ana, &bob, &cy] {
        w.chat
            .join(&**c, "r")
            .await
            .expect("public room: cy becomes a member");
    }
    let m = w.send("bob", "r", "tpyo").await.expect("send");
    assert_eq!(m["status"], "delivered", "others were in the room");
    let id: i64 = m["id"].as_str().expect("id").parse().expect("n");

    w.chat.read("ana", "r", id).await.expect("read");
    let r = bob.take("read");
    assert_eq!(
        (r[0]["userId"].as_str(), r[0]["messageId"].as_str()),
        (Some("ana"), Some(id.to_string().as_str()))
    );
    // Reading it again moves nothing and announces nothing.
    assert_eq!(
        w.chat.read("ana", "r", id).await.expect("read")["moved"],
        false
    );
    assert!(bob.take("read").is_empty());

    w.chat.edit("bob", id, "typo".into()).await.expect("edit");
    let e = ana.take("message:edited");
    assert_eq!(
        (e[0]["content"].as_str(), e[0]["status"].as_str()),
        (Some("typo"), Some("read"))
    );
    assert_eq!(e[0]["readBy"], json!(["ana"]));
    w.chat.delete("ana", id).await.expect("the owner deletes");
    assert_eq!(cy.take("message:deleted")[0]["deleted"], true);

    w.chat.kick("ana", "r", "cy").await.expect("kick");
    assert_eq!(cy.take("room:member_removed").len(), 1);
    assert_eq!(
        bob.take("user_left"),
        [json!({"userId": "cy", "roomId": "r"})]
    );
    assert!(w.send("cy", "r", "back?").await.is_err());
    cy.take("message");
    w.send("bob", "r", "after").await.expect("send");
    assert!(
        cy.take("message").is_empty(),
        "cy's connection left the room"
    );
}

#[tokio::test]
async fn idempotent_sends_typing_and_presence() {
    let w = World::new();
    let ana = w.connect("a", "ana").await;
    let ana2 = w.connect("a2", "ana").await;
    let bob = w.connect("b", "bob").await;
    let dm = w.chat.direct("ana", "bob").await.expect("direct");
    let room = dm["room"]["roomId"].as_str().expect("id").to_owned();
    assert_eq!(
        w.chat.direct("bob", "ana").await.expect("direct")["created"],
        false
    );
    w.chat.join(&*ana, &room).await.expect("join");
    w.chat.join(&*ana2, &room).await.expect("second tab");
    w.chat.join(&*bob, &room).await.expect("join");
    assert_eq!(bob.take("user_joined").len(), 0);
    assert_eq!(ana.take("user_joined").len(), 1, "bob, once");

    let req = || {
        input::send(
            &json!({"roomId": room, "content": "once", "clientMsgId": "q1"}),
            None,
            Some("ana"),
            16,
            false,
        )
        .expect("valid")
    };
    let (a, created) = w.chat.send("ana", req(), false).await.expect("send");
    let (b, again) = w.chat.send("ana", req(), false).await.expect("retry");
    assert!(created && !again);
    assert_eq!(a.id, b.id);
    assert_eq!(bob.take("message").len(), 1, "the retry announced nothing");

    w.chat
        .typing(&*bob, &room, TypingKind::Start)
        .await
        .expect("typing");
    assert!(matches!(
        w.chat.typing(&*bob, &room, TypingKind::Start).await,
        Err(ChatError::TypingThrottled)
    ));
    assert_eq!(ana.take("typing:start").len(), 1);
    assert!(bob.take("typing:start").is_empty(), "not to the typist");
    w.chat.leave(&*bob, &room).await.expect("leave");
    assert_eq!(ana.take("typing:stop").len(), 1, "leaving stops typing");

    w.chat
        .presence("bob", Some(Status::Away))
        .await
        .expect("away");
    let p = ana.take("presence:update");
    assert_eq!(
        (p[0]["userId"].as_str(), p[0]["status"].as_str()),
        (Some("bob"), Some("away"))
    );
    w.chat.disconnected("b").await;
    let p = ana.take("presence:update");
    assert_eq!(p[0]["status"], "offline");
    let api = w
        .chat
        .presence_of(&["bob".into(), "ana".into()])
        .await
        .expect("presence");
    assert_eq!(api[0].status, Status::Offline);
    assert_eq!(json!(api[0].last_seen), p[0]["lastSeen"]);
    assert_eq!(api[1].status, Status::Online);
}
