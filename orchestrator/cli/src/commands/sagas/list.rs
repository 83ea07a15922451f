//! `skald sagas list`: one page or every page (`--all`) of sagas, as a table or JSON.

use super::*;

pub(super) async fn list(
    args: &ListArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(&args.api)?;
    let limit = args.limit.or(args.all.then_some(ALL_PAGE_SIZE));
    let tags = super::export::tag_pairs(&args.tags)?;
    let query = |cursor: Option<&String>| {
        let opt = |v: Option<&String>| v.cloned().unwrap_or_default();
        let mut pairs: Vec<(&str, String)> = vec![
            ("type", opt(args.saga_type.as_ref())),
            ("status", opt(args.status.as_ref())),
            ("step", opt(args.step.as_ref())),
            ("older_than", opt(args.older_than.as_ref())),
            ("newer_than", opt(args.newer_than.as_ref())),
            ("stuck", opt(args.stuck.as_ref())),
            ("key", opt(args.key.as_ref())),
            ("limit", limit.map(|l| l.to_string()).unwrap_or_default()),
            ("cursor", opt(cursor)),
        ];
        pairs.extend(tags.iter().map(|(k, v)| (k.as_str(), v.clone())));
        pairs
    };
    let first = client.get(&["v1", "sagas"], &query(args.cursor.as_ref())).await?.body;
    let mut items: Vec<Value> = Vec::new();
    let mut next = page_parts(&first, &mut items)?;
    let mut pages = 1;
    while args.all
        && pages < ALL_PAGES_MAX
        && let Some(cursor) = next.take()
    {
        let page = client.get(&["v1", "sagas"], &query(Some(&cursor))).await?.body;
        next = page_parts(&page, &mut items)?;
        pages += 1;
    }
    if args.api.json {
        let body = if args.all { json!({ "items": items, "next_cursor": next }) } else { first };
        print_json(&body, out)?;
    } else {
        let sagas: Vec<SagaSummary> = decode(&Value::Array(items), "saga list")?;
        if sagas.is_empty() {
            writeln!(err, "no sagas match")?;
        } else {
            write_table(&LIST_HEADER, &sagas.iter().map(list_row).collect::<Vec<_>>(), out)?;
        }
    }
    if let Some(cursor) = next {
        let how =
            if args.all { format!("stopped after {ALL_PAGES_MAX} pages; ") } else { String::new() };
        writeln!(err, "{how}more sagas match: add --cursor {cursor} for the next page")?;
    }
    Ok(Outcome::Success)
}

/// Add a page's items to `items` and return its `next_cursor`.
pub(super) fn page_parts(page: &Value, items: &mut Vec<Value>) -> Result<Option<String>, CliError> {
    let bad = || CliError::failed("the API's answer is not a saga list; use --json to see it");
    items.extend(page.get("items").and_then(Value::as_array).ok_or_else(bad)?.iter().cloned());
    Ok(page.get("next_cursor").and_then(Value::as_str).map(str::to_owned))
}

const LIST_HEADER: [&str; 8] =
    ["saga", "type", "status", "step", "attempt", "started", "key", "stuck"];

pub(super) fn list_row(s: &SagaSummary) -> Vec<String> {
    let stuck: Vec<&str> = s.stuck.iter().map(|c| c.class.as_str()).collect();
    vec![
        s.saga_id.clone(),
        s.saga_type.clone(),
        s.status.clone(),
        step_label(s),
        attempt_label(s),
        time_ms(s.created_at_ms),
        s.idempotency_key.clone(),
        if stuck.is_empty() { "-".to_owned() } else { stuck.join(",") },
    ]
}

pub(super) fn step_label(s: &SagaSummary) -> String {
    match (&s.current_step, s.current_kind.as_deref()) {
        (None, _) => "-".to_owned(),
        (Some(step), Some("undo")) => format!("{step} (undo)"),
        (Some(step), _) => step.clone(),
    }
}

pub(super) fn attempt_label(s: &SagaSummary) -> String {
    match (&s.current_step, s.attempts_max) {
        (None, _) => "-".to_owned(),
        (Some(_), Some(max)) => format!("{}/{max}", s.attempt),
        (Some(_), None) => s.attempt.to_string(),
    }
}
