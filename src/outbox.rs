//! One client's outbound path: a bounded queue of encoded frames in front of its
//! socket, and the rule that decides who writes.
//!
//! Whoever offers a frame while the queue is empty writes it straight to the socket
//! (a non-blocking write from the caller's thread, so a broadcast costs one syscall
//! per recipient and wakes no task). Only what the socket does not take at once is
//! queued; the connection task is then woken to flush it when the socket turns
//! writable, in as few vectored writes as it can. Frames are shared `Bytes`, so a
//! broadcast is serialized once for every recipient. The queue allocates only while
//! it holds frames.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::protocol::{ByeReason, HubFrame};

/// Most frames handed to one vectored write.
const MAX_WRITE_SLICES: usize = 64;

/// Something frames can be written to without blocking.
pub trait FrameSink {
    /// Writes as much of `bufs` as the socket takes now; `WouldBlock` when none.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl FrameSink for tokio::net::TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write_vectored(self, bufs)
    }
}

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Written to the socket, or queued behind frames that are.
    Accepted,
    /// The queue is at capacity; the frame was not taken.
    Full,
    /// The client is being disconnected; the frame was not taken.
    Closing,
}

/// Bytes and frames that reached the socket in one write.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Complete frames written.
    pub frames: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// The outbound queue of one client.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<State>,
    /// Set when frames were queued for the connection task; with the waker, this
    /// costs an idle client no registration beyond one waker slot.
    queued: AtomicBool,
    task: AtomicWaker,
}

#[derive(Debug, Default)]
struct State {
    /// Frames the socket has not taken yet; allocated only while there are some.
    backlog: Option<Box<Backlog>>,
    /// Set once the client is being disconnected; its `bye` is the last frame queued.
    closing: Option<ByeReason>,
}

#[derive(Debug, Default)]
struct Backlog {
    frames: VecDeque<Bytes>,
    /// Bytes of `frames[0]` already written.
    head_written: usize,
}

impl State {
    fn queued(&self) -> usize {
        self.backlog
            .as_ref()
            .map_or(0, |backlog| backlog.frames.len())
    }

    fn push(&mut self, frame: Bytes) -> &mut Backlog {
        let backlog = self.backlog.get_or_insert_with(Box::default);
        backlog.frames.push_back(frame);
        backlog
    }
}

impl Outbox {
    /// Writes or queues `frame`, unless the queue holds `capacity` frames already.
    ///
    /// `sink` is the socket to write to directly when nothing is queued; without
    /// one, frames are always queued for the connection task.
    pub fn offer(
        &self,
        frame: &Bytes,
        capacity: usize,
        sink: Option<&dyn FrameSink>,
    ) -> (Offer, Written) {
        let mut state = self.lock();
        if state.closing.is_some() {
            return (Offer::Closing, Written::default());
        }
        let queued = state.queued();
        if queued > 0 {
            if queued >= capacity {
                return (Offer::Full, Written::default());
            }
            state.push(frame.clone());
            return (Offer::Accepted, Written::default());
        }
        let written = match sink.map(|sink| sink.try_write_vectored(&[IoSlice::new(frame)])) {
            Some(Ok(n)) if n == frame.len() => {
                let bytes = n as u64;
                return (Offer::Accepted, Written { frames: 1, bytes });
            }
            Some(Ok(n)) => n,
            // WouldBlock, no sink, or a broken socket: the connection task flushes,
            // and meets the error itself if there is one.
            _ => 0,
        };
        state.push(frame.clone()).head_written = written;
        drop(state);
        self.wake_task();
        let bytes = written as u64;
        (Offer::Accepted, Written { frames: 0, bytes })
    }

    /// Queues the `bye` frame after everything already queued and refuses further
    /// frames. Returns false when the client was already being disconnected.
    pub fn close(&self, reason: ByeReason) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        state.closing = Some(reason);
        state.push(HubFrame::Bye { reason }.encode());
        drop(state);
        self.wake_task();
        true
    }

    /// Why the client is being disconnected, once it is.
    pub fn closing(&self) -> Option<ByeReason> {
        self.lock().closing
    }

    /// Frames waiting to be written.
    pub fn len(&self) -> usize {
        self.lock().queued()
    }

    /// Whether no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ready once frames were queued for the connection task to flush since the
    /// last time it was ready; registers the task to be woken otherwise.
    pub fn poll_queued(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.queued.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        if self.queued.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn wake_task(&self) {
        self.queued.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Writes queued frames until the queue is empty (`Ok(true)`) or the socket
    /// would block (`Ok(false)`).
    pub fn flush(&self, sink: &dyn FrameSink) -> io::Result<(bool, Written)> {
        let mut state = self.lock();
        let mut written = Written::default();
        while let Some(backlog) = state.backlog.as_mut() {
            let n = match sink
                .try_write_vectored(backlog.slices(&mut [IoSlice::new(&[]); MAX_WRITE_SLICES]))
            {
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok((false, written)),
                Err(err) => return Err(err),
            };
            written.bytes += n as u64;
            written.frames += backlog.consume(n);
            if backlog.frames.is_empty() {
                state.backlog = None;
            }
        }
        Ok((true, written))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue consistent (every
        // mutation is a single push or pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Backlog {
    /// The unwritten bytes, as up to `slots.len()` slices.
    fn slices<'a>(&'a self, slots: &'a mut [IoSlice<'a>]) -> &'a [IoSlice<'a>] {
        let mut frames = self.frames.iter();
        let mut count = 0;
        if let Some(head) = frames.next() {
            slots[0] = IoSlice::new(&head[self.head_written..]);
            count = 1;
        }
        for (slot, frame) in slots[count..].iter_mut().zip(frames) {
            *slot = IoSlice::new(frame);
            count += 1;
        }
        &slots[..count]
    }

    /// Drops the first `n` written bytes from the queue; returns the frames completed.
    fn consume(&mut self, mut n: usize) -> u64 {
        let mut completed = 0;
        while n > 0 {
            let Some(head) = self.frames.front() else {
                break;
            };
            let left = head.len() - self.head_written;
            if n < left {
                self.head_written += n;
                break;
            }
            n -= left;
            self.frames.pop_front();
            self.head_written = 0;
            completed += 1;
        }
        completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A sink that takes at most `room` bytes, then would block.
    struct FakeSocket {
        room: RefCell<usize>,
        got: RefCell<Vec<u8>>,
    }

    impl FakeSocket {
        fn with_room(room: usize) -> FakeSocket {
            FakeSocket {
                room: RefCell::new(room),
                got: RefCell::new(Vec::new()),
            }
        }
    }

    impl FrameSink for FakeSocket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut taken = 0;
            for buf in bufs {
                let n = buf.len().min(*room - taken);
                self.got.borrow_mut().extend_from_slice(&buf[..n]);
                taken += n;
            }
            *room -= taken;
            Ok(taken)
        }
    }

    #[test]
    fn an_empty_queue_writes_straight_to_the_socket() {
        let outbox = Outbox::default();
        let socket = FakeSocket::with_room(100);
        let frame = Bytes::from_static(b"hello\n");
        assert_eq!(
            outbox.offer(&frame, 1, Some(&socket)),
            (
                Offer::Accepted,
                Written {
                    frames: 1,
                    bytes: 6
                }
            )
        );
        assert!(outbox.is_empty());
        assert_eq!(socket.got.borrow().as_slice(), b"hello\n");
    }

    #[test]
    fn what_the_socket_refuses_is_queued_then_flushed_in_order() {
        let outbox = Outbox::default();
        let socket = FakeSocket::with_room(3);
        outbox.offer(&Bytes::from_static(b"first\n"), 10, Some(&socket));
        outbox.offer(&Bytes::from_static(b"second\n"), 10, Some(&socket));
        assert_eq!(outbox.len(), 2);
        *socket.room.borrow_mut() = 100;
        assert_eq!(
            outbox.flush(&socket).unwrap(),
            (
                true,
                Written {
                    frames: 2,
                    bytes: 10
                }
            )
        );
        assert_eq!(socket.got.borrow().as_slice(), b"first\nsecond\n");
    }

    #[test]
    fn a_full_queue_refuses_and_a_closing_one_too() {
        let outbox = Outbox::default();
        let frame = Bytes::from_static(b"x\n");
        assert_eq!(outbox.offer(&frame, 2, None).0, Offer::Accepted);
        assert_eq!(outbox.offer(&frame, 2, None).0, Offer::Accepted);
        assert_eq!(outbox.offer(&frame, 2, None).0, Offer::Full);
        assert!(outbox.close(ByeReason::Kicked));
        assert!(!outbox.close(ByeReason::Replaced), "the first reason wins");
        assert_eq!(outbox.offer(&frame, 10, None).0, Offer::Closing);
        let socket = FakeSocket::with_room(1000);
        outbox.flush(&socket).unwrap();
        assert_eq!(
            socket.got.borrow().as_slice(),
            b"x\nx\n{\"type\":\"bye\",\"reason\":\"kicked\"}\n"
        );
    }
}
