//! Ingress gates through the real binary over RA-TLS: mutual RA-TLS clients from a second
//! simulated enclave appraised with each workload's policy, OIDC bearer tokens with required
//! claims, both together, and the `X-Enclave-OS-Client-*` headers a wasm upstream sees, spoofed
//! ones stripped. The upstream is `testdata/wasm/hello.wasm`, whose `/headers` echoes what it got.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::instance::*;
use common::run;
use enclave_ratls::binding::{BindingFormat, Freshness};
use enclave_ratls::issue::{IntermediaryCa, LeafSpec};
use enclave_ratls::tls::{RatlsResolver, RatlsServerVerifier, client_config};
use enclave_ratls::trust::TrustFiles;
use rustls::pki_types::ServerName;

fn hello() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/wasm/hello.wasm")
}

/// A reply: status, headers (lowercased names), body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    resumed: bool,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `error` member of a JSON refusal.
    fn reason(&self) -> String {
        json_of(self.body.as_bytes())["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The value of `name` among the headers the upstream echoed (`name: value` lines).
    fn echoed(&self, name: &str) -> Vec<String> {
        self.body
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
            .collect()
    }
}

/// One HTTP/1.1 request over TLS with `tls`, SNI `sni` (`None`: connect by IP, no SNI), and
/// `Host: host`, with extra header lines.
fn request(
    port: u16,
    tls: &Arc<rustls::ClientConfig>,
    sni: Option<&str>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server closes without close_notify now and then: what arrived is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the response from {host}: {e}"),
    }
    let resumed = s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
        resumed,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

struct Setup {
    tmp: tempfile::TempDir,
    server: Instance,
    /// The second enclave's resolver: it presents its RA-TLS leaf, valid for `caller.test`.
    resolver: Arc<RatlsResolver>,
    /// SHA-256 of the second enclave's leaf, and its measurement, hex.
    leaf_sha256: String,
    measurement: String,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("operator-ca");
    let o = run(&["ca", "init", "--out", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The second enclave: a simulated SGX enclave on a platform of its own, with a leaf from the
    // operator's intermediary CA, as another instance of the operator would have.
    let client_sim = tmp.path().join("client-sim");
    let tee: Arc<dyn enclave_tee::Tee> =
        Arc::from(enclave_tee::hw::detect::open("sim-sgx", &client_sim).unwrap());
    let measurement = hex::encode(tee.measurement());
    let intermediary = IntermediaryCa::from_pem(
        &std::fs::read_to_string(ca.join("intermediary.crt.pem")).unwrap(),
        &std::fs::read_to_string(ca.join("intermediary.key.pem")).unwrap(),
    )
    .unwrap();
    let resolver = Arc::new(RatlsResolver::new(
        tee,
        intermediary,
        LeafSpec {
            names: vec!["caller.test".into()],
            lifetime_secs: 3600,
            config_root: Some([7; 32]),
            binding: BindingFormat::Seed,
            ..LeafSpec::default()
        },
    ));
    let leaf = resolver.current().unwrap();
    let leaf_sha256 = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        leaf.cert[0].as_ref(),
    ));

    let dir = tmp.path().join("server");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("accept.toml"),
        format!("allow_simulated = true\n[sgx]\nmr_enclave = \"{measurement}\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("refuse.toml"),
        format!(
            "allow_simulated = true\n[sgx]\nmr_enclave = \"{}\"\n",
            "ab".repeat(32)
        ),
    )
    .unwrap();
    let w = hello();
    let w = w.display();
    let sim = client_sim.display();
    let server = Instance::new(
        &dir,
        &format!(
            "[ca]\ncertificate = \"{c}/intermediary.crt.pem\"\nkey = \"{c}/intermediary.key.pem\"\n\
             [[workload]]\nname = \"gated\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"gated.test\"]\n\
             [workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"accept.toml\"\nclient_names = [\"caller.test\"]\nclient_trust_sim = \"{sim}\"\n\
             [[workload]]\nname = \"strict\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"strict.test\"]\n\
             [workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"refuse.toml\"\nclient_trust_sim = \"{sim}\"\n\
             [[workload]]\nname = \"named\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"named.test\"]\n\
             [workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"accept.toml\"\nclient_names = [\"billing.test\"]\nclient_trust_sim = \"{sim}\"\n\
             [[workload]]\nname = \"orders\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"orders.test\"]\n\
             [workload.ingress.oidc]\naudience = \"orders\"\nrequired_claims = {{ team = \"eng\" }}\n\
             [[workload]]\nname = \"both\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"both.test\"]\n\
             [workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"accept.toml\"\nclient_trust_sim = \"{sim}\"\n\
             [workload.ingress.oidc]\naudience = \"orders\"\n\
             [[workload]]\nname = \"open\"\nkind = \"wasm\"\nsource = \"{w}\"\nhostnames = [\"open.test\"]\n",
            c = ca.display(),
        ),
    );
    Setup {
        tmp,
        server,
        resolver,
        leaf_sha256,
        measurement,
    }
}

impl Setup {
    /// Clients that verify the server (its operator root and, once it has started, its
    /// simulation PKI): one presenting no certificate, one presenting the second enclave's.
    fn clients(&self) -> (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>) {
        self.clients_as(self.resolver.clone())
    }

    /// [`Self::clients`], the second presenting `resolver`'s leaf.
    fn clients_as(
        &self,
        resolver: Arc<RatlsResolver>,
    ) -> (Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>) {
        let trust = TrustFiles {
            root: Some(self.tmp.path().join("operator-ca/root.crt.pem")),
            trust_sim: Some(self.server.dir.join("state/sim")),
            collateral: None,
        };
        let verifier = Arc::new(RatlsServerVerifier::new(
            trust.verifier().unwrap(),
            Freshness::Deterministic,
        ));
        (
            Arc::new(client_config(verifier.clone(), None, None).unwrap()),
            Arc::new(client_config(verifier, None, Some(resolver)).unwrap()),
        )
    }
}

#[test]
fn gates_admit_the_right_callers_and_say_why_they_refuse_the_others() {
    let s = setup();
    let _server = s.server.start();
    let (anonymous, enclave) = s.clients();
    let port = s.server.port;
    let get = |tls: &Arc<rustls::ClientConfig>, host: &str, extra: &[(&str, &str)]| {
        request(port, tls, Some(host), host, "/headers", extra)
    };

    // Mutual RA-TLS from the second enclave: admitted, and the upstream sees who called. A
    // spoofed caller header is gone, whatever its case.
    let r = get(
        &enclave,
        "gated.test",
        &[
            ("X-Enclave-OS-Client-Subject", "admin"),
            ("x-enclave-os-client-measurement", "00"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.echoed("x-enclave-os-client-cert-sha256"),
        [s.leaf_sha256.as_str()]
    );
    assert_eq!(r.echoed("x-enclave-os-client-tee"), ["sgx"]);
    assert_eq!(r.echoed("x-enclave-os-client-simulated"), ["true"]);
    assert_eq!(
        r.echoed("x-enclave-os-client-measurement"),
        [s.measurement.as_str()]
    );
    assert_eq!(
        r.echoed("x-enclave-os-client-config-root"),
        ["07".repeat(32)]
    );
    assert_eq!(r.echoed("x-enclave-os-client-name"), ["caller.test"]);
    assert!(
        r.echoed("x-enclave-os-client-subject").is_empty(),
        "{}",
        r.body
    );

    // Resumed, the session's chain is appraised again: still admitted, same caller.
    let again = get(&enclave, "gated.test", &[]);
    assert!(again.resumed, "the second connection did not resume");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.echoed("x-enclave-os-client-cert-sha256"),
        [s.leaf_sha256.as_str()]
    );

    // No client certificate: refused with the reason, on a fresh and on a resumed session.
    for attempt in 0..2 {
        let r = get(&anonymous, "gated.test", &[]);
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(
            r.reason().contains("no client certificate"),
            "{}",
            r.reason()
        );
        assert_eq!(r.resumed, attempt == 1);
    }

    // A genuine enclave whose leaf comes from another CA: its chain leads to no root the
    // workload trusts, whatever its evidence.
    let other = enclave_ratls::ca::generate("Outsider").unwrap();
    let outsider = Arc::new(RatlsResolver::new(
        Arc::from(
            enclave_tee::hw::detect::open("sim-sgx", &s.tmp.path().join("client-sim")).unwrap(),
        ),
        IntermediaryCa::from_pem(&other.intermediary_cert_pem, &other.intermediary_key_pem)
            .unwrap(),
        LeafSpec {
            names: vec!["caller.test".into()],
            lifetime_secs: 3600,
            ..LeafSpec::default()
        },
    ));
    let (_, outsider) = s.clients_as(outsider);
    let r = get(&outsider, "gated.test", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.reason().contains("chain"), "{}", r.reason());

    // A measurement the workload's policy does not allow.
    let r = get(&enclave, "strict.test", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    let why = r.reason();
    assert!(
        why.contains("sgx.mr_enclave") && why.contains(&s.measurement),
        "{why}"
    );

    // A client leaf for another name.
    let r = get(&enclave, "named.test", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    let why = r.reason();
    assert!(
        why.contains("name") && why.contains("billing.test") && why.contains("caller.test"),
        "{why}"
    );

    // Routed by Host with no SNI: the enclave-wide handshake asked for no certificate.
    let r = request(port, &enclave, None, "gated.test", "/headers", &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.reason().contains("SNI"), "{}", r.reason());

    // OIDC: the right token passes and the upstream sees its subject and issuer; a spoofed
    // subject is replaced by the token's.
    let good = format!(
        "Bearer {}",
        token_for("orders", "alice", serde_json::json!({"team": "eng"}))
    );
    let r = get(
        &anonymous,
        "orders.test",
        &[
            ("Authorization", &good),
            ("X-ENCLAVE-OS-CLIENT-SUBJECT", "mallory"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed("x-enclave-os-client-subject"), ["alice"]);
    assert_eq!(r.echoed("x-enclave-os-client-issuer"), [ISS]);
    assert!(r.echoed("x-enclave-os-client-tee").is_empty());

    // A token without the required claim: refused, naming it.
    let ops = format!(
        "Bearer {}",
        token_for("orders", "bob", serde_json::json!({"team": "ops"}))
    );
    let r = get(&anonymous, "orders.test", &[("Authorization", &ops)]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.reason().contains("'team'") && r.reason().contains("eng"),
        "{}",
        r.reason()
    );
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );

    // No token: 401 with a challenge. A token for another audience: 401 saying so.
    let r = get(&anonymous, "orders.test", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.reason().contains("no bearer token"), "{}", r.reason());
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer realm=\"orders\"")
    );
    let other = format!(
        "Bearer {}",
        token_for(AUD, "alice", serde_json::json!({"team": "eng"}))
    );
    let r = get(&anonymous, "orders.test", &[("Authorization", &other)]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.reason().contains("audience"), "{}", r.reason());

    // Both gates: each must pass.
    let plain = format!(
        "Bearer {}",
        token_for("orders", "carol", serde_json::json!({}))
    );
    let r = get(&enclave, "both.test", &[("Authorization", &plain)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.echoed("x-enclave-os-client-subject"), ["carol"]);
    assert_eq!(
        r.echoed("x-enclave-os-client-measurement"),
        [s.measurement.as_str()]
    );
    let r = get(&enclave, "both.test", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = get(&anonymous, "both.test", &[("Authorization", &plain)]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.reason().contains("no client certificate"),
        "{}",
        r.reason()
    );

    // A workload without gates: no client certificate asked for, and spoofed headers stripped.
    let r = get(
        &enclave,
        "open.test",
        &[
            ("X-Enclave-OS-Client-Subject", "admin"),
            ("X-Enclave-OS-Client-Tee", "tdx"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        !r.body.to_ascii_lowercase().contains("x-enclave-os-client-"),
        "{}",
        r.body
    );
    // The management API takes no gate yet: a workload file with one is refused, not loaded open.
    let file = s.server.dir.join("gated-api.toml");
    std::fs::write(
        &file,
        format!(
            "[workload]\nname = \"late\"\nkind = \"wasm\"\nsource = \"{}\"\nhostnames = [\"late.test\"]\n\
             [workload.ingress.oidc]\naudience = \"orders\"\n",
            hello().display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "workload",
            "--url",
            &format!("https://127.0.0.1:{port}"),
            "--trust-sim",
            s.server.dir.join("state/sim").to_str().unwrap(),
            "--root",
            s.tmp
                .path()
                .join("operator-ca/root.crt.pem")
                .to_str()
                .unwrap(),
            "load",
            file.to_str().unwrap(),
        ])
        .env("ENCLAVE_OS_TOKEN", common::instance::token())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("workload.ingress"), "{stderr}");
}

#[test]
fn a_bad_client_policy_stops_the_start_naming_the_file_and_the_reason() {
    let s = setup();
    std::fs::write(
        s.server.dir.join("accept.toml"),
        "allow_simulated = maybe\n",
    )
    .unwrap();
    let (code, err) = s.server.refused();
    assert_ne!(code, 0);
    assert!(
        err.contains("workload[0].ingress.client_policy") && err.contains("accept.toml"),
        "{err}"
    );
}

/// Run as the proxy tests' service when asked (see `common::upstream`); a no-op otherwise.
#[test]
fn upstream_service() {
    common::upstream::serve_if_asked();
}

/// One exchange over a spliced connection: `ping` written, its echo read back (`None`: the
/// connection was closed or reset instead).
fn echo(port: u16, tls: &Arc<rustls::ClientConfig>, name: &str) -> Option<Vec<u8>> {
    let conn =
        rustls::ClientConnection::new(tls.clone(), ServerName::try_from(name.to_string()).unwrap())
            .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(b"ping\n").ok()?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).ok()?;
    Some(buf.to_vec())
}

#[test]
fn a_tcp_workload_admits_only_the_mutual_ratls_clients_its_gate_accepts() {
    let s = setup();
    let port = common::free_port();
    let exe = std::env::current_exe().unwrap();
    let args: Vec<String> = common::upstream::args()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    let sim = s.tmp.path().join("client-sim");
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&s.server.config)
        .unwrap();
    write!(
        config,
        "[[workload]]\nname = \"db\"\nkind = \"process\"\nsource = \"{}\"\nhostnames = [\"db.test\"]\n\
         args = [{}]\nenv = {{ {} = \"tcp\" }}\n[workload.process]\nport = {port}\n\
         [workload.proxy]\nprotocol = \"tcp\"\n\
         [workload.ingress]\nclient_auth = \"ratls\"\nclient_policy = \"accept.toml\"\nclient_names = [\"caller.test\"]\nclient_trust_sim = \"{}\"\n",
        exe.display(),
        args.join(", "),
        common::upstream::MODE,
        sim.display(),
    )
    .unwrap();
    drop(config);
    let _server = s.server.start();
    let (anonymous, enclave) = s.clients();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let echoed = loop {
        if let Some(e) = echo(s.server.port, &enclave, "db.test") {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the admitted client got no echo: {}",
            s.server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(echoed, b"ping\n");
    // Without a certificate: the handshake completes (the certificate is requested, not
    // required, for HTTP's sake), and the connection is closed before any byte is spliced.
    assert_eq!(echo(s.server.port, &anonymous, "db.test"), None);
    assert!(
        s.server
            .log()
            .contains("spliced connection refused by its gate"),
        "{}",
        s.server.log()
    );
}
