//! Who may join which room, on every transport (Socket.IO `join-event-room`, `/ws` join,
//! `/events?channels=`), and which browser origins may open a connection.
//!
//! Owns: the room rules on top of the name rules ([`super::check_room`]): a token's
//! `rooms` claim restricts it to the rooms its patterns match, and rooms under a private
//! prefix need a matching claim. Counts refusals per transport for `/metrics`. Never:
//! token verification (`auth`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::{RoomError, check_room};

/// The transports, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Socket.IO (`/realtime`).
    SocketIo,
    /// Plain WebSocket (`/ws`).
    Ws,
    /// Server-Sent Events (`/events`).
    Sse,
    /// The Pusher protocol (`/app/{key}`).
    Pusher,
}

impl Via {
    /// Every transport, in label order.
    pub const ALL: [Via; 4] = [Via::SocketIo, Via::Ws, Via::Sse, Via::Pusher];

    /// The `transport` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::SocketIo => "socketio",
            Via::Ws => "ws",
            Via::Sse => "sse",
            Via::Pusher => "pusher",
        }
    }
}

/// Refusals of one kind, per transport.
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; 4]);

impl Refusals {
    /// Counts one refusal.
    pub fn add(&self, via: Via) {
        self.0[via as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals so far on `via`.
    pub fn get(&self, via: Via) -> u64 {
        self.0[via as usize].load(Ordering::Relaxed)
    }
}

/// The room authorization policy and its refusal counts.
#[derive(Debug, Default)]
pub struct RoomPolicy {
    private_prefixes: Vec<String>,
    /// Joins refused (bad name, reserved, not granted), per transport.
    pub refused: Refusals,
}

impl RoomPolicy {
    /// A policy whose rooms under `private_prefixes` need a matching `rooms` claim.
    pub fn new(private_prefixes: Vec<String>) -> RoomPolicy {
        RoomPolicy {
            private_prefixes,
            refused: Refusals::default(),
        }
    }

    /// Whether `user` (with the room patterns of its token, if it has a `rooms` claim)
    /// may join `room`; a refusal is counted for `via`.
    pub fn check(
        &self,
        via: Via,
        room: &str,
        user: Option<&str>,
        grants: Option<&[String]>,
    ) -> Result<(), RoomError> {
        let result = self.decide(room, user, grants);
        if result.is_err() {
            self.refused.add(via);
        }
        result
    }

    fn decide(
        &self,
        room: &str,
        user: Option<&str>,
        grants: Option<&[String]>,
    ) -> Result<(), RoomError> {
        check_room(room, user)?;
        // The user's own room is always theirs (they are put in it at connect).
        if user.is_some_and(|u| room.strip_prefix("user:") == Some(u)) {
            return Ok(());
        }
        let private = self.private_prefixes.iter().any(|p| room.starts_with(p));
        match grants {
            Some(patterns) if patterns.iter().any(|p| matches(p, room)) => Ok(()),
            Some(_) => Err(RoomError::Forbidden(room.to_owned())),
            None if private => Err(RoomError::Forbidden(room.to_owned())),
            None => Ok(()),
        }
    }
}

/// A room pattern: `*` matches any run of characters (`event_*`, `chat:*:public`, `*`);
/// everything else is literal.
pub fn matches(pattern: &str, room: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return false;
    };
    let Some(mut rest) = room.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: an exact name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, room, want) in [
            ("event_*", "event_1", true),
            ("event_*", "event_", true),
            ("event_*", "events", false),
            ("chat:team-1", "chat:team-1", true),
            ("chat:team-1", "chat:team-10", false),
            ("*", "anything", true),
            ("chat:*:public", "chat:a:public", true),
            ("chat:*:public", "chat:a:private", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("*-1", "team-1", true),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(matches(p, room), want, "{p} ~ {room}");
        }
    }

    #[test]
    fn policy() {
        let policy = RoomPolicy::new(vec!["private:".into(), "vip_".into()]);
        let grants: Vec<String> = vec!["event_*".into(), "private:team-1".into()];
        let check =
            |room, grants: Option<&[String]>| policy.check(Via::Ws, room, Some("u1"), grants);
        // No claim: today's rules, and private prefixes refused.
        assert_eq!(check("event_1", None), Ok(()));
        assert_eq!(check("lobby", None), Ok(()));
        assert_eq!(check("user:u1", None), Ok(()));
        assert_eq!(
            check("private:team-1", None),
            Err(RoomError::Forbidden("private:team-1".into()))
        );
        assert!(matches!(
            check("user:u2", None),
            Err(RoomError::Reserved(_))
        ));
        // A claim restricts the token to its patterns (own user room excepted).
        assert_eq!(check("event_7", Some(&grants)), Ok(()));
        assert_eq!(check("private:team-1", Some(&grants)), Ok(()));
        assert_eq!(check("user:u1", Some(&grants)), Ok(()));
        assert_eq!(
            check("private:team-2", Some(&grants)),
            Err(RoomError::Forbidden("private:team-2".into()))
        );
        assert_eq!(
            check("lobby", Some(&grants)),
            Err(RoomError::Forbidden("lobby".into()))
        );
        assert_eq!(
            check("vip_1", Some(&[])),
            Err(RoomError::Forbidden("vip_1".into()))
        );
        // A `*` grant does not open reserved rooms.
        let all = vec!["*".to_owned()];
        assert!(matches!(
            check("sid:x", Some(&all)),
            Err(RoomError::Reserved(_))
        ));
        assert_eq!(policy.refused.get(Via::Ws), 6);
        assert_eq!(policy.refused.get(Via::Sse), 0);
    }
}
