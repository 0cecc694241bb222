//! What containers and processes share: a service behind the runtime's proxy, on a port, with
//! a health check that gates its route and a restart policy (`[workload.container]` and
//! `[workload.process]` both start with these fields). Each kind adds its own settings around
//! [`ServiceSettings`]; the settings leaf commits them side by side in one JSON object, as the
//! file spells them.
//!
//! Not here: how either kind is started (the runtime's backends), nor the container-only
//! settings (`container.rs`).

use serde::{Deserialize, Serialize};

/// How the runtime decides a service is ready, before its route goes live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `GET` this path and wait for a 2xx; without it, a TCP connection to the port suffices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    /// How long the service has to become healthy after it starts, seconds.
    #[serde(default = "HealthCheck::default_start_secs")]
    pub start_timeout_secs: u32,
}

impl HealthCheck {
    fn default_start_secs() -> u32 {
        30
    }
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            http_path: None,
            start_timeout_secs: Self::default_start_secs(),
        }
    }
}

/// What happens when a service's process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// It stays down, reported with its status and the tail of its log.
    No,
    /// It is started again when it exits with a failure (not status 0), up to `max_restarts`.
    #[default]
    OnFailure,
    /// It is started again whenever it exits, up to `max_restarts`.
    Always,
}

impl RestartPolicy {
    /// Whether an exit with `code` is restarted under this policy.
    pub fn restarts(self, code: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Always => true,
        }
    }
}

/// The settings every service has, whatever runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// The TCP port it serves HTTP/1.1 on (a container: in its own network namespace; a
    /// process: on loopback).
    pub port: u16,
    /// Readiness before the route goes live.
    #[serde(default)]
    pub health: HealthCheck,
    /// What happens when it exits.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// How many times it is restarted before it is left down.
    #[serde(default = "ServiceSettings::default_max_restarts")]
    pub max_restarts: u32,
}

/// The table a service's settings are written in, for the field names of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `[workload.container]`.
    Container,
    /// `[workload.process]`.
    Process,
}

impl Table {
    fn pick(self, container: &'static str, process: &'static str) -> &'static str {
        match self {
            Table::Container => container,
            Table::Process => process,
        }
    }
}

impl ServiceSettings {
    fn default_max_restarts() -> u32 {
        5
    }

    /// Check the settings on their own, as written in `table`; on failure, the field and why.
    pub fn check(&self, table: Table) -> Result<(), (&'static str, String)> {
        if self.port == 0 {
            return Err((
                table.pick("container.port", "process.port"),
                "must be a TCP port, 1 to 65535".into(),
            ));
        }
        if let Some(p) = &self.health.http_path
            && (!p.starts_with('/') || p.bytes().any(|b| b.is_ascii_control() || b == b' '))
        {
            return Err((
                table.pick("container.health.http_path", "process.health.http_path"),
                format!("'{p}' must be an absolute path without spaces or control characters"),
            ));
        }
        if !(1..=600).contains(&self.health.start_timeout_secs) {
            return Err((
                table.pick(
                    "container.health.start_timeout_secs",
                    "process.health.start_timeout_secs",
                ),
                format!(
                    "{} is not between 1 and 600",
                    self.health.start_timeout_secs
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses any field a table's own fields and its [`ServiceSettings`] left over. serde's
/// `deny_unknown_fields` does not work next to `flatten`; a last flattened member that fails on
/// the first key it is handed does the same, and is never serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoOtherFields;

impl<'de> Deserialize<'de> for NoOtherFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NoOtherFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("no further fields")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<NoOtherFields, A::Error> {
                match map.next_key::<String>()? {
                    None => Ok(NoOtherFields),
                    Some(key) => Err(serde::de::Error::custom(format!("unknown field `{key}`"))),
                }
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// A process workload's own settings (`[workload.process]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSettings {
    /// Port (on loopback), health check and restart policy.
    #[serde(flatten)]
    pub service: ServiceSettings,
    /// The user id it runs as; absent: the runtime's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    /// The group id it runs as (and no supplementary groups); absent: the runtime's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
    /// Refuses any other field.
    #[serde(flatten, skip_serializing)]
    pub no_other_fields: NoOtherFields,
}

impl ProcessSettings {
    /// Check the settings, with the workload's CPU and process limits; on failure, the field
    /// and why. A limit a process cannot be held to is refused rather than committed to the
    /// tree as if it held.
    pub fn check(
        &self,
        cpu_millis: Option<u32>,
        pids: Option<u32>,
    ) -> Result<(), (&'static str, String)> {
        self.service.check(Table::Process)?;
        if cpu_millis.is_some() {
            return Err((
                "limits.cpu_millis",
                "a process is not put in a cgroup of its own, so nothing would hold it to a CPU share (containers have one)".into(),
            ));
        }
        if pids.is_some() && self.user.is_none() {
            return Err((
                "limits.pids",
                "a process's pids limit is RLIMIT_NPROC, which counts the processes of the user it runs as: give it a user of its own ([workload.process] user)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn process_settings_read_their_fields_and_refuse_others() {
        let p: ProcessSettings = toml::from_str(
            "port = 8080\nuser = 1000\nhealth = { http_path = \"/h\" }\nrestart = \"always\"\n",
        )
        .unwrap();
        assert_eq!(p.service.port, 8080);
        assert_eq!(p.service.restart, RestartPolicy::Always);
        assert_eq!(p.service.max_restarts, 5);
        assert_eq!(p.user, Some(1000));
        assert_eq!(p.group, None);
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("no_other"), "{json}");
        assert!(!json.contains("group"), "{json}");
        let e = toml::from_str::<ProcessSettings>("port = 1\nimage = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `image`"), "{e}");
        let e = toml::from_str::<ProcessSettings>("user = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("port"), "{e}");
        let e = toml::from_str::<ProcessSettings>("port = 1\nhealth = { path = \"/\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("path"), "{e}");
    }
}
