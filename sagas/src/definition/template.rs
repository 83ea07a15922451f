//! Templates in a step's `input` mapping.
//!
//! A string in the mapping may contain references written `{{input.x}}`,
//! `{{saga.id}}`, `{{saga.type}}` or `{{steps.<earlier step>.output.y}}`. A string
//! that is exactly one reference is replaced by the referenced JSON value, keeping
//! its type (a number stays a number); a reference inside longer text is rendered
//! as text. Paths are dotted; a numeric segment indexes an array.
//!
//! Parsing checks syntax only; which steps and input fields exist is checked by
//! validation, and rendering reports a path that is missing at run time.

use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Where a reference starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// The saga's input: `input.<path>`.
    Input,
    /// The saga id: `saga.id`.
    SagaId,
    /// The saga type (definition name): `saga.type`.
    SagaType,
    /// An earlier step's output: `steps.<name>.output.<path>`.
    StepOutput { step: String, index: usize },
}

/// One `{{...}}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: Root,
    pub path: Vec<String>,
    /// The text between the braces, for messages.
    pub text: String,
}

/// A reference before its step name is resolved to an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawReference {
    pub segments: Vec<String>,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Text(String),
    Ref(Reference),
}

/// A compiled `input` mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadTemplate {
    Literal(Value),
    /// The whole string is one reference: the value keeps its JSON type.
    Value(Reference),
    /// Text with references rendered into it.
    Text(Vec<Segment>),
    Array(Vec<PayloadTemplate>),
    Object(BTreeMap<String, PayloadTemplate>),
}

/// What a template renders against.
#[derive(Debug, Clone, Copy)]
pub struct RenderContext<'a> {
    pub input: &'a Value,
    pub saga_id: &'a str,
    pub saga_type: &'a str,
    /// The output of each step by index; `None` where the step has none (yet).
    pub outputs: &'a [Option<Value>],
}

/// A reference that points at nothing when the step is about to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{{{{{reference}}}}}` has no value: {reason}")]
pub struct RenderError {
    pub reference: String,
    pub reason: String,
}

/// Split a string into literal text and raw references; errors describe bad syntax.
pub(crate) fn split(text: &str) -> Result<Vec<RawSegment>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        if rest[..open].contains("}}") {
            return Err(format!("`{text}` has `}}}}` without an opening `{{{{`"));
        }
        if open > 0 {
            out.push(RawSegment::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("`{{{{` in `{text}` is never closed with `}}}}`"))?;
        let inner = after[..close].trim();
        if inner.is_empty() {
            return Err(format!("`{text}` has an empty `{{{{ }}}}`"));
        }
        if inner.contains("{{") {
            return Err(format!("`{text}` nests `{{{{` inside a reference"));
        }
        let segments: Vec<String> = inner.split('.').map(str::to_owned).collect();
        if let Some(bad) = segments.iter().find(|s| !is_path_segment(s)) {
            return Err(format!(
                "`{{{{{inner}}}}}` has a bad path segment `{bad}`; segments are letters, digits, `_` or `-`, joined by `.`"
            ));
        }
        out.push(RawSegment::Ref(RawReference { segments, text: inner.to_owned() }));
        rest = &after[close + 2..];
    }
    if rest.contains("}}") {
        return Err(format!("`{text}` has `}}}}` without an opening `{{{{`"));
    }
    if !rest.is_empty() {
        out.push(RawSegment::Text(rest.to_owned()));
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawSegment {
    Text(String),
    Ref(RawReference),
}

fn is_path_segment(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl PayloadTemplate {
    /// Every reference in the template, in document order.
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Self::Literal(_) => {}
            Self::Value(r) => out.push(r),
            Self::Text(segs) => out.extend(segs.iter().filter_map(|s| match s {
                Segment::Ref(r) => Some(r),
                Segment::Text(_) => None,
            })),
            Self::Array(items) => items.iter().for_each(|i| i.collect(out)),
            Self::Object(fields) => fields.values().for_each(|v| v.collect(out)),
        }
    }

    /// Render against a saga's input, id and earlier outputs.
    pub fn render(&self, ctx: &RenderContext<'_>) -> Result<Value, RenderError> {
        Ok(match self {
            Self::Literal(v) => v.clone(),
            Self::Value(r) => resolve(r, ctx)?.into_owned(),
            Self::Text(segs) => {
                let mut s = String::new();
                for seg in segs {
                    match seg {
                        Segment::Text(t) => s.push_str(t),
                        Segment::Ref(r) => match resolve(r, ctx)?.as_ref() {
                            Value::String(v) => s.push_str(v),
                            other => s.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(s)
            }
            Self::Array(items) => {
                Value::Array(items.iter().map(|i| i.render(ctx)).collect::<Result<_, _>>()?)
            }
            Self::Object(fields) => {
                let mut map = Map::new();
                for (k, v) in fields {
                    map.insert(k.clone(), v.render(ctx)?);
                }
                Value::Object(map)
            }
        })
    }
}

fn resolve<'a>(r: &Reference, ctx: &RenderContext<'a>) -> Result<Cow<'a, Value>, RenderError> {
    let missing = |reason: String| RenderError { reference: r.text.clone(), reason };
    let base: &'a Value = match &r.root {
        Root::SagaId => return Ok(Cow::Owned(Value::String(ctx.saga_id.to_owned()))),
        Root::SagaType => return Ok(Cow::Owned(Value::String(ctx.saga_type.to_owned()))),
        Root::Input => ctx.input,
        Root::StepOutput { step, index } => match ctx.outputs.get(*index) {
            Some(Some(v)) => v,
            _ => return Err(missing(format!("step `{step}` has no output"))),
        },
    };
    let mut cur = base;
    for seg in &r.path {
        cur = match cur {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or_else(|| missing(format!("`{seg}` is not present")))?;
    }
    Ok(Cow::Borrowed(cur))
}
