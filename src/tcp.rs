//! The TCP listener: accepts clients, tunes their sockets, and spawns one
//! connection task each (over TLS when configured) until shutdown.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection;
use crate::registry::Registry;
use crate::tls;

/// Idle time before the first keepalive probe.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// Time between unanswered keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error such as running out of file descriptors, so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `stop` is cancelled, then drops the listener.
pub async fn accept_loop(
    listener: TcpListener,
    registry: Registry,
    tls: Option<TlsAcceptor>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, peer)) => {
                if let Err(err) = tune(&socket) {
                    debug!(%peer, %err, "could not tune client socket");
                }
                match &tls {
                    None => tasks.spawn(connection::serve(registry.clone(), socket, peer)),
                    Some(acceptor) => tasks.spawn(tls::serve_client(
                        registry.clone(),
                        acceptor.clone(),
                        socket,
                        peer,
                    )),
                };
            }
            Err(err) => {
                warn!(%err, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// No Nagle delay (pushes are latency-sensitive), and keepalive so that dead
/// peers are noticed even when the hub has nothing to send.
fn tune(socket: &TcpStream) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    SockRef::from(socket).set_tcp_keepalive(&keepalive)
}
