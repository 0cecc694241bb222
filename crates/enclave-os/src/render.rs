//! Rendering for people (aligned text) and scripts (JSON).

use std::fmt::Write;

use enclave_evidence::{Appraisal, Measurements, time};
use serde_json::{Value, json};

/// Walk a JSON value as an indented list of `name: value` lines.
pub(crate) fn fields(v: &Value) -> String {
    let mut out = String::new();
    walk(&mut out, v, 0);
    out
}

fn walk(out: &mut String, v: &Value, depth: usize) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        let _ = writeln!(out, "{pad}{k}:");
                        walk(out, v, depth + 1);
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                        let _ = writeln!(out, "{pad}{k}:");
                        walk(out, v, depth + 1);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{k}: {}", scalar(v));
                    }
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let _ = writeln!(out, "{pad}[{i}]:");
                walk(out, item, depth + 1);
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other));
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if s.trim_start().starts_with("-----BEGIN CERTIFICATE") => format!(
            "{} PEM certificate(s) (full text with --json)",
            s.matches("-----BEGIN CERTIFICATE").count()
        ),
        Value::String(s) if s.contains('\n') => format!("\n{}", indent(s)),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) if items.is_empty() => "(none)".into(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn measurement_name(m: &Measurements) -> &'static str {
    match m {
        Measurements::Sgx(_) => "MRENCLAVE",
        Measurements::Tdx(_) => "MRTD",
        Measurements::Snp(_) => "launch measurement",
    }
}

/// The appraisal as the JSON document scripts rely on.
pub(crate) fn appraisal_json(a: &Appraisal, at: i64) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("verified".into(), json!(true));
        map.insert(
            "measurement".into(),
            json!(hex::encode(a.measurements.primary())),
        );
        map.insert("at".into(), json!(time::fmt(at)));
        map.insert("error".into(), Value::Null);
    }
    v
}

/// The appraisal as a report for a person.
pub(crate) fn appraisal_text(a: &Appraisal, at: i64) -> String {
    let mut o = String::new();
    let origin = if a.simulated {
        "SIMULATED: a trusted simulation root, not hardware evidence"
    } else {
        "hardware vendor root"
    };
    let _ = writeln!(o, "verified:     yes, at {}", time::fmt(at));
    let _ = writeln!(o, "tee:          {} ({origin})", a.tee);
    let status_note = if a.status == enclave_evidence::TcbStatus::Unknown {
        " (not evaluated: see notes)"
    } else {
        ""
    };
    let _ = writeln!(o, "TCB status:   {}{status_note}", a.status);
    let advisories = if a.advisory_ids.is_empty() {
        "(none)".to_string()
    } else {
        a.advisory_ids.join(", ")
    };
    let _ = writeln!(o, "advisories:   {advisories}");
    let _ = writeln!(
        o,
        "debug:        {}",
        if a.debug { "ENABLED" } else { "disabled" }
    );
    let _ = writeln!(
        o,
        "measurement:  {} ({})",
        hex::encode(a.measurements.primary()),
        measurement_name(&a.measurements)
    );
    let _ = writeln!(o, "report_data:  {}", hex::encode(a.report_data));
    if let Some(until) = a.valid_until {
        let _ = writeln!(o, "valid until:  {}", time::fmt(until as i64));
    }
    let _ = writeln!(o, "measurements:");
    o.push_str(
        &fields(&serde_json::to_value(&a.measurements).unwrap_or(Value::Null))
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
    );
    let _ = writeln!(o, "platform:");
    o.push_str(
        &fields(&serde_json::to_value(&a.platform).unwrap_or(Value::Null))
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>(),
    );
    if let Some(claims) = &a.runtime_claims {
        let _ = writeln!(o, "runtime claims:");
        let _ = writeln!(
            o,
            "{}",
            indent(&serde_json::to_string_pretty(claims).unwrap_or_default())
        );
    }
    for n in &a.notes {
        let _ = writeln!(o, "note:         {n}");
    }
    o
}
