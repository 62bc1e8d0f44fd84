//! The connection to the NATS broker: one client per node, connected at start
//! (or a one-line error naming the URLs), reconnecting forever afterwards, with
//! its state (connected or not) in a watch that a metric and the log follow.
//!
//! Knows nothing of what travels over the connection.

use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerAddr};
use tokio::sync::watch;
use tracing::{info, warn};

/// How long the first connection may take before start-up fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the broker can be reached right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    /// Connected: calls and key-value operations go through.
    Connected,
    /// Cut off; the client is reconnecting in the background.
    Disconnected,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// The connection's name as the broker shows it (the node id).
    pub name: String,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
    /// How often the client pings the broker; a broker that misses two pings
    /// is taken as gone, so this bounds how late a silent broker is noticed.
    pub ping_interval: Duration,
}

impl BrokerOptions {
    /// Options for node `name`, noticing a silent broker within about `ping_interval` × 3.
    pub fn new(name: &str, ping_interval: Duration) -> BrokerOptions {
        BrokerOptions {
            name: name.to_owned(),
            connect_timeout: CONNECT_TIMEOUT,
            ping_interval,
        }
    }
}

/// Why the broker could not be used at start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL list was empty or a URL did not parse.
    #[error("invalid NATS URL list {urls:?}: {reason}")]
    BadUrl {
        /// The list as given.
        urls: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No server in the list answered in time.
    #[error("NATS broker unreachable at {urls}: {reason}")]
    Unreachable {
        /// The list as given.
        urls: String,
        /// The client's last error.
        reason: String,
    },
}

/// A connected broker client and its state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    client: async_nats::Client,
    state: watch::Receiver<BrokerState>,
    urls: String,
}

impl Broker {
    /// Connects to the first reachable server of `urls` (`nats://a:4222,nats://b:4222`),
    /// failing within `options.connect_timeout` per server when none answers.
    /// Once connected, the client reconnects forever, and the state changes
    /// are logged once each way ("broker unreachable", "broker reachable again").
    pub async fn connect(urls: &str, options: BrokerOptions) -> Result<Broker, ConnectError> {
        let servers = parse_urls(urls)?;
        let (state_tx, state) = watch::channel(BrokerState::Connected);
        let logged_urls = urls.to_owned();
        let client = ConnectOptions::new()
            .name(options.name)
            .connection_timeout(options.connect_timeout)
            .ping_interval(options.ping_interval)
            .max_reconnects(None)
            .event_callback(move |event| {
                let next = match event {
                    Event::Connected => Some(BrokerState::Connected),
                    Event::Disconnected | Event::Closed => Some(BrokerState::Disconnected),
                    _ => None,
                };
                if let Some(next) = next {
                    record(&state_tx, next, &logged_urls);
                }
                async {}
            })
            .connect(servers)
            .await
            .map_err(|err| ConnectError::Unreachable {
                urls: urls.to_owned(),
                reason: err.to_string(),
            })?;
        Ok(Broker {
            client,
            state,
            urls: urls.to_owned(),
        })
    }

    /// The NATS client, for the modules that build on it.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// A JetStream context whose API calls give up after `timeout`.
    pub fn jetstream(&self, timeout: Duration) -> async_nats::jetstream::Context {
        async_nats::jetstream::ContextBuilder::new()
            .timeout(timeout)
            .build(self.client.clone())
    }

    /// Whether the broker is reachable now.
    pub fn state(&self) -> BrokerState {
        *self.state.borrow()
    }

    /// A receiver that sees every change of [`Broker::state`], for a gauge or a
    /// reconciliation after the broker is back.
    pub fn watch_state(&self) -> watch::Receiver<BrokerState> {
        self.state.clone()
    }

    /// The URL list this broker was connected with.
    pub fn urls(&self) -> &str {
        &self.urls
    }
}

/// Stores `next` and logs the change, once per change: the client reports a
/// disconnection again on every failed reconnect attempt.
fn record(state: &watch::Sender<BrokerState>, next: BrokerState, urls: &str) {
    let changed = state.send_if_modified(|current| {
        let changed = *current != next;
        *current = next;
        changed
    });
    if changed {
        match next {
            BrokerState::Disconnected => warn!(%urls, "broker unreachable"),
            BrokerState::Connected => info!(%urls, "broker reachable again"),
        }
    }
}

/// The servers of a comma-separated list, each checked now so a typo is
/// reported as such rather than as an unreachable broker.
fn parse_urls(urls: &str) -> Result<Vec<ServerAddr>, ConnectError> {
    let bad = |reason: String| ConnectError::BadUrl {
        urls: urls.to_owned(),
        reason,
    };
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|err| bad(format!("{url:?}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(bad("no URL given".to_owned()));
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_parses_into_each_server() {
        let servers = parse_urls("nats://a:4222, nats://b:4223").unwrap();
        let ports: Vec<u16> = servers.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223]);
    }

    #[test]
    fn an_empty_list_or_a_bad_url_is_named() {
        assert_eq!(
            parse_urls(" , ").unwrap_err().to_string(),
            "invalid NATS URL list \" , \": no URL given"
        );
        let err = parse_urls("nats://a:4222,nats://b:notaport").unwrap_err();
        assert!(err.to_string().contains("nats://b:notaport"), "{err}");
    }

    #[test]
    fn each_change_is_recorded_once() {
        let (tx, mut rx) = watch::channel(BrokerState::Connected);
        record(&tx, BrokerState::Connected, "u");
        assert!(!rx.has_changed().unwrap());
        record(&tx, BrokerState::Disconnected, "u");
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), BrokerState::Disconnected);
        record(&tx, BrokerState::Disconnected, "u");
        assert!(!rx.has_changed().unwrap());
    }
}
