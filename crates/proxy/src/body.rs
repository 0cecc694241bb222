//! A client's request body as the front hands it on: bounded in idle time, and with trailers
//! that carry nothing a request head could not.
//!
//! A body that stops arriving would hold its connection, its slot under `max_connections`
//! and, when proxied, a connection to the service, for as long as the client likes: hyper
//! bounds the wait for a request head, not for the body after it. A frame must come within
//! the idle limit of the last one (or of the head).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use thiserror::Error;
use tokio::time::Sleep;

use crate::headers;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client sent no part of its request body for the idle limit.
#[derive(Debug, Error)]
#[error("the request body stalled: no byte for {secs} s (limits.header_timeout_secs)")]
pub struct BodyStalled {
    /// The limit, seconds.
    pub secs: u64,
}

/// A request body with an idle limit and cleaned trailers.
pub struct ClientBody<B> {
    inner: B,
    idle: Duration,
    /// Armed while the body is pending; cleared by every frame.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<B> ClientBody<B> {
    /// `inner`, each frame of which must come within `idle` of the last.
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            waiting: None,
        }
    }
}

impl<B> Body for ClientBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                self.waiting = None;
                if let Some(t) = frame.trailers_mut() {
                    headers::clean_trailers(t);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = self.idle;
                let waiting = self
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled {
                        secs: idle.as_secs(),
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
