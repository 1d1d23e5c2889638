//! Each sandbox's log on disk: its pid 1's stdout and stderr and the daemon's own lines
//! about it (start, exit, restart, runc errors), at `$XDG_STATE_HOME/sandboxd/logs/NAME.log`,
//! kept whether or not a journal runs, and readable after the sandbox is gone.
//!
//! Bounded: once `NAME.log` reaches half the cap it becomes `NAME.log.1` (replacing the
//! older half), so the two files never hold more than the cap together.
//!
//! One record per line, `SEQ USEC STREAM TEXT`: SEQ counts up across rotations and daemon
//! restarts and is a reader's cursor (`sandboxctl logs -f`), USEC is µs since the epoch,
//! STREAM is `out`, `err` or `sandboxd`. Text longer than [`MAX_TEXT`] is split; NUL and
//! bytes that are not UTF-8 become U+FFFD, since the bus carries strings.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::supervisor::now_us;

/// The longest text of one record; a longer line becomes several records.
pub const MAX_TEXT: usize = 8192;

/// The default cap of one sandbox's log on disk (both files).
pub const DEFAULT_CAP: u64 = 8 << 20;

/// The smallest cap accepted: a few records must fit in each half.
pub const MIN_CAP: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
    /// The daemon's own line about the sandbox.
    Daemon,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::Err => "err",
            Self::Daemon => "sandboxd",
        }
    }
}

/// One line of a sandbox's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub usec: u64,
    pub stream: String,
    pub text: String,
}

impl Record {
    fn parse(line: &str) -> Option<Self> {
        let mut parts = line.splitn(4, ' ');
        let seq = parts.next()?.parse().ok()?;
        let usec = parts.next()?.parse().ok()?;
        let stream = parts.next()?.to_string();
        let text = parts.next().unwrap_or("").to_string();
        Some(Self {
            seq,
            usec,
            stream,
            text,
        })
    }
}

struct Writer {
    file: File,
    size: u64,
    next_seq: u64,
}

/// The logs of every sandbox. Cheap to clone; clones share the open files.
#[derive(Clone)]
pub struct Logbook {
    dir: PathBuf,
    cap: u64,
    open: Arc<Mutex<HashMap<String, Writer>>>,
}

impl Logbook {
    /// Logs under `dir` (made on first use), each at most `cap` bytes on disk.
    pub fn new(dir: PathBuf, cap: u64) -> Self {
        Self {
            dir,
            cap: cap.max(MIN_CAP),
            open: Arc::default(),
        }
    }

    /// `$XDG_STATE_HOME/sandboxd/logs`.
    pub fn default_dir() -> PathBuf {
        crate::paths::state_home().join("sandboxd/logs")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn current(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn older(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log.1"))
    }

    /// Appends `bytes` as one record per line (split at [`MAX_TEXT`]). `name` must be a
    /// valid sandbox name (the caller has checked it). Failures to write are logged once
    /// per call and otherwise ignored: a full disk must not stop a sandbox.
    pub fn append(&self, name: &str, stream: Stream, bytes: &[u8]) {
        if let Err(e) = self.try_append(name, stream, bytes) {
            tracing::warn!(SANDBOX = name, "cannot write the sandbox's log: {e}");
        }
    }

    /// The daemon's own line about sandbox `name`.
    pub fn note(&self, name: &str, text: &str) {
        self.append(name, Stream::Daemon, text.as_bytes());
    }

    fn try_append(&self, name: &str, stream: Stream, bytes: &[u8]) -> std::io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !open.contains_key(name) {
            let w = self.open_writer(name)?;
            open.insert(name.to_string(), w);
        }
        let Some(w) = open.get_mut(name) else {
            return Ok(());
        };
        let usec = now_us();
        let mut out = Vec::with_capacity(bytes.len() + 64);
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in bytes.split(|b| *b == b'\n') {
            for piece in chunks(line) {
                out.clear();
                write!(out, "{} {usec} {} ", w.next_seq, stream.as_str())?;
                out.extend_from_slice(clean(piece).as_bytes());
                out.push(b'\n');
                if w.size > 0 && w.size + out.len() as u64 > self.cap / 2 {
                    w.file.flush()?;
                    std::fs::rename(self.current(name), self.older(name))?;
                    w.file = self.create(name)?;
                    w.size = 0;
                }
                w.file.write_all(&out)?;
                w.size += out.len() as u64;
                w.next_seq += 1;
            }
        }
        Ok(())
    }

    fn create(&self, name: &str) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.current(name))
    }

    fn open_writer(&self, name: &str) -> std::io::Result<Writer> {
        std::fs::create_dir_all(&self.dir)?;
        let file = self.create(name)?;
        let size = file.metadata()?.len();
        let last = last_seq(&self.current(name)).or_else(|| last_seq(&self.older(name)));
        Ok(Writer {
            file,
            size,
            next_seq: last.map_or(1, |s| s + 1),
        })
    }

    /// Whether sandbox `name` has a log at all.
    pub fn exists(&self, name: &str) -> bool {
        self.current(name).exists() || self.older(name).exists()
    }

    /// Records of `name` with a sequence number above `after` and a time at or after
    /// `since` (µs), oldest first; only the last `max` of them when `max` > 0.
    pub fn read(
        &self,
        name: &str,
        after: u64,
        since: u64,
        max: usize,
    ) -> std::io::Result<Vec<Record>> {
        // Reading under the lock keeps a rotation from happening between the two files.
        let _open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = Vec::new();
        for path in [self.older(name), self.current(name)] {
            let text = match std::fs::read(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            records.extend(
                String::from_utf8_lossy(&text)
                    .lines()
                    .filter_map(Record::parse)
                    .filter(|r| r.seq > after && r.usec >= since),
            );
        }
        if max > 0 && records.len() > max {
            records.drain(..records.len() - max);
        }
        Ok(records)
    }

    /// Closes `name`'s file (its records stay on disk).
    pub fn close(&self, name: &str) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// Splits at most [`MAX_TEXT`] bytes per piece; an empty line stays one empty piece.
fn chunks(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = line.len().div_ceil(MAX_TEXT).max(1);
    (0..n).map(move |i| &line[i * MAX_TEXT..((i + 1) * MAX_TEXT).min(line.len())])
}

/// The text of one record: no NUL (D-Bus strings cannot hold it), no carriage return.
fn clean(bytes: &[u8]) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    String::from_utf8_lossy(bytes).replace(['\0', '\r'], "\u{fffd}")
}

/// The sequence number of the last record in `path`, from its last 16 KiB.
fn last_seq(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(2 * MAX_TEXT as u64)))
        .ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find_map(Record::parse)
        .map(|r| r.seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(cap: u64) -> (tempfile::TempDir, Logbook) {
        let dir = tempfile::tempdir().unwrap();
        let book = Logbook::new(dir.path().join("logs"), cap);
        (dir, book)
    }

    #[test]
    fn records_come_back_in_order_with_their_streams() {
        let (_d, book) = book(DEFAULT_CAP);
        book.append("a", Stream::Out, b"one\ntwo\n");
        book.append("a", Stream::Err, b"three");
        book.note("a", "exited with status 1");
        let all = book.read("a", 0, 0, 0).unwrap();
        let texts: Vec<_> = all
            .iter()
            .map(|r| (r.stream.as_str(), r.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                ("out", "one"),
                ("out", "two"),
                ("err", "three"),
                ("sandboxd", "exited with status 1")
            ]
        );
        assert_eq!(book.read("a", 0, 0, 2).unwrap()[0].text, "three");
        let after = all[2].seq;
        assert_eq!(book.read("a", after, 0, 0).unwrap().len(), 1);
    }

    #[test]
    fn the_cap_holds_and_sequence_numbers_survive_rotation_and_reopening() {
        let cap = MIN_CAP;
        let (_d, book) = book(cap);
        let line = vec![b'x'; 1000];
        for _ in 0..500 {
            book.append("big", Stream::Out, &line);
        }
        let on_disk: u64 = ["big.log", "big.log.1"]
            .iter()
            .map(|f| std::fs::metadata(book.dir().join(f)).unwrap().len())
            .sum();
        assert!(on_disk <= cap, "{on_disk} > {cap}");
        let last = book.read("big", 0, 0, 1).unwrap()[0].seq;
        assert_eq!(last, 500);
        // A new daemon continues the numbering.
        let again = Logbook::new(book.dir().into(), cap);
        again.note("big", "restarted");
        assert_eq!(again.read("big", 0, 0, 1).unwrap()[0].seq, 501);
    }

    #[test]
    fn long_lines_nul_and_invalid_utf8_are_made_safe() {
        let (_d, book) = book(DEFAULT_CAP);
        let mut bytes = vec![b'y'; MAX_TEXT * 2 + 5];
        bytes.extend_from_slice(b"\nbad\0\xff\xfe end");
        book.append("s", Stream::Out, &bytes);
        let all = book.read("s", 0, 0, 0).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].text.len(), MAX_TEXT);
        assert_eq!(all[2].text.len(), 5);
        assert!(!all[3].text.contains('\0'));
        assert!(all[3].text.starts_with("bad\u{fffd}"), "{:?}", all[3].text);
    }

    #[test]
    fn no_log_reads_as_empty() {
        let (_d, book) = book(DEFAULT_CAP);
        assert!(!book.exists("none"));
        assert!(book.read("none", 0, 0, 0).unwrap().is_empty());
    }
}
