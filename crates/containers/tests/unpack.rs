//! Content and unpacking against a real containerd: blobs written under a pull lease, layers
//! committed under their chain ids, a wrong diff_id refused without leftovers, the cache.

mod common;

use common::{Fixture, build_image, load_image};
use enclave_containers::{EngineError, Layer, UnpackProgress, chain_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_name_containerd_and_runc() {
    let fx = Fixture::new().await;
    let versions = fx.engine.versions().await.expect("versions");
    assert!(versions.containerd.starts_with("1.6"), "{versions:?}");
    assert!(versions.runc.starts_with("runc version"), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_is_verified_and_a_crashed_ingest_does_not_wedge_a_retry() {
    let fx = Fixture::new().await;
    let image = build_image();
    let (digest, bytes) = &image.blobs[2];
    let pull = fx
        .engine
        .begin_pull(&image.manifest_digest)
        .await
        .expect("pull");
    assert!(!pull.has_content(digest).await.expect("has"));

    // Half a blob, then the writer is dropped without a commit: a crash mid-pull.
    let mut first = pull
        .content_writer("retry-ref", digest, bytes.len() as u64)
        .await
        .expect("writer");
    first.write(&bytes[..bytes.len() / 2]).await.expect("half");
    drop(first);

    // A different blob under the digest: containerd refuses the commit, naming the digest.
    let mut wrong = pull
        .content_writer("wrong-ref", digest, bytes.len() as u64)
        .await
        .expect("writer");
    let mut garbage = bytes.clone();
    garbage[0] ^= 0xff;
    wrong.write(&garbage).await.expect("write");
    let refused = wrong
        .commit()
        .await
        .expect_err("a wrong digest must be refused");
    assert!(
        matches!(refused, EngineError::DigestMismatch { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains(digest.as_str()), "{refused}");
    // More bytes than announced are refused before containerd sees them.
    let mut long = pull
        .content_writer("long-ref", digest, 4)
        .await
        .expect("writer");
    assert!(long.write(&bytes[..5]).await.is_err());

    // The retry under the same reference starts over and succeeds.
    let mut retry = pull
        .content_writer("retry-ref", digest, bytes.len() as u64)
        .await
        .expect("writer after a crashed ingest");
    retry.write(&bytes[..1000]).await.expect("write");
    retry.write(&bytes[1000..]).await.expect("write");
    retry.commit().await.expect("commit");
    assert!(fx.engine.has_content(digest).await.expect("has"));
    let read = fx
        .engine
        .read_content(digest, bytes.len() as u64)
        .await
        .expect("read");
    assert_eq!(&read, bytes);
    let too_small = fx.engine.read_content(digest, 10).await;
    assert!(matches!(too_small, Err(EngineError::TooLarge { .. })));

    // Already present: the writer says so and commit is a no-op.
    let again = pull
        .content_writer("again-ref", digest, bytes.len() as u64)
        .await
        .expect("writer");
    assert!(again.already_present());
    again.commit().await.expect("no-op commit");
    pull.abandon().await.expect("abandon");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpack_commits_chain_ids_refuses_a_wrong_diff_id_and_caches() {
    let fx = Fixture::new().await;
    let image = build_image();
    let diff_ids: Vec<&str> = image.layers.iter().map(|l| l.diff_id.as_str()).collect();
    let chain0 = chain_id(&diff_ids[..1]).expect("chain id");
    let chain1 = chain_id(&diff_ids).expect("chain id");

    let pull = fx
        .engine
        .begin_pull(&image.manifest_digest)
        .await
        .expect("pull");
    for (digest, bytes) in &image.blobs {
        let mut w = pull
            .content_writer(digest, digest, bytes.len() as u64)
            .await
            .expect("writer");
        w.write(bytes).await.expect("write");
        w.commit().await.expect("commit");
    }

    // The second layer claims the first's diff_id: refused, naming both, nothing left over.
    let mut lying: Vec<Layer> = image.layers.clone();
    lying[1].diff_id = image.layers[0].diff_id.clone();
    let refused = pull
        .unpack(&lying, |_| {})
        .await
        .expect_err("a wrong diff_id must be refused");
    let text = refused.to_string();
    assert!(
        matches!(refused, EngineError::DiffIdMismatch { layer: 1, .. }),
        "{text}"
    );
    assert!(text.contains(&image.layers[1].diff_id), "{text}");
    assert!(text.contains(&image.layers[0].diff_id), "{text}");
    let lying_ids: Vec<&str> = lying.iter().map(|l| l.diff_id.as_str()).collect();
    let lying_chain = chain_id(&lying_ids).expect("chain id");
    let snapshots = fx.engine.snapshots().await.expect("list");
    assert!(
        !snapshots
            .iter()
            .any(|s| s.starts_with("enclave-os-unpack-")),
        "a prepared snapshot was left behind: {snapshots:?}"
    );
    assert!(!snapshots.contains(&lying_chain), "{snapshots:?}");
    assert!(!snapshots.contains(&chain1), "{snapshots:?}");

    let mut seen = Vec::new();
    let top = pull
        .unpack(&image.layers, |p| seen.push(p))
        .await
        .expect("unpack");
    assert_eq!(top, chain1);
    assert_eq!(
        seen,
        vec![
            UnpackProgress { layer: 1, of: 2 },
            UnpackProgress { layer: 2, of: 2 }
        ]
    );
    assert!(fx.engine.has_snapshot(&chain0).await.expect("stat"));
    assert!(fx.engine.has_snapshot(&chain1).await.expect("stat"));
    pull.finish().await.expect("finish");
    assert!(
        fx.engine
            .has_image(&image.manifest_digest)
            .await
            .expect("has image")
    );

    // Again: every layer is found committed, nothing is prepared or applied.
    let before = fx.engine.snapshots().await.expect("list");
    let again = load_image(&fx.engine, &image).await;
    assert_eq!(again, chain1);
    let mut after = fx.engine.snapshots().await.expect("list");
    let mut before_sorted = before.clone();
    before_sorted.sort();
    after.sort();
    assert_eq!(before_sorted, after);
    assert_eq!(fx.engine.sweep().await.expect("sweep"), 0);

    // Forgetting the image lets containerd's GC take its content and snapshots.
    fx.engine
        .forget_image(&image.manifest_digest)
        .await
        .expect("forget");
    assert!(
        !fx.engine
            .has_image(&image.manifest_digest)
            .await
            .expect("has image")
    );
    assert!(!fx.engine.has_snapshot(&chain1).await.expect("stat"));
    assert!(
        !fx.engine
            .has_content(&image.layers[0].digest)
            .await
            .expect("has")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_removes_what_an_interrupted_unpack_left_prepared() {
    use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
    let fx = Fixture::new().await;
    // What a runtime killed between Prepare and Commit leaves: a prepared key of ours. Made
    // with the raw client, as the engine never leaves one behind by itself.
    let client = containerd_client::Client::from_path(fx.containerd.socket())
        .await
        .expect("client");
    let mut request = containerd_client::tonic::Request::new(PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: "enclave-os-unpack-stale".into(),
        parent: String::new(),
        labels: Default::default(),
    });
    request.metadata_mut().insert(
        "containerd-namespace",
        fx.engine.namespace().parse().expect("header"),
    );
    client.snapshots().prepare(request).await.expect("prepare");
    let mut other = containerd_client::tonic::Request::new(PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: "someone-else".into(),
        parent: String::new(),
        labels: Default::default(),
    });
    other.metadata_mut().insert(
        "containerd-namespace",
        fx.engine.namespace().parse().expect("header"),
    );
    client.snapshots().prepare(other).await.expect("prepare");

    assert_eq!(fx.engine.sweep().await.expect("sweep"), 1);
    let left = fx.engine.snapshots().await.expect("list");
    assert_eq!(left, vec!["someone-else".to_owned()]);
}
