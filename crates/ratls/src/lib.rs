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
//!
//! # Verifier-only builds: the `issue` feature
//!
//! Issuing is the default feature `issue`, which the runtime and the CLI use: the operator CA
//! (`ca`), leaf issuance (`issue`), the server's certificate resolvers (`tls::RatlsResolver`,
//! `tls::SniResolver`), and the channel-bound answer (`channel::respond`). It brings rcgen and
//! `enclave-tee` (the simulator, the hardware ioctls, sealing). A client that only checks
//! RA-TLS servers depends on the crate with `default-features = false` and gets reading and
//! verifying certificates (`cert`, `dice`, `binding`, `verify`, `trust`), the rustls client and
//! server verifiers and `tls::client_config`, and `channel::verify`, on `enclave-evidence`,
//! rustls, webpki and x509-parser alone:
//!
//! ```toml
//! enclave-ratls = { version = "0.1", default-features = false }
//! ```
//!
//! A verifier-only build still trusts a simulation root when its caller names one
//! (`trust::TrustFiles::trust_sim`, or `enclave_evidence::intel::IntelVerifier::with_root`):
//! whether simulated quotes are acceptable is a verification decision; only the simulator that
//! issues them is left out.
//!
//! A feature, not a second crate: the verifier and the issuer share the certificate format,
//! the OIDs, the binding and the DICE encoding (one module each, both directions), and every
//! existing `enclave_ratls::…` path keeps working. Splitting them would put one format in two
//! crates or add a third for the shared part. CI (`.ci/run`, "verifier-only builds") checks
//! this build and that rcgen and `enclave-tee` stay out of its dependency tree.

pub mod binding;
pub mod cert;
pub mod channel;
pub mod dice;
pub mod oid;

pub use cert::{KeyBinding, RatlsCertificate, RatlsError};
pub use verify::{RatlsVerifier, Report, Role};
#[cfg(feature = "issue")]
pub mod ca;
#[cfg(feature = "issue")]
pub mod issue;
pub mod tls;
pub mod trust;
pub mod verify;
