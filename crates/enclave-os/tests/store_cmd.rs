//! `enclave-os store reset-counter` through the real binary: a database whose counter was
//! deleted is refused at start, and starts again only after the operator re-creates the counter,
//! with a message saying what that gives up.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::instance::*;
use common::*;

#[test]
fn a_deleted_counter_stops_the_start_until_the_operator_resets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Instance::new(tmp.path(), "");
    let t = token();
    let server = a.start();
    let tls = a.client();
    let mut version = 0;
    for v in [&b"v1"[..], b"v2"] {
        let (status, body) = a.call(&tls, "PUT", "/api/v1/kv/k", Some(&t), v).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        version = json_of(&body)["version"].as_u64().unwrap();
    }
    server.stop();
    let counter = tmp.path().join("state/store/kv.counter");
    std::fs::remove_file(&counter).unwrap();

    let (code, err) = a.refused();
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("kv.counter does not") && err.contains("reset-counter"),
        "{err}"
    );

    let config = a.config.to_str().unwrap();
    let (code, v) = json(&["store", "reset-counter", config]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["version"].as_u64(), Some(version));
    assert_eq!(v["previous"]["state"], "missing");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("What this gives up") && m.contains("rollback is now accepted"),
        "{m}"
    );
    assert!(counter.exists());

    let _server = a.start();
    let (status, body) = a.call(&tls, "GET", "/api/v1/kv/k", Some(&t), b"").unwrap();
    assert_eq!((status, body.as_slice()), (200, &b"v2"[..]));

    // While the runtime holds the database, the command fails rather than race it.
    let (code, v) = json(&["store", "reset-counter", config]);
    assert_eq!(code, 1, "{v}");
    assert!(v["error"].as_str().unwrap().contains("kv.redb"), "{v}");

    // A witness counter is not this command's to reset.
    let w = Instance::new(
        &tmp.path().join("witnessed"),
        "[store]\ncounter = \"witness\"\n[store.witness]\nurl = \"https://127.0.0.1:9\"\nroot = \"root.crt.pem\"\nconfig_root = \"abababababababababababababababababababababababababababababababab\"\n",
    );
    // The witness's root is read when the configuration is loaded; any bytes do here.
    std::fs::write(w.dir.join("root.crt.pem"), b"a stand-in root").unwrap();
    let (code, v) = json(&["store", "reset-counter", w.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("\"witness\"") && e.contains("only moves forward"),
        "{v}"
    );
}
