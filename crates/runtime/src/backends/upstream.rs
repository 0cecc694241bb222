//! The attested proxy as the service backends (containers, processes) use it: one
//! [`Upstream`] per workload, which the backend points at its service whenever it starts,
//! restarts or stops, and whose handler the front calls for each request routed to the
//! workload (HTTP/1.1, HTTP/2, upgrades; `tcp` workloads are spliced by the front itself).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use enclave_config::file::Workload;
use enclave_proxy::Upstream;
use enclave_proxy::headers::Forwarding;

use super::Handler;
use crate::api::Connection;

/// The upstream of `w`, as its `[workload.proxy]` table says; pointed at nothing yet.
pub(crate) fn upstream(w: &Workload) -> Arc<Upstream> {
    Arc::new(Upstream::new(&w.name, w.proxy.as_ref()))
}

/// The name `w`'s service is told when a request carries none: its first hostname, else its
/// name.
pub(crate) fn host(w: &Workload) -> String {
    w.hostnames.first().unwrap_or(&w.name).clone()
}

/// The handler forwarding a workload's requests to `upstream`: the client's address, for
/// `Forwarded`, is the one its connection came from, and the host the service is told is the
/// name the connection was made for (its SNI: the front serves these workloads by SNI only).
pub(crate) fn handler(upstream: Arc<Upstream>, name: String) -> Handler {
    let name: Arc<str> = Arc::from(name);
    Handler::new(tower::service_fn(move |req: super::Request| {
        let upstream = upstream.clone();
        // The front made them for the connection; a request without them (none reaches here
        // today) is described from what it carries.
        let forwarding = match req.extensions().get::<Connection>() {
            Some(Connection {
                forwarding: Some(f),
                ..
            }) => f.clone(),
            other => {
                let peer = other.map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), |c| c.peer);
                let host = other.and_then(|c| c.server_name.clone());
                Arc::new(Forwarding::new(peer, host.as_deref().unwrap_or(&name)))
            }
        };
        async move {
            let response = upstream.forward(req, &forwarding).await;
            Ok(response.map(axum::body::Body::new))
        }
    }))
}
