//! Cluster mode: many Switchboard nodes on one Redis behave as one (`redis_url`).
//!
//! - [`relay`](self::relay): every hub publish is one Redis message in the format of
//!   Node's `@socket.io/redis-adapter`, sequenced cluster-wide by a Lua script; every
//!   node delivers it from the subscription, so all see one order and one offset.
//! - [`codec`](self::codec): that message format (msgpack, as notepack.io writes it).
//! - [`nodes`](self::nodes): heartbeats, the fleet list, dead-node detection.
//! - [`requests`](self::requests): the Node adapter's request/response protocol,
//!   answered for our Socket.IO namespaces (fetchSockets, socketsJoin, serverSideEmit…).
//! - [`link`](self::link): the Redis connections' state and the bus counters.
//! - [`presence`](self::presence): `member_joined` / `member_left` once per user, fleet-wide.
//! - [`census`](self::census): room counts from every node (`/api/rooms`).
//! - [`signals`](self::signals): small messages to every other node (Pusher's
//!   terminate_connections).
//!
//! Without `redis_url` none of this runs and the hub stays a single node.

mod census;
mod codec;
mod link;
mod nodes;
mod ops;
mod presence;
mod relay;
mod requests;
mod sessions;
mod signals;
mod waiting;

use std::sync::Arc;
use std::time::Duration;

use hub::Hub;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use census::{Census, RoomShare, Tally};
pub use link::{BusMetrics, LinkState};
pub use nodes::NodeInfo;
pub use ops::{Acked, Gathered, MAX_TIMEOUT, SocketOps};
pub use presence::{Announce, Members, PresenceBook};
pub use relay::Supersedes;
pub(crate) use relay::random_node_id;
pub use requests::{ServerSideEvent, ServerSideHandler, log_and_ack};
pub use signals::{SignalError, SignalHandler, Signals};

/// How every command connection to Redis reconnects and times out.
fn manager_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2))
}

/// Settings of a cluster node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://…` of the shared Redis.
    pub url: String,
    /// This node's id (also its uid on the Node adapter's channels).
    pub node_id: String,
    /// A node silent this long is dead.
    pub node_timeout: Duration,
    /// Channel prefix: the Node adapter's `key` option (`socket.io`).
    pub prefix: String,
    /// The namespace whose rooms are the fabric's rooms (`/realtime`).
    pub fabric_namespace: String,
    /// Messages waiting for Redis, at most; beyond them publishes stay on this node.
    pub queue: usize,
    /// Largest bus message accepted, in bytes.
    pub max_message: usize,
    /// Which messages carry a latest value (the hold service's availability
    /// announcements): a node delivers only a newer version than it last delivered.
    pub supersedes: Supersedes,
}

/// The Socket.IO side a cluster node serves to the Node adapter's requests.
#[derive(Clone)]
pub struct SocketIoSide {
    /// Namespaces whose request channels this node answers on.
    pub namespaces: Vec<Arc<socketio::Namespace>>,
    /// Server-side events from other nodes (`serverSideEmit`).
    pub server_side: ServerSideHandler,
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `redis_url` is not a Redis URL the client accepts.
    #[error("redis_url: {0}")]
    Url(#[source] redis::RedisError),
}

/// A running cluster node.
pub struct Cluster {
    config: ClusterConfig,
    link: Arc<LinkState>,
    metrics: Arc<BusMetrics>,
    nodes: Arc<nodes::Nodes>,
    connection: redis::aio::ConnectionManager,
    census: Arc<Census>,
    signals: Arc<Signals>,
    waiting: Arc<ops::Waiting>,
    /// Every book this node writes (presence, Pusher's occupancy): `/stats` reports them
    /// synced only when all are.
    books: parking_lot::Mutex<Vec<Arc<PresenceBook>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

impl Cluster {
    /// Joins the cluster: makes `hub` relay through Redis and starts the writer,
    /// subscriber, sweeper and heartbeat tasks on `tasks` until `stop`. Connects lazily:
    /// a node starts (and serves its own clients) while Redis is down.
    pub fn start(
        config: ClusterConfig,
        hub: &Arc<Hub>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        connections: Arc<dyn Fn() -> usize + Send + Sync>,
        sio: SocketIoSide,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(config.url.as_str()).map_err(ClusterError::Url)?;
        let connection = client
            .get_connection_manager_lazy(manager_config())
            .map_err(ClusterError::Url)?;
        let link = Arc::new(LinkState::default());
        let metrics = Arc::new(BusMetrics::default());
        let (relay, rx) = relay::BusRelay::new(
            config.node_id.clone(),
            config.prefix.clone(),
            codec::Namespaces {
                fabric: config.fabric_namespace.clone(),
            },
            hub,
            link.clone(),
            metrics.clone(),
            config.queue,
            config.max_message,
            config.supersedes,
        );
        hub.set_relay(relay.clone());
        let nodes = nodes::Nodes::new(&config.prefix, config.node_id.clone(), config.node_timeout);
        tasks.spawn(relay::writer(
            relay.clone(),
            rx,
            connection.clone(),
            stop.clone(),
        ));
        tasks.spawn(relay::sweeper(
            relay.clone(),
            connection.clone(),
            stop.clone(),
        ));
        let waiting = Arc::new(ops::Waiting::default());
        let requests = Arc::new(requests::Requests::new(
            config.node_id.clone(),
            config.prefix.clone(),
            sio.namespaces,
            connection.clone(),
            metrics.clone(),
            config.max_message,
            sio.server_side,
            waiting.clone(),
        ));
        let census = Arc::new(Census::new(
            &config.prefix,
            &config.node_id,
            hub.clone(),
            nodes.clone(),
            connection.clone(),
            metrics.clone(),
            config.max_message,
        ));
        let signals = Arc::new(Signals::new(
            &config.prefix,
            &config.node_id,
            connection.clone(),
            metrics.clone(),
            config.max_message,
        ));
        let mut channels = requests.channels();
        channels.extend(census.channels());
        channels.push(signals.channel());
        let asked = census.clone();
        let signalled = signals.clone();
        let on_request: relay::RequestHandler = Arc::new(move |channel, bytes| {
            if asked.owns(channel) {
                asked.on_message(channel, bytes);
            } else if signalled.owns(channel) {
                signalled.on_message(bytes);
            } else {
                requests.on_message(channel, bytes);
            }
        });
        tasks.spawn(relay::subscriber(
            relay,
            client,
            channels,
            on_request,
            stop.clone(),
        ));
        tasks.spawn(nodes::heartbeat(
            nodes.clone(),
            connection.clone(),
            link.clone(),
            connections,
            stop.clone(),
        ));
        tracing::info!(
            node = %config.node_id,
            prefix = %config.prefix,
            "cluster: relaying through Redis"
        );
        Ok(Arc::new(Cluster {
            config,
            link,
            metrics,
            nodes,
            connection,
            census,
            signals,
            waiting,
            books: parking_lot::Mutex::new(Vec::new()),
        }))
    }

    /// The fleet operations (fetch sockets, join, leave, disconnect, server-side emit,
    /// emit with acks) on `nsp`, across every node of this Redis, Node nodes included.
    pub fn socket_ops(&self, nsp: Arc<socketio::Namespace>) -> SocketOps {
        SocketOps::new(
            nsp,
            Some(Arc::new(ops::Remote {
                uid: self.config.node_id.clone(),
                prefix: self.config.prefix.clone(),
                con: self.connection.clone(),
                waiting: self.waiting.clone(),
            })),
        )
    }

    /// Room counts from every node.
    pub fn census(&self) -> &Census {
        &self.census
    }

    /// Signals to and from every other node.
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Starts this node's writer of the fleet's presence book: `announce` tells a room
    /// (through the relay, so every node's members hear it once).
    pub fn presence_book(
        &self,
        announce: Announce,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Arc<PresenceBook> {
        self.book("presence", announce, tasks, stop)
    }

    /// Starts this node's writer of another book with the presence book's rules, under
    /// `<prefix>-sb:<kind>...` keys: a pair (room, name) is announced when the first node
    /// holds it and when the last one lets it go or dies (Pusher's channel occupancy).
    pub fn book(
        &self,
        kind: &str,
        announce: Announce,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Arc<PresenceBook> {
        // Its own connection: a burst of presence changes never delays the relay's
        // publishes on the shared one.
        let connection = redis::Client::open(self.config.url.as_str())
            .and_then(|c| c.get_connection_manager_lazy(manager_config()))
            .unwrap_or_else(|_| self.connection.clone());
        let book = PresenceBook::start(
            &self.config.prefix,
            kind,
            &self.config.node_id,
            self.config.node_timeout,
            self.link.clone(),
            connection,
            announce,
            self.nodes.deaths(),
            self.nodes.rejoined(),
            tasks,
            stop,
        );
        self.books.lock().push(book.clone());
        book
    }

    /// Whether every book this node writes holds this node's share (false from start-up
    /// or an outage until each has reconciled); `None` with no book.
    pub fn books_synced(&self) -> Option<bool> {
        let books = self.books.lock();
        (!books.is_empty()).then(|| books.iter().all(|b| b.is_synced()))
    }

    /// The key and channel prefix (the Node adapter's `key`).
    pub fn prefix(&self) -> &str {
        &self.config.prefix
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The Redis link's state.
    pub fn link(&self) -> &LinkState {
        &self.link
    }

    /// The bus counters.
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// Live nodes, this one included.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        self.nodes.alive()
    }

    /// Ids of nodes found dead from now on (each announced by one node of the fleet).
    pub fn deaths(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.nodes.deaths()
    }

    /// The fleet's directory of recoverable Socket.IO sessions, kept for `ttl` after
    /// their server stops refreshing them (the recovery window plus the node timeout).
    pub fn session_directory(
        &self,
        ttl: Duration,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Arc<dyn socketio::SessionDirectory> {
        sessions::Sessions::new(
            &self.config.prefix,
            &self.config.node_id,
            ttl,
            self.connection.clone(),
            tasks,
            stop,
        )
    }

    /// The node timeout this node was started with.
    pub fn node_timeout(&self) -> Duration {
        self.config.node_timeout
    }

    /// A handle on the shared command connection (multiplexed; clones are cheap).
    pub fn connection(&self) -> redis::aio::ConnectionManager {
        self.connection.clone()
    }
}
