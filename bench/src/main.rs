//! tcphub-bench: the load tool behind BENCHMARKS.md. It drives tcphub, the Node seed design,
//! NATS, Redis and Mosquitto through the same three scenarios (idle, fanout, direct; and tcphub
//! and the seed design through a fourth, flood; and tcphub alone through group and bulk) and
//! prints one JSON line per run; the exit status is non-zero when any message was lost,
//! duplicated or misrouted, or any client failed to register.

mod bulk;
mod cluster;
mod groups;
mod http;
mod mailbox;
mod rounds;
mod scenario;
mod server;
mod wire;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use scenario::Common;
use serde_json::{json, Value};
use server::{ForeignLoad, ServerProcess};

#[derive(Parser)]
#[command(about = "Benchmarks pushing messages to many TCP clients")]
struct Cli {
    /// Runtime threads for the bench itself (1 = a current-thread runtime, leaving the
    /// other core to the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Another process whose CPU time over the measured phase is reported, as `label=pid`
    /// (cluster runs: the other nodes and the broker); repeat for several.
    #[arg(long, global = true, value_parser = server::parse_watched)]
    watch: Vec<(String, u32)>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N registered idle clients: server memory per connection, registrations per second.
    Idle {
        #[command(flatten)]
        common: Common,
        /// Seconds to wait after the last registration before the final memory reading.
        #[arg(long, default_value_t = 2)]
        settle_secs: u64,
    },
    /// Repeated broadcasts to N clients: time until the last client has it, CPU per message.
    Fanout {
        #[command(flatten)]
        common: Common,
        /// Measured rounds.
        #[arg(long, default_value_t = 50)]
        rounds: usize,
        /// Unmeasured rounds first.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
    },
    /// Sends to random clients with a fixed number in flight: rate, latency, CPU per message.
    Direct {
        #[command(flatten)]
        common: Common,
        /// Messages in flight (each sender waits for its message to arrive).
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// Messages in total.
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
    },
    /// Flooding clients write `info` frames while one sender times directed messages.
    Flood {
        #[command(flatten)]
        common: Common,
        /// Connections writing frames as fast as the server reads them.
        #[arg(long, default_value_t = 50)]
        flooders: usize,
        /// Directed messages, sent one at a time.
        #[arg(long, default_value_t = 2000)]
        messages: usize,
    },
    /// The offline mailbox scenarios (tcphub only): see mailbox.rs.
    #[command(flatten)]
    Mailbox(mailbox::Scenario),
    /// The cluster scenarios (several tcphub nodes on one broker): see cluster.rs.
    #[command(flatten)]
    Cluster(cluster::Scenario),
    /// Broadcasts, sends to a group of every client and sends to small groups, interleaved:
    /// CPU per delivery of each (tcphub; needs --groups-per-client 2 or more).
    Group {
        #[command(flatten)]
        common: Common,
        /// Blocks of the three phases.
        #[arg(long, default_value_t = 5)]
        blocks: usize,
        /// Broadcasts, and sends to the group of every client, per block.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Sends to a group of --group-size per block.
        #[arg(long, default_value_t = 1000)]
        small_sends: usize,
        /// Unmeasured rounds of each phase first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
    },
    /// Broadcasts and bulk sends (`POST /send`, a message of its own for every client),
    /// interleaved: CPU per delivery and time until the last client has it (tcphub).
    Bulk {
        #[command(flatten)]
        common: Common,
        /// Blocks of the two phases.
        #[arg(long, default_value_t = 5)]
        blocks: usize,
        /// Broadcasts, and bulk sends, per block.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Unmeasured rounds of each phase first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
    },
    /// Waits until every address accepts TCP connections (a freshly started server is up).
    Wait {
        /// An address to wait for; repeat for several.
        #[arg(long, required = true)]
        addr: Vec<SocketAddr>,
        #[arg(long, default_value_t = 15)]
        timeout_secs: u64,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Idle { .. } => "idle",
            Command::Fanout { .. } => "fanout",
            Command::Direct { .. } => "direct",
            Command::Flood { .. } => "flood",
            Command::Mailbox(scenario) => scenario.name(),
            Command::Cluster(scenario) => scenario.name(),
            Command::Group { .. } => "group",
            Command::Bulk { .. } => "bulk",
            Command::Wait { .. } => "wait",
        }
    }
}

fn main() {
    let cli = Cli::parse();
    server::watch(cli.watch);
    let runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tcphub-bench: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let scenario = cli.command.name();
    let passed = match runtime.block_on(run(cli.command)) {
        Ok(None) => true,
        Ok(Some((ok, line))) => {
            println!("{line}");
            if !ok {
                eprintln!("tcphub-bench: {scenario}: losses or failures, see the JSON line");
            }
            ok
        }
        Err(e) => {
            eprintln!("tcphub-bench: {scenario}: {e:#}");
            false
        }
    };
    // Exit without dropping the runtime: thousands of subscriber tasks never finish on their
    // own, and the kernel closes their sockets faster than tearing them down one by one.
    std::process::exit(if passed { 0 } else { 1 });
}

/// Runs one command; scenarios return whether they passed and their JSON line.
async fn run(command: Command) -> Result<Option<(bool, Value)>> {
    let scenario = command.name();
    let (common, (ok, results)) = match command {
        Command::Wait { addr, timeout_secs } => {
            wait_for(&addr, Duration::from_secs(timeout_secs)).await?;
            return Ok(None);
        }
        Command::Mailbox(scenario) => return mailbox::run(scenario).await.map(Some),
        Command::Cluster(scenario) => return cluster::run(scenario).await.map(Some),
        Command::Idle {
            common,
            settle_secs,
        } => {
            let load = watch(&common)?;
            let outcome = scenario::idle(&common, Duration::from_secs(settle_secs)).await?;
            (common, with_load(outcome, &load)?)
        }
        Command::Fanout {
            common,
            rounds,
            warmup,
        } => {
            let load = watch(&common)?;
            let outcome = scenario::fanout(&common, rounds, warmup).await?;
            (common, with_load(outcome, &load)?)
        }
        Command::Direct {
            common,
            inflight,
            messages,
        } => {
            let load = watch(&common)?;
            let outcome = scenario::direct(&common, inflight, messages).await?;
            (common, with_load(outcome, &load)?)
        }
        Command::Flood {
            common,
            flooders,
            messages,
        } => {
            let load = watch(&common)?;
            let outcome = scenario::flood(&common, flooders, messages).await?;
            (common, with_load(outcome, &load)?)
        }
        Command::Group {
            common,
            blocks,
            rounds,
            small_sends,
            warmup,
        } => {
            let load = watch(&common)?;
            let outcome = groups::group(&common, blocks, rounds, small_sends, warmup).await?;
            (common, with_load(outcome, &load)?)
        }
        Command::Bulk {
            common,
            blocks,
            rounds,
            warmup,
        } => {
            let load = watch(&common)?;
            let outcome = bulk::bulk(&common, blocks, rounds, warmup).await?;
            (common, with_load(outcome, &load)?)
        }
    };
    let mut line = json!({
        "scenario": scenario,
        "target": common.target,
        "clients": common.clients,
        "payload_bytes": common.payload_bytes,
        "ok": ok,
    });
    line.as_object_mut()
        .expect("an object")
        .extend(results.as_object().expect("an object").clone());
    Ok(Some((ok, line)))
}

/// Prepares a scenario run: lifts the open-files limit and starts watching foreign load.
fn watch(common: &Common) -> Result<ForeignLoad> {
    server::raise_open_files_limit()?;
    ForeignLoad::start(ServerProcess::new(common.server_pid)?)
}

/// Adds the share of CPU that other processes took during the run to its results.
fn with_load((ok, mut results): (bool, Value), load: &ForeignLoad) -> Result<(bool, Value)> {
    results["foreign_cpu_share"] = json!(load.share()?);
    results["watched_cpu_secs"] = server::watched_spent();
    Ok((ok, results))
}

async fn wait_for(addrs: &[SocketAddr], patience: Duration) -> Result<()> {
    let deadline = Instant::now() + patience;
    for addr in addrs {
        loop {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    bail!("{addr} not accepting after {patience:?}: {e}")
                }
                // Polling is the only signal a separate server process gives us.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}
