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
}

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

    /// Tells a presence room that a user arrived (with its `user_info`) or left, on every
    /// transport: `member_joined` / `member_left`, as `/ws` announces them.
    pub(crate) fn announce(&self, room: &str, joined: bool, user: &str, except: Option<MemberId>) {
        let body = if joined {
            let info = self.presence.info(room, user);
            format!(
                "{{\"roomId\":{},\"userId\":{},\"userInfo\":{info}}}",
                super::channel::quoted(room),
                super::channel::quoted(user)
            )
        } else {
            serde_json::json!({"roomId": room, "userId": user}).to_string()
        };
        self.hub.publish(Publish {
            rooms: std::iter::once(Arc::from(room)).collect(),
            event: if joined {
                "member_joined"
            } else {
                "member_left"
            }
            .into(),
            payload: Payload::raw_args([body.as_str()]),
            except_member: except,
            ..Publish::default()
        });
    }

    /// The webhooks of a room that may have just become empty.
    pub(crate) fn maybe_vacated(&self, app: &Arc<App>, channel: &str, room: &str) {
        if app.config.webhooks.is_empty() {
            return;
        }
        if self.hub.room_info(room).is_none_or(|r| r.members == 0) {
            self.hook(app, Hook::Vacated(channel.into()));
        }
    }

    /// A user of a presence room is gone (webhook and announcement).
    pub(crate) fn member_gone(&self, app: &Arc<App>, channel: &str, room: &str, user: &str) {
        debug_assert_eq!(Kind::of(channel), Kind::Presence);
        self.announce(room, false, user, None);
        self.hook(
            app,
            Hook::MemberRemoved {
                channel: channel.into(),
                user: user.into(),
            },
        );
    }
}
