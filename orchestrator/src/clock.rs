//! The wall clock, read in one place: the pure machine gets `now` as an input.

use sagas::UnixMillis;

/// Now, in milliseconds since the Unix epoch.
#[must_use]
pub fn now() -> UnixMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixMillis(ms)
}

/// A `UnixMillis` as the signed milliseconds the database stores.
#[must_use]
pub fn to_db(t: UnixMillis) -> i64 {
    i64::try_from(t.0).unwrap_or(i64::MAX)
}
