//! Hardware providers against emulations of their interfaces at the OS boundary.
//!
//! configfs-tsm and Gramine's /dev/attestation are emulated as directory trees whose `outblob` /
//! `quote` is a FIFO: reading it blocks until the emulator thread, like the kernel, reads the
//! `inblob` / `user_report_data` just written and answers with evidence for it. The evidence is
//! produced by the simulated TEE (real DCAP format), or is a real SEV-SNP report from testdata.
//! /dev/sev-guest is emulated at the ioctl: an object that reads and writes the request and
//! response bytes as the firmware does. None of this has run on hardware.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enclave_tee::hw::sev_guest::{
    Command, DeviceError, GuestDevice, SevGuestTee, VMM_ERR_INVALID_LEN,
};
use enclave_tee::hw::{certs, gramine::GramineTee, tsm};
use enclave_tee::sim::{Flavour, SimTee};
use enclave_tee::{SealPolicy, Tee, TeeKind};

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo {}", path.display());
}

/// Serve `count` requests on the FIFO at `fifo`, each answered by `answer(input)` where `input`
/// is the content of `input_file`. As with the kernel, a request is a reader that opened the FIFO
/// after writing a new input; a reader still draining the previous answer gets nothing more.
/// Bounded: each request is waited for at most 10 s.
fn serve_fifo(
    fifo: PathBuf,
    input_file: PathBuf,
    count: usize,
    answer: impl Fn(&[u8]) -> Vec<u8> + Send + 'static,
    before_answer: impl Fn() + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut last: Option<(std::time::SystemTime, Vec<u8>)> = None;
        for _ in 0..count {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if Instant::now() > deadline {
                    return;
                }
                // O_NONBLOCK: opening the write end fails (ENXIO) while no reader has it open.
                let Ok(mut w) = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&fifo)
                else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let stamp = std::fs::metadata(&input_file)
                    .and_then(|m| m.modified())
                    .ok();
                let input = std::fs::read(&input_file).unwrap_or_default();
                let current = stamp.map(|t| (t, input.clone()));
                if current.is_some() && current == last {
                    // The previous reader, not yet closed: leave it to its EOF.
                    drop(w);
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                last = current;
                before_answer();
                let out = answer(&input);
                set_blocking(&w);
                let _ = w.write_all(&out);
                break;
            }
        }
    })
}

/// Clear O_NONBLOCK, so that the answer is written whole.
#[allow(unsafe_code)]
fn set_blocking(f: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: F_GETFL/F_SETFL on a descriptor that `f` keeps open.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
}

/// An emulated configfs-tsm entry, as the kernel populates it on mkdir.
const ENTRY: &str = "enclave-os";

fn tsm_entry(root: &Path, provider: &str) -> PathBuf {
    let entry = root.join(ENTRY);
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("inblob"), b"").unwrap();
    std::fs::write(entry.join("generation"), b"1\n").unwrap();
    std::fs::write(entry.join("provider"), format!("{provider}\n")).unwrap();
    std::fs::write(entry.join("auxblob"), b"").unwrap();
    mkfifo(&entry.join("outblob"));
    entry
}

fn rd(input: &[u8]) -> [u8; 64] {
    let mut r = [0u8; 64];
    r[..input.len().min(64)].copy_from_slice(&input[..input.len().min(64)]);
    r
}

#[test]
fn configfs_tsm_tdx_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tsm");
    let entry = tsm_entry(&root, "tdx_guest");
    let sim = SimTee::open(&dir.path().join("sim"), Flavour::Tdx).unwrap();
    let sim_root = sim.pki().root_der().to_vec();
    let server = serve_fifo(
        entry.join("outblob"),
        entry.join("inblob"),
        2,
        move |i| sim.evidence(&rd(i)).unwrap().evidence,
        || {},
    );
    let tee = tsm::TsmTee::open_with_entry(&root, ENTRY).unwrap();
    assert_eq!(tee.kind(), TeeKind::Tdx);
    let bundle = tee.evidence(&[7; 64]).unwrap();
    server.join().unwrap();
    assert!(!bundle.simulated);
    assert_eq!(bundle.report_data, [7; 64]);
    // The quote is real-format: the evidence verifier accepts it under the simulation root.
    let v = enclave_evidence::Verifier::with_intel(
        enclave_evidence::intel::IntelVerifier::with_root(sim_root, true),
    );
    let a = v
        .verify(
            &bundle.evidence,
            &Default::default(),
            enclave_evidence::time::now(),
        )
        .unwrap();
    assert_eq!(a.report_data, [7; 64]);
    // TDX has no sealing key under either policy, and says so.
    for policy in [SealPolicy::Measurement, SealPolicy::Signer] {
        let err = tee.sealing_key(policy).unwrap_err().to_string();
        assert!(err.contains("TDX has no hardware sealing key"), "{err}");
    }
}

#[test]
fn configfs_tsm_detects_a_concurrent_writer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tsm");
    let entry = tsm_entry(&root, "tdx_guest");
    let sim = SimTee::open(&dir.path().join("sim"), Flavour::Tdx).unwrap();
    let generation = entry.join("generation");
    // Another process writes inblob while we read outblob: the kernel bumps generation.
    let server = serve_fifo(
        entry.join("outblob"),
        entry.join("inblob"),
        1,
        move |i| sim.evidence(&rd(i)).unwrap().evidence,
        move || std::fs::write(&generation, b"2\n").unwrap(),
    );
    let err = tsm::request(&root.join(ENTRY), &[1; 64]).unwrap_err();
    server.join().unwrap();
    assert!(
        err.to_string().contains("generation changed from 1 to 2"),
        "{err}"
    );
}

#[test]
fn configfs_tsm_rejects_malformed_kernel_output() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tsm");
    for (name, answer, needle) in [
        (
            "garbage",
            b"not a quote at all".to_vec(),
            "malformed evidence",
        ),
        ("empty", Vec::new(), "outblob is empty"),
    ] {
        let entry = tsm_entry(&root, "tdx_guest");
        let server = serve_fifo(
            entry.join("outblob"),
            entry.join("inblob"),
            1,
            move |_| answer.clone(),
            || {},
        );
        let err = tsm::TsmTee::open_with_entry(&root, ENTRY).unwrap_err();
        server.join().unwrap();
        assert!(err.to_string().contains(needle), "{name}: {err}");
        std::fs::remove_dir_all(&entry).unwrap();
    }
    // A bad generation value, and an unknown provider.
    let entry = tsm_entry(&root, "tdx_guest");
    std::fs::write(entry.join("generation"), b"lots\n").unwrap();
    let err = tsm::request(&root.join(ENTRY), &[0; 64]).unwrap_err();
    assert!(
        err.to_string().contains("generation is not a number"),
        "{err}"
    );
    // Evidence for other report data than asked (a stale or foreign report).
    std::fs::remove_dir_all(&entry).unwrap();
    let entry = tsm_entry(&root, "tdx_guest");
    let sim = SimTee::open(&dir.path().join("sim"), Flavour::Tdx).unwrap();
    let server = serve_fifo(
        entry.join("outblob"),
        entry.join("inblob"),
        1,
        move |_| sim.evidence(&[0xee; 64]).unwrap().evidence,
        || {},
    );
    let err = tsm::TsmTee::open_with_entry(&root, ENTRY).unwrap_err();
    server.join().unwrap();
    assert!(err.to_string().contains("other report data"), "{err}");
    // No configfs at all.
    let err = tsm::TsmTee::open(&dir.path().join("absent")).unwrap_err();
    assert!(err.to_string().contains("no configfs-tsm"), "{err}");
}

fn vector(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/vectors")
        .join(rel);
    enclave_evidence::input::evidence_bytes(&std::fs::read(p).unwrap()).unwrap()
}

fn milan_chain() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let vcek = vector("amd/milan-v2-b/vcek.der");
    let pem = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/vectors/amd/chains/ask_ark_milan.pem"),
    )
    .unwrap();
    let chain = enclave_evidence::input::pem_certificates(&pem).unwrap();
    (vcek, chain[0].clone(), chain[1].clone())
}

#[test]
fn configfs_tsm_snp_returns_the_certificate_table() {
    // A real Milan report whose report_data is 01 02 03 04 05 0…, as the guest asked.
    let mut asked = [0u8; 64];
    asked[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
    let report = vector("amd/milan-v2-b/report.bin");
    let (vcek, ask, ark) = milan_chain();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tsm");
    let entry = tsm_entry(&root, "sev_guest");
    std::fs::write(
        entry.join("auxblob"),
        certs::build(&vcek, &ask, &ark, false),
    )
    .unwrap();
    let server = serve_fifo(
        entry.join("outblob"),
        entry.join("inblob"),
        2,
        move |_| report.clone(),
        || {},
    );
    // Opening probes with zero report data, which this fixed report does not bind: refused.
    let err = tsm::TsmTee::open_with_entry(&root, ENTRY).unwrap_err();
    assert!(err.to_string().contains("other report data"), "{err}");
    let r = tsm::request(&root.join(ENTRY), &asked).unwrap();
    server.join().unwrap();
    assert_eq!(r.provider, "sev_guest");
    let table = certs::parse(r.auxblob.as_ref().unwrap(), "test").unwrap();
    assert_eq!(table, vec![vcek, ask, ark]);
}

#[test]
fn certificate_tables_that_lie_are_rejected() {
    let (vcek, ask, ark) = milan_chain();
    let good = certs::build(&vcek, &ask, &ark, false);
    assert!(certs::parse(&good[..24], "t").is_err(), "no terminator");
    let mut bad = good.clone();
    bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(
        certs::parse(&bad, "t")
            .unwrap_err()
            .to_string()
            .contains("outside the table")
    );
    assert!(
        certs::parse(&[0; 24], "t")
            .unwrap_err()
            .to_string()
            .contains("no VCEK")
    );
}

/// Gramine's /dev/attestation, emulated: quote is a FIFO answering for user_report_data.
#[test]
fn gramine_round_trip_and_sealing_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("attestation");
    std::fs::create_dir_all(root.join("keys")).unwrap();
    std::fs::write(root.join("attestation_type"), b"dcap").unwrap();
    std::fs::write(root.join("user_report_data"), b"").unwrap();
    std::fs::write(root.join("keys/_sgx_mrenclave"), [0x11; 16]).unwrap();
    std::fs::write(root.join("keys/_sgx_mrsigner"), [0x22; 16]).unwrap();
    mkfifo(&root.join("quote"));
    let sim = SimTee::open(&dir.path().join("sim"), Flavour::Sgx).unwrap();
    let measurement = sim.measurement();
    let sim_svn = sim.security_version();
    let server = serve_fifo(
        root.join("quote"),
        root.join("user_report_data"),
        2,
        move |i| sim.evidence(&rd(i)).unwrap().evidence,
        || {},
    );
    let tee = GramineTee::open(&root).unwrap();
    assert_eq!(tee.measurement(), measurement);
    // The security version is the quote's ISVSVN (the simulator's, 0 unless set).
    assert_eq!(tee.security_version(), sim_svn);
    let bundle = tee.evidence(&[3; 64]).unwrap();
    server.join().unwrap();
    assert_eq!(bundle.tee, TeeKind::Sgx);
    let m = tee.sealing_key(SealPolicy::Measurement).unwrap();
    let s = tee.sealing_key(SealPolicy::Signer).unwrap();
    let blob = m.seal("t", b"x").unwrap();
    assert!(s.unseal("t", &blob).is_err());
    assert_eq!(&m.unseal("t", &blob).unwrap()[..], b"x");
    // Gramine's key widening and the blob are what they were before sealing moved to
    // enclave-aead: a blob that code wrote (its own random nonce) opens, and the same nonce
    // (fixed to 00..0b through the test-only path, as a test patch did then) gives its bytes.
    let before = "454f535345414c01025538d8198d8fa8430cc42fd1e0a32c2420d1d0671a64efd06070c09a29a3b\
        250a05416425e87a57f6e7b4cab35a2e370c097f92ab13f3f4b62e9abadddf574d8b7a93980fcf4c1d716750c\
        e6515cf87050f904fab6056fb1a3b277";
    assert_eq!(
        &s.unseal("kat/gramine", &hex::decode(before).unwrap())
            .unwrap()[..],
        b"gramine signer"
    );
    let fixed =
        enclave_aead::test_nonce::with_fixed_nonce([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], || {
            s.seal("kat/gramine", b"gramine signer").unwrap()
        });
    assert_eq!(
        hex::encode(fixed),
        "454f535345414c01025538d8198d8fa8430cc42fd1e0a32c2420d1d0671a64efd06070c09a29a3b250a054\
         16425e87a57f6e7b4cab35a2e370c0000102030405060708090a0b02017b83d0b60348cdc7b89a2efb64a19e\
         3f2e50dce811d2225e04cb4a22"
    );
    // A short key file is malformed LibOS output.
    std::fs::write(root.join("keys/_sgx_mrenclave"), [0x11; 8]).unwrap();
    assert!(
        tee.sealing_key(SealPolicy::Measurement)
            .unwrap_err()
            .to_string()
            .contains("not 16")
    );
    // Not under Gramine, or not DCAP.
    assert!(
        GramineTee::open(&dir.path().join("none"))
            .unwrap_err()
            .to_string()
            .contains("not running under Gramine")
    );
    std::fs::write(root.join("attestation_type"), b"none").unwrap();
    assert!(
        GramineTee::open(&root)
            .unwrap_err()
            .to_string()
            .contains("'none'")
    );
}

/// /dev/sev-guest emulated at the ioctl, as the firmware answers. The report is a real Milan
/// report; the firmware would put the guest's report data in it, so the emulator only answers
/// requests for the data that report carries.
#[derive(Debug)]
struct EmulatedSevGuest {
    report: Vec<u8>,
    table: Vec<u8>,
    key_seed: u8,
    calls: std::sync::Mutex<Vec<(Command, usize)>>,
}

impl GuestDevice for EmulatedSevGuest {
    fn request(
        &self,
        cmd: Command,
        req: &[u8],
        resp: &mut [u8],
        certs: Option<&mut [u8]>,
    ) -> Result<(), DeviceError> {
        self.calls
            .lock()
            .unwrap()
            .push((cmd, certs.as_ref().map_or(0, |c| c.len())));
        match cmd {
            Command::Report | Command::ExtReport => {
                assert_eq!(req.len(), 96, "snp_report_req is 96 bytes");
                if cmd == Command::ExtReport {
                    let certs = certs.expect("extended reports pass a certificate buffer");
                    if certs.len() < self.table.len() {
                        return Err(DeviceError {
                            errno: libc::EINVAL,
                            vmm_error: VMM_ERR_INVALID_LEN,
                            certs_len: self.table.len() as u32,
                            ..Default::default()
                        });
                    }
                    certs[..self.table.len()].copy_from_slice(&self.table);
                }
                // MSG_REPORT_RSP: status, report size, 24 reserved bytes, report.
                resp[..4].copy_from_slice(&0u32.to_le_bytes());
                resp[4..8].copy_from_slice(&(self.report.len() as u32).to_le_bytes());
                resp[32..32 + self.report.len()].copy_from_slice(&self.report);
                Ok(())
            }
            Command::DerivedKey => {
                assert_eq!(req.len(), 32, "snp_derived_key_req is 32 bytes");
                let fields = u64::from_le_bytes(req[8..16].try_into().unwrap());
                resp[..4].copy_from_slice(&0u32.to_le_bytes());
                for (i, b) in resp[32..64].iter_mut().enumerate() {
                    *b = self.key_seed ^ fields as u8 ^ i as u8;
                }
                Ok(())
            }
        }
    }
}

#[test]
fn sev_guest_reports_negotiates_the_certificate_buffer_and_derives_keys() {
    let report = vector("amd/milan-v2-b/report.bin");
    let (vcek, ask, ark) = milan_chain();
    // A table larger than the first buffer (16 KiB), to exercise the length negotiation.
    let mut table = certs::build(&vcek, &ask, &ark, false);
    table.resize(40_000, 0);
    let device = EmulatedSevGuest {
        report: report.clone(),
        table,
        key_seed: 0x5a,
        calls: Default::default(),
    };
    // The report binds 01..05; the constructor's zero-data probe is refused as not ours.
    let err = SevGuestTee::new(device, 0).unwrap_err();
    assert!(err.to_string().contains("other report data"), "{err}");

    // Zero the report data so that it answers the probe; the signature no longer verifies, but
    // this test is about the interface, not the report.
    let mut zeroed = report.clone();
    zeroed[0x50..0x90].fill(0);
    let device = EmulatedSevGuest {
        report: zeroed,
        table: certs::build(&vcek, &ask, &ark, false),
        key_seed: 0x5a,
        calls: Default::default(),
    };
    let tee = SevGuestTee::new(device, 0).unwrap();
    let (raw, chain) = tee.ext_report(&[0; 64]).unwrap();
    assert_eq!(raw.len(), 1184);
    assert_eq!(chain, vec![vcek.clone(), ask.clone(), ark.clone()]);
    let m = tee.sealing_key(SealPolicy::Measurement).unwrap();
    assert_eq!(
        m.unseal("c", &m.seal("c", b"v").unwrap())
            .unwrap()
            .as_slice(),
        b"v"
    );

    let mut big = certs::build(&vcek, &ask, &ark, false);
    big.resize(40_000, 0);
    let mut zeroed = report.clone();
    zeroed[0x50..0x90].fill(0);
    let device = EmulatedSevGuest {
        report: zeroed,
        table: big,
        key_seed: 1,
        calls: Default::default(),
    };
    let tee = SevGuestTee::new(device, 0).unwrap();
    let (_, chain) = tee.ext_report(&[0; 64]).unwrap();
    assert_eq!(chain.len(), 3);
}

#[test]
fn sev_guest_refuses_signer_sealing_and_says_why() {
    let mut zeroed = vector("amd/milan-v2-b/report.bin");
    zeroed[0x50..0x90].fill(0);
    let (vcek, ask, ark) = milan_chain();
    let device = EmulatedSevGuest {
        report: zeroed,
        table: certs::build(&vcek, &ask, &ark, false),
        key_seed: 0x5a,
        calls: Default::default(),
    };
    let tee = SevGuestTee::new(device, 0).unwrap();
    // The family and image IDs are the launcher's choice: a key bound to them is not the
    // signer's, so there is none, and the reason says what to use instead.
    let err = tee.sealing_key(SealPolicy::Signer).unwrap_err().to_string();
    assert!(
        err.contains("'signer' sealing policy is refused on SEV-SNP")
            && err.contains("family ID and image ID")
            && err.contains("seal_policy = \"measurement\""),
        "{err}"
    );
    let err = tee.derived_key(SealPolicy::Signer).unwrap_err().to_string();
    assert!(err.contains("refused on SEV-SNP"), "{err}");

    // The measurement key asks the firmware for the guest policy and the measurement only.
    let key = tee.derived_key(SealPolicy::Measurement).unwrap();
    assert_eq!(
        key[0],
        0x5a ^ 0b1001,
        "GUEST_FIELD_SELECT = policy | measurement"
    );
    let m = tee.sealing_key(SealPolicy::Measurement).unwrap();
    assert_eq!(m.identity(), tee.measurement().as_slice());
}

#[test]
fn ioctl_numbers_match_the_kernel_header() {
    // include/uapi/linux/sev-guest.h: _IOWR('S', n, struct snp_guest_request_ioctl), 32 bytes.
    assert_eq!(Command::Report.ioctl_number(), 0xc020_5300);
    assert_eq!(Command::DerivedKey.ioctl_number(), 0xc020_5301);
    assert_eq!(Command::ExtReport.ioctl_number(), 0xc020_5302);
}

#[test]
fn auto_detection_names_each_backend_and_why() {
    let (tee, probes) = enclave_tee::hw::detect::detect();
    if tee.is_none() {
        assert_eq!(probes.len(), 3);
        assert!(
            probes
                .iter()
                .all(|p| p.unusable.as_ref().is_some_and(|r| !r.is_empty()))
        );
        let dir = tempfile::tempdir().unwrap();
        let err = enclave_tee::hw::detect::open("auto", dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sim-sgx") && err.contains("configfs-tsm"),
            "{err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    assert!(
        enclave_tee::hw::detect::open("sev", dir.path())
            .unwrap_err()
            .to_string()
            .contains("unknown TEE")
    );
}
