//! Invariants 3 (the ledger balances; a saga's hold is posted or voided as
//! the saga ended) and 4 (the payment provider charged each saga at most
//! once, and charged minus refunded is what the completed top-ups took), and
//! the ledger CLI and the provider's listing they read.

use crate::common::load::Begun;
use crate::tally::Tally;
use payment::api::ChargeList;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use std::collections::HashMap;
use std::process::Command as Process;
use std::time::{Duration, Instant};

/// Run the ledger CLI once.
pub fn ledger_cli(db_url: &str, args: &[&str]) -> Result<String, String> {
    let out = Process::new(env!("CARGO_BIN_EXE_ledger-e2e"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "error")
        .output()
        .map_err(|e| e.to_string())?;
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(format!("ledger {args:?}: {text}")) }
}

/// The provider's listing of its charges.
pub async fn charges(http: &reqwest::Client, psp_url: &str) -> Result<ChargeList, String> {
    let res = http
        .get(format!("{psp_url}/v1/charges?limit=1000"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    res.json().await.map_err(|e| e.to_string())
}

/// How many charges the provider lists under each reference (a saga's id).
fn per_reference(list: &ChargeList) -> HashMap<&str, usize> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for c in &list.charges {
        *counts.entry(c.reference.as_str()).or_default() += 1;
    }
    counts
}

/// Invariant 3: the ledger at `ledger_url` balances (`ledger verify` replays it; holds
/// are checked here: a parked saga may keep its hold pending for the
/// operator); a completed saga's hold is posted, a compensated or failed
/// saga's voided (or never made).
pub async fn verify_ledger(
    ledger_url: &str,
    begun: &[Begun],
    statuses: &HashMap<String, String>,
    tally: &mut Tally,
) {
    if let Err(e) = ledger_cli(ledger_url, &["verify", "--pending-older-than", "24h"]) {
        tally.violation(format!("3: {e}"));
    }
    let ledger_db = Database::connect(ledger_url).await.unwrap();
    let transfers: HashMap<String, String> = ledger_db
        .query_all(Statement::from_string(
            DbBackend::Postgres,
            "SELECT id, state FROM transfers".to_owned(),
        ))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.try_get("", "id").unwrap(), r.try_get("", "state").unwrap()))
        .collect();
    for b in begun {
        let status = statuses.get(&b.id).map_or("?", String::as_str);
        let hold = transfers.get(&format!("{}-{}", b.id, b.saga_type)).map(String::as_str);
        let sound = match status {
            "completed" => hold == Some("posted"),
            "compensated" | "failed" => matches!(hold, None | Some("voided")),
            _ => true,
        };
        if !sound {
            tally.violation(format!(
                "3: {} {} ended {status} with its hold {hold:?}",
                b.saga_type, b.id
            ));
        }
    }
}

/// Invariant 4: at most one charge per saga, on `before` (the last listing of
/// the provider before it was killed or stopped) and on the provider at
/// `psp_url` now (restarted from its journal); on the latter, charged minus refunded is what the
/// completed top-ups it charged took. The payment reconciler may still be
/// refunding a charge whose answer was lost: it is given 30 s.
pub async fn verify_provider(
    http: &reqwest::Client,
    psp_url: &str,
    before: &ChargeList,
    begun: &[Begun],
    statuses: &HashMap<String, String>,
    tally: &mut Tally,
) {
    if let Some((r, k)) = per_reference(before).iter().find(|(_, k)| **k > 1) {
        tally.violation(format!("4: saga {r} was charged {k} times by the first provider"));
    }
    let amounts: HashMap<&str, (i64, &str)> = begun
        .iter()
        .filter(|b| b.saga_type == "topup")
        .map(|b| {
            let status = statuses.get(&b.id).map_or("?", String::as_str);
            (b.id.as_str(), (b.input["amount"].as_i64().unwrap_or(0), status))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = charges(http, psp_url).await.unwrap();
        let by_reference = per_reference(&list);
        let twice: Vec<_> = by_reference.iter().filter(|(_, k)| **k > 1).collect();
        let strays: Vec<&str> =
            by_reference.keys().filter(|r| !amounts.contains_key(*r)).copied().collect();
        let expected: i64 = by_reference
            .keys()
            .filter_map(|r| amounts.get(r))
            .filter(|(_, status)| *status == "completed")
            .map(|(amount, _)| amount)
            .sum();
        let eur = list.totals.get("EUR").cloned().unwrap_or_default();
        let net = eur.charged - eur.refunded;
        let sound = twice.is_empty() && strays.is_empty() && list.count == list.charges.len();
        if sound && net == expected {
            println!("provider after restart: {} charges, net {net}", list.charges.len());
            tally.expect(!list.charges.is_empty(), || {
                "the restarted provider charged nobody".into()
            });
            break;
        }
        if Instant::now() > deadline {
            tally.violation(format!(
                "4: provider net {net} != completed top-ups {expected}; charged twice {twice:?}; \
                 unknown references {strays:?}; {} of {} listed",
                list.charges.len(),
                list.count
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
