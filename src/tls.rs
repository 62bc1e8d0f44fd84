//! TLS for both listeners, with rustls, when `--tls-cert` and `--tls-key` are set.
//!
//! A plain TCP client is written to directly from any thread (see [`crate::outbox`]).
//! A TLS client cannot be: its bytes must go through the session's encryption,
//! which one task owns. So a TLS client is registered without a socket, every
//! frame for it is queued in its outbox, and its connection task moves them in
//! batches through the TLS stream while it reads and decodes what the client
//! sends. The rules are those of the plain path: the queue's capacity bounds what
//! is held (plus one batch being written), a `bye` is the last frame, and a
//! closing connection gets the grace period to flush, and a client past its
//! inbound rate is read no further until the rate allows.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info};

use crate::codec::FrameDecoder;
use crate::config::Config;
use crate::connection::handle_input;
use crate::directory::Directory;
use crate::outbox::FrameSink;
use crate::protocol::ByeReason;
use crate::registry::{Admission, Client, Registration, Registry};
use crate::throttle::Budget;

/// Longest a client (TCP or HTTP) may take to complete its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most queued bytes moved into one TLS write.
const BATCH_BYTES: usize = 64 * 1024;
/// Bytes read from the TLS stream at once.
const READ_CHUNK: usize = 8192;
/// Reads per wake-up before yielding to other connections.
const READS_PER_WAKE: usize = 8;
/// How long a closed connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(1);

/// The TLS acceptor the configuration asks for, if it asks for one.
pub fn acceptor(config: &Config) -> io::Result<Option<TlsAcceptor>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => load(cert, key).map(Some),
        _ => Ok(None),
    }
}

/// The PEM certificate chain at `path`: at least one certificate, leaf first.
pub fn certificate_chain(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| unreadable(path, &err))?;
    if chain.is_empty() {
        return Err(unreadable(path, &"no certificate in the file"));
    }
    Ok(chain)
}

fn unreadable(path: &Path, err: &dyn std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cannot read {}: {err}", path.display()),
    )
}

/// Reads a PEM certificate chain and its private key.
fn load(cert_path: &Path, key_path: &Path) -> io::Result<TlsAcceptor> {
    let chain = certificate_chain(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|err| unreadable(key_path, &err))?;
    // The provider is named, not taken from the process default, so no other
    // crate's choice of crypto backend can change or break it.
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|err| unreadable(cert_path, &err))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves one TCP client over TLS until the connection ends.
pub async fn serve_client(
    directory: Directory,
    acceptor: TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
) {
    let stream = match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    match directory.registry().connect(peer, None) {
        Admission::Admitted(registration) => run(registration, &directory, stream).await,
        Admission::Refused(client) => {
            info!(session = %client.id(), %peer, reason = client.outbox().closing().map(display), "connection refused");
            let mut connection = Connection::new(&directory, &client, stream);
            connection.finish().await;
        }
    }
}

async fn run(mut registration: Registration, directory: &Directory, stream: TlsStream<TcpStream>) {
    let client = Arc::clone(registration.client());
    info!(session = %client.id(), peer = %client.peer(), tls = true, "client connected");
    let mut connection = Connection::new(directory, &client, stream);
    if let Err(err) = poll_fn(|cx| connection.poll_exchange(cx)).await {
        debug!(session = %client.id(), %err, "connection failed");
        registration.ended_by_error();
    }
    connection.finish().await;
    let reason = client
        .outbox()
        .closing()
        .map_or("closed", ByeReason::as_str);
    info!(session = %client.id(), peer = %client.peer(), name = client.name().as_deref().map(display), %reason, "client disconnected");
}

/// One TLS client's connection task: the stream, the batch being written, and
/// the unfinished frame being read.
struct Connection<'a> {
    directory: &'a Directory,
    registry: &'a Registry,
    client: &'a Arc<Client>,
    stream: TlsStream<TcpStream>,
    /// Queued frames taken from the outbox, and how much of them is written.
    batch: Vec<u8>,
    batch_written: usize,
    decoder: Option<Box<FrameDecoder>>,
    budget: Option<Budget>,
    /// Set while the client is past its rate: nothing is read until it fires.
    throttled: Option<Pin<Box<Sleep>>>,
    /// Runs from the moment the client is being closed; flushing stops when it ends.
    grace: Option<Pin<Box<Sleep>>>,
}

impl<'a> Connection<'a> {
    fn new(
        directory: &'a Directory,
        client: &'a Arc<Client>,
        stream: TlsStream<TcpStream>,
    ) -> Self {
        Connection {
            directory,
            registry: directory.registry(),
            client,
            stream,
            batch: Vec::new(),
            batch_written: 0,
            decoder: None,
            budget: None,
            throttled: None,
            grace: None,
        }
    }

    /// Reads, decodes and answers, and writes what is queued, until the client
    /// closes its side or everything up to the hub's `bye` is written.
    fn poll_exchange(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        for _ in 0..READS_PER_WAKE {
            let closing = self.client.outbox().closing().is_some();
            if closing && self.grace.is_none() {
                self.grace = Some(Box::pin(sleep(self.registry.close_grace())));
            }
            // Registers the task for frames queued from now on (a ready poll does
            // not register, so poll until pending); what is queued already is
            // written just below.
            while self.client.outbox().poll_queued(cx).is_ready() {}
            let drained = self.write_queued(cx)?;
            if let Some(grace) = &mut self.grace {
                if drained || grace.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(()));
                }
                // Closing: nothing more is read, the rest is written or given up.
                return Poll::Pending;
            }
            if let Some(throttled) = &mut self.throttled {
                ready!(throttled.as_mut().poll(cx));
                self.throttled = None;
            }
            match ready!(self.poll_read(cx))? {
                true => continue,
                false => return Poll::Ready(Ok(())),
            }
        }
        // A client that keeps sending must not keep this worker from others.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes queued frames: true once the outbox is empty and the stream
    /// flushed, false while the stream takes no more (the task is registered).
    fn write_queued(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        loop {
            if self.batch_written == self.batch.len() {
                self.batch = Vec::new();
                self.batch_written = 0;
                let sink = Collect(RefCell::new(&mut self.batch));
                let (_, written) = self.client.outbox().flush(&sink)?;
                self.registry.record_written_for(self.client, written);
                if self.batch.is_empty() {
                    let flushed = Pin::new(&mut self.stream).poll_flush(cx)?;
                    return Ok(flushed.is_ready());
                }
            }
            let unwritten = &self.batch[self.batch_written..];
            match Pin::new(&mut self.stream).poll_write(cx, unwritten)? {
                Poll::Ready(0) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(n) => self.batch_written += n,
                Poll::Pending => return Ok(false),
            }
        }
    }

    /// Reads what the client sent and handles every complete frame: ready with
    /// true when something was read, false when the client closed its side.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut buf = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
        let input = buf.filled();
        if input.is_empty() {
            return Poll::Ready(Ok(false));
        }
        let mut decoder = match self.decoder.take() {
            Some(decoder) => *decoder,
            None => FrameDecoder::new(self.registry.max_frame_bytes()),
        };
        let answered = handle_input(self.directory, self.client, &mut decoder, input);
        if !decoder.is_between_frames() {
            self.decoder = Some(Box::new(decoder));
        }
        let rate = self.registry.client_rate();
        if rate.is_limited() {
            let now = Instant::now();
            let budget = self.budget.get_or_insert_with(|| Budget::new(now));
            if let Some(resume) = budget.spend(rate, answered, input.len() as u64, now) {
                self.registry.record_throttled();
                self.throttled = Some(Box::pin(sleep_until(resume)));
            }
        }
        Poll::Ready(Ok(true))
    }

    /// Flushes what is queued (the `bye` last) within the grace period, closes
    /// the TLS session, and gives the client a moment to close its side.
    async fn finish(&mut self) {
        let deadline = Instant::now() + self.registry.close_grace();
        let flushed = timeout_at(
            deadline,
            poll_fn(|cx| match self.write_queued(cx) {
                Ok(false) => Poll::Pending,
                done => Poll::Ready(done),
            }),
        )
        .await;
        if !matches!(flushed, Ok(Ok(true))) {
            return;
        }
        if timeout_at(deadline, self.stream.shutdown()).await.is_err() {
            return;
        }
        let mut discard = [0u8; 1024];
        let _ = timeout(LINGER, async {
            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut self.stream, &mut discard).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// A sink that takes queued frames into a batch of at most [`BATCH_BYTES`].
struct Collect<'a>(RefCell<&'a mut Vec<u8>>);

impl FrameSink for Collect<'_> {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut batch = self.0.borrow_mut();
        let room = BATCH_BYTES.saturating_sub(batch.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut taken = 0;
        for buf in bufs {
            let n = buf.len().min(room - taken);
            batch.extend_from_slice(&buf[..n]);
            taken += n;
            if taken == room {
                break;
            }
        }
        Ok(taken)
    }
}
