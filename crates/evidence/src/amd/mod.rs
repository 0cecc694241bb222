//! AMD SEV-SNP: attestation reports and their verification against AMD's key hierarchy.

pub mod product;
pub mod report;
pub mod verify;

pub use product::Product;
pub use report::SnpReport;
pub use verify::{AmdInputs, ChainCache, verify_report};
