//! Saga definitions for tests, kept as YAML files in `tests/kit/fixtures/`
//! rather than written inline in each test: read them with [`text`] or hand
//! their [`path`] to a program. A fixture may hold `$NAME` placeholders that
//! [`render`] fills in (timeouts and retry budgets a test chooses). The
//! shipped definitions in `sagas/definitions/` are reachable with [`shipped`].

use std::path::PathBuf;

/// The folder of the fixtures.
pub const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
/// The folder of the shipped definitions.
pub const SHIPPED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sagas/definitions");

/// Three compensable steps on participant `p` (template of [`three_steps`]).
pub const THREE_STEPS: &str = include_str!("../fixtures/three-steps.yaml");

/// The path of fixture `name` (`three-steps.yaml`).
#[must_use]
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(name)
}

/// The text of fixture `name`.
///
/// # Errors
/// When there is no such fixture.
pub fn text(name: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path(name))
}

/// The path of the shipped definition `name` (`topup.yaml`).
#[must_use]
pub fn shipped(name: &str) -> PathBuf {
    PathBuf::from(SHIPPED_DIR).join(name)
}

/// `template` with every `$NAME` listed in `values` replaced by its value
/// (names are capitals and underscores; others are left as they are).
#[must_use]
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let len =
            after.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(after.len());
        match values.iter().find(|(name, _)| *name == &after[..len]) {
            Some((_, value)) => out.push_str(value),
            None => out.push_str(&rest[dollar..=dollar + len]),
        }
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

/// Saga `three`: steps s1..s3 on participant `p` (actions a1..a3,
/// compensations u1..u3), each with this `timeout` and these retry budgets,
/// 20-100 ms backoffs; the input's `n` and the saga id go in every command.
#[must_use]
pub fn three_steps(timeout: &str, attempts: u32, compensation_attempts: u32) -> String {
    render(
        THREE_STEPS,
        &[
            ("TIMEOUT", timeout),
            ("ATTEMPTS", &attempts.to_string()),
            ("COMPENSATION_ATTEMPTS", &compensation_attempts.to_string()),
        ],
    )
}

/// A new temporary directory holding the given definitions (file name, YAML),
/// for an orchestrator's `--definitions`.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn definitions_dir(files: &[(&str, &str)]) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("skald-defs-{}", crate::token()));
    std::fs::create_dir_all(&dir)?;
    for (name, yaml) in files {
        std::fs::write(dir.join(name), yaml)?;
    }
    Ok(dir)
}

/// Every line of every `*.jsonl.gz` file under `dir` (an archive or an
/// export, its day folders included), parsed as JSON.
///
/// # Panics
/// When the directory, a file or a line cannot be read: a test's failure.
#[must_use]
#[allow(clippy::expect_used)]
pub fn gz_json_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the directory is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            lines.extend(gz_json_lines(&path));
            continue;
        }
        let file = std::fs::File::open(path).expect("a file");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::MultiGzDecoder::new(file), &mut text)
            .expect("gzip text");
        lines.extend(text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")));
    }
    lines
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn placeholders_are_filled_and_others_left() {
        let out = render("a: $A, b: $AB, c: $C, cost: $5", &[("A", "1"), ("AB", "2")]);
        assert_eq!(out, "a: 1, b: 2, c: $C, cost: $5");
    }

    #[test]
    fn every_fixture_is_a_valid_definition() {
        let three = three_steps("2s", 3, 4);
        assert!(!three.contains('$'), "{three}");
        let def = sagas::definition::load("three-steps.yaml", &three).unwrap();
        assert_eq!((def.name.as_str(), def.steps.len()), ("three", 3));
        assert_eq!(text("three-steps.yaml").unwrap(), THREE_STEPS);
        assert!(text("no-such-fixture.yaml").is_err());
        assert!(shipped("bench.yaml").is_file());
    }

    #[test]
    fn a_definitions_dir_holds_the_files() {
        let dir = definitions_dir(&[("a.yaml", "name: a")]).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("a.yaml")).unwrap(), "name: a");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
