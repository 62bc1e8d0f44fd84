//! The `tcphub` binary: flags to [`Config`], logging, both listeners, signals.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tcphub::Hub;
use tcphub::config::{Cli, Command, LogFormat, RunArgs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// jemalloc's size classes and aligned allocations waste less per idle
/// connection than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How long `tcphub healthcheck` waits for an answer.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            Some(Command::Healthcheck { http_addr }) => healthcheck(http_addr).await,
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
    let config = args.to_config();
    config.validate()?;
    raise_open_files_limit();
    let signals = Signals::new().context("cannot listen for signals")?;
    let tcp = TcpListener::bind(config.tcp_addr)
        .await
        .with_context(|| format!("cannot listen for TCP clients on {}", config.tcp_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
    info!(tcp = %tcp.local_addr()?, http = %http.local_addr()?, "tcphub listening");
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signals(signals, shutdown.clone()));
    Hub::new(config).serve(tcp, http, shutdown).await?;
    Ok(())
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

/// Each client holds a file descriptor: the soft limit is raised to the hard one.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        // A few descriptors go to the listeners, the runtime and logging.
        Ok(limit) => info!(
            open_files = limit,
            clients = limit.saturating_sub(32),
            "open files limit"
        ),
        Err(err) => warn!(%err, "could not raise the open files limit"),
    }
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

/// Exits 0 when `GET /healthz` on `http_addr` answers 200.
async fn healthcheck(mut http_addr: SocketAddr) -> anyhow::Result<()> {
    if http_addr.ip().is_unspecified() {
        http_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let status = tokio::time::timeout(HEALTHCHECK_TIMEOUT, status_of_healthz(http_addr))
        .await
        .context("no answer in time")??;
    if status != "200" {
        bail!("/healthz answered {status}");
    }
    Ok(())
}

/// The status code of a one-shot `GET /healthz` over HTTP/1.0.
async fn status_of_healthz(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request = format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).await?;
    let head = String::from_utf8_lossy(&head[..n]);
    match head.split_whitespace().nth(1) {
        Some(status) => Ok(status.to_owned()),
        None => bail!("not an HTTP answer"),
    }
}
