//! The HTTP listeners: public (webhooks) and admin (health, metrics, /admin).
//!
//! The public listener faces the internet (behind a reverse proxy): it only
//! stores what arrives, durably, and wakes the sync engine. Nothing a caller
//! posts is trusted: webhooks are hints that the engine verifies by
//! re-fetching from the API.
//!
//! Both listeners go through `serve_with_peers`, the one place that holds
//! a connection to account: slow and idle clients are closed, and no more
//! than `max_connections` are served at once (see [`ListenerLimits`]).

pub mod admin;
mod connection;
pub mod public;

use std::io;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::shutdown::Shutdown;

pub use crate::config::ListenerLimits;
pub use connection::BodyTimedOut;

/// Serves `router` on `listener`, with each request's peer address (both
/// listeners check it), until `shutdown` is stopping; then closes idle
/// connections and waits for the requests in flight (until the cut-off,
/// which drops them).
///
/// At `max_connections` the listener stops accepting: new clients wait in
/// the kernel's backlog until a connection ends, and idle or slow ones end
/// within their timeouts, so a legitimate sender gets its turn.
async fn serve_with_peers(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: Shutdown,
    limits: ListenerLimits,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the connection slots are never closed"),
            () = shutdown.stopping() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before
                    // accept: not a reason to stop serving the others.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(connection::ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.stopping() => break,
        };
        let connection = connection::Connection {
            router: router.clone(),
            peer,
            limits: limits.clone(),
            shutdown: shutdown.clone(),
        };
        // A connection holds its slot until it ends, or is dropped at the
        // cut-off.
        shutdown.spawn(&connections, async move {
            connection.serve(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
