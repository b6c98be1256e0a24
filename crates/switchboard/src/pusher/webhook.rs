//! Webhooks: `channel_occupied`, `channel_vacated`, `member_added`, `member_removed` and
//! `client_event`, POSTed as `{time_ms, events}` with `X-Pusher-Key` and
//! `X-Pusher-Signature` (hex HMAC-SHA256 of the body with the app's secret).
//!
//! Clients never wait for a webhook: events go through a bounded queue (full: dropped and
//! counted) to one sender task, which batches what is queued, holds `channel_vacated` and
//! `member_removed` for `webhook_delay_ms` (a re-occupation or re-join within it cancels
//! the pair), and delivers each batch in a task of its own with retries and backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::PusherConfig;
use super::service::App;
use super::sign;

/// Deliveries in flight at once.
const IN_FLIGHT: usize = 16;
/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events per POST.
const MAX_BATCH: usize = 100;

/// One webhook event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hook {
    Occupied(String),
    Vacated(String),
    MemberAdded {
        channel: String,
        user: String,
    },
    MemberRemoved {
        channel: String,
        user: String,
    },
    ClientEvent {
        channel: String,
        event: String,
        /// The event's data as the JSON of a string (a Pusher frame's `data` field).
        data: String,
        socket_id: String,
        user: Option<String>,
    },
}

impl Hook {
    fn json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Hook::Occupied(c) => json!({"name": "channel_occupied", "channel": c}),
            Hook::Vacated(c) => json!({"name": "channel_vacated", "channel": c}),
            Hook::MemberAdded { channel, user } => {
                json!({"name": "member_added", "channel": channel, "user_id": user})
            }
            Hook::MemberRemoved { channel, user } => {
                json!({"name": "member_removed", "channel": channel, "user_id": user})
            }
            Hook::ClientEvent {
                channel,
                event,
                data,
                socket_id,
                user,
            } => {
                let data: String = serde_json::from_str(data).unwrap_or_default();
                let mut v = json!({
                    "name": "client_event", "channel": channel, "event": event,
                    "data": data, "socket_id": socket_id,
                });
                if let Some(u) = user {
                    v["user_id"] = json!(u);
                }
                v
            }
        }
    }

    /// The key a delayed event waits under, and whether this event is the delayed kind
    /// (vacated, removed) or the kind that cancels it (occupied, added).
    fn pair_key(&self) -> Option<(String, Option<String>, bool)> {
        match self {
            Hook::Vacated(c) => Some((c.clone(), None, true)),
            Hook::Occupied(c) => Some((c.clone(), None, false)),
            Hook::MemberRemoved { channel, user } => {
                Some((channel.clone(), Some(user.clone()), true))
            }
            Hook::MemberAdded { channel, user } => {
                Some((channel.clone(), Some(user.clone()), false))
            }
            Hook::ClientEvent { .. } => None,
        }
    }
}

/// An `http://host[:port][/path]` URL: (authority for `Host`, connect address, path).
pub(crate) fn parse_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return None;
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Some((authority.to_owned(), addr, path.to_owned()))
}

/// The queue side: what connections and the API call.
pub(crate) struct Webhooks {
    tx: Option<mpsc::Sender<(Arc<App>, Hook, u64)>>,
    dropped: Arc<AtomicU64>,
    pub(crate) delivered: Arc<AtomicU64>,
    pub(crate) failed: Arc<AtomicU64>,
}

impl Webhooks {
    /// Starts the sender when any app has webhooks.
    pub(crate) fn start(
        config: &PusherConfig,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) -> Webhooks {
        let mut hooks = Webhooks {
            tx: None,
            dropped: Arc::default(),
            delivered: Arc::default(),
            failed: Arc::default(),
        };
        if config.apps.iter().all(|a| a.webhooks.is_empty()) {
            return hooks;
        }
        let (tx, rx) = mpsc::channel(config.webhook_queue);
        hooks.tx = Some(tx);
        let sender = Sender {
            rx,
            delay: Duration::from_millis(config.webhook_delay_ms),
            attempts: config.webhook_attempts,
            stop: stop.clone(),
            tasks: tasks.clone(),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            delivered: hooks.delivered.clone(),
            failed: hooks.failed.clone(),
        };
        tasks.spawn(sender.run());
        hooks
    }

    /// Queues an event; never waits (a full queue drops it and counts).
    pub(crate) fn push(&self, app: &Arc<App>, hook: Hook) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send((app.clone(), hook, now_ms())).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

type Pending = HashMap<(String, String, Option<String>), (Instant, Arc<App>, Hook)>;

struct Sender {
    rx: mpsc::Receiver<(Arc<App>, Hook, u64)>,
    delay: Duration,
    attempts: u32,
    stop: CancellationToken,
    tasks: TaskTracker,
    in_flight: Arc<Semaphore>,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl Sender {
    async fn run(mut self) {
        let mut pending: Pending = HashMap::new();
        loop {
            let next_due = pending.values().map(|(d, _, _)| *d).min();
            let mut ready: Vec<(Arc<App>, Hook)> = Vec::new();
            tokio::select! {
                _ = self.stop.cancelled() => return,
                msg = self.rx.recv() => {
                    let Some(first) = msg else { return };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match self.rx.try_recv() {
                            Ok(m) => batch.push(m),
                            Err(_) => break,
                        }
                    }
                    for (app, hook, _) in batch {
                        self.sort(&mut pending, &mut ready, app, hook);
                    }
                }
                _ = sleep_until_opt(next_due) => {}
            }
            let now = Instant::now();
            let due: Vec<_> = pending
                .iter()
                .filter(|(_, (d, _, _))| *d <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in due {
                if let Some((_, app, hook)) = pending.remove(&k) {
                    ready.push((app, hook));
                }
            }
            self.deliver(ready);
        }
    }

    /// Holds a delayed event, cancels a pair, or passes an event through.
    fn sort(
        &self,
        pending: &mut Pending,
        ready: &mut Vec<(Arc<App>, Hook)>,
        app: Arc<App>,
        hook: Hook,
    ) {
        let Some((channel, user, delayed)) = hook.pair_key() else {
            ready.push((app, hook));
            return;
        };
        let key = (app.config.id.clone(), channel, user);
        if delayed {
            pending.insert(key, (Instant::now() + self.delay, app, hook));
        } else if pending.remove(&key).is_none() {
            ready.push((app, hook));
        }
    }

    /// One POST per app and URL with the events of that app.
    fn deliver(&self, ready: Vec<(Arc<App>, Hook)>) {
        let mut by_app: Vec<(Arc<App>, Vec<serde_json::Value>)> = Vec::new();
        for (app, hook) in ready {
            match by_app.iter_mut().find(|(a, _)| Arc::ptr_eq(a, &app)) {
                Some((_, events)) => events.push(hook.json()),
                None => by_app.push((app, vec![hook.json()])),
            }
        }
        for (app, events) in by_app {
            let body = serde_json::json!({"time_ms": now_ms(), "events": events}).to_string();
            let signature = sign::sign(&app.config.secret, &body);
            let body = Bytes::from(body);
            for url in &app.config.webhooks {
                let Some(target) = parse_url(url) else {
                    continue;
                };
                let post = Post {
                    target,
                    key: app.config.key.clone(),
                    signature: signature.clone(),
                    body: body.clone(),
                };
                let (attempts, stop) = (self.attempts, self.stop.clone());
                let (sem, ok, failed) = (
                    self.in_flight.clone(),
                    self.delivered.clone(),
                    self.failed.clone(),
                );
                self.tasks.spawn(async move {
                    let Ok(_permit) = sem.acquire_owned().await else {
                        return;
                    };
                    if post.send_with_retries(attempts, &stop).await {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

struct Post {
    target: (String, String, String),
    key: String,
    signature: String,
    body: Bytes,
}

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("http: {0}")]
    Http(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] http::Error),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("timed out")]
    Timeout,
}

impl Post {
    async fn send_with_retries(&self, attempts: u32, stop: &CancellationToken) -> bool {
        let mut backoff = Duration::from_secs(1);
        for attempt in 1..=attempts {
            let result = tokio::time::timeout(ATTEMPT_TIMEOUT, self.send())
                .await
                .unwrap_or(Err(PostError::Timeout));
            match result {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(url = %self.target.0, path = %self.target.2, attempt, error = %e, "webhook not delivered");
                }
            }
            if attempt < attempts {
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
        false
    }

    async fn send(&self) -> Result<(), PostError> {
        let (host, addr, path) = &self.target;
        let tcp = tokio::net::TcpStream::connect(addr.as_str())
            .await
            .map_err(PostError::Connect)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .map_err(PostError::Http)?;
        let driver = tokio::spawn(connection);
        let req = http::Request::post(path.as_str())
            .header(http::header::HOST, host.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-pusher-key", self.key.as_str())
            .header("x-pusher-signature", self.signature.as_str())
            .body(Full::new(self.body.clone()))
            .map_err(PostError::Request)?;
        let res = sender.send_request(req).await.map_err(PostError::Http);
        driver.abort();
        let status = res?.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(PostError::Status(status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hooks"),
            Some((
                "127.0.0.1:9000".into(),
                "127.0.0.1:9000".into(),
                "/hooks".into()
            ))
        );
        assert_eq!(
            parse_url("http://example.test"),
            Some(("example.test".into(), "example.test:80".into(), "/".into()))
        );
        for bad in ["https://x/", "ftp://x", "http://", "http://u:p@x/", "x"] {
            assert_eq!(parse_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn event_json() {
        let e = Hook::ClientEvent {
            channel: "private-a".into(),
            event: "client-x".into(),
            data: r#""{\"a\":1}""#.into(),
            socket_id: "1.2".into(),
            user: None,
        };
        assert_eq!(
            e.json(),
            serde_json::json!({"name":"client_event","channel":"private-a","event":"client-x","data":"{\"a\":1}","socket_id":"1.2"})
        );
    }
}
