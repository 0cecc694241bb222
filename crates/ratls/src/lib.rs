//! RA-TLS: X.509 certificates that carry hardware evidence bound to their own key.
//!
//! This crate issues Enclave OS RA-TLS leaves inside the TEE, in either evidence binding (the
//! seed's raw quote, or TCG DICE tagged evidence as Gramine and rats-tls read it: see
//! [`binding::BindingFormat`]), and reads RA-TLS certificates (Enclave OS's, and those of other
//! implementations that use the DICE extension), checks that the evidence binds the
//! certificate's key, and hands the evidence to `enclave-evidence` for verification. It also
//! holds the operator CA, the rustls server and client configurations, and the freshness modes.
//!
//! The rustls plumbing (`tls`): a certificate resolver per freshness mode and by SNI, and server
//! and client verifiers that check the peer's name as rustls's own verifier does and keep no
//! state between handshakes (a connection's report is read back from that connection).
//! `channel` is the channel-bound mode.

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
