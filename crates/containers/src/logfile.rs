//! A bounded log of a service's output: the current file and one earlier segment
//! (`<log>.previous.log`), each at most half of the bound. Written by `enclave-os log-driver`
//! for containers (containerd's shim hands it the pipes) and by the runtime itself for
//! processes, so that a service printing without end cannot fill the disk the sealed store is
//! on, and `log_tail` reads either the same way.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only log of at most two segments.
pub struct SegmentedLog {
    path: PathBuf,
    file: File,
    written: u64,
    segment: u64,
}

impl SegmentedLog {
    /// Open (or create) `path`, appending, with segments of `segment` bytes (at least 4 KiB).
    pub fn open(path: &Path, segment: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file,
            written,
            segment: segment.max(4096),
        })
    }

    /// Append `data`, starting a new segment (the old one kept as the previous) when this one
    /// is full.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.written + data.len() as u64 > self.segment && self.written > 0 {
            std::fs::rename(&self.path, self.path.with_extension("previous.log"))?;
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
            self.written = 0;
        }
        // A single chunk larger than a segment keeps only its end.
        let data = &data[data.len().saturating_sub(self.segment as usize)..];
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_log_keeps_two_segments_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.log");
        let mut log = SegmentedLog::open(&path, 4096).unwrap();
        for i in 0..100u32 {
            log.write(format!("line {i:04} {}\n", "x".repeat(100)).as_bytes())
                .unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let previous = std::fs::metadata(dir.path().join("w.previous.log"))
            .unwrap()
            .len();
        assert!(current <= 4096 && previous <= 4096, "{current} {previous}");
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("line 0099")
        );
    }
}
