//! psp-sim's books on disk, so a restarted simulator is the same provider.
//!
//! Every `POST` that reaches the books is appended to the journal (one JSON
//! line: key, path, body) and synced before it is applied. At start the
//! journal is replayed in order through the same code, and the books come
//! back as they were: object ids are sequence numbers, and every answer that
//! was remembered for a key is remembered again. Only fault draws may differ
//! after a restart (the calls that failed before reaching the books are not
//! journaled, so a key's call count restarts lower).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use tracing::warn;

/// Longest journal line read back (a request body is at most 16 KiB).
const LINE_BYTES_MAX: usize = 64 * 1024;

/// One request that reached the books.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub key: Option<String>,
    pub path: String,
    pub request: Value,
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Open (or create) the journal at `path`: it, and the entries already
    /// in it. A last line cut short by a crash is dropped (its request was
    /// never applied or answered).
    ///
    /// # Errors
    /// When the file cannot be opened or read, or a line before the last is
    /// not an entry (the file is not a journal).
    pub fn open(path: &Path) -> std::io::Result<(Self, Vec<Entry>)> {
        let file = OpenOptions::new().create(true).read(true).append(true).open(path)?;
        let mut entries = Vec::new();
        let mut lines = BufReader::new(&file).lines().peekable();
        let mut number = 0;
        while let Some(line) = lines.next() {
            let line = line?;
            number += 1;
            let parsed = (line.len() <= LINE_BYTES_MAX)
                .then(|| serde_json::from_str::<Entry>(&line).ok())
                .flatten();
            match parsed {
                Some(entry) => entries.push(entry),
                None if lines.peek().is_none() => {
                    warn!(path = %path.display(), line = number, "dropping a journal line cut short");
                }
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: line {number} is not a journal entry", path.display()),
                    ));
                }
            }
        }
        Ok((Self { file }, entries))
    }

    /// Append `entry` and sync it to disk.
    ///
    /// # Errors
    /// When the write or the sync fails (the request must then not be applied).
    pub fn append(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn entries_come_back_and_a_torn_last_line_is_dropped() {
        let dir = std::env::temp_dir().join(format!("psp-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("books.jsonl");
        let _ = std::fs::remove_file(&path);
        let entry =
            Entry { key: Some("k1".into()), path: "/v1/charges".into(), request: json!({"a": 1}) };
        {
            let (mut journal, entries) = Journal::open(&path).unwrap();
            assert!(entries.is_empty());
            journal.append(&entry).unwrap();
            journal.file.write_all(b"{\"key\":\"k2\",\"pa").unwrap();
        }
        let (_, entries) = Journal::open(&path).unwrap();
        assert_eq!(entries, [entry]);
        std::fs::write(&path, "not json\n{}\n").unwrap();
        assert!(Journal::open(&path).is_err(), "garbage before the last line is refused");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
