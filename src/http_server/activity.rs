//! What one HTTP connection is doing, and when it has been at it too long.
//!
//! A connection is reading a request head (from its first byte, or from the
//! accept for a new connection), handling requests (a handler runs or a
//! response, such as an event stream, is being sent), or idle between
//! requests. [`Watched`] sees the bytes arrive, [`Tracked`] sees requests start
//! and their responses end, and [`Activity::expired`] fires when a head took
//! longer than the header timeout or an idle spell longer than the idle
//! timeout. Handling has no limit here: event streams last for hours.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, header};
use axum::routing::future::RouteFuture;
use hyper::body::{Frame, Incoming, SizeHint};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// The state of one connection, shared by its reader, its requests and its task.
#[derive(Debug)]
pub struct Activity {
    phase: Mutex<Phase>,
    /// Set once a request reached the router.
    requested: AtomicBool,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Cancelled when the server stops: each response then closes its connection.
    stop: CancellationToken,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// A request head is being read, since then.
    Head(Instant),
    /// This many requests are being handled or answered.
    Busy(usize),
    /// No request since then.
    Idle(Instant),
}

impl Activity {
    /// A connection just accepted: it is expected to send a request head.
    pub fn new(
        header_timeout: Duration,
        idle_timeout: Duration,
        stop: CancellationToken,
    ) -> Arc<Activity> {
        Arc::new(Activity {
            phase: Mutex::new(Phase::Head(Instant::now())),
            requested: AtomicBool::new(false),
            header_timeout,
            idle_timeout,
            stop,
        })
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        // The phase is a plain value, valid whatever a panicking holder did.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_arrived(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }

    /// Whether a request has reached the router on this connection.
    pub fn has_requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    fn request_started(self: &Arc<Activity>) -> RequestGuard {
        self.requested.store(true, Ordering::Relaxed);
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(open) => Phase::Busy(open + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
        drop(phase);
        RequestGuard(Arc::clone(self))
    }

    fn request_ended(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(open) if open > 1 => Phase::Busy(open - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.phase() {
            // A timeout too long to add is one that never ends.
            Phase::Head(since) => since.checked_add(self.header_timeout),
            Phase::Idle(since) => since.checked_add(self.idle_timeout),
            Phase::Busy(_) => None,
        }
    }

    /// Completes once the connection has spent too long on a request head, or idle.
    ///
    /// Nobody wakes it when the phase changes (that would be a wake-up of the
    /// connection's task, and a timer reset, per request): it looks again at
    /// least every `recheck`, the shorter of the two timeouts. That is soon
    /// enough, because a phase that begins after a look ends no sooner than
    /// that long after it.
    pub async fn expired(&self) {
        let recheck = self.header_timeout.min(self.idle_timeout);
        loop {
            let now = Instant::now();
            // A timeout too long to add is one that never ends.
            let next_look = now.checked_add(recheck);
            let wake = match self.deadline() {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => Some(next_look.map_or(deadline, |look| look.min(deadline))),
                None => next_look,
            };
            match wake {
                Some(wake) => sleep_until(wake).await,
                None => std::future::pending().await,
            }
        }
    }
}

/// Held from the moment a request reaches the router until its response ends.
#[derive(Debug)]
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// How long a closing connection reads and discards what the client still
/// sends (the rest of a refused body), so that its answer is not lost to a reset.
const LINGER: Duration = Duration::from_secs(1);

pin_project! {
    /// A connection's socket, reporting arriving bytes to its [`Activity`].
    pub struct Watched<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
        lingering: Option<Pin<Box<Sleep>>>,
    }
}

impl<I> Watched<I> {
    /// Watches reads on `io`.
    pub fn new(io: I, activity: Arc<Activity>) -> Watched<I> {
        Watched {
            io,
            activity,
            lingering: None,
        }
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        ready!(this.io.poll_read(cx, buf))?;
        if buf.filled().len() > before {
            this.activity.bytes_arrived();
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        ready!(this.io.as_mut().poll_shutdown(cx))?;
        let lingering = this
            .lingering
            .get_or_insert_with(|| Box::pin(sleep(LINGER)));
        let mut discard = [0u8; 4096];
        loop {
            if lingering.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut discard);
            match this.io.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                // The client closed its side too, or the socket failed.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The router, reporting each request and the end of its response to an
/// [`Activity`]; once the server stops, each response closes its connection.
#[derive(Debug, Clone)]
pub struct Tracked {
    app: Router,
    activity: Arc<Activity>,
}

impl Tracked {
    /// Serves `app`, reporting to `activity`.
    pub fn new(app: Router, activity: Arc<Activity>) -> Tracked {
        Tracked { app, activity }
    }
}

impl Service<Request<Incoming>> for Tracked {
    type Response = Response<Tracking>;
    type Error = Infallible;
    type Future = Handling;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Handling {
        Handling {
            guard: Some(self.activity.request_started()),
            handler: self.app.call(request),
        }
    }
}

pin_project! {
    /// A request being handled; its guard moves into the response body.
    pub struct Handling {
        #[pin]
        handler: RouteFuture<Infallible>,
        // Holds the connection's activity, which knows whether the server stops
        // (one reference count per request, where a token's clone takes a lock).
        guard: Option<RequestGuard>,
    }
}

impl Future for Handling {
    type Output = Result<Response<Tracking>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.handler.poll(cx))?;
        let guard = this.guard.take();
        if guard
            .as_ref()
            .is_some_and(|guard| guard.0.stop.is_cancelled())
        {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response.map(|body| Tracking { body, guard })))
    }
}

pin_project! {
    /// A response body that ends its request when its last frame is taken (or
    /// when it is dropped unfinished).
    pub struct Tracking {
        #[pin]
        body: Body,
        guard: Option<RequestGuard>,
    }
}

impl HttpBody for Tracking {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = ready!(this.body.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
