//! Monotonic counters: where the store's newest version is remembered outside the database.
//!
//! A rollback is only detectable against something the host did not roll back with the
//! database. What that is decides the protection:
//!
//! - [`FileCounter`] keeps the version in a MACed file in the state directory. It catches a
//!   database file put back on its own, and the counter file deleted or replaced by an older
//!   copy (see `Store::open` for the rules). **A host that restores the whole state directory at
//!   once (database, counter and sealed keys together) defeats it**: nothing on a disk the host
//!   controls can tell an old copy from the newest.
//! - A witness (in `enclave-runtime`) keeps the version in another Enclave OS instance, reached
//!   over mutual RA-TLS. The host of this instance cannot roll it back.
//! - A TPM NV counter would be a third; it is not built (see `docs/store.md`).
//!
//! Counters only move forward: `advance(to)` with `to` below the current value is refused, and a
//! counter that cannot be read makes the store refuse to open (fail closed). The one way back is
//! [`FileCounter::reset`], for the operator's `enclave-os store reset-counter`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use ring::hmac;
use thiserror::Error;

use crate::keys::{MasterKey, StoreId};

/// Why a counter could not be read or advanced.
#[derive(Debug, Clone, Error)]
#[error("counter {counter}: {reason}")]
pub struct CounterError {
    /// Which counter.
    pub counter: String,
    /// Why.
    pub reason: String,
    /// What kind of failure: a caller tells an outage from tampering by this, not the text.
    pub fault: CounterFault,
}

/// What kind of failure a [`CounterError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CounterFault {
    /// The counter could not be reached or written (I/O, the network): trying later may work.
    Unavailable,
    /// The counter answered, and refused: a version it will not go back to, a store it never
    /// enrolled, a state it does not hold.
    Refused,
    /// What the counter holds fails its authentication, or belongs to another store.
    Tampered,
}

/// SHA-256 of a state record as stored: which state a version is. Every state record carries a
/// fresh random nonce, so two databases at one version have different digests, and a digest
/// says nothing about the records.
pub type StateDigest = [u8; 32];

/// What a counter recorded: the newest version, and, from counters that keep one, the digest
/// of the state record written at that version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The newest version.
    pub version: u64,
    /// Which state had it, when the counter keeps that.
    pub state: Option<StateDigest>,
}

/// A monotonic counter that remembers the store's newest version.
pub trait Counter: Send + Sync {
    /// What and where it is, for messages.
    fn describe(&self) -> String;
    /// The newest version recorded; 0 when none was.
    fn read(&self) -> Result<u64, CounterError>;
    /// The newest version recorded, or `None` when the counter does not exist at all, as opposed
    /// to existing at 0. The store creates a counter before its database, so a database found
    /// beside a counter that does not exist means the counter was removed. A counter that
    /// cannot tell the two apart answers as `read` does.
    fn read_existing(&self) -> Result<Option<u64>, CounterError> {
        self.read().map(Some)
    }
    /// Record `to` as the newest version. Refused when the counter is already past `to`.
    fn advance(&self, to: u64) -> Result<(), CounterError>;
    /// What [`Self::read_existing`] says, with the state digest when the counter keeps one.
    /// A version alone cannot tell two databases at that version apart (one whose write was
    /// acknowledged, one whose counter advance the host made fail); the digest can.
    fn read_recorded(&self) -> Result<Option<Recorded>, CounterError> {
        Ok(self.read_existing()?.map(|version| Recorded {
            version,
            state: None,
        }))
    }
    /// [`Self::advance`], recording which state has version `to`. A counter that keeps no
    /// digest records the version only.
    fn advance_recorded(&self, to: u64, state: &StateDigest) -> Result<(), CounterError> {
        let _ = state;
        self.advance(to)
    }
}

const MAGIC: &[u8; 8] = b"EOSCTR1\0";
const SLOT: u64 = 64;

/// A counter in a file of the state directory: two 64-byte slots written alternately, each
/// `magic (8) | version (8) | store id (16) | HMAC-SHA256 (32)`, so a torn write leaves the other
/// slot readable. The MAC key is derived from the master key; the file cannot be edited down.
pub struct FileCounter {
    path: PathBuf,
    store: StoreId,
    key: hmac::Key,
}

impl FileCounter {
    /// The counter at `path` for store `store`.
    pub fn new(path: &Path, master: &MasterKey, store: StoreId) -> Result<Self, crate::StoreError> {
        Ok(Self {
            path: path.to_path_buf(),
            store,
            key: master.hmac_key("counter-file", "")?,
        })
    }

    fn err(&self, reason: impl std::fmt::Display) -> CounterError {
        self.fault(CounterFault::Unavailable, reason)
    }

    fn fault(&self, fault: CounterFault, reason: impl std::fmt::Display) -> CounterError {
        CounterError {
            counter: self.describe(),
            reason: reason.to_string(),
            fault,
        }
    }

    fn slot(&self, version: u64) -> [u8; SLOT as usize] {
        let mut s = [0u8; SLOT as usize];
        s[..8].copy_from_slice(MAGIC);
        s[8..16].copy_from_slice(&version.to_be_bytes());
        s[16..32].copy_from_slice(&self.store.0);
        let tag = hmac::sign(&self.key, &s[..32]);
        s[32..].copy_from_slice(tag.as_ref());
        s
    }

    fn parse(&self, s: &[u8]) -> Option<u64> {
        if s.len() != SLOT as usize || &s[..8] != MAGIC || s[16..32] != self.store.0 {
            return None;
        }
        hmac::verify(&self.key, &s[..32], &s[32..]).ok()?;
        s[8..16].try_into().ok().map(u64::from_be_bytes)
    }
}

impl Counter for FileCounter {
    fn describe(&self) -> String {
        format!("the file counter {}", self.path.display())
    }

    fn read(&self) -> Result<u64, CounterError> {
        self.read_existing().map(|v| v.unwrap_or(0))
    }

    fn read_existing(&self) -> Result<Option<u64>, CounterError> {
        let mut buf = Vec::new();
        match File::open(&self.path) {
            // The file is local and only the host can make it unreadable (a directory in its
            // place, its permissions): that is tampering, not an outage.
            Ok(mut f) => f
                .read_to_end(&mut buf)
                .map_err(|e| self.fault(CounterFault::Tampered, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fault(CounterFault::Tampered, e)),
        };
        let a = buf.get(..SLOT as usize).and_then(|s| self.parse(s));
        let b = buf
            .get(SLOT as usize..2 * SLOT as usize)
            .and_then(|s| self.parse(s));
        match (a, b) {
            (None, None) => Err(self.fault(
                CounterFault::Tampered,
                "neither slot authenticates: the file was altered or belongs to another store",
            )),
            (a, b) => Ok(Some(a.unwrap_or(0).max(b.unwrap_or(0)))),
        }
    }

    fn advance(&self, to: u64) -> Result<(), CounterError> {
        let Some(current) = self.read_existing()? else {
            return self.create(to);
        };
        if to < current {
            return Err(self.fault(
                CounterFault::Refused,
                format!("cannot go back from {current} to {to}"),
            ));
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(|e| self.err(e))?;
        // Alternate slots by parity: the slot holding the previous version stays intact.
        let offset = (to % 2) * SLOT;
        f.seek(SeekFrom::Start(offset)).map_err(|e| self.err(e))?;
        f.write_all(&self.slot(to)).map_err(|e| self.err(e))?;
        f.sync_data().map_err(|e| self.err(e))
    }
}

impl FileCounter {
    /// Write the counter afresh at `to`, whatever was there: missing, unreadable or higher.
    ///
    /// This gives up what the counter protects: the operator's `enclave-os store reset-counter`
    /// calls it (through [`crate::reset_counter`], which checks the database first and refuses
    /// to go back), and says so. Nothing else does.
    pub fn reset(&self, to: u64) -> Result<(), CounterError> {
        self.create(to)
    }

    /// A new counter file at `to`, both slots valid, put in place by a rename: a crash leaves
    /// either no counter or a whole one, never a torn file that would read as tampering.
    fn create(&self, to: u64) -> Result<(), CounterError> {
        let mut tmp_name = self
            .path
            .file_name()
            .map(std::ffi::OsStr::to_os_string)
            .ok_or_else(|| self.err("the path has no file name"))?;
        tmp_name.push(".tmp");
        let tmp = self.path.with_file_name(tmp_name);
        let mut f = File::create(&tmp).map_err(|e| self.err(format!("{}: {e}", tmp.display())))?;
        f.write_all(&self.slot(to)).map_err(|e| self.err(e))?;
        f.write_all(&self.slot(to)).map_err(|e| self.err(e))?;
        f.sync_all().map_err(|e| self.err(e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}
