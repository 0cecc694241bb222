//! The threads client connections run on: one single-threaded tokio runtime per CPU, each
//! connection on one of them for its whole life, as nginx runs each connection in one worker
//! process.
//!
//! Why not the multi-threaded runtime everything else runs on: a proxied request is a few
//! tasks handing work to each other (the connection, the pooled connection to the service,
//! the response body), and on a work-stealing scheduler each hand-off may wake another
//! worker thread to steal it. On the benchmark's 2 vCPUs (`proxy_vs_nginx`,
//! docs/performance.md) those wake-ups and context switches were the largest cost of a small
//! keep-alive request that the proxy controls. On a thread of its own, a connection's tasks
//! wake each other by pushing onto a local queue; with the service's pooled connections per
//! thread too ([`enclave_proxy::pool_slot`]), a request crosses no thread at all.
//!
//! Every thread accepts on every listener, so a connection usually starts on the thread that
//! accepted it, with no hand-off. Whichever thread is free first wins each accept, which can
//! leave one thread with more connections than another, and a connection cannot move once
//! it is served. So a thread holding two more connections than the least loaded one hands
//! what it accepts to that one instead ([`Workers::place`]): the counts never drift further
//! apart than that for long.
//!
//! What this gives up: a connection cannot be stolen by an idle thread while its own is busy
//! with another. So what computes for long runs elsewhere: challenge issuance and the store's
//! writes on each thread's blocking pool, the control plane on a thread of its own, and
//! WebAssembly guests on the runtime's multi-threaded scheduler
//! (`enclave_wasm::Host::run_guests_on`), their responses streamed back to the connection.
//! Two pieces still run inline and hold the thread while they do (docs/proxy.md "Threads"):
//! the appraisal of a client's RA-TLS evidence, once per connection, and the renewal of a
//! certificate that has reached three quarters of its life, in the handshake that finds it
//! due.
//!
//! Each thread's blocking pool holds a share of tokio's default 512 threads, so that the
//! process as a whole keeps that bound, and at a stop the runtime waits for what its pool
//! runs (a store write, say) as long as the stop's grace allows.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A thread hands a new connection over once it holds this many more than the least loaded.
const IMBALANCE: usize = 2;
/// Blocking threads for the whole process, shared out among the connection threads (tokio's
/// default for one runtime).
const BLOCKING_THREADS: usize = 512;

/// The connection threads, stopped when dropped.
pub(crate) struct Workers {
    handles: Vec<Handle>,
    /// Connections each thread serves now.
    load: Arc<[AtomicUsize]>,
    /// Tells each thread to stop, with how long its blocking pool may take to finish.
    stops: Mutex<Vec<oneshot::Sender<Duration>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// One connection counted on its thread until dropped.
pub(crate) struct Placed {
    load: Arc<[AtomicUsize]>,
    thread: usize,
}

impl Placed {
    /// The thread that serves the connection.
    pub(crate) fn thread(&self) -> usize {
        self.thread
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.load[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// `n` threads (at least one), each running a single-threaded runtime.
    pub(crate) fn start(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (stop, stopped) = oneshot::channel::<Duration>();
            let (started, runtime) = std::sync::mpsc::sync_channel(1);
            // The runtime is built, and dropped, on its own thread: a runtime dropped in an
            // async context (the caller's, should this fail part way) panics.
            let thread = std::thread::Builder::new()
                .name(format!("enclave-os-conn-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .max_blocking_threads((BLOCKING_THREADS / n).max(1))
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok(rt.handle().clone()));
                    enclave_proxy::pool_slot::enter(i + 1);
                    // Dropped without a word (serving failed part way): stop at once.
                    let grace = rt.block_on(stopped).unwrap_or_default();
                    // Whatever connection is still here is cut with the runtime; what its
                    // blocking pool runs is given the grace to finish.
                    rt.shutdown_timeout(grace);
                })?;
            // Waits for the thread to start: once, when serving begins.
            let handle = runtime.recv().map_err(|_| {
                std::io::Error::other("the thread ended before its runtime was built")
            })??;
            handles.push(handle);
            stops.push(stop);
            threads.push(thread);
        }
        Ok(Self {
            handles,
            load: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            stops: Mutex::new(stops),
            threads: Mutex::new(threads),
        })
    }

    /// Stop every thread: what still runs there is cut, and their blocking pools get up to
    /// `grace` to finish. Returns when the threads have ended.
    pub(crate) async fn stop(&self, grace: Duration) {
        for stop in lock(&self.stops).drain(..) {
            let _ = stop.send(grace);
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        // Joining blocks: not on this (async) thread.
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }

    /// How many threads there are.
    pub(crate) fn len(&self) -> usize {
        self.handles.len()
    }

    /// Each thread's runtime, in order.
    pub(crate) fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The thread a connection accepted on thread `me` is served on: `me`, unless it holds
    /// [`IMBALANCE`] more connections than the least loaded thread, which then takes it.
    pub(crate) fn place(&self, me: usize) -> Placed {
        let mine = self.load[me].load(Ordering::Relaxed);
        let (least, fewest) = self
            .load
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .enumerate()
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        let thread = if mine >= fewest + IMBALANCE {
            least
        } else {
            me
        };
        self.load[thread].fetch_add(1, Ordering::Relaxed);
        Placed {
            load: self.load.clone(),
            thread,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// Without a `stop` first (serving failed part way), the threads stop at once, unjoined:
// dropping may happen on an async thread, which must not block.
impl Drop for Workers {
    fn drop(&mut self) {
        for stop in lock(&self.stops).drain(..) {
            let _ = stop.send(Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn connections_stay_where_accepted_until_a_thread_holds_two_more() {
        let w = Workers::start(3).unwrap();
        let a = w.place(0);
        let b = w.place(0);
        assert_eq!((a.thread(), b.thread()), (0, 0));
        // Thread 0 holds 2, the others none: the next goes to the least loaded.
        let c = w.place(0);
        assert_ne!(c.thread(), 0);
        drop((a, b));
        // Thread 0 holds none now, and keeps what it accepts.
        assert_eq!(w.place(0).thread(), 0);
        assert_eq!(
            w.load
                .iter()
                .map(|l| l.load(Ordering::Relaxed))
                .sum::<usize>(),
            1
        );
    }
}
