//! Which of an [`Upstream`](crate::Upstream)'s connection pools the current thread uses.
//!
//! The front runs each client connection on one thread for its whole life. A pooled
//! connection to the service is a task too, on the thread that opened it: a request from
//! another thread reusing it would hand its work across threads twice (there and back). So
//! each connection thread has pools of its own, and every other thread shares one.
//!
//! Each pool keeps up to `pool_max_idle_per_host` idle connections, so a service may see that
//! many per connection thread; in practice a pool holds only as many as its thread had
//! requests in flight at once.

use std::cell::Cell;

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Pools per upstream: the shared one, and one for each of up to this many connection
/// threads (beyond it, threads share: thread `MAX_THREADS + 1` the pools of thread 1, and so
/// on; correct, with a hand-off between threads now and then).
pub const MAX_THREADS: usize = 64;

/// The current thread is connection thread `n` (from 1): it uses its own pools from now on.
/// 0 means the shared pools.
pub fn enter(n: usize) {
    let slot = match n {
        0 => 0,
        n => (n - 1) % MAX_THREADS + 1,
    };
    SLOT.with(|s| s.set(slot));
}

/// The current thread's slot: 0 (shared) unless [`enter`]ed.
pub(crate) fn current() -> usize {
    SLOT.with(Cell::get)
}
