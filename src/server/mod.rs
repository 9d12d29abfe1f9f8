//! The HTTP listeners: public (webhooks) and admin (health, metrics, /admin).
//!
//! The public listener faces the internet (behind a reverse proxy): it only
//! stores what arrives, durably, and wakes the sync engine. Nothing a caller
//! posts is trusted: webhooks are hints that the engine verifies by
//! re-fetching from the API.

pub mod admin;
pub mod public;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

/// Serves `router` on `listener`, with each request's peer address (both
/// listeners check it), until `shutdown` resolves; then waits for the
/// requests in flight.
async fn serve_with_peers(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
