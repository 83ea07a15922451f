//! What the driver writes beside the events: the projection row of a state,
//! and the hash that tells a repeated start's input from another.

use crate::clock;
use crate::store::Projection;
use sagas::machine::{Decision, SagaState};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The projection of `state` with the identity columns of `identity`.
pub(crate) fn with_identity(identity: &Projection, state: &SagaState) -> Projection {
    Projection {
        saga_type: identity.saga_type.clone(),
        definition_hash: identity.definition_hash.clone(),
        partition: identity.partition,
        idempotency_key: identity.idempotency_key.clone(),
        input_hash: identity.input_hash.clone(),
        ..project(state)
    }
}

pub(crate) fn fold(mut state: SagaState, decision: &Decision) -> SagaState {
    for e in &decision.events {
        state.apply(e);
    }
    state
}

/// `text` as a text column can hold it on every backend: PostgreSQL refuses
/// NUL, so each becomes U+FFFD here. (The events keep the exact text: JSON
/// escapes it.)
fn storable(text: String) -> String {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}") } else { text }
}

/// The projection columns derived from a state (identity columns left empty).
pub(crate) fn project(state: &SagaState) -> Projection {
    let (wait_half, wait_key) = waits(state);
    let current = state.current();
    let last_error = state
        .park
        .as_ref()
        .map(|p| format!("{}: {}", p.reason.as_str(), p.message))
        .or_else(|| {
            current.and_then(|(i, kind)| {
                state.steps[i].progress(kind).last_error.as_ref().map(|(c, m)| format!("{c}: {m}"))
            })
        });
    Projection {
        saga_type: String::new(),
        definition_hash: String::new(),
        status: state.status.as_str().to_owned(),
        current_step: current.map(|(i, _)| state.step_def(i).name.clone()),
        partition: 0,
        idempotency_key: String::new(),
        input_hash: String::new(),
        next_deadline_ms: state.next_deadline().map(clock::to_db),
        last_error: last_error.map(storable),
        current_kind: current.map(|(_, kind)| kind.as_str().to_owned()),
        attempt: current.map_or(0, |(i, kind)| {
            i32::try_from(state.steps[i].progress(kind).attempts_in_budget()).unwrap_or(i32::MAX)
        }),
        deadline_at_ms: state.deadline_at.filter(|_| !state.status.is_end()).map(clock::to_db),
        park_reason: state.park.as_ref().map(|p| p.reason.as_str().to_owned()),
        wait_half_at_ms: wait_half.map(clock::to_db),
        wait_key,
        tags: None,
    }
}

/// Of the waiting steps the running saga is waiting at: when the first
/// will have waited half its wait, and `<event>:<key>` of the first with a
/// key (event names hold no `:`). One pass over what the saga is busy with.
fn waits(state: &SagaState) -> (Option<sagas::UnixMillis>, Option<String>) {
    let (mut half, mut key) = (None, None);
    if state.status != sagas::SagaStatus::Running {
        return (half, key);
    }
    for (i, _) in state.working() {
        let (Some(wait), sagas::machine::Wait::Reply { timeout_at, .. }) =
            (state.step_def(i).wait.as_ref(), state.steps[i].do_progress.wait)
        else {
            continue;
        };
        let at = sagas::UnixMillis(timeout_at.0.saturating_sub(wait.timeout.as_millis() / 2));
        half = Some(half.map_or(at, |h: sagas::UnixMillis| h.min(at)));
        if key.is_none()
            && let Some((event, Some(k))) = &state.steps[i].waits_for
        {
            key = Some(storable(format!("{event}:{k}")));
        }
    }
    (half, key)
}

/// Hex SHA-256 of a JSON value's canonical text (object keys sorted).
pub(crate) fn hash_json(v: &Value) -> String {
    let text = serde_json::to_string(&canonical(v)).unwrap_or_default();
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The value with every object's keys in sorted order, whatever map type
/// serde_json was built with (its `preserve_order` feature keeps insertion order).
pub(crate) fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&map[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_hash_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":2,"x":[{"q":1,"p":2}]}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":[{"p":2,"q":1}],"y":2},"b":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"a":{"x":[{"p":2,"q":1}],"y":3},"b":1}"#).unwrap();
        assert_eq!(hash_json(&a), hash_json(&b));
        assert_ne!(hash_json(&a), hash_json(&c));
    }
}
