//! The runtime's bridge: each container's network namespace joins it through the CNI `bridge`
//! and `host-local` plugins, and the bridge is locked down so that a container reaches nothing
//! but the answers to connections the host opened to it.
//!
//! - Every container port is `isolated`: the bridge forwards nothing between two of them, so
//!   containers cannot reach each other (not even ARP).
//! - iptables drops every *new* connection arriving from the bridge (INPUT: the host, on any of
//!   its addresses; FORWARD: anything routed), and every new connection forwarded into it. The
//!   host's own connections to a container, and their return traffic, pass.
//! - One exception, when asked ([`BridgeConfig::open_port`]): new TCP connections to that port
//!   of the bridge's own address (the gateway), where the runtime serves its containers (the
//!   vault's SKR endpoint). Nothing else of the host, and nothing beyond it.
//! - No NAT, no default route in the container, IPv6 off on the bridge.
//!
//! The programs run are `ip`, `iptables` and the CNI plugins; they run on a blocking thread.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::NetworkError;

/// The interface name inside every container.
const IFNAME: &str = "eth0";
const CNI_VERSION: &str = "1.0.0";

/// An IPv4 subnet, e.g. `10.213.7.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Subnet {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length (8-30).
    pub prefix: u8,
}

impl std::str::FromStr for Ipv4Subnet {
    type Err = NetworkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| NetworkError::Invalid {
            what: "subnet",
            value: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected a.b.c.d/prefix"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        if !(8..=30).contains(&prefix) {
            return Err(invalid("the prefix length must be 8-30"));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(addr) & !mask != 0 {
            return Err(invalid("host bits are set"));
        }
        Ok(Ipv4Subnet { addr, prefix })
    }
}

impl std::fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Subnet {
    /// The gateway `host-local` gives the bridge: the first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

/// How to build the bridge.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The bridge interface's name (1-15 characters of `[A-Za-z0-9_-]`).
    pub name: String,
    /// The containers' subnet; the bridge takes its first address.
    pub subnet: Ipv4Subnet,
    /// Where the CNI plugins are (Debian: `/usr/lib/cni`).
    pub cni_bin_dir: PathBuf,
    /// Where `host-local` keeps its leases (a directory of ours).
    pub state_dir: PathBuf,
    /// A TCP port of the gateway address the containers may connect to: the bridge gets its
    /// address at once (so the runtime can listen on it before any container is attached) and
    /// an ACCEPT for that port ahead of the bridge's DROP.
    pub open_port: Option<u16>,
}

/// The bridge, its firewall rules and its address pool.
#[derive(Debug, Clone)]
pub struct Bridge {
    config: BridgeConfig,
}

impl Bridge {
    /// Create the bridge (if missing), turn IPv6 off on it and install the firewall rules (each
    /// only if missing, so this is idempotent, e.g. after a restart of the runtime).
    pub async fn new(config: BridgeConfig) -> Result<Bridge, NetworkError> {
        check_name(&config.name)?;
        let bridge = Bridge { config };
        let setup = bridge.clone();
        blocking(move || setup.setup()).await?;
        Ok(bridge)
    }

    /// The bridge's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The bridge's own address, the containers' gateway (which they can connect to on
    /// [`BridgeConfig::open_port`] only).
    pub fn gateway(&self) -> Ipv4Addr {
        self.config.subnet.gateway()
    }

    fn setup(&self) -> Result<(), NetworkError> {
        let name = &self.config.name;
        if !Path::new("/sys/class/net").join(name).exists() {
            run("ip", &["link", "add", "name", name, "type", "bridge"])?;
        }
        // No IPv6 on the bridge: a container then has no way to the host over link-local.
        let ipv6 = Path::new("/proc/sys/net/ipv6/conf")
            .join(name)
            .join("disable_ipv6");
        if ipv6.exists() {
            std::fs::write(&ipv6, "1").map_err(|source| NetworkError::Io {
                what: "disabling IPv6 on",
                path: ipv6.clone(),
                source,
            })?;
        }
        run("ip", &["link", "set", "dev", name, "up"])?;
        // Per-container rules and an earlier run's open port (perhaps another one) go first.
        self.sweep_host_rules()?;
        // Each rule goes in at the top: the open port's ACCEPT, inserted last, is ahead of the
        // DROP it is the exception to.
        let mut rules = self.rules();
        if let Some(port) = self.config.open_port {
            self.gateway_address()?;
            rules.push(self.port_rule(port));
        }
        for rule in rules {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            if !check_rule(&args)? {
                let mut insert = vec!["-w", "10", "-I", args[0], "1"];
                insert.extend_from_slice(&args[1..]);
                run("iptables", &insert)?;
            }
        }
        std::fs::create_dir_all(self.ipam_dir()).map_err(|source| NetworkError::Io {
            what: "creating",
            path: self.ipam_dir(),
            source,
        })?;
        Ok(())
    }

    /// The rules, as `[chain, match...]`, each tagged with a comment naming the bridge.
    fn rules(&self) -> Vec<Vec<String>> {
        let name = &self.config.name;
        let comment = format!("enclave-os:{name}");
        let rule = |chain: &str, dir: &str| -> Vec<String> {
            [
                chain,
                dir,
                name,
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        };
        vec![
            rule("INPUT", "-i"),
            rule("FORWARD", "-i"),
            rule("FORWARD", "-o"),
        ]
    }

    /// Give the bridge its gateway address now, if it lacks it (the CNI plugin would at the
    /// first attach, and accepts it being there).
    fn gateway_address(&self) -> Result<(), NetworkError> {
        let name = &self.config.name;
        let gateway = self.config.subnet.gateway();
        let output = Command::new("ip")
            .args(["-4", "-o", "addr", "show", "dev", name])
            .output()
            .map_err(|e| NetworkError::Command {
                program: "ip".into(),
                args: format!("-4 -o addr show dev {name}"),
                reason: e.to_string(),
            })?;
        let listing = String::from_utf8_lossy(&output.stdout);
        let have = format!("inet {gateway}/");
        if !listing.contains(&have) {
            let cidr = format!("{gateway}/{}", self.config.subnet.prefix);
            run("ip", &["addr", "add", &cidr, "dev", name])?;
        }
        Ok(())
    }

    /// The rule that lets the containers open connections to `port` of the gateway. Its
    /// comment carries the bridge's per-container tag, so a sweep removes it too.
    fn port_rule(&self, port: u16) -> Vec<String> {
        let name = &self.config.name;
        vec![
            "INPUT".to_owned(),
            "-i".to_owned(),
            name.clone(),
            "-d".to_owned(),
            self.config.subnet.gateway().to_string(),
            "-p".to_owned(),
            "tcp".to_owned(),
            "--dport".to_owned(),
            port.to_string(),
            "-m".to_owned(),
            "comment".to_owned(),
            "--comment".to_owned(),
            format!("enclave-os:{name}:port-{port}"),
            "-j".to_owned(),
            "ACCEPT".to_owned(),
        ]
    }

    fn ipam_dir(&self) -> PathBuf {
        self.config.state_dir.join("ipam")
    }

    fn cni_config(&self) -> String {
        serde_json::json!({
            "cniVersion": CNI_VERSION,
            "name": self.config.name,
            "type": "bridge",
            "bridge": self.config.name,
            "isGateway": true,
            "isDefaultGateway": false,
            "ipMasq": false,
            "hairpinMode": false,
            "ipam": {
                "type": "host-local",
                "subnet": self.config.subnet.to_string(),
                "gateway": self.config.subnet.gateway().to_string(),
                "dataDir": self.ipam_dir(),
                "routes": [],
            },
        })
        .to_string()
    }

    /// Join the network namespace of task `pid` (container `id`) to the bridge, isolate its
    /// port, and return its address.
    pub async fn attach(&self, id: &str, pid: u32) -> Result<Ipv4Addr, NetworkError> {
        let bridge = self.clone();
        let id = id.to_owned();
        blocking(move || bridge.attach_blocking(&id, pid)).await
    }

    fn attach_blocking(&self, id: &str, pid: u32) -> Result<Ipv4Addr, NetworkError> {
        let netns = format!("/proc/{pid}/ns/net");
        let output = self.cni("ADD", id, &netns)?;
        let cni_err = |reason: String| NetworkError::Cni {
            command: "ADD",
            id: id.to_owned(),
            reason,
        };
        let result: serde_json::Value = serde_json::from_slice(&output)
            .map_err(|e| cni_err(format!("the result is not JSON: {e}")))?;
        let interfaces = result
            .get("interfaces")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        let host_veth = interfaces
            .iter()
            .filter(|i| i.get("sandbox").is_none_or(|s| s.as_str() == Some("")))
            .filter_map(|i| i.get("name").and_then(serde_json::Value::as_str))
            .find(|n| *n != self.config.name)
            .map(str::to_owned);
        let address = result
            .get("ips")
            .and_then(serde_json::Value::as_array)
            .and_then(|ips| ips.first())
            .and_then(|ip| ip.get("address"))
            .and_then(serde_json::Value::as_str)
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse::<Ipv4Addr>().ok());
        let (Some(host_veth), Some(address)) = (host_veth, address) else {
            let _ = self.cni("DEL", id, &netns);
            return Err(cni_err(format!(
                "no host veth or IPv4 address in the result: {result}"
            )));
        };
        // Fail closed: a port we could not isolate does not stay on the bridge.
        if let Err(e) = run(
            "ip",
            &[
                "link",
                "set",
                "dev",
                &host_veth,
                "type",
                "bridge_slave",
                "isolated",
                "on",
            ],
        ) {
            let _ = self.cni("DEL", id, &netns);
            return Err(e);
        }
        Ok(address)
    }

    /// The rule that lets container `id` at `address` open connections to the host.
    fn host_rule(&self, id: &str, address: Ipv4Addr) -> Vec<String> {
        let (name, source) = (&self.config.name, address.to_string());
        let comment = format!("enclave-os:{name}:{id}");
        [
            "INPUT",
            "-i",
            name,
            "-s",
            &source,
            "-m",
            "comment",
            "--comment",
            &comment,
            "-j",
            "ACCEPT",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Let container `id` at `address` open connections to the host (its `allow_host`
    /// setting): an ACCEPT ahead of the bridge's DROP, for its address only. Idempotent.
    pub async fn allow_host(&self, id: &str, address: Ipv4Addr) -> Result<(), NetworkError> {
        let rule = self.host_rule(id, address);
        blocking(move || {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            if !check_rule(&args)? {
                let mut insert = vec!["-w", "10", "-I", args[0], "1"];
                insert.extend_from_slice(&args[1..]);
                run("iptables", &insert)?;
            }
            Ok(())
        })
        .await
    }

    /// Remove every per-container rule of this bridge ([`Bridge::allow_host`]): at start no
    /// container of an earlier run is left to need one, and at teardown none is.
    fn sweep_host_rules(&self) -> Result<(), NetworkError> {
        let tag = format!("enclave-os:{}:", self.config.name);
        let output = Command::new("iptables")
            .args(["-w", "10", "-S", "INPUT"])
            .output()
            .map_err(|e| NetworkError::Command {
                program: "iptables".into(),
                args: "-S INPUT".into(),
                reason: e.to_string(),
            })?;
        let listing = String::from_utf8_lossy(&output.stdout).into_owned();
        for line in listing.lines().filter(|l| l.contains(&tag)) {
            // `-A INPUT <match…>`: the same words after `-D` delete it. Our comments have no
            // spaces, so dropping the quotes iptables adds is enough.
            let words: Vec<String> = line
                .split_whitespace()
                .skip(1)
                .map(|w| w.trim_matches('"').to_owned())
                .collect();
            let mut delete = vec!["-w", "10", "-D"];
            delete.extend(words.iter().map(String::as_str));
            run("iptables", &delete)?;
        }
        Ok(())
    }

    /// Take back [`Bridge::allow_host`]. Idempotent.
    pub async fn revoke_host(&self, id: &str, address: Ipv4Addr) -> Result<(), NetworkError> {
        let rule = self.host_rule(id, address);
        blocking(move || {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            // Bounded: each pass removes one copy; there is normally exactly one.
            for _ in 0..8 {
                if !check_rule(&args)? {
                    break;
                }
                let mut delete = vec!["-w", "10", "-D"];
                delete.extend_from_slice(&args);
                run("iptables", &delete)?;
            }
            Ok(())
        })
        .await
    }

    /// Leave the bridge and give the address back (CNI DEL). Idempotent; `pid` is `None` when
    /// the task is gone (the veth went with its namespace; the address is released all the
    /// same).
    pub async fn detach(&self, id: &str, pid: Option<u32>) -> Result<(), NetworkError> {
        let bridge = self.clone();
        let id = id.to_owned();
        blocking(move || {
            let netns = pid
                .map(|p| format!("/proc/{p}/ns/net"))
                .filter(|p| Path::new(p).exists())
                .unwrap_or_default();
            bridge.cni("DEL", &id, &netns).map(|_| ())
        })
        .await
    }

    fn cni(&self, command: &'static str, id: &str, netns: &str) -> Result<Vec<u8>, NetworkError> {
        use std::io::Write;
        let plugin = self.config.cni_bin_dir.join("bridge");
        let mut child = Command::new(&plugin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.config.cni_bin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetworkError::Command {
                program: plugin.display().to_string(),
                args: command.to_owned(),
                reason: e.to_string(),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(self.cni_config().as_bytes())
                .map_err(|e| NetworkError::Cni {
                    command,
                    id: id.to_owned(),
                    reason: format!("writing the config to the plugin: {e}"),
                })?;
        }
        let output = child.wait_with_output().map_err(|e| NetworkError::Cni {
            command,
            id: id.to_owned(),
            reason: e.to_string(),
        })?;
        if !output.status.success() {
            // CNI errors come as JSON on stdout: {"code", "msg", "details"}.
            return Err(NetworkError::Cni {
                command,
                id: id.to_owned(),
                reason: format!(
                    "{}: {} {}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        Ok(output.stdout)
    }

    /// Remove the firewall rules, the bridge and the address pool. Idempotent.
    pub async fn teardown(&self) -> Result<(), NetworkError> {
        let bridge = self.clone();
        blocking(move || bridge.teardown_blocking()).await
    }

    /// [`Bridge::teardown`], on the calling thread (for `Drop` and shutdown paths).
    pub fn teardown_blocking(&self) -> Result<(), NetworkError> {
        let mut first_error = self.sweep_host_rules().err();
        for rule in self.rules() {
            let args: Vec<&str> = rule.iter().map(String::as_str).collect();
            // Bounded: each pass removes one copy; there is normally exactly one.
            for _ in 0..8 {
                match check_rule(&args) {
                    Ok(true) => {
                        let mut delete = vec!["-w", "10", "-D"];
                        delete.extend_from_slice(&args);
                        if let Err(e) = run("iptables", &delete) {
                            first_error.get_or_insert(e);
                            break;
                        }
                    }
                    Ok(false) => break,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        break;
                    }
                }
            }
        }
        if Path::new("/sys/class/net").join(&self.config.name).exists()
            && let Err(e) = run("ip", &["link", "del", "dev", &self.config.name])
        {
            first_error.get_or_insert(e);
        }
        match std::fs::remove_dir_all(self.ipam_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                first_error.get_or_insert(NetworkError::Io {
                    what: "removing",
                    path: self.ipam_dir(),
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(NetworkError::Invalid {
            what: "bridge name",
            value: name.to_owned(),
            reason: "1-15 characters of [A-Za-z0-9_-] (a Linux interface name)".into(),
        });
    }
    Ok(())
}

/// Whether iptables has the rule (`-C`): exit 1 means no, anything else non-zero is an error.
fn check_rule(rule: &[&str]) -> Result<bool, NetworkError> {
    let mut args = vec!["-w", "10", "-C"];
    args.extend_from_slice(rule);
    let output =
        Command::new("iptables")
            .args(&args)
            .output()
            .map_err(|e| NetworkError::Command {
                program: "iptables".into(),
                args: args.join(" "),
                reason: e.to_string(),
            })?;
    match output.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(NetworkError::Command {
            program: "iptables".into(),
            args: args.join(" "),
            reason: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }),
    }
}

fn run(program: &str, args: &[&str]) -> Result<(), NetworkError> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| NetworkError::Command {
            program: program.to_owned(),
            args: args.join(" "),
            reason: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(NetworkError::Command {
            program: program.to_owned(),
            args: args.join(" "),
            reason: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetworkError::Command {
            program: "(blocking task)".into(),
            args: String::new(),
            reason: e.to_string(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_strictly() {
        let s: Ipv4Subnet = "10.213.7.0/24".parse().expect("valid");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 213, 7, 1));
        assert!("10.213.7.1/24".parse::<Ipv4Subnet>().is_err());
        assert!("10.213.7.0/31".parse::<Ipv4Subnet>().is_err());
        assert!("10.213.7.0".parse::<Ipv4Subnet>().is_err());
        assert!(check_name("enclave-br-toolong").is_err());
        assert!(check_name("eos-br0").is_ok());
    }
}
