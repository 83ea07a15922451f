//! The shipped Grafana dashboard (compose/grafana/dashboards/skald.json) is
//! valid JSON, every panel has a query, and every metric a query names is one
//! `/metrics` serves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use orchestrator::metrics::{EndStatus, Metrics, StepOutcome, TerminatedReply};
use orchestrator::store::StuckClass;
use sagas::protocol::Kind;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../compose/grafana/dashboards/skald.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// The `skald_…` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("skald_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

/// The metric families `/metrics` serves (`# TYPE <name> <kind>`), with the
/// sample names each gives (`_total`, `_bucket`, ...).
fn served() -> BTreeSet<String> {
    // A labelled family is served once it has a child: give every one one.
    let m = Metrics::new();
    m.saga_started("t");
    m.saga_ended("t", EndStatus::Completed);
    m.step_finished("p", "a", Kind::Do, StepOutcome::Ok, Some(Duration::from_millis(3)));
    m.retry("p", "a", Kind::Do);
    m.reply_terminated(TerminatedReply::Malformed);
    m.set_reply_consumer_lag(0, 1);
    m.set_stuck(StuckClass::Parked, 1);
    let text = m.render();
    let mut names = BTreeSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else { continue };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_count", "_sum"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_served() {
    let dashboard = dashboard();
    let served = served();
    assert!(served.contains("skald_sagas_started_total"), "{served:?}");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "sagas, latency, stuck, relay lag, partitions at least");
    let mut queried = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: no expr"));
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: `{expr}` names no skald metric");
            for name in names {
                assert!(served.contains(&name), "{title}: `{name}` is not served by /metrics");
                queried += 1;
            }
        }
    }
    assert!(queried >= 10, "{queried}");
}

#[test]
fn names_are_read_out_of_expressions() {
    assert_eq!(
        metric_names("sum(rate(skald_a_total[1m])) / max(skald_b)"),
        ["skald_a_total", "skald_b"]
    );
}
