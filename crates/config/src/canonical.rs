//! JSON leaf values in RFC 8785 form (the JSON Canonicalization Scheme, JCS).
//!
//! A leaf's bytes must not depend on how the binary was built. serde_json's own output does: its
//! maps keep insertion order when any crate in the build enables `preserve_order`, and sorted
//! order otherwise. JCS fixes every choice (members sorted by their UTF-16 code units, no
//! whitespace, the minimal string escapes, ECMAScript number form), so anyone can recompute a
//! leaf from `enclave.toml` and `docs/config-tree.md` with any JCS implementation.
//!
//! Config leaves hold strings, booleans, null and integers only. JCS writes numbers as IEEE-754
//! doubles, so an integer beyond 2^53 - 1 could not be told from its neighbours: such a value,
//! and any non-integer number, is refused rather than rounded.

use serde::Serialize;
use serde_json::Value;

/// The largest integer a JCS number carries exactly (2^53 - 1, I-JSON's bound).
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical encoding: the member (a JSON Pointer, `""` for the whole value)
/// and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member '{member}' {reason}")]
pub struct CanonicalError {
    /// Where in the value, as a JSON Pointer.
    pub member: String,
    /// Why.
    pub reason: String,
}

/// The JSON value of `v`, before canonical encoding (for callers that drop or add members).
pub fn to_value(v: &impl Serialize) -> Result<Value, CanonicalError> {
    serde_json::to_value(v).map_err(|e| CanonicalError {
        member: String::new(),
        reason: format!("cannot be written as JSON: {e}"),
    })
}

/// `value` as RFC 8785 bytes, after checking every number is an integer JCS carries exactly.
pub fn encode(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    check_numbers(value, &mut String::new())?;
    serde_json_canonicalizer::to_vec(value).map_err(|e| CanonicalError {
        member: String::new(),
        reason: format!("has no RFC 8785 form: {e}"),
    })
}

/// `v` serialized, then encoded as RFC 8785 bytes.
pub fn jcs(v: &impl Serialize) -> Result<Vec<u8>, CanonicalError> {
    encode(&to_value(v)?)
}

fn check_numbers(v: &Value, at: &mut String) -> Result<(), CanonicalError> {
    let fail = |at: &str, reason: String| CanonicalError {
        member: at.to_string(),
        reason,
    };
    match v {
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .map(|u| u <= MAX_EXACT_INTEGER)
                .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= MAX_EXACT_INTEGER));
            match exact {
                Some(true) => Ok(()),
                Some(false) => Err(fail(
                    at,
                    format!(
                        "is {n}, beyond 2^53 - 1 = {MAX_EXACT_INTEGER}: RFC 8785 numbers are IEEE-754 doubles and would not carry it exactly"
                    ),
                )),
                None => Err(fail(
                    at,
                    format!("is {n}, not an integer: config leaves take integers only"),
                )),
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                check_numbers(item, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        Value::Object(members) => {
            for (k, item) in members {
                let len = at.len();
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                check_numbers(item, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn text(v: &Value) -> String {
        String::from_utf8(encode(v).unwrap()).unwrap()
    }

    #[test]
    fn members_sort_by_utf16_code_units_whatever_the_insertion_order() {
        // U+E000 sorts after U+1F600 in UTF-16 (0xE000 > 0xD83D) but before it by code point:
        // RFC 8785 §3.2.3 takes the UTF-16 order.
        let mut m = serde_json::Map::new();
        m.insert("\u{e000}".into(), json!(1));
        m.insert("\u{1f600}".into(), json!(2));
        m.insert("b".into(), json!(3));
        m.insert("a".into(), json!(4));
        assert_eq!(
            text(&Value::Object(m)),
            "{\"a\":4,\"b\":3,\"\u{1f600}\":2,\"\u{e000}\":1}"
        );
    }

    #[test]
    fn strings_use_the_minimal_escapes() {
        assert_eq!(
            text(&json!("\"\\\u{8}\u{c}\n\r\t\u{1}\u{1f}\u{7f}é/")),
            "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\u{7f}é/\""
        );
    }

    #[test]
    fn integers_beyond_2_pow_53_and_fractions_are_refused() {
        assert_eq!(
            text(&json!({"n": MAX_EXACT_INTEGER})),
            "{\"n\":9007199254740991}"
        );
        assert_eq!(text(&json!([-9007199254740991i64])), "[-9007199254740991]");
        let e = encode(&json!({"a": {"b/c": [0, MAX_EXACT_INTEGER + 1]}})).unwrap_err();
        assert_eq!(e.member, "/a/b~1c/1");
        assert!(e.to_string().contains("beyond 2^53 - 1"), "{e}");
        let e = encode(&json!({"x": 1.5})).unwrap_err();
        assert!(e.to_string().contains("not an integer"), "{e}");
    }
}
