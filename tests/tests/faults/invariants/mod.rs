//! DESIGN.md's invariants, checked once a scenario has healed: 1 (one saga
//! per accepted start and key, none lost or added), 2 (every saga ended;
//! parked only with a reason) and 5 (seq 1..n without gaps, one terminal
//! event and nothing after it, one recorded success and compensation per
//! step) over the orchestrator's record here; 5 at the participant in
//! [`effects`], 6 (fencing) in [`fencing`], 3 and 4 (the ledger and the
//! payment provider) in [`money`].

mod effects;
mod fencing;
pub mod money;

pub use effects::verify_effects;

use crate::common::load::Begun;
use crate::tally::Tally;
use crate::world::FLOW_STEPS;
use orchestrator::store::Store;
use sagas::machine::SagaEvent;
use sea_orm::{ConnectionTrait, Statement};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// `f`, tried again a few times on an error: the checks must not mistake a
/// busy database (a pool timeout while other tests run) for a broken invariant.
pub async fn retried<T, E, F, Fut>(mut f: F) -> Result<T, String>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = String::new();
    for pause_ms in [100, 300, 1_000, 3_000, 0] {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
    Err(last)
}

/// The `n` a counting query answers (0 when it answers no row).
pub async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> Result<i64, String> {
    let row = db
        .query_one(Statement::from_string(db.get_database_backend(), sql.to_owned()))
        .await
        .map_err(|e| e.to_string())?;
    row.map_or(Ok(0), |r| r.try_get::<i64>("", "n").map_err(|e| e.to_string()))
}

/// Invariants 1, 2, 5 and 6 over the orchestrator's database; each saga's status.
pub async fn verify(store: &Store, begun: &[Begun], tally: &mut Tally) -> HashMap<String, String> {
    tally.run = begun.len();
    // 1. No saga lost: every accepted start exists once per (type, key), and nothing else does.
    let mut keys = HashSet::new();
    for b in begun {
        if !keys.insert((b.saga_type.as_str(), b.key.as_str())) {
            tally.fail(format!("the test started key {:?} twice", b.key));
        }
        match retried(|| store.find_by_key(&b.saga_type, &b.key)).await {
            Ok(Some(row)) if row.saga_id == b.id => {}
            Ok(Some(row)) => tally.violation(format!(
                "1: key {:?} names saga {}, but its start answered {}",
                b.key, row.saga_id, b.id
            )),
            Ok(None) => tally.violation(format!("1: saga {} (key {:?}) is lost", b.id, b.key)),
            Err(e) => tally.violation(format!("1: cannot look up key {:?}: {e}", b.key)),
        }
    }
    match retried(|| count(store.db(), "SELECT count(*) AS n FROM sagas")).await {
        Ok(n) if n == begun.len() as i64 => {}
        Ok(n) => {
            tally.violation(format!("1: {n} sagas stored for {} accepted starts", begun.len()))
        }
        Err(e) => tally.violation(format!("1: cannot count sagas: {e}")),
    }
    let mut statuses = HashMap::new();
    for b in begun {
        // 5. `load` asserts seq 1..n without gaps.
        let loaded = match retried(|| store.load(&b.id)).await {
            Ok(Some(l)) => l,
            Ok(None) => continue, // reported above
            Err(e) => {
                tally.violation(format!("5: history of {} unreadable: {e}", b.id));
                continue;
            }
        };
        let (row, events) = (&loaded.row, &loaded.events);
        if row.seq != events.len() as i64 {
            tally.violation(format!(
                "5: {}: projection seq {} but {} events",
                b.id,
                row.seq,
                events.len()
            ));
        }
        let terminal: Vec<usize> =
            events.iter().enumerate().filter(|(_, e)| e.is_terminal()).map(|(i, _)| i).collect();
        let status = row.status.clone();
        match status.as_str() {
            "completed" | "compensated" | "failed" => {
                tally.terminal += 1;
                if terminal != [events.len() - 1] {
                    tally.violation(format!(
                        "5: {} ended {status} with terminal events at {terminal:?} of {}",
                        b.id,
                        events.len()
                    ));
                }
            }
            "parked" => {
                let parked_event = events.iter().rev().find_map(|e| match e {
                    SagaEvent::SagaParked { reason, .. } => Some(reason.as_str().to_owned()),
                    _ => None,
                });
                let reason = row.park_reason.clone().filter(|r| !r.is_empty());
                match (parked_event, reason) {
                    (Some(_), Some(reason)) => *tally.parked.entry(reason).or_default() += 1,
                    _ => tally.violation(format!("2: {} parked without a reason", b.id)),
                }
                if !terminal.is_empty() {
                    tally.violation(format!("5: {} parked after a terminal event", b.id));
                }
            }
            other => tally.violation(format!("2: {} did not end: {other}", b.id)),
        }
        // 5, as the orchestrator records it: one success and one compensation per step.
        let mut succeeded: HashMap<&str, usize> = HashMap::new();
        let mut compensated: HashMap<&str, usize> = HashMap::new();
        for e in events {
            match e {
                SagaEvent::StepSucceeded { step, .. } => *succeeded.entry(step).or_default() += 1,
                SagaEvent::StepCompensated { step, .. } => {
                    *compensated.entry(step).or_default() += 1;
                }
                _ => {}
            }
        }
        for (step, n) in succeeded.iter().chain(compensated.iter()) {
            if *n > 1 {
                tally.violation(format!("5: {}: step {step} recorded {n} times", b.id));
            }
        }
        *tally.by_status.entry(status.clone()).or_default() += 1;
        statuses.insert(b.id.clone(), status);
    }
    fencing::probe_fencing(store, tally).await;
    statuses
}

/// [`verify`], then invariant 5 at the bench participant (database
/// `bench_url`) for sagas of `flow`; each saga's status.
pub async fn verify_with_bench(
    store: &Store,
    bench_url: &str,
    begun: &[Begun],
    tally: &mut Tally,
) -> HashMap<String, String> {
    let statuses = verify(store, begun, tally).await;
    verify_effects(bench_url, "bench_effects", &FLOW_STEPS, &statuses, tally).await;
    statuses
}
