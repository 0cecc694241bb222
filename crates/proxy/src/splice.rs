//! Joining two connections byte for byte: a `tcp` workload's clients, and upgraded HTTP/1.1
//! connections (WebSocket).
//!
//! Both directions are copied at once (one blocked direction never stops the other, so two
//! peers that both write before reading cannot deadlock through the proxy), a half-close is
//! passed on, and the splice ends when both sides have closed, when no byte has moved either
//! way for the idle limit, or when the workload drains.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a splice ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both sides closed; the bytes each way.
    Closed {
        /// From the client to the service.
        up: u64,
        /// From the service to the client.
        down: u64,
    },
    /// No byte moved either way for the idle limit.
    Idle,
    /// The workload was drained (unloaded, replaced, or the runtime is stopping).
    Drained,
    /// A side failed (why).
    Failed(String),
}

/// A stream that records when it last read a byte: what the idle limit watches.
pub struct Activity<T> {
    inner: T,
    last: Arc<AtomicU64>,
    epoch: Instant,
}

impl<T> Activity<T> {
    /// Watch `inner`, sharing its clock with `last` (milliseconds since `epoch`).
    fn new(inner: T, last: Arc<AtomicU64>, epoch: Instant) -> Self {
        Self { inner, last, epoch }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copy between `client` and `service` both ways until one of the ends in [`SpliceEnd`].
pub(crate) async fn splice<A, B>(
    client: A,
    service: B,
    idle: Duration,
    drained: impl std::future::Future<Output = ()>,
) -> SpliceEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Activity::new(client, last.clone(), epoch);
    let mut b = Activity::new(service, last.clone(), epoch);
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let watch = async {
        loop {
            let since = u64::try_from(epoch.elapsed().as_millis())
                .unwrap_or(u64::MAX)
                .saturating_sub(last.load(Ordering::Relaxed));
            if since >= idle_ms {
                return;
            }
            // One timer per splice, woken at the earliest moment the limit could be reached.
            tokio::time::sleep(Duration::from_millis(idle_ms - since)).await;
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
            Ok((up, down)) => SpliceEnd::Closed { up, down },
            Err(e) => SpliceEnd::Failed(e.to_string()),
        },
        () = watch => SpliceEnd::Idle,
        () = drained => SpliceEnd::Drained,
    }
}
