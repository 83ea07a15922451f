//! What the API and the console show of a saga: a summary row (lists) and the
//! full picture (one saga), both with the stuck classes it is in.
//!
//! Summaries come from the projection row; the full picture replays the
//! history through the same machine the driver uses, so what an operator sees
//! is what the orchestrator will act on.

use super::model::{
    CommandView, EventView, GroupView, ProgressView, ReplyView, SagaDetail, SagaSummary, StepView,
    StuckView, WaitView,
};
use crate::engine::registry::Registry;
use crate::store::entities::{saga_events, sagas as saga_rows};
use crate::store::{OVERDUE_GRACE_MS, StuckClass};
use sagas::machine::{Backward, Forward, Progress, SagaEvent, SagaState, Wait};
use sagas::protocol::Kind;
use serde_json::Value;

/// The summary of a projection row at `now`.
#[must_use]
pub fn summary(
    row: &saga_rows::Model,
    registry: &Registry,
    now_ms: i64,
    owned: &[i32],
) -> SagaSummary {
    let attempts_max = registry.by_hash(&row.definition_hash).and_then(|d| {
        let step = d.steps.iter().find(|s| Some(&s.name) == row.current_step.as_ref())?;
        Some(match row.current_kind.as_deref() {
            Some("undo") => step.compensation_retry.attempts,
            _ => step.retry.attempts,
        })
    });
    let stuck = StuckClass::ALL
        .into_iter()
        .filter(|c| c.matches(row, now_ms, owned))
        .map(|class| StuckView { class, detail: stuck_detail(class, row, attempts_max, now_ms) })
        .collect();
    SagaSummary {
        saga_id: row.saga_id.clone(),
        saga_type: row.saga_type.clone(),
        status: row.status.clone(),
        current_step: row.current_step.clone(),
        current_kind: row.current_kind.clone(),
        attempt: row.attempt,
        attempts_max,
        partition: row.partition,
        idempotency_key: row.idempotency_key.clone(),
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        next_deadline_ms: row.next_deadline_ms,
        deadline_at_ms: row.deadline_at_ms,
        last_error: row.last_error.clone(),
        park_reason: row.park_reason.clone(),
        stuck,
        tags: std::collections::BTreeMap::new(),
    }
}

fn stuck_detail(
    class: StuckClass,
    row: &saga_rows::Model,
    attempts_max: Option<u32>,
    now_ms: i64,
) -> String {
    let step = row.current_step.as_deref().unwrap_or("-");
    let kind = row.current_kind.as_deref().unwrap_or("do");
    let error = row.last_error.as_deref().unwrap_or("none");
    match class {
        StuckClass::Overdue => {
            let late = now_ms - row.next_deadline_ms.unwrap_or(now_ms);
            format!(
                "step `{step}` ({kind}) is {}s past its timeout or retry time (grace {}s)",
                late / 1000,
                OVERDUE_GRACE_MS / 1000
            )
        }
        StuckClass::Retrying => {
            let of = attempts_max.map_or_else(|| "?".to_owned(), |n| n.to_string());
            format!("step `{step}` ({kind}): attempt {} of {of}; last error: {error}", row.attempt)
        }
        StuckClass::Parked => {
            let reason = row.park_reason.as_deref().unwrap_or("unknown");
            format!("parked at `{step}` ({kind}): {reason}; {error}")
        }
        StuckClass::PastDeadline => {
            let over = now_ms - row.deadline_at_ms.unwrap_or(now_ms);
            format!("the saga deadline passed {}s ago", over / 1000)
        }
        StuckClass::NoOwner => format!("partition {} has no live owner", row.partition),
        StuckClass::Waiting => {
            let since = now_ms - row.wait_half_at_ms.unwrap_or(now_ms);
            format!(
                "a waiting step has waited past half its wait for its event ({}s ago); it fails \
                 and the saga turns back if none comes in time",
                since / 1000
            )
        }
    }
}

fn progress_view(p: &Progress, attempts_max: u32) -> ProgressView {
    let (waiting, due) = match p.wait {
        Wait::Idle => ("idle", None),
        Wait::Reply { timeout_at, .. } => ("reply", Some(timeout_at.0)),
        Wait::Backoff { retry_at } => ("backoff", Some(retry_at.0)),
    };
    ProgressView {
        attempts: p.attempts_in_budget(),
        attempts_max,
        waiting: waiting.to_owned(),
        due_at_ms: due,
        last_error: p.last_error.as_ref().map(|(c, m)| format!("{c}: {m}")),
        timed_out: p.timed_out,
    }
}

fn result_name(f: &Forward) -> &'static str {
    match f {
        Forward::Pending => "pending",
        Forward::Succeeded { .. } => "succeeded",
        Forward::Failed { .. } => "failed",
        Forward::Unknown => "unknown",
        Forward::Abandoned => "abandoned",
        Forward::Skipped => "skipped",
        Forward::SkippedByCondition => "skipped_by_condition",
    }
}

fn undo_name(b: Backward) -> &'static str {
    match b {
        Backward::Open => "open",
        Backward::Done => "done",
        Backward::Skipped => "skipped",
    }
}

/// The full picture of a saga from its row, replayed state and stored history.
#[must_use]
pub fn detail(
    summary: SagaSummary,
    owner: Option<String>,
    state: &SagaState,
    history: &[saga_events::Model],
) -> SagaDetail {
    let def = &state.definition;
    let steps = def
        .steps
        .iter()
        .zip(&state.steps)
        .enumerate()
        .map(|(i, (d, s))| StepView {
            name: d.name.clone(),
            participant: d.participant.clone(),
            action: d.action.clone(),
            compensation: d.compensation.clone(),
            pivot: def.pivot == Some(i),
            result: result_name(&s.forward).to_owned(),
            when: d.when.as_ref().map(|w| w.source().to_owned()),
            waits_for: d.wait.as_ref().map(|w| WaitView {
                event: w.event.clone(),
                key: s.waits_for.as_ref().and_then(|(_, key)| key.clone()),
                timeout_ms: w.timeout.as_millis(),
            }),
            group: d.place.and_then(|p| def.groups.get(p.group)).map(|g| g.name.clone()),
            branch: d
                .place
                .and_then(|p| def.groups.get(p.group)?.branches.get(p.branch))
                .map(|b| b.name.clone()),
            undo: undo_name(s.backward).to_owned(),
            do_progress: progress_view(&s.do_progress, d.retry.attempts),
            undo_progress: progress_view(&s.undo_progress, d.compensation_retry.attempts),
            output: s.output.clone(),
            payload: s.payload.clone(),
        })
        .collect();
    let mut events = Vec::with_capacity(history.len());
    let mut commands = Vec::new();
    let mut replies = Vec::new();
    for row in history {
        let Ok(event) = SagaEvent::decode(&row.event) else {
            events.push(EventView {
                seq: row.seq,
                recorded_at_ms: row.recorded_at_ms,
                event_type: "unreadable".to_owned(),
                event: Value::String(row.event.clone()),
            });
            continue;
        };
        collect_io(&event, &mut commands, &mut replies);
        events.push(EventView {
            seq: row.seq,
            recorded_at_ms: row.recorded_at_ms,
            event_type: event.name().to_owned(),
            event: serde_json::to_value(&event).unwrap_or(Value::Null),
        });
    }
    SagaDetail {
        summary,
        owner,
        definition_version: def.version,
        definition_hash: def.hash.clone(),
        input: state.input.clone(),
        cause: state.cause.as_ref().and_then(|c| serde_json::to_value(c).ok()),
        output: state.output.clone(),
        output_error: state.output_error.clone(),
        steps,
        groups: def
            .groups
            .iter()
            .map(|g| GroupView {
                name: g.name.clone(),
                when: g.when.as_ref().map(|w| w.source().to_owned()),
                branches: g.branches.iter().map(|b| b.name.clone()).collect(),
            })
            .collect(),
        events,
        commands,
        replies,
    }
}

fn collect_io(event: &SagaEvent, commands: &mut Vec<CommandView>, replies: &mut Vec<ReplyView>) {
    let reply = |step: &str, kind: Kind, attempt: u32, outcome: &str, at: u64| ReplyView {
        step: step.to_owned(),
        kind: kind.as_str().to_owned(),
        attempt,
        outcome: outcome.to_owned(),
        code: None,
        message: None,
        output: None,
        at_ms: at,
    };
    match event {
        SagaEvent::CommandSent { step, kind, attempt, command_id, payload, timeout_at, at } => {
            commands.push(CommandView {
                step: step.clone(),
                kind: kind.as_str().to_owned(),
                attempt: *attempt,
                command_id: command_id.clone(),
                sent_at_ms: at.0,
                timeout_at_ms: timeout_at.0,
                payload: payload.clone(),
            });
        }
        SagaEvent::StepSucceeded { step, attempt, output, at }
        | SagaEvent::LateSuccessRecorded { step, attempt, output, at } => {
            replies.push(ReplyView {
                output: Some(output.clone()),
                ..reply(step, Kind::Do, *attempt, "ok", at.0)
            });
        }
        SagaEvent::StepFailed { step, attempt, code, message, at } => replies.push(ReplyView {
            code: Some(code.clone()),
            message: Some(message.clone()),
            ..reply(step, Kind::Do, *attempt, "failed", at.0)
        }),
        SagaEvent::AttemptFailed { step, kind, attempt, code, message, timed_out, at, .. } => {
            let outcome = if *timed_out { "timeout" } else { "retry" };
            replies.push(ReplyView {
                code: Some(code.clone()),
                message: Some(message.clone()),
                ..reply(step, *kind, *attempt, outcome, at.0)
            });
        }
        SagaEvent::StepCompensated { step, attempt, at } => {
            replies.push(reply(step, Kind::Undo, *attempt, "ok", at.0));
        }
        _ => {}
    }
}
