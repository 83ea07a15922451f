//! The engine reads time only from the clock it is given: on a clock that
//! stands still a step never times out, and moving the clock past the step's
//! timeout is what makes the driver retry it. No sleeping, no wall clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{BENCH, offline, take_commands};
use orchestrator::clock::{Clock, ManualClock};
use orchestrator::engine::driver::DriveError;
use sagas::UnixMillis;
use sagas::machine::{Input, TransitionError};
use skald_testkit::Backend;
use std::sync::Arc;
use std::time::Duration;

/// 2026-12-01T00:00:00Z: far from the wall clock, so a stray read of it shows.
const T0: UnixMillis = UnixMillis(1_796_083_200_000);

#[tokio::test]
async fn a_step_times_out_when_the_given_clock_passes_its_timeout() {
    let (db, store) = common::store(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::at(T0));
    let store = store.with_clock(clock.clone());
    let driver = common::driver(&store, &[BENCH], offline(), 1).await;

    let saga_id = driver.start("bench", "k1", &serde_json::json!({})).await.unwrap();
    let saga_id = saga_id.saga_id().to_owned();
    let sent = take_commands(&store).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].attempt, 1);
    assert_eq!(
        sent[0].deadline_unix_ms.0,
        T0.0 + 2_000,
        "the step's 2 s timeout, from the given clock"
    );

    // The clock stands still: the timeout is not due, however long the test takes.
    let early = driver.handle(&saga_id, &Input::Timeout).await;
    assert!(
        matches!(early, Err(DriveError::Transition(TransitionError::NotDue { .. }))),
        "{early:?}"
    );

    clock.advance(Duration::from_millis(2_001));
    driver.handle(&saga_id, &Input::Timeout).await.unwrap();
    let (_, state) = driver.state(&saga_id).await.unwrap();
    let (step, _) = state.current().unwrap();
    let progress = state.steps[step].progress(sagas::protocol::Kind::Do);
    assert_eq!(progress.attempts_in_budget(), 1, "one attempt spent, the retry is scheduled");
    assert!(
        state.next_deadline().is_some_and(|at| at.0 > clock.now().0),
        "backoff from the given clock"
    );
    db.remove().await;
}

/// A saga whose step waits for an event is `waiting` (a stuck class) once it
/// has waited half its wait, by the given clock.
#[tokio::test]
async fn a_waiting_step_past_half_its_wait_is_stuck_waiting() {
    use orchestrator::store::{ListFilter, StuckClass};
    use sagas::protocol::{Kind, Outcome, Reply, command_id};
    let (db, store) = common::store(Backend::Sqlite).await;
    let clock = Arc::new(ManualClock::at(T0));
    let store = store.with_clock(clock.clone());
    let driver = common::driver(&store, &[include_str!("fixtures/await.yaml")], offline(), 1).await;
    let saga_id = driver.start("awaiting", "k1", &serde_json::json!({"amount": 5})).await.unwrap();
    let saga_id = saga_id.saga_id().to_owned();
    let reply = Reply {
        command_id: command_id(&saga_id, "reserve", Kind::Do),
        attempt: 1,
        outcome: Outcome::Ok { output: serde_json::json!({"hold": "h-1"}) },
    };
    driver.handle(&saga_id, &Input::Reply(reply)).await.unwrap();
    // `confirmed` waits up to 1m from T0: `waiting` after 30 s.
    let filter = ListFilter { stuck: Some(StuckClass::Waiting), ..ListFilter::default() };
    let at = |s: u64| i64::try_from(T0.0 + s * 1_000).unwrap();
    let listed = |page: orchestrator::store::ListPage| -> Vec<String> {
        page.rows.into_iter().map(|r| r.saga_id).collect()
    };
    let early = store.list(&filter, None, 10, at(29), &[0]).await.unwrap();
    assert!(listed(early).is_empty());
    let late = store.list(&filter, None, 10, at(31), &[0]).await.unwrap();
    assert_eq!(listed(late), std::slice::from_ref(&saga_id));
    let (row, _) = driver.state(&saga_id).await.unwrap();
    assert!(StuckClass::Waiting.matches(&row, at(31), &[0]));
    assert!(!StuckClass::Waiting.matches(&row, at(29), &[0]));
    db.remove().await;
}
