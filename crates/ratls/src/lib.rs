//! RA-TLS: X.509 certificates that carry hardware evidence bound to their own key.
//!
//! This crate reads RA-TLS certificates (Enclave OS's, and those of other implementations that use
//! the TCG DICE tagged-evidence extension, such as Gramine and rats-tls), checks that the evidence
//! binds the certificate's key, and hands the evidence to `enclave-evidence` for verification.
//!
//! Not yet here (it comes with the rest of the RA-TLS work): issuing certificates, the rustls
//! server and client configurations, freshness modes and `enclave-os verify`.

pub mod binding;
pub mod cert;
pub mod channel;
pub mod dice;
pub mod oid;

pub use cert::{KeyBinding, RatlsCertificate, RatlsError};
pub use verify::{RatlsVerifier, Report, Role};
pub mod ca;
pub mod issue;
pub mod tls;
pub mod trust;
pub mod verify;
