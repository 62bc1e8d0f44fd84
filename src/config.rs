//! Configuration: [`Config`] is plain data with defaults and validation; [`Cli`]
//! is the command line (clap, every flag with a `TCPHUB_*` environment twin) that
//! `main` turns into a `Config`. Tests build `Config` directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Everything the hub needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where TCP clients connect.
    pub tcp_addr: SocketAddr,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Longest inbound frame, in bytes.
    pub max_frame_bytes: usize,
    /// Longest pushed message (the HTTP body), in bytes.
    pub max_message_bytes: usize,
    /// What a `sync` for a name held by another connection does.
    pub duplicate_names: DuplicateNames,
    /// Most live TCP clients at once.
    pub max_clients: usize,
    /// Frames waiting per client before the slow-consumer policy applies.
    pub queue_capacity: usize,
    /// What a full queue does.
    pub slow_consumer: SlowConsumer,
    /// Disconnect clients silent for this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// How long a shutdown (or a kick) may spend flushing queued frames.
    pub shutdown_grace: Duration,
    /// Bearer token required by the HTTP API, if any.
    pub api_token: Option<String>,
    /// Serve the HTTP API on a non-loopback address without a token.
    pub allow_insecure_api: bool,
    /// Events kept for followers that reconnect or fall behind.
    pub event_buffer: usize,
    /// Where batches of events are POSTed.
    pub webhook_urls: Vec<reqwest::Url>,
    /// Key of the HMAC-SHA256 signature of webhook bodies, if any.
    pub webhook_secret: Option<String>,
    /// How TCP clients prove they may use the name they claim.
    pub client_auth: ClientAuthMode,
    /// Key of the HS256 signature of client tokens (with `ClientAuthMode::Jwt`).
    pub client_secret: Option<String>,
    /// Longest an HTTP client may take to send a request head.
    pub http_header_timeout: Duration,
    /// Longest an HTTP keep-alive connection may stay idle between requests.
    pub http_idle_timeout: Duration,
    /// Most HTTP connections open at once; past it, new ones are closed at once.
    pub max_http_connections: usize,
    /// Most `/events` streams open at once; past it, `/events` answers 503.
    pub max_event_streams: usize,
    /// PEM certificate chain: with `tls_key`, both listeners speak TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            tcp_addr: SocketAddr::from(([0, 0, 0, 0], 9000)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_frame_bytes: 65536,
            max_message_bytes: 65536,
            duplicate_names: DuplicateNames::Replace,
            max_clients: 100_000,
            queue_capacity: 1024,
            slow_consumer: SlowConsumer::Drop,
            idle_timeout: None,
            shutdown_grace: Duration::from_secs(10),
            api_token: None,
            allow_insecure_api: false,
            event_buffer: 10_000,
            webhook_urls: Vec::new(),
            webhook_secret: None,
            client_auth: ClientAuthMode::None,
            client_secret: None,
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            max_http_connections: 1000,
            max_event_streams: 100,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A configuration the hub refuses to start with.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The API would be reachable from other hosts with no token.
    #[error(
        "refusing to serve the HTTP API on non-loopback address {0} without --api-token \
         (set a token, or pass --allow-insecure-api)"
    )]
    InsecureApi(SocketAddr),
    /// The token is present but empty.
    #[error("--api-token must not be empty")]
    EmptyToken,
    /// A limit that must be positive is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A webhook URL that is not `http` or `https`.
    #[error("--webhook-url {0} must be an http:// or https:// URL")]
    WebhookScheme(reqwest::Url),
    /// The webhook secret is present but empty.
    #[error("--webhook-secret must not be empty")]
    EmptyWebhookSecret,
    /// Client authentication is on, with no key to check tokens.
    #[error("--client-auth jwt needs a non-empty --client-secret")]
    NoClientSecret,
    /// Only one of the certificate and its key.
    #[error("--tls-cert and --tls-key go together")]
    HalfTls,
}

impl Config {
    /// Checks the combination of settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.api_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        let positive = [
            ("--max-frame-bytes", self.max_frame_bytes),
            ("--max-message-bytes", self.max_message_bytes),
            ("--max-clients", self.max_clients),
            ("--queue-capacity", self.queue_capacity),
            ("--event-buffer", self.event_buffer),
            ("--max-http-connections", self.max_http_connections),
            ("--max-event-streams", self.max_event_streams),
        ];
        if let Some((flag, _)) = positive.into_iter().find(|&(_, value)| value == 0) {
            return Err(ConfigError::Zero(flag));
        }
        let timeouts = [
            ("--http-header-timeout", self.http_header_timeout),
            ("--http-idle-timeout", self.http_idle_timeout),
        ];
        if let Some((flag, _)) = timeouts.into_iter().find(|(_, value)| value.is_zero()) {
            return Err(ConfigError::Zero(flag));
        }
        if let Some(url) = self
            .webhook_urls
            .iter()
            .find(|url| !matches!(url.scheme(), "http" | "https"))
        {
            return Err(ConfigError::WebhookScheme(url.clone()));
        }
        if self.webhook_secret.as_deref() == Some("") {
            return Err(ConfigError::EmptyWebhookSecret);
        }
        let has_secret = self.client_secret.as_deref().is_some_and(|s| !s.is_empty());
        if self.client_auth == ClientAuthMode::Jwt && !has_secret {
            return Err(ConfigError::NoClientSecret);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::HalfTls);
        }
        let open_api = !self.http_addr.ip().is_loopback() && self.api_token.is_none();
        if open_api && !self.allow_insecure_api {
            return Err(ConfigError::InsecureApi(self.http_addr));
        }
        Ok(())
    }
}

/// How TCP clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuthMode {
    /// Any connection may claim any free name.
    None,
    /// A `sync` carries a `token`: an HS256 JWT whose `sub` is the name claimed.
    Jwt,
}

/// What happens when a second connection claims a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DuplicateNames {
    /// The newer connection takes the name; the older gets `bye` `replaced`.
    Replace,
    /// The newer connection gets `error` `name_taken` and stays unnamed.
    Reject,
}

/// What happens when a client's outbound queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SlowConsumer {
    /// Drop the message for that client and count it.
    Drop,
    /// Disconnect the client with `bye` `slow_consumer`.
    Disconnect,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// tcphub: devices hold raw TCP connections; other systems reach them over HTTP.
#[derive(Debug, Parser)]
#[command(name = "tcphub", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without one, run the hub.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for running the hub.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands besides running the hub.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 when the hub's /healthz answers 200 (for container health checks).
    Healthcheck {
        /// The HTTP API address of the hub to check (an unspecified IP means loopback).
        #[arg(long, env = "TCPHUB_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        /// The hub's PEM certificate: ask over TLS, trusting exactly this certificate.
        #[arg(long, env = "TCPHUB_TLS_CERT")]
        tls_cert: Option<PathBuf>,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

/// The flags of the hub itself.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the TCP listener for clients.
    #[arg(long, env = "TCPHUB_TCP_ADDR", default_value = "0.0.0.0:9000")]
    pub tcp_addr: SocketAddr,
    /// Address of the HTTP API.
    #[arg(long, env = "TCPHUB_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Longest inbound frame in bytes; longer ones get `bye` `frame_too_large`.
    #[arg(long, env = "TCPHUB_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,
    /// Longest pushed message (HTTP body) in bytes; longer ones get 413.
    #[arg(long, env = "TCPHUB_MAX_MESSAGE_BYTES", default_value_t = 65536)]
    pub max_message_bytes: usize,
    /// What a `sync` for a name already held does.
    #[arg(
        long,
        env = "TCPHUB_DUPLICATE_NAMES",
        value_enum,
        default_value = "replace"
    )]
    pub duplicate_names: DuplicateNames,
    /// Most live TCP clients; past it, new connections get `bye` `server_full`.
    #[arg(long, env = "TCPHUB_MAX_CLIENTS", default_value_t = 100_000)]
    pub max_clients: usize,
    /// Outbound frames queued per client before the slow-consumer policy applies.
    #[arg(long, env = "TCPHUB_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// What a full client queue does: drop the message, or disconnect the client.
    #[arg(long, env = "TCPHUB_SLOW_CONSUMER", value_enum, default_value = "drop")]
    pub slow_consumer: SlowConsumer,
    /// Seconds of silence before a client gets `bye` `idle_timeout` (0 = never).
    #[arg(long, env = "TCPHUB_IDLE_TIMEOUT", default_value_t = 0)]
    pub idle_timeout: u64,
    /// Seconds a shutdown may spend flushing queued frames.
    #[arg(long, env = "TCPHUB_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Log format (filter with RUST_LOG, default `info`).
    #[arg(long, env = "TCPHUB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Bearer token required by every HTTP endpoint but /healthz and /readyz.
    #[arg(long, env = "TCPHUB_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Allow the HTTP API on a non-loopback address without a token.
    #[arg(long, env = "TCPHUB_ALLOW_INSECURE_API")]
    pub allow_insecure_api: bool,
    /// Events kept in memory for /events followers that reconnect (Last-Event-ID)
    /// or fall behind.
    #[arg(long, env = "TCPHUB_EVENT_BUFFER", default_value_t = 10_000)]
    pub event_buffer: usize,
    /// URL that receives batches of events as signed POSTs; repeat for several
    /// (comma-separated in the environment).
    #[arg(
        long = "webhook-url",
        env = "TCPHUB_WEBHOOK_URL",
        value_delimiter = ','
    )]
    pub webhook_urls: Vec<reqwest::Url>,
    /// Key for the `X-Tcphub-Signature` HMAC-SHA256 of each webhook body.
    #[arg(long, env = "TCPHUB_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// How TCP clients authenticate: `jwt` makes every `sync` carry a token.
    #[arg(long, env = "TCPHUB_CLIENT_AUTH", value_enum, default_value = "none")]
    pub client_auth: ClientAuthMode,
    /// Key of the HS256 signature of client tokens (`--client-auth jwt`).
    #[arg(long, env = "TCPHUB_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,
    /// Seconds an HTTP client may take to send a request head (on a new
    /// connection, counted from the connect).
    #[arg(long, env = "TCPHUB_HTTP_HEADER_TIMEOUT", default_value_t = 10)]
    pub http_header_timeout: u64,
    /// Seconds an HTTP keep-alive connection may stay idle between requests.
    #[arg(long, env = "TCPHUB_HTTP_IDLE_TIMEOUT", default_value_t = 60)]
    pub http_idle_timeout: u64,
    /// Most HTTP connections open at once; past it, new ones are closed at once.
    #[arg(long, env = "TCPHUB_MAX_HTTP_CONNECTIONS", default_value_t = 1000)]
    pub max_http_connections: usize,
    /// Most /events streams open at once; past it, /events answers 503 `too_many_streams`.
    #[arg(long, env = "TCPHUB_MAX_EVENT_STREAMS", default_value_t = 100)]
    pub max_event_streams: usize,
    /// PEM certificate chain; with --tls-key, the TCP port and the HTTP API use TLS.
    #[arg(long, env = "TCPHUB_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TCPHUB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl RunArgs {
    /// The hub configuration these flags describe.
    pub fn to_config(&self) -> Config {
        let seconds = Duration::from_secs;
        Config {
            tcp_addr: self.tcp_addr,
            http_addr: self.http_addr,
            max_frame_bytes: self.max_frame_bytes,
            max_message_bytes: self.max_message_bytes,
            duplicate_names: self.duplicate_names,
            max_clients: self.max_clients,
            queue_capacity: self.queue_capacity,
            slow_consumer: self.slow_consumer,
            idle_timeout: (self.idle_timeout > 0).then(|| seconds(self.idle_timeout)),
            shutdown_grace: seconds(self.shutdown_grace),
            api_token: self.api_token.clone(),
            allow_insecure_api: self.allow_insecure_api,
            event_buffer: self.event_buffer,
            webhook_urls: self.webhook_urls.clone(),
            webhook_secret: self.webhook_secret.clone(),
            client_auth: self.client_auth,
            client_secret: self.client_secret.clone(),
            http_header_timeout: seconds(self.http_header_timeout),
            http_idle_timeout: seconds(self.http_idle_timeout),
            max_http_connections: self.max_http_connections,
            max_event_streams: self.max_event_streams,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn a_public_api_needs_a_token_or_an_explicit_opt_out() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let mut config = Config {
            http_addr: public,
            ..Config::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::InsecureApi(public)));
        config.api_token = Some("secret".into());
        assert_eq!(config.validate(), Ok(()));
        config.api_token = None;
        config.allow_insecure_api = true;
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn zero_limits_and_empty_tokens_are_refused() {
        let config = Config {
            queue_capacity: 0,
            ..Config::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::Zero("--queue-capacity"))
        );
        let config = Config {
            api_token: Some(String::new()),
            ..Config::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::EmptyToken));
    }

    #[test]
    fn webhooks_need_http_urls_and_a_non_empty_secret() {
        let cli = Cli::try_parse_from([
            "tcphub",
            "--webhook-url",
            "http://127.0.0.1:9100/hook",
            "--webhook-url",
            "https://backend.example/events",
            "--webhook-secret",
            "s3cret",
        ])
        .unwrap();
        let config = cli.run.to_config();
        assert_eq!(config.webhook_urls.len(), 2);
        assert_eq!(config.validate(), Ok(()));
        let ftp: reqwest::Url = "ftp://backend.example/events".parse().unwrap();
        let config = Config {
            webhook_urls: vec![ftp.clone()],
            ..Config::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::WebhookScheme(ftp)));
        let config = Config {
            webhook_secret: Some(String::new()),
            ..Config::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::EmptyWebhookSecret));
    }

    #[test]
    fn client_auth_needs_a_secret_and_tls_needs_both_files() {
        let mut config = Config {
            client_auth: ClientAuthMode::Jwt,
            ..Config::default()
        };
        assert_eq!(config.validate(), Err(ConfigError::NoClientSecret));
        config.client_secret = Some(String::new());
        assert_eq!(config.validate(), Err(ConfigError::NoClientSecret));
        config.client_secret = Some("k".into());
        assert_eq!(config.validate(), Ok(()));
        config.tls_cert = Some("cert.pem".into());
        assert_eq!(config.validate(), Err(ConfigError::HalfTls));
        config.tls_key = Some("key.pem".into());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn cli_defaults_match_config_defaults() {
        let cli = Cli::try_parse_from(["tcphub"]).unwrap();
        let from_cli = cli.run.to_config();
        let default = Config::default();
        assert_eq!(from_cli.tcp_addr, default.tcp_addr);
        assert_eq!(from_cli.http_addr, default.http_addr);
        assert_eq!(from_cli.max_clients, default.max_clients);
        assert_eq!(from_cli.queue_capacity, default.queue_capacity);
        assert_eq!(from_cli.idle_timeout, None);
        assert_eq!(from_cli.shutdown_grace, default.shutdown_grace);
        assert_eq!(from_cli.event_buffer, default.event_buffer);
        assert_eq!(from_cli.http_header_timeout, default.http_header_timeout);
        assert_eq!(from_cli.http_idle_timeout, default.http_idle_timeout);
        assert_eq!(from_cli.max_http_connections, default.max_http_connections);
        assert_eq!(from_cli.max_event_streams, default.max_event_streams);
    }
}
