//! One task per TCP connection: it reads and answers the client's frames and
//! flushes whatever the client's outbox could not write at once.
//!
//! While a client is idle its task holds no buffer: reads go through a stack
//! buffer and only the unfinished tail of a frame is kept. Every way the hub ends
//! a connection (kick, rename, full queue, idle, shutdown, oversize frame) is a
//! `bye` queued on the outbox, so this task has one way out: flush, within the
//! grace period, then close.
//!
//! Reading is bounded twice: after [`READS_PER_WAKE`] reads the task yields to
//! the others on its worker, and a client past its rate (see [`crate::throttle`])
//! is not read again until the rate allows, holding a timer only meanwhile.

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::future::Either;
use serde_json::Value;
use socket2::SockRef;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep_until, timeout_at};
use tracing::{debug, info};

use crate::codec::{Decoded, FrameDecoder};
use crate::directory::{Claiming, Directory};
use crate::groups::{self, GroupChange, GroupClaim, GroupsError};
use crate::protocol::{
    ByeReason, ClientFrame, ErrorCode, FrameError, HubFrame, PONG_LINE, validate_name,
};
use crate::registry::{Admission, Client, Registration, Registry, SyncError};
use crate::throttle::Budget;
use bytes::Bytes;

/// Bytes read from the socket per read call (a stack buffer, not held while idle).
const READ_CHUNK: usize = 8192;
/// Reads per wake-up before yielding to other connections (tokio's own budget
/// would allow over a hundred times as many).
const READS_PER_WAKE: usize = 8;
/// How long a closing connection waits for the client to close its side, so the
/// kernel does not reset the connection before the client has read the `bye`.
const LINGER: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it ends.
///
/// Registration happens before the returned future is first polled, and the
/// future holds little more than the registration: every idle client keeps one.
pub fn serve(
    directory: Directory,
    socket: TcpStream,
    peer: SocketAddr,
) -> impl Future<Output = ()> + Send + 'static {
    match directory.registry().connect(peer, Some(socket)) {
        Admission::Admitted(registration) => Either::Left(run(registration, directory)),
        Admission::Refused(client) => Either::Right(refuse(directory.registry().clone(), client)),
    }
}

// A function returning an `async` block rather than an `async fn`: an `async
// fn`'s future keeps its arguments twice, and this future is kept once per idle
// client, in a task allocation that grows by a 128-byte step when the future
// passes 144 bytes.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn keeps its argument twice"
)]
fn run(mut registration: Registration, directory: Directory) -> impl Future<Output = ()> + Send {
    async move {
        {
            let client = registration.client();
            // At info a client appears once it is named (and again when it leaves):
            // a bare connection is one more line per client in a reconnect storm.
            debug!(session = %client.id(), peer = %client.peer(), "client connected");
        }
        let outcome = read_and_flush(&directory, &registration).await;
        if let Err(err) = outcome {
            debug!(session = %registration.client().id(), %err, "connection failed");
            registration.ended_by_error();
        }
        let (registry, client) = (registration.registry(), registration.client());
        Box::pin(close(registry, client)).await;
        let reason = client
            .outbox()
            .closing()
            .map_or("closed", ByeReason::as_str);
        info!(session = %client.id(), peer = %client.peer(), name = client.name().as_deref().map(display), %reason, "client disconnected");
    }
}

async fn refuse(registry: Registry, client: Arc<Client>) {
    let reason = client.outbox().closing();
    info!(session = %client.id(), peer = %client.peer(), reason = reason.map(display), "connection refused");
    Box::pin(close(&registry, &client)).await;
}

/// Runs the connection until the peer closes it or the hub queues its `bye`.
fn read_and_flush<'a>(
    directory: &'a Directory,
    registration: &'a Registration,
) -> impl Future<Output = io::Result<()>> + Send + 'a {
    let mut session = registration.client().socket().map(|socket| Session {
        directory,
        registration,
        socket,
        decoder: None,
        budget: None,
        throttled: None,
        blocked: false,
        must_yield: false,
    });
    // A bare `poll_fn` over the session rather than an `async` block: the
    // future is then the session and nothing else.
    poll_fn(move |cx| match &mut session {
        Some(session) => session.poll_run(cx),
        None => Poll::Ready(Ok(())),
    })
}

/// What a connection task keeps between wake-ups.
struct Session<'a> {
    directory: &'a Directory,
    registration: &'a Registration,
    socket: &'a TcpStream,
    /// Kept only while a frame is unfinished; most idle clients hold none.
    decoder: Option<Box<FrameDecoder>>,
    budget: Option<Budget>,
    /// Set while the client is past its rate: the socket is not read until it fires.
    throttled: Option<Pin<Box<Sleep>>>,
    /// True while queued frames wait for the socket to accept more bytes.
    blocked: bool,
    /// Set when reading stopped with bytes left: the task yields before it goes on.
    must_yield: bool,
}

impl Session<'_> {
    /// Handles every wake-up until the peer closes or the hub queues the `bye`.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.registration.client().outbox().closing().is_none() {
            let wake = ready!(self.poll_wake(cx))?;
            if self.on_wake(wake)? == Flow::PeerClosed {
                break;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Ready when there is something to do. Polling readiness directly (rather
    /// than selecting over futures) keeps an idle connection's task small: the
    /// wakers live in the socket's and the outbox's own slots.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Wake>> {
        if self.must_yield {
            // Waking itself puts the task at the back of its worker's queue, as
            // `tokio::task::yield_now` does, without a second future to keep.
            self.must_yield = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if self
            .registration
            .client()
            .outbox()
            .poll_queued(cx)
            .is_ready()
        {
            return Poll::Ready(Ok(Wake::Queued));
        }
        if self.blocked
            && let Poll::Ready(ready) = self.socket.poll_write_ready(cx)
        {
            return Poll::Ready(ready.map(|()| Wake::Writable));
        }
        match &mut self.throttled {
            Some(sleep) => sleep.as_mut().poll(cx).map(|()| Ok(Wake::Refilled)),
            None => self.socket.poll_read_ready(cx).map_ok(|()| Wake::Readable),
        }
    }

    /// Acts on what woke the task; `Flow::PeerClosed` when the client closed.
    fn on_wake(&mut self, wake: Wake) -> io::Result<Flow> {
        let (registry, client) = (self.registration.registry(), self.registration.client());
        match wake {
            Wake::Queued | Wake::Writable => self.blocked = !flush(registry, client, self.socket)?,
            Wake::Refilled => self.throttled = None,
            Wake::Readable => {
                let flow = read_frames(
                    self.directory,
                    client,
                    self.socket,
                    &mut self.decoder,
                    &mut self.budget,
                )?;
                match flow {
                    Flow::Drained | Flow::PeerClosed => {}
                    // Readiness is still set, so without an explicit yield the task
                    // would read on and keep its worker from other connections.
                    Flow::MoreToRead => self.must_yield = true,
                    Flow::Throttled(resume) => {
                        registry.record_throttled();
                        self.throttled = Some(Box::pin(sleep_until(resume)));
                    }
                }
                return Ok(flow);
            }
        }
        Ok(Flow::Drained)
    }
}

/// What woke the connection task.
enum Wake {
    /// The outbox queued frames.
    Queued,
    /// The socket takes bytes again.
    Writable,
    /// The client sent bytes (or closed).
    Readable,
    /// The client's rate allows reading again.
    Refilled,
}

/// Writes queued frames; true when the queue is empty.
fn flush(registry: &Registry, client: &Client, socket: &TcpStream) -> io::Result<bool> {
    let (drained, written) = client.outbox().flush(socket)?;
    registry.record_written_for(client, written);
    Ok(drained)
}

/// Where reading stopped.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    /// The socket holds nothing more (or the connection is closing).
    Drained,
    /// The socket may hold more, but this wake-up has read its share.
    MoreToRead,
    /// The client is past its rate: read no more until then.
    Throttled(Instant),
    /// The client closed its side.
    PeerClosed,
}

/// Reads what the socket holds and handles every complete frame, keeping the
/// decoder in `saved` only while it is in the middle of a frame.
fn read_frames(
    directory: &Directory,
    client: &Arc<Client>,
    socket: &TcpStream,
    saved: &mut Option<Box<FrameDecoder>>,
    budget: &mut Option<Budget>,
) -> io::Result<Flow> {
    let mut decoder = match saved.take() {
        Some(decoder) => *decoder,
        None => FrameDecoder::new(directory.registry().max_frame_bytes()),
    };
    let flow = read_into(directory, client, socket, &mut decoder, budget);
    if !decoder.is_between_frames() {
        *saved = Some(Box::new(decoder));
    }
    flow
}

fn read_into(
    directory: &Directory,
    client: &Arc<Client>,
    socket: &TcpStream,
    decoder: &mut FrameDecoder,
    budget: &mut Option<Budget>,
) -> io::Result<Flow> {
    let rate = directory.registry().client_rate();
    let mut buf = [0u8; READ_CHUNK];
    for _ in 0..READS_PER_WAKE {
        let n = match socket.try_read(&mut buf) {
            Ok(0) => return Ok(Flow::PeerClosed),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Flow::Drained),
            Err(err) => return Err(err),
        };
        let answered = handle_input(directory, client, decoder, &buf[..n]);
        if client.outbox().closing().is_some() {
            return Ok(Flow::Drained);
        }
        if rate.is_limited() {
            let now = Instant::now();
            let budget = budget.get_or_insert_with(|| Budget::new(now));
            if let Some(resume) = budget.spend(rate, answered, n as u64, now) {
                return Ok(Flow::Throttled(resume));
            }
        }
    }
    Ok(Flow::MoreToRead)
}

/// Decodes bytes the client sent and acts on every complete frame; returns how
/// many frames and invalid-JSON errors the bytes held.
///
/// A client whose unfinished frame would take the hub past its pending-bytes
/// cap is closed with `bye` `frame_too_large`.
pub(crate) fn handle_input(
    directory: &Directory,
    client: &Arc<Client>,
    decoder: &mut FrameDecoder,
    input: &[u8],
) -> u64 {
    let registry = directory.registry();
    let mut frames = 0;
    let mut errors = 0;
    decoder.feed(input, |decoded| match decoded {
        Decoded::Frame(value) => {
            frames += 1;
            on_frame(directory, client, value);
        }
        Decoded::InvalidJson(detail) => {
            errors += 1;
            reply_error(
                registry,
                client,
                &FrameError::new(ErrorCode::InvalidJson, detail),
            );
        }
        Decoded::TooLarge => {
            client.outbox().close(ByeReason::FrameTooLarge);
        }
    });
    registry.record_inbound(client, frames, input.len() as u64);
    if !registry.hold_pending(client, decoder.pending_len()) {
        debug!(session = %client.id(), "unfinished frame refused: the hub holds too many");
        decoder.give_up();
        client.outbox().close(ByeReason::FrameTooLarge);
    }
    frames + errors
}

/// Acts on one decoded value from the client.
fn on_frame(directory: &Directory, client: &Arc<Client>, value: Value) {
    let registry = directory.registry();
    let frame = match ClientFrame::from_value(value) {
        Ok(frame) => frame,
        Err(refusal) => return reply_error(registry, client, &refusal),
    };
    match frame {
        ClientFrame::Sync {
            client_name,
            message,
            token,
            groups,
        } => on_sync(
            directory,
            client,
            &client_name,
            message,
            token.as_deref(),
            groups.as_deref(),
        ),
        ClientFrame::Info { message } => {
            debug!(session = %client.id(), name = client.name().as_deref().map(display), %message, "info from client");
            registry.client_message(client, message);
        }
        ClientFrame::Ping => {
            registry.reply(client, &Bytes::from_static(PONG_LINE));
        }
        ClientFrame::Ack { id } => directory.acked(client, id),
        ClientFrame::Join { groups } => {
            on_join_or_leave(registry, client, &groups, GroupChange::Join)
        }
        ClientFrame::Leave { groups } => {
            on_join_or_leave(registry, client, &groups, GroupChange::Leave);
        }
    }
}

/// Answers `join` or `leave` with the resulting set, or an `error` when nothing changed.
fn on_join_or_leave(
    registry: &Registry,
    client: &Arc<Client>,
    names: &[String],
    change: fn(BTreeSet<Arc<str>>) -> GroupChange,
) {
    let changed =
        groups::parse_names(names).and_then(|names| registry.change_groups(client, &change(names)));
    match changed {
        Ok(groups) => {
            registry.reply(client, &HubFrame::Groups { groups: &groups }.encode());
        }
        // The connection is closing: nothing more is sent to it.
        Err(GroupsError::NotFound) => {}
        Err(refusal) => reply_error(registry, client, &refusal.to_frame_error()),
    }
}

fn on_sync(
    directory: &Directory,
    client: &Arc<Client>,
    name: &str,
    message: Option<Value>,
    token: Option<&str>,
    groups: Option<&[String]>,
) {
    let registry = directory.registry();
    if let Err(refusal) = validate_name(name) {
        return reply_error(registry, client, &refusal);
    }
    let change = match groups.map(groups::parse_names).transpose() {
        Ok(names) => names.map(GroupChange::Replace),
        Err(refusal) => return reply_error(registry, client, &refusal.to_frame_error()),
    };
    let mut claim = None;
    if let Some(auth) = registry.client_auth() {
        match auth.check(token, name) {
            Ok(granted) => claim = granted,
            Err(refusal) => {
                info!(session = %client.id(), %name, detail = %refusal.detail, "client refused: unauthorized");
                reply_error(registry, client, &refusal);
                client.outbox().close(ByeReason::Unauthorized);
                return;
            }
        }
    }
    if let Some(change) = &change {
        // Checked before the name is taken, so that a refused sync changes nothing.
        if let Err(refusal) = registry.check_groups(client, claim.as_ref(), change) {
            return reply_error(registry, client, &refusal.to_frame_error());
        }
    }
    let named = Named {
        name: name.to_owned(),
        message,
        claim,
        change,
    };
    match directory.claim(client, name) {
        Claiming::Done(outcome) => named.finish(directory, client, outcome),
        Claiming::Pending(claiming) => {
            // The name table is a round trip away: the connection goes on
            // reading meanwhile, and the `welcome` follows the claim.
            let (finishing, client) = (directory.clone(), Arc::clone(client));
            directory.spawn_claiming(async move {
                let outcome = claiming.await;
                named.finish(&finishing, &client, outcome);
            });
        }
    }
}

/// A `sync` whose name is being claimed, and what to do once it is.
struct Named {
    name: String,
    message: Option<Value>,
    claim: Option<GroupClaim>,
    change: Option<GroupChange>,
}

impl Named {
    /// Answers the `sync`: `welcome` (with the groups it set) and the name's
    /// stored messages, or why the name was not taken.
    fn finish(self, directory: &Directory, client: &Arc<Client>, outcome: Result<(), SyncError>) {
        let registry = directory.registry();
        let name = self.name.as_str();
        match outcome {
            Ok(()) => {
                let id = client.id();
                info!(session = %id, peer = %client.peer(), %name, "client named");
                debug!(session = %id, message = self.message.as_ref().map(display), "sync message");
                if registry.client_auth().is_some() {
                    registry.set_group_claim(client, self.claim);
                }
                let groups = match self
                    .change
                    .map(|change| registry.change_groups(client, &change))
                {
                    None => None,
                    Some(Ok(groups)) => Some(groups),
                    Some(Err(GroupsError::NotFound)) => return,
                    Some(Err(refusal)) => {
                        return reply_error(registry, client, &refusal.to_frame_error());
                    }
                };
                let welcome = HubFrame::Welcome {
                    id: &id,
                    client_name: name,
                    groups: groups.as_deref(),
                };
                registry.reply(client, &welcome.encode());
                directory.deliver_stored(client);
            }
            Err(SyncError::NameTaken) => {
                let detail = format!("the name {name:?} is held by another connection");
                reply_error(
                    registry,
                    client,
                    &FrameError::new(ErrorCode::NameTaken, detail),
                );
            }
            Err(SyncError::Unavailable) => {
                let detail = format!(
                    "the name {name:?} could not be claimed: the cluster's name table is out of reach; retry later"
                );
                reply_error(
                    registry,
                    client,
                    &FrameError::new(ErrorCode::RegistryUnavailable, detail),
                );
            }
            Err(SyncError::Closing) => {}
        }
    }
}

fn reply_error(registry: &Registry, client: &Client, refusal: &FrameError) {
    let frame = HubFrame::Error {
        code: refusal.code,
        detail: &refusal.detail,
    };
    registry.reply(client, &frame.encode());
}

/// Flushes what is queued (the `bye` last) within `grace`, then closes the socket.
async fn close(registry: &Registry, client: &Client) {
    let Some(socket) = client.socket() else {
        return;
    };
    let deadline = Instant::now() + registry.close_grace();
    loop {
        match flush(registry, client, socket) {
            Ok(true) => break,
            Ok(false) => {
                if !matches!(timeout_at(deadline, socket.writable()).await, Ok(Ok(()))) {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    // Send FIN after the last frame, then let the client close first, so that
    // unread inbound bytes do not turn the close into a reset that loses the bye.
    if SockRef::from(socket).shutdown(Shutdown::Write).is_err() {
        return;
    }
    let _ = timeout_at(Instant::now() + LINGER, discard_until_eof(socket)).await;
}

async fn discard_until_eof(socket: &TcpStream) {
    while socket.readable().await.is_ok() {
        match discard_available(socket) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// One read into a throwaway stack buffer, kept out of the async state so the
/// connection future stays small.
fn discard_available(socket: &TcpStream) -> io::Result<usize> {
    let mut buf = [0u8; 1024];
    socket.try_read(&mut buf)
}
