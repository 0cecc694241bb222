//! A wasi:http component that uses the Enclave OS SDK (`crates/wasm/wit/sdk.wit`).
//!
//! Key-value (the app's own sealed namespace):
//! - `GET /kv/KEY` the value, or 404; `PUT /kv/KEY` stores the body; `DELETE /kv/KEY`;
//! - `GET /kv?prefix=P` the keys starting with P, one per line.
//!
//! Attestation:
//! - `POST /attest` evidence binding the body: `tee`, `simulated`, `report-data` and the quote,
//!   as `name: value` lines (binary values in hex);
//! - `PUT /extension/N` declares the body as certificate extension 1.3.6.1.4.1.65230.3.5.N;
//!   `DELETE /extension/N` withdraws it.
//!
//! Keys (non-exportable; NAME is the key's name):
//! - `POST /keys/NAME?alg=ecdsa-p256|ed25519|aes256-gcm` generates a key;
//! - `GET /keys/NAME/public` its public key (SubjectPublicKeyInfo DER, hex);
//! - `POST /keys/NAME/sign` signs the body (hex signature);
//! - `POST /keys/NAME/verify?sig=HEX` whether HEX is a signature over the body;
//! - `POST /keys/NAME/encrypt` the body, encrypted (hex); `POST /keys/NAME/decrypt` the hex
//!   body, decrypted;
//! - `DELETE /keys/NAME`.
//!
//! Secrets (the vault's, as a committed policy gives them to this app):
//! - `GET /secret/REPO/TYPE/TAG` the secret's bytes; 403 with the policy's reason when refused.
//!
//! Errors answer 4xx/5xx with the runtime's reason as the body.

wit_bindgen::generate!({
    path: "../../crates/wasm/wit",
    world: "imports",
});

use enclave_os::sdk::{attestation, keys, kv, secrets};
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
    ResponseOutparam,
};

struct Notes;

wasi::http::proxy::export!(Notes);

type Reply = (u16, Vec<u8>);

fn respond(out: ResponseOutparam, (status, body): Reply) {
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"text/plain; charset=utf-8".to_vec(),
    )])
    .unwrap_or_else(|_| Fields::new());
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let Ok(outgoing) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = outgoing.write() {
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(outgoing, None);
}

fn read_body(request: &IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else {
        return out;
    };
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            out.extend_from_slice(&chunk);
        }
        drop(stream);
    }
    let _ = IncomingBody::finish(body);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn ok(text: impl Into<Vec<u8>>) -> Reply {
    (200, text.into())
}

fn fail(status: u16, reason: impl std::fmt::Display) -> Reply {
    (status, format!("{reason}\n").into_bytes())
}

fn kv_error(e: kv::Error) -> Reply {
    match e {
        kv::Error::InvalidKey(r) => fail(400, format!("invalid key: {r}")),
        kv::Error::TooLarge(r) => fail(413, format!("too large: {r}")),
        kv::Error::Store(r) => fail(500, format!("store: {r}")),
    }
}

fn key_error(e: keys::Error) -> Reply {
    match e {
        keys::Error::NotFound(r) => fail(404, r),
        keys::Error::Exists(r) => fail(409, r),
        keys::Error::Invalid(r) => fail(400, r),
        keys::Error::WrongAlgorithm(r) => fail(400, r),
        keys::Error::Store(r) => fail(500, format!("store: {r}")),
    }
}

fn kv_route(method: &Method, key: &str, body: Vec<u8>) -> Reply {
    match method {
        Method::Get => match kv::get(key) {
            Ok(Some(v)) => ok(v),
            Ok(None) => fail(404, format!("no value under '{key}'")),
            Err(e) => kv_error(e),
        },
        Method::Put => match kv::set(key, &body) {
            Ok(()) => ok("stored\n"),
            Err(e) => kv_error(e),
        },
        Method::Delete => match kv::delete(key) {
            Ok(true) => ok("deleted\n"),
            Ok(false) => fail(404, format!("no value under '{key}'")),
            Err(e) => kv_error(e),
        },
        _ => fail(405, "GET, PUT or DELETE"),
    }
}

fn keys_route(method: &Method, rest: &str, query: &str, body: Vec<u8>) -> Reply {
    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
    let result = match (method, action) {
        (Method::Post, "") => {
            let alg = match query.strip_prefix("alg=") {
                Some("ecdsa-p256") => keys::Algorithm::EcdsaP256,
                Some("ed25519") => keys::Algorithm::Ed25519,
                Some("aes256-gcm") => keys::Algorithm::Aes256Gcm,
                _ => return fail(400, "?alg=ecdsa-p256|ed25519|aes256-gcm"),
            };
            keys::generate(name, alg).map(|()| b"generated\n".to_vec())
        }
        (Method::Get, "public") => keys::public_key(name).map(|k| hex(&k).into_bytes()),
        (Method::Post, "sign") => keys::sign(name, &body).map(|s| hex(&s).into_bytes()),
        (Method::Post, "verify") => {
            let Some(sig) = query.strip_prefix("sig=").and_then(unhex) else {
                return fail(400, "?sig=HEX");
            };
            keys::verify(name, &body, &sig).map(|v| format!("{v}\n").into_bytes())
        }
        (Method::Post, "encrypt") => {
            keys::encrypt(name, &body, name.as_bytes()).map(|c| hex(&c).into_bytes())
        }
        (Method::Post, "decrypt") => {
            let Some(ct) = std::str::from_utf8(&body).ok().and_then(unhex) else {
                return fail(400, "the body is not hex");
            };
            keys::decrypt(name, &ct, name.as_bytes())
        }
        (Method::Delete, "") => keys::delete(name).map(|d| format!("{d}\n").into_bytes()),
        _ => return fail(404, "no such keys route"),
    };
    result.map(ok).unwrap_or_else(key_error)
}

fn route(request: &IncomingRequest) -> Reply {
    let method = request.method();
    let full = request.path_with_query().unwrap_or_default();
    let (path, query) = full.split_once('?').unwrap_or((full.as_str(), ""));
    let body = read_body(request);
    if path == "/kv" {
        let prefix = query.strip_prefix("prefix=").unwrap_or("");
        return match kv::list_keys(prefix) {
            Ok(keys) => ok(keys.iter().map(|k| format!("{k}\n")).collect::<String>()),
            Err(e) => kv_error(e),
        };
    }
    if let Some(key) = path.strip_prefix("/kv/") {
        return kv_route(&method, key, body);
    }
    if path == "/attest" {
        return match attestation::attest(&body) {
            Ok(e) => ok(format!(
                "tee: {}\nsimulated: {}\nreport-data: {}\nquote: {}\n",
                e.tee,
                e.simulated,
                hex(&e.report_data),
                hex(&e.quote)
            )),
            Err(reason) => fail(500, reason),
        };
    }
    if let Some(n) = path.strip_prefix("/extension/") {
        let Ok(index) = n.parse::<u32>() else {
            return fail(400, "the extension index is a number");
        };
        let value = match method {
            Method::Put => Some(body),
            Method::Delete => None,
            _ => return fail(405, "PUT or DELETE"),
        };
        return match attestation::set_certificate_extension(index, value.as_deref()) {
            Ok(()) => ok("declared\n"),
            Err(reason) => fail(400, reason),
        };
    }
    if let Some(rest) = path.strip_prefix("/keys/") {
        return keys_route(&method, rest, query, body);
    }
    if let Some(secret) = path.strip_prefix("/secret/") {
        return match secrets::get(secret) {
            Ok(value) => (200, value),
            Err(secrets::Error::Invalid(why)) => fail(400, why),
            Err(secrets::Error::Denied(why)) => fail(403, why),
            Err(secrets::Error::NotFound(why)) => fail(404, why),
            Err(secrets::Error::Unavailable(why)) => fail(503, why),
        };
    }
    fail(404, "routes: /kv, /attest, /extension/N, /keys/NAME, /secret/PATH")
}

impl Guest for Notes {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let reply = route(&request);
        drop(request);
        respond(out, reply);
    }
}
