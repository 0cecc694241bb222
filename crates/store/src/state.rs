//! The state record: the store's version and a commitment to the exact set of records present.
//!
//! ```text
//! state record = version (8, BE) | nonce (12) | AES-256-GCM(K_state-aead, S (32), AAD) | tag (16)
//! AAD          = "enclave-os/kv/v2/state" | store id (16) | version (8, BE)
//! S            = sum, modulo 2^256, over every record present, of
//!                HMAC-SHA256(K_set-hash, len(ns) (2, BE) | ns | stored key | stored value)
//!                read as a 256-bit big-endian integer
//! ```
//!
//! The host sees the version and a ciphertext under a fresh random nonce: never `S`, never a
//! difference between two `S`. The format before it (72 bytes: `version | S | HMAC`) showed `S`
//! in the clear as a XOR, so consecutive state records gave away element values and, by linear
//! algebra over GF(2), sets of records with the same `S`. It is still read once, to migrate an
//! existing store (see `Store::open`), under its own keys (`set-mac`, `state-mac`), which the new
//! format never uses again.
//!
//! The current format is `enclave-aead`'s framed layout under the version header, byte for
//! byte what the store wrote before it used `enclave-aead` (known-answer test:
//! `records_and_state_records_are_byte_for_byte_the_previous_format` in `tests/store.rs`).

use enclave_aead::{NONCE_LEN, SealKey, TAG_LEN};
use ring::hmac;
use zeroize::Zeroizing;

use crate::StoreError;
use crate::keys::{MasterKey, StoreId, aead_err, constant_time_eq};
use crate::record::KeyHash;

/// The set commitment `S`: secret, like a key.
pub(crate) type SetHash = Zeroizing<[u8; 32]>;

const LABEL: &[u8; 22] = b"enclave-os/kv/v2/state";
const LEGACY_LABEL: &[u8; 22] = b"enclave-os/kv/v1/state";
/// Length of a state record in the current format.
pub(crate) const STATE_LEN: usize = 8 + NONCE_LEN + 32 + TAG_LEN;
/// Length of a state record in the first format (clear XOR set-MAC).
const LEGACY_LEN: usize = 8 + 32 + 32;

/// The keys of the state record, current and legacy.
pub(crate) struct StateKeys {
    set: hmac::Key,
    seal: SealKey,
    legacy_set: hmac::Key,
    legacy_state: hmac::Key,
}

/// What an authenticated state record says.
pub(crate) enum State {
    /// The current format.
    Current { version: u64, set: SetHash },
    /// The first format, MAC checked: `set` is its XOR set-MAC, still to be compared.
    Legacy { version: u64, set: [u8; 32] },
}

impl StateKeys {
    pub(crate) fn new(master: &MasterKey) -> Result<Self, StoreError> {
        Ok(Self {
            set: master.hmac_key("set-hash", "")?,
            seal: master.seal_key("state-aead", "")?,
            legacy_set: master.hmac_key("set-mac", "")?,
            legacy_state: master.hmac_key("state-mac", "")?,
        })
    }

    /// One record's element of `S`.
    pub(crate) fn element(&self, ns: &str, hash: &KeyHash, stored: &[u8]) -> [u8; 32] {
        element(&self.set, ns, hash, stored)
    }

    /// One record's element of the first format's XOR set-MAC.
    pub(crate) fn legacy_element(&self, ns: &str, hash: &KeyHash, stored: &[u8]) -> [u8; 32] {
        element(&self.legacy_set, ns, hash, stored)
    }

    /// The state record for `version` and `set`, under a fresh nonce: two records for the same
    /// set share no bytes beyond the version.
    pub(crate) fn seal(
        &self,
        id: &StoreId,
        version: u64,
        set: &[u8; 32],
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(STATE_LEN);
        out.extend_from_slice(&version.to_be_bytes());
        self.seal
            .seal_append(&mut out, &aad(id, version), set)
            .map_err(aead_err)?;
        Ok(out)
    }

    /// Authenticate a state record of either format.
    pub(crate) fn open(&self, id: &StoreId, bytes: &[u8]) -> Result<State, StoreError> {
        let forged = || {
            StoreError::Integrity(
                "the state record fails authentication: it was altered, or the database belongs to another store or master key".into(),
            )
        };
        let version = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        match (bytes.len(), version) {
            (STATE_LEN, Some(version)) => {
                let plain = self
                    .seal
                    .open_framed(&aad(id, version), &bytes[8..])
                    .map_err(|_| forged())?;
                let mut set = Zeroizing::new([0u8; 32]);
                set.copy_from_slice(plain.get(..32).ok_or_else(forged)?);
                Ok(State::Current { version, set })
            }
            (LEGACY_LEN, Some(version)) => {
                let mut msg = Vec::with_capacity(LEGACY_LABEL.len() + 16 + 40);
                msg.extend_from_slice(LEGACY_LABEL);
                msg.extend_from_slice(&id.0);
                msg.extend_from_slice(&bytes[..40]);
                hmac::verify(&self.legacy_state, &msg, &bytes[40..]).map_err(|_| forged())?;
                let mut set = [0u8; 32];
                set.copy_from_slice(&bytes[8..40]);
                Ok(State::Legacy { version, set })
            }
            (n, _) => Err(StoreError::Integrity(format!(
                "the state record is {n} bytes, neither {STATE_LEN} (this format) nor {LEGACY_LEN} (the first format)"
            ))),
        }
    }
}

fn aad(id: &StoreId, version: u64) -> [u8; 22 + 16 + 8] {
    let mut a = [0u8; 46];
    a[..22].copy_from_slice(LABEL);
    a[22..38].copy_from_slice(&id.0);
    a[38..].copy_from_slice(&version.to_be_bytes());
    a
}

fn element(key: &hmac::Key, ns: &str, hash: &KeyHash, stored: &[u8]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(&(ns.len() as u16).to_be_bytes());
    ctx.update(ns.as_bytes());
    ctx.update(hash);
    ctx.update(stored);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// `acc += e` modulo 2^256, both big-endian. Addition rather than XOR: even if one `S` leaked,
/// the structure would not be the GF(2) vector space the old format's attack worked in.
pub(crate) fn add(acc: &mut [u8; 32], e: &[u8; 32]) {
    let mut carry = 0u16;
    for (a, b) in acc.iter_mut().zip(e).rev() {
        let s = u16::from(*a) + u16::from(*b) + carry;
        *a = s as u8;
        carry = s >> 8;
    }
}

/// `acc -= e` modulo 2^256, both big-endian.
pub(crate) fn sub(acc: &mut [u8; 32], e: &[u8; 32]) {
    let mut borrow = 0i16;
    for (a, b) in acc.iter_mut().zip(e).rev() {
        let d = i16::from(*a) - i16::from(*b) - borrow;
        *a = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
}

/// `acc ^= e`: the first format's set-MAC, kept only to check a store before migrating it.
pub(crate) fn xor(acc: &mut [u8; 32], e: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(e) {
        *a ^= b;
    }
}

/// Whether two commitments are equal, in constant time.
pub(crate) fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    constant_time_eq(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_sub_are_inverse_and_carry_across_bytes() {
        let mut acc = [0xffu8; 32];
        let mut one = [0u8; 32];
        one[31] = 1;
        add(&mut acc, &one);
        assert_eq!(acc, [0u8; 32], "2^256 - 1 + 1 wraps to 0");
        sub(&mut acc, &one);
        assert_eq!(acc, [0xffu8; 32], "0 - 1 wraps to 2^256 - 1");
        let e = [0x5au8; 32];
        let start = acc;
        add(&mut acc, &e);
        add(&mut acc, &e);
        assert_ne!(
            acc, start,
            "unlike XOR, adding an element twice does not cancel"
        );
        sub(&mut acc, &e);
        sub(&mut acc, &e);
        assert_eq!(acc, start);
    }
}
