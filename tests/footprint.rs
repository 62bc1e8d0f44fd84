//! The two structures kept once per idle client stay inside the allocation size
//! classes that the idle memory figure of BENCHMARKS.md rests on: a field or a
//! local that pushes either over its class boundary costs every client 64 or
//! 128 bytes at once, which the benchmark shows only after the fact. (The bytes
//! themselves are measured by `bench/`, never here.)

use std::mem::{size_of, size_of_val};
use std::sync::Arc;

use tcphub::directory::{Directory, Node};
use tcphub::registry::{Client, Registry};
use tcphub::{Config, connection};
use tokio::net::{TcpListener, TcpStream};

/// What an `Arc` adds in front of its value: the two reference counts.
const ARC_COUNTS: usize = 16;
/// What a tokio task adds to its future on x86-64 (tokio 1.54): header 32,
/// scheduler handle and task id 16, stage tag 8, trailer 48; plus the task
/// tracker's token around the future, 8.
const TASK_OVERHEAD: usize = 32 + 16 + 8 + 48 + 8;

/// What mio adds to every socket in debug builds only (a selector id): the
/// classes that matter are those of the release build.
const DEBUG_ONLY: usize = if cfg!(debug_assertions) { 8 } else { 0 };

#[test]
fn a_client_fits_the_256_byte_class() {
    // jemalloc's classes here are ..., 224, 256, 320: over 240 bytes, every
    // client's `Arc<Client>` takes 320.
    let client = size_of::<Client>() - DEBUG_ONLY;
    assert!(client + ARC_COUNTS <= 256, "Client is {client} bytes");
}

#[tokio::test]
async fn a_connection_task_fits_256_bytes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (socket, peer) = listener.accept().await.unwrap();
    let node = Arc::new(Node::new(Some("footprint"), peer));
    let directory = Directory::local(Registry::new(&Config::default()), node);
    let task = connection::serve(directory, socket, peer);
    // Task allocations are aligned to 128 bytes: past 256, the next size is 384.
    assert!(
        size_of_val(&task) + TASK_OVERHEAD <= 256,
        "the connection future is {} bytes",
        size_of_val(&task)
    );
}
