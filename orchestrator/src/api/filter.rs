//! The saga filter as operators write it (query string or bulk body), checked
//! and turned into the store's [`ListFilter`].

use super::error::ApiError;
use crate::store::{ListFilter, StuckClass};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Statuses a filter may name.
pub const STATUSES: [&str; 6] =
    ["running", "compensating", "parked", "completed", "compensated", "failed"];
/// Longest age a filter accepts (ten years).
const AGE_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest text a filter field accepts.
const FIELD_LEN_MAX: usize = 256;

/// Which sagas: every field narrows; all are optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterSpec {
    /// Saga type.
    #[serde(rename = "type")]
    pub saga_type: Option<String>,
    /// Comma-separated statuses: running, compensating, parked, completed, compensated, failed.
    pub status: Option<String>,
    /// The step the saga is at.
    pub step: Option<String>,
    /// Started longer ago than this (`30s`, `10m`, `2h`, `3d`).
    pub older_than: Option<String>,
    /// Started more recently than this.
    pub newer_than: Option<String>,
    /// Ended (completed, compensated or failed) within this long (`1h`, `30m`).
    pub ended_within: Option<String>,
    /// A stuck class (overdue, retrying, parked, past_deadline, no_owner, waiting) or `any`.
    pub stuck: Option<String>,
    /// Text the idempotency key contains.
    pub key: Option<String>,
    /// Business tags the saga has, all of them (`{"customer": "42"}`; in a
    /// query string, `tag.customer=42`).
    #[serde(default)]
    #[param(ignore)]
    pub tags: BTreeMap<String, String>,
}

/// Most tags one filter names.
pub const TAG_FILTERS_MAX: usize = sagas::definition::limits::TAGS_MAX;

impl FilterSpec {
    /// The filter a query string gives: the named fields, and each
    /// `tag.<name>=<value>` as a tag to match; the parameters named in
    /// `others` (paging) are handed back apart.
    pub fn from_query(
        raw: Option<&str>,
        others: &[&str],
    ) -> Result<(Self, BTreeMap<String, String>), ApiError> {
        let pairs: Vec<(String, String)> = parse_query(raw.unwrap_or_default())?;
        let mut fields = Vec::new();
        let mut tags = BTreeMap::new();
        let mut rest = BTreeMap::new();
        for (key, value) in pairs {
            if let Some(name) = key.strip_prefix("tag.") {
                tags.insert(name.to_owned(), value);
            } else if others.contains(&key.as_str()) {
                rest.insert(key, value);
            } else {
                fields.push((key, value));
            }
        }
        // Every named field is text: the pairs are the fields as they are.
        let fields: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        let mut spec: Self = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| ApiError::invalid(format!("the query string is not valid: {e}")))?;
        spec.tags = tags;
        Ok((spec, rest))
    }
}

/// Decode a query string into `T`, answering a bad one with [`ApiError`].
pub fn parse_query<T: serde::de::DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    let uri: axum::http::Uri = format!("/?{raw}")
        .parse()
        .map_err(|_| ApiError::invalid("the query string is not valid"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::invalid(format!("the query string is not valid: {}", e.body_text())))
}

fn text(field: &str, v: Option<&String>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        // PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
        Some(s) if s.contains('\0') => {
            Err(ApiError::invalid(format!("`{field}` must not contain NUL characters")))
        }
        Some(s) if s.len() > FIELD_LEN_MAX => {
            Err(ApiError::invalid(format!("`{field}` is longer than {FIELD_LEN_MAX} bytes")))
        }
        Some(s) => Ok(Some(s.clone())),
    }
}

fn age(field: &str, v: Option<&String>) -> Result<Option<i64>, ApiError> {
    let Some(s) = text(field, v)? else { return Ok(None) };
    let d = humantime::parse_duration(&s).map_err(|e| {
        ApiError::invalid(format!("`{field}` = `{s}` is not a duration like 30s, 10m, 2h: {e}"))
    })?;
    if d > AGE_MAX {
        return Err(ApiError::invalid(format!("`{field}` is longer than ten years")));
    }
    Ok(Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

impl FilterSpec {
    /// Check every field; the error lists what to fix.
    pub fn to_filter(&self) -> Result<ListFilter, ApiError> {
        let mut f = ListFilter {
            saga_type: text("type", self.saga_type.as_ref())?,
            step: text("step", self.step.as_ref())?,
            key_contains: text("key", self.key.as_ref())?,
            older_than_ms: age("older_than", self.older_than.as_ref())?,
            newer_than_ms: age("newer_than", self.newer_than.as_ref())?,
            ended_within_ms: age("ended_within", self.ended_within.as_ref())?,
            ..ListFilter::default()
        };
        if let Some(list) = text("status", self.status.as_ref())? {
            for s in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !STATUSES.contains(&s) {
                    return Err(ApiError::invalid(format!(
                        "unknown status `{s}`; use one of {}",
                        STATUSES.join(", ")
                    )));
                }
                f.status.push(s.to_owned());
            }
        }
        if self.tags.len() > TAG_FILTERS_MAX {
            return Err(ApiError::invalid(format!(
                "a filter names at most {TAG_FILTERS_MAX} tags"
            )));
        }
        for (name, value) in &self.tags {
            if name.len() > sagas::definition::limits::TAG_NAME_LEN_MAX
                || !sagas::protocol::is_subject_token(name)
            {
                return Err(ApiError::invalid(format!(
                    "`tag.{name}` does not name a tag (letters, digits, `_` and `-`)"
                )));
            }
            let Some(value) = text(&format!("tag.{name}"), Some(value))? else {
                // An empty value (an unset variable, say) must not widen the filter.
                return Err(ApiError::invalid(format!("`tag.{name}` has no value")));
            };
            f.tags.insert(name.clone(), value);
        }
        match text("stuck", self.stuck.as_ref())?.as_deref() {
            None => {}
            Some("any") => f.stuck_any = true,
            Some(c) => {
                f.stuck = Some(StuckClass::parse(c).ok_or_else(|| {
                    let known: Vec<&str> = StuckClass::ALL.iter().map(|c| c.as_str()).collect();
                    ApiError::invalid(format!(
                        "unknown stuck class `{c}`; use `any` or one of {}",
                        known.join(", ")
                    ))
                })?);
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        let spec = FilterSpec {
            status: Some("running, parked".into()),
            older_than: Some("10m".into()),
            stuck: Some("retrying".into()),
            ..FilterSpec::default()
        };
        let f = spec.to_filter().unwrap();
        assert_eq!(f.status, vec!["running", "parked"]);
        assert_eq!(f.older_than_ms, Some(600_000));
        assert_eq!(f.stuck, Some(StuckClass::Retrying));
        for bad in [
            FilterSpec { status: Some("done".into()), ..FilterSpec::default() },
            FilterSpec { older_than: Some("soon".into()), ..FilterSpec::default() },
            FilterSpec { stuck: Some("wedged".into()), ..FilterSpec::default() },
            FilterSpec { key: Some("k".repeat(300)), ..FilterSpec::default() },
        ] {
            assert!(matches!(bad.to_filter(), Err(ApiError::Invalid { .. })), "{bad:?}");
        }
    }
}
