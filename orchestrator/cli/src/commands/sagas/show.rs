//! `skald sagas show ID`: one saga in full: status, steps, the event timeline.

use super::*;

pub(super) async fn show(
    saga_id: &str,
    api: &ApiArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(api)?;
    let body = client.get(&["v1", "sagas", saga_id], &[]).await?.body;
    if api.json {
        print_json(&body, out)?;
        return Ok(Outcome::Success);
    }
    let d: SagaDetail = decode(&body, "saga")?;
    write_detail(&d, out)?;
    Ok(Outcome::Success)
}

/// A saga's steps table: [`STEP_HEADER`], then these columns.
const STEP_COLUMNS: [&str; 5] = ["result", "undo", "do", "undo#", "waiting"];

pub(super) fn write_detail(d: &SagaDetail, out: &mut dyn Write) -> std::io::Result<()> {
    let s = &d.summary;
    let hash = d.definition_hash.get(..12).unwrap_or(&d.definition_hash);
    let mut fields: Vec<(&str, String)> = vec![
        ("saga", s.saga_id.clone()),
        ("type", format!("{} v{} (hash {hash})", s.saga_type, d.definition_version)),
        ("status", s.status.clone()),
    ];
    if s.current_step.is_some() {
        let of = s.attempts_max.map_or_else(String::new, |m| format!(" of {m}"));
        let kind = s.current_kind.as_deref().unwrap_or("do");
        let step = s.current_step.as_deref().unwrap_or("-");
        fields.push(("step", format!("{step} ({kind}), attempt {}{of}", s.attempt)));
    }
    fields.push(("key", s.idempotency_key.clone()));
    if !s.tags.is_empty() {
        let tags: Vec<String> = s.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.push(("tags", one_line(&tags.join(" "))));
    }
    fields.push(("started", time_ms(s.created_at_ms)));
    fields.push(("updated", time_ms(s.updated_at_ms)));
    fields.push(("deadline", s.deadline_at_ms.map_or_else(|| "none".to_owned(), time_ms)));
    let owner = d.owner.as_deref().unwrap_or("no live owner");
    fields.push(("owner", format!("{owner} (partition {})", s.partition)));
    fields.push(("input", truncated(&d.input.to_string())));
    if let Some(output) = &d.output {
        fields.push(("output", truncated(&compact(output))));
    }
    if let Some(e) = &d.output_error {
        fields.push(("output", format!("not rendered: {}", one_line(e))));
    }
    if let Some(cause) = &d.cause {
        fields.push(("cause", truncated(&compact(cause))));
    }
    if let Some(e) = &s.last_error {
        fields.push(("error", one_line(e)));
    }
    if let Some(r) = &s.park_reason {
        fields.push(("parked", one_line(r)));
    }
    if s.stuck.is_empty() {
        fields.push(("stuck", "no".to_owned()));
    }
    for (name, value) in &fields {
        writeln!(out, "{name:<9}{value}")?;
    }
    for c in &s.stuck {
        writeln!(out, "stuck    {}: {}", c.class.as_str(), one_line(&c.detail))?;
    }
    writeln!(out)?;
    writeln!(out, "steps")?;
    let rows: Vec<Vec<String>> = d
        .steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let mut waiting = waiting_label(&st.do_progress, &st.undo_progress);
            let compensation = st.compensation.as_deref();
            // A waiting step has no action: it waits for an event.
            let action = st
                .waits_for
                .as_ref()
                .map_or_else(|| st.action.clone(), |w| format!("(wait for {})", w.event));
            if let Some(w) = &st.waits_for
                && st.do_progress.waiting == "reply"
            {
                let key = w.key.as_deref().map(|k| format!(" key {k}")).unwrap_or_default();
                waiting = format!("event {}{key}", w.event);
            }
            let participant = if st.participant.is_empty() { "-" } else { st.participant.as_str() };
            let place = st.group.as_deref().zip(st.branch.as_deref());
            let mut row =
                step_cells(i, &st.name, place, st.pivot, participant, &action, compensation);
            row.extend([
                st.result.clone(),
                st.undo.clone(),
                format!("{}/{}", st.do_progress.attempts, st.do_progress.attempts_max),
                format!("{}/{}", st.undo_progress.attempts, st.undo_progress.attempts_max),
                waiting,
            ]);
            row
        })
        .collect();
    let header: Vec<&str> = STEP_HEADER.into_iter().chain(STEP_COLUMNS).collect();
    write_table(&header, &rows, out)?;
    writeln!(out)?;
    writeln!(out, "events")?;
    let rows: Vec<Vec<String>> = d
        .events
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                time_ms(e.recorded_at_ms),
                e.event_type.clone(),
                event_detail(&e.event),
            ]
        })
        .collect();
    write_table(&["seq", "recorded", "event", "detail"], &rows, out)
}

/// What a step waits for, if anything: `reply to do until <time>`.
pub(super) fn waiting_label(do_progress: &ProgressView, undo_progress: &ProgressView) -> String {
    let one = |kind: &str, p: &ProgressView| {
        let what = match p.waiting.as_str() {
            "idle" => return None,
            "reply" => "reply",
            "backoff" => "retry",
            other => other,
        };
        let until = p
            .due_at_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .map_or_else(String::new, |ms| format!(" until {}", time_ms(ms)));
        let error = p
            .last_error
            .as_deref()
            .map_or_else(String::new, |e| format!(" (last: {})", one_line(e)));
        Some(format!("{what} to {kind}{until}{error}"))
    };
    let parts: Vec<String> =
        [one("do", do_progress), one("undo", undo_progress)].into_iter().flatten().collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join("; ") }
}

/// An event's fields other than the ones every event has, as `k=v`; times
/// (`*_at`, in Unix milliseconds) as RFC 3339.
pub(super) fn event_detail(event: &Value) -> String {
    const SKIP: [&str; 7] =
        ["v", "type", "at", "saga_id", "saga_type", "definition_hash", "payload"];
    let Some(fields) = event.as_object() else { return truncated(&compact(event)) };
    let parts: Vec<String> = fields
        .iter()
        .filter(|(k, v)| !SKIP.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| match v.as_i64() {
            Some(ms) if k.ends_with("_at") => format!("{k}={}", time_ms(ms)),
            _ => format!("{k}={}", compact(v)),
        })
        .collect();
    truncated(&parts.join(" "))
}

/// A JSON value in one line; strings without quotes.
pub(super) fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => one_line(s),
        other => other.to_string(),
    }
}

pub(super) fn truncated(text: &str) -> String {
    if text.chars().count() <= DETAIL_CHARS_MAX {
        return text.to_owned();
    }
    let mut t: String = text.chars().take(DETAIL_CHARS_MAX).collect();
    t.push_str("… (--json for all)");
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_details_leave_out_what_every_event_has() {
        let e = json!({"v": 1, "type": "command_sent", "at": 5, "step": "one", "kind": "do",
            "attempt": 1, "payload": {"big": "x"}, "timeout_at": 1000, "retry_at": null});
        assert_eq!(event_detail(&e), "attempt=1 kind=do step=one timeout_at=1970-01-01T00:00:01Z");
        let long = json!({"message": "x".repeat(500)});
        assert!(event_detail(&long).ends_with("… (--json for all)"));
    }
}
