//! Connection admission: how many connections the server, one client address, and one
//! address's reconnect rate may open. Decided before any work (before a session, an
//! upgrade or an SSE stream exists); a refusal is HTTP 503 with `Retry-After`, which the
//! official Socket.IO client treats as a failed attempt and retries with its backoff.
//!
//! Per user (once a token or development identity names one): how many connections one
//! user may hold on this node (`max_connections_per_user`, every transport together),
//! and one event bucket shared by all of a user's connections (`rate_limit_per_user_*`),
//! on top of each connection's own bucket. `/ws` and `/events` refuse an over-limit user
//! with the same 503 before the upgrade or stream; Socket.IO, whose user is known only
//! at the namespace CONNECT, answers `connect_error` with the same reason.
//!
//! Owns: the client address (the peer, or `X-Forwarded-For` from a trusted proxy), the
//! per-address and per-user counts and buckets, the refusal counters. Never: sessions (a
//! [`engineio::Permit`] carries the admission to the session, which releases it).
//!
//! The per-address map holds an entry only while the address has a connection or a
//! bucket that is not full again; idle entries are swept, so the map is bounded by the
//! connections plus the addresses seen within one bucket refill time. The per-user map
//! holds a user only while it has a connection (its event bucket goes with the last one),
//! and nothing at all while both per-user limits are off. Its key is the one copy of the
//! user's name: each connection's permit shares it (an `Arc<str>`), so a user with one
//! connection costs one name, one table entry and one permit allocation.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use parking_lot::Mutex;
use tokio::time::Instant;

/// An IP network in CIDR notation (`10.0.0.0/8`, `::1/128`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address or a network in CIDR notation (e.g. 10.0.0.0/8, ::1)")]
pub struct CidrError(pub String);

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is inside this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The admission limits (every one a setting, see `Config`); 0 turns a limit off.
#[derive(Debug, Clone, Default)]
pub struct LimitsConfig {
    /// Open connections on the whole server (Engine.IO sessions, `/ws`, `/events`).
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_ip: u32,
    /// New connections (handshakes) per second from one address, and the burst.
    pub handshake_rate_per_ip: f64,
    pub handshake_burst_per_ip: u32,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
    /// `Retry-After` of a refusal for a full server or address, in seconds.
    pub retry_after_secs: u32,
    /// Open connections of one user on this node, every transport together; 0 is no limit.
    pub max_connections_per_user: u32,
    /// Events per second of one user across all its connections (off when `per_sec` is 0).
    pub user_rate: primitives::RateLimit,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Server,
    /// `max_connections_per_ip` reached.
    Address,
    /// The address's handshake bucket is empty.
    Rate,
    /// `max_connections_per_user` reached.
    User,
}

impl Refusal {
    /// Every reason, in the order of [`LimitStats::refused`].
    pub const ALL: [Refusal; 4] = [
        Refusal::Server,
        Refusal::Address,
        Refusal::Rate,
        Refusal::User,
    ];

    /// The `reason` label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Server => "max_connections",
            Refusal::Address => "max_connections_per_ip",
            Refusal::Rate => "handshake_rate_per_ip",
            Refusal::User => "max_connections_per_user",
        }
    }

    /// What a refused client reads (`connect_error` message, log line).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Server => "Too many connections: the server is full",
            Refusal::Address => "Too many connections from this address",
            Refusal::Rate => "Too many new connections from this address: slow down",
            Refusal::User => "Too many connections for this user",
        }
    }
}

/// A refusal and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: Refusal,
    pub retry_after_secs: u32,
}

/// Counters for `/metrics` and `/stats`.
#[derive(Debug, Default)]
pub struct LimitStats {
    /// Refusals by reason, in the order of [`Refusal::ALL`].
    pub refused: [AtomicU64; 4],
    pub admitted: AtomicU64,
    /// Events refused by the per-user bucket, by transport ([`UserEvents::ALL`] order).
    pub user_rate_limited: [AtomicU64; 3],
}

/// The transports whose client events count against the per-user bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserEvents {
    SocketIo,
    Ws,
    Pusher,
}

impl UserEvents {
    /// Every transport, in the order of [`LimitStats::user_rate_limited`].
    pub const ALL: [UserEvents; 3] = [UserEvents::SocketIo, UserEvents::Ws, UserEvents::Pusher];

    /// The `transport` label in `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            UserEvents::SocketIo => "socketio",
            UserEvents::Ws => "ws",
            UserEvents::Pusher => "pusher",
        }
    }
}

/// One user's connections on this node and its shared event bucket.
#[derive(Debug)]
struct UserEntry {
    open: u32,
    bucket: primitives::Bucket,
}

#[derive(Debug)]
struct Entry {
    open: u32,
    tokens: f64,
    at: Instant,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    by_ip: HashMap<IpAddr, Entry>,
    last_sweep: Option<Instant>,
}

/// The server's admission control; cheap to share.
#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    state: Mutex<State>,
    /// Users with a connection (apart from the address map: another lock, another key).
    users: Mutex<HashMap<Arc<str>, UserEntry>>,
    stats: LimitStats,
}

/// One admitted connection of a user: released when dropped.
#[derive(Debug)]
pub struct UserAdmitted {
    limits: Arc<Limits>,
    /// The table's own key, shared.
    user: Arc<str>,
}

impl Drop for UserAdmitted {
    fn drop(&mut self) {
        let mut users = self.limits.users.lock();
        if let Some(e) = users.get_mut(&*self.user) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 {
                users.remove(&*self.user);
            }
        }
    }
}

/// One admitted connection: its counts are released when this is dropped.
#[derive(Debug)]
pub struct Admitted {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut st = self.limits.state.lock();
        st.open = st.open.saturating_sub(1);
        let idle = match st.by_ip.get_mut(&self.ip) {
            Some(e) => {
                e.open = e.open.saturating_sub(1);
                e.open == 0 && self.limits.refill(e, now)
            }
            None => false,
        };
        if idle {
            st.by_ip.remove(&self.ip);
        }
    }
}

impl Limits {
    /// Limits with `config`.
    pub fn new(config: LimitsConfig) -> Arc<Limits> {
        Arc::new(Limits {
            config,
            state: Mutex::default(),
            users: Mutex::default(),
            stats: LimitStats::default(),
        })
    }

    /// Admits one more connection of `user` (every transport counts); the permit holds
    /// its place until released or dropped. Counted like the other refusals.
    /// With both per-user limits off nothing is counted (the permit holds nothing).
    pub fn admit_user(self: &Arc<Self>, user: &str) -> Result<engineio::Permit, Refused> {
        self.admit_user_named(user).map(|(permit, _)| permit)
    }

    /// [`Limits::admit_user`], and the user's name as the table keeps it, for a
    /// connection to share instead of keeping a copy of its own (a new one while the
    /// per-user limits are off).
    pub fn admit_user_named(
        self: &Arc<Self>,
        user: &str,
    ) -> Result<(engineio::Permit, Arc<str>), Refused> {
        let max = self.config.max_connections_per_user;
        if max == 0 && !self.config.user_rate.is_on() {
            return Ok((engineio::Permit::default(), user.into()));
        }
        let mut users = self.users.lock();
        let key = match users.get_key_value(user) {
            Some((key, _)) => Arc::clone(key),
            None => {
                let key: Arc<str> = user.into();
                let entry = UserEntry {
                    open: 0,
                    bucket: primitives::Bucket::new(self.config.user_rate),
                };
                users.insert(Arc::clone(&key), entry);
                key
            }
        };
        let Some(e) = users.get_mut(user) else {
            return Ok((engineio::Permit::default(), key));
        };
        if max > 0 && e.open >= max {
            drop(users);
            self.stats.refused[3].fetch_add(1, Ordering::Relaxed);
            tracing::debug!(user, reason = Refusal::User.as_str(), "connection refused");
            return Err(Refused {
                reason: Refusal::User,
                retry_after_secs: self.config.retry_after_secs,
            });
        }
        e.open += 1;
        drop(users);
        let permit = engineio::Permit::new(UserAdmitted {
            limits: self.clone(),
            user: Arc::clone(&key),
        });
        Ok((permit, key))
    }

    /// Takes one event from `user`'s shared bucket; `false` means refuse the event
    /// (counted for `via`). A user with no admitted connection here (a session resumed
    /// from another node) is not limited by it.
    pub fn take_user_event(&self, user: &str, via: UserEvents) -> bool {
        let limit = self.config.user_rate;
        if !limit.is_on() {
            return true;
        }
        let allowed = self
            .users
            .lock()
            .get_mut(user)
            .is_none_or(|e| e.bucket.take(limit));
        if !allowed {
            let i = UserEvents::ALL.iter().position(|v| *v == via).unwrap_or(0);
            self.stats.user_rate_limited[i].fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// The per-user event limit (for the refusal message).
    pub fn user_rate(&self) -> primitives::RateLimit {
        self.config.user_rate
    }

    /// Users with at least one connection on this node.
    pub fn tracked_users(&self) -> usize {
        self.users.lock().len()
    }

    /// The counters.
    pub fn stats(&self) -> &LimitStats {
        &self.stats
    }

    /// Open admitted connections.
    pub fn open(&self) -> usize {
        self.state.lock().open
    }

    /// Addresses tracked now (connections open or a bucket refilling).
    pub fn tracked_addresses(&self) -> usize {
        self.state.lock().by_ip.len()
    }

    /// The client's address: the peer's, or the one `X-Forwarded-For` names when the
    /// peer is a trusted proxy (the rightmost address that is not itself a trusted
    /// proxy, so a client cannot choose its own address by sending the header).
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return peer;
        }
        let mut client = peer;
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in hops.iter().rev() {
            let Ok(ip) = hop.trim().parse::<IpAddr>() else {
                // Garbage names no one: keep the last address we could trust.
                break;
            };
            client = ip.to_canonical();
            if !self.trusted(client) {
                break;
            }
        }
        client
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.config.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// Refills `e`'s bucket to `now`; whether it is full.
    fn refill(&self, e: &mut Entry, now: Instant) -> bool {
        let burst = f64::from(self.config.handshake_burst_per_ip.max(1));
        let elapsed = now.saturating_duration_since(e.at).as_secs_f64();
        e.tokens = (e.tokens + elapsed * self.config.handshake_rate_per_ip).min(burst);
        e.at = now;
        self.config.handshake_rate_per_ip <= 0.0 || e.tokens >= burst
    }

    /// Admits a new connection from `ip`, or says why not. The returned guard holds the
    /// connection's place until dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refused> {
        let result = self.try_admit(ip, Instant::now());
        match &result {
            Ok(_) => {
                self.stats.admitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(r) => {
                let i = Refusal::ALL
                    .iter()
                    .position(|x| *x == r.reason)
                    .unwrap_or(0);
                self.stats.refused[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refused> {
        let c = &self.config;
        let refuse = |reason, retry_after_secs| {
            Err(Refused {
                reason,
                retry_after_secs,
            })
        };
        let mut st = self.state.lock();
        self.sweep(&mut st, now);
        if c.max_connections > 0 && st.open >= c.max_connections {
            return refuse(Refusal::Server, c.retry_after_secs);
        }
        let rate_on = c.handshake_rate_per_ip > 0.0;
        if c.max_connections_per_ip == 0 && !rate_on {
            st.open += 1;
            return Ok(self.admitted(ip));
        }
        let burst = f64::from(c.handshake_burst_per_ip.max(1));
        let e = st.by_ip.entry(ip).or_insert(Entry {
            open: 0,
            tokens: burst,
            at: now,
        });
        self.refill(e, now);
        if c.max_connections_per_ip > 0 && e.open >= c.max_connections_per_ip {
            return refuse(Refusal::Address, c.retry_after_secs);
        }
        if rate_on {
            if e.tokens < 1.0 {
                let wait = (1.0 - e.tokens) / c.handshake_rate_per_ip;
                return refuse(Refusal::Rate, wait.ceil().max(1.0) as u32);
            }
            e.tokens -= 1.0;
        }
        e.open += 1;
        st.open += 1;
        Ok(self.admitted(ip))
    }

    fn admitted(self: &Arc<Self>, ip: IpAddr) -> Admitted {
        Admitted {
            limits: self.clone(),
            ip,
        }
    }

    /// Drops entries with no connection and a full bucket, at most once a second (the
    /// cost is one pass over the map, amortized over every admission in that second).
    fn sweep(&self, st: &mut State, now: Instant) {
        if st
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        st.last_sweep = Some(now);
        st.by_ip.retain(|_, e| e.open > 0 || !self.refill(e, now));
    }

    /// Admits the request's client (the refusal becomes [`unavailable`]). The admission
    /// travels in the request's extensions as an [`engineio::Permit`].
    pub fn admit_request<B>(
        self: &Arc<Self>,
        req: &mut http::Request<B>,
    ) -> Result<engineio::Permit, Refused> {
        let Some(peer) = req.extensions().get::<engineio::RemoteAddr>().map(|r| r.0) else {
            // Not from our accept loop (an in-process test router): nothing to count by.
            return Ok(engineio::Permit::default());
        };
        let ip = self.client_ip(req.headers(), peer.ip());
        match self.admit(ip) {
            Ok(admitted) => {
                let permit = engineio::Permit::new(admitted);
                req.extensions_mut().insert(permit.clone());
                Ok(permit)
            }
            Err(refused) => {
                tracing::debug!(%ip, reason = refused.reason.as_str(), "connection refused");
                Err(refused)
            }
        }
    }
}

/// 503 with `Retry-After` and a one-line reason.
pub fn unavailable(refused: Refused) -> Response<Body> {
    let mut res = Response::new(Body::from(format!(
        "{{\"error\":\"too many connections\",\"limit\":\"{}\"}}",
        refused.reason.as_str()
    )));
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(refused.retry_after_secs.max(1)),
    );
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A refusal as a Socket.IO `connect_error`: the reason's message, and `data` naming
/// the limit and when to retry (the client's reconnection backoff retries anyway).
pub fn connect_error(refused: Refused) -> socketio::ConnectError {
    socketio::ConnectError {
        message: refused.reason.message().to_owned(),
        data: Some(format!(
            "{{\"limit\":\"{}\",\"retryAfter\":{}}}",
            refused.reason.as_str(),
            refused.retry_after_secs.max(1)
        )),
    }
}

/// The per-user event bucket as Socket.IO's hook.
#[derive(Debug)]
pub struct SocketIoUserLimit(pub Arc<Limits>);

impl socketio::UserEventLimit for SocketIoUserLimit {
    fn take(&self, user: &str) -> bool {
        self.0.take_user_event(user, UserEvents::SocketIo)
    }

    fn message(&self) -> String {
        user_rate_message(self.0.user_rate())
    }
}

/// What a client refused by the per-user bucket reads.
pub fn user_rate_message(limit: primitives::RateLimit) -> String {
    format!(
        "Rate limit exceeded: at most {} events per second per user, across all of its connections",
        limit.per_sec
    )
}

/// Middleware for routes where every request opens a connection (`/ws`, `/events`): the
/// response body keeps the admission while it streams; `/ws` moves its copy of the
/// permit into the connection's task.
pub async fn admit_every(
    axum::extract::State(limits): axum::extract::State<Arc<Limits>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let permit = match limits.admit_request(&mut req) {
        Ok(p) => p,
        Err(refused) => return unavailable(refused),
    };
    let res = next.run(req).await;
    let (parts, body) = res.into_parts();
    let body = futures_util::StreamExt::map(body.into_data_stream(), move |chunk| {
        let _held = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Whether an Engine.IO request opens a session (a GET without `sid`, read as the engine
/// reads it); polls, posts and upgrades of an existing session were admitted with it.
pub fn is_engineio_handshake<B>(req: &http::Request<B>) -> bool {
    req.method() == http::Method::GET
        && engineio::query_param(req.uri().query().unwrap_or(""), "sid").is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn limits(per_ip: u32, rate: f64, burst: u32, total: usize) -> Arc<Limits> {
        Limits::new(LimitsConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            handshake_rate_per_ip: rate,
            handshake_burst_per_ip: burst,
            trusted_proxies: vec!["10.0.0.0/8".parse().expect("cidr")],
            retry_after_secs: 5,
            ..LimitsConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn per_user_connections_and_shared_event_bucket() {
        let l = Limits::new(LimitsConfig {
            max_connections_per_user: 2,
            user_rate: primitives::RateLimit {
                per_sec: 10.0,
                burst: 3.0,
            },
            retry_after_secs: 7,
            ..LimitsConfig::default()
        });
        let a1 = l.admit_user("ann").expect("first");
        let a2 = l.admit_user("ann").expect("second");
        let r = l.admit_user("ann").expect_err("third is over the limit");
        assert_eq!(
            (r.reason, r.retry_after_secs, r.reason.as_str()),
            (Refusal::User, 7, "max_connections_per_user")
        );
        let _b = l.admit_user("bob").expect("another user has its own count");
        assert_eq!(l.stats().refused[3].load(Ordering::Relaxed), 1);
        // One bucket for both of ann's connections: the burst of 3 is shared.
        let taken = (0..5)
            .filter(|_| l.take_user_event("ann", UserEvents::Ws))
            .count();
        assert_eq!(taken, 3);
        assert!(
            l.take_user_event("bob", UserEvents::SocketIo),
            "bob's bucket is his"
        );
        assert_eq!(l.stats().user_rate_limited[1].load(Ordering::Relaxed), 2);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            l.take_user_event("ann", UserEvents::Pusher),
            "refilled at 10/s"
        );
        assert!(!l.take_user_event("ann", UserEvents::Pusher));
        assert!(
            l.take_user_event("carol", UserEvents::Ws),
            "a user with no connection here is not limited"
        );
        // Released with the permits: a slot frees, and the last one forgets the user.
        a1.release();
        let a3 = l.admit_user("ann").expect("a slot was released");
        drop((a2, a3));
        assert_eq!(l.tracked_users(), 1, "only bob is left");
        // The table's key is the one copy of the name: bob's permit shares it.
        let key = l.users.lock().keys().next().cloned().expect("bob's entry");
        assert_eq!((&*key, Arc::strong_count(&key)), ("bob", 3));
    }

    #[test]
    fn per_user_limits_off_track_no_user() {
        let l = Limits::new(LimitsConfig::default());
        let permits: Vec<_> = (0..3)
            .map(|_| l.admit_user("ann").expect("no limit"))
            .collect();
        assert_eq!(l.tracked_users(), 0, "nothing to count, so no entry");
        assert!(permits.iter().all(|p| !p.is_held()));
        assert!(l.take_user_event("ann", UserEvents::Ws));
        // Either limit alone keeps the table.
        for config in [
            LimitsConfig {
                max_connections_per_user: 5,
                ..LimitsConfig::default()
            },
            LimitsConfig {
                user_rate: primitives::RateLimit {
                    per_sec: 1.0,
                    burst: 1.0,
                },
                ..LimitsConfig::default()
            },
        ] {
            let l = Limits::new(config);
            let p = l.admit_user("ann").expect("admitted");
            assert!(p.is_held());
            assert_eq!(l.tracked_users(), 1);
            drop(p);
            assert_eq!(l.tracked_users(), 0);
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "mapped IPv4");
        let one: Cidr = "192.0.2.7".parse().expect("one address");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.1.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("all");
        assert!(all.contains(ip("8.8.8.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_peer() {
        let l = limits(0, 0.0, 1, 0);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, 10.0.0.2"),
        );
        assert_eq!(
            l.client_ip(&h, ip("198.51.100.1")),
            ip("198.51.100.1"),
            "untrusted peer"
        );
        assert_eq!(
            l.client_ip(&h, ip("10.0.0.1")),
            ip("203.0.113.9"),
            "through two proxies"
        );
        assert_eq!(
            l.client_ip(&HeaderMap::new(), ip("10.0.0.1")),
            ip("10.0.0.1")
        );
        let mut spoof = HeaderMap::new();
        spoof.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        spoof.append("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        assert_eq!(
            l.client_ip(&spoof, ip("10.0.0.1")),
            ip("203.0.113.9"),
            "what the client wrote itself (left of the proxy's entry) is ignored"
        );
        let mut junk = HeaderMap::new();
        junk.insert("x-forwarded-for", HeaderValue::from_static("nonsense"));
        assert_eq!(l.client_ip(&junk, ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn per_address_server_and_rate_limits_and_release() {
        let l = limits(3, 0.0, 1, 5);
        let a: Vec<_> = (0..3)
            .map(|_| l.admit(ip("192.0.2.1")).expect("under"))
            .collect();
        assert_eq!(
            l.admit(ip("192.0.2.1")).map(|_| ()),
            Err(Refused {
                reason: Refusal::Address,
                retry_after_secs: 5
            })
        );
        let b: Vec<_> = (0..2)
            .map(|_| l.admit(ip("192.0.2.2")).expect("under"))
            .collect();
        assert_eq!(
            l.admit(ip("192.0.2.3")).map(|_| ()).map_err(|r| r.reason),
            Err(Refusal::Server)
        );
        drop(a);
        assert_eq!(l.open(), 2);
        assert_eq!(
            l.tracked_addresses(),
            1,
            "an address with nothing open is forgotten"
        );
        drop(b);
        assert_eq!((l.open(), l.tracked_addresses()), (0, 0));
        let refused: Vec<u64> = l
            .stats()
            .refused
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        assert_eq!(refused, [1, 1, 0, 0]);

        let l = limits(0, 2.0, 4, 0);
        let t0 = Instant::now();
        let burst: Vec<_> = (0..4)
            .map(|_| l.try_admit(ip("192.0.2.1"), t0).expect("burst"))
            .collect();
        let r = l
            .try_admit(ip("192.0.2.1"), t0)
            .map(|_| ())
            .expect_err("bucket empty");
        assert_eq!((r.reason, r.retry_after_secs), (Refusal::Rate, 1));
        assert!(
            l.try_admit(ip("192.0.2.9"), t0).is_ok(),
            "another address has its own bucket"
        );
        let one = l
            .try_admit(ip("192.0.2.1"), t0 + Duration::from_millis(500))
            .expect("one token after 0.5 s at 2/s");
        drop((burst, one));
        assert_eq!(l.tracked_addresses(), 2, "buckets still refilling are kept");
        let _ = l.try_admit(ip("192.0.2.50"), t0 + Duration::from_secs(4));
        assert_eq!(
            l.tracked_addresses(),
            1,
            "full buckets with nothing open are swept"
        );
    }

    #[test]
    fn a_handshake_is_a_get_without_sid_as_the_engine_reads_the_query() {
        let handshake = |method: &str, query: &str| {
            let req = http::Request::builder()
                .method(method)
                .uri(format!("/socket.io/?{query}"))
                .body(())
                .expect("request");
            is_engineio_handshake(&req)
        };
        assert!(handshake("GET", "EIO=4&transport=polling"));
        assert!(handshake("GET", "EIO=4&sidx=1&xsid=2"));
        // `sid` in any form the engine reads as one, percent-encoded too.
        for with_sid in [
            "EIO=4&sid=abc",
            "sid&EIO=4",
            "EIO=4&sid=",
            "EIO=4&s%69d=abc",
        ] {
            assert!(!handshake("GET", with_sid), "{with_sid}");
        }
        assert!(!handshake("POST", "EIO=4&transport=polling"));
    }
}
