//! Building the application: the hub, the protocol engines and the HTTP routes.
//!
//! `App` is everything `server::run` needs; building it does no I/O, so tests can build
//! one and serve it on port 0.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use engineio::Engine;
use engineio::outbox::Flushers;
use hub::Hub;
use socketio::{NamespaceConfig, SocketIo};
use tokio_util::task::TaskTracker;

use crate::tickets::HoldStore;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::{Config, HoldStoreKind};
use crate::limits::Limits;
use crate::tickets::HoldService;
use crate::transport::{Transports, sse, ws};
use crate::{conformance, realtime};

/// Something holding client sessions that shutdown must close.
trait Sessions: Send + Sync {
    fn close_all(&self);
    fn count(&self) -> usize;
    /// Sessions closed so far for `reason` (Engine.IO engines only).
    fn closed_as(&self, _reason: engineio::CloseReason) -> u64 {
        0
    }
    /// Frames taken from sessions' outboxes for their transport (Engine.IO engines only).
    fn frames_out(&self) -> u64 {
        0
    }
}

impl Sessions for Transports {
    fn close_all(&self) {
        self.stop.cancel();
    }
    fn count(&self) -> usize {
        self.ws_connections() + self.sse_connections()
    }
}

impl Sessions for crate::pusher::Pusher {
    fn close_all(&self) {
        crate::pusher::Pusher::close_all(self);
    }
    fn count(&self) -> usize {
        self.connections()
    }
}

impl<H: engineio::Handler> Sessions for Engine<H> {
    fn close_all(&self) {
        Engine::close_all(self);
    }
    fn count(&self) -> usize {
        self.session_count()
    }
    fn closed_as(&self, reason: engineio::CloseReason) -> u64 {
        engineio::CloseReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| {
                self.stats().closed[i].load(std::sync::atomic::Ordering::Relaxed)
            })
    }
    fn frames_out(&self) -> u64 {
        self.stats()
            .frames_out
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A built server: routes, the engines behind them, and the tasks they spawn. Clones
/// share everything (tests keep one to inspect the running server).
#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub tasks: TaskTracker,
    pub hub: Arc<Hub>,
    /// Connection admission (counts and refusals).
    pub limits: Arc<Limits>,
    engines: Vec<Arc<dyn Sessions>>,
    /// Stops background work (expiry timer) at shutdown.
    stop: CancellationToken,
    /// TLS for the listener (`tls_cert_file`), reloadable; `None` serves plain HTTP.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Direct writes are on (`ws_flushers` > 0): the server serves each plain TCP
    /// connection through an `engineio::outbox::Wire`, which transports write to directly.
    pub direct_writes: bool,
}

impl App {
    /// Closes every client session (reason: server shutting down).
    pub fn close_sessions(&self) {
        self.stop.cancel();
        for e in &self.engines {
            e.close_all();
        }
    }

    /// Open Engine.IO sessions across every engine.
    pub fn session_count(&self) -> usize {
        self.engines.iter().map(|e| e.count()).sum()
    }

    /// Engine.IO sessions closed so far for `reason`, across every engine.
    pub fn closed_as(&self, reason: engineio::CloseReason) -> u64 {
        self.engines.iter().map(|e| e.closed_as(reason)).sum()
    }

    /// Engine.IO frames taken from sessions' outboxes for their transport so far (for a
    /// WebSocket: written, or waiting in its write buffer), across every engine.
    pub fn frames_out(&self) -> u64 {
        self.engines.iter().map(|e| e.frames_out()).sum()
    }
}

/// Routes an Engine.IO path (with and without the trailing slash) to `engine`. A
/// WebSocket upgrade from a browser origin `origins` does not allow is refused (403)
/// first; then a handshake (a GET without `sid`) is admitted by `limits`.
fn engine_routes<H: engineio::Handler>(
    router: Router,
    path: &str,
    engine: Arc<Engine<H>>,
    limits: &Arc<Limits>,
    origins: (engineio::AllowedOrigins, Arc<crate::metrics::Metrics>),
) -> Router {
    let limits = limits.clone();
    let origins = Arc::new(origins);
    let svc = tower::service_fn(move |mut req: axum::extract::Request| {
        let engine = engine.clone();
        let (allowed, metrics) = &*origins;
        let upgrade = req
            .headers()
            .get(axum::http::header::UPGRADE)
            .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let refused_origin = (upgrade && !allowed.allows(req.headers())).then(|| {
            crate::transport::refuse_origin(
                metrics,
                crate::transport::access::Via::SocketIo,
                req.headers(),
            )
        });
        let admitted = if refused_origin.is_none() && crate::limits::is_engineio_handshake(&req) {
            limits.admit_request(&mut req).map(drop)
        } else {
            Ok(())
        };
        async move {
            if let Some(refused) = refused_origin {
                return Ok::<Response, Infallible>(refused);
            }
            if let Err(refused) = admitted {
                return Ok::<Response, Infallible>(crate::limits::unavailable(refused));
            }
            Ok::<Response, Infallible>(engine.handle(req).await.map(Body::new))
        }
    });
    let bare = path.trim_end_matches('/').to_owned();
    router
        .route_service(path, svc.clone())
        .route_service(&bare, svc)
}

fn hub_pruner(hub: &Arc<Hub>, tasks: &TaskTracker, stop: &CancellationToken) {
    let weak = Arc::downgrade(hub);
    let stop = stop.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(hub) = weak.upgrade() else { return };
            hub.prune(tokio::time::Instant::now());
        }
    });
}

/// The Socket.IO engine, its direct writes served by `flushers` (shared with `/ws` and
/// SSE, so one broadcast to clients of every transport is written in one pass).
fn socketio_engine(
    config: &Config,
    sio: SocketIo,
    tasks: &TaskTracker,
    flushers: Arc<Flushers>,
) -> Arc<Engine<SocketIo>> {
    Engine::with_flushers(config.engine(), sio, tasks.clone(), flushers)
}

/// Why the server could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Catalog(#[from] crate::tickets::CatalogError),
    /// The store could not be opened.
    #[error("hold store in {dir}: {source}")]
    Store {
        /// The configured `data_dir`.
        dir: String,
        /// What the store reported.
        #[source]
        source: crate::tickets::StoreError,
    },
    /// The hold service could not restore its state from the store.
    #[error("hold store in {dir}: {source}")]
    Holds {
        /// The configured `data_dir`.
        dir: String,
        /// What the service reported.
        #[source]
        source: crate::tickets::ServiceError,
    },
    /// The Redis URL of the shared hold store is unusable.
    #[error("hold store at {url}: {source}")]
    Redis {
        /// `redis_url`, redacted.
        url: String,
        #[source]
        source: redis::RedisError,
    },
    /// The chat store could not be opened.
    #[error("chat store (data_dir {dir}, or database_url): {source}")]
    Chat {
        /// The configured `data_dir`.
        dir: String,
        #[source]
        source: crate::chat::store::StoreError,
    },
    /// Cluster mode could not start.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The JWT public key could not be loaded.
    #[error("JWT key")]
    Key(#[from] crate::auth::KeyError),
    /// The listener's certificate or key could not be loaded.
    #[error("TLS")]
    Tls(#[from] crate::tls::TlsError),
}

/// An error and its causes, `: `-separated, for one log line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The listener's TLS, when configured.
fn tls_of(config: &Config) -> Result<Option<Arc<crate::tls::Tls>>, BuildError> {
    if config.tls_cert_file.is_empty() {
        return Ok(None);
    }
    let tls = crate::tls::Tls::load(&config.tls_cert_file, &config.tls_key_file)?;
    Ok(Some(Arc::new(tls)))
}

fn auth_of(config: &Config) -> Result<Auth, BuildError> {
    if let Some(why) = config.dev_mode_reason() {
        tracing::warn!(
            listen = %config.listen,
            reason = why.as_str(),
            "DEVELOPMENT MODE: client tokens are NOT verified; the user id comes from \
             ?userId= ({}). Set SWITCHBOARD_JWT_SECRET (or jwt_public_key_file) and leave \
             dev_mode off before exposing this server.",
            why.explain()
        );
        return Ok(Auth::Development);
    }
    if let Some(jwks) = config.jwks() {
        return Ok(Auth::jwks(jwks, config.jwt_claims()));
    }
    if !config.jwt_public_key_file.is_empty() {
        return Ok(Auth::rs256_file(
            &config.jwt_public_key_file,
            config.jwt_claims(),
        )?);
    }
    Ok(Auth::hs256(
        config.jwt_secret.as_bytes(),
        config.jwt_claims(),
    ))
}

fn store_of(config: &Config, kind: HoldStoreKind) -> Result<Box<dyn HoldStore + Send>, BuildError> {
    let point = crate::failpoint::Failpoint::parse(&config.failpoint)
        .ok()
        .flatten();
    let memory = kind == HoldStoreKind::Memory || config.data_dir == "memory";
    Ok(match point {
        Some(point) => Box::new(crate::failpoint::FailpointStore::wrap(
            plain_store_of(config, kind)?,
            point,
        )),
        // No store layer at all: the state in memory is all there is.
        None if memory => Box::new(crate::tickets::MemoryStore),
        None => plain_store_of(config, kind)?,
    })
}

fn plain_store_of(
    config: &Config,
    kind: HoldStoreKind,
) -> Result<Box<dyn HoldStore + Send>, BuildError> {
    let failed = |source: crate::tickets::StoreError| BuildError::Store {
        dir: config.data_dir.clone(),
        source,
    };
    // With a failpoint: an in-memory database, which a failed write can be reloaded from.
    if kind == HoldStoreKind::Memory || config.data_dir == "memory" {
        return Ok(Box::new(
            crate::tickets::SqliteStore::memory().map_err(failed)?,
        ));
    }
    let store = crate::tickets::SqliteStore::open(std::path::Path::new(&config.data_dir))
        .map_err(failed)?;
    Ok(Box::new(store))
}

/// The hold service on the configured authority: this node's store, or Redis shared by
/// the fleet (connected lazily: a node starts while Redis is down and refuses holds).
fn holds_of(
    config: &Config,
    catalog: Vec<tickets::Event>,
    hub: &Arc<Hub>,
    fabric_node: Option<&str>,
) -> Result<Arc<HoldService>, BuildError> {
    let coalesce = std::time::Duration::from_millis(config.coalesce_ms);
    let kind = config.effective_hold_store();
    if kind != HoldStoreKind::Redis {
        return HoldService::open(
            config.holds(),
            catalog,
            store_of(config, kind)?,
            hub.clone(),
            coalesce,
        )
        .map_err(|source| BuildError::Holds {
            dir: config.data_dir.clone(),
            source,
        });
    }
    let conn = crate::tickets::redis_store::connection(&config.redis_url).map_err(|source| {
        BuildError::Redis {
            url: config.redacted().redis_url,
            source,
        }
    })?;
    // One id per node for the fabric and the holds (liveness, dead-node release).
    let node = match fabric_node {
        Some(id) => id.to_owned(),
        None if config.node_id.is_empty() => format!("node-{:08x}", rand::random::<u32>()),
        None => config.node_id.clone(),
    };
    let store =
        crate::tickets::RedisHolds::new(conn, &config.hold_key_prefix, &node, config.holds());
    let liveness = crate::tickets::LivenessConfig {
        node_timeout: std::time::Duration::from_secs(config.node_timeout_secs),
        recovery_window: config.recovery_window().unwrap_or_default(),
    };
    Ok(HoldService::open_shared(
        store,
        catalog,
        hub.clone(),
        coalesce,
        liveness,
    ))
}

/// The chat on SQLite in `data_dir` (in memory when it is `memory`).
/// PostgreSQL when `database_url` is set (connected on first use).
fn chat_of(config: &Config, hub: &Arc<Hub>) -> Result<Arc<crate::chat::Chat>, BuildError> {
    let failed = |source| BuildError::Chat {
        dir: config.data_dir.clone(),
        source,
    };
    let store: Arc<dyn crate::chat::store::ChatStore> = if !config.database_url.is_empty() {
        Arc::new(crate::chat::postgres::PgChat::new(&config.database_url).map_err(failed)?)
    } else if config.data_dir == "memory" {
        Arc::new(crate::chat::sqlite::SqliteChat::memory().map_err(failed)?)
    } else {
        Arc::new(
            crate::chat::sqlite::SqliteChat::open(std::path::Path::new(&config.data_dir))
                .map_err(failed)?,
        )
    };
    Ok(crate::chat::Chat::new(store, hub.clone(), config.chat()))
}

/// The production server: `/realtime` on the room fabric, with recovery and ticket holds.
pub fn build(config: &Config) -> Result<App, BuildError> {
    let tls = tls_of(config)?;
    let tasks = TaskTracker::new();
    let hub = Hub::new(config.hub());
    let catalog = if config.catalog.is_empty() {
        crate::tickets::demo_catalog()
    } else {
        crate::tickets::load_catalog(std::path::Path::new(&config.catalog))?
    };
    let cluster_config = config.cluster();
    let holds = holds_of(
        config,
        catalog,
        &hub,
        cluster_config.as_ref().map(|c| c.node_id.as_str()),
    )?;
    let stop = CancellationToken::new();
    let limits = Limits::new(config.limits());
    tasks.spawn(holds.clone().run_expiry(stop.clone()));
    let integrations = crate::ingest::Integrations::start(config, &holds, &hub, &tasks, &stop);
    let mut sio = SocketIo::new(config.socketio(), hub.clone());
    sio.set_user_limit(Arc::new(crate::limits::SocketIoUserLimit(limits.clone())));
    let sio_rate_limited = sio.rate_limited();
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let contract = Arc::new(realtime::Realtime {
        auth: auth_of(config)?,
        rooms: crate::transport::access::RoomPolicy::new(config.private_room_prefixes.clone()),
        holds: holds.clone(),
        catalog: integrations.catalog.clone(),
        limits: limits.clone(),
    });
    let realtime = sio.add_namespace(
        NamespaceConfig {
            name: "/realtime".into(),
            recovery: config.recovery_window(),
            fabric: true,
        },
        contract.clone(),
    );
    let chat = chat_of(config, &hub)?;
    tasks.spawn(chat.clone().run(stop.clone()));
    sio.add_namespace(
        NamespaceConfig {
            name: "/chat".into(),
            recovery: None,
            fabric: true,
        },
        Arc::new(crate::chat::socket::ChatNamespace {
            chat: chat.clone(),
            realtime: contract.clone(),
        }),
    );
    let flushers = Arc::new(Flushers::new(config.ws_flushers));
    let engine = socketio_engine(config, sio, &tasks, flushers.clone());
    hub_pruner(&hub, &tasks, &stop);
    let transports = Transports::new(
        hub.clone(),
        contract,
        config.transports(),
        stop.clone(),
        tasks.clone(),
        metrics.clone(),
        config.origins(),
        flushers,
    );
    transports.set_chat(chat.clone());
    let api_keys = crate::admin::ApiKeys::new(config.api_key_list().iter().map(String::as_str));
    // Pusher clients on the same rooms; no app configured, nothing served.
    let pusher = crate::pusher::Pusher::new(
        config.pusher.clone(),
        hub.clone(),
        config.transports(),
        limits.clone(),
        stop.child_token(),
        tasks.clone(),
    );
    let cluster = match cluster_config {
        Some(c) => {
            let engine_count = engine.clone();
            let transports_count = transports.clone();
            let connections: Arc<dyn Fn() -> usize + Send + Sync> = Arc::new(move || {
                engine_count.session_count()
                    + transports_count.ws_connections()
                    + transports_count.sse_connections()
            });
            let server_side = crate::cluster::log_and_ack(c.node_id.clone());
            let cluster = crate::cluster::Cluster::start(
                c,
                &hub,
                &tasks,
                &stop,
                connections,
                crate::cluster::SocketIoSide {
                    namespaces: vec![realtime.clone()],
                    server_side,
                },
            )?;
            let announce_hub = hub.clone();
            let announce_pusher = pusher.as_ref().map(Arc::downgrade);
            transports.set_presence_book(cluster.presence_book(
                Arc::new(move |room, event, user, except, info| {
                    crate::pusher::announce(&announce_hub, room, event, user, except, info);
                    if let Some(p) = announce_pusher.as_ref().and_then(std::sync::Weak::upgrade) {
                        p.fleet_member_hook(room, event, user);
                    }
                }),
                &tasks,
                &stop,
            ));
            chat.set_cluster(cluster.clone(), &tasks, &stop);
            if let Some(window) = config.recovery_window() {
                // Sessions outlive their server by the window (plus the time it takes to
                // notice the server died), so a client can resume on another node.
                let ttl = window + cluster.node_timeout();
                realtime.set_directory(cluster.session_directory(ttl, &tasks, &stop));
            }
            Some(cluster)
        }
        None => None,
    };
    if let (Some(p), Some(c)) = (&pusher, &cluster) {
        p.set_cluster(c.clone(), transports.presence_book().cloned());
    }
    let admin_cluster = cluster.clone();
    let socket_ops = Arc::new(match &cluster {
        Some(c) => c.socket_ops(realtime.clone()),
        None => crate::cluster::SocketOps::local(realtime.clone()),
    });
    let admin = crate::admin::AdminState {
        cluster,
        engine: engine.clone(),
        metrics: metrics.clone(),
        sio_rate_limited,
        dev_mode: config.effective_dev_mode(),
        holds,
        hub: hub.clone(),
        realtime,
        transports: transports.clone(),
        api_keys: api_keys.clone(),
        integrations,
        limits: limits.clone(),
        pusher: pusher.clone(),
        chat: chat.clone(),
    };
    let mut router = crate::admin::routes(admin)
        .merge(crate::api::routes(crate::api::ApiState {
            hub: hub.clone(),
            api_keys: api_keys.clone(),
            metrics: metrics.clone(),
            cluster: admin_cluster,
        }))
        .merge(crate::chat::api::routes(crate::chat::api::ChatApiState {
            chat,
            api_keys: api_keys.clone(),
        }))
        .merge(crate::sockets_api::routes(
            crate::sockets_api::SocketsState {
                ops: socket_ops,
                api_keys: api_keys.clone(),
            },
        ))
        .merge(
            Router::new()
                .route("/ws", get(ws::upgrade))
                .route("/events", get(sse::events))
                .with_state(transports.clone())
                .layer(axum::middleware::from_fn_with_state(
                    limits.clone(),
                    crate::limits::admit_every,
                )),
        )
        .merge(crate::web::routes(config.dev_mode_reason()));
    router = engine_routes(
        router,
        "/socket.io/",
        engine.clone(),
        &limits,
        (config.origins(), metrics.clone()),
    );
    let mut engines: Vec<Arc<dyn Sessions>> = vec![engine, transports];
    if let Some(pusher) = pusher {
        let origins = crate::transport::OriginGuard {
            allowed: config.origins(),
            metrics,
            via: crate::transport::access::Via::Pusher,
        };
        router = router.merge(pusher.routes(&limits, origins));
        engines.push(pusher);
    }
    Ok(App {
        router,
        tasks,
        hub,
        limits,
        engines,
        stop,
        tls,
        direct_writes: config.ws_flushers > 0,
    })
}

/// The server the official Socket.IO and Engine.IO suites expect (see `conformance`).
pub fn build_conformance(config: &Config) -> App {
    let tasks = TaskTracker::new();
    let hub = Hub::new(config.hub());
    let mut sio = SocketIo::new(config.socketio(), hub.clone());
    conformance::namespaces(&mut sio);
    let flushers = Arc::new(Flushers::new(config.ws_flushers));
    let engine = socketio_engine(config, sio, &tasks, flushers.clone());
    let echo = Engine::with_flushers(config.engine(), conformance::Echo, tasks.clone(), flushers);
    let stop = CancellationToken::new();
    hub_pruner(&hub, &tasks, &stop);
    let limits = Limits::new(config.limits());
    let mut router = Router::new().route("/health", get(crate::admin::health));
    let origins = (
        config.origins(),
        Arc::new(crate::metrics::Metrics::default()),
    );
    router = engine_routes(
        router,
        "/socket.io/",
        engine.clone(),
        &limits,
        origins.clone(),
    );
    router = engine_routes(router, "/engine.io/", echo.clone(), &limits, origins);
    App {
        router,
        tasks,
        hub,
        limits,
        engines: vec![engine, echo],
        stop,
        tls: None,
        direct_writes: config.ws_flushers > 0,
    }
}
