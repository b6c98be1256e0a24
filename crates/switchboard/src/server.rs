//! Accepting connections and shutting down: `run(listener, app, shutdown)`.
//!
//! Owns the accept loop and the drain. Knows nothing of protocols: each connection is
//! HTTP/1 with upgrades, routed by the app's [`axum::Router`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use engineio::RemoteAddr;
use engineio::outbox::{ConnectionWire, Wire, WireIo};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::App;

/// Binds `addr` with a listen backlog of `backlog` (tokio's own `bind` asks for 128,
/// which a burst of connections overflows while the accept loop is busy).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As `TcpListener::bind` does: a restarted server can bind while old connections
    // linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes every client session
/// (reason: server shutting down) and waits up to `grace` for connections to drain.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let stop = CancellationToken::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = app.router.clone();
        match &app.tls {
            None if app.direct_writes => {
                let (http, stop) = (http.clone(), stop.clone());
                app.tasks.spawn(async move {
                    // Transports write straight to the stream (`engineio::outbox`): an SSE
                    // response's events, a WebSocket's frames after the upgrade. Made in
                    // the connection's task, not the accept loop: these live as long as
                    // the connection, and allocated on the accept loop's thread between
                    // the short-lived task cells they would leave holes the allocator
                    // keeps (measured: ~0.8 KB of RSS per idle client).
                    let wire = Arc::new(Wire::new(stream, 0));
                    let io = WireIo::new(wire.clone(), bytes::Bytes::new());
                    let conn_wire = Some(ConnectionWire(wire));
                    serve_connection(http, io, router, addr, stop, conn_wire).await;
                });
            }
            None => {
                app.tasks.spawn(serve_connection(
                    http.clone(),
                    stream,
                    router,
                    addr,
                    stop.clone(),
                    None,
                ));
            }
            Some(tls) => {
                // The handshake runs in the connection's task (a slow client never holds
                // up the accept loop), with the certificate current at accept time.
                let acceptor = tls.acceptor();
                let (http, stop) = (http.clone(), stop.clone());
                app.tasks.spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = tokio::select! {
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(peer = %addr, "TLS handshake timed out");
                                return;
                            }
                        },
                        _ = stop.cancelled() => return,
                    };
                    serve_connection(http, stream, router, addr, stop, None).await;
                });
            }
        }
    }
    tracing::info!("shutting down: closing client sessions");
    drop(listener);
    app.close_sessions();
    app.tasks.close();
    let drained = tokio::time::timeout(grace, async {
        stop.cancel();
        app.tasks.wait().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "grace period over; closing remaining connections"
        ),
    }
}

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One HTTP/1 connection (with upgrades) until it ends or, after `stop`, until its
/// request in flight is answered.
async fn serve_connection<I>(
    http: hyper::server::conn::http1::Builder,
    io: I,
    router: axum::Router,
    addr: SocketAddr,
    stop: CancellationToken,
    wire: Option<ConnectionWire>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http
        .serve_connection(TokioIo::new(io), service(router, addr, wire))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            // Finish the request in flight, then close the keep-alive connection.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::trace!(error = %e, "connection ended with an error");
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Serves `app` like [`run`] until SIGINT/SIGTERM, reloading its TLS certificate on
/// SIGHUP meanwhile (`main` calls this).
pub async fn run_until_signalled(listener: TcpListener, app: App, grace: Duration) {
    let reload = tokio::spawn(crate::tls::reload_on_sighup(app.tls.clone()));
    run(listener, app, shutdown_signal(), grace).await;
    reload.abort();
}

type Reply = futures_util::future::BoxFuture<
    'static,
    Result<axum::response::Response, std::convert::Infallible>,
>;

/// The router as a hyper service that also records the peer address.
fn service(
    router: axum::Router,
    addr: SocketAddr,
    wire: Option<ConnectionWire>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = Reply,
> {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| -> Reply {
        req.extensions_mut().insert(RemoteAddr(addr));
        if let Some(wire) = &wire {
            req.extensions_mut().insert(wire.clone());
        }
        let router = router.clone();
        Box::pin(async move { router.oneshot(req.map(axum::body::Body::new)).await })
    })
}
