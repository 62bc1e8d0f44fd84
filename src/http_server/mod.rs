//! The HTTP server under the API: accepts connections (over TLS when
//! configured), caps them, times out slow request heads and idle keep-alive
//! connections, and ends in bounded time.
//!
//! It runs on the control plane's thread ([`crate::control_plane`]), so API
//! requests never wait in a run queue behind busy TCP connection tasks. Past
//! `--max-http-connections`, new connections are closed at once (before any
//! TLS handshake): answering them would cost the memory the cap protects.
//!
//! Shutdown comes in two steps. [`HttpServer::stop`] asks every connection to
//! close once its current response is sent (the listener stays open, so probes
//! still get an answer); [`HttpServer::cut`] closes whatever is still open:
//! stalled event streams, half-sent requests, slow readers.

mod activity;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::config::Config;
use crate::tls::HANDSHAKE_TIMEOUT;
use activity::{Activity, Tracked, Watched};

/// Largest read or write buffer of one connection: request heads must fit, and
/// bodies stream through it. hyper's default (about 400 KiB) lets a few
/// thousand connections take gigabytes.
const MAX_BUF_BYTES: usize = 16 * 1024;
/// Pause after an accept error (such as running out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a client may take to send a request head (a new connection: its first one).
    pub header_timeout: Duration,
    /// Longest a keep-alive connection may stay idle between requests.
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits `config` sets.
    pub fn of(config: &Config) -> Limits {
        Limits {
            header_timeout: config.http_header_timeout,
            idle_timeout: config.http_idle_timeout,
            max_connections: config.max_http_connections,
        }
    }
}

/// A running HTTP server; dropping it cuts every connection.
#[derive(Debug)]
pub struct HttpServer {
    stop: CancellationToken,
    cut: CancellationToken,
    done: oneshot::Receiver<usize>,
    /// How many connections the cut closed, once the server has ended.
    ended: Option<usize>,
}

impl HttpServer {
    /// Serves `app` on `listener` from the runtime of `control`.
    pub fn start(
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        app: Router,
        limits: Limits,
        control: &Handle,
    ) -> io::Result<HttpServer> {
        // The listener moves to the control plane's runtime: a tokio socket
        // belongs to the runtime that registered it.
        let listener = {
            let _entered = control.enter();
            TcpListener::from_std(listener.into_std()?)?
        };
        let (stop, cut) = (CancellationToken::new(), CancellationToken::new());
        let (report, done) = oneshot::channel();
        let mut builder = http1::Builder::new();
        builder.max_buf_size(MAX_BUF_BYTES).writev(true);
        let shared = Arc::new(Shared {
            app,
            builder,
            limits,
            stop: stop.clone(),
            cut: cut.clone(),
            cut_short: AtomicUsize::new(0),
        });
        control.spawn(async move {
            let cut_short = accept_loop(listener, tls, shared).await;
            let _ = report.send(cut_short);
        });
        Ok(HttpServer {
            stop,
            cut,
            done,
            ended: None,
        })
    }

    /// Lets every connection finish its current response, then close; new
    /// connections are still accepted, for one request each.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until every connection has closed (after [`HttpServer::stop`]),
    /// or `deadline`: true when they all closed.
    pub async fn closed_by(&mut self, deadline: Instant) -> io::Result<bool> {
        if self.ended.is_none() {
            match timeout_at(deadline, &mut self.done).await {
                Ok(ended) => self.ended = Some(ended.map_err(ended_unreported)?),
                Err(_) => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Closes every connection still open and the listener; returns how many
    /// connections were cut short.
    pub async fn cut(mut self) -> io::Result<usize> {
        self.cut.cancel();
        match self.ended {
            Some(cut_short) => Ok(cut_short),
            None => (&mut self.done).await.map_err(ended_unreported),
        }
    }
}

fn ended_unreported(_: oneshot::error::RecvError) -> io::Error {
    io::Error::other("the HTTP server ended without a report")
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.cut.cancel();
    }
}

/// What every connection of one server shares.
struct Shared {
    app: Router,
    builder: http1::Builder,
    limits: Limits,
    stop: CancellationToken,
    cut: CancellationToken,
    /// Connections closed by the cut.
    cut_short: AtomicUsize,
}

/// Accepts connections until the cut, or until stopped and every connection
/// closed; returns how many connections the cut closed.
async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
) -> usize {
    let permits = Arc::new(Semaphore::new(
        shared.limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let connections = TaskTracker::new();
    let all_closed = {
        let (connections, stop) = (connections.clone(), shared.stop.clone());
        async move {
            stop.cancelled().await;
            connections.close();
            connections.wait().await;
        }
    };
    tokio::pin!(all_closed);
    loop {
        let (socket, peer) = tokio::select! {
            biased;
            () = shared.cut.cancelled() => break,
            () = &mut all_closed => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    warn!(%err, "HTTP accept failed");
                    sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            debug!(%peer, "HTTP connection refused: --max-http-connections are open");
            continue;
        };
        send_without_delay(&socket);
        let (tls, shared) = (tls.clone(), Arc::clone(&shared));
        connections.spawn(async move {
            serve_connection(socket, peer, tls, &shared).await;
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    shared.cut_short.load(Ordering::Relaxed)
}

async fn serve_connection(
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: &Shared,
) {
    let Some(acceptor) = tls else {
        return serve_http(socket, peer, shared).await;
    };
    let handshake = tokio::select! {
        () = shared.cut.cancelled() => return,
        handshake = timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)) => handshake,
    };
    match handshake {
        Ok(Ok(stream)) => serve_http(stream, peer, shared).await,
        Ok(Err(err)) => debug!(%peer, %err, "HTTP TLS handshake failed"),
        Err(_) => debug!(%peer, "HTTP TLS handshake timed out"),
    }
}

/// Serves HTTP/1.1 on one connection until it closes, times out, or is cut.
async fn serve_http<I>(io: I, peer: SocketAddr, shared: &Shared)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let activity = Activity::new(
        limits.header_timeout,
        limits.idle_timeout,
        shared.stop.clone(),
    );
    let service = TowerToHyperService::new(Tracked::new(shared.app.clone(), Arc::clone(&activity)));
    let io = TokioIo::new(Watched::new(io, Arc::clone(&activity)));
    let connection = shared.builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            () = shared.cut.cancelled() => {
                shared.cut_short.fetch_add(1, Ordering::Relaxed);
                return;
            }
            served = connection.as_mut() => {
                if let Err(err) = served {
                    debug!(%peer, %err, "HTTP connection failed");
                }
                return;
            }
            () = activity.expired() => {
                return debug!(%peer, "HTTP connection timed out (request head or idle)");
            }
            () = shared.stop.cancelled(), if !stopping => {
                stopping = true;
                // hyper closes a connection that has sent nothing yet at once;
                // that one gets its answer first, with `connection: close`.
                if activity.has_requested() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// HTTP answers and event streams leave as soon as they are written: Nagle's
/// algorithm would hold a small write back until the previous one is acknowledged.
fn send_without_delay(socket: &TcpStream) {
    // A socket that refuses the option still works, only with Nagle's delay.
    let _ = socket.set_nodelay(true);
}
