//! The words sessions, the engine and its counters share: what carries a session
//! ([`TransportKind`]) and why it ended ([`CloseReason`]).

/// The transport a session is on now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// A WebSocket.
    WebSocket,
}

/// Why a session ended. The Socket.IO layer maps these to its disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the transport or sent a close packet.
    TransportClose,
    /// The transport failed (I/O error, protocol violation on the WebSocket).
    TransportError,
    /// The client did not answer a ping in time.
    PingTimeout,
    /// The client sent something that is not Engine.IO.
    InvalidPacket,
    /// The client's outbox overflowed with non-volatile messages.
    SlowClient,
    /// The application closed the session.
    ServerClose,
    /// The server is shutting down.
    ServerShutdown,
}

impl CloseReason {
    /// Every reason, in the order the close counters use.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::TransportClose,
        CloseReason::TransportError,
        CloseReason::PingTimeout,
        CloseReason::InvalidPacket,
        CloseReason::SlowClient,
        CloseReason::ServerClose,
        CloseReason::ServerShutdown,
    ];

    /// Whether the client may come back and recover its state (Socket.IO recovery).
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            CloseReason::TransportClose
                | CloseReason::TransportError
                | CloseReason::PingTimeout
                | CloseReason::ServerShutdown
        )
    }

    /// A deliberate server-side close: a polling client still gets what was queued, then
    /// a close packet. Errors and timeouts end the session at once.
    pub fn is_graceful(self) -> bool {
        matches!(
            self,
            CloseReason::ServerClose | CloseReason::SlowClient | CloseReason::ServerShutdown
        )
    }

    /// The reason as Engine.IO and Socket.IO clients name it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::InvalidPacket => "parse error",
            CloseReason::SlowClient => "slow client",
            CloseReason::ServerClose => "forced close",
            CloseReason::ServerShutdown => "server shutting down",
        }
    }
}
