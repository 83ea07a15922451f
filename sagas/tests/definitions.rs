//! The definition language seen from outside: the shipped definitions load, every
//! kind of mistake is reported with its file, step, field and a fix, and input
//! templates render as documented.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sagas::definition::{self, Definition, DefinitionErrors, RenderContext};
use sagas::{DefinitionError, Duration};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const FILE: &str = "test.yaml";

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("definitions").join(name)
}

fn load_shipped(name: &str) -> Definition {
    let path = shipped(name);
    definition::load_file(&path)
        .unwrap_or_else(|e| panic!("{} does not load:\n{e}", path.display()))
}

fn step_names(d: &Definition) -> Vec<&str> {
    d.steps.iter().map(|s| s.name.as_str()).collect()
}

fn load_ok(yaml: &str) -> Definition {
    definition::load(FILE, yaml).unwrap_or_else(|e| panic!("expected a valid definition:\n{e}"))
}

fn load_err(yaml: &str) -> DefinitionErrors {
    match definition::load(FILE, yaml) {
        Ok(d) => panic!("expected errors, but `{}` loaded", d.name),
        Err(e) => e,
    }
}

/// Assert that exactly one error is reported, at `step` / `field`, and that its
/// message (problem or fix) contains `fragment`.
fn assert_only_error(
    yaml: &str,
    step: Option<&str>,
    field: &str,
    fragment: &str,
) -> DefinitionError {
    let errors = load_err(yaml);
    assert_eq!(errors.0.len(), 1, "expected exactly one error, got:\n{errors}");
    let e = errors.0[0].clone();
    assert_error(&errors, step, field, fragment);
    e
}

/// Assert that some error is at `step` / `field` and mentions `fragment`.
fn assert_error(errors: &DefinitionErrors, step: Option<&str>, field: &str, fragment: &str) {
    let found = errors.0.iter().any(|e| {
        e.file == FILE
            && e.step.as_deref() == step
            && e.field == field
            && e.to_string().contains(fragment)
    });
    assert!(
        found,
        "no error at step {step:?}, field `{field}` mentioning {fragment:?}; got:\n{errors}"
    );
}

/// A valid one-step definition with `steps` appended as YAML list items.
fn with_steps(steps: &str) -> String {
    format!(
        "name: t
version: 1
input_schema:
  type: object
  properties:
    amount: {{ type: integer }}
    account: {{ type: string }}
    items: {{ type: array }}
steps:
{steps}"
    )
}

const HOLD: &str = "  - name: hold
    participant: ledger
    action: hold
    compensation: void
";

// ---------------------------------------------------------------------------
// Shipped definitions

#[test]
fn topup_loads_with_its_steps_and_pivot() {
    let d = load_shipped("topup.yaml");
    assert_eq!(d.name, "topup");
    assert_eq!(step_names(&d), ["hold", "charge", "post"]);
    assert_eq!(d.pivot, Some(2), "`post` is the first step without compensation");
    assert_eq!(d.steps[0].compensation.as_deref(), Some("void"));
    assert_eq!(d.steps[1].compensation.as_deref(), Some("refund"));
    assert!(d.steps[2].retriable);
    assert!(d.steps[2].retry.attempts >= 20);
    assert_eq!(d.deadline, Some(Duration::from_secs(300)));
    assert_eq!(d.hash.len(), 64);
    let input = json!({
        "wallet_account": "w-1",
        "funding_account": "clearing-card",
        "amount": 1250,
        "currency": "EUR",
        "card_token": "tok_1",
    });
    assert_eq!(d.input_schema.check(&input), Ok(()));
    let mut bad = input.clone();
    bad["currency"] = json!("eur");
    bad["extra"] = json!(1);
    assert_eq!(d.input_schema.check(&bad).map_err(|e| e.len()), Err(2));
    let outputs = [None, None, None];
    let ctx =
        RenderContext { input: &input, saga_id: "s-1", saga_type: "topup", outputs: &outputs };
    assert_eq!(
        d.steps[0].input.render(&ctx).unwrap(),
        json!({
            "transfer_id": "s-1-topup",
            "debit_account": "clearing-card",
            "credit_account": "w-1",
            "amount": 1250,
            "currency": "EUR",
        })
    );
}

#[test]
fn payout_loads_with_the_payout_as_pivot() {
    let d = load_shipped("payout.yaml");
    assert_eq!(d.name, "payout");
    assert_eq!(step_names(&d), ["hold", "payout", "post"]);
    assert_eq!(d.pivot, Some(1));
    assert_eq!(d.steps[1].participant, "payment");
    assert_eq!(d.steps[1].compensation, None);
    assert!(d.steps[2].retriable);
    assert!(d.is_before_or_at_pivot(1));
    assert!(!d.is_before_or_at_pivot(2));
}

#[test]
fn bench_loads_with_three_compensable_steps() {
    let d = load_shipped("bench.yaml");
    assert_eq!(d.name, "bench");
    assert_eq!(step_names(&d), ["one", "two", "three"]);
    assert_eq!(d.pivot, None);
    for (i, s) in d.steps.iter().enumerate() {
        assert_eq!(s.participant, "bench");
        assert_eq!(s.action, format!("step{}", i + 1));
        assert_eq!(s.compensation, Some(format!("undo{}", i + 1)));
    }
    assert_eq!(d.input_schema.check(&json!({})), Ok(()));
}

#[test]
fn the_hash_changes_with_the_content_only() {
    let a = load_ok(&with_steps(HOLD));
    let b = load_ok(&format!("# a comment\n{}", with_steps(HOLD)));
    let c = load_ok(&with_steps(&HOLD.replace("void", "release")));
    assert_eq!(a.hash, b.hash);
    assert_ne!(a.hash, c.hash);
}

// ---------------------------------------------------------------------------
// Invalid definitions: one mistake each

#[test]
fn misspelt_step_field_suggests_the_right_one() {
    let yaml = with_steps(
        "  - name: hold
    participant: ledger
    action: hold
    compensaton: void
",
    );
    let e = assert_only_error(&yaml, Some("hold"), "compensaton", "did you mean `compensation`");
    assert!(e.fix.contains("known fields here"), "{e}");
}

#[test]
fn misspelt_retry_field_suggests_the_right_one() {
    let yaml = with_steps(&format!("{HOLD}    retry: {{ attemps: 3 }}\n"));
    assert_only_error(&yaml, Some("hold"), "retry.attemps", "did you mean `attempts`");
}

#[test]
fn misspelt_top_level_field_suggests_the_right_one() {
    let yaml = with_steps(HOLD).replace("version: 1", "version: 1\ndeadlne: 5m");
    assert_only_error(&yaml, None, "deadlne", "did you mean `deadline`");
}

#[test]
fn missing_action_is_reported() {
    let yaml = with_steps(
        "  - name: hold
    participant: ledger
",
    );
    assert_only_error(&yaml, Some("hold"), "action", "is required but missing");
}

#[test]
fn wrongly_typed_field_is_reported() {
    let yaml = with_steps(HOLD).replace("version: 1", "version: one");
    assert_only_error(&yaml, None, "version", "has the wrong shape");
}

#[test]
fn duplicate_step_names_are_reported() {
    let yaml = with_steps(&format!("{HOLD}{HOLD}"));
    assert_only_error(&yaml, Some("hold"), "name", "is also the name of step #1");
}

#[test]
fn empty_step_name_is_reported_by_position() {
    let yaml = with_steps(&format!("{HOLD}{}", HOLD.replace("name: hold", "name: \"\"")));
    assert_only_error(&yaml, Some("#2"), "name", "is empty");
}

#[test]
fn empty_steps_are_reported() {
    let yaml = with_steps("").replace("steps:\n", "steps: []\n");
    assert_only_error(&yaml, None, "steps", "add at least one step");
}

#[test]
fn zero_version_is_reported() {
    let yaml = with_steps(HOLD).replace("version: 1", "version: 0");
    assert_only_error(&yaml, None, "version", "versions start at 1");
}

#[test]
fn template_naming_an_unknown_step_is_reported() {
    let yaml = with_steps(&format!(
        "{HOLD}  - name: post
    participant: ledger
    action: post
    compensation: unpost
    input:
      transfer_id: \"{{{{steps.hodl.output.id}}}}\"
"
    ));
    let e = assert_only_error(&yaml, Some("post"), "input.transfer_id", "which does not exist");
    assert!(e.fix.contains("did you mean `hold`"), "{e}");
}

#[test]
fn template_naming_a_later_step_is_reported() {
    let yaml = with_steps(&format!(
        "{}  - name: post
    participant: ledger
    action: post
    compensation: unpost
",
        HOLD.replace(
            "compensation: void\n",
            "compensation: void\n    input:\n      id: \"{{steps.post.output.id}}\"\n"
        )
    ));
    assert_only_error(&yaml, Some("hold"), "input.id", "refers to a later step");
}

#[test]
fn template_naming_the_step_itself_is_reported() {
    let yaml =
        with_steps(&format!("{HOLD}    input:\n      id: \"{{{{steps.hold.output.id}}}}\"\n"));
    assert_only_error(&yaml, Some("hold"), "input.id", "refers to this step itself");
}

#[test]
fn template_without_output_after_the_step_is_reported() {
    let yaml = with_steps(&format!(
        "{HOLD}  - name: post
    participant: ledger
    action: post
    compensation: unpost
    input:
      id: \"{{{{steps.hold.id}}}}\"
"
    ));
    assert_only_error(&yaml, Some("post"), "input.id", "must continue with `.output`");
}

#[test]
fn unknown_template_root_suggests_the_right_one() {
    let yaml = with_steps(&format!("{HOLD}    input:\n      amount: \"{{{{inputs.amount}}}}\"\n"));
    let e = assert_only_error(&yaml, Some("hold"), "input.amount", "unknown root `inputs`");
    assert!(e.fix.contains("did you mean `input`"), "{e}");
}

#[test]
fn unknown_saga_field_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    input:\n      id: \"{{{{saga.nme}}}}\"\n"));
    assert_only_error(&yaml, Some("hold"), "input.id", "is not a saga field");
}

#[test]
fn input_property_missing_from_the_schema_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    input:\n      amount: \"{{{{input.amont}}}}\"\n"));
    let e =
        assert_only_error(&yaml, Some("hold"), "input.amount", "not a property of input_schema");
    assert!(e.fix.contains("did you mean `amount`"), "{e}");
}

#[test]
fn unclosed_template_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    input:\n      id: \"{{{{saga.id\"\n"));
    assert_only_error(&yaml, Some("hold"), "input.id", "is never closed");
}

#[test]
fn closing_braces_without_opening_are_reported_anywhere_in_the_text() {
    let trailing =
        with_steps(&format!("{HOLD}    input:\n      id: \"x-{{{{saga.id}}}}-y}}}}\"\n"));
    assert_only_error(&trailing, Some("hold"), "input.id", "without an opening");
    let leading = with_steps(&format!("{HOLD}    input:\n      id: \"x}}}}-{{{{saga.id}}}}\"\n"));
    assert_only_error(&leading, Some("hold"), "input.id", "without an opening");
}

#[test]
fn template_errors_in_nested_fields_name_the_path() {
    let yaml = with_steps(&format!(
        "{HOLD}    input:\n      lines:\n        - {{ sku: \"{{{{input.nope}}}}\" }}\n"
    ));
    assert_only_error(&yaml, Some("hold"), "input.lines.0.sku", "`nope`");
}

#[test]
fn input_that_is_not_a_mapping_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    input: \"{{{{input.amount}}}}\"\n"));
    assert_only_error(&yaml, Some("hold"), "input", "is not a mapping");
}

#[test]
fn unreadable_duration_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    timeout: 5 minutes\n"));
    let e = assert_only_error(&yaml, Some("hold"), "timeout", "unknown unit");
    assert!(e.fix.contains("ms, s, m or h"), "{e}");
}

#[test]
fn zero_timeout_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    timeout: 0ms\n"));
    assert_only_error(&yaml, Some("hold"), "timeout", "is too short");
}

#[test]
fn zero_retry_attempts_are_reported() {
    let yaml = with_steps(&format!("{HOLD}    retry: {{ attempts: 0 }}\n"));
    assert_only_error(&yaml, Some("hold"), "retry.attempts", "would never be sent");
}

#[test]
fn too_many_retry_attempts_are_reported() {
    let yaml = with_steps(&format!("{HOLD}    retry: {{ attempts: 1000 }}\n"));
    assert_only_error(&yaml, Some("hold"), "retry.attempts", "over the limit of 100");
}

#[test]
fn initial_backoff_longer_than_max_is_reported() {
    let yaml = with_steps(&format!(
        "{HOLD}    retry: {{ attempts: 3, initial_backoff: 10s, max_backoff: 1s }}\n"
    ));
    assert_only_error(&yaml, Some("hold"), "retry.initial_backoff", "longer than max_backoff 1s");
}

#[test]
fn unreadable_backoff_is_reported_once() {
    // The unreadable initial_backoff must not also be compared with max_backoff.
    let yaml = with_steps(&format!(
        "{HOLD}    retry: {{ attempts: 3, initial_backoff: soon, max_backoff: 100ms }}\n"
    ));
    assert_only_error(
        &yaml,
        Some("hold"),
        "retry.initial_backoff",
        "does not start with a whole number",
    );
}

#[test]
fn compensation_retry_without_compensation_is_reported() {
    let yaml = with_steps(
        "  - name: hold
    participant: ledger
    action: hold
    compensation_retry: { attempts: 3 }
",
    );
    assert_only_error(&yaml, Some("hold"), "compensation_retry", "has no compensation");
}

#[test]
fn invalid_json_schema_is_reported() {
    let yaml =
        with_steps(HOLD).replace("input_schema:\n  type: object\n", "input_schema:\n  type: 12\n");
    assert_only_error(&yaml, None, "input_schema", "is not a valid JSON Schema");
}

#[test]
fn step_after_the_pivot_cannot_have_a_compensation() {
    let yaml = with_steps(
        "  - name: charge
    participant: payment
    action: charge
  - name: post
    participant: ledger
    action: post
    compensation: unpost
    retriable: true
",
    );
    let e = assert_only_error(&yaml, Some("post"), "compensation", "would never run");
    assert!(e.fix.contains("remove `compensation:`"), "{e}");
}

#[test]
fn step_after_the_pivot_must_be_retriable() {
    let yaml = with_steps(
        "  - name: charge
    participant: payment
    action: charge
  - name: post
    participant: ledger
    action: post
",
    );
    let e = assert_only_error(&yaml, Some("post"), "retriable", "follows the pivot `charge`");
    assert!(e.fix.contains("retriable: true"), "{e}");
    load_ok(&format!("{yaml}    retriable: true\n"));
}

#[test]
fn participant_that_is_not_a_subject_token_is_reported() {
    let yaml = with_steps(&HOLD.replace("participant: ledger", "participant: led.ger"));
    assert_only_error(&yaml, Some("hold"), "participant", "not a safe NATS subject token");
}

#[test]
fn saga_name_that_is_not_a_subject_token_is_reported() {
    let yaml = with_steps(HOLD).replace("name: t\n", "name: top up\n");
    assert_only_error(&yaml, None, "name", "not a safe NATS subject token");
}

#[test]
fn compensation_equal_to_action_is_reported() {
    let yaml = with_steps(&HOLD.replace("compensation: void", "compensation: hold"));
    assert_only_error(&yaml, Some("hold"), "compensation", "is the same as the action `hold`");
}

#[test]
fn deadline_shorter_than_a_step_timeout_is_reported() {
    let yaml = with_steps(&format!("{HOLD}    timeout: 30s\n"))
        .replace("version: 1", "version: 1\ndeadline: 10s");
    assert_only_error(&yaml, None, "deadline", "10s is shorter than the longest step timeout 30s");
}

#[test]
fn zero_deadline_is_reported() {
    let yaml = with_steps(HOLD).replace("version: 1", "version: 1\ndeadline: 0s");
    assert_only_error(&yaml, None, "deadline", "is zero");
}

#[test]
fn unreadable_deadline_is_reported_once() {
    // Not also as "zero": the author wrote something, just not a duration.
    let yaml = with_steps(HOLD).replace("version: 1", "version: 1\ndeadline: 5 minutes");
    assert_only_error(&yaml, None, "deadline", "unknown unit");
}

#[test]
fn text_that_is_not_yaml_is_reported() {
    assert_only_error("name: [unclosed\nsteps: {", None, "(yaml)", "is not valid YAML");
}

#[test]
fn empty_file_is_reported() {
    assert_only_error("", None, "(file)", "is empty");
    assert_only_error("  \n# only a comment\n", None, "(file)", "is empty");
}

#[test]
fn top_level_list_is_reported() {
    assert_only_error("- name: t\n- version: 1\n", None, "(file)", "is not a mapping");
}

#[test]
fn error_lines_name_file_step_field_and_fix() {
    let yaml = with_steps(&format!("{HOLD}    timeout: 0ms\n"));
    let text = load_err(&yaml).to_string();
    assert!(
        text.starts_with("test.yaml: step `hold`, field `timeout`: 0ms is too short"),
        "{text}"
    );
    assert!(text.contains(". Fix: use at least 10ms"), "{text}");
    let text = load_err("").to_string();
    assert_eq!(
        text,
        "test.yaml: field `(file)`: is empty. Fix: write a definition: name, version, input_schema, steps"
    );
}

#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let yaml = "name: t
version: 0
deadline: 1s
input_schema:
  type: object
  properties:
    amount: { type: integer }
steps:
  - name: hold
    participant: led.ger
    action: hold
    compensation: hold
    timeout: 5 minutes
    retry: { attempts: 0 }
    input:
      amount: \"{{input.amont}}\"
  - name: charge
    participant: payment
    action: charge
    timeout: 2s
  - name: hold
    participant: ledger
    action: post
    input:
      id: \"{{steps.nope.output.id}}\"
";
    let errors = load_err(yaml);
    assert_error(&errors, None, "version", "is 0");
    assert_error(&errors, Some("hold"), "participant", "not a safe NATS subject token");
    assert_error(&errors, Some("hold"), "compensation", "is the same as the action");
    assert_error(&errors, Some("hold"), "timeout", "unknown unit");
    assert_error(&errors, Some("hold"), "retry.attempts", "is 0");
    assert_error(&errors, Some("hold"), "input.amount", "not a property of input_schema");
    assert_error(&errors, Some("hold"), "name", "is also the name of step #1");
    assert_error(&errors, Some("hold"), "retriable", "follows the pivot `charge`");
    assert_error(&errors, Some("hold"), "input.id", "which does not exist");
    assert_error(&errors, None, "deadline", "shorter than the longest step timeout");
    assert_eq!(errors.0.len(), 10, "{errors}");
    assert_eq!(errors.to_string().lines().count(), 10);
    assert!(errors.mentions("did you mean `amount`"));
}

#[test]
fn missing_file_is_reported() {
    let e = definition::load_file(Path::new("/nonexistent/skald/saga.yaml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].field, "(file)");
    assert!(e.mentions("cannot be read"), "{e}");
}

// ---------------------------------------------------------------------------
// Templates

/// Load one step whose `input` mapping is `input` (YAML, indented 6) and return its template.
fn template(input: &str) -> definition::PayloadTemplate {
    let yaml = with_steps(&format!("{HOLD}    input:\n{input}"));
    load_ok(&yaml).steps.remove(0).input
}

fn render(t: &definition::PayloadTemplate, input: &Value, outputs: &[Option<Value>]) -> Value {
    let ctx = RenderContext { input, saga_id: "s-7", saga_type: "t", outputs };
    t.render(&ctx).unwrap()
}

#[test]
fn a_whole_reference_keeps_its_json_type() {
    let t = template(
        "      amount: \"{{input.amount}}\"
      items: \"{{input.items}}\"
      spaced: \"{{ input.amount }}\"
      fixed: 3
      flag: true
",
    );
    let input = json!({ "amount": 1250, "items": [1, 2], "account": "a" });
    assert_eq!(
        render(&t, &input, &[None]),
        json!({ "amount": 1250, "items": [1, 2], "spaced": 1250, "fixed": 3, "flag": true })
    );
}

#[test]
fn references_inside_text_are_interpolated() {
    let t = template(
        "      id: \"{{saga.id}}-hold\"
      memo: \"{{saga.type}}: {{input.amount}} to {{input.account}}\"
      plain: \"no references\"
",
    );
    let input = json!({ "amount": 1250, "account": "wallet-1" });
    assert_eq!(
        render(&t, &input, &[None]),
        json!({ "id": "s-7-hold", "memo": "t: 1250 to wallet-1", "plain": "no references" })
    );
}

#[test]
fn step_outputs_are_read_by_path_and_array_index() {
    let yaml = with_steps(&format!(
        "{HOLD}  - name: post
    participant: ledger
    action: post
    compensation: unpost
    input:
      second: \"{{{{steps.hold.output.lines.1.sku}}}}\"
      all: [\"{{{{steps.hold.output.transfer_id}}}}\", \"{{{{input.amount}}}}\"]
"
    ));
    let d = load_ok(&yaml);
    let outputs =
        [Some(json!({ "transfer_id": "tr-1", "lines": [{ "sku": "a" }, { "sku": "b" }] })), None];
    assert_eq!(
        render(&d.steps[1].input, &json!({ "amount": 5 }), &outputs),
        json!({ "second": "b", "all": ["tr-1", 5] })
    );
}

#[test]
fn a_missing_path_is_a_render_error() {
    let t = template("      amount: \"{{input.amount}}\"\n");
    let input = json!({ "account": "a" });
    let ctx = RenderContext { input: &input, saga_id: "s-7", saga_type: "t", outputs: &[None] };
    let e = t.render(&ctx).unwrap_err();
    assert_eq!(e.reference, "input.amount");
    assert!(e.to_string().contains("`amount` is not present"), "{e}");
}

#[test]
fn a_missing_step_output_is_a_render_error() {
    let yaml = with_steps(&format!(
        "{HOLD}  - name: post
    participant: ledger
    action: post
    compensation: unpost
    input:
      id: \"{{{{steps.hold.output.transfer_id}}}}\"
"
    ));
    let d = load_ok(&yaml);
    let input = json!({});
    let ctx = RenderContext { input: &input, saga_id: "s", saga_type: "t", outputs: &[None, None] };
    let e = d.steps[1].input.render(&ctx).unwrap_err();
    assert!(e.to_string().contains("step `hold` has no output"), "{e}");
    let outputs = [Some(json!({ "other": 1 })), None];
    let ctx = RenderContext { input: &input, saga_id: "s", saga_type: "t", outputs: &outputs };
    let e = d.steps[1].input.render(&ctx).unwrap_err();
    assert!(e.to_string().contains("`transfer_id` is not present"), "{e}");
}

#[test]
fn nameless_steps_are_named_by_position_everywhere() {
    let after_pivot = with_steps(
        "  - name: charge
    participant: payment
    action: charge
  - name: \"\"
    participant: ledger
    action: post
",
    );
    let errors = load_err(&after_pivot);
    assert_error(&errors, Some("#2"), "name", "is empty");
    assert_error(&errors, Some("#2"), "retriable", "follows the pivot `charge`");
    assert_eq!(errors.0.len(), 2, "{errors}");
    let bad_shape = with_steps("  - name: \"\"\n    participant: ledger\n    actoin: post\n");
    assert_only_error(&bad_shape, Some("#1"), "actoin", "did you mean `action`");
}
