//! Configuration: [`Config`] is plain data with defaults and validation; [`Cli`]
//! is the command line (clap, every flag with a `TCPHUB_*` environment twin) that
//! `main` turns into a `Config`. Tests build `Config` directly.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::cluster::{ClusterSettings, SettingsError};
use crate::directory::host_name;
use crate::throttle::InboundRate;

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
    /// How fast each TCP client may send frames and bytes.
    pub client_rate: InboundRate,
    /// Most bytes held in unfinished inbound frames across all connections.
    pub max_pending_bytes: usize,
    /// Most groups one connection may be in.
    pub max_groups_per_client: usize,
    /// Most recipients, all items together, of one `POST /send`.
    pub max_bulk_recipients: usize,
    /// Where the mailbox database lives; `None` keeps mailboxes in memory.
    pub data_dir: Option<PathBuf>,
    /// Longest `ttl` a stored message may ask for.
    pub mailbox_max_ttl: Duration,
    /// Most messages stored per name.
    pub mailbox_capacity: usize,
    /// Most message bytes stored across all names.
    pub mailbox_max_bytes: u64,
    /// This hub's name in `GET /nodes`; `None` takes the host name.
    pub node_name: Option<String>,
    /// Cluster mode: the broker and the cluster's timers; `None` runs alone.
    pub cluster: Option<ClusterSettings>,
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
            client_rate: InboundRate {
                frames_per_sec: 1000,
                bytes_per_sec: 1 << 20,
                burst: Duration::from_secs(10),
            },
            max_pending_bytes: 64 << 20,
            max_groups_per_client: 64,
            max_bulk_recipients: 10_000,
            data_dir: None,
            mailbox_max_ttl: Duration::from_secs(86_400),
            mailbox_capacity: 1000,
            node_name: None,
            cluster: None,
            mailbox_max_bytes: 1 << 30,
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
    /// A node name that could not be part of a node id.
    #[error("--node-name {0:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    NodeName(String),
    /// Cluster settings that cannot work.
    #[error("cluster mode: {0}")]
    Cluster(#[from] SettingsError),
}

/// Seconds given on the command line as a duration; what is not a finite,
/// non-negative number becomes zero, which validation refuses.
fn seconds_f64(seconds: f64) -> Duration {
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
}

/// Whether `name` can be a node name: it becomes part of node ids, cursors
/// and, in a cluster, of broker subjects.
pub fn is_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Config {
    /// The HTTP API would answer other hosts without a token.
    pub fn open_api(&self) -> bool {
        !self.http_addr.ip().is_loopback() && self.api_token.is_none()
    }

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
            ("--max-pending-bytes", self.max_pending_bytes),
            ("--max-http-connections", self.max_http_connections),
            ("--max-event-streams", self.max_event_streams),
            ("--max-groups-per-client", self.max_groups_per_client),
            ("--max-bulk-recipients", self.max_bulk_recipients),
            ("--mailbox-capacity", self.mailbox_capacity),
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
        if let Some(name) = self.node_name.as_deref().filter(|name| !is_node_name(name)) {
            return Err(ConfigError::NodeName(name.to_owned()));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if self.open_api() && !self.allow_insecure_api {
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

/// A listen address as given on the command line: `IP:port`, `[IPv6]:port` or
/// `host:port`. A host name is resolved when the hub starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// The host name or IP literal (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<HostPort, String> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: addr.ip().to_string(),
                port: addr.port(),
            });
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return Err("expected HOST:PORT, e.g. 0.0.0.0:9000 or localhost:9000".into());
        };
        let port = port
            .parse()
            .map_err(|_| format!("{port:?} is not a port number"))?;
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if host.is_empty() || !host.chars().all(valid) {
            return Err(format!("{host:?} is neither an IP address nor a host name"));
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
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

impl Cli {
    /// Parses `args` (the program name first). The global flags (`--http-addr`,
    /// `--tls-cert`) count before or after a subcommand; any other flag of the hub
    /// given with a subcommand is refused rather than silently ignored.
    pub fn try_parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = Cli::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let Some((subcommand, _)) = matches.subcommand() else {
            return Ok(cli);
        };
        let ignored = command.get_arguments().find(|arg| {
            !arg.is_global_set()
                && matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine)
        });
        match ignored.and_then(|arg| arg.get_long()) {
            Some(flag) => Err(command.error(
                ErrorKind::ArgumentConflict,
                format!("--{flag} has no effect on `tcphub {subcommand}`"),
            )),
            None => Ok(cli),
        }
    }
}

/// Subcommands besides running the hub.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Exit 0 when /healthz on --http-addr answers 200 (for container health
    /// checks; an unspecified IP means loopback; with --tls-cert, over TLS
    /// trusting exactly that certificate).
    Healthcheck,
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// The operator commands (tokens, a device client, the HTTP API).
    #[command(flatten)]
    Ops(Box<crate::cli::OpsCommand>),
}

/// The flags of the hub itself.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address of the TCP listener for clients (IP:port or host:port).
    #[arg(long, env = "TCPHUB_TCP_ADDR", default_value = "0.0.0.0:9000")]
    pub tcp_addr: HostPort,
    /// Address of the HTTP API (IP:port or host:port); also what `healthcheck` asks.
    #[arg(
        long,
        env = "TCPHUB_HTTP_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub http_addr: HostPort,
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
    #[arg(long, env = "TCPHUB_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TCPHUB_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Frames a second each TCP client may send (0 = unlimited); past it, its
    /// socket is not read until the rate allows.
    #[arg(long, env = "TCPHUB_CLIENT_RATE_FRAMES", default_value_t = 1000)]
    pub client_rate_frames: u64,
    /// Bytes a second each TCP client may send (0 = unlimited).
    #[arg(long, env = "TCPHUB_CLIENT_RATE_BYTES", default_value_t = 1 << 20)]
    pub client_rate_bytes: u64,
    /// Seconds of either rate a quiet client may save up and send at once.
    #[arg(long, env = "TCPHUB_CLIENT_RATE_BURST", default_value_t = 10)]
    pub client_rate_burst: u64,
    /// Most bytes held in unfinished frames across all TCP clients; a client
    /// whose unfinished frame would pass it gets `bye` `frame_too_large`.
    #[arg(long, env = "TCPHUB_MAX_PENDING_BYTES", default_value_t = 64 << 20)]
    pub max_pending_bytes: usize,
    /// Most groups one TCP client may be in; past it, `error` `invalid_groups`.
    #[arg(long, env = "TCPHUB_MAX_GROUPS_PER_CLIENT", default_value_t = 64)]
    pub max_groups_per_client: usize,
    /// Most recipients, all items together, of one `POST /send`; past it, 413.
    #[arg(long, env = "TCPHUB_MAX_BULK_RECIPIENTS", default_value_t = 10_000)]
    pub max_bulk_recipients: usize,
    /// Directory of the mailbox database (SQLite); without it, stored messages
    /// are kept in memory and lost on restart.
    #[arg(long, env = "TCPHUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Longest `ttl` (seconds) a send may store a message for.
    #[arg(long, env = "TCPHUB_MAILBOX_MAX_TTL", default_value_t = 86_400)]
    pub mailbox_max_ttl: u64,
    /// Most messages stored per name; past it, 503 `mailbox_full`.
    #[arg(long, env = "TCPHUB_MAILBOX_CAPACITY", default_value_t = 1000)]
    pub mailbox_capacity: usize,
    /// Most message bytes stored in all; past it, 503 `mailbox_full`.
    #[arg(long, env = "TCPHUB_MAILBOX_MAX_BYTES", default_value_t = 1 << 30)]
    pub mailbox_max_bytes: u64,
    /// This hub's name, as `GET /nodes` lists it (default: the host name); its
    /// node id is the name and 8 hex digits, new at every start.
    #[arg(long, env = "TCPHUB_NODE_NAME")]
    pub node_name: Option<String>,
    /// Cluster mode: the NATS broker's URLs, comma-separated
    /// (`nats://a:4222,nats://b:4222`); without it the hub runs alone.
    #[arg(long, env = "TCPHUB_CLUSTER_NATS_URL")]
    pub cluster_nats_url: Option<String>,
    /// Names the buckets and subjects this cluster's nodes share.
    #[arg(long, env = "TCPHUB_CLUSTER_NAME", default_value = "tcphub")]
    pub cluster_name: String,
    /// Replicas of the cluster's key-value buckets and mailbox stream (at most the broker's servers).
    #[arg(long, env = "TCPHUB_CLUSTER_KV_REPLICAS", default_value_t = 1)]
    pub cluster_kv_replicas: usize,
    /// Seconds after its last heartbeat a silent node counts as dead.
    #[arg(long, env = "TCPHUB_CLUSTER_NODE_TTL", default_value_t = 5.0)]
    pub cluster_node_ttl: f64,
    /// Seconds between a node's heartbeats (at most half the node ttl).
    #[arg(long, env = "TCPHUB_CLUSTER_HEARTBEAT", default_value_t = 1.0)]
    pub cluster_heartbeat: f64,
    /// Seconds a call to the node holding a name may take (else 503 `node_unreachable`).
    #[arg(long, env = "TCPHUB_CLUSTER_RPC_TIMEOUT", default_value_t = 2.0)]
    pub cluster_rpc_timeout: f64,
    /// Seconds a listing waits for every node (the late ones are named in `missingNodes`).
    #[arg(long, env = "TCPHUB_CLUSTER_LIST_TIMEOUT", default_value_t = 1.0)]
    pub cluster_list_timeout: f64,
}

impl RunArgs {
    /// The hub configuration these flags describe, with the addresses the
    /// listeners' host names resolved to.
    pub fn to_config(&self, tcp_addr: SocketAddr, http_addr: SocketAddr) -> Config {
        let seconds = Duration::from_secs;
        Config {
            tcp_addr,
            http_addr,
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
            client_rate: InboundRate {
                frames_per_sec: self.client_rate_frames,
                bytes_per_sec: self.client_rate_bytes,
                burst: seconds(self.client_rate_burst),
            },
            max_pending_bytes: self.max_pending_bytes,
            max_groups_per_client: self.max_groups_per_client,
            max_bulk_recipients: self.max_bulk_recipients,
            data_dir: self.data_dir.clone(),
            mailbox_max_ttl: seconds(self.mailbox_max_ttl),
            mailbox_capacity: self.mailbox_capacity,
            mailbox_max_bytes: self.mailbox_max_bytes,
            node_name: self.node_name.clone(),
            cluster: self.cluster_nats_url.as_ref().map(|urls| ClusterSettings {
                cluster_name: self.cluster_name.clone(),
                node_name: self.node_name.clone().unwrap_or_else(host_name),
                nats_urls: urls.clone(),
                kv_replicas: self.cluster_kv_replicas,
                node_ttl: seconds_f64(self.cluster_node_ttl),
                heartbeat: seconds_f64(self.cluster_heartbeat),
                rpc_timeout: seconds_f64(self.cluster_rpc_timeout),
                list_timeout: seconds_f64(self.cluster_list_timeout),
            }),
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
    fn a_node_name_must_fit_node_ids_and_subjects() {
        for good in ["hub-a", "HUB_2", &"x".repeat(64)] {
            let config = Config {
                node_name: Some(good.to_owned()),
                ..Config::default()
            };
            assert_eq!(config.validate(), Ok(()), "{good}");
        }
        for bad in ["", "hub.a", "hub a", "hüb", &"x".repeat(65)] {
            let config = Config {
                node_name: Some(bad.to_owned()),
                ..Config::default()
            };
            assert_eq!(
                config.validate(),
                Err(ConfigError::NodeName(bad.to_owned())),
                "{bad}"
            );
        }
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
        let default = Config::default();
        let config = cli.run.to_config(default.tcp_addr, default.http_addr);
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
        let default = Config::default();
        assert_eq!(cli.run.tcp_addr.to_string(), default.tcp_addr.to_string());
        assert_eq!(cli.run.http_addr.to_string(), default.http_addr.to_string());
        let from_cli = cli.run.to_config(default.tcp_addr, default.http_addr);
        assert_eq!(from_cli.max_clients, default.max_clients);
        assert_eq!(from_cli.queue_capacity, default.queue_capacity);
        assert_eq!(from_cli.idle_timeout, None);
        assert_eq!(from_cli.shutdown_grace, default.shutdown_grace);
        assert_eq!(from_cli.event_buffer, default.event_buffer);
        assert_eq!(from_cli.client_rate, default.client_rate);
        assert_eq!(from_cli.max_pending_bytes, default.max_pending_bytes);
        assert_eq!(from_cli.http_header_timeout, default.http_header_timeout);
        assert_eq!(from_cli.http_idle_timeout, default.http_idle_timeout);
        assert_eq!(from_cli.max_http_connections, default.max_http_connections);
        assert_eq!(from_cli.max_event_streams, default.max_event_streams);
        assert_eq!(
            from_cli.max_groups_per_client,
            default.max_groups_per_client
        );
        assert_eq!(from_cli.max_bulk_recipients, default.max_bulk_recipients);
    }

    #[test]
    fn listen_addresses_are_ips_or_host_names_with_a_port() {
        let parse = |text: &str| text.parse::<HostPort>().map(|hp| hp.to_string());
        assert_eq!(parse("0.0.0.0:9000"), Ok("0.0.0.0:9000".into()));
        assert_eq!(parse("[::1]:8080"), Ok("[::1]:8080".into()));
        assert_eq!(parse("localhost:9000"), Ok("localhost:9000".into()));
        assert_eq!(
            parse("hub-1.example.net:0"),
            Ok("hub-1.example.net:0".into())
        );
        for bad in [
            "not-an-address",
            "localhost",
            ":9000",
            "localhost:70000",
            "a b:1",
            "::1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn listener_and_tls_flags_count_before_a_subcommand_and_others_are_refused() {
        for args in [
            &["tcphub", "--http-addr", "127.0.0.1:8199", "healthcheck"][..],
            &["tcphub", "healthcheck", "--http-addr", "127.0.0.1:8199"][..],
        ] {
            let cli = Cli::try_parse_args(args).unwrap();
            assert!(matches!(cli.command, Some(Command::Healthcheck)));
            assert_eq!(cli.run.http_addr.to_string(), "127.0.0.1:8199");
        }
        let cli = Cli::try_parse_args(["tcphub", "--tls-cert", "hub.pem", "healthcheck"]).unwrap();
        assert_eq!(cli.run.tls_cert, Some(PathBuf::from("hub.pem")));
        let refused = Cli::try_parse_args(["tcphub", "--max-clients", "5", "healthcheck"]);
        let refused = refused.map(|_| ()).unwrap_err().to_string();
        assert!(
            refused.contains("--max-clients has no effect on `tcphub healthcheck`"),
            "{refused}"
        );
    }
}
