//! `enclave-os log-driver`: containerd's shim starts it for each container (a `binary://` log
//! URI, `enclave_containers::LogSink::Driver`), with the container's stdout and stderr on
//! descriptors 3 and 4 and a readiness pipe on 5. It keeps at most `max` bytes of output:
//! the current file and one earlier segment (`<log>.previous.log`), each at most half of it.
//! A container printing without end therefore cannot fill the disk the sealed store is on.
//!
//! Not a command for people: containerd passes its arguments as `key value` pairs from the
//! URI's query, in no fixed order, and it is recognised by the `log-driver` key together with
//! containerd's `CONTAINER_ID` variable, before the command line is parsed as usual.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use enclave_containers::SegmentedLog as Segments;

/// Whether this process was started as containerd's log driver.
pub(crate) fn invoked() -> bool {
    std::env::var_os("CONTAINER_ID").is_some()
        && std::env::args().skip(1).any(|a| a == "log-driver")
}

/// Copy descriptor `fd` (by its /proc path: no unsafe code) into `out` until it ends.
fn pump(fd: u32, out: Arc<Mutex<Segments>>) -> std::io::Result<()> {
    let mut input = File::open(format!("/proc/self/fd/{fd}"))?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(&buf[..n])?;
    }
}

pub(crate) fn run() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |key: &str| {
        args.chunks(2)
            .find(|p| p.first().is_some_and(|k| k == key))
            .and_then(|p| p.get(1).cloned())
    };
    let (Some(path), Some(max)) = (
        value("path"),
        value("max").and_then(|m| m.parse::<u64>().ok()),
    ) else {
        eprintln!(
            "enclave-os log-driver: needs `path <file>` and `max <bytes>` (containerd passes them)"
        );
        return ExitCode::from(crate::EXIT_USAGE);
    };
    let out = match Segments::open(Path::new(&path), (max / 2).max(4096)) {
        Ok(s) => Arc::new(Mutex::new(s)),
        Err(e) => {
            eprintln!("enclave-os log-driver: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Tell the shim the driver is ready: it waits for a byte (or the end) on descriptor 5.
    if let Err(e) = OpenOptions::new()
        .write(true)
        .open("/proc/self/fd/5")
        .and_then(|mut ready| ready.write_all(b"1"))
    {
        eprintln!("enclave-os log-driver: signalling readiness: {e}");
    }
    let stderr = {
        let out = out.clone();
        std::thread::spawn(move || pump(4, out))
    };
    let stdout = pump(3, out);
    let stderr = stderr
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the stderr pump panicked")));
    match stdout.and(stderr) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("enclave-os log-driver: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}
