//! Asciicast v2 recordings of web terminals: a header line, then one JSON array per event,
//! `[seconds, "o", text]` for output, `[seconds, "r", "COLSxROWS"]` for resizes and, with
//! `--record-input`, `[seconds, "i", text]` for keystrokes. Files are created `0600`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio::io::{AsyncWriteExt, BufWriter};

/// Size written in the header when output comes before the browser's first resize.
const DEFAULT_SIZE: (u16, u16) = (80, 24);

/// One terminal session being written to disk.
pub struct Recorder {
    file: BufWriter<tokio::fs::File>,
    path: PathBuf,
    started: Instant,
    started_unix: i64,
    title: String,
    record_input: bool,
    header_written: bool,
    out_carry: Vec<u8>,
    in_carry: Vec<u8>,
    bytes: u64,
}

impl Recorder {
    /// Creates `<dir>/<file_name>` (never overwriting) for a terminal starting now.
    pub async fn create(
        dir: &Path,
        file_name: &str,
        title: String,
        record_input: bool,
        started_unix: i64,
    ) -> std::io::Result<Recorder> {
        tokio::fs::create_dir_all(dir).await?;
        let path = dir.join(file_name);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await?;
        Ok(Recorder {
            file: BufWriter::new(file),
            path,
            started: Instant::now(),
            started_unix,
            title,
            record_input,
            header_written: false,
            out_carry: Vec::new(),
            in_carry: Vec::new(),
            bytes: 0,
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn header(&mut self, size: (u16, u16)) -> std::io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        self.header_written = true;
        let header = serde_json::json!({
            "version": 2,
            "width": size.0,
            "height": size.1,
            "timestamp": self.started_unix / 1000,
            "title": self.title,
            "env": {"TERM": "xterm-256color"},
        });
        self.line(header.to_string()).await
    }

    async fn line(&mut self, mut line: String) -> std::io::Result<()> {
        line.push('\n');
        self.bytes += line.len() as u64;
        self.file.write_all(line.as_bytes()).await
    }

    async fn event(&mut self, kind: &str, text: &str) -> std::io::Result<()> {
        self.header(DEFAULT_SIZE).await?;
        let t = (self.started.elapsed().as_micros() as f64) / 1e6;
        let line = serde_json::to_string(&(t, kind, text)).unwrap_or_default();
        self.line(line).await
    }

    /// Output of the shell.
    pub async fn output(&mut self, data: &[u8]) -> std::io::Result<()> {
        let text = take_utf8(&mut self.out_carry, data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("o", &text).await
    }

    /// Keystrokes of the operator; recorded only with `--record-input`.
    pub async fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        if !self.record_input {
            return Ok(());
        }
        let text = take_utf8(&mut self.in_carry, data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("i", &text).await
    }

    /// A window size; the first one before any output sets the header's size.
    pub async fn resize(&mut self, cols: u16, rows: u16) -> std::io::Result<()> {
        self.header((cols, rows)).await?;
        self.event("r", &format!("{cols}x{rows}")).await
    }

    /// Pushes buffered events to the file.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().await
    }

    /// Writes what is left and returns the file's size.
    pub async fn finish(mut self) -> std::io::Result<u64> {
        self.header(DEFAULT_SIZE).await?;
        if !self.out_carry.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.out_carry)).into_owned();
            self.event("o", &rest).await?;
        }
        self.file.flush().await?;
        self.file.get_ref().sync_data().await?;
        Ok(self.bytes)
    }
}

/// Appends `data` to `carry` and takes the longest decodable text; an incomplete character at
/// the end waits in `carry` for the next chunk, invalid bytes become U+FFFD.
pub(crate) fn take_utf8(carry: &mut Vec<u8>, data: &[u8]) -> String {
    carry.extend_from_slice(data);
    let mut out = String::new();
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    None => {
                        rest = after;
                        break;
                    }
                    Some(len) => {
                        out.push('\u{fffd}');
                        rest = after.get(len..).unwrap_or_default();
                    }
                }
            }
        }
    }
    let kept = rest.to_vec();
    *carry = kept;
    out
}
