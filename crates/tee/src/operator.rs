//! Sealing where the TEE has no sealing key of its own (TDX): a root key the operator supplies.
//!
//! A TD has no EGETKEY: nothing in the hardware derives a key only this measurement can get.
//! Until a vault releases keys to attested TDs, the operator may supply a 32-byte root key
//! when the runtime starts; sealing keys are derived from it and the TD's measurement, so
//! another build with the same root key still gets other keys.
//!
//! What that costs, plainly: whoever holds the root key can unseal what was sealed under it,
//! and whoever starts the runtime (the host, in a cloud) sees it. The configuration says when
//! it is in use (`seal_key_env`, committed as the leaf `sealing/key-source`), so a client sees
//! it in the config root. TEEs with a sealing key of their own keep using theirs.

use zeroize::Zeroizing;

use crate::{Bundle, SealPolicy, SealingKey, Tee, TeeError, TeeKind};

/// A TEE whose missing sealing key is derived from an operator-supplied root key.
#[derive(Debug)]
pub struct OperatorSealed {
    inner: Box<dyn Tee>,
    root: Zeroizing<[u8; 32]>,
}

impl OperatorSealed {
    /// `inner`, sealing with keys derived from `root` where it has none of its own.
    pub fn new(inner: Box<dyn Tee>, root: Zeroizing<[u8; 32]>) -> Self {
        Self { inner, root }
    }

    /// `inner`, with the root key given as 64 hex digits (`what` names where it came from).
    pub fn from_hex(inner: Box<dyn Tee>, hex_key: &str, what: &str) -> Result<Self, TeeError> {
        let mut root = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(hex_key.trim(), root.as_mut()).map_err(|_| {
            TeeError::NoSealingKey(format!(
                "{what}: the sealing root key must be 64 hex digits (32 bytes)"
            ))
        })?;
        if root.iter().all(|b| *b == 0) {
            return Err(TeeError::NoSealingKey(format!(
                "{what}: the sealing root key is all zeros"
            )));
        }
        Ok(Self::new(inner, root))
    }
}

impl Tee for OperatorSealed {
    fn kind(&self) -> TeeKind {
        self.inner.kind()
    }

    fn simulated(&self) -> bool {
        self.inner.simulated()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Bundle, TeeError> {
        self.inner.evidence(report_data)
    }

    fn measurement(&self) -> Vec<u8> {
        self.inner.measurement()
    }

    fn security_version(&self) -> Option<u32> {
        self.inner.security_version()
    }

    fn sealing_key(&self, policy: SealPolicy) -> Result<SealingKey, TeeError> {
        match self.inner.sealing_key(policy) {
            Err(TeeError::NoSealingKey(_)) => {}
            other => return other,
        }
        let identity = match policy {
            SealPolicy::Measurement => self.inner.measurement(),
            SealPolicy::Signer => {
                return Err(TeeError::NoSealingKey(format!(
                    "{} has no signer identity to seal to: use seal_policy = \"measurement\" with an operator sealing key",
                    self.inner.name()
                )));
            }
        };
        let key = enclave_aead::hkdf_sha256(
            b"enclave-os/operator/sealing-key/v1",
            self.root.as_ref(),
            &[policy.label().as_bytes(), identity.as_slice()],
        )
        .map_err(|e| TeeError::NoSealingKey(e.to_string()))?;
        Ok(SealingKey::new(self.kind(), policy, identity, key))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sim_tdx(dir: &std::path::Path) -> Box<dyn Tee> {
        crate::hw::detect::open("sim-tdx", dir).unwrap()
    }

    #[test]
    fn a_td_seals_with_the_operator_key_bound_to_its_measurement() {
        let dir = tempfile::tempdir().unwrap();
        let bare = sim_tdx(dir.path());
        assert!(matches!(
            bare.sealing_key(SealPolicy::Measurement),
            Err(TeeError::NoSealingKey(_))
        ));
        let key = "11".repeat(32);
        let a = OperatorSealed::from_hex(sim_tdx(dir.path()), &key, "test").unwrap();
        let k1 = a.sealing_key(SealPolicy::Measurement).unwrap();
        assert_eq!(k1.identity(), a.measurement().as_slice());
        let blob = k1.seal("ctx", b"secret").unwrap();
        // The same root key and measurement open it; another root key does not.
        let again = OperatorSealed::from_hex(sim_tdx(dir.path()), &key, "test").unwrap();
        assert_eq!(
            again
                .sealing_key(SealPolicy::Measurement)
                .unwrap()
                .unseal("ctx", &blob)
                .unwrap()
                .as_slice(),
            b"secret"
        );
        let other =
            OperatorSealed::from_hex(sim_tdx(dir.path()), &"22".repeat(32), "test").unwrap();
        assert!(
            other
                .sealing_key(SealPolicy::Measurement)
                .unwrap()
                .unseal("ctx", &blob)
                .is_err()
        );
        // No signer identity on a TD, and malformed keys are refused with the reason.
        assert!(a.sealing_key(SealPolicy::Signer).is_err());
        let e = OperatorSealed::from_hex(sim_tdx(dir.path()), "abc", "ENV").unwrap_err();
        assert!(
            e.to_string()
                .contains("ENV: the sealing root key must be 64 hex digits"),
            "{e}"
        );
        assert!(OperatorSealed::from_hex(sim_tdx(dir.path()), &"00".repeat(32), "ENV").is_err());
    }
}
