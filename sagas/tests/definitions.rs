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

/// A valid one-step definition: step `hold`, with a compensation.
const HOLD_YAML: &str = include_str!("fixtures/hold.yaml");

/// The step list of [`HOLD_YAML`]: its step `hold`.
fn hold() -> &'static str {
    HOLD_YAML.split_once("steps:\n").map(|(_, steps)| steps).unwrap()
}

/// [`HOLD_YAML`] with its steps replaced by `steps` (YAML list items).
fn with_steps(steps: &str) -> String {
    HOLD_YAML.replace(hold(), steps)
}

/// [`HOLD_YAML`] with `fields` (YAML, one per line) added to step `hold`.
fn hold_with(fields: &str) -> String {
    format!("{HOLD_YAML}{}", indent(fields))
}

/// [`HOLD_YAML`] with `fields` added at the top level.
fn top_with(fields: &str) -> String {
    HOLD_YAML.replace("version: 1\n", &format!("version: 1\n{fields}\n"))
}

/// [`HOLD_YAML`] followed by a step `post` (with a compensation) with `fields`
/// (YAML, one per line).
fn hold_then_post(fields: &str) -> String {
    let post =
        "  - name: post\n    participant: ledger\n    action: post\n    compensation: unpost\n";
    format!("{HOLD_YAML}{post}{}", indent(fields))
}

/// `fields` (YAML, one per line) indented as the fields of a step.
fn indent(fields: &str) -> String {
    fields.lines().map(|l| format!("    {l}\n")).collect()
}

/// A definition with one mistake, and the error it must give: its step, its
/// field, a fragment of its message and, when given, a fragment of its fix.
type Mistake<'a> = (String, Option<&'a str>, &'a str, &'a str, Option<&'a str>);

/// Assert that each definition gives exactly one error, where and as it must.
fn assert_each_only_error(cases: &[Mistake<'_>]) {
    for (yaml, step, field, fragment, fix) in cases {
        let e = assert_only_error(yaml, *step, field, fragment);
        if let Some(fix) = fix {
            assert!(e.fix.contains(fix), "fix of `{field}` lacks {fix:?}: {e}");
        }
    }
}

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
        "funding_account": "psp_clearing",
        "amount": 1250,
        "currency": "EUR",
        "card_token": "tok_1",
    });
    assert_eq!(d.input_schema.check(&input), Ok(()));
    // A caller cannot choose the account debited: only the card clearing account.
    let mut elsewhere = input.clone();
    elsewhere["funding_account"] = json!("someone-elses-wallet");
    assert_eq!(d.input_schema.check(&elsewhere).map_err(|e| e.len()), Err(1));
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
            "debit_account": "psp_clearing",
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
    let a = load_ok(HOLD_YAML);
    let b = load_ok(&format!("# a comment\n{HOLD_YAML}"));
    let c = load_ok(&HOLD_YAML.replace("void", "release"));
    assert_eq!(a.hash, b.hash);
    assert_ne!(a.hash, c.hash);
}

// ---------------------------------------------------------------------------
// Invalid definitions: one mistake each

#[test]
fn a_file_of_the_wrong_shape_is_reported_with_what_was_meant() {
    let misspelt = HOLD_YAML.replace("compensation: void", "compensaton: void");
    let missing_action = with_steps("  - name: hold\n    participant: ledger\n");
    assert_each_only_error(&[
        (
            misspelt,
            Some("hold"),
            "compensaton",
            "did you mean `compensation`",
            Some("known fields here"),
        ),
        (
            hold_with("retry: { attemps: 3 }"),
            Some("hold"),
            "retry.attemps",
            "did you mean `attempts`",
            None,
        ),
        (top_with("deadlne: 5m"), None, "deadlne", "did you mean `deadline`", None),
        (missing_action, Some("hold"), "action", "is required but missing", None),
        (
            HOLD_YAML.replace("version: 1", "version: one"),
            None,
            "version",
            "has the wrong shape",
            None,
        ),
        ("name: [unclosed\nsteps: {".into(), None, "(yaml)", "is not valid YAML", None),
        (String::new(), None, "(file)", "is empty", None),
        ("  \n# only a comment\n".into(), None, "(file)", "is empty", None),
        ("- name: t\n- version: 1\n".into(), None, "(file)", "is not a mapping", None),
    ]);
}

#[test]
fn names_steps_and_the_schema_are_checked() {
    let nameless_second = format!("{}{}", hold(), hold().replace("name: hold", "name: \"\""));
    let same_as_action = HOLD_YAML.replace("compensation: void", "compensation: hold");
    let retry_without_compensation = with_steps(
        "  - name: hold\n    participant: ledger\n    action: hold\n    compensation_retry: { attempts: 3 }\n",
    );
    let bad_schema =
        HOLD_YAML.replace("input_schema:\n  type: object\n", "input_schema:\n  type: 12\n");
    assert_each_only_error(&[
        (with_steps(&hold().repeat(2)), Some("hold"), "name", "is also the name of step #1", None),
        (with_steps(&nameless_second), Some("#2"), "name", "is empty", None),
        (
            with_steps("").replace("steps:\n", "steps: []\n"),
            None,
            "steps",
            "add at least one step",
            None,
        ),
        (
            HOLD_YAML.replace("version: 1", "version: 0"),
            None,
            "version",
            "versions start at 1",
            None,
        ),
        (
            HOLD_YAML.replace("participant: ledger", "participant: led.ger"),
            Some("hold"),
            "participant",
            "not a safe NATS subject token",
            None,
        ),
        (
            HOLD_YAML.replace("name: t\n", "name: top up\n"),
            None,
            "name",
            "not a safe NATS subject token",
            None,
        ),
        (same_as_action, Some("hold"), "compensation", "is the same as the action `hold`", None),
        (
            retry_without_compensation,
            Some("hold"),
            "compensation_retry",
            "has no compensation",
            None,
        ),
        (bad_schema, None, "input_schema", "is not a valid JSON Schema", None),
    ]);
}

#[test]
fn templates_are_checked_against_the_schema_the_saga_and_earlier_steps() {
    let reads_post = hold_then_post("").replace(
        "compensation: void\n",
        "compensation: void\n    input:\n      id: \"{{steps.post.output.id}}\"\n",
    );
    assert_each_only_error(&[
        (
            hold_then_post("input:\n  transfer_id: \"{{steps.hodl.output.id}}\""),
            Some("post"),
            "input.transfer_id",
            "which does not exist",
            Some("did you mean `hold`"),
        ),
        (reads_post, Some("hold"), "input.id", "refers to a later step", None),
        (
            hold_with("input:\n  id: \"{{steps.hold.output.id}}\""),
            Some("hold"),
            "input.id",
            "refers to this step itself",
            None,
        ),
        (
            hold_then_post("input:\n  id: \"{{steps.hold.id}}\""),
            Some("post"),
            "input.id",
            "must continue with `.output`",
            None,
        ),
        (
            hold_with("input:\n  amount: \"{{inputs.amount}}\""),
            Some("hold"),
            "input.amount",
            "unknown root `inputs`",
            Some("did you mean `input`"),
        ),
        (
            hold_with("input:\n  id: \"{{saga.nme}}\""),
            Some("hold"),
            "input.id",
            "is not a saga field",
            None,
        ),
        (
            hold_with("input:\n  amount: \"{{input.amont}}\""),
            Some("hold"),
            "input.amount",
            "not a property of input_schema",
            Some("did you mean `amount`"),
        ),
        (
            hold_with("input:\n  id: \"{{saga.id\""),
            Some("hold"),
            "input.id",
            "is never closed",
            None,
        ),
        // Closing braces without opening ones, after or before a reference.
        (
            hold_with("input:\n  id: \"x-{{saga.id}}-y}}\""),
            Some("hold"),
            "input.id",
            "without an opening",
            None,
        ),
        (
            hold_with("input:\n  id: \"x}}-{{saga.id}}\""),
            Some("hold"),
            "input.id",
            "without an opening",
            None,
        ),
        // In nested fields the error names the path.
        (
            hold_with("input:\n  lines:\n    - { sku: \"{{input.nope}}\" }"),
            Some("hold"),
            "input.lines.0.sku",
            "`nope`",
            None,
        ),
        (hold_with("input: \"{{input.amount}}\""), Some("hold"), "input", "is not a mapping", None),
    ]);
}

#[test]
fn durations_retries_and_the_deadline_are_checked() {
    let backoffs = |initial: &str, max: &str| {
        hold_with(&format!(
            "retry: {{ attempts: 3, initial_backoff: {initial}, max_backoff: {max} }}"
        ))
    };
    let deadline_10s = hold_with("timeout: 30s").replace("version: 1", "version: 1\ndeadline: 10s");
    assert_each_only_error(&[
        (
            hold_with("timeout: 5 minutes"),
            Some("hold"),
            "timeout",
            "unknown unit",
            Some("ms, s, m or h"),
        ),
        (hold_with("timeout: 0ms"), Some("hold"), "timeout", "is too short", None),
        (
            hold_with("retry: { attempts: 0 }"),
            Some("hold"),
            "retry.attempts",
            "would never be sent",
            None,
        ),
        (
            hold_with("retry: { attempts: 1000 }"),
            Some("hold"),
            "retry.attempts",
            "over the limit of 100",
            None,
        ),
        (
            backoffs("10s", "1s"),
            Some("hold"),
            "retry.initial_backoff",
            "longer than max_backoff 1s",
            None,
        ),
        // An unreadable initial_backoff is not also compared with max_backoff.
        (
            backoffs("soon", "100ms"),
            Some("hold"),
            "retry.initial_backoff",
            "does not start with a whole number",
            None,
        ),
        (deadline_10s, None, "deadline", "10s is shorter than the longest step timeout 30s", None),
        (top_with("deadline: 0s"), None, "deadline", "is zero", None),
        // Not also as "zero": the author wrote something, just not a duration.
        (top_with("deadline: 5 minutes"), None, "deadline", "unknown unit", None),
    ]);
}

#[test]
fn steps_after_the_pivot_are_retriable_and_have_no_compensation() {
    let charge = "  - name: charge\n    participant: payment\n    action: charge\n";
    let post_step = "  - name: post\n    participant: ledger\n    action: post\n";
    let compensated =
        with_steps(&format!("{charge}{post_step}    compensation: unpost\n    retriable: true\n"));
    let not_retriable = with_steps(&format!("{charge}{post_step}"));
    assert_each_only_error(&[
        (
            compensated,
            Some("post"),
            "compensation",
            "would never run",
            Some("remove `compensation:`"),
        ),
        (
            not_retriable.clone(),
            Some("post"),
            "retriable",
            "follows the pivot `charge`",
            Some("retriable: true"),
        ),
    ]);
    load_ok(&format!("{not_retriable}    retriable: true\n"));
}

#[test]
fn error_lines_name_file_step_field_and_fix() {
    let text = load_err(&hold_with("timeout: 0ms")).to_string();
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

/// Load one step whose `input` mapping is `input` (YAML, one field per line) and return its template.
fn template(input: &str) -> definition::PayloadTemplate {
    let fields: String = input.lines().map(|l| format!("\n  {l}")).collect();
    load_ok(&hold_with(&format!("input:{fields}"))).steps.remove(0).input
}

fn render(t: &definition::PayloadTemplate, input: &Value, outputs: &[Option<Value>]) -> Value {
    let ctx = RenderContext { input, saga_id: "s-7", saga_type: "t", outputs };
    t.render(&ctx).unwrap()
}

#[test]
fn a_whole_reference_keeps_its_json_type() {
    let t = template(
        "amount: \"{{input.amount}}\"
items: \"{{input.items}}\"
spaced: \"{{ input.amount }}\"
fixed: 3
flag: true",
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
        "id: \"{{saga.id}}-hold\"
memo: \"{{saga.type}}: {{input.amount}} to {{input.account}}\"
plain: \"no references\"",
    );
    let input = json!({ "amount": 1250, "account": "wallet-1" });
    assert_eq!(
        render(&t, &input, &[None]),
        json!({ "id": "s-7-hold", "memo": "t: 1250 to wallet-1", "plain": "no references" })
    );
}

#[test]
fn step_outputs_are_read_by_path_and_array_index() {
    let d = load_ok(&hold_then_post(
        "input:
  second: \"{{steps.hold.output.lines.1.sku}}\"
  all: [\"{{steps.hold.output.transfer_id}}\", \"{{input.amount}}\"]",
    ));
    let outputs =
        [Some(json!({ "transfer_id": "tr-1", "lines": [{ "sku": "a" }, { "sku": "b" }] })), None];
    assert_eq!(
        render(&d.steps[1].input, &json!({ "amount": 5 }), &outputs),
        json!({ "second": "b", "all": ["tr-1", 5] })
    );
}

#[test]
fn a_missing_path_is_a_render_error() {
    let t = template("amount: \"{{input.amount}}\"");
    let input = json!({ "account": "a" });
    let ctx = RenderContext { input: &input, saga_id: "s-7", saga_type: "t", outputs: &[None] };
    let e = t.render(&ctx).unwrap_err();
    assert_eq!(e.reference, "input.amount");
    assert!(e.to_string().contains("`amount` is not present"), "{e}");
}

#[test]
fn a_missing_step_output_is_a_render_error() {
    let d = load_ok(&hold_then_post("input:\n  id: \"{{steps.hold.output.transfer_id}}\""));
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

/// Hostile definitions under the size limit are answered quickly and briefly:
/// thousands of steps through YAML aliases, an alias bomb, a flood of mistakes.
mod bounded {
    use super::*;
    use std::time::Instant;

    /// The whole answer to a definition, as a client would see it.
    fn answer(yaml: &str) -> String {
        let started = Instant::now();
        let text = load_err(yaml).to_string();
        // Generous: a machine under load; unbounded validation took seconds here.
        assert!(started.elapsed().as_secs() < 5, "validation took {:?}", started.elapsed());
        text
    }

    #[test]
    fn thousands_of_aliased_steps_give_one_short_error() {
        let mut yaml = String::from(
            "name: many\nversion: 1\ninput_schema: {type: object}\nsteps:\n  - &s {name: a, participant: p, action: x}\n",
        );
        for _ in 0..8_000 {
            yaml.push_str("  - *s\n");
        }
        let text = answer(&yaml);
        assert!(text.contains("8001 steps, over the limit of 50"), "{text}");
        assert!(text.len() < 1_000, "{} bytes: {}", text.len(), &text[..500]);
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        let mut yaml = String::from(
            "name: bomb\nversion: 1\ninput_schema: {type: object}\nsteps: []\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n",
        );
        for level in 1..9 {
            let refs = vec![format!("*x{}", level - 1); 10].join(", ");
            yaml.push_str(&format!("x{level}: &x{level} [{refs}]\n"));
        }
        let text = answer(&yaml);
        assert!(text.contains("expands to over"), "{text}");
    }

    #[test]
    fn a_flood_of_mistakes_is_listed_up_to_a_limit_and_counted() {
        let mut yaml =
            String::from("name: flood\nversion: 1\ninput_schema: {type: object}\nsteps:\n");
        for i in 0..50 {
            yaml.push_str(&format!(
                "  - {{name: 's{i}!', participant: 'p!', action: 'x!', compensation: 'x!', input: {{a: '{{{{steps.nope{i}.output}}}}'}}}}\n"
            ));
        }
        let errors = load_err(&yaml);
        assert_eq!(errors.0.len(), 51, "50 listed and one counting the rest");
        let last = errors.0.last().unwrap();
        assert!(last.problem.contains("more problem(s), not listed"), "{last}");
        assert!(errors.to_string().len() < 100_000);
    }

    #[test]
    fn long_lists_of_names_are_cut() {
        let properties: Vec<String> = (0..500).map(|i| format!("\"p{i}\": {{}}")).collect();
        let yaml = format!(
            "name: props\nversion: 1\ninput_schema: {{type: object, properties: {{{}}}}}\nsteps:\n  - {{name: a, participant: p, action: x, input: {{v: '{{{{input.zzz}}}}'}}}}\n",
            properties.join(", ")
        );
        let errors = load_err(&yaml);
        let text = errors.to_string();
        assert!(text.contains("and 480 more"), "{text}");
        assert!(text.len() < 2_000, "{text}");
    }
}

// ---------------------------------------------------------------------------
// Outputs and tags

#[test]
fn output_and_tags_render_from_the_input_and_the_steps() {
    let d = load_ok(&top_with(
        "tags:\n  wallet: \"{{input.account}}\"\n  kind: \"top-{{saga.type}}\"\n\
         output:\n  transfer: \"{{steps.hold.output.transfer_id}}\"\n  wallet: \"{{input.account}}\"",
    ));
    let input = json!({"account": "alice", "amount": 5});
    assert_eq!(
        d.render_tags("s1", &input),
        [("kind".to_owned(), format!("top-{}", d.name)), ("wallet".into(), "alice".into())]
    );
    let outputs = [Some(json!({"transfer_id": "t-1"}))];
    let ctx = RenderContext { input: &input, saga_id: "s1", saga_type: &d.name, outputs: &outputs };
    let output = d.output.as_ref().expect("an output template").render(&ctx).unwrap();
    assert_eq!(output, json!({"transfer": "t-1", "wallet": "alice"}));
    // A tag whose field is absent is left out; a long value is cut.
    assert_eq!(d.render_tags("s1", &json!({})).len(), 1);
    let long = "é".repeat(200);
    let tags = d.render_tags("s1", &json!({ "account": long }));
    assert!(tags[1].1.len() <= definition::limits::TAG_VALUE_LEN_MAX, "{tags:?}");
}

#[test]
fn a_definition_without_output_or_tags_keeps_its_canonical_form() {
    let d = load_ok(HOLD_YAML);
    assert!(d.output.is_none() && d.tags.is_empty());
    assert!(!d.canonical_json.contains("\"output\"") && !d.canonical_json.contains("\"tags\""));
}

#[test]
fn bad_outputs_and_tags_are_located() {
    assert_each_only_error(&[
        (
            top_with("output:\n  x: \"{{steps.nope.output.y}}\""),
            None,
            "output.x",
            "names step `nope`, which does not exist",
            None,
        ),
        (
            top_with("tags:\n  t: \"{{steps.hold.output.y}}\""),
            None,
            "tags.t",
            "output does not exist yet",
            None,
        ),
        (
            top_with("tags:\n  \"a b\": \"{{input.x}}\""),
            None,
            "tags.a b",
            "is not a tag name",
            None,
        ),
        (top_with("tags:\n  t: fixed"), None, "tags.t", "refers to nothing", Some("{{input.")),
        (
            top_with(&format!(
                "tags:\n{}",
                (0..9).map(|i| format!("  t{i}: \"{{{{input.account}}}}\"\n")).collect::<String>()
            )),
            None,
            "tags",
            "over the limit of 8",
            None,
        ),
    ]);
}

#[test]
fn a_diff_lists_what_changed_step_by_step() {
    let old = load_ok(HOLD_YAML);
    assert!(definition::diff(&old, &old).is_empty());
    let new = load_ok(
        &hold_then_post("retriable: false")
            .replace("version: 1", "version: 2")
            .replace("compensation: void", "compensation: release"),
    );
    let lines = definition::diff(&old, &new);
    assert!(lines.contains(&"~ version: 1 → 2".to_owned()), "{lines:?}");
    assert!(lines.contains(&"~ step `hold` compensation: void → release".to_owned()), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("+ step #2 `post`")), "{lines:?}");
    let back = definition::diff(&new, &old);
    assert!(back.iter().any(|l| l.starts_with("- step #2 `post`")), "{back:?}");
}

// ---------------------------------------------------------------------------
// Conditions (`when:`)

#[test]
fn conditions_load_and_their_mistakes_are_located() {
    let ok = load_ok(&hold_then_post("when: \"input.amount > 100 && has(steps.hold)\""));
    assert_eq!(
        ok.steps[1].when.as_ref().unwrap().source(),
        "input.amount > 100 && has(steps.hold)"
    );
    assert!(ok.steps[0].when.is_none());
    // A definition without conditions keeps its hash: the field stays out of the canonical form.
    assert!(!load_ok(HOLD_YAML).canonical_json.contains("when"));
    assert_each_only_error(&[
        (
            hold_then_post("when: \"input.amount >\""),
            Some("post"),
            "when",
            "is not a CEL expression",
            Some("true or false"),
        ),
        (hold_then_post("when: \"\""), Some("post"), "when", "is empty", None),
        (
            hold_then_post("when: \"amount > 100\""),
            Some("post"),
            "when",
            "uses `amount`, which a condition cannot see",
            Some("`input`, `saga` or `steps`"),
        ),
        (
            hold_with("when: \"steps.post.output.ok\"")
                + "  - name: post\n    participant: ledger\n    action: post\n    compensation: unpost\n",
            Some("hold"),
            "when",
            "`steps.post`, which is not a step before this one",
            None,
        ),
        (
            hold_then_post("when: \"input.colour == 'red'\""),
            Some("post"),
            "when",
            "`input.colour`, which `input_schema` does not list",
            None,
        ),
    ]);
}

#[test]
fn a_condition_on_the_pivot_is_refused() {
    let pivot = format!(
        "{HOLD_YAML}  - name: charge\n    participant: payment\n    action: charge\n    \
         when: \"input.amount > 1\"\n"
    );
    assert_only_error(&pivot, Some("charge"), "when", "is set on the pivot");
}

// ---------------------------------------------------------------------------
// Waiting steps (`wait_for:`)

/// [`HOLD_YAML`] followed by a waiting step `confirmed` with `fields` added.
fn hold_then_wait(fields: &str) -> String {
    let wait = "  - name: confirmed\n    wait_for: { event: confirmation, timeout: 10m }\n";
    format!("{HOLD_YAML}{wait}{}", indent(fields))
}

#[test]
fn waiting_steps_load_and_their_mistakes_are_located() {
    let d = load_ok(&hold_then_wait(""));
    let wait = d.steps[1].wait.as_ref().unwrap();
    assert_eq!((wait.event.as_str(), wait.timeout.to_string().as_str()), ("confirmation", "10m"));
    assert!(d.steps[1].action.is_empty() && d.steps[1].participant.is_empty());
    assert_eq!(d.pivot, None, "a waiting step undoes nothing and is never the pivot");
    let keyed = load_ok(&format!(
        "{HOLD_YAML}  - name: confirmed\n    wait_for: {{ event: confirmation, timeout: 720h, \
         key: \"{{{{steps.hold.output.id}}}}\", schema: {{ type: object }} }}\n"
    ));
    assert!(keyed.steps[1].wait.as_ref().unwrap().key.is_some());
    // A compensation of its own, run by a participant when the saga turns back.
    let undone = load_ok(&hold_then_wait("participant: notify\ncompensation: withdraw"));
    assert_eq!(undone.steps[1].compensation.as_deref(), Some("withdraw"));
    assert_eq!(undone.pivot, None);
    assert_each_only_error(&[
        (
            hold_then_wait("action: confirm"),
            Some("confirmed"),
            "action",
            "is set on a waiting step",
            None,
        ),
        (hold_then_wait("timeout: 5s"), Some("confirmed"), "timeout", "`wait_for.timeout`", None),
        (
            hold_then_wait("participant: ledger"),
            Some("confirmed"),
            "participant",
            "without a compensation: it sends nothing to anyone",
            None,
        ),
        (
            hold_then_wait("compensation: unconfirm"),
            Some("confirmed"),
            "participant",
            "the compensation of a waiting step is sent to a participant",
            Some("add `participant:`"),
        ),
        (
            hold_then_wait("").replace("timeout: 10m", "timeout: 721h"),
            Some("confirmed"),
            "wait_for.timeout",
            "over the limit of 30 days",
            None,
        ),
        (
            hold_then_wait("").replace("event: confirmation", "event: \"con firm\""),
            Some("confirmed"),
            "wait_for.event",
            "not a safe NATS subject token",
            None,
        ),
        (
            hold_then_wait("").replace("timeout: 10m }", "timeout: 10m, key: \"fixed\" }"),
            Some("confirmed"),
            "wait_for.key",
            "refers to nothing",
            None,
        ),
        (
            hold_then_wait("").replace("timeout: 10m }", "timeout: 10m, schema: { type: 12 } }"),
            Some("confirmed"),
            "wait_for.schema",
            "is not a valid JSON Schema",
            None,
        ),
        (
            hold_then_wait("").replace("timeout: 10m }", "timeout: 10m, fail_when: \"evt.ok\" }"),
            Some("confirmed"),
            "wait_for.fail_when",
            "uses `evt`",
            Some("`event`"),
        ),
        (
            hold_then_wait("")
                + "  - name: post\n    participant: ledger\n    action: post\n    retriable: true\n"
                + "  - name: again\n    wait_for: { event: confirmation, timeout: 1m }\n",
            Some("again"),
            "wait_for",
            "follows the pivot",
            None,
        ),
        (
            with_steps("  - name: hold\n    action: hold\n    compensation: void\n"),
            Some("hold"),
            "participant",
            "is required but missing",
            Some("`wait_for:`"),
        ),
    ]);
}

#[test]
fn a_wait_too_short_a_bad_fail_when_and_a_deadline_shorter_than_a_wait_are_located() {
    let with_fail_when = |expr: &str| {
        hold_then_wait("")
            .replace("timeout: 10m }", &format!("timeout: 10m, fail_when: \"{expr}\" }}"))
    };
    let post =
        "  - name: post\n    participant: ledger\n    action: post\n    compensation: unpost\n";
    assert_each_only_error(&[
        (
            hold_then_wait("").replace("timeout: 10m", "timeout: 500ms"),
            Some("confirmed"),
            "wait_for.timeout",
            "too short to wait for anything",
            Some("at least 1s"),
        ),
        (
            with_fail_when("event.status =="),
            Some("confirmed"),
            "wait_for.fail_when",
            "is not a CEL expression",
            Some("`event`"),
        ),
        (
            with_fail_when("steps.post.output.ok") + post,
            Some("confirmed"),
            "wait_for.fail_when",
            "uses `steps.post`, which is not a step before this one",
            None,
        ),
        (
            with_fail_when("input.colour == event.colour"),
            Some("confirmed"),
            "wait_for.fail_when",
            "uses `input.colour`, which `input_schema` does not list",
            None,
        ),
        (
            hold_then_wait("").replace("version: 1\n", "version: 1\ndeadline: 5m\n"),
            None,
            "deadline",
            "5m is shorter than the longest step timeout 10m",
            Some("make the deadline longer"),
        ),
    ]);
}

// ---------------------------------------------------------------------------
// Parallel groups

/// `hold`, then a group `prep` whose branch `funds` holds `h1` and branch
/// `risk` holds `screen`, each with `extra` (YAML lines) added to the group
/// entry, then the steps `after` (YAML list items).
fn with_group(extra: &str, screen_fields: &str, after: &str) -> String {
    let screen_fields: String =
        screen_fields.lines().map(|l| format!("            {l}\n")).collect();
    format!(
        "{HOLD_YAML}  - name: prep\n{extra}    parallel:\n      - name: funds\n        steps:\n          \
         - {{ name: h1, participant: ledger, action: hold, compensation: void }}\n      \
         - name: risk\n        steps:\n          - name: screen\n            participant: risk\n            \
         action: screen\n            compensation: unscreen\n{screen_fields}{after}"
    )
}

#[test]
fn a_parallel_group_loads_flat_with_its_branches() {
    let d = load_ok(&with_group(
        "    when: \"input.amount > 10\"\n",
        "input: { after: \"{{steps.hold.output.id}}\" }",
        "  - { name: charge, participant: pay, action: charge, input: { a: \"{{steps.h1.output.id}}\", b: \"{{steps.screen.output.id}}\" } }\n",
    ));
    assert_eq!(step_names(&d), ["hold", "h1", "screen", "charge"]);
    assert_eq!(d.groups.len(), 1);
    let g = &d.groups[0];
    assert_eq!((g.name.as_str(), g.steps.clone()), ("prep", 1..3));
    assert_eq!(g.branches.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["funds", "risk"]);
    assert!(g.when.is_some());
    assert_eq!(d.steps[2].place, Some(sagas::definition::Place { group: 0, branch: 1 }));
    assert_eq!(d.pivot, Some(3));
    // A definition without groups keeps its hash: `parallel` is absent from
    // the canonical form unless written.
    assert!(!load_ok(HOLD_YAML).canonical_json.contains("parallel"));
}

#[test]
fn parallel_group_mistakes_are_located_by_group_branch_and_step() {
    let sibling = with_group("", "input: { h: \"{{steps.h1.output.id}}\" }", "");
    let errors = load_err(&sibling);
    assert_error(&errors, Some("prep/risk/screen"), "input.h", "parallel branch beside this one");
    let sibling_when = with_group("", "when: \"has(steps.h1)\"", "");
    assert_error(&load_err(&sibling_when), Some("prep/risk/screen"), "when", "steps.h1");

    let one_branch = format!(
        "{HOLD_YAML}  - name: prep\n    parallel:\n      - name: only\n        steps:\n          \
         - {{ name: h1, participant: ledger, action: hold, compensation: void }}\n"
    );
    assert_only_error(&one_branch, Some("prep"), "parallel", "at least two");

    let on_group = with_group("    participant: ledger\n", "", "");
    assert_only_error(&on_group, Some("prep"), "participant", "parallel group");

    let nested = with_group("", "parallel: []", "");
    assert_error(&load_err(&nested), Some("prep/risk/screen"), "parallel", "do not nest");

    let pivot_inside = with_group("", "", "").replace("compensation: unscreen\n", "");
    let errors = load_err(&pivot_inside);
    assert_error(&errors, Some("prep"), "parallel", "holds the pivot");

    let after_pivot = with_group("", "", "").replace(
        "  - name: hold\n    participant: ledger\n    action: hold\n    compensation: void\n",
        "  - name: hold\n    participant: ledger\n    action: hold\n",
    );
    assert_error(&load_err(&after_pivot), Some("prep"), "parallel", "follows the pivot");

    let twice = with_group("", "", "").replace("- name: risk", "- name: funds");
    assert_error(&load_err(&twice), Some("prep"), "parallel.1.name", "names two branches");

    let clash = with_group("", "", "").replace("name: h1", "name: prep");
    assert_error(&load_err(&clash), Some("prep/funds/prep"), "name", "parallel group `prep`");

    let second = "  - name: prep\n    parallel:\n      - name: x\n        steps:\n          \
                  - { name: x1, participant: p, action: a, compensation: u }\n      \
                  - name: y\n        steps:\n          \
                  - { name: y1, participant: p, action: a, compensation: u }\n";
    let groups_twice = with_group("", "", second);
    assert_error(&load_err(&groups_twice), Some("prep"), "name", "another parallel group");

    let typo = with_group("", "compensaton: x", "");
    assert_only_error(&typo, Some("prep/risk/screen"), "compensaton", "not a known field");
    let branch_typo = with_group("", "", "").replace(
        "        steps:\n          - { name: h1",
        "        stepz:\n          - { name: h1",
    );
    assert_only_error(
        &branch_typo,
        Some("prep"),
        "parallel.0.stepz",
        "known fields here: name, steps",
    );
}

#[test]
fn a_bad_condition_on_a_group_is_located_at_the_group() {
    assert_each_only_error(&[
        (
            with_group("    when: \"input.amount >\"\n", "", ""),
            Some("prep"),
            "when",
            "is not a CEL expression",
            Some("true or false"),
        ),
        (
            with_group("    when: \"input.colour == 'red'\"\n", "", ""),
            Some("prep"),
            "when",
            "`input.colour`, which `input_schema` does not list",
            None,
        ),
        (
            with_group("    when: \"steps.screen.output.ok\"\n", "", ""),
            Some("prep"),
            "when",
            "`steps.screen`, which is not a step before this one",
            None,
        ),
    ]);
}

#[test]
fn a_diff_says_when_a_step_moves_into_a_parallel_group() {
    let old = load_ok(&with_group("", "", ""));
    let lined = HOLD_YAML.to_owned()
        + "  - { name: h1, participant: ledger, action: hold, compensation: void }\n  \
           - { name: screen, participant: risk, action: screen, compensation: unscreen }\n";
    let new = load_ok(&lined);
    let lines = definition::diff(&old, &new);
    assert!(
        lines.contains(&"~ step `h1` runs: in group `prep`, branch `funds` → in line".to_owned()),
        "{lines:?}"
    );
    let when = load_ok(&with_group("    when: \"input.amount > 1\"\n", "", ""));
    let lines = definition::diff(&old, &when);
    assert_eq!(lines, ["~ group `prep` when: none → `input.amount > 1`"]);
}

#[test]
fn a_group_with_an_empty_branch_or_too_many_branches_is_refused() {
    let empty = with_group("", "", "").replace(
        "        steps:\n          - { name: h1, participant: ledger, action: hold, compensation: void }\n",
        "        steps: []\n",
    );
    assert_only_error(&empty, Some("prep"), "parallel.0.steps", "branch `funds` has no steps");
    let branch = |b: usize| {
        format!(
            "      - name: b{b}\n        steps:\n          \
             - {{ name: s{b}, participant: p, action: a, compensation: u }}\n"
        )
    };
    let nine: String = (0..9).map(branch).collect();
    let many = format!("{HOLD_YAML}  - name: prep\n    parallel:\n{nine}");
    assert_only_error(&many, Some("prep"), "parallel", "over the limit of 8");
}
