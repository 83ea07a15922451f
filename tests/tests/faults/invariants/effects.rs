//! Invariant 5 at a participant: each command took effect at most once, and
//! the effects match how each saga ended.

use super::retried;
use crate::tally::Tally;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use std::collections::{BTreeSet, HashMap};

/// Invariant 5 at a participant that records one row per effect in `table`
/// (`command_id`, `action`): no command took effect twice, and the effects
/// match how each saga ended — a completed saga did every step and undid
/// none; a compensated or failed one undid every step it did; nothing was
/// undone that was not done.
pub async fn verify_effects(
    url: &str,
    table: &str,
    steps: &[&str],
    statuses: &HashMap<String, String>,
    tally: &mut Tally,
) {
    let db = Database::connect(url).await.unwrap();
    let sql = format!("SELECT command_id, count(*) AS n FROM {table} GROUP BY command_id");
    let rows =
        match retried(|| db.query_all(Statement::from_string(DbBackend::Postgres, &sql))).await {
            Ok(rows) => rows,
            Err(e) => return tally.violation(format!("5: cannot read the effects: {e}")),
        };
    let mut done: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut undone: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in rows {
        let command_id: String = r.try_get("", "command_id").unwrap();
        let n: i64 = r.try_get("", "n").unwrap();
        if n > 1 {
            tally.violation(format!("5: command {command_id} took effect {n} times"));
        }
        let mut parts = command_id.rsplitn(3, '.');
        let (Some(kind), Some(step), Some(saga)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let into = if kind == "undo" { &mut undone } else { &mut done };
        into.entry(saga.to_owned()).or_default().insert(step.to_owned());
    }
    let every: BTreeSet<String> = steps.iter().map(|s| (*s).to_owned()).collect();
    for (saga, status) in statuses {
        let d = done.remove(saga).unwrap_or_default();
        let u = undone.remove(saga).unwrap_or_default();
        let sound = match status.as_str() {
            "completed" => d == every && u.is_empty(),
            "compensated" | "failed" => d == u,
            _ => u.is_subset(&d),
        };
        if !sound {
            tally.violation(format!(
                "5: saga {saga} ended {status} with steps done {d:?} and undone {u:?}"
            ));
        }
    }
}
