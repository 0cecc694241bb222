//! The attested proxy's forwarding half: how a request the runtime's front has accepted, over
//! RA-TLS and past the workload's ingress gates, reaches the service a container or process
//! runs, and how its answer comes back.
//!
//! - [`Upstream`] is one workload's service: where it is now (the address changes when a
//!   container restarts), what it speaks (HTTP/1.1, h2c, raw TCP), pooled connections to it,
//!   and the timeouts and drain the workload's `[workload.proxy]` table sets.
//! - [`Upstream::forward`] forwards one HTTP request, streaming bodies both ways (never a whole
//!   body in memory), trailers included, and splices HTTP/1.1 upgrades (WebSocket) both ways.
//!   Hop-by-hop headers are dropped and `Forwarded`/`X-Forwarded-*` are set from the connection
//!   the front saw, replacing whatever the client sent ([`headers`]).
//! - [`Upstream::splice`] joins a client's connection to the service byte for byte, until
//!   either side closes, the connection idles past its limit, or the workload drains.
//! - [`ClientBody`] bounds how long a client's request body may pause (the front wraps every
//!   workload's request body in it) and cleans its trailers.
//! - Failures are [`ProxyError`]s: a status (502, 503, 504) and a reason, as the JSON every
//!   other refusal of the runtime has.
//!
//! Not here: TLS, routing by name, the gates and the `X-Enclave-OS-Client-*` headers (the
//! front's), starting or supervising the service (the backends').

mod body;
pub mod headers;
pub mod pool_slot;
mod splice;
mod upstream;

pub use body::{BodyStalled, ClientBody};
pub use splice::{Activity, SpliceEnd};
pub use upstream::{Client, ConnectionSlot, ProxyBody, ProxyError, Upstream, response};
