//! Azure confidential VMs: the HCL (paravisor) report that wraps a hardware report together with
//! runtime claims, and its verification.

pub mod hcl;

pub use hcl::{HclReport, HwReport, TdReport};
