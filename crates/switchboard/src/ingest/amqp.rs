//! The RabbitMQ consumer: one connection, a consuming channel with manual acks and a
//! publishing channel with publisher confirms (replies and dead letters).
//!
//! Deliveries are pipelined, up to `prefetch` at once: each is started in arrival order
//! (its effect applied, in memory, in that order), then waits until its effect is durable
//! (the hold store commits many operations in one batch), its reply or dead letter is
//! published and confirmed by the broker; finished deliveries are acked in arrival order,
//! with one `multiple` ack for every run of them. Nothing is acked before its effect is
//! durable and its reply confirmed. Any broker error ends the session; unacked messages
//! go back to the queue, the session starts again after a backoff, and redeliveries are
//! harmless (see [`super::handle`]).
//!
//! Queues: the work queue is declared exactly as a NestJS client asserts it (durable, no
//! arguments), so both sides can declare it. Dead letters go through a direct exchange
//! `<dlq>.x` into the durable queue `<dlq>`, with the reason in headers.

use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use futures_util::stream::FuturesOrdered;
use futures_util::{FutureExt, StreamExt};
use lapin::Acker;
use lapin::ConnectionStatus;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::handle::{Handler, Reply, Verdict};
use super::metrics::{Ingest, bump};

/// Header names on a dead-lettered message.
pub const REASON_HEADER: &str = "x-switchboard-reason";
pub const ERROR_HEADER: &str = "x-switchboard-error";
pub const QUEUE_HEADER: &str = "x-switchboard-queue";

/// Settings of the consumer (from `Config::amqp`).
#[derive(Debug, Clone)]
pub struct AmqpConfig {
    pub url: String,
    pub queue: String,
    pub dead_letter_queue: String,
    pub prefetch: u16,
    /// Backoff between connection attempts: starts at `reconnect_min`, doubles, capped.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// How long a message waits before it is requeued after a store failure.
    pub retry_delay: Duration,
    /// Shown in the broker's connection list.
    pub connection_name: String,
}

impl AmqpConfig {
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.x", self.dead_letter_queue)
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Broker(#[from] lapin::Error),
    #[error("connecting timed out")]
    ConnectTimeout,
    #[error("the consumer was cancelled by the broker")]
    Cancelled,
    #[error("the broker refused a dead letter (nack)")]
    Nacked,
    #[error("the broker did not confirm in time")]
    Stalled,
    #[error("the channel closed; unacked messages will be redelivered")]
    ChannelGone,
}

/// How long a publish confirm or an ack may take before the session is given up.
const BROKER_STALL: Duration = Duration::from_secs(15);

/// Awaits a broker operation, giving up when the connection dies under it (lapin 4.12
/// can leave an ack queued during its shutdown unresolved) or the broker stops answering
/// (a silent broker is otherwise noticed only by heartbeats, which can be slow).
async fn bounded<T>(
    status: &ConnectionStatus,
    f: impl std::future::Future<Output = Result<T, lapin::Error>>,
) -> Result<T, SessionError> {
    let dead = async {
        while status.connected() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::select! {
        biased;
        r = tokio::time::timeout(BROKER_STALL, f) => {
            r.map_err(|_| SessionError::Stalled)?.map_err(SessionError::from)
        }
        _ = dead => Err(SessionError::ChannelGone),
    }
}

/// Starts the consumer on `tasks`; it runs until `stop`.
pub fn spawn(
    config: AmqpConfig,
    handler: Handler,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Arc<Ingest> {
    let ingest = Arc::new(Ingest::new(&config.queue));
    let consumer = Consumer {
        config,
        handler,
        ingest: ingest.clone(),
    };
    tasks.spawn(consumer.run(stop));
    ingest
}

/// What to do with a finished delivery.
enum Settle {
    Ack(Acker),
    Requeue(Acker),
}

/// The rest of a started delivery.
type Finishing<'a> = Pin<Box<dyn Future<Output = Result<Settle, SessionError>> + Send + 'a>>;

/// Finished deliveries not yet acked: the last one's acker acks them all (`multiple`).
#[derive(Default)]
struct Acks {
    last: Option<Acker>,
    count: u64,
}

struct Consumer {
    config: AmqpConfig,
    handler: Handler,
    ingest: Arc<Ingest>,
}

impl Consumer {
    async fn run(self, stop: CancellationToken) {
        let mut backoff = self.config.reconnect_min;
        loop {
            self.ingest.connecting();
            let mut connected = false;
            let result = self.session(&stop, &mut connected).await;
            if connected {
                backoff = self.config.reconnect_min;
            }
            match result {
                Ok(()) => {
                    self.ingest.stopped();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "RabbitMQ session ended");
                    self.ingest.down(e.to_string());
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    self.ingest.stopped();
                    return;
                }
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.reconnect_max);
        }
    }

    /// One connection's life: `Ok` only when stopped.
    async fn session(
        &self,
        stop: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), SessionError> {
        let props = ConnectionProperties::default()
            .with_connection_name(self.config.connection_name.clone().into());
        let conn = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = tokio::time::timeout(Duration::from_secs(10), Connection::connect(&self.config.url, props)) => {
                c.map_err(|_| SessionError::ConnectTimeout)??
            }
        };
        let result = self.consume(&conn, stop, connected).await;
        // A clean close only when stopping: after an error the broker may not answer,
        // and dropping the connection releases it (unacked messages are requeued).
        if result.is_ok() && conn.status().connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                conn.close(200, "switchboard consumer closing".into()),
            )
            .await;
        }
        result
    }

    async fn consume(
        &self,
        conn: &Connection,
        stop: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), SessionError> {
        let cfg = &self.config;
        let consume = conn.create_channel().await?;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        consume
            .queue_declare(
                cfg.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        publish
            .exchange_declare(
                cfg.dead_letter_exchange().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        publish
            .queue_declare(
                cfg.dead_letter_queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await?;
        publish
            .queue_bind(
                cfg.dead_letter_queue.as_str().into(),
                cfg.dead_letter_exchange().into(),
                cfg.queue.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consume
            .basic_qos(cfg.prefetch, BasicQosOptions::default())
            .await?;
        let mut deliveries = consume
            .basic_consume(
                cfg.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        *connected = true;
        self.ingest.connected();
        tracing::info!(queue = %cfg.queue, dead_letters = %cfg.dead_letter_queue, prefetch = cfg.prefetch, "consuming from RabbitMQ");
        let status = conn.status();
        let mut inflight = FuturesOrdered::new();
        let result = self
            .pipeline(status, &publish, &mut deliveries, &mut inflight, stop)
            .await;
        if result.is_err() {
            // The session is over, but the effects started in it are (or will be)
            // durable: let each finish telling its clients. None is acked; their
            // redeliveries are recognized duplicates.
            while inflight.next().await.is_some() {}
        }
        result
    }

    /// Starts deliveries in arrival order, up to `prefetch` in flight, and settles them
    /// with the broker in the same order.
    async fn pipeline<'a>(
        &'a self,
        status: &'a ConnectionStatus,
        publish: &'a Channel,
        deliveries: &mut lapin::Consumer,
        inflight: &mut FuturesOrdered<Finishing<'a>>,
        stop: &CancellationToken,
    ) -> Result<(), SessionError> {
        let mut acks = Acks::default();
        let depth = usize::from(self.config.prefetch);
        loop {
            tokio::select! {
                biased;
                Some(done) = inflight.next(), if !inflight.is_empty() => {
                    self.settle(status, done?, &mut acks).await?;
                    // Every delivery finished by now is acked together.
                    while let Some(Some(done)) = inflight.next().now_or_never() {
                        self.settle(status, done?, &mut acks).await?;
                    }
                    self.ack(status, &mut acks).await?;
                }
                // Only the wait is raced with `stop`: messages being handled are finished.
                _ = stop.cancelled() => {
                    while let Some(done) = inflight.next().await {
                        self.settle(status, done?, &mut acks).await?;
                    }
                    self.ack(status, &mut acks).await?;
                    return Ok(());
                }
                next = deliveries.next(), if inflight.len() < depth => match next {
                    None => return Err(SessionError::Cancelled),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(delivery)) => {
                        inflight.push_back(self.start(status, publish, delivery).await?);
                    }
                },
            }
        }
    }

    /// Records a finished delivery: an ack owed (sent with the run it ends), or a
    /// requeue (the acks owed before it go first).
    async fn settle(
        &self,
        status: &ConnectionStatus,
        done: Settle,
        acks: &mut Acks,
    ) -> Result<(), SessionError> {
        match done {
            Settle::Ack(acker) => {
                acks.last = Some(acker);
                acks.count += 1;
            }
            Settle::Requeue(acker) => {
                self.ack(status, acks).await?;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                if !bounded(status, acker.nack(requeue)).await? {
                    return Err(SessionError::ChannelGone);
                }
                bump(&self.ingest.counters.requeued);
            }
        }
        Ok(())
    }

    /// Acks every owed delivery at once (`multiple`, up to the last finished one).
    async fn ack(&self, status: &ConnectionStatus, acks: &mut Acks) -> Result<(), SessionError> {
        let Some(last) = acks.last.take() else {
            return Ok(());
        };
        let multiple = BasicAckOptions { multiple: true };
        if !bounded(status, last.ack(multiple)).await? {
            // The channel died under us: the broker will redeliver, and the effects are
            // already durable, so the redeliveries are recognized duplicates.
            return Err(SessionError::ChannelGone);
        }
        self.ingest.counters.acked.fetch_add(
            std::mem::take(&mut acks.count),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(())
    }

    /// Starts one delivery (its effect applied now, in arrival order) and returns the
    /// rest: durability, the reply or dead letter confirmed, then what to do with it.
    async fn start<'a>(
        &'a self,
        status: &'a ConnectionStatus,
        publish: &'a Channel,
        delivery: Delivery,
    ) -> Result<Finishing<'a>, SessionError> {
        let c = &self.ingest.counters;
        // Deliveries buffered before the channel died cannot be acked: leave them to
        // their redelivery instead of applying them now.
        if !delivery.acker.usable() {
            return Err(SessionError::ChannelGone);
        }
        bump(&c.consumed);
        if delivery.redelivered {
            bump(&c.redelivered);
        }
        let reply_to = delivery.properties.reply_to().clone();
        let correlation = delivery.properties.correlation_id().clone();
        let can_reply = reply_to.is_some() && correlation.is_some();
        let finish = self.handler.start(&delivery.data, can_reply).await;
        Ok(Box::pin(async move {
            let verdict = finish.await;
            self.finish(status, publish, delivery, reply_to, correlation, verdict)
                .await
        }))
    }

    async fn finish(
        &self,
        status: &ConnectionStatus,
        publish: &Channel,
        delivery: Delivery,
        reply_to: Option<ShortString>,
        correlation: Option<ShortString>,
        verdict: Verdict,
    ) -> Result<Settle, SessionError> {
        let c = &self.ingest.counters;
        let reply = |r: Reply| {
            let to = reply_to.clone();
            let corr = correlation.clone();
            async move {
                if let (Some(to), Some(corr)) = (to, corr) {
                    // A reply queue that is gone (the requester timed out) is not our
                    // failure: the confirm says the broker took it, which is all we need.
                    let confirm = bounded(
                        status,
                        publish.basic_publish(
                            "".into(),
                            to,
                            BasicPublishOptions::default(),
                            &r.body,
                            BasicProperties::default()
                                .with_correlation_id(corr)
                                .with_content_type("application/json".into()),
                        ),
                    )
                    .await?;
                    bounded(status, confirm).await?;
                    bump(&c.replies);
                    if r.is_err {
                        bump(&c.error_replies);
                    }
                }
                Ok::<_, SessionError>(())
            }
        };
        match verdict {
            Verdict::Done {
                reply: body,
                duplicate,
            } => {
                if let Some(r) = body {
                    reply(r).await?;
                }
                if duplicate {
                    bump(&c.duplicates);
                }
            }
            Verdict::DeadLetter {
                reason,
                message,
                reply: body,
            } => {
                tracing::warn!(reason = reason.as_str(), %message, "dead-lettering a broker message");
                self.dead_letter(status, publish, &delivery, reason.as_str(), &message)
                    .await?;
                bump(c.dead_lettered(reason));
                if let Some(r) = body {
                    reply(r).await?;
                }
            }
            Verdict::Retry(cause) => {
                tracing::error!(%cause, "store failed; the message goes back to the queue");
                tokio::time::sleep(self.config.retry_delay).await;
                return Ok(Settle::Requeue(delivery.acker));
            }
        }
        Ok(Settle::Ack(delivery.acker))
    }

    /// Publishes a copy of the message to the dead-letter exchange with the reason in
    /// headers, and waits until the broker has it.
    async fn dead_letter(
        &self,
        status: &ConnectionStatus,
        publish: &Channel,
        delivery: &Delivery,
        reason: &str,
        message: &str,
    ) -> Result<(), SessionError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let put = |h: &mut FieldTable, k: &str, v: &str| {
            h.insert(
                ShortString::from(k),
                AMQPValue::LongString(LongString::from(v.as_bytes().to_vec())),
            );
        };
        put(&mut headers, REASON_HEADER, reason);
        // Messages come from serde or the rules and are short; cap anyway.
        let message: String = message.chars().take(1000).collect();
        put(&mut headers, ERROR_HEADER, &message);
        put(&mut headers, QUEUE_HEADER, &self.config.queue);
        let props = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let confirm = bounded(
            status,
            publish.basic_publish(
                self.config.dead_letter_exchange().into(),
                self.config.queue.as_str().into(),
                BasicPublishOptions::default(),
                &delivery.data,
                props,
            ),
        )
        .await?;
        match bounded(status, confirm).await? {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(SessionError::Nacked),
        }
    }
}
