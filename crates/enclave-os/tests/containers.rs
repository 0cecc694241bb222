//! Container workloads end to end, on the simulated TDX TEE, with nothing mocked: a private
//! containerd (its own root, state and socket under a temporary directory) running runc, a
//! private `docker-registry` with TLS under a test CA and basic auth, images built from
//! busybox-static with umoci and pushed with skopeo, the runtime binary, its CLI, and curl.
//!
//! Each test has its own containerd namespace, bridge and subnet, so tests of this and other
//! binaries run side by side; bridges and their firewall rules go when the test ends, also
//! when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::instance::json_of;
use common::json;
use common::lab::*;
use enclave_testkit::registry::Registry;
use serde_json::Value;

/// The whole path: an image pushed to the registry, loaded by digest through the CLI, served
/// over RA-TLS at its hostname (curl), its identity in its certificate equal to what skopeo
/// reports, its logs readable, and after `kill -9` of the runtime, back and serving.
#[test]
fn an_image_loaded_by_digest_serves_over_ratls_and_comes_back_after_kill_9() {
    let mut lab = Lab::new("");
    let (_, digest) = lab.image("web", &serve("hello-from-a-container"));
    lab.start();
    let file = lab.workload_file(
        "web",
        &lab.reference("web", &digest),
        "web.test",
        "health = { http_path = \"/\" }\n",
    );
    let (code, v) = lab.load(&file);
    assert_eq!(code, 0, "{v}\n{}", lab.instance.log());
    assert_eq!(v["stage"], "ready", "{v}");
    assert!(!v["layers"].as_array().unwrap().is_empty(), "{v}");

    let (ok, body) = lab.curl("web.test", "/");
    assert!(ok, "{body}");
    assert_eq!(body.trim(), "hello-from-a-container");

    // The certificate names what runs: the manifest, the configuration, the spec, the image.
    let report = common::instance::verify(&lab.instance, Some("web.test"));
    let w = &report["workload"];
    let (manifest, config) = skopeo_digests(&lab.registry, "web:v1", &lab.dir.path().join("certs"));
    assert_eq!(format!("sha256:{manifest}"), digest);
    assert_eq!(w["code_digest"], manifest, "{report}");
    assert_eq!(w["image_config"], config, "{report}");
    assert_eq!(w["image"], lab.reference("web", &digest));
    assert_eq!(
        w["runtime_spec"].as_str().map(str::len),
        Some(64),
        "{report}"
    );
    // The workload's own leaves, checked against the root its certificate carries.
    let leaf = |name: &str| {
        report["config_leaves"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == name))
            .map(|l| l["value_hash"].clone())
            .unwrap_or_else(|| panic!("no leaf {name}: {report}"))
    };
    assert_eq!(leaf("workload/web/code"), manifest);
    assert_eq!(leaf("workload/web/image-config"), config);
    assert_eq!(leaf("workload/web/runtime-spec"), w["runtime_spec"]);
    // And the enclave-wide certificate the engine's versions (module 2.4).
    let enclave = common::instance::verify(&lab.instance, None);
    assert_eq!(
        enclave["modules"]["4"].as_str().map(str::len),
        Some(64),
        "{enclave}"
    );

    let (code, list) = lab.cli(&["list"]);
    assert_eq!(code, 0, "{list}");
    let web = list["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "web")
        .cloned()
        .unwrap();
    assert_eq!(web["kind"], "container");
    assert_eq!(web["health"], "serving");
    assert_eq!(web["code_sha256"], manifest);
    // What it printed, through the operator's API.
    let (code, logs) = lab.cli(&["logs", "web"]);
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs["log"]
            .as_str()
            .unwrap()
            .contains("serving hello-from-a-container"),
        "{logs}"
    );

    // kill -9 while the container runs: the workload comes back from the sealed store, its
    // old container is removed, and a new one serves the same identity.
    let old = lab.workload("web")["container"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    lab.kill_9();
    lab.start();
    let body = eventually(
        &lab,
        "the workload serving again",
        Duration::from_secs(90),
        || {
            let (ok, body) = lab.curl("web.test", "/");
            ok.then_some(body)
        },
    );
    assert_eq!(body.trim(), "hello-from-a-container");
    let new = lab.workload("web")["container"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(old, new, "a new container after the restart");
    assert!(
        lab.instance
            .log()
            .contains("removed a container an earlier run left"),
        "{}",
        lab.instance.log()
    );
    let again = common::instance::verify(&lab.instance, Some("web.test"));
    assert_eq!(again["workload"], report["workload"]);

    // Unload: the route goes, and the container with it.
    let (code, v) = lab.cli(&["unload", "web"]);
    assert_eq!(code, 0, "{v}");
    let (ok, _) = lab.curl("web.test", "/");
    assert!(!ok, "the route is gone");
    lab.server.take().unwrap().stop();
}

/// Every refusal names its reason: a tag without a digest, a digest the registry does not
/// have, a tampered blob, a registry whose certificate is not in its bundle, wrong
/// credentials, and a container that fails its health check.
#[test]
fn refusals_say_why() {
    // Two more registries: one reached with the wrong password, one whose bundle is another
    // registry's CA.
    let scratch = tempfile::tempdir().unwrap();
    let wrong_creds = Registry::start(&scratch.path().join("creds"));
    let wrong_ca = Registry::start(&scratch.path().join("ca"));
    let mut lab = Lab::new("");
    std::fs::write(lab.instance.dir.join("creds-ca.pem"), wrong_creds.ca_pem()).unwrap();
    let extra = format!(
        "[[registry]]\nhost = \"{}\"\nca_bundle = \"creds-ca.pem\"\nusername = \"{}\"\npassword_env = \"TEST_WRONG_PASSWORD\"\n\
         [[registry]]\nhost = \"{}\"\nca_bundle = \"registry-ca.pem\"\n",
        wrong_creds.host(),
        wrong_creds.username(),
        wrong_ca.host(),
    );
    let text = std::fs::read_to_string(&lab.instance.config).unwrap() + &extra;
    std::fs::write(&lab.instance.config, text).unwrap();
    let (layout, digest) = lab.image("ok", &serve("ok"));
    let creds_digest = wrong_creds.push(&layout, "ok:v1");
    let ca_digest = wrong_ca.push(&layout, "ok:v1");
    let password = lab.registry.password().to_string();
    lab.server = Some(start_with_env(
        &lab.instance,
        &[
            ("TEST_REGISTRY_PASSWORD", &password),
            ("TEST_WRONG_PASSWORD", "not-the-password"),
        ],
    ));

    let refused = |file: PathBuf, needles: &[&str]| {
        let (code, v) = lab.load(&file);
        assert_ne!(code, 0, "{v}");
        let e = v["error"].as_str().unwrap_or_default().to_string();
        for n in needles {
            assert!(e.contains(n), "{file:?}: '{n}' not in: {e}");
        }
    };
    // A tag alone.
    let tag = format!("{}/ok:v1", lab.registry.host());
    refused(
        lab.workload_file("a", &tag, "a.test", ""),
        &["not pinned by digest"],
    );
    // A digest the registry does not have.
    let missing = lab.reference("ok", &format!("sha256:{}", "ab".repeat(32)));
    refused(
        lab.workload_file("b", &missing, "b.test", ""),
        &["not found"],
    );
    // Wrong credentials.
    let r = format!("{}/ok@{creds_digest}", wrong_creds.host());
    refused(
        lab.workload_file("c", &r, "c.test", ""),
        &["credentials configured for it", wrong_creds.host()],
    );
    // A certificate its bundle does not hold.
    let r = format!("{}/ok@{ca_digest}", wrong_ca.host());
    refused(
        lab.workload_file("d", &r, "d.test", ""),
        &["TLS", wrong_ca.host()],
    );
    // A tampered blob: another image, its layer changed on the registry's disk.
    let (layout2, digest2) = lab.image("tampered", &serve("tampered"));
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout2
                .path
                .join("blobs/sha256")
                .join(digest2.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = lab.registry.blob_path(&layer);
    let original = std::fs::read(&blob).unwrap();
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    refused(
        lab.workload_file("e", &lab.reference("tampered", &digest2), "e.test", ""),
        &["digest mismatch", &layer],
    );
    // Nothing of it was kept: with the blob repaired, the same layer (every test image
    // shares it) is fetched again and verifies.
    std::fs::write(&blob, original).unwrap();
    // A container that never answers its health check.
    let (_, sleepy) = lab.image("sleepy", "exec sleep 1000");
    refused(
        lab.workload_file(
            "f",
            &lab.reference("sleepy", &sleepy),
            "f.test",
            "health = { start_timeout_secs = 2 }\nrestart = \"no\"\n",
        ),
        &["failed its health check"],
    );
    // A load waiting for a health check holds nothing else up: while one waits (for up to
    // 60 s), another loads and serves, and the waiting one can be cancelled.
    let slow = lab.workload_file(
        "slow",
        &lab.reference("sleepy", &sleepy),
        "slow.test",
        "health = { start_timeout_secs = 60 }\nrestart = \"no\"\n",
    );
    let (code, v) = lab.cli(&["load", slow.to_str().unwrap(), "--no-wait"]);
    assert_eq!(code, 0, "{v}");
    eventually(
        &lab,
        "the slow load in its health check",
        Duration::from_secs(30),
        || {
            let tls = lab.instance.client();
            let (_, body) = lab
                .instance
                .call(
                    &tls,
                    "GET",
                    "/api/v1/workloads/slow/progress",
                    Some(&common::instance::token()),
                    b"",
                )
                .ok()?;
            (json_of(&body)["stage"] == "starting").then_some(())
        },
    );
    let t = std::time::Instant::now();
    let (code, v) =
        lab.load(&lab.workload_file("good", &lab.reference("ok", &digest), "good.test", ""));
    assert_eq!(code, 0, "{v}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    assert_eq!(lab.curl("good.test", "/").1.trim(), "ok");
    let (code, v) = lab.cli(&["unload", "slow"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["cancelled"], true, "{v}");
    // Its container, launched and waiting for its health check, goes with it.
    eventually(
        &lab,
        "the cancelled container removed",
        Duration::from_secs(20),
        || (!lab.containers().iter().any(|c| c.starts_with("slow-"))).then_some(()),
    );
    // None of the refused ones serves.
    let (_, list) = lab.cli(&["list"]);
    let names: Vec<&str> = list["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(names, vec!["good"], "{list}");
}

/// A container over its memory limit is killed and reported, and its restart policy applies;
/// a container reaches neither the host's services nor another container, unless its settings
/// allow the host.
#[test]
fn limits_and_isolation_hold() {
    let mut lab = Lab::new("");
    // Serves, then (once its health check has passed) grows a shell variable without bound.
    let (_, hog) = lab.image(
        "hog",
        "mkdir -p /tmp/www && echo up > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && sleep 3 && x=0123456789abcdef && while :; do x=$x$x; done",
    );
    let (_, peer) = lab.image("peer", &serve("peer"));
    // Tries the host (a listener on every host address, through the bridge's gateway), the
    // runtime's own port there, and the peer container; serves what it found.
    let probe = "mkdir -p /tmp/w; \
        reach() { if echo | nc -w 3 $1 $2 >/dev/null 2>&1; then echo open; else echo closed; fi; }; \
        reach $GATEWAY $HOST_PORT > /tmp/w/host; \
        reach $GATEWAY $MGMT_PORT > /tmp/w/mgmt; \
        reach 127.0.0.1 $MGMT_PORT > /tmp/w/loopback; \
        reach $PEER_IP 8080 > /tmp/w/peer; \
        if busybox unshare -U -r true 2>/dev/null; then echo allowed; else echo refused; fi > /tmp/w/unshare; \
        exec httpd -f -p 8080 -h /tmp/w";
    let (_, prober) = lab.image("prober", probe);
    // A plain HTTP listener on every host address, answering anyone who gets through.
    let host_listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in host_listener.incoming().flatten() {
            use std::io::{Read, Write};
            let mut c = c;
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let gateway = {
        let base: std::net::Ipv4Addr = lab
            .bridge
            .subnet
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        std::net::Ipv4Addr::from(u32::from(base) + 1)
    };
    lab.start();

    // Memory: 32 MiB, one restart allowed.
    let file = lab.instance.dir.join("hog.toml");
    std::fs::write(
        &file,
        format!(
            "[workload]\nname = \"hog\"\nkind = \"container\"\nimage = \"{}\"\nhostnames = [\"hog.test\"]\n\
             limits = {{ memory_bytes = 33554432 }}\n[workload.container]\nport = 8080\nrestart = \"on-failure\"\nmax_restarts = 1\n",
            lab.reference("hog", &hog)
        ),
    )
    .unwrap();
    let (code, v) = lab.load(&file);
    assert_eq!(code, 0, "{v}\n{}", lab.instance.log());
    // Killed, restarted once, killed again, and left down with the reason.
    let w = eventually(
        &lab,
        "the hog killed twice and left down",
        Duration::from_secs(60),
        || {
            let w = lab.workload("hog");
            let c = &w["container"];
            // `left_down`, not only no address: between the two starts it has none either.
            (c["restarts"] == 1 && c["left_down"] == true && w["health"] == "unavailable")
                .then_some(w)
        },
    );
    let reason = w["reason"].as_str().unwrap();
    assert!(
        reason.contains("exceeding its memory limit (33554432 bytes)"),
        "{w}"
    );
    assert!(reason.contains("137"), "{w}");
    let (ok, body) = lab.curl("hog.test", "/");
    assert!(!ok && body.contains("not running"), "{body}");

    // Output without end is kept to a bounded log: the disk the sealed store is on stays free.
    let (_, chatty) = lab.image(
        "chatty",
        "mkdir -p /tmp/www && echo up > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && exec yes 0123456789abcdef0123456789abcdef",
    );
    let file = lab.instance.dir.join("chatty.toml");
    std::fs::write(
        &file,
        format!(
            "[workload]\nname = \"chatty\"\nkind = \"container\"\nimage = \"{}\"\nhostnames = [\"chatty.test\"]\n\
             limits = {{ cpu_millis = 300 }}\n[workload.container]\nport = 8080\n",
            lab.reference("chatty", &chatty)
        ),
    )
    .unwrap();
    let (code, v) = lab.load(&file);
    assert_eq!(code, 0, "{v}");
    // The runtime's log driver keeps the current segment and one before it, 4 MiB each.
    let log = lab.instance.dir.join("state/containers/logs/chatty.log");
    let previous = log.with_extension("previous.log");
    eventually(
        &lab,
        "the chatty log rotated",
        Duration::from_secs(60),
        || previous.exists().then_some(()),
    );
    for _ in 0..10 {
        for f in [&log, &previous] {
            let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
            assert!(
                size <= (4 << 20) + (64 << 10),
                "{} grew to {size} bytes",
                f.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, v) = lab.cli(&["unload", "chatty"]);
    assert_eq!(code, 0, "{v}");

    // Isolation.
    let (code, v) =
        lab.load(&lab.workload_file("peer", &lab.reference("peer", &peer), "peer.test", ""));
    assert_eq!(code, 0, "{v}");
    let peer_addr = lab.workload("peer")["container"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    let env = format!(
        "env = {{ GATEWAY = \"{gateway}\", HOST_PORT = \"{host_port}\", MGMT_PORT = \"{}\", PEER_IP = \"{}\" }}\n",
        lab.instance.port,
        peer_addr.split(':').next().unwrap()
    );
    for (name, allow) in [("closed", false), ("open", true)] {
        let file = lab.instance.dir.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "[workload]\nname = \"{name}\"\nkind = \"container\"\nimage = \"{}\"\nhostnames = [\"{name}.test\"]\n{env}\
                 [workload.container]\nport = 8080\nallow_host = {allow}\nhealth = {{ start_timeout_secs = 60 }}\n",
                lab.reference("prober", &prober)
            ),
        )
        .unwrap();
        let (code, v) = lab.load(&file);
        assert_eq!(code, 0, "{v}\n{}", lab.instance.log());
    }
    let seen = |name: &str, what: &str| {
        lab.curl(&format!("{name}.test"), &format!("/{what}"))
            .1
            .trim()
            .to_string()
    };
    // The default: neither the host (any address, the runtime's own port included) nor a peer.
    assert_eq!(seen("closed", "host"), "closed");
    assert_eq!(seen("closed", "mgmt"), "closed");
    assert_eq!(seen("closed", "loopback"), "closed");
    assert_eq!(seen("closed", "peer"), "closed");
    // No way around it from inside: a new user namespace (all capabilities within) is refused.
    assert_eq!(seen("closed", "unshare"), "refused");
    // allow_host lets that container reach the host, and nothing more: still not a peer. This
    // also shows the probe itself works.
    assert_eq!(seen("open", "host"), "open");
    assert_eq!(seen("open", "peer"), "closed");
    // The host still reaches them all (that is how they are served).
    assert_eq!(lab.curl("peer.test", "/").1.trim(), "peer");
}

/// A container of `enclave.toml` itself: the runtime pulls it before it computes the tree, and
/// `enclave-os measure --oci-layout` computes the same root offline, from the image's local
/// layout and the engine's versions, before anything runs.
#[test]
fn a_file_container_is_measured_offline_as_it_runs() {
    let mut lab = Lab::new("");
    let (layout, digest) = lab.image("site", &serve("from-the-file"));
    let text = std::fs::read_to_string(&lab.instance.config).unwrap()
        + &format!(
            "[[workload]]\nname = \"site\"\nkind = \"container\"\nimage = \"{}\"\nhostnames = [\"site.test\"]\n\
             [workload.container]\nport = 8080\n",
            lab.reference("site", &digest)
        );
    std::fs::write(&lab.instance.config, text).unwrap();

    // Offline, before the runtime ever ran: the image from its OCI layout.
    let config = lab.instance.config.to_str().unwrap().to_string();
    let oci = layout.path.to_str().unwrap().to_string();
    let (code, measured) = json(&["measure", &config, "--oci-layout", &oci]);
    assert_eq!(code, 0, "{measured}");
    let names: Vec<&str> = measured["leaves"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["name"].as_str())
        .collect();
    for leaf in [
        "containers/engine",
        "workload/site/code",
        "workload/site/image-config",
        "workload/site/runtime-spec",
    ] {
        assert!(names.contains(&leaf), "{leaf} not in {names:?}");
    }
    // Without the layout there is nothing to commit, and it says what is missing.
    let (code, v) = json(&["measure", &config]);
    assert_ne!(code, 0);
    assert!(v["error"].as_str().unwrap().contains("--oci-layout"), "{v}");

    lab.start();
    // The runtime serves at once; the container's route answers once it is healthy.
    let body = eventually(
        &lab,
        "the file's container serving",
        Duration::from_secs(60),
        || {
            let (ok, body) = lab.curl("site.test", "/");
            ok.then_some(body)
        },
    );
    assert_eq!(body.trim(), "from-the-file");
    let served = common::instance::verify(&lab.instance, None);
    assert_eq!(served["config_root"], measured["root"], "{served}");
    let site = common::instance::verify(&lab.instance, Some("site.test"));
    assert_eq!(
        format!(
            "sha256:{}",
            site["workload"]["code_digest"].as_str().unwrap()
        ),
        digest
    );
}

/// A busybox script for the vault's SKR endpoint: serve `/tmp/www` (the health check's `/`),
/// then try `wget` with `args` once a second, at most 60 times, until it succeeds (its output in
/// `/tmp/www/<out>`) or its error contains `stop`, a refusal that will not change (the error in
/// `/tmp/www/<out>.refused`). Not `wget -T`: Debian's busybox 1.35 crashes on it.
fn skr_script(calls: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "mkdir -p /tmp/www && echo up > /tmp/www/index.html && httpd -p 8080 -h /tmp/www; ",
    );
    for (out, args, stop) in calls {
        s.push_str(&format!(
            "i=0; while [ $i -lt 60 ]; do \
               if wget -q -O /tmp/www/{out}.tmp {args} 2>/tmp/www/{out}.err; then mv /tmp/www/{out}.tmp /tmp/www/{out}; break; fi; \
               if grep -q '{stop}' /tmp/www/{out}.err; then cp /tmp/www/{out}.err /tmp/www/{out}.refused; break; fi; \
               i=$((i+1)); sleep 1; done; "
        ));
    }
    s.push_str("exec sleep 1000000");
    s
}

/// The vault's SKR-compatible endpoint from inside running containers (busybox `wget`): the
/// first container's token releases the key its policy allows it (the private half of the
/// public key the operator's route shows), by header and by path; the second container's own
/// token is refused with the policy's reason; a wrong token is 401; `/attest/raw` answers
/// evidence binding the runtime data; the variables are not in the committed runtime spec.
#[test]
fn containers_get_keys_from_the_vault_through_the_skr_endpoint() {
    let mut lab = Lab::new("[vault]\n");
    let bearer = "--header \"Authorization: Bearer $ENCLAVE_OS_VAULT_TOKEN\"";
    let release = "--post-data '{\"kid\":\"disk\"}'";
    let a_script = skr_script(&[
        (
            "key",
            &format!("{bearer} {release} $ENCLAVE_OS_VAULT_URL/key/release"),
            "40[0-9]",
        ),
        (
            "key-by-path",
            &format!("{release} $ENCLAVE_OS_VAULT_URL/$ENCLAVE_OS_VAULT_TOKEN/key/release"),
            "40[0-9]",
        ),
        (
            "raw",
            &format!(
                "{bearer} --post-data '{{\"runtime_data\":\"aGVsbG8=\"}}' $ENCLAVE_OS_VAULT_URL/attest/raw"
            ),
            "40[0-9]",
        ),
        ("status", "$ENCLAVE_OS_VAULT_URL/status", "40[0-9]"),
    ]);
    let b_script = skr_script(&[
        (
            "key",
            &format!("{bearer} {release} $ENCLAVE_OS_VAULT_URL/key/release"),
            "403",
        ),
        (
            "wrong",
            &format!(
                "--header 'Authorization: Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' {release} $ENCLAVE_OS_VAULT_URL/key/release"
            ),
            "401",
        ),
    ]);
    // Another port of the gateway stays closed to the containers: the vault's is the only one.
    let b_script = format!(
        "GW=$(echo $ENCLAVE_OS_VAULT_URL | sed 's|http://||; s|:.*||'); \
         for p in 8080 8081; do if echo | nc -w 3 $GW $p >/dev/null 2>&1; then echo $p open; else echo $p closed; fi; done > /tmp/other-port; \
         {b_script}"
    )
    .replace("httpd -p 8080 -h /tmp/www;", "httpd -p 8080 -h /tmp/www; cp /tmp/other-port /tmp/www/;");
    let (_, a_digest) = lab.image("skr-a", &a_script);
    let (_, b_digest) = lab.image("skr-b", &b_script);
    lab.start();
    let gateway = {
        let s: Vec<u8> = lab
            .bridge
            .subnet
            .split(['.', '/'])
            .take(3)
            .map(|o| o.parse().unwrap())
            .collect();
        format!("{}.{}.{}.1", s[0], s[1], s[2])
    };
    let _other = std::net::TcpListener::bind(format!("{gateway}:8081")).unwrap();

    // The operator generates the key inside the TEE; only its public half comes out.
    let url = format!("https://127.0.0.1:{}", lab.instance.port);
    let sim = lab.instance.dir.join("state/sim");
    let root = lab.instance.dir.join("state/ca/root.crt.pem");
    let admin = common::instance::token_with(&["vault:read vault:write"], &[]);
    let out = common::run(&[
        "vault",
        "--url",
        &url,
        "--token",
        &admin,
        "--root",
        root.to_str().unwrap(),
        "--trust-sim",
        sim.to_str().unwrap(),
        "--json",
        "key",
        "generate",
        "disk",
        "--kind",
        "ec-p256",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = json_of(&out.stdout)["public_jwk"].clone();
    assert!(public.get("d").is_none(), "{public}");
    // The policy names workload a and its image: a name alone admits only enclave.toml's
    // workloads, and these are loaded through the API.
    let policy = lab.instance.dir.join("disk-policy.toml");
    std::fs::write(
        &policy,
        format!(
            "keys = [\"disk\"]\n[[allow]]\nworkloads = [\"a\"]\ncode_sha256 = [\"{}\"]\n",
            a_digest.trim_start_matches("sha256:")
        ),
    )
    .unwrap();
    let out = common::run(&[
        "vault",
        "--url",
        &url,
        "--token",
        &admin,
        "--root",
        root.to_str().unwrap(),
        "--trust-sim",
        sim.to_str().unwrap(),
        "--json",
        "policy",
        "put",
        "disk",
        policy.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    for (name, digest) in [("a", &a_digest), ("b", &b_digest)] {
        let file = lab.workload_file(
            name,
            &lab.reference(&format!("skr-{name}"), digest),
            &format!("{name}.test"),
            "health = { http_path = \"/\" }\n",
        );
        let (code, v) = lab.load(&file);
        assert_eq!(code, 0, "{v}\n{}", lab.instance.log());
    }
    // What the container wrote at `path`, once it has (its wget's errors if it never does).
    let fetch = |host: &str, path: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let (ok, body) = lab.curl(host, path);
            if ok {
                return body;
            }
            if std::time::Instant::now() > deadline {
                let (_, err) = lab.curl(host, &format!("{path}.err"));
                panic!(
                    "{host}{path}: not within 90 s; wget said: {err}\n{}",
                    lab.instance.log()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };

    // The first container has the key's private half, by header and by path.
    for path in ["/key", "/key-by-path"] {
        let answer: Value = serde_json::from_str(&fetch("a.test", path)).unwrap();
        // SKR's shape: the JWK as a JSON string.
        let jwk: Value = serde_json::from_str(answer["key"].as_str().unwrap()).unwrap();
        assert_eq!(jwk["kty"], "EC", "{jwk}");
        assert_eq!(jwk["crv"], public["crv"]);
        assert_eq!(jwk["x"], public["x"]);
        assert_eq!(jwk["y"], public["y"]);
        assert!(jwk["d"].as_str().is_some_and(|d| !d.is_empty()), "{jwk}");
    }
    // Evidence binding SHA-256 of the runtime data, in the tagged report data.
    let raw: Value = serde_json::from_str(&fetch("a.test", "/raw")).unwrap();
    assert_eq!(raw["tee"], "tdx", "{raw}");
    let report_data = raw["report_data"].as_str().unwrap();
    assert!(report_data.starts_with(&sha256_hex(b"hello")), "{raw}");
    assert!(!report_data.ends_with(&"0".repeat(64)), "{raw}");
    assert!(
        raw["report"].as_str().unwrap().contains(report_data),
        "{raw}"
    );
    let status: Value = serde_json::from_str(&fetch("a.test", "/status")).unwrap();
    assert_eq!(status["message"], "Status OK");

    // The second container's own token is refused, with the policy's reason in the audit log.
    let refused = fetch("b.test", "/key.refused");
    assert!(refused.contains("403"), "{refused}");
    let wrong = fetch("b.test", "/wrong.refused");
    assert!(wrong.contains("401"), "{wrong}");
    let (ok, _) = lab.curl("b.test", "/key");
    assert!(!ok, "the second container has no key");
    assert_eq!(
        fetch("b.test", "/other-port").trim(),
        "8080 open\n8081 closed"
    );
    let log = lab.instance.log();
    assert!(
        log.lines().any(|l| l.contains("vault.refuse")
            && l.contains("skr")
            && l.contains("workload 'b' is not one of a")),
        "{log}"
    );

    // From the host, the same endpoint: a wrong token is 401 with the reason; MAA is 501.
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let endpoint = format!("http://{gateway}:8080");
    let out = curl(&[
        "-H",
        "Authorization: Bearer nope",
        "--data",
        "{\"kid\":\"disk\"}",
        &format!("{endpoint}/key/release"),
    ]);
    assert!(
        out.ends_with("401") && out.contains("not one this runtime gave"),
        "{out}"
    );
    let out = curl(&["--data", "{}", &format!("{endpoint}/attest/maa")]);
    assert!(out.ends_with("501") && out.contains("\"error\""), "{out}");
    let metrics = {
        let tls = lab.instance.client();
        let (_, body) = lab
            .instance
            .call(
                &tls,
                "GET",
                "/metrics",
                Some(&common::instance::token()),
                b"",
            )
            .unwrap();
        String::from_utf8_lossy(&body).into_owned()
    };
    assert!(metrics.contains("via=\"skr\""), "{metrics}");

    // No token anywhere in the log, and none in the committed runtime spec.
    assert!(!log.contains("ENCLAVE_OS_VAULT_TOKEN="), "{log}");
    let report = common::instance::verify(&lab.instance, Some("a.test"));
    assert_eq!(
        report["workload"]["runtime_spec"].as_str().map(str::len),
        Some(64)
    );
}
