//! Parallel groups against a running orchestrator on each database: the
//! commands of a group's branches are in flight at the same time (each
//! participant holds its command until the other branch's has arrived too,
//! so the saga can only complete if both were out at once), the step after
//! the group waits for both, and a branch that fails turns the saga back
//! only once the other has answered, undoing what that one did.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::on_each_backend;
use sagas::machine::SagaEvent;
use sagas::protocol::StartResponse;
use serde_json::json;
use skald_participant::{HandlerCtx, HandlerError, HandlerResult, Participant, handler};
use skald_tests::{Backend, RunningOrchestrator, TestDb, definitions_dir, token};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

/// Two branches on two participants, then a step that uses both outputs.
const OVERLAP: &str = "name: overlap\nversion: 1\ninput_schema: {type: object}\n\
    steps:\n\
    \x20 - name: both\n    parallel:\n\
    \x20     - name: l\n        steps:\n\
    \x20         - {name: left, participant: left, action: meet, compensation: unmeet, timeout: 30s}\n\
    \x20     - name: r\n        steps:\n\
    \x20         - {name: right, participant: right, action: meet, compensation: unmeet, timeout: 30s, \
                   input: {refuse: \"{{input.refuse}}\"}}\n\
    \x20 - {name: done, participant: left, action: done, \
           input: {l: \"{{steps.left.output.met}}\", r: \"{{steps.right.output.met}}\"}}\n";

/// How long a branch's command waits for the other's before giving up.
const MEETING: Duration = Duration::from_secs(20);

/// A participant whose `meet` returns only once the other branch's `meet`
/// has arrived too (both are then in flight at once); `right` refuses when
/// the input says so, after meeting.
fn meeting(name: &'static str, barrier: Arc<Barrier>) -> Participant {
    Participant::new(name)
        .action(
            "meet",
            handler(move |ctx| {
                let barrier = Arc::clone(&barrier);
                Box::pin(async move {
                    if tokio::time::timeout(MEETING, barrier.wait()).await.is_err() {
                        return Err(HandlerError::failed(
                            "alone",
                            "the other branch's command did not come while this one was in flight",
                        ));
                    }
                    if name == "right" && ctx.payload()["refuse"] == json!(true) {
                        return Err(HandlerError::failed("refused", "refused after meeting"));
                    }
                    Ok(json!({ "met": name }))
                })
            }),
        )
        .compensation("unmeet", nothing)
        .action("done", nothing)
}

async fn nothing(_ctx: HandlerCtx<'_>) -> HandlerResult {
    Ok(json!({}))
}

async fn branches_overlap(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    let (left_db, right_db) =
        (TestDb::new(backend).await.unwrap(), TestDb::new(backend).await.unwrap());
    let defs = definitions_dir(&[("overlap.yaml", OVERLAP)]).unwrap();
    let prefix = format!("t{}", token());
    let mut o = RunningOrchestrator::start(&db, &prefix, defs.clone()).await.unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let stop = CancellationToken::new();
    let mut running = Vec::new();
    for (name, pdb) in [("left", &left_db), ("right", &right_db)] {
        let url = if pdb.url.starts_with("sqlite:") {
            format!("{}?mode=rwc", pdb.url)
        } else {
            pdb.url.clone()
        };
        let conn = skald_participant::service::connect_database(&url).await.unwrap();
        let config = skald_participant::Config {
            delivery: o.delivery,
            ..skald_participant::Config::new(o.client.clone(), o.ns.clone(), conn)
        };
        running.push(tokio::spawn(meeting(name, Arc::clone(&barrier)).run(config, stop.clone())));
    }

    // One saga at a time, so that each meeting is of one saga's two branches.
    for (i, refuse) in [false, true, false].into_iter().enumerate() {
        let StartResponse::Started { saga_id, .. } =
            o.start_saga("overlap", &format!("k{i}"), json!({"refuse": refuse})).await.unwrap()
        else {
            panic!("not started");
        };
        o.wait_ended(std::slice::from_ref(&saga_id), Duration::from_secs(60)).await.unwrap();
        let (status, events) = o.history(&saga_id).await.unwrap();
        // Both commands were sent before either answered.
        let first_answer = events
            .iter()
            .position(|e| {
                matches!(e, SagaEvent::StepSucceeded { .. } | SagaEvent::StepFailed { .. })
            })
            .unwrap();
        let sent_before: Vec<&str> = events[..first_answer]
            .iter()
            .filter_map(|e| match e {
                SagaEvent::CommandSent { step, .. } => Some(step.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sent_before, ["left", "right"], "saga {i}: {events:?}");
        if refuse {
            // Turned back only after `left` answered; `left` undone.
            assert_eq!(status, "compensated", "saga {i}");
            let names: Vec<&str> = events.iter().map(SagaEvent::name).collect();
            let started = names.iter().position(|n| *n == "compensation_started").unwrap();
            let left_ok = events
                .iter()
                .position(|e| matches!(e, SagaEvent::StepSucceeded { step, .. } if step == "left"));
            let undone = events.iter().position(
                |e| matches!(e, SagaEvent::StepCompensated { step, .. } if step == "left"),
            );
            assert!(left_ok.is_some() && undone.is_some(), "saga {i}: {names:?}");
            assert!(undone > Some(started), "saga {i}: {names:?}");
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, SagaEvent::CommandSent { step, .. } if step == "done"))
            );
        } else {
            assert_eq!(status, "completed", "saga {i}: {events:?}");
        }
    }
    stop.cancel();
    for r in running {
        let _ = r.await;
    }
    o.stop().await;
    let _ = std::fs::remove_dir_all(defs);
}

on_each_backend!(branches_overlap: branches_overlap_sqlite, branches_overlap_postgres);
