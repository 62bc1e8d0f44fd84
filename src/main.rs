//! The `tcphub` binary: flags to [`Config`], logging, both listeners, signals.

mod healthcheck;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tcphub::config::{Cli, Command, HostPort, LogFormat, RunArgs};
use tcphub::fd_budget::FdBudget;
use tcphub::{Config, Hub};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// jemalloc's size classes and aligned allocations waste less per idle
/// connection than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: background threads return freed
/// pages to the system within about a second even when the hub goes quiet
/// after a burst (without them, purging waits for the next allocations), and
/// muzzy pages are returned at once. `_RJEM_MALLOC_CONF` can still override.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    let cli = Cli::try_parse_args(std::env::args_os()).unwrap_or_else(|err| err.exit());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tcphub: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Some(Command::Openapi) => {
                print!("{}", tcphub::api::openapi_json());
                Ok(())
            }
            Some(Command::Healthcheck) => {
                healthcheck::probe(&cli.run.http_addr, cli.run.tls_cert.as_deref()).await
            }
            Some(Command::Ops(command)) => tcphub::cli::run(*command).await,
            None => run(cli.run).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tcphub: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let tcp_addr = resolve("--tcp-addr", &args.tcp_addr).await?;
    let http_addr = resolve("--http-addr", &args.http_addr).await?;
    let config = args.to_config(tcp_addr, http_addr);
    config.validate()?;
    if config.open_api() {
        warn!(http = %config.http_addr, "the HTTP API answers every host that reaches it, without a token (--allow-insecure-api)");
    }
    raise_open_files_limit(&config);
    // Before the listeners: a data dir the hub cannot use stops it at once.
    let hub = Hub::open(config)?;
    let signals = Signals::new().context("cannot listen for signals")?;
    let tcp = TcpListener::bind(tcp_addr)
        .await
        .with_context(|| format!("cannot listen for TCP clients on {}", args.tcp_addr))?;
    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", args.http_addr))?;
    info!(tcp = %tcp.local_addr()?, http = %http.local_addr()?, "tcphub listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signals(signals, shutdown.clone()));
    hub.serve(tcp, http, shutdown).await?;
    Ok(())
}

/// The address `addr` names: an IP as given, or the first address its host name
/// resolves to, IPv4 first (`localhost` is then 127.0.0.1 also where IPv6 is off).
pub(crate) async fn resolve(flag: &str, addr: &HostPort) -> anyhow::Result<SocketAddr> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((addr.host(), addr.port()))
        .await
        .with_context(|| format!("cannot resolve {flag} {addr}"))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .with_context(|| format!("{flag} {addr} resolves to no address"))
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log sink that went away must not take the process down with it (a panic
    // while reporting the failed write would kill the signal task).
    // Colours only on a terminal: in a file, a pipe or `docker logs` they are
    // escape codes in every line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Each client holds a file descriptor: the soft limit is raised to the hard
/// one, then shared between clients and HTTP connections.
fn raise_open_files_limit(config: &Config) {
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        warn!(%err, "could not raise the open files limit");
    }
    let budget = FdBudget::current(config);
    info!(
        open_files = budget.open_files,
        http_reserve = budget.http_reserve,
        max_clients = config.max_clients,
        clients = budget.clients,
        "open files limit"
    );
}

/// SIGTERM and SIGINT, listened to from the moment this is made (so a signal
/// sent right after the hub logs its addresses is never missed).
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Cancels `shutdown` on the first signal; exits at once on the second.
async fn stop_on_signals(mut signals: Signals, shutdown: CancellationToken) {
    signals.next().await;
    info!("signal received: draining (send it again to exit at once)");
    shutdown.cancel();
    signals.next().await;
    warn!("second signal: exiting without draining");
    std::process::exit(1);
}
