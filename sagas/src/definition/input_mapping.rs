//! A step's `input` mapping compiled into a [`PayloadTemplate`], every
//! reference checked against the definition: the input schema's properties,
//! the saga's fields, and the outputs of earlier steps only.

use super::Place;
use super::error::{Collector, did_you_mean, listing};
use super::limits::REFERENCES_PER_STEP_MAX;
use super::template::{self, PayloadTemplate, RawSegment, Reference, Root, Segment};
use serde_json::Value;

/// Which steps' outputs a step (at `index` in the flat list of steps) may
/// use: those that have surely ended when it runs. A step in a parallel
/// branch sees the steps before its group and those before it in its own
/// branch, not the branches beside it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope<'a> {
    pub index: usize,
    pub places: &'a [Option<Place>],
}

impl Scope<'_> {
    /// Why step `target`'s output cannot be used here, if it cannot.
    pub fn hides(&self, target: usize) -> Option<&'static str> {
        if target == self.index {
            return Some("this step itself");
        }
        if target > self.index {
            return Some("a later step");
        }
        let here = self.places.get(self.index).copied().flatten();
        let there = self.places.get(target).copied().flatten();
        match (here, there) {
            (Some(a), Some(b)) if a.group == b.group && a.branch != b.branch => {
                Some("a step in a parallel branch beside this one")
            }
            _ => None,
        }
    }

    /// The names among `names` whose outputs are visible here.
    pub fn visible<'n>(&self, names: &[&'n str]) -> Vec<&'n str> {
        names
            .iter()
            .enumerate()
            .filter(|(j, _)| self.hides(*j).is_none())
            .map(|(_, n)| *n)
            .collect()
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compile(
    c: &mut Collector,
    label: Option<&str>,
    scope: Scope<'_>,
    field: &str,
    v: &Value,
    names: &[&str],
    properties: Option<&[String]>,
    refs: &mut usize,
) -> PayloadTemplate {
    match v {
        Value::String(text) => {
            let parts = match template::split(text) {
                Ok(p) => p,
                Err(problem) => {
                    c.push(label, field, problem, "write references as `{{input.x}}`, `{{saga.id}}` or `{{steps.<step>.output.y}}`");
                    return PayloadTemplate::Literal(v.clone());
                }
            };
            let mut segments = Vec::with_capacity(parts.len());
            for part in parts {
                match part {
                    RawSegment::Text(t) => segments.push(Segment::Text(t)),
                    RawSegment::Ref(r) => {
                        *refs += 1;
                        if *refs == REFERENCES_PER_STEP_MAX + 1 {
                            c.push(
                                label,
                                field,
                                format!("the step has over {REFERENCES_PER_STEP_MAX} references"),
                                "pass whole objects (`{{input.order}}`) instead of many fields",
                            );
                        }
                        match resolve(r, scope, names, properties) {
                            Ok(r) => segments.push(Segment::Ref(r)),
                            Err((problem, fix)) => c.push(label, field, problem, fix),
                        }
                    }
                }
            }
            match segments.as_slice() {
                [] => PayloadTemplate::Literal(v.clone()),
                [Segment::Text(_)] => PayloadTemplate::Literal(v.clone()),
                [Segment::Ref(r)] => PayloadTemplate::Value(r.clone()),
                _ => PayloadTemplate::Text(segments),
            }
        }
        Value::Array(items) => PayloadTemplate::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    compile(c, label, scope, &format!("{field}.{i}"), item, names, properties, refs)
                })
                .collect(),
        ),
        Value::Object(map) => PayloadTemplate::Object(
            map.iter()
                .map(|(k, item)| {
                    (
                        k.clone(),
                        compile(
                            c,
                            label,
                            scope,
                            &format!("{field}.{k}"),
                            item,
                            names,
                            properties,
                            refs,
                        ),
                    )
                })
                .collect(),
        ),
        other => PayloadTemplate::Literal(other.clone()),
    }
}

/// Resolve a reference's root against the definition; errors are (problem, fix).
fn resolve(
    r: template::RawReference,
    scope: Scope<'_>,
    names: &[&str],
    properties: Option<&[String]>,
) -> Result<Reference, (String, String)> {
    let text = r.text.clone();
    let mut segs = r.segments.into_iter();
    let root = segs.next().unwrap_or_default();
    let rest: Vec<String> = segs.collect();
    match root.as_str() {
        "input" => {
            if let (Some(first), Some(props)) = (rest.first(), properties)
                && !props.iter().any(|p| p == first)
            {
                let known: Vec<&str> = props.iter().map(String::as_str).collect();
                return Err((
                    format!(
                        "`{{{{{text}}}}}` names `{first}`, which is not a property of input_schema"
                    ),
                    format!(
                        "{}declared properties: {}",
                        did_you_mean(first, &known),
                        listing(&known)
                    ),
                ));
            }
            Ok(Reference { root: Root::Input, path: rest, text })
        }
        "saga" => match rest.as_slice() {
            [f] if f == "id" => Ok(Reference { root: Root::SagaId, path: vec![], text }),
            [f] if f == "type" => Ok(Reference { root: Root::SagaType, path: vec![], text }),
            _ => Err((
                format!("`{{{{{text}}}}}` is not a saga field"),
                "use `{{saga.id}}` or `{{saga.type}}`".to_owned(),
            )),
        },
        "steps" => {
            let Some(step) = rest.first() else {
                return Err((
                    format!("`{{{{{text}}}}}` names no step"),
                    "write `{{steps.<step>.output.<field>}}`".to_owned(),
                ));
            };
            let Some(target) = names.iter().position(|n| n == step) else {
                return Err((
                    format!("`{{{{{text}}}}}` names step `{step}`, which does not exist"),
                    format!("{}steps are: {}", did_you_mean(step, names), listing(names)),
                ));
            };
            if let Some(which) = scope.hides(target) {
                return Err((
                    format!("`{{{{{text}}}}}` refers to {which}, whose output does not exist yet"),
                    "refer only to outputs of steps that end before this one: listed before it, \
                     and not in a parallel branch beside it"
                        .to_owned(),
                ));
            }
            if rest.get(1).map(String::as_str) != Some("output") {
                return Err((
                    format!("`{{{{{text}}}}}` must continue with `.output` after the step name"),
                    format!("write `{{{{steps.{step}.output.<field>}}}}`"),
                ));
            }
            Ok(Reference {
                root: Root::StepOutput { step: step.clone(), index: target },
                path: rest[2..].to_vec(),
                text,
            })
        }
        other => Err((
            format!("`{{{{{text}}}}}` starts with unknown root `{other}`"),
            format!(
                "{}references start with `input.`, `saga.` or `steps.`",
                did_you_mean(other, &["input", "saga", "steps"])
            ),
        )),
    }
}
