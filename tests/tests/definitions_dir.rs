//! The shipped saga definitions, taken together: each loads, and no two define
//! the same saga.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const DEFINITIONS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sagas/definitions");

fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DEFINITIONS_DIR)
        .unwrap_or_else(|e| panic!("cannot list {DEFINITIONS_DIR}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_shipped_definition_loads_and_names_are_unique() {
    let files = yaml_files();
    assert!(
        files.len() >= 3,
        "expected the shipped definitions in {DEFINITIONS_DIR}, found {files:?}"
    );
    let mut by_name: BTreeMap<String, &Path> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        match sagas::definition::load_file(file) {
            Ok(d) => {
                if let Some(first) = by_name.insert(d.name.clone(), file) {
                    problems.push(format!(
                        "{} and {} both define saga `{}`",
                        first.display(),
                        file.display(),
                        d.name
                    ));
                }
            }
            Err(errors) => problems.push(errors.to_string()),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for expected in ["bench", "payout", "topup"] {
        assert!(
            by_name.contains_key(expected),
            "no definition of `{expected}` in {DEFINITIONS_DIR}"
        );
    }
}
