//! Registry credentials and the `WWW-Authenticate` challenges of the distribution spec: `Basic`,
//! and `Bearer` with a token fetched from the challenge's realm.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// A registry account. Neither field is ever logged; `Debug` shows the user name only.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or an access token used as one).
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `Basic base64(user:password)`, in a buffer wiped on drop.
    pub(crate) fn basic(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        let pair = Zeroizing::new(format!("{}:{}", self.username, self.password.as_str()));
        Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
        ))
    }
}

/// What a registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` value: a scheme, then `key=value` or `key="value"` pairs. Only the
/// first challenge is read (registries send one).
pub(crate) fn parse_challenge(header: &str) -> Result<Challenge, String> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest)?;
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Ok(Challenge::Basic),
        "bearer" => Ok(Challenge::Bearer {
            realm: params
                .get("realm")
                .cloned()
                .ok_or("its Bearer challenge names no realm")?,
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        }),
        other => Err(format!(
            "it asks for '{other}' authentication; only Basic and Bearer are supported"
        )),
    }
}

fn parse_params(mut s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if s.is_empty() {
            return Ok(out);
        }
        let (key, after) = s
            .split_once('=')
            .ok_or_else(|| format!("cannot read the challenge parameters at '{s}'"))?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            let end = end.ok_or("an unterminated quoted challenge parameter")?;
            out.insert(key, value);
            s = &quoted[end..];
        } else {
            let end = after.find(',').unwrap_or(after.len());
            out.insert(key, after[..end].trim().to_string());
            s = &after[end..];
        }
    }
}

/// A bearer token and when to stop using it.
pub(crate) struct Token {
    pub(crate) value: Zeroizing<String>,
    pub(crate) until: Instant,
}

impl Token {
    pub(crate) fn fresh(&self) -> bool {
        Instant::now() < self.until
    }
}

/// The token endpoint's answer (Docker's token spec; OAuth2 servers say `access_token`).
#[derive(serde::Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default, deserialize_with = "secret")]
    token: Option<Zeroizing<String>>,
    #[serde(default, deserialize_with = "secret")]
    access_token: Option<Zeroizing<String>>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A token read straight into a buffer wiped on drop (the `String` moves, it is not copied).
fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Zeroizing<String>>, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(s.map(Zeroizing::new))
}

/// The spec's default when a token server does not say: 60 s.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Stop using a token this long before it expires, so a request does not arrive just after.
const TOKEN_SLACK: Duration = Duration::from_secs(5);

impl TokenResponse {
    pub(crate) fn into_token(self, fetched: Instant) -> Option<Token> {
        let value = self
            .token
            .filter(|t| !t.is_empty())
            .or(self.access_token.filter(|t| !t.is_empty()))?;
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
        Some(Token {
            value,
            until: fetched + lifetime.saturating_sub(TOKEN_SLACK),
        })
    }
}

/// `s` percent-encoded for a URL query value.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(r#"Basic realm="test""#).unwrap(),
            Challenge::Basic
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://reg.io:5001/token",service="reg.io",scope="repository:a/b:pull,push""#
            )
            .unwrap(),
            Challenge::Bearer {
                realm: "https://reg.io:5001/token".into(),
                service: Some("reg.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge("bearer realm=https://r/t, service=s").unwrap(),
            Challenge::Bearer {
                realm: "https://r/t".into(),
                service: Some("s".into()),
                scope: None
            }
        );
        assert!(
            parse_challenge("Bearer service=x")
                .unwrap_err()
                .contains("no realm")
        );
        assert!(
            parse_challenge("Negotiate abc=1")
                .unwrap_err()
                .contains("'negotiate'")
        );
        assert!(
            parse_challenge(r#"Bearer realm="x"#)
                .unwrap_err()
                .contains("unterminated")
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_and_tokens_expire() {
        let c = Credentials {
            username: "user".into(),
            password: Zeroizing::new("hunter2".into()),
        };
        let text = format!("{c:?}");
        assert!(text.contains("user") && !text.contains("hunter2"), "{text}");
        assert_eq!(c.basic().as_str(), "Basic dXNlcjpodW50ZXIy");
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":300}"#).unwrap();
        let t = r.into_token(Instant::now()).unwrap();
        assert_eq!(t.value.as_str(), "abc");
        assert!(t.fresh());
        let r: TokenResponse = serde_json::from_str(r#"{"token":"x","expires_in":1}"#).unwrap();
        assert!(!r.into_token(Instant::now()).unwrap().fresh());
        let r: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(r.into_token(Instant::now()).is_none());
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
