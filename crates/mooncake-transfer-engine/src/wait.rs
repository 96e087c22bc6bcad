//! Waiting for a future from synchronous code on a tokio runtime's thread, without a
//! nested `Handle::block_on`.
//!
//! A thread inside `Runtime::block_on` (Python's calling thread, a `#[tokio::test]` body,
//! a binary's main future) parks on a per-thread tokio parker. A nested
//! `Handle::block_on` on that thread parks on the same one, and swallows the wake-ups
//! meant for the outer future's other branches: a `join!` of a large lent exchange and
//! its master call hung for good that way. [`drive_here`] sleeps in
//! `std::thread::park` instead, whose token is the thread's own, so those wake-ups stay
//! for the outer `block_on`.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// Drives `fut` to completion on this thread within `handle`'s runtime (its reactor,
/// timers and spawns), sleeping in `std::thread::park` between polls. For a thread that
/// may not block the runtime, see [`wait_in_place`].
pub fn drive_here<F: Future>(handle: &tokio::runtime::Handle, fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let _runtime = handle.enter();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// Waits for `fut` on the calling thread of a multi-threaded runtime: the thread blocks in
/// place (a worker first hands its other tasks to another thread) and drives `fut` itself
/// ([`drive_here`]). Panics outside a multi-threaded runtime, as `block_in_place` does.
pub fn wait_in_place<F: Future>(fut: F) -> F::Output {
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| drive_here(&handle, fut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The outer future's other branch (a timer) fires while the wait blocks its thread;
    /// its wake-up must still reach the outer `block_on`.
    #[test]
    fn a_wait_beside_another_branch_keeps_its_wakeup() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for _ in 0..20 {
                    let slow = async {
                        wait_in_place(tokio::time::sleep(Duration::from_millis(3)));
                    };
                    tokio::join!(tokio::time::sleep(Duration::from_millis(1)), slow);
                }
            });
            let _ = tx.send(());
        });
        assert!(
            rx.recv_timeout(Duration::from_secs(30)).is_ok(),
            "the outer join! hung: its timer's wake-up was lost"
        );
    }
}
