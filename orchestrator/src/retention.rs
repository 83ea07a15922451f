//! Retention (`skald serve --retention 30d`): sagas that ended longer ago
//! leave the hot tables.
//!
//! Every [`LOOK_EVERY`], each instance takes the ended sagas of the
//! partitions it holds, [`BATCH_SAGAS`] at a time, oldest first: it writes
//! them as compressed JSON lines into a folder per day they ended, one new
//! file per batch (`<archive dir>/<YYYY-MM-DD>/<uuid>.jsonl.gz`: written to
//! a temporary name, synced, renamed, the folder synced), and only then
//! deletes them from the hot tables in one short transaction that leaves a
//! marker saying where each went (the API answers `gone` for them). No file
//! is ever appended to, so a crash or a full disk leaves no torn archive,
//! and instances sharing a directory never write the same file. A crash
//! between the two steps archives a batch twice, never loses one: readers
//! dedupe by `saga_id`. Batches are small and apart, so the engine's own
//! writes are never held up for long.

use crate::engine::Driver;
use crate::store::StoreError;
use crate::store::archive::EndedSaga;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often retention looks for sagas to archive.
pub const LOOK_EVERY: Duration = Duration::from_secs(60);
/// Sagas archived and deleted in one batch.
pub const BATCH_SAGAS: u64 = 200;
/// The pause between two batches, so the engine's writes go first.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);
/// Shortest retention accepted: sagas are kept at least this long.
pub const RETENTION_MIN: Duration = Duration::from_secs(60);

/// What retention keeps and where it archives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Sagas that ended longer ago than this are archived.
    pub keep: Duration,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the archive {file}: {source}")]
    Write {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

/// Archive until `shutdown`.
pub async fn run(driver: Driver, retention: Retention, shutdown: CancellationToken) {
    loop {
        match pass(&driver, &retention, &shutdown).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(sagas = n, dir = %retention.dir.display(), "archived ended sagas")
            }
            Err(e) => {
                driver.metrics().archive_failed();
                tracing::warn!(error = %e, "archiving failed; will try again");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// One pass: archive every saga of the partitions held that ended before
/// the cutoff; how many were archived.
///
/// # Errors
/// When the store or the archive directory fails; what was archived stays so.
pub async fn pass(
    driver: &Driver,
    retention: &Retention,
    shutdown: &CancellationToken,
) -> Result<u64, ArchiveError> {
    let store = driver.store();
    let mut archived = 0;
    while !shutdown.is_cancelled() {
        let now = store.clock().now_db();
        let keep = i64::try_from(retention.keep.as_millis()).unwrap_or(i64::MAX);
        let partitions = driver.ownership().owned();
        let batch = store.ended_before(now.saturating_sub(keep), &partitions, BATCH_SAGAS).await?;
        if batch.is_empty() {
            break;
        }
        let files = write_batch(&retention.dir, &batch).await?;
        let placed: Vec<(&EndedSaga, String)> = batch.iter().zip(files).collect();
        let removed = store.purge(&placed, now).await?;
        driver.metrics().sagas_archived(removed);
        archived += removed;
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    Ok(archived)
}

/// The day folder a saga that ended at `ended_ms` goes to: `YYYY-MM-DD` (UTC).
#[must_use]
pub fn day_of(ended_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ended_ms).unwrap_or(0));
    let text = humantime::format_rfc3339_seconds(at).to_string();
    text.get(..10).unwrap_or("unknown").to_owned()
}

/// One saga as a line of the archive: its row, tags and history.
#[must_use]
pub fn line(s: &EndedSaga) -> Value {
    let r = &s.row;
    let events: Vec<Value> = s
        .events
        .iter()
        .map(|e| {
            let event = serde_json::from_str(&e.event).unwrap_or(Value::String(e.event.clone()));
            json!({ "seq": e.seq, "recorded_at_ms": e.recorded_at_ms, "event": event })
        })
        .collect();
    let tags: BTreeMap<&str, &str> = s.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    json!({
        "saga_id": r.saga_id,
        "saga_type": r.saga_type,
        "definition_hash": r.definition_hash,
        "status": r.status,
        "idempotency_key": r.idempotency_key,
        "partition": r.partition,
        "created_at_ms": r.created_at_ms,
        "ended_at_ms": r.updated_at_ms,
        "tags": tags,
        "events": events,
    })
}

/// Write the batch into its day folders (one new file per day it spans)
/// and make them durable; the file each saga went to (relative to `dir`),
/// in batch order.
async fn write_batch(dir: &Path, batch: &[EndedSaga]) -> Result<Vec<String>, ArchiveError> {
    let mut by_day: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut days = Vec::with_capacity(batch.len());
    for s in batch {
        let day = day_of(s.row.updated_at_ms);
        let lines = by_day.entry(day.clone()).or_default();
        serde_json::to_writer(&mut *lines, &line(s)).unwrap_or_default();
        lines.push(b'\n');
        days.push(day);
    }
    let dir = dir.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        let mut written = BTreeMap::new();
        for (day, lines) in by_day {
            let file = write_file(&dir, &day, &lines)?;
            written.insert(day, file);
        }
        Ok::<_, ArchiveError>(written)
    })
    .await
    .map_err(|e| ArchiveError::Write {
        file: "(archive)".to_owned(),
        source: std::io::Error::other(e.to_string()),
    })??;
    Ok(days.iter().map(|d| written.get(d).cloned().unwrap_or_default()).collect())
}

/// Write `lines` as a new compressed file in `dir/day/`, whole or not at
/// all: to a temporary name, synced, renamed, the folder synced. Its name
/// relative to `dir`.
///
/// # Errors
/// As [`ArchiveError::Write`], naming the file.
pub fn write_file(dir: &Path, day: &str, lines: &[u8]) -> Result<String, ArchiveError> {
    let folder = dir.join(day);
    let name = format!("{}.jsonl.gz", uuid::Uuid::now_v7());
    let failed = |file: &Path| {
        let file = file.display().to_string();
        move |source| ArchiveError::Write { file, source }
    };
    let fresh = !folder.exists();
    std::fs::create_dir_all(&folder).map_err(failed(&folder))?;
    if fresh {
        sync_dir(dir).map_err(failed(dir))?;
    }
    let temporary = folder.join(format!(".{name}.tmp"));
    let written = (|| {
        let file = std::fs::File::create(&temporary)?;
        let mut gz = GzEncoder::new(file, Compression::default());
        gz.write_all(lines)?;
        gz.finish()?.sync_all()?;
        std::fs::rename(&temporary, folder.join(&name))?;
        sync_dir(&folder)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(failed(&folder.join(&name))(e));
    }
    Ok(format!("{day}/{name}"))
}

/// Make a folder's entries (a file created or renamed in it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_goes_to_the_folder_of_the_day_it_ended() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(1_796_289_583_019), "2026-12-03");
    }

    #[test]
    fn each_write_is_a_new_whole_file() {
        let dir = std::env::temp_dir().join(format!("skald-archive-{}", uuid::Uuid::new_v4()));
        let a = write_file(&dir, "2026-12-03", b"{\"a\":1}\n").unwrap();
        let b = write_file(&dir, "2026-12-03", b"{\"a\":2}\n").unwrap();
        assert_ne!(a, b);
        let mut texts = Vec::new();
        for f in [&a, &b] {
            let file = std::fs::File::open(dir.join(f)).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(file), &mut text)
                .unwrap();
            texts.push(text);
        }
        assert_eq!(texts, ["{\"a\":1}\n", "{\"a\":2}\n"]);
        let names: Vec<_> = std::fs::read_dir(dir.join("2026-12-03")).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file is left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
