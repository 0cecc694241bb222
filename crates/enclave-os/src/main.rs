//! `enclave-os`: the Enclave OS command-line tool.
//!
//! A thin layer over the libraries: it parses arguments, reads files, calls the library, and
//! renders the result for a person or, with `--json`, for a script. Errors become one line naming
//! the input and the reason, and a non-zero exit status.

mod ca_cmd;
mod evidence_cmd;
mod image_cmd;
mod log_driver;
mod measure_cmd;
mod mgmt;
mod migrate_cmd;
mod render;
mod run_cmd;
mod store_cmd;
mod token_cmd;
mod vault_cmd;
mod verify_cmd;
mod workload_cmd;

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: the proxy allocates and frees small buffers on every
/// request, and glibc's free lists cost it measurably (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "enclave-os",
    version,
    about = "Enclave OS: attested confidential computing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Decode and verify hardware attestation evidence (SGX, TDX, SEV-SNP, Azure CVM).
    #[command(subcommand)]
    Evidence(evidence_cmd::EvidenceCommand),
    /// The operator's private PKI.
    #[command(subcommand)]
    Ca(ca_cmd::CaCommand),
    /// Connect to an RA-TLS server and check, in the handshake, what runs there and how it is
    /// configured. Exit status 0 only when everything verifies.
    Verify(verify_cmd::VerifyUrlArgs),
    /// Compute the config Merkle root of an enclave.toml offline, so operators and clients can
    /// pin it before anything runs.
    Measure(measure_cmd::MeasureArgs),
    /// Run the runtime for an enclave.toml: the RA-TLS listener, the sealed store and the
    /// management API.
    Run(run_cmd::RunArgs),
    /// Move measurement-sealed state to a new build.
    #[command(subcommand)]
    Migrate(migrate_cmd::MigrateCommand),
    /// Operator commands on the sealed store, run while the runtime is stopped.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Operate a running instance's workloads over its management API: list, load (with a
    /// progress bar while a container image is pulled), unload, logs.
    Workload(workload_cmd::WorkloadCommand),
    /// Operate a running instance's vault over its management API: secrets (write-only),
    /// policies (the certificate changes), keys generated inside the TEE.
    Vault(vault_cmd::VaultCommand),
    /// Encrypted container images: `image encrypt` (ocicrypt-compatible, OCI layouts).
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// Encrypted wasm components: `wasm encrypt` (JWE, `cty: application/wasm`).
    #[command(subcommand)]
    Wasm(image_cmd::WasmCommand),
    /// Development helper: mint an OIDC bearer token (ES256 or RS256) for the management API.
    Token(token_cmd::TokenArgs),
}

/// Exit status when verification or appraisal fails.
pub(crate) const EXIT_REJECTED: u8 = 1;
/// Exit status when an input cannot be read or parsed.
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status when the runtime refuses the sealed state on disk: rolled back, forked, tampered
/// with or partly removed (see `RuntimeError::refuses_state`): the host's doing, not a mistake
/// in the command line.
pub(crate) const EXIT_ROLLBACK: u8 = 3;

fn main() -> ExitCode {
    // containerd starts this binary as a container's log driver with arguments of its own form.
    if log_driver::invoked() {
        return log_driver::run();
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Evidence(cmd) => evidence_cmd::run(cmd),
        Command::Ca(cmd) => ca_cmd::run(cmd),
        Command::Verify(args) => verify_cmd::run(&args),
        Command::Measure(args) => measure_cmd::run(&args),
        Command::Run(args) => run_cmd::run(&args),
        Command::Token(args) => token_cmd::run(&args),
        Command::Migrate(cmd) => migrate_cmd::run(cmd),
        Command::Store(cmd) => store_cmd::run(cmd),
        Command::Workload(cmd) => workload_cmd::run(cmd),
        Command::Vault(cmd) => vault_cmd::run(cmd),
        Command::Image(cmd) => image_cmd::run_image(cmd),
        Command::Wasm(cmd) => image_cmd::run_wasm(cmd),
    }
}
