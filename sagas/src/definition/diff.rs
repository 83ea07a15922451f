//! What changed between two versions of a definition, for people
//! (`skald definitions diff OLD NEW`).

use super::{Definition, PayloadTemplate, RetryPolicy, StepDef};

/// One difference, as a line of text: `~` changed, `+` added, `-` removed.
fn line(sign: char, what: impl std::fmt::Display) -> String {
    format!("{sign} {what}")
}

fn retry(r: &RetryPolicy) -> String {
    format!("{} attempts, backoff {}..{}", r.attempts, r.initial_backoff, r.max_backoff)
}

fn changed<T: PartialEq + std::fmt::Debug>(
    out: &mut Vec<String>,
    what: &str,
    old: &T,
    new: &T,
    show: impl Fn(&T) -> String,
) {
    if old != new {
        out.push(line('~', format!("{what}: {} → {}", show(old), show(new))));
    }
}

fn template(t: &Option<PayloadTemplate>) -> String {
    if t.is_some() { "declared".to_owned() } else { "none".to_owned() }
}

/// The differences of one step present in both versions.
fn step(out: &mut Vec<String>, old: &StepDef, new: &StepDef) {
    let at = format!("step `{}`", old.name);
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".to_owned());
    changed(out, &format!("{at} participant"), &old.participant, &new.participant, Clone::clone);
    changed(out, &format!("{at} action"), &old.action, &new.action, Clone::clone);
    changed(out, &format!("{at} compensation"), &old.compensation, &new.compensation, opt);
    if old.input != new.input {
        out.push(line('~', format!("{at} input mapping")));
    }
    changed(out, &format!("{at} timeout"), &old.timeout, &new.timeout, ToString::to_string);
    changed(out, &format!("{at} retry"), &old.retry, &new.retry, retry);
    changed(
        out,
        &format!("{at} compensation_retry"),
        &old.compensation_retry,
        &new.compensation_retry,
        retry,
    );
    changed(out, &format!("{at} retriable"), &old.retriable, &new.retriable, ToString::to_string);
    if old.wait != new.wait {
        let show = |w: &Option<super::WaitFor>| {
            w.as_ref().map_or_else(
                || "none".to_owned(),
                |w| format!("event `{}`, up to {}", w.event, w.timeout),
            )
        };
        out.push(line('~', format!("{at} wait_for: {} → {}", show(&old.wait), show(&new.wait))));
    }
    changed(out, &format!("{at} when"), &old.when, &new.when, |w| {
        w.as_ref().map_or_else(|| "none".to_owned(), |w| format!("`{}`", w.source()))
    });
}

/// Where step `i` of `d` runs: in line, or in a branch of a parallel group.
fn place(d: &Definition, i: usize) -> String {
    d.steps[i]
        .place
        .and_then(|p| {
            let g = d.groups.get(p.group)?;
            Some(format!("in group `{}`, branch `{}`", g.name, g.branches.get(p.branch)?.name))
        })
        .unwrap_or_else(|| "in line".to_owned())
}

/// Every difference from `old` to `new`, in definition order; empty when
/// they define the same saga.
#[must_use]
pub fn diff(old: &Definition, new: &Definition) -> Vec<String> {
    let mut out = Vec::new();
    changed(&mut out, "name", &old.name, &new.name, Clone::clone);
    changed(&mut out, "version", &old.version, &new.version, ToString::to_string);
    changed(&mut out, "description", &old.description, &new.description, |d| format!("{d:?}"));
    changed(&mut out, "deadline", &old.deadline, &new.deadline, |d| {
        d.map_or_else(|| "none".to_owned(), |d| d.to_string())
    });
    if old.input_schema != new.input_schema {
        out.push(line('~', "input_schema"));
    }
    changed(&mut out, "output", &old.output, &new.output, template);
    let tag_names = |d: &Definition| d.tags.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    if old.tags != new.tags {
        out.push(line(
            '~',
            format!("tags: [{}] → [{}]", tag_names(old).join(", "), tag_names(new).join(", ")),
        ));
    }
    let names = |d: &Definition| d.steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let (old_names, new_names) = (names(old), names(new));
    for (i, s) in old.steps.iter().enumerate() {
        match new.steps.iter().position(|n| n.name == s.name) {
            None => out.push(line('-', format!("step #{} `{}`", i + 1, s.name))),
            Some(j) => {
                if i != j {
                    out.push(line(
                        '~',
                        format!("step `{}` moved: #{} → #{}", s.name, i + 1, j + 1),
                    ));
                }
                step(&mut out, s, &new.steps[j]);
                let (was, is) = (place(old, i), place(new, j));
                if was != is {
                    out.push(line('~', format!("step `{}` runs: {was} → {is}", s.name)));
                }
            }
        }
    }
    for (j, s) in new.steps.iter().enumerate() {
        if !old_names.contains(&s.name) {
            out.push(line(
                '+',
                format!("step #{} `{}` ({}.{})", j + 1, s.name, s.participant, s.action),
            ));
        }
    }
    for g in &old.groups {
        if let Some(n) = new.groups.iter().find(|n| n.name == g.name) {
            changed(&mut out, &format!("group `{}` when", g.name), &g.when, &n.when, |w| {
                w.as_ref().map_or_else(|| "none".to_owned(), |w| format!("`{}`", w.source()))
            });
        }
    }
    let pivot = |d: &Definition, names: &[String]| {
        d.pivot.and_then(|p| names.get(p).cloned()).unwrap_or_else(|| "none".to_owned())
    };
    let (old_pivot, new_pivot) = (pivot(old, &old_names), pivot(new, &new_names));
    if old_pivot != new_pivot {
        out.push(line('~', format!("pivot: {old_pivot} → {new_pivot}")));
    }
    out
}
