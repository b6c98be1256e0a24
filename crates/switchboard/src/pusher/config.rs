//! The `[pusher]` table: the apps (credentials and flags) and the protocol's limits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the Pusher Channels protocol. No app configured: `/app/{key}` and
/// `/apps/...` are not served (404).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// Seconds of silence after which a client pings (sent to it at connection).
    pub activity_timeout_secs: u64,
    /// A client silent this long after the server's `pusher:ping` is closed (4201).
    pub pong_timeout_secs: u64,
    /// Largest event `data` accepted, from a client event or the HTTP API, in bytes.
    pub max_event_bytes: usize,
    /// Client events per second one connection may send (Pusher: 10); over it an event
    /// is refused with `pusher:error` 4301.
    pub client_events_per_sec: u32,
    /// Webhook events queued before new ones are dropped (and counted).
    pub webhook_queue: usize,
    /// `channel_vacated` and `member_removed` wait this long; a re-occupation or re-join
    /// within it cancels both (as Pusher does, so a page reload sends nothing).
    pub webhook_delay_ms: u64,
    /// Attempts per webhook batch (the first included), with doubling backoff from 1 s.
    pub webhook_attempts: u32,
    /// The apps. `SWITCHBOARD_PUSHER_APP_ID`, `_KEY` and `_SECRET` add (or replace, by id)
    /// one app from the environment.
    pub apps: Vec<PusherApp>,
}

impl Default for PusherConfig {
    fn default() -> Self {
        PusherConfig {
            activity_timeout_secs: 120,
            pong_timeout_secs: 30,
            max_event_bytes: 10_240,
            client_events_per_sec: 10,
            webhook_queue: 10_000,
            webhook_delay_ms: 3000,
            webhook_attempts: 5,
            apps: Vec::new(),
        }
    }
}

/// One Pusher app: the credentials its clients and server SDK use, and its flags.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PusherApp {
    /// The app id of the HTTP API's paths (`/apps/{id}/...`).
    pub id: String,
    /// The public key clients connect with (`/app/{key}`).
    pub key: String,
    /// The secret that signs channel authorizations, API requests and webhooks.
    pub secret: String,
    /// Clients may send `client-*` events on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
    /// Connections must sign in (`pusher:signin`) within 30 s or are closed (4009).
    #[serde(default)]
    pub user_authentication: bool,
    /// A disabled app refuses connections (4003) and API calls (403).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Webhook URLs (`http://` only) that receive this app's events.
    #[serde(default)]
    pub webhooks: Vec<String>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for PusherApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PusherApp")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("client_events", &self.client_events)
            .field("user_authentication", &self.user_authentication)
            .field("enabled", &self.enabled)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

/// The environment variables of the one app configured from the environment.
pub(crate) const ENV_APP: [&str; 3] = [
    "SWITCHBOARD_PUSHER_APP_ID",
    "SWITCHBOARD_PUSHER_KEY",
    "SWITCHBOARD_PUSHER_SECRET",
];

impl PusherConfig {
    /// The client's activity timeout.
    pub(crate) fn activity_timeout(&self) -> Duration {
        Duration::from_secs(self.activity_timeout_secs)
    }

    /// The pong timeout.
    pub(crate) fn pong_timeout(&self) -> Duration {
        Duration::from_secs(self.pong_timeout_secs)
    }

    /// Why this config is not usable, naming the setting.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if !(1..=3600).contains(&self.activity_timeout_secs) {
            return Some((
                "pusher.activity_timeout_secs",
                "must be between 1 and 3600".into(),
            ));
        }
        if !(1..=600).contains(&self.pong_timeout_secs) {
            return Some((
                "pusher.pong_timeout_secs",
                "must be between 1 and 600".into(),
            ));
        }
        if !(256..=1_000_000).contains(&self.max_event_bytes) {
            return Some((
                "pusher.max_event_bytes",
                "must be between 256 and 1000000".into(),
            ));
        }
        if self.webhook_queue < 16 {
            return Some(("pusher.webhook_queue", "must be at least 16".into()));
        }
        if !(1..=20).contains(&self.webhook_attempts) {
            return Some(("pusher.webhook_attempts", "must be between 1 and 20".into()));
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        for (i, app) in self.apps.iter().enumerate() {
            if !token(&app.id) || !token(&app.key) {
                return Some((
                    "pusher.apps",
                    format!(
                        "app {i}: id and key must be 1 to 100 letters, digits, '-', '_' or '.'"
                    ),
                ));
            }
            if app.secret.len() < 8 {
                return Some((
                    "pusher.apps",
                    format!("app {:?}: secret must be at least 8 bytes", app.id),
                ));
            }
            if let Some(url) = app
                .webhooks
                .iter()
                .find(|u| super::webhook::parse_url(u).is_none())
            {
                return Some((
                    "pusher.apps",
                    format!(
                        "app {:?}: webhook {url:?} must be an http://host[:port][/path] URL \
                         (https is not built in: put a TLS proxy in front)",
                        app.id
                    ),
                ));
            }
            let dup = self.apps[..i]
                .iter()
                .any(|a| a.id == app.id || a.key == app.key);
            if dup {
                return Some((
                    "pusher.apps",
                    format!("app {:?}: another app has the same id or key", app.id),
                ));
            }
        }
        None
    }

    /// Adds (or replaces, by id) the app given in the environment; all three variables
    /// or none.
    pub(crate) fn env_app(
        env: &std::collections::HashMap<String, String>,
    ) -> Result<Option<PusherApp>, String> {
        let values: Vec<Option<&String>> = ENV_APP.iter().map(|k| env.get(*k)).collect();
        match values.as_slice() {
            [None, None, None] => Ok(None),
            [Some(id), Some(key), Some(secret)] => Ok(Some(PusherApp {
                id: (*id).clone(),
                key: (*key).clone(),
                secret: (*secret).clone(),
                client_events: env
                    .get("SWITCHBOARD_PUSHER_CLIENT_EVENTS")
                    .is_some_and(|v| matches!(v.trim(), "true" | "1" | "yes" | "on")),
                user_authentication: false,
                enabled: true,
                webhooks: env
                    .get("SWITCHBOARD_PUSHER_WEBHOOKS")
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default(),
            })),
            _ => Err(format!("set all of {} or none", ENV_APP.join(", "))),
        }
    }
}
