//! The Pusher service: the apps, the connections by socket id, the presence book, the
//! webhook queue, and the routes. Channels are hub rooms; connections are hub members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use axum::Router;
use axum::routing::{get, post};
use hub::{Hub, MemberId, Payload, Publish};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::channel::{Kind, PresenceBook};
use super::config::{PusherApp, PusherConfig};
use super::socket::Conn;
use super::webhook::{Hook, Webhooks};
use crate::transport::TransportConfig;

/// The signal asking every node to terminate a user's connections: `{app, user}`.
pub(crate) const TERMINATE_SIGNAL: &str = "pusher.terminate";

/// One configured app.
pub(crate) struct App {
    pub(crate) config: PusherApp,
}

/// Counts of what the Pusher endpoints did.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) client_events: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) auth_failed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) api_requests: AtomicU64,
    pub(crate) api_refused: AtomicU64,
    /// Channel subscriptions open now (a gauge).
    pub(crate) subscriptions: AtomicUsize,
    /// Errors by Pusher code: connections closed with it, or `pusher:error` frames that
    /// close nothing (4301).
    pub(crate) errors: [AtomicU64; ERROR_CODES.len()],
}

/// The Pusher error codes counted, the last slot for any other.
pub(crate) const ERROR_CODES: [u16; 10] = [4001, 4003, 4007, 4008, 4009, 4100, 4200, 4201, 4301, 0];

impl Counters {
    /// Counts one error with this Pusher code.
    pub(crate) fn error(&self, code: u16) {
        let i = ERROR_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(ERROR_CODES.len() - 1);
        self.errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the Pusher counters (`/metrics`, `/stats`, the dashboard).
#[derive(Debug, Clone, Default)]
pub struct PusherStats {
    /// Open connections.
    pub connections: usize,
    /// Open channel subscriptions.
    pub subscriptions: usize,
    /// Connections accepted since start.
    pub opened: u64,
    /// Connections refused at the upgrade (unknown app, bad protocol version).
    pub refused: u64,
    /// Client events relayed.
    pub client_events: u64,
    /// Malformed or unsupported frames.
    pub invalid: u64,
    /// Bad channel or sign-in signatures.
    pub auth_failed: u64,
    /// Messages dropped for slow clients.
    pub dropped: u64,
    /// HTTP API requests, and those refused.
    pub api_requests: u64,
    /// HTTP API requests refused (400, 401, 403, 404, 413).
    pub api_refused: u64,
    /// Webhook events dropped (queue full).
    pub webhooks_dropped: u64,
    /// `(code, count)` of errors by Pusher code (`0`: any other).
    pub errors: Vec<(u16, u64)>,
}

/// The Pusher Channels protocol on the room fabric (see the module docs).
pub struct Pusher {
    pub(crate) config: PusherConfig,
    pub(crate) apps: Vec<Arc<App>>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) limits: TransportConfig,
    /// Per-user connection counts and event buckets (signed-in or presence users, keyed
    /// per app: `pusher:<app id>:<user>`).
    pub(crate) admission: Arc<crate::limits::Limits>,
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) presence: PresenceBook,
    /// Open connections by socket id (the HTTP API's `socket_id` exclusion, terminate).
    pub(crate) sockets: Mutex<HashMap<Box<str>, Weak<Conn>>>,
    pub(crate) webhooks: Webhooks,
    pub(crate) counters: Arc<Counters>,
    pub(crate) open: AtomicUsize,
    /// The cluster, when `redis_url` is set: the HTTP API counts every node.
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// The fleet's presence book, on a cluster node: it decides `member_added` /
    /// `member_removed` (and their webhooks) once for the fleet and lists every node's
    /// members with their `user_info`.
    pub(crate) book: std::sync::OnceLock<Arc<crate::cluster::PresenceBook>>,
    /// A second book with the same rules, on a cluster node with webhooks: which nodes
    /// have a channel occupied (the pair `(room, OCCUPANT)`), so `channel_occupied` /
    /// `channel_vacated` are sent once for the fleet.
    pub(crate) occupancy: std::sync::OnceLock<Arc<crate::cluster::PresenceBook>>,
}

/// The occupancy book's one "user" of an occupied room.
const OCCUPANT: &str = "occupied";

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("apps", &self.apps.len())
            .field("open", &self.open.load(Ordering::Relaxed))
            .finish()
    }
}

impl Pusher {
    /// The service, or `None` when no app is configured (nothing is served). Starts the
    /// webhook sender when an app has webhooks.
    pub fn new(
        config: PusherConfig,
        hub: Arc<Hub>,
        limits: TransportConfig,
        admission: Arc<crate::limits::Limits>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Option<Arc<Pusher>> {
        if config.apps.is_empty() {
            return None;
        }
        let apps = config
            .apps
            .iter()
            .map(|a| Arc::new(App { config: a.clone() }))
            .collect();
        let webhooks = Webhooks::start(&config, &tasks, &stop);
        Some(Arc::new(Pusher {
            apps,
            hub,
            limits,
            admission,
            stop,
            tasks,
            presence: PresenceBook::default(),
            sockets: Mutex::default(),
            webhooks,
            counters: Arc::default(),
            open: AtomicUsize::new(0),
            cluster: std::sync::OnceLock::new(),
            book: std::sync::OnceLock::new(),
            occupancy: std::sync::OnceLock::new(),
            config,
        }))
    }

    /// The routes: the WebSocket at `/app/{key}` (browser origins checked against
    /// `allowed_origins` first, then admitted by `limits`, like `/ws`) and the HTTP API
    /// under `/apps/{id}`.
    pub fn routes(
        self: &Arc<Self>,
        limits: &Arc<crate::limits::Limits>,
        origins: crate::transport::OriginGuard,
    ) -> Router {
        let socket = Router::new()
            .route("/app/{key}", get(super::socket::upgrade))
            .with_state(self.clone())
            .layer(axum::middleware::from_fn_with_state(
                limits.clone(),
                crate::limits::admit_every,
            ))
            // The outer layer runs first: a refused origin costs no admission.
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(origins),
                crate::transport::check_origin,
            ));
        Router::new()
            .route("/apps/{app_id}/events", post(super::api::events))
            .route(
                "/apps/{app_id}/batch_events",
                post(super::api::batch_events),
            )
            .route("/apps/{app_id}/channels", get(super::api::channels))
            .route(
                "/apps/{app_id}/channels/{channel}",
                get(super::api::channel),
            )
            .route(
                "/apps/{app_id}/channels/{channel}/users",
                get(super::api::users),
            )
            .route(
                "/apps/{app_id}/users/{user_id}/terminate_connections",
                post(super::api::terminate),
            )
            .with_state(self.clone())
            .merge(socket)
    }

    /// Open Pusher connections.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Closes every connection (code 4200: pusher-js reconnects at once, to another node
    /// behind a balancer).
    pub fn close_all(&self) {
        self.stop.cancel();
    }

    /// Webhook events dropped because the queue was full.
    pub fn webhooks_dropped(&self) -> u64 {
        self.webhooks.dropped()
    }

    /// Makes the HTTP API work across the cluster: channel queries count every node,
    /// `terminate_connections` reaches every node; with the fleet's presence `book`,
    /// presence channels' members and their announcements and webhooks are fleet-wide
    /// (the book's announcer calls [`crate::pusher::announce`] and
    /// [`Pusher::fleet_member_hook`]).
    pub fn set_cluster(
        self: &Arc<Self>,
        cluster: Arc<crate::cluster::Cluster>,
        book: Option<Arc<crate::cluster::PresenceBook>>,
    ) {
        if let Some(book) = book {
            let _ = self.book.set(book);
        }
        if self.apps.iter().any(|a| !a.config.webhooks.is_empty()) {
            let weak = Arc::downgrade(self);
            let occupancy = cluster.book(
                "pusher-occupancy",
                Arc::new(move |room, event, _, _, _| {
                    if let Some(p) = weak.upgrade() {
                        p.fleet_occupancy_hook(room, event);
                    }
                }),
                &self.tasks,
                &self.stop,
            );
            let _ = self.occupancy.set(occupancy);
        }
        let weak = Arc::downgrade(self);
        cluster.signals().on(
            TERMINATE_SIGNAL,
            Arc::new(move |body| {
                let Some(p) = weak.upgrade() else { return };
                let (Some(app), Some(user)) = (body["app"].as_str(), body["user"].as_str()) else {
                    return;
                };
                if let Some(app) = p.app_by_id(app).cloned() {
                    p.terminate_local(&app, user);
                }
            }),
        );
        let _ = self.cluster.set(cluster);
    }

    /// Closes this node's connections of `app` signed in (or present) as `user`, with
    /// 4009; how many.
    pub(crate) fn terminate_local(&self, app: &Arc<App>, user: &str) -> usize {
        let conns: Vec<_> = self
            .sockets
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| Arc::ptr_eq(&c.app, app) && c.user() == Some(user))
            .collect();
        for c in &conns {
            c.terminate();
        }
        conns.len()
    }

    /// The counters now.
    pub fn stats(&self) -> PusherStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PusherStats {
            connections: self.connections(),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            opened: load(&c.connections),
            refused: load(&c.refused),
            client_events: load(&c.client_events),
            invalid: load(&c.invalid),
            auth_failed: load(&c.auth_failed),
            dropped: load(&c.dropped),
            api_requests: load(&c.api_requests),
            api_refused: load(&c.api_refused),
            webhooks_dropped: self.webhooks_dropped(),
            errors: ERROR_CODES
                .iter()
                .zip(&c.errors)
                .map(|(code, n)| (*code, load(n)))
                .collect(),
        }
    }

    pub(crate) fn app_by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| a.config.key == key)
    }

    pub(crate) fn app_by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.apps.iter().find(|a| a.config.id == id)
    }

    /// The member of an open connection of this app.
    pub(crate) fn member_of_socket(&self, app: &App, socket_id: &str) -> Option<MemberId> {
        let conn = self.sockets.lock().get(socket_id)?.upgrade()?;
        (conn.app.config.id == app.config.id)
            .then(|| conn.member())
            .flatten()
    }

    /// Queues a webhook event when the app has webhooks.
    pub(crate) fn hook(&self, app: &Arc<App>, hook: Hook) {
        if !app.config.webhooks.is_empty() {
            self.webhooks.push(app, hook);
        }
    }

    /// A user of a presence channel arrived on this node (the hub counted it once): on a
    /// cluster node the book decides whether the fleet hears of it; else it is announced
    /// with its `user_info` and the app's `member_added` webhook is queued.
    pub(crate) fn member_arrived(
        &self,
        app: &Arc<App>,
        channel: &str,
        room: &str,
        user: &str,
        member: MemberId,
    ) {
        let info = self.presence.info(room, user);
        if let Some(book) = self.book.get() {
            return book.joined(room, user, Some(member), Some(&info));
        }
        announce(
            &self.hub,
            room,
            "member_joined",
            user,
            Some(member),
            Some(&info),
        );
        self.hook(
            app,
            Hook::MemberAdded {
                channel: channel.into(),
                user: user.into(),
            },
        );
    }

    /// A fleet-wide presence change the book decided on this node: the `member_added` /
    /// `member_removed` webhook of a presence channel, once for the fleet. The book knows
    /// rooms, not apps, and a channel is one room for every app: each app with webhooks
    /// is told.
    pub fn fleet_member_hook(&self, room: &str, event: &str, user: &str) {
        let Some(channel) = super::channel::channel_of(room) else {
            return;
        };
        if Kind::of(&channel) != Kind::Presence {
            return;
        }
        for app in &self.apps {
            let hook = match event {
                "member_joined" => Hook::MemberAdded {
                    channel: channel.to_string(),
                    user: user.into(),
                },
                "member_left" => Hook::MemberRemoved {
                    channel: channel.to_string(),
                    user: user.into(),
                },
                _ => return,
            };
            self.hook(app, hook);
        }
    }

    /// `{"presence": {ids, hash, count}}` of a presence room: every node's members on a
    /// cluster node (the book's list, plus this node's own members it may not have
    /// written yet), this node's otherwise or while the book is out of sync.
    pub(crate) async fn members_json(&self, room: &str) -> String {
        let local = self
            .hub
            .room_info(room)
            .map(|r| r.users)
            .unwrap_or_default();
        let fleet = match self.book.get() {
            Some(book) => book.members(room).await,
            None => None,
        };
        let Some(mut fleet) = fleet else {
            return self.presence.members_json(room, &local, &[]);
        };
        let known: std::collections::HashSet<String> =
            fleet.iter().map(|(u, _)| u.clone()).collect();
        fleet.extend(
            local
                .into_iter()
                .filter(|u| !known.contains(u))
                .map(|u| (u, None)),
        );
        let (users, infos): (Vec<String>, Vec<Option<String>>) = fleet.into_iter().unzip();
        self.presence.members_json(room, &users, &infos)
    }

    /// The webhook of a room that may have just been occupied on this node (its first
    /// member): on a cluster node the occupancy book decides whether the fleet's channel
    /// is newly occupied.
    pub(crate) fn maybe_occupied(&self, app: &Arc<App>, channel: &str, room: &str) {
        let occupancy = self.occupancy.get();
        if occupancy.is_none() && app.config.webhooks.is_empty() {
            return;
        }
        if self.hub.room_info(room).is_none_or(|r| r.members != 1) {
            return;
        }
        match occupancy {
            Some(book) => book.joined(room, OCCUPANT, None, None),
            None => self.hook(app, Hook::Occupied(channel.into())),
        }
    }

    /// The webhook of a room that may have just become empty on this node (on a cluster
    /// node, the occupancy book decides whether it is empty fleet-wide).
    pub(crate) fn maybe_vacated(&self, app: &Arc<App>, channel: &str, room: &str) {
        let occupancy = self.occupancy.get();
        if occupancy.is_none() && app.config.webhooks.is_empty() {
            return;
        }
        if self.hub.room_info(room).is_some_and(|r| r.members > 0) {
            return;
        }
        match occupancy {
            Some(book) => book.left(room, OCCUPANT),
            None => self.hook(app, Hook::Vacated(channel.into())),
        }
    }

    /// A fleet-wide occupancy change the occupancy book decided on this node: the
    /// `channel_occupied` / `channel_vacated` webhook, once for the fleet, to each app
    /// with webhooks (as [`Pusher::fleet_member_hook`]).
    fn fleet_occupancy_hook(&self, room: &str, event: &str) {
        let Some(channel) = super::channel::channel_of(room) else {
            return;
        };
        for app in &self.apps {
            let hook = match event {
                "member_joined" => Hook::Occupied(channel.to_string()),
                "member_left" => Hook::Vacated(channel.to_string()),
                _ => return,
            };
            self.hook(app, hook);
        }
    }

    /// A user of a presence room is gone from this node (on a cluster node the book
    /// decides whether it is gone from the fleet; else the announcement and webhook).
    pub(crate) fn member_gone(&self, app: &Arc<App>, channel: &str, room: &str, user: &str) {
        debug_assert_eq!(Kind::of(channel), Kind::Presence);
        if let Some(book) = self.book.get() {
            return book.left(room, user);
        }
        announce(&self.hub, room, "member_left", user, None, None);
        self.hook(
            app,
            Hook::MemberRemoved {
                channel: channel.into(),
                user: user.into(),
            },
        );
    }
}

/// Tells a room that a user arrived or left (`member_joined` / `member_left`), on every
/// transport; a user with a `user_info` (a Pusher presence member) has it in the
/// announcement as `userInfo`, which becomes `member_added`'s `user_info`.
pub(crate) fn announce(
    hub: &Hub,
    room: &str,
    event: &str,
    user: &str,
    except: Option<MemberId>,
    info: Option<&str>,
) {
    let Some(info) = info.filter(|_| event == "member_joined") else {
        return crate::transport::announce(hub, room, event, user, except);
    };
    let body = format!(
        "{{\"roomId\":{},\"userId\":{},\"userInfo\":{info}}}",
        super::channel::quoted(room),
        super::channel::quoted(user)
    );
    hub.publish(Publish {
        rooms: std::iter::once(Arc::from(room)).collect(),
        event: event.into(),
        payload: Payload::raw_args([body.as_str()]),
        except_member: except,
        ..Publish::default()
    });
}
