//! `when:` conditions: a step runs only when its condition, a CEL expression
//! (the Common Expression Language: no loops, no I/O, always ends) over the
//! saga's input, its id and type, and earlier steps' outputs, is true.
//!
//! A condition is compiled and its names checked when the definition is
//! loaded ([`Condition::compile`], [`Condition::check_names`]); the machine
//! evaluates it once, when the step is reached, and records a skipped step
//! as an event, so a replay never evaluates it again.
//!
//! What a condition sees:
//! - `input`: the saga's input;
//! - `saga`: `{"id": …, "type": …}`;
//! - `steps`: the steps that succeeded so far, each `{"output": …}`
//!   (`has(steps.review)` tells whether `review` ran and succeeded).

use cel::common::ast::{EntryExpr, Expr};
use cel::parser::Expression;
use cel::{Context, Program, Value as CelValue};
use serde_json::{Value, json};
use std::sync::Arc;

/// Longest condition accepted, in bytes.
pub const CONDITION_LEN_MAX: usize = 1_024;
/// Deepest nesting of a condition's expression tree accepted.
const DEPTH_MAX: usize = 64;
/// The names a condition may start from.
pub const ROOTS: [&str; 3] = ["input", "steps", "saga"];
/// CEL's type names, which may appear bare (`type(x) == int`).
const TYPE_NAMES: [&str; 11] =
    ["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "dyn"];

/// A compiled `when:` condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<Program>,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// What a condition is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct ConditionContext<'a> {
    pub input: &'a Value,
    pub saga_id: &'a str,
    pub saga_type: &'a str,
    /// Each earlier step's name and output, when it succeeded.
    pub outputs: &'a [(&'a str, Option<&'a Value>)],
    /// The event a waiting step took (`event`, for its `fail_when:`).
    pub event: Option<&'a Value>,
}

/// A name a condition uses, found when it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    /// A name that is none of `input`, `steps` or `saga`.
    Unknown(String),
    /// `steps.<name>` for a step that is not an earlier one.
    NotEarlier(String),
    /// `input.<field>` for a field the input schema does not list.
    NotInSchema(String),
}

impl Condition {
    /// Compile `source`; the error says where it does not parse.
    pub fn compile(source: &str) -> Result<Self, String> {
        if source.trim().is_empty() {
            return Err("is empty".into());
        }
        if source.len() > CONDITION_LEN_MAX {
            return Err(format!(
                "is {} bytes, over the limit of {CONDITION_LEN_MAX}",
                source.len()
            ));
        }
        let program = Program::compile(source)
            .map_err(|e| format!("is not a CEL expression: {}", e.to_string().trim()))?;
        if depth(program.expression()) > DEPTH_MAX {
            return Err(format!("nests deeper than {DEPTH_MAX} levels"));
        }
        // One loop over a list costs as much as the list is long; a loop in a
        // loop, its square: refused, so no input can make a decision slow.
        let mut nested = false;
        walk(program.expression(), &mut Vec::new(), &mut |expr, bound| {
            nested |= matches!(expr, Expr::Comprehension(_)) && !bound.is_empty();
        });
        if nested {
            return Err(
                "puts a macro (all, exists, exists_one, map, filter) inside another: its cost \
                 would grow with the square of the list"
                    .into(),
            );
        }
        Ok(Self { source: source.to_owned(), program: Arc::new(program) })
    }

    /// The condition as written.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names it uses that cannot be right: not a root, not an earlier
    /// step (`earlier`), not an input field (`properties`, when the schema
    /// lists them).
    #[must_use]
    pub fn check_names(&self, earlier: &[&str], properties: Option<&[String]>) -> Vec<NameProblem> {
        self.check_names_with(earlier, properties, &[])
    }

    /// [`Self::check_names`], with more roots it may start from (`event`).
    #[must_use]
    pub fn check_names_with(
        &self,
        earlier: &[&str],
        properties: Option<&[String]>,
        more_roots: &[&str],
    ) -> Vec<NameProblem> {
        let mut problems = Vec::new();
        walk(self.program.expression(), &mut Vec::new(), &mut |expr, bound| match expr {
            Expr::Ident(name) => {
                let known = ROOTS.contains(&name.as_str())
                    || more_roots.contains(&name.as_str())
                    || TYPE_NAMES.contains(&name.as_str())
                    || bound.iter().any(|b| b == name);
                if !known {
                    problems.push(NameProblem::Unknown(name.clone()));
                }
            }
            Expr::Select(select) => {
                if let Expr::Ident(root) = &select.operand.expr
                    && !bound.iter().any(|b| b == root)
                {
                    match root.as_str() {
                        "steps" if !earlier.contains(&select.field.as_str()) => {
                            problems.push(NameProblem::NotEarlier(select.field.clone()));
                        }
                        "input" if properties.is_some_and(|p| !p.contains(&select.field)) => {
                            problems.push(NameProblem::NotInSchema(select.field.clone()));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        });
        problems.dedup();
        problems
    }

    /// Evaluate: `Ok(true)` runs the step, `Ok(false)` skips it; an error
    /// (a name absent at run time, a type mismatch, a result that is not a
    /// boolean) says why it could not be decided.
    pub fn evaluate(&self, ctx: &ConditionContext<'_>) -> Result<bool, String> {
        let mut context = Context::default();
        let steps: serde_json::Map<String, Value> = ctx
            .outputs
            .iter()
            .filter_map(|(name, output)| {
                output.map(|o| ((*name).to_owned(), json!({ "output": o })))
            })
            .collect();
        context.add_variable_from_value("input", to_cel(ctx.input));
        context.add_variable_from_value(
            "saga",
            to_cel(&json!({ "id": ctx.saga_id, "type": ctx.saga_type })),
        );
        context.add_variable_from_value("steps", to_cel(&Value::Object(steps)));
        if let Some(event) = ctx.event {
            context.add_variable_from_value("event", to_cel(event));
        }
        match self.program.execute(&context) {
            Ok(CelValue::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("`{}` gave {other:?}, not true or false", self.source)),
            Err(e) => Err(format!("`{}` could not be evaluated: {e}", self.source)),
        }
    }
}

/// JSON as CEL sees it. Whole numbers are `int` (so `input.amount + 1`
/// works; a JSON number above `i64::MAX` is `uint`), others `double`.
fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            (None, None) => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let map: std::collections::HashMap<String, CelValue> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            CelValue::from(map)
        }
    }
}

/// How deep an expression nests.
fn depth(expr: &Expression) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(expr, 1_usize)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        if d > DEPTH_MAX {
            break;
        }
        stack.extend(children(&e.expr).into_iter().map(|c| (c, d + 1)));
    }
    deepest
}

/// The direct sub-expressions of `expr`.
fn children(expr: &Expr) -> Vec<&Expression> {
    match expr {
        Expr::Call(call) => call.target.iter().map(AsRef::as_ref).chain(call.args.iter()).collect(),
        Expr::Comprehension(c) => {
            vec![&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result]
        }
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(map) => entries(&map.entries),
        Expr::Struct(s) => entries(&s.entries),
        Expr::Select(select) => vec![select.operand.as_ref()],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => Vec::new(),
    }
}

fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&Expression> {
    entries
        .iter()
        .flat_map(|e| match &e.expr {
            EntryExpr::MapEntry(m) => vec![&m.key, &m.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

/// Visit every expression with the comprehension variables bound where it is.
fn walk<'e>(
    expr: &'e Expression,
    bound: &mut Vec<String>,
    visit: &mut impl FnMut(&'e Expr, &[String]),
) {
    visit(&expr.expr, bound);
    match &expr.expr {
        Expr::Comprehension(c) => {
            // The range is outside the loop's scope; the rest sees its variables.
            walk(&c.iter_range, bound, visit);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            bound.extend(c.iter_var2.iter().cloned());
            bound.push(c.accu_var.clone());
            for e in [&c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(e, bound, visit);
            }
            bound.truncate(before);
        }
        other => {
            for child in children(other) {
                walk(child, bound, visit);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn eval(
        source: &str,
        input: &Value,
        outputs: &[(&str, Option<&Value>)],
    ) -> Result<bool, String> {
        let ctx =
            ConditionContext { input, saga_id: "s-1", saga_type: "topup", outputs, event: None };
        Condition::compile(source).unwrap().evaluate(&ctx)
    }

    #[test]
    fn conditions_see_the_input_the_saga_and_earlier_outputs() {
        let input = json!({"amount": 1500, "currency": "EUR"});
        let held = json!({"transfer_id": "t-1"});
        let outputs = [("hold", Some(&held)), ("screen", None)];
        assert_eq!(eval("input.amount > 1000", &input, &outputs), Ok(true));
        assert_eq!(
            eval("input.amount > 1000 && input.currency == 'USD'", &input, &outputs),
            Ok(false)
        );
        assert_eq!(eval("steps.hold.output.transfer_id == 't-1'", &input, &outputs), Ok(true));
        assert_eq!(eval("has(steps.screen)", &input, &outputs), Ok(false), "no output: not there");
        assert_eq!(
            eval("saga.type == 'topup' && saga.id.startsWith('s-')", &input, &outputs),
            Ok(true)
        );
        assert_eq!(eval("[1, 2, 3].exists(x, x == 2)", &input, &outputs), Ok(true));
    }

    #[test]
    fn what_cannot_be_decided_says_why() {
        let input = json!({"amount": 5});
        let e = eval("input.missing > 3", &input, &[]).unwrap_err();
        assert!(e.contains("could not be evaluated"), "{e}");
        let e = eval("input.amount + 1", &input, &[]).unwrap_err();
        assert!(e.contains("not true or false"), "{e}");
        assert_eq!(eval("input.amount + 1 == 6", &input, &[]), Ok(true), "whole numbers are int");
    }

    #[test]
    fn bad_conditions_are_refused_when_compiled() {
        assert!(Condition::compile("").unwrap_err().contains("empty"));
        assert!(Condition::compile("input.amount >").unwrap_err().contains("not a CEL expression"));
        let nested = Condition::compile("input.xs.all(a, input.xs.all(b, a == b))").unwrap_err();
        assert!(nested.contains("inside another"), "{nested}");
        assert!(Condition::compile("input.xs.all(a, a > 0) && input.ys.exists(b, b == 1)").is_ok());
        let long = format!("input.a == '{}'", "x".repeat(CONDITION_LEN_MAX));
        assert!(Condition::compile(&long).unwrap_err().contains("over the limit"));
        let deep = format!("{}true{}", "(".repeat(100), ")".repeat(100));
        let nested = "!".repeat(100) + "true";
        for text in [deep, nested] {
            if let Err(e) = Condition::compile(&text) {
                assert!(e.contains("deeper") || e.contains("CEL"), "{e}");
            }
        }
    }

    #[test]
    fn names_are_checked_against_the_roots_earlier_steps_and_the_schema() {
        let props = vec!["amount".to_owned()];
        let c = Condition::compile(
            "input.amount > 1 && input.colour == 'red' && steps.later.output.x && foo && \
             [1].all(v, v > 0) && type(input.amount) == int",
        )
        .unwrap();
        let problems = c.check_names(&["hold"], Some(&props));
        assert_eq!(
            problems,
            [
                NameProblem::NotInSchema("colour".into()),
                NameProblem::NotEarlier("later".into()),
                NameProblem::Unknown("foo".into()),
            ]
        );
        let fine = Condition::compile("has(steps.hold) && input.amount > 0").unwrap();
        assert!(fine.check_names(&["hold"], Some(&props)).is_empty());
        assert!(fine.check_names(&["hold"], None).is_empty(), "no property list: any field");
    }
}
