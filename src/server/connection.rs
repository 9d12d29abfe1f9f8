//! One accepted connection: HTTP/1.1 served with hyper, and the clock that
//! closes it when the client is idle or slow.
//!
//! A connection is in one of three states, each with its own limit:
//! - waiting for a request (fresh, or after an answer on keep-alive):
//!   closed after `idle_timeout` without a byte (a fresh one after
//!   `header_read_timeout`: it has no business being idle yet);
//! - reading a request head: closed `header_read_timeout` after its first
//!   byte;
//! - serving a request: its body must have arrived `body_timeout` after the
//!   head, whatever the route and before any check looks at it
//!   ([`DeadlineBody`]); the handler's own work is bounded elsewhere.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::ListenerLimits;
use crate::shutdown::Shutdown;

/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin while the condition lasts.
pub(super) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A connection about to be served.
pub(super) struct Connection {
    pub(super) router: axum::Router,
    pub(super) peer: SocketAddr,
    pub(super) limits: ListenerLimits,
    /// The listener's: once stopping, idle connections close at once, busy
    /// ones after their answer.
    pub(super) shutdown: Shutdown,
}

impl Connection {
    pub(super) async fn serve(self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let service = hyper::service::service_fn({
            let activity = activity.clone();
            let router = self.router.clone();
            let peer = self.peer;
            let body_timeout = self.limits.body_timeout;
            move |request: http::Request<Incoming>| {
                let in_flight = activity.begin();
                let mut request =
                    request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
                request.extensions_mut().insert(ConnectInfo(peer));
                let router = router.clone();
                async move {
                    let response = router.oneshot(request).await;
                    drop(in_flight);
                    response
                }
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The clock below times heads, idleness and bodies; hyper's own
        // head timer would count idle keep-alive time as head time.
        builder.header_read_timeout(None);
        let connection = builder.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let mut asked_to_stop = self.shutdown.is_stopping();
        if asked_to_stop {
            connection.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                outcome = connection.as_mut() => {
                    if let Err(error) = outcome {
                        tracing::debug!(peer = %self.peer, %error, "connection ended with an error");
                    }
                    return;
                }
                reason = activity.expired(&self.limits) => {
                    tracing::debug!(peer = %self.peer, reason, "connection closed");
                    return;
                }
                () = self.shutdown.stopping(), if !asked_to_stop => {
                    asked_to_stop = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// What the connection's clock looks at.
struct Activity {
    /// Requests being served (more than one only with pipelining).
    in_flight: AtomicUsize,
    /// Whether a byte arrived since the connection last became idle.
    reading: AtomicBool,
    times: Mutex<Times>,
    /// Woken on every state change, so the clock recomputes its deadline.
    changed: Notify,
}

struct Times {
    /// When the connection last had no request in flight.
    idle_since: Instant,
    /// When the first byte after `idle_since` arrived.
    head_started: Instant,
    /// No request was served yet.
    fresh: bool,
}

/// Marks one request in flight; dropping it makes the connection idle again.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            let mut times = activity.times();
            times.idle_since = Instant::now();
            times.fresh = false;
            activity.reading.store(false, Ordering::SeqCst);
        }
        activity.changed.notify_one();
    }
}

impl Activity {
    fn new() -> Activity {
        let now = Instant::now();
        Activity {
            in_flight: AtomicUsize::new(0),
            reading: AtomicBool::new(false),
            times: Mutex::new(Times {
                idle_since: now,
                head_started: now,
                fresh: true,
            }),
            changed: Notify::new(),
        }
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if !self.reading.swap(true, Ordering::SeqCst) {
            self.times().head_started = Instant::now();
            self.changed.notify_one();
        }
    }

    /// When the connection must be closed if nothing changes, and why;
    /// `None` while a request is being served.
    fn deadline(&self, limits: &ListenerLimits) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let times = self.times();
        Some(if self.reading.load(Ordering::SeqCst) {
            (
                times.head_started + limits.header_read_timeout,
                "the request head did not arrive within webhooks.header_read_timeout_seconds",
            )
        } else if times.fresh {
            (
                times.idle_since + limits.header_read_timeout,
                "no request arrived within webhooks.header_read_timeout_seconds of connecting",
            )
        } else {
            (
                times.idle_since + limits.idle_timeout,
                "idle longer than webhooks.idle_timeout_seconds",
            )
        })
    }

    /// Resolves when the connection has been idle or slow for too long.
    async fn expired(&self, limits: &ListenerLimits) -> &'static str {
        loop {
            match self.deadline(limits) {
                Some((deadline, reason)) if deadline <= Instant::now() => return reason,
                Some((deadline, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let outcome = Pin::new(&mut self.inner).poll_read(context, buffer);
        if buffer.filled().len() > before {
            self.activity.bytes_read();
        }
        outcome
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buffer)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

/// Reading a request body failed because it did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {} s", .0.as_secs())]
pub struct BodyTimedOut(pub Duration);

/// A request body that fails with [`BodyTimedOut`] once its deadline (set
/// when the head arrived) has passed.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> DeadlineBody {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(context) {
            return Poll::Ready(frame.map(|frame| frame.map_err(axum::BoxError::from)));
        }
        if this.deadline.as_mut().poll(context).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}
