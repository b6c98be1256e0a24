//! Building the application: the hub, the protocol engines and the HTTP routes.
//!
//! `App` is everything `server::run` needs; building it does no I/O, so tests can build
//! one and serve it on port 0.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use engineio::Engine;
use hub::Hub;
use socketio::{NamespaceConfig, SocketIo};
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::{conformance, realtime};

/// Something holding client sessions that shutdown must close.
trait Sessions: Send + Sync {
    fn close_all(&self);
    fn count(&self) -> usize;
}

impl<H: engineio::Handler> Sessions for Engine<H> {
    fn close_all(&self) {
        Engine::close_all(self);
    }
    fn count(&self) -> usize {
        self.session_count()
    }
}

/// A built server: routes, the engines behind them, and the tasks they spawn. Clones
/// share everything (tests keep one to inspect the running server).
#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub tasks: TaskTracker,
    pub hub: Arc<Hub>,
    engines: Vec<Arc<dyn Sessions>>,
}

impl App {
    /// Closes every client session (reason: server shutting down).
    pub fn close_sessions(&self) {
        for e in &self.engines {
            e.close_all();
        }
    }

    /// Open Engine.IO sessions across every engine.
    pub fn session_count(&self) -> usize {
        self.engines.iter().map(|e| e.count()).sum()
    }
}

/// Routes an Engine.IO path (with and without the trailing slash) to `engine`.
fn engine_routes<H: engineio::Handler>(
    router: Router,
    path: &str,
    engine: Arc<Engine<H>>,
) -> Router {
    let svc = tower::service_fn(move |req: axum::extract::Request| {
        let engine = engine.clone();
        async move { Ok::<Response, Infallible>(engine.handle(req).await.map(Body::new)) }
    });
    let bare = path.trim_end_matches('/').to_owned();
    router
        .route_service(path, svc.clone())
        .route_service(&bare, svc)
}

fn hub_pruner(hub: &Arc<Hub>, tasks: &TaskTracker) {
    let weak = Arc::downgrade(hub);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let Some(hub) = weak.upgrade() else { return };
            hub.prune(std::time::Instant::now());
        }
    });
}

fn socketio_engine(config: &Config, sio: SocketIo, tasks: &TaskTracker) -> Arc<Engine<SocketIo>> {
    Engine::new(config.engine(), sio, tasks.clone())
}

/// The production server: `/realtime` on the room fabric, with recovery.
pub fn build(config: &Config) -> App {
    let tasks = TaskTracker::new();
    let hub = Hub::new(config.hub());
    let mut sio = SocketIo::new(config.socketio(), hub.clone());
    sio.add_namespace(
        NamespaceConfig {
            name: "/realtime".into(),
            recovery: config.recovery_window(),
            fabric: true,
        },
        Arc::new(realtime::Realtime),
    );
    let engine = socketio_engine(config, sio, &tasks);
    hub_pruner(&hub, &tasks);
    let mut router = Router::new().route("/health", get(health));
    router = engine_routes(router, "/socket.io/", engine.clone());
    App {
        router,
        tasks,
        hub,
        engines: vec![engine],
    }
}

/// The server the official Socket.IO and Engine.IO suites expect (see `conformance`).
pub fn build_conformance(config: &Config) -> App {
    let tasks = TaskTracker::new();
    let hub = Hub::new(config.hub());
    let mut sio = SocketIo::new(config.socketio(), hub.clone());
    conformance::namespaces(&mut sio);
    let engine = socketio_engine(config, sio, &tasks);
    let echo = Engine::new(config.engine(), conformance::Echo, tasks.clone());
    hub_pruner(&hub, &tasks);
    let mut router = Router::new().route("/health", get(health));
    router = engine_routes(router, "/socket.io/", engine.clone());
    router = engine_routes(router, "/engine.io/", echo.clone());
    App {
        router,
        tasks,
        hub,
        engines: vec![engine, echo],
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}
