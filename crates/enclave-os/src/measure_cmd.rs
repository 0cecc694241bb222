//! `enclave-os measure CONFIG`: the config root, computed offline, so it can be pinned.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use enclave_config::LoadedConfig;
use serde_json::json;

use crate::EXIT_USAGE;

#[derive(Args)]
pub(crate) struct MeasureArgs {
    /// The configuration file (enclave.toml).
    config: PathBuf,
    /// Print JSON (the manifest: root, and every leaf's name and hashes).
    #[arg(long)]
    json: bool,
    /// The JWKS bytes fetched from the configuration's `oidc.jwks_url` (the tree commits them;
    /// a runtime fetches them at start). Not used with `jwks_file`, whose content is committed.
    #[arg(long, value_name = "FILE")]
    jwks: Option<PathBuf>,
    /// A local OCI image layout (as skopeo or umoci write it) holding container workloads'
    /// images: each is found by its digest. Repeatable.
    #[arg(long, value_name = "DIR")]
    oci_layout: Vec<PathBuf>,
    /// containerd's version, as its Version service reports it (default: ask the local
    /// `containerd --version`).
    #[arg(long)]
    containerd_version: Option<String>,
    /// runc's version, the first line of `runc --version` (default: ask the runc binary that
    /// `[containers] runc` names).
    #[arg(long)]
    runc_version: Option<String>,
}

/// The first line a command prints for `--version`.
fn version_of(program: &std::path::Path) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", program.display()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .ok_or_else(|| format!("{} --version printed nothing", program.display()))
}

/// The container workloads' images from `--oci-layout`, and the engine's versions, folded in.
fn containers(a: &MeasureArgs, mut c: LoadedConfig) -> Result<LoadedConfig, String> {
    let Some(engine) = c.config.containers.clone() else {
        return Ok(c);
    };
    let containerd = match &a.containerd_version {
        Some(v) => v.clone(),
        // "containerd github.com/containerd/containerd 1.6.20~ds1 <revision>": the third word
        // is what the Version service reports.
        None => version_of(std::path::Path::new("containerd"))?
            .split_whitespace()
            .nth(2)
            .map(str::to_string)
            .ok_or(
                "containerd --version: no version in what it printed; give --containerd-version",
            )?,
    };
    let runc = match &a.runc_version {
        Some(v) => v.clone(),
        None => version_of(&engine.runc)?,
    };
    c = c.with_engine(enclave_config::file::EngineVersions { containerd, runc });
    let layouts = a
        .oci_layout
        .iter()
        .map(|d| enclave_oci::Layout::open(d).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let file: Vec<_> = c.config.workloads.clone();
    for w in &file {
        let enclave_config::file::Run::Container { image, settings } = &w.run else {
            continue;
        };
        let reference: enclave_oci::Reference = image
            .parse()
            .map_err(|e: enclave_oci::OciError| e.to_string())?;
        let found = layouts.iter().find_map(|l| {
            let m = l.manifest(&reference).ok()?;
            let cfg = l.config(&m).ok()?;
            Some((m, cfg))
        });
        let Some((manifest, config)) = found else {
            return Err(format!(
                "workload '{}': image {image} is in no --oci-layout given ({}): the tree commits its manifest and configuration",
                w.name,
                a.oci_layout.len()
            ));
        };
        let spec = enclave_config::runtime_spec::runtime_spec(
            &config.bytes,
            &enclave_config::runtime_spec::SpecInput {
                name: &w.name,
                namespace: &engine.namespace,
                env: &w.env,
                args: &w.args,
                limits: &w.limits,
                settings,
            },
        )
        .map_err(|e| e.to_string())?;
        c = c
            .with_image(
                &w.name,
                enclave_config::file::ImageLeaves {
                    manifest: manifest.bytes.clone(),
                    config: config.bytes.clone(),
                    runtime_spec: spec,
                },
            )
            .map_err(|e| e.to_string())?;
    }
    Ok(c)
}

/// The configuration, with the fetched JWKS of `--jwks` when given.
fn load(a: &MeasureArgs) -> Result<LoadedConfig, String> {
    let c = LoadedConfig::load(&a.config).map_err(|e| e.to_string())?;
    let Some(path) = &a.jwks else { return Ok(c) };
    if c.config
        .oidc
        .as_ref()
        .and_then(|o| o.jwks_url.as_ref())
        .is_none()
    {
        return Err(format!(
            "--jwks {}: the configuration has no oidc.jwks_url; a jwks_file's content is committed as it is",
            path.display()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("--jwks {}: {e}", path.display()))?;
    c.with_jwks(bytes).map_err(|e| e.to_string())
}

pub(crate) fn run(a: &MeasureArgs) -> ExitCode {
    let tree = load(a)
        .and_then(|c| containers(a, c))
        .and_then(|c| c.tree(env!("CARGO_PKG_VERSION")).map_err(|e| e.to_string()));
    match tree {
        Ok(tree) => {
            if a.json {
                println!("{}", json!(tree.manifest()));
            } else {
                println!("config root: {}", hex::encode(tree.root()));
                for leaf in tree.leaves() {
                    println!("  {:<32} {}", leaf.name, hex::encode(leaf.value_hash));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if a.json {
                println!("{}", json!({ "error": e.to_string() }));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(EXIT_USAGE)
        }
    }
}
