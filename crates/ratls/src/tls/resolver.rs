//! The server's deterministic leaf: issued, cached, and renewed ahead of time.
//!
//! A leaf is renewed when a quarter of its lifetime remains, on a thread of its own, while
//! handshakes go on presenting the current leaf; the handshake that notices it is due only
//! starts the renewal. A leaf must be issued before a handshake can complete only when no
//! usable one exists: at the first handshake, after a configuration change whose leaf could
//! not be issued, or when renewal has failed until an eighth of the lifetime remains. Issuing
//! is serialised, so callers arriving together wait for one quote, not make one each; and after
//! a failure, callers get its reason for [`RETRY_SECS`] instead of a quote attempt each.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::{nonce_from_alpn, provider};
use crate::binding::Freshness;
use crate::issue::{IntermediaryCa, LeafSpec, NOT_BEFORE_SKEW_SECS, issue_at};
use enclave_tee::Tee;

/// After issuing a deterministic leaf fails (a renewal, a handshake's, `set_spec`'s), how long
/// before another attempt (seconds): a TEE that cannot quote is not asked again by every
/// handshake, and callers meanwhile get the failure's reason.
const RETRY_SECS: i64 = 30;

/// Issues, caches and renews the server's RA-TLS certificates (feature `issue`). As a client
/// certificate resolver it presents its deterministic leaf (mutual RA-TLS).
pub struct RatlsResolver {
    inner: Arc<Inner>,
}

/// What a renewal thread shares with the resolver.
struct Inner {
    tee: Arc<dyn Tee>,
    ca: Arc<IntermediaryCa>,
    provider: Arc<CryptoProvider>,
    state: Mutex<State>,
    /// Held while a deterministic leaf is issued, in line or by a renewal.
    issuing: Mutex<()>,
    /// A renewal thread is running.
    renewing: AtomicBool,
    /// Unix seconds; the clock leaves are issued and judged by (tests move it).
    clock: fn() -> i64,
}

struct State {
    spec: LeafSpec,
    /// Moves with every [`RatlsResolver::set_spec`]: a leaf issued for an earlier spec is not
    /// stored.
    generation: u64,
    cached: Option<Cached>,
    /// No leaf is issued before this (unix seconds): set when issuing fails.
    retry_at: i64,
    /// Why the last issuance failed, told until `retry_at`.
    last_error: Option<String>,
}

struct Cached {
    key: Arc<CertifiedKey>,
    /// A quarter of the lifetime left: renew.
    renew_at: i64,
    /// An eighth left: no longer presented; a handshake waits for a new leaf.
    usable_until: i64,
}

/// Where the cached leaf stands at one moment.
enum Standing {
    Fresh(Arc<CertifiedKey>),
    /// Still presented; a renewal should be under way.
    Due(Arc<CertifiedKey>),
    /// Nothing may be presented until a leaf is issued.
    Unusable,
}

impl Standing {
    fn key(self) -> Option<Arc<CertifiedKey>> {
        match self {
            Standing::Fresh(key) | Standing::Due(key) => Some(key),
            Standing::Unusable => None,
        }
    }
}

impl Cached {
    fn standing(&self, now: i64) -> Standing {
        if now < self.renew_at {
            Standing::Fresh(self.key.clone())
        } else if now < self.usable_until {
            Standing::Due(self.key.clone())
        } else {
            Standing::Unusable
        }
    }
}

impl std::fmt::Debug for RatlsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatlsResolver")
            .field("tee", &self.inner.tee.name())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is whole after any panic (each write is one assignment).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn standing(&self) -> Standing {
        Self::standing_in(&self.state(), (self.clock)())
    }

    fn standing_in(s: &State, now: i64) -> Standing {
        s.cached
            .as_ref()
            .map_or(Standing::Unusable, |c| c.standing(now))
    }

    fn certified(&self, spec: &LeafSpec, freshness: &Freshness) -> Result<Cached, String> {
        let leaf = issue_at(
            self.tee.as_ref(),
            &self.ca,
            spec,
            freshness,
            (self.clock)() - NOT_BEFORE_SKEW_SECS,
        )
        .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.to_vec()));
        let signing = self
            .provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("leaf key: {e}"))?;
        let chain = vec![
            CertificateDer::from(leaf.cert_der),
            CertificateDer::from(self.ca.cert_der().to_vec()),
        ];
        let life = leaf.not_after - leaf.not_before;
        Ok(Cached {
            key: Arc::new(CertifiedKey::new(chain, signing)),
            renew_at: leaf.not_after - life / 4,
            usable_until: leaf.not_after - life / 8,
        })
    }

    /// Issue a deterministic leaf for the current spec and cache it, unless another issuance
    /// made one while this one waited (`needed` says which standings still need one), or one
    /// failed less than [`RETRY_SECS`] ago (its reason is returned).
    fn issue(&self, needed: fn(&Standing) -> bool) -> Result<Arc<CertifiedKey>, String> {
        let _one = self.issuing.lock().unwrap_or_else(|p| p.into_inner());
        let (spec, generation) = {
            let s = self.state();
            let now = (self.clock)();
            let standing = Self::standing_in(&s, now);
            if !needed(&standing)
                && let Some(key) = standing.key()
            {
                return Ok(key);
            }
            if now < s.retry_at {
                return Err(Self::backing_off(&s, now));
            }
            (s.spec.clone(), s.generation)
        };
        let fresh = self.certified(&spec, &Freshness::Deterministic);
        let mut s = self.state();
        if s.generation != generation {
            // The configuration changed meanwhile, and `set_spec` issued for it: this leaf
            // certifies what no longer holds, so it is neither stored nor presented.
            return Self::standing_in(&s, (self.clock)()).key().ok_or_else(|| {
                "the configuration changed while its certificate was being issued, and the new one could not be issued yet"
                    .to_string()
            });
        }
        match fresh {
            Ok(c) => {
                let key = c.key.clone();
                Self::stored(&mut s, c);
                Ok(key)
            }
            Err(e) => Err(Self::failed(&mut s, e, (self.clock)())),
        }
    }

    /// A leaf for the current spec was issued.
    fn stored(s: &mut State, c: Cached) {
        s.cached = Some(c);
        s.retry_at = i64::MIN;
        s.last_error = None;
    }

    /// Issuing a leaf for the current spec failed with `e` (returned): no attempt before
    /// [`RETRY_SECS`] from `now`.
    fn failed(s: &mut State, e: String, now: i64) -> String {
        s.retry_at = now + RETRY_SECS;
        s.last_error = Some(e.clone());
        e
    }

    fn backing_off(s: &State, now: i64) -> String {
        format!(
            "{} (the last attempt to issue a certificate; the next is in {} s)",
            s.last_error.as_deref().unwrap_or("issuing failed"),
            s.retry_at - now
        )
    }
}

impl RatlsResolver {
    /// A resolver issuing leaves from `tee`, signed by `ca`, certifying `spec`.
    pub fn new(tee: Arc<dyn Tee>, ca: impl Into<Arc<IntermediaryCa>>, spec: LeafSpec) -> Self {
        Self::with_clock(tee, ca.into(), spec, enclave_evidence::time::now)
    }

    fn with_clock(
        tee: Arc<dyn Tee>,
        ca: Arc<IntermediaryCa>,
        spec: LeafSpec,
        clock: fn() -> i64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                tee,
                ca,
                provider: provider(),
                state: Mutex::new(State {
                    spec,
                    generation: 0,
                    cached: None,
                    retry_at: i64::MIN,
                    last_error: None,
                }),
                issuing: Mutex::new(()),
                renewing: AtomicBool::new(false),
                clock,
            }),
        }
    }

    /// Change what the leaves certify (a new configuration). The leaf for it is issued here,
    /// before it replaces the cached one, so handshakes meanwhile present the previous leaf
    /// rather than wait for a quote. Should issuing fail, the previous leaf is dropped all the
    /// same (it certifies what no longer holds), handshakes are refused with the reason until
    /// an attempt [`RETRY_SECS`] later, and the reason is returned.
    pub fn set_spec(&self, spec: LeafSpec) -> Result<(), String> {
        let fresh = self.inner.certified(&spec, &Freshness::Deterministic);
        let mut s = self.inner.state();
        s.spec = spec;
        s.generation += 1;
        s.cached = None;
        match fresh {
            Ok(c) => {
                Inner::stored(&mut s, c);
                Ok(())
            }
            Err(e) => Err(Inner::failed(&mut s, e, (self.inner.clock)())),
        }
    }

    /// The TEE this resolver issues from.
    pub fn tee(&self) -> &Arc<dyn Tee> {
        &self.inner.tee
    }

    /// The SubjectPublicKeyInfo (DER) of the cached deterministic leaf. (Channel-bound evidence
    /// binds the leaf a connection actually presented: see [`super::recording`].)
    pub fn current_spki(&self) -> Result<Vec<u8>, String> {
        let ck = self.current()?;
        let leaf = ck
            .cert
            .first()
            .ok_or("the certified key has no certificate")?;
        crate::cert::RatlsCertificate::parse(leaf)
            .map(|c| c.spki)
            .map_err(|e| e.to_string())
    }

    /// A fresh leaf whose evidence binds `nonce` (challenge mode). It costs a key, a quote and
    /// a signature: callers facing the network bound how many run at once.
    pub fn challenge(&self, nonce: Vec<u8>) -> Result<Arc<CertifiedKey>, String> {
        let spec = self.inner.state().spec.clone();
        self.inner
            .certified(&spec, &Freshness::Nonce(nonce))
            .map(|c| c.key)
    }

    /// The cached deterministic leaf if it may be presented, without waiting for a quote:
    /// one due for renewal is returned, and its renewal started on a thread of its own. `None`:
    /// [`Self::current`] must issue one, which a caller on an event loop does from a blocking
    /// thread.
    pub fn presentable(&self) -> Option<Arc<CertifiedKey>> {
        match self.inner.standing() {
            Standing::Fresh(key) => Some(key),
            Standing::Due(key) => {
                self.renew();
                Some(key)
            }
            Standing::Unusable => None,
        }
    }

    /// The deterministic leaf: [`Self::presentable`], else one issued before returning (or,
    /// less than [`RETRY_SECS`] after a failed attempt, that attempt's reason).
    pub fn current(&self) -> Result<Arc<CertifiedKey>, String> {
        match self.presentable() {
            Some(key) => Ok(key),
            None => self
                .inner
                .issue(|standing| matches!(standing, Standing::Unusable)),
        }
    }

    /// Start renewing the cached leaf on a thread of its own, unless a renewal is running or
    /// one failed less than [`RETRY_SECS`] ago.
    fn renew(&self) {
        if (self.inner.clock)() < self.inner.state().retry_at
            || self.inner.renewing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let inner = self.inner.clone();
        let spawned = std::thread::Builder::new()
            .name("enclave-os-renew".into())
            .spawn(move || {
                if let Err(e) = inner.issue(|standing| !matches!(standing, Standing::Fresh(_))) {
                    eprintln!(
                        "enclave-os: cannot renew an RA-TLS certificate (the current one is presented until an eighth of its lifetime remains): {e}"
                    );
                }
                inner.renewing.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            self.inner.renewing.store(false, Ordering::Release);
            eprintln!("enclave-os: cannot start renewing an RA-TLS certificate: {e}");
        }
    }
}

impl ResolvesServerCert for RatlsResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // rustls has no way to carry a reason out of a resolver: a failure aborts the handshake
        // (the client sees no certificate), and is reported to stderr for the operator.
        let result = match nonce_from_alpn(&hello) {
            Some(nonce) => self.challenge(nonce),
            None => self.current(),
        };
        match result {
            Ok(ck) => Some(ck),
            Err(e) => {
                eprintln!("enclave-os: cannot issue an RA-TLS certificate: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicI64;
    use std::time::{Duration, Instant};

    use enclave_tee::sim::{Flavour, SimTee};

    use super::*;

    // One test moves this clock: tests in this module must not share it.
    static NOW: AtomicI64 = AtomicI64::new(0);

    fn clock() -> i64 {
        NOW.load(Ordering::SeqCst)
    }

    fn spec(lifetime_secs: i64) -> LeafSpec {
        LeafSpec {
            names: vec!["localhost".into()],
            lifetime_secs,
            config_root: Some([7; 32]),
            modules: vec![],
            workload: None,
            binding: Default::default(),
        }
    }

    fn same(a: &CertifiedKey, b: &CertifiedKey) -> bool {
        a.cert.first() == b.cert.first()
    }

    #[test]
    fn renewal_runs_ahead_of_time_and_handshakes_wait_only_without_a_usable_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let tee = Arc::new(SimTee::open(&dir.path().join("sim"), Flavour::Tdx).unwrap());
        let generated = crate::ca::generate("Test Operator").unwrap();
        let ca = IntermediaryCa::from_pem(
            &generated.intermediary_cert_pem,
            &generated.intermediary_key_pem,
        )
        .unwrap();
        let start = enclave_evidence::time::now();
        NOW.store(start, Ordering::SeqCst);
        // notBefore is 60 s back, so this leaf lives until start + 740: renewal is due from
        // start + 540, and the leaf is presented until start + 640.
        let r = RatlsResolver::with_clock(tee, Arc::new(ca), spec(800), clock);

        assert!(
            r.presentable().is_none(),
            "no leaf before the first issuance"
        );
        let first = r.current().unwrap();
        assert!(r.presentable().is_some());
        assert!(
            same(&first, &r.current().unwrap()),
            "a fresh leaf is reused"
        );

        // Due: the same leaf is answered at once, and a renewal replaces it in the background.
        NOW.store(start + 560, Ordering::SeqCst);
        assert!(same(&first, &r.current().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let renewed = loop {
            let now = r.current().unwrap();
            if !same(&first, &now) {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "the renewal did not land in 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(r.presentable().is_some());

        // Past an eighth of the life left with no renewal: nothing is presented until a leaf
        // is issued in line.
        NOW.store(start + 560 + 700, Ordering::SeqCst);
        assert!(r.presentable().is_none());
        let inline = r.current().unwrap();
        assert!(!same(&renewed, &inline));
        assert!(r.presentable().is_some());

        // A new spec: its leaf replaces the cached one before set_spec returns.
        let mut other = spec(800);
        other.config_root = Some([8; 32]);
        r.set_spec(other).unwrap();
        assert!(r.presentable().is_some());
        let changed = r.current().unwrap();
        assert!(!same(&inline, &changed));
        let parsed = crate::cert::RatlsCertificate::parse(changed.cert.first().unwrap()).unwrap();
        assert_eq!(parsed.config_root, Some([8; 32]));

        // A spec no leaf can be issued for: the old leaf is dropped, and the reason returned,
        // by set_spec and, without another attempt, by every caller for RETRY_SECS; then
        // the next caller tries again.
        let err = r.set_spec(spec(10)).unwrap_err();
        assert!(err.contains("lifetime of 10 s"), "{err}");
        assert!(r.presentable().is_none());
        let told = r.current().unwrap_err();
        assert!(told.contains("lifetime of 10 s"), "{told}");
        assert!(told.contains("the next is in 30 s"), "{told}");
        NOW.fetch_add(RETRY_SECS, Ordering::SeqCst);
        let retried = r.current().unwrap_err();
        assert!(retried.contains("lifetime of 10 s"), "{retried}");
        assert!(
            !retried.contains("the next is in"),
            "a fresh attempt: {retried}"
        );
        assert!(r.current().unwrap_err().contains("the next is in 30 s"));
    }
}
