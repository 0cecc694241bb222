//! When an HTTP/2 connection has been idle too long.
//!
//! HTTP/1.1 connections have hyper's header-read timeout: a keep-alive connection that sends
//! no next request in time is closed. HTTP/2 has no such timer, and its pings only prove the
//! peer is alive, not that it is using the connection: a client could hold thousands of
//! answered-ping connections forever. A connection with no request in flight for the limit
//! is told to close (GOAWAY); streams still sending their responses are left to finish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Requests in flight on one connection, and when the last one ended.
pub(crate) struct Idle {
    epoch: Instant,
    inflight: AtomicUsize,
    /// Milliseconds since `epoch` when the last request ended (or the connection began).
    last: AtomicU64,
}

/// One request in flight on the connection.
pub(crate) struct Busy(Arc<Idle>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last.store(self.0.now(), Ordering::Relaxed);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Idle {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            inflight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A request begins; it ends when the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `limit`.
    pub(crate) async fn expired(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            let wait = if self.inflight.load(Ordering::Acquire) > 0 {
                limit_ms
            } else {
                let since = self.now().saturating_sub(self.last.load(Ordering::Relaxed));
                if since >= limit_ms {
                    return;
                }
                limit_ms - since
            };
            tokio::time::sleep(Duration::from_millis(wait.max(10))).await;
        }
    }
}
