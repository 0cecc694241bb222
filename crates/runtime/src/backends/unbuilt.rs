//! Kinds nothing here runs (processes inside a real SGX enclave; containers without
//! `[containers]`):
//! certified and routed, and answering 503 with the reason, so a client sees what is
//! configured even before it runs.

use std::sync::Arc;

use enclave_config::file::{Workload, WorkloadCode, WorkloadKind};

use super::{Backend, Handler, Health, Running, ServeError, StartError};

/// The backend of last resort.
pub(crate) struct Unbuilt;

struct NotRunning {
    reason: String,
}

impl Backend for Unbuilt {
    fn runs(&self, kind: WorkloadKind) -> bool {
        kind != WorkloadKind::Wasm
    }

    fn start(&self, spec: &Workload, _code: &WorkloadCode) -> Result<Arc<dyn Running>, StartError> {
        Ok(Arc::new(NotRunning {
            reason: format!(
                "workload '{}' is configured and certified, but nothing here runs {} workloads{}",
                spec.name,
                spec.run.kind().as_str(),
                if spec.run.kind() == WorkloadKind::Container {
                    " (enclave.toml has no [containers] section)"
                } else {
                    " (inside an SGX enclave under Gramine there is one process)"
                }
            ),
        }))
    }
}

impl Running for NotRunning {
    fn handler(&self) -> Handler {
        let reason = self.reason.clone();
        Handler::new(tower::service_fn(move |_req| {
            let r = ServeError::Unavailable(reason.clone()).into_response();
            async move { Ok(r) }
        }))
    }

    fn health(&self) -> Health {
        Health::Unavailable(self.reason.clone())
    }

    fn stop(&self) {}
}
