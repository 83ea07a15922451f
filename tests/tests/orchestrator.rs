//! The orchestrator over real NATS and real databases (SQLite and PostgreSQL),
//! with a scripted participant speaking the wire protocol.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::on_each_backend;
use sagas::protocol::{Kind, Outcome, SagaEnded, StartResponse};
use serde_json::json;
use skald_tests::{
    Backend, RunningOrchestrator, Script, Seen, TestDb, definitions_dir, scripted_participant,
    three_steps, token,
};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The (step, kind) sequence of a command log, repeated attempts collapsed:
/// on a loaded machine a slow answer may cause an extra attempt, which is fine.
fn steps_in_order(log: &[(String, String, u32)]) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (step, kind, _) in log {
        if out.last() != Some(&(step.as_str(), kind.as_str())) {
            out.push((step, kind));
        }
    }
    out
}

fn ok() -> Option<Outcome> {
    Some(Outcome::Ok { output: json!({"ok": true}) })
}

async fn setup(backend: Backend, yaml: &str) -> (TestDb, RunningOrchestrator) {
    let db = TestDb::new(backend).await.unwrap();
    let dir = definitions_dir(&[("three.yaml", yaml)]).unwrap();
    let o = RunningOrchestrator::start(&db, &format!("t{}", token()), dir).await.unwrap();
    (db, o)
}

async fn start(o: &RunningOrchestrator, n: i64) -> String {
    match o.start_saga("three", &format!("key-{n}"), json!({"n": n})).await.unwrap() {
        StartResponse::Started { saga_id, .. } => saga_id,
        other => panic!("start refused: {other:?}"),
    }
}

/// Participant `p` answering by `script`, and saga `key-1` started and
/// ended: what the participant saw, how to stop it, and the saga's id.
async fn run_one(o: &RunningOrchestrator, script: Script) -> (Seen, CancellationToken, String) {
    let (seen, stop) = scripted_participant(o.client.clone(), &o.ns, "p", script).await.unwrap();
    let id = start(o, 1).await;
    o.wait_ended(std::slice::from_ref(&id), Duration::from_secs(30)).await.unwrap();
    (seen, stop, id)
}

async fn happy_path(backend: Backend) {
    let (_db, mut o) = setup(backend, &three_steps("2s", 3, 3)).await;
    let script: Script = Arc::new(|_| ok());
    let (seen, stop) = scripted_participant(o.client.clone(), &o.ns, "p", script).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(start(&o, n).await);
    }
    o.wait_ended(&ids, Duration::from_secs(30)).await.unwrap();
    for id in &ids {
        let (status, _) = o.history(id).await.unwrap();
        assert_eq!(status, "completed");
        let log = seen.for_saga(id);
        assert_eq!(steps_in_order(&log), [("s1", "do"), ("s2", "do"), ("s3", "do")], "{log:?}");
    }
    stop.cancel();
    o.stop().await;
}

on_each_backend!(happy_path: happy_path_sqlite, happy_path_postgres);

async fn failure_compensates_newest_first(backend: Backend) {
    let (_db, mut o) = setup(backend, &three_steps("2s", 3, 3)).await;
    let script: Script = Arc::new(|c| {
        if c.step == "s3" && c.kind == Kind::Do {
            Some(Outcome::Failed { code: "no".into(), message: "refused".into() })
        } else {
            ok()
        }
    });
    let (seen, stop, id) = run_one(&o, script).await;
    let (status, _) = o.history(&id).await.unwrap();
    assert_eq!(status, "compensated");
    let log = seen.for_saga(&id);
    assert_eq!(
        steps_in_order(&log),
        [("s1", "do"), ("s2", "do"), ("s3", "do"), ("s2", "undo"), ("s1", "undo")],
        "compensations run newest first: {log:?}"
    );
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    failure_compensates_newest_first:
    failure_compensates_newest_first_sqlite,
    failure_compensates_newest_first_postgres
);

async fn silent_step_is_retried_then_compensated_as_unknown(backend: Backend) {
    let (_db, mut o) = setup(backend, &three_steps("200ms", 2, 3)).await;
    let script: Script =
        Arc::new(|c| if c.step == "s2" && c.kind == Kind::Do { None } else { ok() });
    let (seen, stop, id) = run_one(&o, script).await;
    let (status, events) = o.history(&id).await.unwrap();
    assert_eq!(status, "compensated");
    assert!(events.iter().any(|e| e.name() == "step_outcome_unknown"));
    let log = seen.for_saga(&id);
    let attempts_of_s2 = log.iter().filter(|(s, k, _)| s == "s2" && k == "do").count();
    assert_eq!(
        attempts_of_s2, 2,
        "the silent step is tried as often as its policy allows: {log:?}"
    );
    assert_eq!(
        steps_in_order(&log),
        [("s1", "do"), ("s2", "do"), ("s2", "undo"), ("s1", "undo")],
        "{log:?}"
    );
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    silent_step_is_retried_then_compensated_as_unknown:
    silent_step_is_retried_then_compensated_as_unknown_sqlite,
    silent_step_is_retried_then_compensated_as_unknown_postgres
);

async fn failing_compensation_parks_with_the_reason(backend: Backend) {
    let (_db, mut o) = setup(backend, &three_steps("500ms", 2, 2)).await;
    let script: Script = Arc::new(|c| match (c.step.as_str(), c.kind) {
        ("s2", Kind::Do) => Some(Outcome::Failed { code: "no".into(), message: "refused".into() }),
        ("s1", Kind::Undo) => Some(Outcome::retry("down", "ledger down")),
        _ => ok(),
    });
    let (_seen, stop, id) = run_one(&o, script).await;
    let loaded = o.store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.row.status, "parked");
    let reason = loaded.row.last_error.unwrap_or_default();
    assert!(reason.contains("compensation_stuck") && reason.contains("ledger down"), "{reason}");
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    failing_compensation_parks_with_the_reason:
    failing_compensation_parks_with_the_reason_sqlite,
    failing_compensation_parks_with_the_reason_postgres
);

/// A participant's message with a NUL byte (which PostgreSQL text cannot
/// hold) is recorded, not lost: exact in the history, readable in the row.
async fn unstorable_bytes_in_a_reply_are_recorded(backend: Backend) {
    let (_db, mut o) = setup(backend, &three_steps("500ms", 2, 2)).await;
    let script: Script = Arc::new(|c| match (c.step.as_str(), c.kind) {
        ("s2", Kind::Do) => {
            Some(Outcome::Failed { code: "no\0pe".into(), message: "re\0fused".into() })
        }
        ("s1", Kind::Undo) => Some(Outcome::retry("down", "ledger\0down")),
        _ => ok(),
    });
    let (_seen, stop, id) = run_one(&o, script).await;
    let loaded = o.store.load(&id).await.unwrap().unwrap();
    assert_eq!(loaded.row.status, "parked");
    let reason = loaded.row.last_error.unwrap_or_default();
    assert!(reason.contains("ledger\u{FFFD}down"), "{reason}");
    let (_, events) = o.history(&id).await.unwrap();
    let recorded = serde_json::to_string(&events).unwrap();
    assert!(recorded.contains(r"re\u0000fused"), "{recorded}");
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    unstorable_bytes_in_a_reply_are_recorded:
    unstorable_bytes_in_a_reply_are_recorded_sqlite,
    unstorable_bytes_in_a_reply_are_recorded_postgres
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_are_idempotent_by_key_and_checked_against_the_schema() {
    let (_db, mut o) = setup(Backend::Sqlite, &three_steps("2s", 3, 3)).await;
    let first = o.start_saga("three", "k1", json!({"n": 1})).await.unwrap();
    let StartResponse::Started { saga_id, .. } = first else { panic!("{first:?}") };
    assert_eq!(
        o.start_saga("three", "k1", json!({"n": 1})).await.unwrap(),
        StartResponse::Existing { saga_id: saga_id.clone(), outcome: None }
    );
    let conflict = o.start_saga("three", "k1", json!({"n": 2})).await.unwrap();
    assert!(
        matches!(&conflict, StartResponse::Refused { code, message, .. } if code == "conflict" && message.contains(&saga_id)),
        "{conflict:?}"
    );
    let bad = o.start_saga("three", "k2", json!({"n": "x"})).await.unwrap();
    assert!(
        matches!(&bad, StartResponse::Refused { code, errors, .. } if code == "invalid_input" && errors[0].contains("/n")),
        "{bad:?}"
    );
    let unknown = o.start_saga("nope", "k3", json!({})).await.unwrap();
    assert!(
        matches!(&unknown, StartResponse::Refused { code, message, .. } if code == "unknown_type" && message.contains("three")),
        "{unknown:?}"
    );
    let raw = tokio::time::timeout(
        Duration::from_secs(5),
        o.client.request(o.ns.start_subject("three"), "not json".into()),
    )
    .await
    .unwrap()
    .unwrap();
    let malformed: StartResponse = serde_json::from_slice(&raw.payload).unwrap();
    assert!(
        matches!(&malformed, StartResponse::Refused { code, .. } if code == "bad_request"),
        "{malformed:?}"
    );
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_late_replies_change_nothing() {
    let (_db, mut o) = setup(Backend::Sqlite, &three_steps("2s", 3, 3)).await;
    let script: Script = Arc::new(|_| ok());
    let (_seen, stop, id) = run_one(&o, script).await;
    let (_, before) = o.history(&id).await.unwrap();
    // Replay the same replies again, under new message ids so JetStream keeps them.
    let js = async_nats::jetstream::new(o.client.clone());
    for step in ["s1", "s2", "s3"] {
        let reply = sagas::protocol::Reply {
            command_id: sagas::protocol::command_id(&id, step, Kind::Do),
            attempt: 1,
            outcome: Outcome::Ok { output: json!({"late": true}) },
        };
        let partition = sagas::hash::partition_of(&id, 4);
        js.publish(o.ns.reply_subject(partition, "p"), serde_json::to_vec(&reply).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    o.wait_replies_settled(Duration::from_secs(10)).await.unwrap();
    let (status, after) = o.history(&id).await.unwrap();
    assert_eq!(status, "completed");
    assert_eq!(before.len(), after.len(), "late replies appended events");
    stop.cancel();
    o.stop().await;
}

/// A reply counts only from the participant its command went to: the same
/// reply on a subject naming another participant is terminated and changes
/// nothing; from the right one it moves the saga on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_another_participant_is_refused() {
    let (_db, mut o) = setup(Backend::Sqlite, &three_steps("30s", 3, 3)).await;
    // `p` never answers s1 by itself: the test answers for it.
    let script: Script = Arc::new(|c| if c.step == "s1" { None } else { ok() });
    let (seen, stop) = scripted_participant(o.client.clone(), &o.ns, "p", script).await.unwrap();
    let id = start(&o, 1).await;
    skald_testkit::wait_until(Duration::from_secs(10), async || {
        Ok(if seen.for_saga(&id).is_empty() {
            std::ops::ControlFlow::Continue("no command seen yet".to_owned())
        } else {
            std::ops::ControlFlow::Break(())
        })
    })
    .await
    .unwrap();
    let (_, before) = o.history(&id).await.unwrap();
    let js = async_nats::jetstream::new(o.client.clone());
    let partition = sagas::hash::partition_of(&id, 4);
    let reply = sagas::protocol::Reply {
        command_id: sagas::protocol::command_id(&id, "s1", Kind::Do),
        attempt: 1,
        outcome: Outcome::Ok { output: json!({"forged": true}) },
    };
    let body = serde_json::to_vec(&reply).unwrap();
    for sender in ["q", "p"] {
        js.publish(o.ns.reply_subject(partition, sender), body.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        o.wait_replies_settled(Duration::from_secs(10)).await.unwrap();
        if sender == "q" {
            let (status, after) = o.history(&id).await.unwrap();
            assert_eq!(status, "running");
            assert_eq!(before, after, "a reply from `q` changed the saga");
        }
    }
    o.wait_ended(std::slice::from_ref(&id), Duration::from_secs(30)).await.unwrap();
    assert_eq!(o.history(&id).await.unwrap().0, "completed");
    stop.cancel();
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_replies_are_dropped_and_the_orchestrator_carries_on() {
    let (_db, mut o) = setup(Backend::Sqlite, &three_steps("2s", 3, 3)).await;
    let js = async_nats::jetstream::new(o.client.clone());
    let junk: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"{}".to_vec(),
        br#"{"command_id":"nosuchsaga.s1.do","attempt":1,"outcome":{"status":"ok"}}"#.to_vec(),
        br#"{"command_id":"x","attempt":1,"outcome":{"status":"maybe"}}"#.to_vec(),
        vec![0u8; 600 * 1024],
    ];
    for (i, body) in junk.into_iter().enumerate() {
        let subject = o.ns.reply_subject(i as u32 % 4, "p");
        // The oversized one is refused by the stream itself; the rest reach the intake.
        if let Ok(ack) = js.publish(subject, body.into()).await {
            let _ = ack.await;
        }
    }
    let script: Script = Arc::new(|_| ok());
    let (_seen, stop, id) = run_one(&o, script).await;
    assert_eq!(o.history(&id).await.unwrap().0, "completed");
    // Every junk reply was settled (terminated), none is left pending redelivery.
    o.wait_replies_settled(Duration::from_secs(10)).await.unwrap();
    stop.cancel();
    o.stop().await;
}

/// One trace per saga: every command carries a W3C `traceparent` whose trace
/// id is the saga's id, and each attempt its own span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_carries_the_sagas_trace() {
    use futures::StreamExt;
    let (_db, mut o) = setup(Backend::Sqlite, &three_steps("2s", 3, 3)).await;
    // A core subscription sees what JetStream stores on the command subjects.
    let mut tap = o.client.subscribe(format!("{}.cmd.>", o.ns.prefix())).await.unwrap();
    o.client.flush().await.unwrap();
    let script: Script = Arc::new(|_| ok());
    let (_seen, stop, id) = run_one(&o, script).await;
    let trace_id = id.replace('-', "");
    // Message id → span; a re-publish of the same attempt (which JetStream
    // deduplicates, but a core subscriber sees) must carry the same span.
    let mut spans = std::collections::HashMap::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(1500), tap.next()).await {
        let headers = msg.headers.as_ref().unwrap();
        let header = headers.get("traceparent").unwrap().to_string();
        let msg_id = headers.get("Nats-Msg-Id").unwrap().to_string();
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!((parts[0], parts[1], parts[3]), ("00", trace_id.as_str(), "01"), "{header}");
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "0000000000000000");
        let span = spans.entry(msg_id).or_insert_with(|| parts[2].to_owned());
        assert_eq!(span, parts[2], "the same attempt keeps its span");
    }
    let distinct: std::collections::HashSet<&String> = spans.values().collect();
    assert_eq!((spans.len(), distinct.len()), (3, 3), "one span per command attempt: {spans:?}");
    stop.cancel();
    o.stop().await;
}

/// `three` with a tag and an output over its steps' outputs.
fn three_with_outcome() -> String {
    three_steps("2s", 3, 3).replace(
        "steps:\n",
        "tags:\n  n: \"{{input.n}}\"\noutput:\n  n: \"{{input.n}}\"\n  last: \"{{steps.s3.output.ok}}\"\nsteps:\n",
    )
}

/// The ends announced on `<prefix>.ended.three`, read from the start of the stream.
async fn ended_messages(o: &RunningOrchestrator, want: usize) -> Vec<SagaEnded> {
    use async_nats::jetstream::consumer::pull;
    use futures::StreamExt;
    let js = async_nats::jetstream::new(o.client.clone());
    let stream = js.get_stream(o.ns.ended_stream()).await.unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: o.ns.ended_subject("three"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < want {
        let next = tokio::time::timeout(Duration::from_secs(20), messages.next()).await;
        let message = next.expect("an end announced in time").unwrap().unwrap();
        out.push(serde_json::from_slice(&message.payload).unwrap());
    }
    out
}

async fn a_waiting_start_gets_the_outcome_and_every_end_is_announced(backend: Backend) {
    let (_db, mut o) = setup(backend, &three_with_outcome()).await;
    let script: Script = Arc::new(|c| {
        let n = c.payload["n"].as_i64().unwrap_or_default();
        if c.step == "s2" && c.kind == Kind::Do && n == 2 {
            Some(Outcome::Failed { code: "no".into(), message: "refused".into() })
        } else {
            Some(Outcome::Ok { output: json!({"ok": format!("s-{n}")}) })
        }
    });
    let (_seen, stop) = scripted_participant(o.client.clone(), &o.ns, "p", script).await.unwrap();
    let wait = Some(Duration::from_secs(30));
    let completed = o.start_saga_waiting("three", "k-1", json!({"n": 1}), wait).await.unwrap();
    let StartResponse::Started { saga_id: first, outcome: Some(outcome) } = completed else {
        panic!("{completed:?}")
    };
    assert_eq!(outcome.status, "completed");
    assert_eq!(outcome.output, Some(json!({"n": 1, "last": "s-1"})));
    let compensated = o.start_saga_waiting("three", "k-2", json!({"n": 2}), wait).await.unwrap();
    let StartResponse::Started { saga_id: second, outcome: Some(outcome) } = compensated else {
        panic!("{compensated:?}")
    };
    assert_eq!(outcome.status, "compensated");
    assert!(outcome.ended && outcome.output.is_none());
    assert_eq!(outcome.cause.as_ref().unwrap()["step"], "s2");
    // The same key again: the same saga, already ended, answered at once.
    let again = o.start_saga_waiting("three", "k-1", json!({"n": 1}), wait).await.unwrap();
    assert!(
        matches!(&again, StartResponse::Existing { saga_id, outcome: Some(o) } if *saga_id == first && o.status == "completed"),
        "{again:?}"
    );

    let ended = ended_messages(&o, 2).await;
    let by_id =
        |id: &str| ended.iter().find(|e| e.saga_id == id).unwrap_or_else(|| panic!("{ended:?}"));
    let done = by_id(&first);
    assert_eq!(done.outcome.status, "completed");
    assert_eq!(done.outcome.output, Some(json!({"n": 1, "last": "s-1"})));
    assert_eq!(done.tags.get("n").map(String::as_str), Some("1"));
    assert_eq!((done.saga_type.as_str(), done.version), ("three", 1));
    let undone = by_id(&second);
    assert_eq!(undone.outcome.status, "compensated");
    assert_eq!(undone.outcome.cause.as_ref().unwrap()["cause"], "step_failed");
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    a_waiting_start_gets_the_outcome_and_every_end_is_announced:
    a_waiting_start_gets_the_outcome_sqlite,
    a_waiting_start_gets_the_outcome_postgres
);

/// The actions participant `p` was sent for `saga_id`, in order, repeats collapsed.
fn actions_for(seen: &Seen, saga_id: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in seen.commands.lock().unwrap().iter().filter(|c| c.saga_id == saga_id) {
        if out.last() != Some(&c.action) {
            out.push(c.action.clone());
        }
    }
    out
}

async fn a_saga_keeps_its_version_across_a_new_version_and_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let prefix = format!("t{}", token());
    // Many short attempts: the saga keeps retrying s1 while no participant answers.
    let v1 = three_steps("300ms", 50, 3);
    let v2 = v1.replace("version: 1", "version: 2").replace("action: a", "action: b");
    let mut o =
        RunningOrchestrator::start(&db, &prefix, definitions_dir(&[("three.yaml", &v1)]).unwrap())
            .await
            .unwrap();
    let old = start(&o, 1).await;
    o.stop().await;
    // Restarted with only v2 on disk: v1 comes back from the store for the
    // saga that started on it; new sagas start on v2.
    let mut o =
        RunningOrchestrator::start(&db, &prefix, definitions_dir(&[("three.yaml", &v2)]).unwrap())
            .await
            .unwrap();
    let script: Script = Arc::new(|_| ok());
    let (seen, stop) = scripted_participant(o.client.clone(), &o.ns, "p", script).await.unwrap();
    let new = start(&o, 2).await;
    o.wait_ended(&[old.clone(), new.clone()], Duration::from_secs(30)).await.unwrap();
    for id in [&old, &new] {
        assert_eq!(o.history(id).await.unwrap().0, "completed");
    }
    assert_eq!(actions_for(&seen, &old), ["a1", "a2", "a3"], "v1's actions to the end");
    assert_eq!(actions_for(&seen, &new), ["b1", "b2", "b3"], "v2's for a new saga");
    stop.cancel();
    o.stop().await;
}

on_each_backend!(
    a_saga_keeps_its_version_across_a_new_version_and_a_restart:
    a_saga_keeps_its_version_across_a_new_version_and_a_restart_sqlite,
    a_saga_keeps_its_version_across_a_new_version_and_a_restart_postgres
);
