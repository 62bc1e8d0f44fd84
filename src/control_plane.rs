//! The control plane's thread: the HTTP API and this node's part in the
//! cluster run on one single-threaded runtime of their own, apart from the
//! runtime of the TCP clients.
//!
//! Apart, so that API requests never wait in a run queue behind busy client
//! connections: a flood of client frames does not starve the API. Together,
//! so that a request for a client on another node goes from its handler to
//! the broker and back, and a call from another node reaches the client's
//! socket, without crossing threads: every crossing wakes a thread, and on a
//! busy machine that costs about as much as the call itself.

use std::future::Future;
use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running thread; dropping this ends it, and every task still on it.
#[derive(Debug)]
pub struct ControlPlane {
    handle: Handle,
    /// Dropped with this, which ends the thread's wait and with it the runtime.
    _end: oneshot::Sender<()>,
}

impl ControlPlane {
    /// Starts the thread and its runtime.
    pub fn start() -> io::Result<ControlPlane> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (end, ended) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("tcphub-control".into())
            .spawn(move || {
                // Ends when the sender is dropped; the runtime goes with it.
                let _ = runtime.block_on(ended);
            })?;
        Ok(ControlPlane { handle, _end: end })
    }

    /// The runtime's handle, to spawn tasks on it or to register sockets with it.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `future` on the control plane's thread, so that whatever it
    /// spawns runs there too, and waits for its output.
    pub async fn run<F>(&self, future: F) -> io::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle
            .spawn(future)
            .await
            .map_err(|err| io::Error::other(format!("the control plane's task failed: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_future_runs_on_the_control_thread_and_so_do_its_tasks() {
        let control = ControlPlane::start().expect("start");
        let threads = control
            .run(async {
                let here = std::thread::current().name().map(str::to_owned);
                let spawned =
                    tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                        .await
                        .ok()
                        .flatten();
                (here, spawned)
            })
            .await
            .expect("run");
        let control_thread = Some("tcphub-control".to_owned());
        assert_eq!(threads, (control_thread.clone(), control_thread));
    }

    #[tokio::test]
    async fn dropping_it_ends_the_tasks_left_on_it() {
        let control = ControlPlane::start().expect("start");
        let (_keep, never) = oneshot::channel::<()>();
        let pending = control.handle().spawn(never);
        drop(control);
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), pending)
            .await
            .expect("the runtime ended")
            .expect_err("the task was cancelled");
        assert!(ended.is_cancelled());
    }
}
