//! A minimal Pusher protocol 7 client for the idle scenario: connect to `/app/{key}`,
//! subscribe to one public channel, then only answer `pusher:ping`.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::sio::Target;

/// Why a Pusher client failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PusherError {
    #[error("tcp connect: {0}")]
    Tcp(#[source] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("connection closed")]
    Closed,
    #[error("refused: {0}")]
    Refused(String),
}

impl PusherError {
    /// A short stable label, for counting failures by cause.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Ws(_) => "websocket",
            Self::Closed => "closed",
            Self::Refused(_) => "refused",
        }
    }
}

/// One connected, subscribed client.
pub(crate) struct PusherClient {
    ws: WebSocketStream<TcpStream>,
    /// `pusher:ping`s answered.
    pub pongs: u64,
}

impl PusherClient {
    /// Connects (from `source`, see [`crate::sio::Sources`]) with app `key` and subscribes
    /// to the public `channel`.
    pub(crate) async fn connect(
        target: &Target,
        source: Option<std::net::IpAddr>,
        key: &str,
        channel: &str,
    ) -> Result<Self, PusherError> {
        let tcp = crate::sio::target::tcp_connect(target.addr, source)
            .await
            .map_err(PusherError::Tcp)?;
        let url = format!(
            "ws://{}/app/{key}?protocol=7&client=bench&version=1",
            target.addr
        );
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await?;
        let mut c = Self { ws, pongs: 0 };
        c.until("pusher:connection_established").await?;
        let sub = serde_json::json!({"event": "pusher:subscribe", "data": {"channel": channel}});
        c.ws.send(Message::text(sub.to_string())).await?;
        c.until("pusher_internal:subscription_succeeded").await?;
        Ok(c)
    }

    /// Reads until `event`, answering pings; an error or a subscription error fails.
    async fn until(&mut self, event: &str) -> Result<(), PusherError> {
        loop {
            let e = self.recv().await?;
            if e == event {
                return Ok(());
            }
            if e == "pusher:error" || e == "pusher:subscription_error" {
                return Err(PusherError::Refused(e));
            }
        }
    }

    /// The next event's name (pings are answered on the way).
    pub(crate) async fn recv(&mut self) -> Result<String, PusherError> {
        loop {
            let text = match self.ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => return Err(PusherError::Closed),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
            };
            let event = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_default();
            if event == "pusher:ping" {
                self.ws
                    .send(Message::text(r#"{"event":"pusher:pong","data":{}}"#))
                    .await?;
                self.pongs += 1;
                continue;
            }
            return Ok(event);
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
