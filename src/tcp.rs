//! The TCP listener: accepts clients, tunes their sockets, and spawns one
//! connection task each (over TLS when configured) until shutdown. With no
//! descriptor left, it still answers: a spare one lets it accept a waiting
//! client and refuse it with `bye` `server_full`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::connection;
use crate::directory::Directory;
use crate::protocol::{ByeReason, HubFrame};
use crate::registry::Registry;
use crate::tls;

/// Idle time before the first keepalive probe.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// Time between unanswered keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Pause after an accept error such as running out of file descriptors, so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Shortest time between two logged accept errors.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// What the spare descriptor holds open.
const SPARE_PATH: &str = "/dev/null";

/// Accepts connections until `stop` is cancelled, then drops the listener.
pub async fn accept_loop(
    listener: TcpListener,
    directory: Directory,
    tls: Option<TlsAcceptor>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let mut spare = Spare::open();
    let mut errors = ErrorLog::default();
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
                    None => tasks.spawn(connection::serve(directory.clone(), socket, peer)),
                    Some(acceptor) => tasks.spawn(tls::serve_client(
                        directory.clone(),
                        acceptor.clone(),
                        socket,
                        peer,
                    )),
                };
            }
            Err(err) => {
                let spared = if out_of_descriptors(&err) {
                    spare.refuse_one(&listener, directory.registry(), tls.is_none())
                } else {
                    Spared::NotTried
                };
                // Out of descriptors, accept fails even with no client waiting:
                // then nothing failed, and the runtime now waits for the next one.
                if spared == Spared::NothingWaiting {
                    continue;
                }
                directory.registry().metrics().accept_errors.inc();
                errors.report(&err, Instant::now());
                if spared == Spared::NotTried {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

/// Whether an accept failed for want of a file descriptor.
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// A descriptor held in reserve so that, with none left, the hub can still
/// accept a waiting connection and tell it `bye` `server_full` instead of
/// leaving it in the listen queue with no answer.
struct Spare(Option<File>);

impl Spare {
    fn open() -> Spare {
        Spare(File::open(SPARE_PATH).ok())
    }

    /// Frees the spare, accepts one waiting connection, refuses it and takes
    /// the spare back.
    fn refuse_one(&mut self, listener: &TcpListener, registry: &Registry, plain: bool) -> Spared {
        if self.0.take().is_none() {
            *self = Spare::open();
            return Spared::NotTried;
        }
        // Completes at once when a client is waiting; otherwise the runtime
        // learns the listener is not ready and waits for the next one.
        let spared = match listener.accept().now_or_never() {
            Some(Ok((socket, peer))) => {
                registry.count_refused_full();
                debug!(%peer, "no descriptor left: connection refused");
                if plain {
                    say_server_full(socket);
                }
                Spared::Refused
            }
            Some(Err(_)) => Spared::NotTried,
            None => Spared::NothingWaiting,
        };
        *self = Spare::open();
        spared
    }
}

/// What the spare descriptor was used for.
#[derive(Debug, PartialEq, Eq)]
enum Spared {
    /// A waiting client was accepted and refused.
    Refused,
    /// No client was waiting.
    NothingWaiting,
    /// There was no spare, or even with it the accept failed.
    NotTried,
}

/// Writes `bye` `server_full` to a fresh connection and closes it. Whatever
/// the client already sent is read first: closing with unread input would reset
/// the connection and could discard the `bye` before the client reads it.
/// A TLS client gets no `bye`: that would need a handshake.
fn say_server_full(socket: TcpStream) {
    // Plain socket calls: the runtime would report a socket it has not polled
    // yet as not ready.
    let Ok(mut socket) = socket.into_std() else {
        return;
    };
    let bye = HubFrame::Bye {
        reason: ByeReason::ServerFull,
    }
    .encode();
    // A fresh socket's send buffer is empty: the line goes out whole.
    let _ = socket.write(&bye);
    let mut sink = [0u8; 1024];
    while matches!(socket.read(&mut sink), Ok(n) if n > 0) {}
    let _ = socket.shutdown(Shutdown::Write);
}

/// Logs accept errors at most once per [`ERROR_LOG_INTERVAL`], with the count
/// of those left out since the last line, so running out of descriptors does
/// not flood the log.
#[derive(Debug, Default)]
struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    /// Logs `err` unless a line went out less than an interval ago; true if logged.
    fn report(&mut self, err: &io::Error, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return false;
        }
        warn!(%err, suppressed = self.suppressed, "accept failed");
        self.last = Some(now);
        self.suppressed = 0;
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_at_most_once_a_second_with_the_count_left_out() {
        let mut log = ErrorLog::default();
        let err = io::Error::from_raw_os_error(libc::EMFILE);
        let start = Instant::now();
        assert!(log.report(&err, start));
        for ms in [1, 500, 999] {
            assert!(!log.report(&err, start + Duration::from_millis(ms)));
        }
        assert_eq!(log.suppressed, 3);
        assert!(log.report(&err, start + Duration::from_millis(1000)));
        assert_eq!(log.suppressed, 0);
    }

    #[test]
    fn only_emfile_and_enfile_mean_out_of_descriptors() {
        for (code, out) in [
            (libc::EMFILE, true),
            (libc::ENFILE, true),
            (libc::ECONNABORTED, false),
            (libc::ENOBUFS, false),
        ] {
            assert_eq!(out_of_descriptors(&io::Error::from_raw_os_error(code)), out);
        }
    }
}
