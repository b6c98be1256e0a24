//! What is true only while the process runs: which connections are in which chat rooms,
//! who is typing, who is online, away or gone. Pure (time passed in), so the rules are
//! tested on a paused clock; the service announces what these methods return.
//!
//! Every map shrinks as connections leave: a connection's entry goes with it, a room's
//! with its last connection, a typing entry with its stop, a user's with their last
//! connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// One connection of any transport as the chat sees it.
pub trait ChatConn: Send + Sync {
    /// Unique among every transport's connections (`sio:…`, `ws:…`).
    fn conn_id(&self) -> &str;
    /// The token's user: always the sender.
    fn user_id(&self) -> &str;
    /// Puts the connection in the fabric room (its events reach it).
    fn subscribe(&self, room: &str) -> Result<(), hub::JoinError>;
    fn unsubscribe(&self, room: &str);
}

/// A user's presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ts_rs::TS, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Away,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }
}

/// The timings of typing and presence.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// At most one typing relayed per user and room this often.
    pub typing_throttle: Duration,
    /// A typing user quiet this long gets a `typing:stop`.
    pub typing_quiet: Duration,
    /// A user without activity this long is `away`.
    pub idle: Duration,
}

struct Conn {
    handle: Arc<dyn ChatConn>,
    rooms: HashSet<String>,
}

struct UserLive {
    conns: usize,
    status: Status,
    /// Set by the user (`presence:update {status: away}`): activity does not end it.
    chosen_away: bool,
    active: Instant,
    last_seen_ms: i64,
    /// Cluster mode: when this node last wrote the user's activity to the fleet.
    touched: Option<Instant>,
}

struct Typing {
    /// No start is relayed before this (this node's relay, or the fleet's).
    until: Instant,
    /// When this node relayed the last start: the user's typing stops then unless they
    /// type again. `None`: another node relayed it (cluster mode), and stops it.
    quiet_at: Option<Instant>,
}

/// What a typing event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingOutcome {
    /// Relay it to the room.
    Relay,
    /// Within the throttle window: nothing relayed, nothing changed.
    Throttled,
    /// A stop for a user who was not typing: nothing to relay.
    Idle,
}

/// Something the clock made happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    TypingStopped { room: String, user: String },
    Away { user: String, last_seen: i64 },
}

/// What a connection's end changed.
#[derive(Debug, Default)]
pub struct Gone {
    pub user: String,
    /// Rooms the user has no connection in any more (`user_left`).
    pub left: Vec<String>,
    /// Rooms where the user's typing stops.
    pub typing_stopped: Vec<String>,
    /// The user's last connection went: `offline` at this time.
    pub offline_at: Option<i64>,
}

#[derive(Default)]
pub struct Live {
    conns: HashMap<String, Conn>,
    /// room -> user -> connections of the user in the room.
    rooms: HashMap<String, HashMap<String, usize>>,
    users: HashMap<String, UserLive>,
    typing: HashMap<(String, String), Typing>,
}

impl Live {
    /// A connection opened; true when its user came online.
    pub fn connect(&mut self, handle: Arc<dyn ChatConn>, now: Instant, now_ms: i64) -> bool {
        let user = handle.user_id().to_owned();
        self.conns.insert(
            handle.conn_id().to_owned(),
            Conn {
                handle,
                rooms: HashSet::new(),
            },
        );
        let u = self.users.entry(user).or_insert(UserLive {
            conns: 0,
            status: Status::Online,
            chosen_away: false,
            active: now,
            last_seen_ms: now_ms,
            touched: None,
        });
        u.conns += 1;
        u.active = now;
        u.last_seen_ms = now_ms;
        u.conns == 1
    }

    /// A connection closed.
    pub fn disconnect(&mut self, conn: &str, now_ms: i64) -> Option<Gone> {
        let c = self.conns.remove(conn)?;
        let user = c.handle.user_id().to_owned();
        let mut gone = Gone {
            user: user.clone(),
            ..Gone::default()
        };
        for room in c.rooms {
            if self.leave_room(&room, &user) {
                if self.stop_typing(&room, &user) {
                    gone.typing_stopped.push(room.clone());
                }
                gone.left.push(room);
            }
        }
        if let Some(u) = self.users.get_mut(&user) {
            u.conns -= 1;
            if u.conns == 0 {
                self.users.remove(&user);
                gone.offline_at = Some(now_ms);
            }
        }
        Some(gone)
    }

    /// Decrements the user's connections in a room; true when it was their last.
    fn leave_room(&mut self, room: &str, user: &str) -> bool {
        let Some(users) = self.rooms.get_mut(room) else {
            return false;
        };
        let Some(n) = users.get_mut(user) else {
            return false;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        users.remove(user);
        if users.is_empty() {
            self.rooms.remove(room);
        }
        true
    }

    /// The connection entered a room; true when its user was not in it yet. A
    /// connection already in the room changes nothing.
    pub fn join(&mut self, conn: &str, room: &str) -> bool {
        let Some(c) = self.conns.get_mut(conn) else {
            return false;
        };
        if !c.rooms.insert(room.to_owned()) {
            return false;
        }
        let user = c.handle.user_id().to_owned();
        let n = self
            .rooms
            .entry(room.to_owned())
            .or_default()
            .entry(user)
            .or_insert(0);
        *n += 1;
        *n == 1
    }

    /// The connection left a room: (whether it was the user's last there, whether the
    /// user's typing stops).
    pub fn leave(&mut self, conn: &str, room: &str) -> (bool, bool) {
        let Some(c) = self.conns.get_mut(conn) else {
            return (false, false);
        };
        if !c.rooms.remove(room) {
            return (false, false);
        }
        let user = c.handle.user_id().to_owned();
        if !self.leave_room(room, &user) {
            return (false, false);
        }
        let typing = self.stop_typing(room, &user);
        (true, typing)
    }

    /// Forgets the user's typing in the room; true when this node relayed it (its stop
    /// is this node's to send).
    fn stop_typing(&mut self, room: &str, user: &str) -> bool {
        self.typing
            .remove(&(room.to_owned(), user.to_owned()))
            .is_some_and(|t| t.quiet_at.is_some())
    }

    /// Whether this connection is in the room.
    pub fn is_in(&self, conn: &str, room: &str) -> bool {
        self.conns.get(conn).is_some_and(|c| c.rooms.contains(room))
    }

    /// Users with a connection in the room.
    pub fn users_in(&self, room: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .rooms
            .get(room)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Whether a user other than `user` has a connection in the room.
    pub fn others_in(&self, room: &str, user: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|u| u.keys().any(|k| k != user))
    }

    /// Every connection of `user` (to take a removed member out of a room).
    pub fn conns_of(&self, user: &str) -> Vec<Arc<dyn ChatConn>> {
        self.conns
            .values()
            .filter(|c| c.handle.user_id() == user)
            .map(|c| c.handle.clone())
            .collect()
    }

    /// A typing event (`start`: typing / typing:start; else typing:stop).
    pub fn typing(
        &mut self,
        room: &str,
        user: &str,
        start: bool,
        now: Instant,
        t: &Timing,
    ) -> TypingOutcome {
        if !start {
            return if self.stop_typing(room, user) {
                TypingOutcome::Relay
            } else {
                TypingOutcome::Idle
            };
        }
        if !self.may_relay(room, user, now) {
            return TypingOutcome::Throttled;
        }
        self.relayed(room, user, now, t);
        TypingOutcome::Relay
    }

    /// Whether a typing start now is outside the throttle window this node knows of.
    pub fn may_relay(&self, room: &str, user: &str, now: Instant) -> bool {
        self.typing
            .get(&(room.to_owned(), user.to_owned()))
            .is_none_or(|ty| now >= ty.until)
    }

    /// This node relays a typing start now: throttled for `typing_throttle`, stopped
    /// after `typing_quiet` unless the user types again.
    pub fn relayed(&mut self, room: &str, user: &str, now: Instant, t: &Timing) {
        self.typing.insert(
            (room.to_owned(), user.to_owned()),
            Typing {
                until: now + t.typing_throttle,
                quiet_at: Some(now + t.typing_quiet),
            },
        );
    }

    /// Another node relayed the user's typing within the throttle window, which runs
    /// `left` longer: nothing relayed here until then (cluster mode).
    pub fn throttled_elsewhere(&mut self, room: &str, user: &str, now: Instant, left: Duration) {
        let ty = self
            .typing
            .entry((room.to_owned(), user.to_owned()))
            .or_insert(Typing {
                until: now,
                quiet_at: None,
            });
        ty.until = now + left;
    }

    /// The user did something; true when that brings them back from an automatic away.
    pub fn activity(&mut self, user: &str, now: Instant, now_ms: i64) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        u.active = now;
        u.last_seen_ms = now_ms;
        if u.status == Status::Away && !u.chosen_away {
            u.status = Status::Online;
            return true;
        }
        false
    }

    /// The user chose a status; true when it changed.
    pub fn choose(&mut self, user: &str, status: Status, now: Instant, now_ms: i64) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        u.active = now;
        u.last_seen_ms = now_ms;
        u.chosen_away = status == Status::Away;
        let changed = u.status != status;
        u.status = status;
        changed
    }

    /// Cluster mode: the fleet saw the user active at `active` (`at_ms`) on another node,
    /// so the away this node's clock decided is withdrawn (never announced).
    pub fn active_elsewhere(&mut self, user: &str, active: Instant, at_ms: i64) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        if active > u.active {
            u.active = active;
        }
        u.last_seen_ms = u.last_seen_ms.max(at_ms);
        if u.status == Status::Away && !u.chosen_away {
            u.status = Status::Online;
        }
    }

    /// Cluster mode: the fleet has the user away by their choice (made on another node):
    /// activity here does not end it either.
    pub fn chosen_elsewhere(&mut self, user: &str) {
        if let Some(u) = self.users.get_mut(user) {
            u.status = Status::Away;
            u.chosen_away = true;
        }
    }

    /// Cluster mode: whether the user's activity is due to be written to the fleet (at
    /// most once per `every`); marks it written.
    pub fn touch_due(&mut self, user: &str, now: Instant, every: Duration) -> bool {
        let Some(u) = self.users.get_mut(user) else {
            return false;
        };
        if u.touched.is_some_and(|at| now < at + every) {
            return false;
        }
        u.touched = Some(now);
        true
    }

    /// A connected user's status and last-seen time.
    pub fn presence(&self, user: &str) -> Option<(Status, i64)> {
        self.users.get(user).map(|u| (u.status, u.last_seen_ms))
    }

    /// What the clock made happen by `now`: quiet typists stop, idle users are away.
    pub fn tick(&mut self, now: Instant, t: &Timing) -> Vec<Tick> {
        let mut out = Vec::new();
        self.typing.retain(|(room, user), ty| match ty.quiet_at {
            Some(quiet_at) if now >= quiet_at => {
                out.push(Tick::TypingStopped {
                    room: room.clone(),
                    user: user.clone(),
                });
                false
            }
            Some(_) => true,
            // Another node's typer: only the throttle to remember, until it ends.
            None => now < ty.until,
        });
        for (user, u) in &mut self.users {
            if u.status == Status::Online && now >= u.active + t.idle {
                u.status = Status::Away;
                out.push(Tick::Away {
                    user: user.clone(),
                    last_seen: u.last_seen_ms,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(String, String);
    impl ChatConn for Fake {
        fn conn_id(&self) -> &str {
            &self.0
        }
        fn user_id(&self) -> &str {
            &self.1
        }
        fn subscribe(&self, _: &str) -> Result<(), hub::JoinError> {
            Ok(())
        }
        fn unsubscribe(&self, _: &str) {}
    }

    fn conn(id: &str, user: &str) -> Arc<dyn ChatConn> {
        Arc::new(Fake(id.into(), user.into()))
    }

    const T: Timing = Timing {
        typing_throttle: Duration::from_secs(2),
        typing_quiet: Duration::from_secs(5),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn joined_and_left_once_per_user() {
        let now = Instant::now();
        let mut l = Live::default();
        assert!(l.connect(conn("a1", "ana"), now, 0));
        assert!(!l.connect(conn("a2", "ana"), now, 0));
        assert!(l.join("a1", "r"));
        assert!(!l.join("a2", "r"), "a second tab is not news");
        assert!(!l.join("a1", "r"), "nor a second join");
        assert_eq!(l.leave("a1", "r"), (false, false));
        let gone = l.disconnect("a2", 7).expect("known");
        assert_eq!(gone.left, ["r"]);
        assert_eq!(gone.offline_at, None, "a1 is still connected");
        let gone = l.disconnect("a1", 9).expect("known");
        assert_eq!(gone.offline_at, Some(9));
        assert!(l.rooms.is_empty() && l.users.is_empty() && l.conns.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_throttled_and_stops_when_quiet() {
        let mut l = Live::default();
        let t0 = Instant::now();
        l.connect(conn("b", "bob"), t0, 0);
        l.join("b", "r");
        assert_eq!(l.typing("r", "bob", true, t0, &T), TypingOutcome::Relay);
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(l.typing("r", "bob", true, t1, &T), TypingOutcome::Throttled);
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(l.typing("r", "bob", true, t2, &T), TypingOutcome::Relay);
        assert!(l.tick(t2 + Duration::from_millis(4900), &T).is_empty());
        assert_eq!(
            l.tick(t2 + Duration::from_secs(5), &T),
            [Tick::TypingStopped {
                room: "r".into(),
                user: "bob".into()
            }]
        );
        assert_eq!(l.typing("r", "bob", false, t2, &T), TypingOutcome::Idle);
        // Leaving while typing stops it.
        l.typing("r", "bob", true, t2, &T);
        assert_eq!(l.leave("b", "r"), (true, true));
    }

    #[tokio::test(start_paused = true)]
    async fn typing_another_node_relayed_is_throttled_here_and_never_stopped_here() {
        let mut l = Live::default();
        let t0 = Instant::now();
        l.connect(conn("b", "bob"), t0, 0);
        l.join("b", "r");
        assert!(l.may_relay("r", "bob", t0));
        l.throttled_elsewhere("r", "bob", t0, Duration::from_millis(800));
        assert!(!l.may_relay("r", "bob", t0 + Duration::from_millis(799)));
        assert!(l.may_relay("r", "bob", t0 + Duration::from_millis(800)));
        // Not this node's to stop: no quiet stop, none on leaving, and the entry goes
        // when its window ends.
        assert!(l.tick(t0 + Duration::from_secs(10), &T).is_empty());
        assert!(l.typing.is_empty());
        l.throttled_elsewhere("r", "bob", t0, Duration::from_secs(1));
        assert_eq!(l.leave("b", "r"), (true, false));
        // Relayed here after another node's window: this node's stop again.
        l.join("b", "r");
        let t1 = t0 + Duration::from_secs(11);
        l.throttled_elsewhere("r", "bob", t1, Duration::from_secs(1));
        l.relayed("r", "bob", t1 + Duration::from_secs(1), &T);
        let gone = l.disconnect("b", 1).expect("known");
        assert_eq!(gone.typing_stopped, ["r"]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_users_go_away_and_come_back() {
        let mut l = Live::default();
        let t0 = Instant::now();
        l.connect(conn("c", "cy"), t0, 5);
        assert!(l.tick(t0 + Duration::from_secs(59), &T).is_empty());
        assert_eq!(
            l.tick(t0 + Duration::from_secs(60), &T),
            [Tick::Away {
                user: "cy".into(),
                last_seen: 5
            }]
        );
        assert_eq!(l.presence("cy"), Some((Status::Away, 5)));
        assert!(l.activity("cy", t0 + Duration::from_secs(61), 6));
        assert_eq!(l.presence("cy"), Some((Status::Online, 6)));
        // Cluster mode: an away the fleet withdrew (active on another node) is silent,
        // and the clock runs from that activity.
        let t1 = t0 + Duration::from_secs(200);
        assert_eq!(l.tick(t1, &T).len(), 1);
        l.active_elsewhere("cy", t1 - Duration::from_secs(10), 9);
        assert_eq!(l.presence("cy"), Some((Status::Online, 9)));
        assert!(l.tick(t1 + Duration::from_secs(49), &T).is_empty());
        assert_eq!(l.tick(t1 + Duration::from_secs(50), &T).len(), 1);
        assert!(l.activity("cy", t1 + Duration::from_secs(51), 10));
        // Activity is written to the fleet at most once per period.
        let every = Duration::from_secs(15);
        assert!(l.touch_due("cy", t1, every));
        assert!(!l.touch_due("cy", t1 + Duration::from_secs(14), every));
        assert!(l.touch_due("cy", t1 + every, every));
        assert!(!l.touch_due("nobody", t1, every));
        // Chosen away sticks through activity.
        assert!(l.choose("cy", Status::Away, t0, 7));
        assert!(!l.activity("cy", t0, 8));
        assert_eq!(l.presence("cy").map(|p| p.0), Some(Status::Away));
    }
}
