//! What a scenario found, and the row it prints: one line
//! `FAULT-ROW scenario|sagas run|terminal|parked (reasons)|violations|heal ms`
//! that `tests/fault-suite` reads into its table, then the test fails if an
//! invariant broke or an expectation of the scenario did not hold.

use std::collections::BTreeMap;
use std::time::Duration;

/// At most 300 characters of `s` (hostile inputs are long).
fn short(s: &str) -> String {
    if s.chars().count() <= 300 {
        return s.to_owned();
    }
    let head: String = s.chars().take(300).collect();
    format!("{head}…")
}

/// What a scenario found.
#[derive(Debug, Default)]
pub struct Tally {
    pub run: usize,
    pub terminal: usize,
    pub by_status: BTreeMap<String, usize>,
    pub parked: BTreeMap<String, usize>,
    /// Broken invariants of DESIGN.md (1-6): must stay empty.
    pub violations: Vec<String>,
    /// Other expectations of the scenario that did not hold.
    pub failures: Vec<String>,
}

impl Tally {
    pub fn violation(&mut self, v: String) {
        self.violations.push(short(&v));
    }

    pub fn fail(&mut self, f: String) {
        self.failures.push(short(&f));
    }

    pub fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(short(&what()));
        }
    }

    /// Print the scenario's row, then fail the test if anything broke.
    pub fn finish(self, scenario: &str, heal: Duration) {
        let parked_total: usize = self.parked.values().sum();
        let parked = if parked_total == 0 {
            "0".to_owned()
        } else {
            let reasons: Vec<String> =
                self.parked.iter().map(|(r, n)| format!("{r}={n}")).collect();
            format!("{parked_total} ({})", reasons.join(", "))
        };
        println!("{scenario}: {:?}", self.by_status);
        for v in self.violations.iter().take(20) {
            println!("  VIOLATION {v}");
        }
        for f in self.failures.iter().take(20) {
            println!("  FAILED {f}");
        }
        println!(
            "FAULT-ROW {scenario}|{}|{}|{parked}|{}|{}",
            self.run,
            self.terminal,
            self.violations.len(),
            heal.as_millis()
        );
        assert!(
            self.violations.is_empty() && self.failures.is_empty(),
            "{scenario}: {} invariant violations {:?}; {} failed expectations {:?}",
            self.violations.len(),
            self.violations.iter().take(5).collect::<Vec<_>>(),
            self.failures.len(),
            self.failures.iter().take(5).collect::<Vec<_>>(),
        );
    }
}
