//! tcphub: devices and programs hold raw TCP connections to the hub, and other
//! systems reach them over HTTP.
//!
//! A tour of the crate, from the wire inwards:
//! - [`protocol`]: the JSON frames of the TCP side and the name rules.
//! - [`client_auth`]: the token a `sync` carries under `--client-auth jwt`.
//! - [`codec`]: bytes to JSON values, whatever the framing (none, newlines, splits).
//! - [`throttle`]: how fast one connection may send.
//! - [`outbox`]: one client's bounded outbound queue and direct socket writes.
//! - [`groups`]: group name rules, token claims and the group member index.
//! - [`registry`]: the live clients, the name index, sends, broadcasts and kicks;
//!   the single source of [`events`] and the owner of [`metrics`].
//! - [`directory`]: the one way the API and the connections reach clients by
//!   name, group or all at once, with outcomes mapped to HTTP in one place.
//! - [`connection`] and [`tcp`]: one task per socket, and the accept loop;
//!   [`tls`]: the same over TLS, for both listeners.
//! - [`acks`]: sends waiting for the client's acknowledgement.
//! - [`mailbox`]: messages stored for names with no live client, or until acked.
//! - [`fd_budget`]: the open-files limit shared between clients and HTTP.
//! - [`api`]: the HTTP API over the registry, including the event stream;
//!   [`http_server`]: the connections it is served on, their limits, and its end.
//! - [`cluster`]: several hubs on one NATS broker acting as one, behind the
//!   same directory.
//! - [`control_plane`]: the thread the API and the cluster run on, apart from
//!   the TCP clients.
//! - [`webhooks`]: events POSTed in signed batches to configured URLs.
//! - [`Hub`]: wires them together and runs both listeners until shutdown.
//! - [`cli`]: the operator subcommands of the binary (tokens, a device client,
//!   the HTTP API from the shell).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acks;
pub mod api;
pub mod cli;
pub mod client_auth;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod control_plane;
pub mod directory;
pub mod events;
pub mod fd_budget;
pub mod groups;
pub mod http_server;
pub mod mailbox;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod registry;
pub mod tcp;
pub mod throttle;
mod time_format;
pub mod tls;
pub mod webhooks;

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use cluster::Membership;
use control_plane::ControlPlane;
use directory::{Directory, Node};
use http_server::HttpServer;

pub use config::Config;
pub use registry::Registry;

/// A grace period too long to count: the drain waits for whatever it waits for.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// Longest pause between idle-timeout sweeps.
const IDLE_SWEEP_MAX: Duration = Duration::from_secs(1);

/// A tcphub instance: the registry plus the settings to serve it.
#[derive(Debug)]
pub struct Hub {
    config: Arc<Config>,
    registry: Registry,
}

impl Hub {
    /// A hub with an empty registry and its mailbox in memory, whatever
    /// `config.data_dir` says (see [`Hub::open`]).
    pub fn new(config: Config) -> Hub {
        let registry = Registry::new(&config);
        Hub {
            config: Arc::new(config),
            registry,
        }
    }

    /// A hub whose mailbox is the one `config` asks for: with a data dir, the
    /// database there, opened (and migrated) now, with what it holds.
    pub fn open(config: Config) -> Result<Hub, mailbox::sqlite::OpenError> {
        let (mailbox, recovered) = mailbox::Mailbox::open(&config)?;
        let registry = Registry::with_mailbox(&config, mailbox, recovered.next_number);
        registry.metrics().mailbox_expired.inc_by(recovered.expired);
        mailbox::delivery::record_totals(&registry);
        Ok(Hub {
            config: Arc::new(config),
            registry,
        })
    }

    /// The hub's registry of live clients.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves TCP clients on `tcp` and the HTTP API on `http` until `shutdown` is
    /// cancelled, then drains: new clients are refused, every client gets its
    /// queued frames and `bye` `shutdown` (within the grace period), and the HTTP
    /// API, which answers `/readyz` with 503 meanwhile, closes last. The drain
    /// ends within the grace period: HTTP connections still open then are cut.
    pub async fn serve(
        self,
        tcp: TcpListener,
        http: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        let tls = tls::acceptor(&self.config)?;
        let node = Arc::new(Node::new(
            self.config.node_name.as_deref(),
            http.local_addr()?,
        ));
        let control = ControlPlane::start()?;
        let directory = match &self.config.cluster {
            None => Directory::local(self.registry.clone(), node),
            Some(settings) => {
                // Joined on the control plane, where the tasks it starts run:
                // the API's calls to other nodes never cross threads.
                let joining = Membership::join(self.registry.clone(), node, settings.clone());
                let membership = control.run(joining).await?.map_err(io::Error::other)?;
                Directory::clustered(self.registry.clone(), membership)
            }
        };
        let cluster = directory.cluster().cloned();
        let webhooks = webhooks::start(&self.config, &self.registry)?;
        let tasks = TaskTracker::new();
        let accepting = tokio::spawn(tcp::accept_loop(
            tcp,
            directory.clone(),
            tls.clone(),
            tasks.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(mailbox::delivery::sweep(
            self.registry.clone(),
            shutdown.clone(),
        ));
        if let Some(timeout) = self.config.idle_timeout {
            tokio::spawn(sweep_idle(self.registry.clone(), timeout, shutdown.clone()));
        }
        let state = api::AppState::new(directory, Arc::clone(&self.config));
        let limits = http_server::Limits::of(&self.config);
        let mut http_server = HttpServer::start(
            http,
            tls,
            api::router(state.clone()),
            limits,
            control.handle(),
        )?;

        shutdown.cancelled().await;
        // The whole drain, HTTP included, ends by then.
        let deadline = Instant::now()
            .checked_add(self.config.shutdown_grace)
            .unwrap_or_else(|| Instant::now() + FOREVER);
        self.registry.shut_down();
        let _ = accepting.await;
        // Logged once readiness reports the drain and the listener is closed,
        // so whoever reads this line finds both.
        info!("shutting down: draining clients");
        tasks.close();
        tasks.wait().await;
        if let Some(cluster) = cluster {
            // The names of the clients that left are released, then the node
            // says goodbye: other nodes stop counting on it at once.
            cluster
                .leave(deadline.saturating_duration_since(Instant::now()))
                .await;
        }
        // Every client is gone and its last event emitted: followers of the
        // event stream drain it and finish, so the HTTP server can close too.
        self.registry.events().close();
        webhooks
            .finish(deadline.saturating_duration_since(Instant::now()))
            .await;
        http_server.stop();
        if http_server.closed_by(deadline).await? {
            http_server.cut().await?;
        } else {
            let streams = state.open_event_streams();
            let connections = http_server.cut().await?;
            warn!(
                connections,
                streams, "shutdown grace ran out: HTTP connections cut short"
            );
        }
        // Nothing can store or remove a message any more.
        self.registry.mailbox().close().await;
        info!("shutdown complete");
        Ok(())
    }
}

/// Disconnects clients that have been silent for `timeout`, until shutdown.
async fn sweep_idle(registry: Registry, timeout: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval((timeout / 4).min(IDLE_SWEEP_MAX));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                if let Some(cutoff) = SystemTime::now().checked_sub(timeout) {
                    registry.kick_idle(cutoff);
                }
            }
        }
    }
}
