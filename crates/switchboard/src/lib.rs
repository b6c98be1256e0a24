//! Switchboard: a realtime gateway in one binary.
//!
//! # Layout
//! The path of a connection reads off the modules:
//! accept ([`server`]) -> route ([`app`]) -> protocol session (the `engineio` and
//! `socketio` crates) -> room fabric (the `hub` crate) -> application ([`realtime`]).
//! - [`config`]: typed settings, file < env < flags, validated once.
//! - [`cli`]: flags and subcommands.
//! - [`app`]: builds the hub, engines and routes; no I/O.
//! - [`server`]: `run(listener, app, shutdown, grace)`: accept loop and drain.
//! - [`limits`]: connection admission (server, per address, handshake rate; 503).
//! - [`conformance`]: the server the official protocol suites expect.
//! - [`contract`]: the TypeScript types of the client-facing payloads (`clients/typescript`).
//! - [`realtime`]: the `/realtime` namespace (the ticketing contract).
//! - [`chat`]: chat on every transport (`/chat`, `/ws` actions, SSE, HTTP): rooms,
//!   persisted messages, receipts, typing, presence.
//! - [`tickets`]: the hold service (rules + store + timer + broadcasts).
//! - [`auth`]: JWT (HS256/RS256) or development identities.
//! - [`nest`]: the NestJS wire formats (RMQ packets, TCP frames), shared by [`ingest`]
//!   and [`tickets`].
//! - [`admin`]: `/health`, `/ready`, `/stats`, the catalog admin API.
//! - [`api`]: the HTTP publish API, the rooms API and the OpenAPI document.
//! - [`sockets_api`]: the fleet operations over HTTP (fetch, join, leave, disconnect
//!   sockets; server-side emit; emit with acks), across every node in cluster mode.
//! - [`cluster`]: cluster mode on Redis (relay, presence, counts, the Node adapter's
//!   requests both ways).
//! - [`transport`]: the plain transports `/ws` and `/events` (SSE), hub members too.
//! - [`pusher`]: the Pusher Channels protocol (`/app/{key}`, the `/apps/{id}` HTTP API,
//!   webhooks) on the same rooms.
//! - [`ingest`]: the RabbitMQ consumer for the platform's NestJS services.
//! - [`cluster`]: cluster mode on Redis: the fabric between nodes, the fleet, the
//!   recoverable-session directory.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`dashboard`]: `/dashboard/stream`, the live dashboard's SSE feed.
//! - [`telemetry`]: logging set-up.
//! - [`failpoint`]: test-only failure injection (abort or fail around a store write).
//! - [`tls`]: the listener's certificate (reloaded on SIGHUP), outgoing HTTPS.
//! - [`web`]: the ticket page and the dashboard (embedded `web/` files), `/api/session-info`.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod contract;
pub mod dashboard;
pub mod failpoint;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod nest;
pub mod pusher;
pub mod realtime;
pub mod server;
pub mod sockets_api;
pub mod telemetry;
pub mod tickets;
pub mod tls;
pub mod transport;
pub mod web;

pub use app::{App, build, build_conformance};
pub use config::Config;
pub use server::run;
