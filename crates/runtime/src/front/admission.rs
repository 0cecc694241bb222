//! Admission of connections to a listener: a cap on all of them, optionally one per source
//! address, and a log of refusals that a flood cannot turn into a flood of log lines.
//!
//! Connections are admitted before anyone authenticates (the TLS handshake comes after), so a
//! cap alone lets one client fill every slot. The witness listener, whose clients are a few
//! known instances, also caps each source address, so one address cannot take every slot; the
//! RA-TLS listener does when `limits.max_connections_per_source` says so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// How often a listener logs that it refused connections (with how many since the last line).
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Connections held, by source address.
type BySource = Arc<Mutex<HashMap<IpAddr, u32>>>;

pub(crate) struct Admission {
    listener: &'static str,
    all: Arc<Semaphore>,
    per_source: Option<(u32, BySource)>,
    refused_since_log: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

/// A connection's slot; given back when dropped.
pub(crate) struct Slot {
    _all: OwnedSemaphorePermit,
    source: Option<(IpAddr, BySource)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((ip, counts)) = &self.source {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = counts.get_mut(ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(ip);
                }
            }
        }
    }
}

impl Admission {
    /// At most `all` connections; with `per_source`, at most that many from one address.
    pub(crate) fn new(listener: &'static str, all: usize, per_source: Option<u32>) -> Self {
        Self {
            listener,
            all: Arc::new(Semaphore::new(all)),
            per_source: per_source.map(|n| (n.max(1), Arc::new(Mutex::new(HashMap::new())))),
            refused_since_log: AtomicU64::new(0),
            last_log: Mutex::new(None),
        }
    }

    /// A slot for a connection from `from`, or `None` (counted, and logged at most once a
    /// second) when the listener or that address is at its cap.
    pub(crate) fn admit(&self, from: IpAddr, metrics: &Metrics) -> Option<Slot> {
        let slot = self.try_admit(from);
        if slot.is_none() {
            metrics.connections_refused.fetch_add(1, Ordering::Relaxed);
            let refused = self.refused_since_log.fetch_add(1, Ordering::Relaxed) + 1;
            let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                *last = Some(Instant::now());
                self.refused_since_log.store(0, Ordering::Relaxed);
                tracing::warn!(
                    listener = self.listener,
                    refused,
                    "connection limit reached; connections dropped"
                );
            }
        }
        slot
    }

    fn try_admit(&self, from: IpAddr) -> Option<Slot> {
        let all = self.all.clone().try_acquire_owned().ok()?;
        let source = match &self.per_source {
            None => None,
            Some((max, counts)) => {
                let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
                let n = c.entry(from).or_insert(0);
                if *n >= *max {
                    return None;
                }
                *n += 1;
                Some((from, counts.clone()))
            }
        };
        Some(Slot { _all: all, source })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_source_cannot_take_every_slot_and_slots_come_back() {
        let a = Admission::new("test", 4, Some(2));
        let m = Metrics::new();
        let x: IpAddr = "10.0.0.1".parse().unwrap();
        let y: IpAddr = "10.0.0.2".parse().unwrap();
        let x1 = a.admit(x, &m).unwrap();
        let _x2 = a.admit(x, &m).unwrap();
        assert!(a.admit(x, &m).is_none(), "a third from one source");
        let _y1 = a.admit(y, &m).unwrap();
        let _y2 = a.admit(y, &m).unwrap();
        drop(x1);
        // The listener is full (x2, y1, y2 and one free slot): x gets its slot back.
        assert!(a.admit(x, &m).is_some());
        assert_eq!(m.connections_refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn the_listener_cap_holds_across_sources() {
        let a = Admission::new("test", 2, None);
        let m = Metrics::new();
        let slots: Vec<_> = (1..=2)
            .map(|i| a.admit(IpAddr::from([10, 0, 0, i]), &m).unwrap())
            .collect();
        assert!(a.admit(IpAddr::from([10, 0, 0, 9]), &m).is_none());
        drop(slots);
        assert!(a.admit(IpAddr::from([10, 0, 0, 9]), &m).is_some());
    }
}
