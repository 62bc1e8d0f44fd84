//! The mailbox database on a disk that fills up or is read-only, proven on a
//! real filesystem: each test mounts a tmpfs of a few hundred KiB of its own
//! (the suite runs as root; without the right to mount, the tests fail and
//! say so). A full disk is 503 `mailbox_full` while the hub keeps serving, and
//! nothing it answered 202 is lost; a hub that cannot write its data dir at
//! start, full or read-only, stops with one line naming it. No part of the
//! hub may panic on the way.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, Once};

use common::{TestClient, TestHub};
use serde_json::{Value, json};
use tcphub::{Config, Hub};

/// Bytes of JSON text of each filling message: about one database page.
const BODY_BYTES: usize = 4000;

/// A tmpfs mounted on a fresh directory; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(test: &str, size: &str) -> Tmpfs {
        let dir = std::env::temp_dir().join(format!("tcphub-disk-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        mount(
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"],
            &dir,
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn remount(&self, mode: &str) {
        mount(&["-o", &format!("remount,{mode}")], &self.dir);
    }

    /// Writes a file until the disk refuses more; returns its path.
    fn fill(&self) -> PathBuf {
        let path = self.dir.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(28) => return path, // ENOSPC
                Err(err) => panic!("filling {}: {err}", path.display()),
            }
        }
    }
}

fn mount(args: &[&str], dir: &Path) {
    let output = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        output.status.success(),
        "`mount {} {}` failed (these tests need root to mount a tmpfs): {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // The database's writer thread may still be closing it: detach then.
        let unmounted = Command::new("umount").arg(&self.dir).output();
        if !unmounted.is_ok_and(|output| output.status.success()) {
            let _ = Command::new("umount").arg("--lazy").arg(&self.dir).output();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The names of the threads that panicked since [`record_panics`] was first called.
static PANICKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static RECORDING: Once = Once::new();

/// Records the thread of every panic from now on, then reports it as usual.
fn record_panics() {
    RECORDING.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            PANICKED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(thread);
            report(info);
        }));
    });
}

/// Fails if a thread of this test's hub panicked: this test's own thread (its
/// in-process runtime runs the hub's tasks, whose panics tokio would catch),
/// the control plane (HTTP and cluster) or the database writer. Other tests' failures are theirs.
fn assert_the_hub_never_panicked() {
    let me = std::thread::current().name().unwrap_or("").to_owned();
    let panicked = PANICKED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ours: Vec<_> = panicked
        .iter()
        .filter(|thread| {
            **thread == me || ["tcphub-control", "mailbox-writer"].contains(&thread.as_str())
        })
        .collect();
    assert!(ours.is_empty(), "the hub panicked on {ours:?}");
}

fn config(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        ..Config::default()
    }
}

/// A message of about [`BODY_BYTES`], distinct for each `n`.
fn big(n: usize) -> Value {
    json!(format!("{n:04}{}", "x".repeat(BODY_BYTES - 4)))
}

fn frame(id: &Value, message: Value) -> Value {
    json!({"type": "message", "id": id, "scope": "direct", "message": message})
}

fn disk_full() -> Value {
    json!({
        "type": "urn:tcphub:problem:mailbox_full",
        "title": "Mailbox full",
        "status": 503,
        "detail": "the disk of the mailbox database is full; nothing was stored",
        "code": "mailbox_full",
    })
}

/// Stores big messages for `name` until the disk is full: the ids of those
/// answered 202, in order. Every answer is a 202 that stored, until the one
/// 503 `mailbox_full` that ends it.
async fn store_until_full(hub: &TestHub, name: &str) -> Vec<Value> {
    let mut stored = Vec::new();
    for n in 0..1000 {
        let (status, answer) = hub
            .post(
                &format!("/clients/{name}/send?ttl=600"),
                json!({"message": big(n)}),
            )
            .await;
        if status == 503 {
            assert_eq!(answer, disk_full());
            return stored;
        }
        assert_eq!(
            (status, &answer),
            (
                202,
                &json!({"id": answer["id"], "queued": 0, "stored": true})
            )
        );
        stored.push(answer["id"].clone());
    }
    panic!("1000 messages of {BODY_BYTES} bytes fitted on the small disk");
}

#[tokio::test]
async fn a_full_disk_is_503_mailbox_full_and_every_202_is_delivered() {
    record_panics();
    let disk = Tmpfs::mount("full", "512k");
    let hub = TestHub::start(config(disk.path())).await;
    // Room to give back later, to show that the hub stores again without a restart.
    let reserve = disk.path().join("reserve");
    std::fs::write(&reserve, vec![0u8; 64 * 1024]).unwrap();

    let stored = store_until_full(&hub, "dev").await;
    assert!(stored.len() >= 10, "only {} fitted", stored.len());
    let metrics = hub.metrics().await;
    let count = format!("tcphub_mailbox_messages {}\n", stored.len());
    assert!(metrics.contains(&count), "{metrics}");
    // Not a byte left: removing what is delivered cannot be committed now.
    let filler = disk.fill();

    // Nothing else needs the disk: live clients are served as before.
    let mut live = TestClient::synced(&hub, "live").await;
    hub.expect_marker_next(&mut live, "live").await;
    let (status, _) = hub.get("/readyz").await;
    assert_eq!(status, 200);
    let mut dev = TestClient::synced(&hub, "dev").await;
    for (n, id) in stored.iter().enumerate() {
        assert_eq!(dev.recv().await, frame(id, big(n)));
    }
    hub.expect_marker_next(&mut dev, "dev").await;

    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&reserve).unwrap();
    let (status, after) = hub
        .post("/clients/dev-2/send?ttl=600", json!({"message": "after"}))
        .await;
    assert_eq!(
        (status, &after),
        (
            202,
            &json!({"id": after["id"], "queued": 0, "stored": true})
        )
    );
    hub.stop().await;

    // The removals that failed went with that later commit: after a restart
    // (on a disk grown enough to start), only the new message is stored.
    disk.remount("size=2m");
    let hub = TestHub::start(config(disk.path())).await;
    let (_, list) = hub.get("/mailboxes").await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(list["mailboxes"][0]["name"], "dev-2");
    assert_eq!(list["mailboxes"][0]["pending"], 1);
    hub.stop().await;
    assert_the_hub_never_panicked();
}

#[tokio::test]
async fn a_hub_started_on_a_full_disk_says_so_in_one_line_and_loses_nothing() {
    record_panics();
    let disk = Tmpfs::mount("full-at-start", "512k");
    let hub = TestHub::start(config(disk.path())).await;
    let (_, kept) = hub
        .post("/clients/dev/send?ttl=600", json!({"message": "kept"}))
        .await;
    hub.stop().await;
    let filler = disk.fill();

    let err = match Hub::open(config(disk.path())) {
        Ok(_) => panic!("the hub opened a data dir on a full disk"),
        Err(err) => err.to_string(),
    };
    assert_eq!(
        err,
        format!(
            "data dir {} has no room left: No space left on device (os error 28); \
             free some space or use another --data-dir",
            disk.path().display()
        )
    );

    std::fs::remove_file(filler).unwrap();
    let hub = TestHub::start(config(disk.path())).await;
    let mut dev = TestClient::synced(&hub, "dev").await;
    assert_eq!(dev.recv().await, frame(&kept["id"], json!("kept")));
    hub.expect_marker_next(&mut dev, "dev").await;
    hub.stop().await;
    assert_the_hub_never_panicked();
}

#[tokio::test]
async fn a_read_only_data_dir_stops_the_binary_with_one_line_and_keeps_its_messages() {
    let disk = Tmpfs::mount("read-only", "512k");
    let hub = TestHub::start(config(disk.path())).await;
    let (_, kept) = hub
        .post("/clients/dev/send?ttl=600", json!({"message": "kept"}))
        .await;
    hub.stop().await;
    disk.remount("ro");

    let output = Command::new(env!("CARGO_BIN_EXE_tcphub"))
        .args(["--tcp-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(disk.path())
        .env_remove("TCPHUB_DATA_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!(
            "tcphub: data dir {} is not writable: Read-only file system (os error 30)\n",
            disk.path().display()
        )
    );

    disk.remount("rw");
    let hub = TestHub::start(config(disk.path())).await;
    let mut dev = TestClient::synced(&hub, "dev").await;
    assert_eq!(dev.recv().await, frame(&kept["id"], json!("kept")));
    hub.stop().await;
}
