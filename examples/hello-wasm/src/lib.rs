//! A wasi:http component, unchanged from what `wasmtime serve` runs.
//!
//! - `GET /` answers a greeting, with `GREETING` from the environment when set;
//! - `GET /echo` returns the request body;
//! - `GET /loop` never returns (to show the runtime's deadline);
//! - `GET /hog` asks for 1 GiB of memory (to show the runtime's memory cap).

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
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

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        match path.as_str() {
            "/echo" => {
                let body = read_body(request);
                respond(out, 200, &body);
            }
            "/loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
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
