//! What a container workload's preparation has done so far: the stage, and bytes per layer.
//! The management API shows it (`GET /api/v1/workloads/{name}/progress`), and the CLI draws
//! its progress bar from it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Where a preparation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Stage {
    /// Fetching and checking the manifest and the configuration.
    Resolving,
    /// Streaming layers into the content store, each checked against its digest.
    Pulling,
    /// Applying layers into snapshots, each checked against its diff_id.
    Unpacking,
    /// Creating and starting the container, then waiting for its health check.
    Starting,
    /// Serving.
    Ready,
    /// Refused; `reason` says why.
    Failed,
}

/// One layer's transfer.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Layer {
    pub digest: String,
    pub size: u64,
    pub received: u64,
    /// Already in the content store: not fetched again.
    pub cached: bool,
}

/// One workload's preparation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Progress {
    pub workload: String,
    pub image: String,
    pub stage: Stage,
    pub layers: Vec<Layer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every workload's latest preparation, by name. Short critical sections only: a pull updates
/// its entry per chunk, a reader copies one entry.
#[derive(Default)]
pub(crate) struct Board(Mutex<BTreeMap<String, Progress>>);

impl Board {
    pub(crate) fn begin(&self, workload: &str, image: &str) {
        self.with(workload, |slot| {
            *slot = Some(Progress {
                workload: workload.to_string(),
                image: image.to_string(),
                stage: Stage::Resolving,
                layers: Vec::new(),
                reason: None,
            });
        });
    }

    pub(crate) fn update(&self, workload: &str, f: impl FnOnce(&mut Progress)) {
        self.with(workload, |slot| {
            if let Some(p) = slot {
                f(p);
            }
        });
    }

    pub(crate) fn stage(&self, workload: &str, stage: Stage) {
        self.update(workload, |p| p.stage = stage);
    }

    pub(crate) fn fail(&self, workload: &str, reason: String) {
        self.update(workload, |p| {
            p.stage = Stage::Failed;
            p.reason = Some(reason);
        });
    }

    /// Every preparation not yet ready: loads in flight, and those refused (with why).
    pub(crate) fn unfinished(&self) -> Vec<Progress> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|p| p.stage != Stage::Ready)
            .cloned()
            .collect()
    }

    pub(crate) fn get(&self, workload: &str) -> Option<Progress> {
        let mut out = None;
        self.with(workload, |slot| out = slot.clone());
        out
    }

    fn with(&self, workload: &str, f: impl FnOnce(&mut Option<Progress>)) {
        // A poisoned board only means a pull panicked mid-update; its numbers are still the
        // best there are.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut slot = map.remove(workload);
        f(&mut slot);
        if let Some(p) = slot {
            map.insert(workload.to_string(), p);
        }
    }
}
