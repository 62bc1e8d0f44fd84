//! What the bench reads about the server process from /proc: resident memory and CPU time.

use std::sync::{Mutex, OnceLock};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

/// The server process under test.
#[derive(Clone, Copy)]
pub struct ServerProcess {
    pid: u32,
}

impl ServerProcess {
    /// Watches process `pid`.
    pub fn new(pid: u32) -> Result<Self> {
        let process = ServerProcess { pid };
        process
            .rss_kib()
            .with_context(|| format!("server pid {pid} is not readable in /proc"))?;
        Ok(process)
    }

    /// Resident set size (`VmRSS` of /proc/<pid>/status) in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS line")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("empty VmRSS line")?
            .parse()?)
    }

    /// User plus system CPU time of every thread, dead or alive (utime + stime of /proc/<pid>/stat).
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds_of(self.pid)
    }
}

/// CPU time the load tool itself has used: on a machine it shares with the server, what it
/// spends per message is taken from what the server could have had.
fn own_cpu_seconds() -> Result<f64> {
    cpu_seconds_of(std::process::id())
}

/// Further processes every meter also reads, by label (`--watch`: in a cluster, the other
/// nodes and the broker, whose work for a message is not in the server's figure).
static WATCHED: OnceLock<Vec<(String, u32)>> = OnceLock::new();
/// What each watched process spent over the last metered phase.
static WATCHED_SPENT: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// Sets the processes to watch; called once, before any scenario runs.
pub fn watch(processes: Vec<(String, u32)>) {
    let _ = WATCHED.set(processes);
}

/// Parses a `--watch` value, `label=pid`.
pub fn parse_watched(text: &str) -> Result<(String, u32), String> {
    let (label, pid) = text.split_once('=').ok_or("expected label=pid")?;
    let pid = pid.parse().map_err(|e| format!("pid {pid}: {e}"))?;
    Ok((label.to_owned(), pid))
}

/// CPU seconds of every watched process over the last metered phase, by label.
pub fn watched_spent() -> Value {
    let spent = WATCHED_SPENT.lock().unwrap();
    Value::Object(Map::from_iter(
        spent
            .iter()
            .map(|(label, secs)| (label.clone(), Value::from(*secs))),
    ))
}

fn watched_cpu() -> Result<Vec<(String, f64)>> {
    WATCHED
        .get()
        .into_iter()
        .flatten()
        .map(|(label, pid)| Ok((label.clone(), cpu_seconds_of(*pid)?)))
        .collect()
}

/// CPU seconds of all watched processes together: not foreign load.
fn watched_total() -> Result<f64> {
    Ok(watched_cpu()?.iter().map(|(_, secs)| secs).sum())
}

/// The CPU time the server and the load tool each spend over one phase of a scenario.
pub struct CpuMeter {
    server: ServerProcess,
    server_before: f64,
    own_before: f64,
    watched_before: Vec<(String, f64)>,
}

/// CPU seconds spent during a phase.
pub struct CpuSpent {
    /// By the server under test.
    pub server: f64,
    /// By the load tool.
    pub load_tool: f64,
}

impl CpuMeter {
    /// Starts measuring now.
    pub fn start(server: ServerProcess) -> Result<Self> {
        Ok(CpuMeter {
            server,
            server_before: server.cpu_seconds()?,
            own_before: own_cpu_seconds()?,
            watched_before: watched_cpu()?,
        })
    }

    /// What each has spent since `start` (the watched processes' share is kept for
    /// `watched_spent`).
    pub fn spent(&self) -> Result<CpuSpent> {
        let watched = watched_cpu()?.into_iter().zip(&self.watched_before);
        *WATCHED_SPENT.lock().unwrap() = watched
            .map(|((label, now), (_, before))| (label, now - before))
            .collect();
        Ok(CpuSpent {
            server: self.server.cpu_seconds()? - self.server_before,
            load_tool: own_cpu_seconds()? - self.own_before,
        })
    }
}

/// User plus system CPU time of process `pid` (utime + stime of /proc/<pid>/stat).
fn cpu_seconds_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses; the fields follow the last ')'.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        bail!("malformed /proc/{pid}/stat")
    };
    // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
    let mut times = fields.split_whitespace().skip(11);
    let (Some(utime), Some(stime)) = (times.next(), times.next()) else {
        bail!("/proc/{pid}/stat has no utime and stime")
    };
    let ticks: u64 = utime.parse::<u64>()? + stime.parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64
}

/// Lifts this process's soft open-files limit to its hard limit: the bench holds one socket per client.
pub fn raise_open_files_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("getrlimit: {}", std::io::Error::last_os_error());
        }
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            bail!("setrlimit: {}", std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Watches how much CPU the rest of the machine used while a scenario ran: anything but the
/// server, the watched processes and the bench itself (a build, a test suite) skews every figure of that run.
pub struct ForeignLoad {
    server: ServerProcess,
    started: std::time::Instant,
    machine: f64,
    ours: f64,
}

impl ForeignLoad {
    /// Starts watching, alongside the server process.
    pub fn start(server: ServerProcess) -> Result<Self> {
        Ok(ForeignLoad {
            server,
            started: std::time::Instant::now(),
            machine: machine_busy_seconds()?,
            ours: server.cpu_seconds()? + own_cpu_seconds()? + watched_total()?,
        })
    }

    /// The share of the machine's CPU capacity used by other processes since `start`.
    pub fn share(&self) -> Result<f64> {
        let ours = self.server.cpu_seconds()? + own_cpu_seconds()? + watched_total()? - self.ours;
        let others = machine_busy_seconds()? - self.machine - ours;
        let capacity = self.started.elapsed().as_secs_f64()
            * std::thread::available_parallelism()?.get() as f64;
        // Clock ticks make very short runs imprecise; keep the share within its meaning.
        Ok((others / capacity).clamp(0.0, 1.0))
    }
}

/// CPU time the whole machine spent busy (the first line of /proc/stat, less idle and iowait).
fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Ok(busy as f64 / clock_ticks_per_second())
}
