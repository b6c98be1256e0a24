//! Accepting connections and shutting down: `run(listener, app, shutdown)`.
//!
//! Owns the accept loop and the drain. Knows nothing of protocols: each connection is
//! HTTP/1 with upgrades, routed by the app's [`axum::Router`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use engineio::RemoteAddr;
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
        let conn = http
            .serve_connection(TokioIo::new(stream), service(app.router.clone(), addr))
            .with_upgrades();
        let stop = stop.clone();
        app.tasks.spawn(async move {
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
        });
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

type Reply = futures_util::future::BoxFuture<
    'static,
    Result<axum::response::Response, std::convert::Infallible>,
>;

/// The router as a hyper service that also records the peer address.
fn service(
    router: axum::Router,
    addr: SocketAddr,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = Reply,
> {
    hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| -> Reply {
        req.extensions_mut().insert(RemoteAddr(addr));
        let router = router.clone();
        Box::pin(async move { router.oneshot(req.map(axum::body::Body::new)).await })
    })
}
