//! The attested proxy as the service backends (containers, processes) use it: one
//! [`Upstream`] per workload, which the backend points at its service whenever it starts,
//! restarts or stops, and whose handler the front calls for each request routed to the
//! workload (HTTP/1.1, HTTP/2, upgrades; `tcp` workloads are spliced by the front itself).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use enclave_config::file::Workload;
use enclave_proxy::Upstream;

use super::Handler;
use crate::api::Connection;

/// The upstream of `w`, as its `[workload.proxy]` table says; pointed at nothing yet.
pub(crate) fn upstream(w: &Workload) -> Arc<Upstream> {
    Arc::new(Upstream::new(&w.name, w.proxy.as_ref()))
}

/// The handler forwarding a workload's requests to `upstream`: the client's address, for
/// `Forwarded`, is the one its connection came from.
pub(crate) fn handler(upstream: Arc<Upstream>) -> Handler {
    Handler::new(tower::service_fn(move |req: super::Request| {
        let upstream = upstream.clone();
        async move {
            let peer = req
                .extensions()
                .get::<Connection>()
                .map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.peer);
            let response = upstream.forward(req, peer).await;
            Ok(response.map(axum::body::Body::new))
        }
    }))
}
