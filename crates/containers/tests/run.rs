//! Containers run by a real containerd + runc on an isolated bridge: serving HTTP to the host,
//! exit codes and logs, the memory limit and the OOM report, isolation, and cleanup after a
//! crash of the runtime.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{BOUND, Fixture, SpecOptions, build_image, load_image, spec};
use enclave_containers::{Bridge, BridgeConfig, Engine, log_tail, probe_http, probe_tcp};
use enclave_testkit::containerd::unique;

/// A bridge torn down on drop, also when a test panics.
struct TestBridge {
    bridge: Bridge,
    _state: tempfile::TempDir,
}

impl TestBridge {
    async fn new() -> TestBridge {
        let state = tempfile::tempdir().expect("temp dir");
        // Unique per process and test: 10.<200 + pid%50>.<n>.0/24, name "eost<pid>-<n>".
        let name = unique("eost");
        let n: u8 = name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<u8>().ok())
            .expect("counter");
        let second = 200 + (std::process::id() % 50) as u8;
        let config = BridgeConfig {
            name: name.chars().take(15).collect(),
            subnet: format!("10.{second}.{n}.0/24").parse().expect("subnet"),
            cni_bin_dir: "/usr/lib/cni".into(),
            state_dir: state.path().to_owned(),
            open_port: None,
        };
        let bridge = Bridge::new(config).await.expect("bridge");
        TestBridge {
            bridge,
            _state: state,
        }
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        if let Err(e) = self.bridge.teardown_blocking() {
            eprintln!("tearing down the bridge: {e}");
        }
    }
}

async fn run_container(fx: &mut Fixture, chain: &str, id: &str, options: &SpecOptions<'_>) -> u32 {
    let task = fx
        .engine
        .create(id, &spec(options), chain, &fx.log_path(id))
        .await
        .unwrap_or_else(|e| panic!("create {id}: {e}\n{}", fx.containerd.log()));
    fx.ids.push(id.to_owned());
    task.pid
}

async fn wait_for_http(addr: SocketAddr) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match probe_http(addr, "/index.html", Duration::from_secs(2)).await {
            Ok(status) => return status,
            Err(e) if Instant::now() > deadline => panic!("{addr} never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httpd_serves_the_host_over_the_bridge() {
    let mut fx = Fixture::new().await;
    let image = build_image();
    let chain = load_image(&fx.engine, &image).await;
    let net = TestBridge::new().await;
    let id = "web";
    let options = SpecOptions::new(&["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let pid = run_container(&mut fx, &chain, id, &options).await;
    let ip = net.bridge.attach(id, pid).await.expect("attach");
    fx.engine.start(id).await.expect("start");

    let addr = SocketAddr::from((ip, 8080));
    assert_eq!(wait_for_http(addr).await, 200);
    probe_tcp(addr, Duration::from_secs(2)).await.expect("tcp");
    assert_eq!(
        probe_http(addr, "/missing", Duration::from_secs(2))
            .await
            .expect("probe"),
        404
    );
    assert!(
        probe_tcp(SocketAddr::from((ip, 8081)), Duration::from_secs(2))
            .await
            .is_err()
    );

    net.bridge.detach(id, Some(pid)).await.expect("detach");
    net.bridge
        .detach(id, Some(pid))
        .await
        .expect("detach is idempotent");
    fx.engine
        .remove(id, Duration::from_secs(2))
        .await
        .expect("remove");
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_and_log_tail_are_reported() {
    let mut fx = Fixture::new().await;
    let image = build_image();
    let chain = load_image(&fx.engine, &image).await;
    let id = "bye";
    let options = SpecOptions::new(&["sh", "-c", "echo hello; echo bye; exit 3"]);
    run_container(&mut fx, &chain, id, &options).await;
    fx.engine.start(id).await.expect("start");
    let status = tokio::time::timeout(BOUND, fx.engine.wait(id))
        .await
        .expect("bounded")
        .expect("wait");
    assert_eq!(status.code, 3);
    assert!(!status.oom_killed);
    assert!(status.exited_at.is_some());
    let tail = log_tail(&fx.log_path(id), 4096).await.expect("tail");
    assert!(tail.contains("bye"), "{tail:?}");
    // A limit that cuts the first line keeps only whole lines.
    let short = log_tail(&fx.log_path(id), 5).await.expect("tail");
    assert_eq!(short, "bye\n");
    fx.engine
        .remove(id, Duration::from_secs(2))
        .await
        .expect("remove");
    // Removing again is a no-op.
    fx.engine
        .remove(id, Duration::from_secs(2))
        .await
        .expect("remove");
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_past_its_memory_limit_is_oom_killed() {
    let mut fx = Fixture::new().await;
    let image = build_image();
    let chain = load_image(&fx.engine, &image).await;
    let id = "hog";
    // The string doubles each round: past 32 MiB within 25 rounds.
    let mut options = SpecOptions::new(&[
        "sh",
        "-c",
        "x=0123456789abcdef; while true; do x=\"$x$x\"; done",
    ]);
    options.memory_limit = 32 << 20;
    run_container(&mut fx, &chain, id, &options).await;
    fx.engine.start(id).await.expect("start");
    let status = tokio::time::timeout(BOUND, fx.engine.wait(id))
        .await
        .expect("bounded")
        .expect("wait");
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(status.code, 137, "{status:?}");
    fx.engine
        .remove(id, Duration::from_secs(2))
        .await
        .expect("remove");
    fx.cleanup().await;
}

/// A host listener that answers HTTP 200 and counts the connections it accepted.
async fn host_listener(addr: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let local = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nhi\n")
                .await;
        }
    });
    (local, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_reach_neither_each_other_nor_the_host() {
    let mut fx = Fixture::new().await;
    let image = build_image();
    let chain = load_image(&fx.engine, &image).await;
    let net = TestBridge::new().await;

    let target = "target";
    let options = SpecOptions::new(&["httpd", "-f", "-p", "8080", "-h", "/www"]);
    let target_pid = run_container(&mut fx, &chain, target, &options).await;
    let target_ip = net.bridge.attach(target, target_pid).await.expect("attach");
    fx.engine.start(target).await.expect("start");
    // The host reaches the container.
    assert_eq!(
        wait_for_http(SocketAddr::from((target_ip, 8080))).await,
        200
    );

    let gateway = net.bridge.gateway();
    let (any_addr, any_count) = host_listener(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))).await;
    let (gw_addr, gw_count) = host_listener(SocketAddr::from((gateway, 0))).await;
    let (lo_addr, lo_count) = host_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await;
    // The control: the host itself reaches its listeners.
    probe_tcp(
        SocketAddr::from((gateway, any_addr.port())),
        Duration::from_secs(2),
    )
    .await
    .expect("host to its own listener");
    // The accept runs on another task: wait (bounded) until it counted the control.
    let deadline = Instant::now() + Duration::from_secs(5);
    while any_count.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let control = any_count.load(Ordering::SeqCst);
    assert_eq!(control, 1, "the host's own connection was not counted");

    // Its own loopback answers (proving wget works in there), nothing else does.
    let targets = [
        "127.0.0.1:8081".to_owned(),
        format!("{target_ip}:8080"),
        format!("{gateway}:{}", any_addr.port()),
        format!("{gateway}:{}", gw_addr.port()),
        format!("127.0.0.1:{}", lo_addr.port()),
        format!("127.0.0.1:{}", any_addr.port()),
    ];
    let script = format!(
        "httpd -p 127.0.0.1:8081 -h /www; sleep 0.3; for t in {}; do \
         if timeout 3 wget -q -O /dev/null http://$t/index.html; then echo \"open $t\"; \
         else echo \"closed $t\"; fi; done; echo done",
        targets.join(" ")
    );
    let prober = "prober";
    let args = ["sh", "-c", script.as_str()];
    let options = SpecOptions::new(&args);
    let pid = run_container(&mut fx, &chain, prober, &options).await;
    net.bridge.attach(prober, pid).await.expect("attach");
    // Both ports are isolated on the bridge (with br_netfilter loaded the FORWARD rule also
    // drops bridged traffic, so the probe alone would not tell the two layers apart). Read
    // while both containers live: once the prober exits, the kernel removes its veth when it
    // tears its network namespace down, at a moment of its own.
    let brif = std::path::Path::new("/sys/class/net")
        .join(net.bridge.name())
        .join("brif");
    let ports: Vec<_> = std::fs::read_dir(&brif).expect("brif").flatten().collect();
    assert_eq!(ports.len(), 2, "{ports:?}");
    for port in ports {
        let isolated = std::fs::read_to_string(port.path().join("isolated")).expect("isolated");
        assert_eq!(
            isolated.trim(),
            "1",
            "{:?} is not isolated",
            port.file_name()
        );
    }

    fx.engine.start(prober).await.expect("start");
    let status = tokio::time::timeout(BOUND, fx.engine.wait(prober))
        .await
        .expect("bounded")
        .expect("wait");
    let log = log_tail(&fx.log_path(prober), 8192).await.expect("tail");
    assert_eq!(status.code, 0, "{log}");
    assert!(log.contains("done"), "{log}");
    assert!(
        log.contains("open 127.0.0.1:8081"),
        "the control failed: {log}"
    );
    for t in &targets[1..] {
        assert!(
            log.contains(&format!("closed {t}")),
            "{t} was reachable: {log}"
        );
    }
    assert_eq!(
        any_count.load(Ordering::SeqCst),
        control,
        "a container reached 0.0.0.0"
    );
    assert_eq!(
        gw_count.load(Ordering::SeqCst),
        0,
        "a container reached the gateway"
    );
    assert_eq!(
        lo_count.load(Ordering::SeqCst),
        0,
        "a container reached host loopback"
    );

    // The target still serves the host afterwards.
    assert_eq!(
        wait_for_http(SocketAddr::from((target_ip, 8080))).await,
        200
    );
    net.bridge.detach(prober, None).await.expect("detach");
    net.bridge
        .detach(target, Some(target_pid))
        .await
        .expect("detach");
    fx.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_then_create_works_after_a_crash_of_the_runtime() {
    let mut fx = Fixture::new().await;
    let image = build_image();
    let chain = load_image(&fx.engine, &image).await;
    let id = "survivor";
    let options = SpecOptions::new(&["sleep", "600"]);
    let log = fx.log_path(id);
    let namespace = fx.engine.namespace().to_owned();
    run_container(&mut fx, &chain, id, &options).await;
    fx.engine.start(id).await.expect("start");
    // The runtime "crashes": its engine goes, the container stays.
    let socket = fx.containerd.socket().to_owned();
    drop(std::mem::replace(
        &mut fx.engine,
        Engine::connect(&socket, &namespace)
            .await
            .expect("reconnect"),
    ));
    let again = fx.engine.create(id, &spec(&options), &chain, &log).await;
    assert!(again.is_err(), "the old container is still there");

    // sleep is pid 1 of its namespace, with no handler: SIGTERM is ignored, so this also
    // takes the SIGKILL path after the grace.
    let started = Instant::now();
    fx.engine
        .remove(id, Duration::from_secs(1))
        .await
        .expect("remove");
    assert!(started.elapsed() < Duration::from_secs(10));
    fx.engine
        .create(id, &spec(&options), &chain, &log)
        .await
        .expect("create after remove");
    fx.engine.start(id).await.expect("start");
    fx.engine
        .remove(id, Duration::from_secs(2))
        .await
        .expect("remove");
    fx.cleanup().await;
}
