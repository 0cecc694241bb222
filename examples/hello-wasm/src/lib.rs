//! A wasi:http component, unchanged from what `wasmtime serve` runs.
//!
//! - `GET /` answers a greeting, with `GREETING` from the environment when set;
//! - `GET /echo` returns the request body;
//! - `GET /headers` returns the request's headers, one `name: value` line each, as the
//!   component sees them (the runtime's `X-Enclave-OS-Client-*` caller headers among them);
//! - `GET /loop` never returns (to show the runtime's deadline);
//! - `GET /hog` asks for 1 GiB of memory (to show the runtime's memory cap);
//! - `GET /fetch?url=https://HOST[:PORT]/PATH` makes an outgoing request and answers its status
//!   and body, or 502 with the runtime's reason (to show pinned HTTPS egress).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};

struct Hello;

wasi::http::proxy::export!(Hello);

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
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

fn read_body(request: IncomingRequest) -> Vec<u8> {
    match request.consume() {
        Ok(body) => read_all(body),
        Err(()) => Vec::new(),
    }
}

fn read_all(body: IncomingBody) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(stream) = body.stream() {
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            out.extend_from_slice(&chunk);
        }
        drop(stream);
    }
    let _ = IncomingBody::finish(body);
    out
}

/// GET `url` (`scheme://authority/path`); the status and body, or why it failed.
fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}' is not scheme://host/path"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        other => Scheme::Other(other.to_string()),
    };
    request
        .set_scheme(Some(&scheme))
        .and_then(|_| request.set_authority(Some(authority)))
        .and_then(|_| request.set_path_with_query(Some(path)))
        .map_err(|()| format!("'{url}' is not a valid request"))?;
    let pending = wasi::http::outgoing_handler::handle(request, None).map_err(describe)?;
    pending.subscribe().block();
    let response = pending
        .get()
        .ok_or("no response")?
        .map_err(|()| "the response was already taken".to_string())?
        .map_err(describe)?;
    let status = response.status();
    let body = response
        .consume()
        .map(read_all)
        .map_err(|()| "the response body was already taken".to_string())?;
    Ok((status, body))
}

fn describe(code: ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(reason)) => reason,
        other => format!("{other:?}"),
    }
}

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/echo" => {
                let body = read_body(request);
                respond(out, 200, &body);
            }
            "/headers" => {
                let mut text = Vec::new();
                for (name, value) in request.headers().entries() {
                    text.extend_from_slice(name.as_bytes());
                    text.extend_from_slice(b": ");
                    text.extend_from_slice(&value);
                    text.push(b'\n');
                }
                respond(out, 200, &text);
            }
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            p if p.starts_with("/fetch?url=") => match fetch(&p["/fetch?url=".len()..]) {
                Ok((status, body)) => {
                    let mut text = format!("upstream answered {status}\n").into_bytes();
                    text.extend_from_slice(&body);
                    respond(out, 200, &text)
                }
                Err(reason) => respond(out, 502, format!("egress failed: {reason}\n").as_bytes()),
            },
            "/hog" => {
                let v = vec![1u8; 1 << 30];
                let sum: u64 = v.iter().step_by(4096).map(|b| u64::from(*b)).sum();
                respond(out, 200, format!("touched {sum} pages\n").as_bytes());
            }
            _ => {
                let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".into());
                respond(out, 200, format!("{greeting} from a WebAssembly component\n").as_bytes());
            }
        }
    }
}
