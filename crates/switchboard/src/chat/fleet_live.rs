//! The clock-driven parts of `live` made fleet-wide in cluster mode (`redis_url`): the
//! typing throttle, the 5 s `typing:stop` of a quiet typer, and the idle timer behind
//! `away`. Each decision is one small Lua script on keys under the node's prefix, so it
//! is atomic across nodes:
//!
//! - `<prefix>-sb:chat-typing:<n>:<room>:<user>` (`n` is the room name's length, so no
//!   room and user pair reads as another): set `NX PX 2000` by the node that relays a
//!   typing start. A start on any node while it exists is throttled fleet-wide.
//! - `<prefix>-sb:chat-typer:<n>:<room>:<user>`: the id of the node that relayed the last
//!   start (`PX` twice the quiet time). Only that node sends the `typing:stop` when the
//!   typer goes quiet or leaves; a client's `typing:stop` on any node deletes it (and is
//!   relayed when there was one).
//! - `<prefix>-sb:chat-active:<user>`: the user's last activity on any node (ms since the
//!   epoch, `PX` twice `presence_idle_secs`), written at most once per
//!   [`touch_every`] per user and node. A node finding a user idle asks it before
//!   announcing `away`.
//! - the status hash of `fleet` (`<prefix>-sb:chat-status`): `away` is claimed there
//!   atomically, so of two nodes where the user is idle one announces it.
//!
//! Every call is bounded by [`CALL_TIMEOUT`]: on an error or a timeout the caller falls
//! back to its own node's decision (counted in `switchboard_chat_fleet_fallback_total`),
//! never blocking a client's task for longer.
//!
//! Never: the rules of typing and presence (`live`), announcing (`service`).

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

/// Longest a fleet decision may take before the node decides alone.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How often a user's activity is written to the fleet, at most, per node: a quarter of
/// the idle time (so a user active anywhere within the last three quarters of it is
/// seen), between 250 ms and 15 s.
pub(crate) fn touch_every(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15))
}

/// Why a fleet decision was not made: the node decides alone.
#[derive(Debug)]
pub(crate) enum FleetError {
    Redis(redis::RedisError),
    Timeout,
}

impl std::fmt::Display for FleetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetError::Redis(e) => write!(f, "{e}"),
            FleetError::Timeout => write!(f, "no answer within {CALL_TIMEOUT:?}"),
        }
    }
}

/// What the fleet says of a user found idle on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idle {
    /// Active on some node at this time (ms): not away.
    ActiveAt(i64),
    /// Already announced away (by another node, or chosen): nothing to announce.
    AlreadyAway,
    /// This node announces `away`; the status hash already says so.
    Claimed { last_seen: i64 },
}

/// What the fleet says of a user back from an away this node's clock decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Back {
    /// This node announces `online`; the status hash already says so.
    Claimed,
    /// Another node announced it already.
    AlreadyOnline,
    /// The user chose away (on some node): activity does not end it.
    ChosenAway,
}

/// Sets the throttle key when free (and the typer key with it): -1, relay here; else the
/// milliseconds the throttle still runs.
const TYPING_START: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
  return -1
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return 0 end
return left
";

/// A client's stop: clears both keys; 1 when a start was on record.
const TYPING_STOP: &str = r"
redis.call('DEL', KEYS[1])
return redis.call('DEL', KEYS[2])
";

/// A quiet typer (or one who left): 1 when this node relayed the last start (it sends
/// the stop, and the keys go).
const TYPING_QUIET: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  return 1
end
return 0
";

/// KEYS: active key, status hash. ARGV: user, local last activity, now, idle (ms).
/// {1, last}: active elsewhere; {2, last}: already away; {3, last}: claimed (the hash
/// now says `away <last>`).
const CLAIM_AWAY: &str = r"
local last = tonumber(ARGV[2])
local fleet = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if fleet > last then last = fleet end
if last + tonumber(ARGV[4]) > tonumber(ARGV[3]) then return {1, last} end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur and string.sub(cur, 1, 5) == 'away ' then return {2, last} end
redis.call('HSET', KEYS[2], ARGV[1], 'away ' .. last)
return {3, last}
";

/// KEYS: status hash. ARGV: user, now. 1 (the hash now says `online <now>`): announce
/// the return; 0: someone announced it already; 2: the user chose away.
const CLAIM_BACK: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and string.sub(cur, -7) == ' chosen' then return 2 end
if cur and string.sub(cur, 1, 7) == 'online ' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], 'online ' .. ARGV[2])
return 1
";

/// The fleet's typing and idle state in Redis.
#[derive(Clone)]
pub(crate) struct FleetLive {
    con: ConnectionManager,
    prefix: String,
    node: String,
    status_key: String,
    start: Script,
    stop: Script,
    quiet: Script,
    away: Script,
    back: Script,
}

impl FleetLive {
    /// `prefix`: the cluster's key prefix; `node`: this node's id; `status_key`: the
    /// status hash `fleet` announces into.
    pub(crate) fn new(con: ConnectionManager, prefix: &str, node: &str, status_key: &str) -> Self {
        FleetLive {
            con,
            prefix: format!("{prefix}-sb:chat-"),
            node: node.to_owned(),
            status_key: status_key.to_owned(),
            start: Script::new(TYPING_START),
            stop: Script::new(TYPING_STOP),
            quiet: Script::new(TYPING_QUIET),
            away: Script::new(CLAIM_AWAY),
            back: Script::new(CLAIM_BACK),
        }
    }

    /// The throttle and typer keys of (room, user).
    fn typing_keys(&self, room: &str, user: &str) -> [String; 2] {
        let p = &self.prefix;
        let n = room.len();
        [
            format!("{p}typing:{n}:{room}:{user}"),
            format!("{p}typer:{n}:{room}:{user}"),
        ]
    }

    fn active_key(&self, user: &str) -> String {
        format!("{}active:{user}", self.prefix)
    }

    async fn bounded<T>(
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(FleetError::Redis(e)),
            Err(_) => Err(FleetError::Timeout),
        }
    }

    /// A typing start this node would relay: `None`, relay it (the fleet's throttle is
    /// now this node's); `Some(left)`, another node relayed one within the throttle
    /// window, which runs `left` longer.
    pub(crate) async fn typing_start(
        &self,
        room: &str,
        user: &str,
        throttle: Duration,
        quiet: Duration,
    ) -> Result<Option<Duration>, FleetError> {
        let [throttle_key, typer_key] = self.typing_keys(room, user);
        let mut con = self.con.clone();
        let mut call = self.start.key(throttle_key);
        call.key(typer_key)
            .arg(&self.node)
            .arg(throttle.as_millis().max(1) as u64)
            .arg((quiet * 2).as_millis().max(1) as u64);
        let left: i64 = Self::bounded(call.invoke_async(&mut con)).await?;
        Ok((left >= 0).then(|| Duration::from_millis(left as u64)))
    }

    /// A client's `typing:stop` (any node): true when a start was on record, so the stop
    /// is news to the room.
    pub(crate) async fn typing_stop(&self, room: &str, user: &str) -> Result<bool, FleetError> {
        let [throttle_key, typer_key] = self.typing_keys(room, user);
        let mut con = self.con.clone();
        let mut call = self.stop.key(throttle_key);
        call.key(typer_key);
        let was: i64 = Self::bounded(call.invoke_async(&mut con)).await?;
        Ok(was == 1)
    }

    /// A typer this node relayed went quiet or left: true when this node relayed the
    /// fleet's last start (it sends the one `typing:stop`).
    pub(crate) async fn typing_quiet(&self, room: &str, user: &str) -> Result<bool, FleetError> {
        let [throttle_key, typer_key] = self.typing_keys(room, user);
        let mut con = self.con.clone();
        let mut call = self.quiet.key(throttle_key);
        call.key(typer_key).arg(&self.node);
        let mine: i64 = Self::bounded(call.invoke_async(&mut con)).await?;
        Ok(mine == 1)
    }

    /// Records that `user` was active at `at_ms` (kept `ttl`).
    pub(crate) async fn touch(
        &self,
        user: &str,
        at_ms: i64,
        ttl: Duration,
    ) -> Result<(), FleetError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.active_key(user))
            .arg(at_ms)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        Self::bounded(cmd.query_async::<()>(&mut con)).await
    }

    /// `user` has been idle on this node since `last_ms` (local), `idle` the limit:
    /// active elsewhere, already away, or away announced by this node.
    pub(crate) async fn claim_away(
        &self,
        user: &str,
        last_ms: i64,
        now_ms: i64,
        idle: Duration,
    ) -> Result<Idle, FleetError> {
        let mut con = self.con.clone();
        let mut call = self.away.key(self.active_key(user));
        call.key(&self.status_key)
            .arg(user)
            .arg(last_ms)
            .arg(now_ms)
            .arg(idle.as_millis() as u64);
        let (code, last): (i64, i64) = Self::bounded(call.invoke_async(&mut con)).await?;
        Ok(match code {
            1 => Idle::ActiveAt(last),
            2 => Idle::AlreadyAway,
            _ => Idle::Claimed { last_seen: last },
        })
    }

    /// A user this node had as away is active here: whether this node announces the
    /// return.
    pub(crate) async fn claim_back(&self, user: &str, now_ms: i64) -> Result<Back, FleetError> {
        let mut con = self.con.clone();
        let mut call = self.back.key(&self.status_key);
        call.arg(user).arg(now_ms);
        let code: i64 = Self::bounded(call.invoke_async(&mut con)).await?;
        Ok(match code {
            1 => Back::Claimed,
            2 => Back::ChosenAway,
            _ => Back::AlreadyOnline,
        })
    }
}

#[cfg(test)]
mod tests {
    //! Against the Redis on 127.0.0.1:6379, on keys under a prefix of their own (deleted
    //! after); skipped when no Redis answers, except in CI (`CI=true`), where they fail.

    use super::*;

    async fn redis() -> Option<ConnectionManager> {
        let client = redis::Client::open("redis://127.0.0.1:6379/").ok()?;
        let con = tokio::time::timeout(Duration::from_secs(2), client.get_connection_manager())
            .await
            .ok()
            .and_then(Result::ok);
        assert!(
            con.is_some() || std::env::var("CI").as_deref() != Ok("true"),
            "CI: these tests need the Redis on 127.0.0.1:6379"
        );
        con
    }

    /// Two nodes' views of one fleet, under a fresh prefix.
    async fn fleet(name: &str) -> Option<(FleetLive, FleetLive, String)> {
        let con = redis().await?;
        let prefix = format!(
            "sbtest-chat-{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let status = format!("{prefix}-sb:chat-status");
        Some((
            FleetLive::new(con.clone(), &prefix, "node-a", &status),
            FleetLive::new(con, &prefix, "node-b", &status),
            prefix,
        ))
    }

    async fn cleanup(f: &FleetLive, prefix: &str) {
        let mut con = f.con.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}-*"))
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query_async(&mut con).await;
        }
    }

    const THROTTLE: Duration = Duration::from_millis(2000);
    const QUIET: Duration = Duration::from_millis(5000);

    #[tokio::test]
    async fn one_typing_start_per_window_fleet_wide_and_one_stop() {
        let Some((a, b, prefix)) = fleet("typing").await else {
            eprintln!("no Redis on 127.0.0.1:6379: skipped");
            return;
        };
        assert_eq!(
            a.typing_start("r", "ana", THROTTLE, QUIET).await.ok(),
            Some(None)
        );
        let left = b
            .typing_start("r", "ana", THROTTLE, QUIET)
            .await
            .expect("answered");
        assert!(
            left.is_some_and(|l| l > Duration::from_millis(1000) && l <= THROTTLE),
            "{left:?}"
        );
        // Another user, another room: their own windows.
        assert_eq!(
            b.typing_start("r", "bob", THROTTLE, QUIET).await.ok(),
            Some(None)
        );
        assert_eq!(
            b.typing_start("r:ana", "x", THROTTLE, QUIET).await.ok(),
            Some(None)
        );
        // Only the node that relayed the last start sends the quiet stop.
        assert_eq!(b.typing_quiet("r", "ana").await.ok(), Some(false));
        assert_eq!(a.typing_quiet("r", "ana").await.ok(), Some(true));
        assert_eq!(a.typing_quiet("r", "ana").await.ok(), Some(false), "once");
        // The quiet stop freed the window: b relays at once, and a client's stop on a
        // clears it (news: a start was on record), a second is not.
        assert_eq!(
            b.typing_start("r", "ana", THROTTLE, QUIET).await.ok(),
            Some(None)
        );
        assert_eq!(a.typing_stop("r", "ana").await.ok(), Some(true));
        assert_eq!(a.typing_stop("r", "ana").await.ok(), Some(false));
        assert_eq!(
            b.typing_quiet("r", "ana").await.ok(),
            Some(false),
            "stopped already"
        );
        // The window ends by itself.
        let short = Duration::from_millis(100);
        assert_eq!(
            a.typing_start("s", "ana", short, QUIET).await.ok(),
            Some(None)
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(
            b.typing_start("s", "ana", short, QUIET).await.ok(),
            Some(None)
        );
        assert_eq!(
            a.typing_quiet("s", "ana").await.ok(),
            Some(false),
            "b relayed last"
        );
        assert_eq!(b.typing_quiet("s", "ana").await.ok(), Some(true));
        cleanup(&a, &prefix).await;
    }

    #[tokio::test]
    async fn away_once_and_only_when_idle_everywhere() {
        let Some((a, b, prefix)) = fleet("away").await else {
            eprintln!("no Redis on 127.0.0.1:6379: skipped");
            return;
        };
        let idle = Duration::from_secs(60);
        let now = 1_000_000_i64;
        // Active on b 10 s ago: a, where the user is idle, does not announce away.
        b.touch("ana", now - 10_000, idle * 2)
            .await
            .expect("written");
        assert_eq!(
            a.claim_away("ana", now - 70_000, now, idle).await.ok(),
            Some(Idle::ActiveAt(now - 10_000))
        );
        // Idle everywhere: one node claims, the other finds it announced.
        let later = now + 60_000;
        assert_eq!(
            a.claim_away("ana", now - 70_000, later, idle).await.ok(),
            Some(Idle::Claimed {
                last_seen: now - 10_000
            })
        );
        assert_eq!(
            b.claim_away("ana", now - 20_000, later, idle).await.ok(),
            Some(Idle::AlreadyAway)
        );
        // Back once, whichever node sees the activity first.
        assert_eq!(
            b.claim_back("ana", later + 1).await.ok(),
            Some(Back::Claimed)
        );
        assert_eq!(
            a.claim_back("ana", later + 2).await.ok(),
            Some(Back::AlreadyOnline)
        );
        let mut con = a.con.clone();
        let status: Option<String> = redis::cmd("HGET")
            .arg(&a.status_key)
            .arg("ana")
            .query_async(&mut con)
            .await
            .expect("read");
        assert_eq!(
            status.as_deref(),
            Some(format!("online {}", later + 1).as_str())
        );
        // A chosen away is not ended by activity on another node.
        let _: () = redis::cmd("HSET")
            .arg(&a.status_key)
            .arg("ana")
            .arg("away 5 chosen")
            .query_async(&mut con)
            .await
            .expect("written");
        assert_eq!(
            b.claim_back("ana", later + 3).await.ok(),
            Some(Back::ChosenAway)
        );
        cleanup(&a, &prefix).await;
    }
}
