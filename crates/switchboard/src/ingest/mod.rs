//! Messages from the platform's backend services into the hold service and the hub.
//!
//! Owns: the RabbitMQ consumer ([`amqp`]) speaking the NestJS RMQ wire format
//! ([`crate::nest`]), the meaning of each pattern ([`handle`]), and the counters and broker
//! state that `/stats` and `/ready` report ([`metrics`]).
//! Never: hold rules (the hold service) or protocol sessions (the hub delivers).
//!
//! The invariant: **a broker message is acked only after its effect is durable** (the
//! hold service wrote it to the store), and a redelivered message has no second effect
//! (order ids are remembered by the rules; confirm and capacity changes are idempotent).

pub mod amqp;
pub mod handle;
pub mod metrics;

pub use amqp::AmqpConfig;
pub use handle::{Handler, Reason, Verdict};
pub use metrics::{BrokerState, Ingest};

use std::sync::Arc;

use hub::Hub;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::tickets::{CatalogSource, EventsClient, HoldService};

/// The platform integrations a server runs with: the broker consumer (when configured)
/// and the catalog source. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Integrations {
    pub amqp: Option<Arc<Ingest>>,
    pub catalog: CatalogSource,
}

impl Integrations {
    /// Starts what the config asks for; the consumer runs on `tasks` until `stop`.
    pub fn start(
        config: &Config,
        holds: &Arc<HoldService>,
        hub: &Arc<Hub>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Integrations {
        let amqp = config.amqp().map(|c| {
            let handler = Handler {
                holds: holds.clone(),
                hub: hub.clone(),
            };
            amqp::spawn(c, handler, tasks, stop.clone())
        });
        let catalog = match config.events_service() {
            Some(c) => CatalogSource::EventsService(EventsClient::new(c)),
            None => CatalogSource::Embedded,
        };
        Integrations { amqp, catalog }
    }
}
