//! A real `nats-server` with JetStream for the cluster tests: started on a
//! free loopback port (read back from its ports file), restartable on the same
//! port with its storage dir or without, pausable with SIGSTOP, killed when dropped.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` on PATH; without one
//! the test fails (it never skips): `eval "$(scripts/nats-servers.sh)"`
//! installs the official builds.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to write its ports file.
const START_PATIENCE: Duration = Duration::from_secs(20);
/// The oldest server line cluster mode supports.
const MIN_VERSION: (u32, u32) = (2, 10);

/// A running `nats-server`; dropping it kills it and removes its directory.
pub struct NatsServer {
    bin: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    port: u16,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port of 127.0.0.1.
    pub fn start() -> NatsServer {
        let bin = binary();
        let dir = scratch_dir();
        let mut server = NatsServer {
            child: Some(spawn(&bin, &dir, None)),
            bin,
            dir,
            port: 0,
        };
        // Owned by `server` already, so a failure here still kills it.
        server.port = server.wait_for_port();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// storage dir; memory-stored streams are gone, as after any crash.
    pub fn restart(&mut self) {
        self.kill();
        self.start_again();
    }

    /// Kills the server and starts it again on the same port with an empty
    /// storage dir: a broker replaced, or one whose disk was lost, with
    /// every stream and bucket.
    pub fn restart_without_storage(&mut self) {
        self.kill();
        std::fs::remove_dir_all(self.dir.join("store")).expect("remove the storage dir");
        self.start_again();
    }

    fn start_again(&mut self) {
        self.child = Some(spawn(&self.bin, &self.dir, Some(self.port)));
        assert_eq!(
            self.wait_for_port(),
            self.port,
            "the restarted server took another port"
        );
    }

    /// Waits for the ports file, which the server writes once it accepts clients.
    fn wait_for_port(&mut self) -> u16 {
        let started = Instant::now();
        loop {
            if let Some(port) = read_port(&self.dir.join("ports")) {
                return port;
            }
            let child = self.child.as_mut().expect("the server is not running");
            if let Some(status) = child.try_wait().expect("poll nats-server") {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("nats-server exited with {status} before listening:\n{log}");
            }
            assert!(
                started.elapsed() < START_PATIENCE,
                "nats-server wrote no ports file within {START_PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server is not running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // SIGKILL ends a paused (stopped) server too: no SIGCONT needed.
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The server binary, checked to be 2.10 or newer.
fn binary() -> PathBuf {
    let bin = match std::env::var_os("NATS_SERVER_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join("nats-server"))
                    .find(|candidate| candidate.is_file())
            })
            .unwrap_or_else(|| {
                panic!(
                    "nats-server not found: set NATS_SERVER_BIN or put nats-server on PATH \
                     (eval \"$(scripts/nats-servers.sh)\" installs it)"
                )
            }),
    };
    let output = Command::new(&bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", bin.display()));
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let parsed = version.rsplit_once('v').map(|(_, v)| {
        v.split('.')
            .map_while(|n| n.parse::<u32>().ok())
            .collect::<Vec<_>>()
    });
    match parsed.as_deref() {
        Some([major, minor, ..]) if (*major, *minor) >= MIN_VERSION => bin,
        _ => panic!(
            "{} reports {version:?}: cluster mode needs nats-server 2.10 or newer \
             (eval \"$(scripts/nats-servers.sh)\" installs it)",
            bin.display()
        ),
    }
}

/// A new empty directory under the system temp dir, unique to this process and call.
fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tcphub-nats-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ports")).expect("create the server's directory");
    dir
}

/// Starts the server in `dir` on `port` (a free one when `None`), after
/// removing the ports file of an earlier run.
fn spawn(bin: &Path, dir: &Path, port: Option<u16>) -> Child {
    let ports_dir = dir.join("ports");
    for old in std::fs::read_dir(&ports_dir)
        .expect("read ports dir")
        .flatten()
    {
        let _ = std::fs::remove_file(old.path());
    }
    let port_arg = port.map_or_else(|| "-1".to_owned(), |port| port.to_string());
    Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js"])
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(&ports_dir)
        .arg("-l")
        .arg(dir.join("server.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", bin.display()))
}

/// The client port from the ports file (`{"nats":["nats://127.0.0.1:N"]}`).
fn read_port(ports_dir: &Path) -> Option<u16> {
    let entry = std::fs::read_dir(ports_dir).ok()?.flatten().next()?;
    let text = std::fs::read_to_string(entry.path()).ok()?;
    let ports: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = ports["nats"][0].as_str()?;
    url.rsplit_once(':')?.1.parse().ok()
}
