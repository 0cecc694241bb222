//! Process workloads end to end, with nothing mocked: the runtime binary on the simulated SGX
//! TEE runs busybox-static (`.ci/run` installs it) as a process, and clients reach it over
//! RA-TLS by its hostname.
//!
//! busybox picks its applet by `argv[0]`, and a process's `argv[0]` is its workload's name:
//! the workloads here are therefore named `httpd`, `sleep` and `false`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::free_port;
use common::instance::{Instance, json_of, token, verify};
use serde_json::Value;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("busybox-static (.ci/run installs it)")
}

/// Wait (bounded) for `f` to give `Some`; on timeout, fail with the runtime's log.
fn eventually<T>(i: &Instance, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; the runtime's log:\n{}",
            i.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Workload `name` in the operator's status detail.
fn detail(i: &Instance, name: &str) -> Value {
    let (status, body) = i
        .call(
            &i.client(),
            "GET",
            "/api/v1/status/detail",
            Some(&token()),
            b"",
        )
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    json_of(&body)["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn pid_of(i: &Instance, name: &str) -> Option<u32> {
    detail(i, name)["process"]["pid"]
        .as_u64()
        .map(|p| u32::try_from(p).unwrap())
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for this purpose: it runs nothing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// GET `path` at `host` through the runtime, over RA-TLS (the evidence checked): the status
/// and body.
fn get(i: &Instance, host: &str, path: &str) -> (u16, String) {
    match i.call_as(host, &i.client(), "GET", path, None, b"") {
        Ok((status, body)) => (status, String::from_utf8_lossy(&body).into_owned()),
        Err(e) => (0, e.to_string()),
    }
}

/// A directory with an index page.
fn www(dir: &Path, text: &str) -> String {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), format!("{text}\n")).unwrap();
    www.display().to_string()
}

/// `enclave-os workload … ACTION --json` against `i`: the exit code and its JSON.
fn cli(i: &Instance, action: &[&str]) -> (i32, Value) {
    common::instance::cli(i, "workload", &token(), action)
}

/// A process from `enclave.toml`: served over RA-TLS by its hostname, its code leaf the
/// SHA-256 of the executable, restarted per its policy when it is killed, and running the bytes
/// committed even after the file on disk was replaced.
#[test]
fn a_file_process_serves_by_hostname_restarts_and_runs_only_the_committed_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rt");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let exe = busybox();
    std::fs::write(dir.join("bin/httpd"), &exe).unwrap();
    let port = free_port();
    let docs = www(tmp.path(), "hello from an attested process");
    let i = Instance::new(
        &dir,
        &format!(
            "[[workload]]\nname = \"httpd\"\nkind = \"process\"\nsource = \"bin/httpd\"\n\
             hostnames = [\"web.test\"]\nargs = [\"-f\", \"-v\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"{docs}\"]\n\
             [workload.process]\nport = {port}\nhealth = {{ http_path = \"/\" }}\nrestart = \"on-failure\"\nmax_restarts = 3\n"
        ),
    );
    let server = i.start();

    // Served through the RA-TLS front, by hostname, once healthy.
    let body = eventually(&i, "the process serving", || {
        let (status, body) = get(&i, "web.test", "/");
        (status == 200).then_some(body)
    });
    assert_eq!(body.trim(), "hello from an attested process");

    // The workload's certificate names its code: the SHA-256 of the executable.
    let report = verify(&i, Some("web.test"));
    assert_eq!(
        report["workload"]["code_digest"],
        sha256_hex(&exe),
        "{report}"
    );
    let leaf = report["config_leaves"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "workload/httpd/code"))
        .map(|l| l["value_hash"].clone())
        .unwrap_or_else(|| panic!("no code leaf: {report}"));
    assert_eq!(leaf, sha256_hex(&exe));

    // What runs is the sealed memory file, not the file on disk.
    let pid = pid_of(&i, "httpd").expect("a pid while serving");
    let running = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        running
            .to_string_lossy()
            .starts_with("/memfd:enclave-os:httpd"),
        "{running:?}"
    );
    assert_eq!(
        sha256_hex(&std::fs::read(format!("/proc/{pid}/exe")).unwrap()),
        sha256_hex(&exe)
    );

    // The host replaces the executable, then the process crashes (SIGKILL): it is restarted
    // per its policy, reported in the status, and runs the committed bytes again.
    std::fs::write(
        dir.join("bin/httpd"),
        b"#!/bin/sh\necho replaced by the host\n",
    )
    .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let new_pid = eventually(&i, "a restarted process", || {
        pid_of(&i, "httpd").filter(|p| *p != pid)
    });
    let w = detail(&i, "httpd");
    assert_eq!(w["process"]["restarts"], 1, "{w}");
    assert_eq!(w["process"]["left_down"], false, "{w}");
    let last = w["process"]["last_exit"].as_str().unwrap_or_default();
    assert!(last.contains("killed by signal 9"), "{w}");
    assert_eq!(
        sha256_hex(&std::fs::read(format!("/proc/{new_pid}/exe")).unwrap()),
        sha256_hex(&exe),
        "the restart runs the committed bytes, not the host's new file"
    );
    let body = eventually(&i, "the restarted process serving", || {
        let (status, body) = get(&i, "web.test", "/");
        (status == 200).then_some(body)
    });
    assert_eq!(body.trim(), "hello from an attested process");
    assert_eq!(
        verify(&i, Some("web.test"))["workload"]["code_digest"],
        sha256_hex(&exe)
    );

    // Its output, through the operator's API (busybox httpd -v logs each request).
    let (code, logs) = cli(&i, &["logs", "httpd"]);
    assert_eq!(code, 0, "{logs}");
    assert!(
        logs["log"]
            .as_str()
            .unwrap_or_default()
            .contains("response:200"),
        "{logs}"
    );

    // A clean stop of the runtime (SIGTERM) stops its process, and leaves no record to sweep.
    server.stop();
    assert!(!alive(new_pid), "the process stopped with the runtime");
    let records = std::fs::read_dir(dir.join("state/processes/run"))
        .unwrap()
        .count();
    assert_eq!(records, 0);
}

/// Processes loaded through the management API (with the CLI): started and health-checked
/// before the load returns, refused with the reason when they fail it, and stopped (their pid
/// gone) when unloaded.
#[test]
fn api_loaded_processes_are_health_checked_before_adoption_and_stopped_at_unload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rt");
    // The executable travels base64 in the request: busybox (2 MB or so) needs more than the
    // default 1 MiB request limit.
    let i = Instance::new(&dir, "[limits]\nmax_request_bytes = 8388608\n");
    let _server = i.start();
    std::fs::write(dir.join("busybox"), busybox()).unwrap();
    let docs = www(tmp.path(), "loaded at run time");
    let workload = |name: &str, args: &str, more: &str| {
        let port = free_port();
        let args = args.replace("PORT", &port.to_string());
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!(
                "[workload]\nname = \"{name}\"\nkind = \"process\"\nsource = \"busybox\"\n\
                 hostnames = [\"{name}.test\"]\nargs = [{args}]\n\
                 [workload.process]\nport = {port}\n{more}"
            ),
        )
        .unwrap();
        file
    };

    // A process that never listens fails its health check: the load is refused, with why.
    let file = workload("sleep", "\"30\"", "health = { start_timeout_secs = 1 }\n");
    let (code, v) = cli(&i, &["load", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{v}");
    let error = v["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("422") && error.contains("failed its health check for 1s"),
        "{v}"
    );
    assert!(detail(&i, "sleep").is_null(), "not adopted");
    // One that exits at once is refused as soon as it has, with its exit status.
    let file = workload("false", "", "");
    let (code, v) = cli(&i, &["load", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("it exited with status 1 before it passed its health check"),
        "{v}"
    );

    // A port something else holds on loopback would pass a health check for a process that
    // never got it: refused before anything starts.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held = holder.local_addr().unwrap().port();
    let file = dir.join("held.toml");
    std::fs::write(
        &file,
        format!(
            "[workload]\nname = \"sleep\"\nkind = \"process\"\nsource = \"busybox\"\nargs = [\"30\"]\n\
             [workload.process]\nport = {held}\n"
        ),
    )
    .unwrap();
    let (code, v) = cli(&i, &["load", file.to_str().unwrap()]);
    assert_ne!(code, 0, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("port {held} on 127.0.0.1 is taken already")),
        "{v}"
    );
    drop(holder);

    // A process that serves is adopted: its route is live when the load returns.
    let file = workload(
        "httpd",
        &format!("\"-f\", \"-v\", \"-p\", \"127.0.0.1:PORT\", \"-h\", \"{docs}\""),
        "health = { http_path = \"/\" }\n",
    );
    let (code, v) = cli(&i, &["load", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{v}\n{}", i.log());
    let (status, body) = get(&i, "httpd.test", "/");
    assert_eq!((status, body.trim()), (200, "loaded at run time"));
    assert_eq!(
        verify(&i, Some("httpd.test"))["workload"]["code_digest"],
        sha256_hex(&busybox())
    );
    let pid = pid_of(&i, "httpd").expect("a pid");
    assert!(alive(pid));

    // Unloaded: the route goes, and the process with it.
    let (code, v) = cli(&i, &["unload", "httpd"]);
    assert_eq!(code, 0, "{v}");
    eventually(&i, "the process gone", || (!alive(pid)).then_some(()));
    let (status, _) = get(&i, "httpd.test", "/");
    assert_ne!(status, 200);
}

/// `kill -9` of the runtime: its process dies with it (`PR_SET_PDEATHSIG`), and what that
/// process started in its group and left behind is stopped at the next start.
#[test]
fn a_killed_runtime_takes_its_processes_and_the_next_start_sweeps_their_leftovers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rt");
    std::fs::create_dir_all(&dir).unwrap();
    let docs = www(tmp.path(), "a script");
    let pidfile = tmp.path().join("child.pid");
    // A script (the sealed file is its interpreter's input) that leaves a child in its group.
    std::fs::write(
        dir.join("app.sh"),
        format!(
            "#!/bin/busybox sh\n/bin/busybox sleep 300 &\necho $! > {}\nexec /bin/busybox httpd -f -p \"127.0.0.1:$PORT\" -h {docs}\n",
            pidfile.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let i = Instance::new(
        &dir,
        &format!(
            "[[workload]]\nname = \"app\"\nkind = \"process\"\nsource = \"app.sh\"\nhostnames = [\"app.test\"]\n\
             [workload.process]\nport = {port}\n"
        ),
    );
    let mut server = i.start();
    let body = eventually(&i, "the script serving", || {
        let (status, body) = get(&i, "app.test", "/");
        (status == 200).then_some(body)
    });
    assert_eq!(body.trim(), "a script");
    let leader = pid_of(&i, "app").expect("a pid");
    let child: u32 = eventually(&i, "the child's pid", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    assert!(alive(leader) && alive(child));

    server.0.kill().unwrap();
    server.0.wait().unwrap();
    eventually(&i, "the process dying with the runtime", || {
        (!alive(leader)).then_some(())
    });
    assert!(
        alive(child),
        "the leader's own child outlives it, until the next start"
    );

    let _server = i.start();
    eventually(&i, "the leftover child stopped", || {
        (!alive(child)).then_some(())
    });
    assert!(
        i.log()
            .contains("killed what an earlier run's process left"),
        "{}",
        i.log()
    );
    eventually(&i, "the script serving again", || {
        let (status, _) = get(&i, "app.test", "/");
        (status == 200).then_some(())
    });
}
