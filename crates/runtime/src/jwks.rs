//! Where the management API's token keys come from: the bytes the config tree commits.
//!
//! A `jwks_file` was read once, when the configuration was loaded; its bytes are the `oidc/jwks`
//! leaf and the keys tokens are checked with. The file is never read again, so a key the host
//! writes into it later is trusted by no one. A `jwks_url` is fetched here, at start, over HTTPS
//! trusting only the egress CA bundle, and its bytes go into the tree the same way; a later fetch
//! ([`fetch`]) takes effect only through [`LoadedConfig::with_jwks`], as a new tree and so a new
//! config root.

use std::sync::Arc;
use std::time::Duration;

use enclave_config::LoadedConfig;

use crate::{RuntimeError, https};

/// `config` with its JWKS in hand: as loaded for a `jwks_file`, fetched now for a `jwks_url`.
/// Without `[oidc]`, `config` unchanged.
pub(crate) fn committed(
    config: LoadedConfig,
    egress: Option<&Arc<rustls::ClientConfig>>,
) -> Result<LoadedConfig, RuntimeError> {
    let Some(url) = config.config.oidc.as_ref().and_then(|o| o.jwks_url.clone()) else {
        return Ok(config);
    };
    let bytes = fetch(&url, egress)?;
    tracing::info!(
        url = %url,
        bytes = bytes.len(),
        "JWKS fetched; committed to the config tree as oidc/jwks (a refetch is a new config root)"
    );
    Ok(config.with_jwks(bytes)?)
}

/// The key set the tree commits, for the authenticator.
pub(crate) fn keys(config: &LoadedConfig) -> Result<&[u8], RuntimeError> {
    config.jwks().ok_or_else(|| {
        RuntimeError::Oidc(
            "the JWKS was neither read from jwks_file nor fetched from jwks_url".into(),
        )
    })
}

/// The largest JWKS read: an issuer's key set is a few kilobytes; one far larger is refused
/// rather than held in memory and committed to the config tree.
const MAX_JWKS: usize = 256 * 1024;
/// How long the connection, and the whole fetch, may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The JWKS at `url`, over HTTPS trusting only the egress CA bundle.
pub(crate) fn fetch(
    url: &str,
    egress: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Vec<u8>, RuntimeError> {
    let err = |e: String| RuntimeError::Oidc(e);
    let tls = egress.cloned().ok_or_else(|| {
        err(format!(
            "jwks_url {url} needs [egress] ca_bundle: the runtime trusts no public CA by default"
        ))
    })?;
    let uri = enclave_http::parse(url).map_err(|e| err(format!("jwks_url: {e}")))?;
    let response = enclave_http::Client::new(tls)
        .max_body(MAX_JWKS)
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .send_blocking(enclave_http::Request::get(uri))
        .map_err(|e| err(format!("jwks_url: {}", https::describe(&e))))?;
    if response.status != enclave_http::StatusCode::OK {
        return Err(err(format!(
            "jwks_url {url} answered {}",
            response.status.as_u16()
        )));
    }
    Ok(response.body)
}
