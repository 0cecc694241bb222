//! Intel DCAP: SGX and TDX quotes, their collateral, and their verification.

pub mod collateral;
mod der;
mod memo;
mod pck;
pub mod quote;
pub mod simulation;
pub mod verify;

pub use collateral::Collateral;
pub use quote::Quote;
pub use verify::IntelVerifier;
