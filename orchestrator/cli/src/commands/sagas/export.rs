//! `skald sagas export --out DIR`: sagas whole (row, tags, history) to
//! compressed JSON lines in a folder per day they last changed, in the
//! format and layout retention archives in.

use super::*;
use orchestrator::retention::{day_of, write_file};
use std::collections::BTreeMap;

pub(super) async fn export(args: &ExportArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let client = Client::new(&args.api)?;
    let tags = tag_pairs(&args.tags)?;
    let query = |cursor: Option<&String>| {
        let opt = |v: Option<&String>| v.cloned().unwrap_or_default();
        let mut pairs: Vec<(&str, String)> = vec![
            ("type", opt(args.saga_type.as_ref())),
            ("status", opt(args.status.as_ref())),
            ("older_than", opt(args.older_than.as_ref())),
            ("newer_than", opt(args.newer_than.as_ref())),
            ("cursor", opt(cursor)),
        ];
        pairs.extend(tags.iter().map(|(k, v)| (k.as_str(), v.clone())));
        pairs
    };
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::failed(format!("cannot create {}: {e}", args.out.display())))?;
    let mut cursor: Option<String> = None;
    let (mut sagas, mut files) = (0_u64, BTreeMap::<String, u64>::new());
    loop {
        let page = client.get(&["v1", "export"], &query(cursor.as_ref())).await?.body;
        let mut items = Vec::new();
        cursor = super::list::page_parts(&page, &mut items)?;
        let mut by_day: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for item in items.iter().take(usize::try_from(args.max - sagas).unwrap_or(usize::MAX)) {
            let ended = item.get("ended_at_ms").and_then(Value::as_i64).unwrap_or_default();
            let lines = by_day.entry(day_of(ended)).or_default();
            serde_json::to_writer(&mut *lines, item).unwrap_or_default();
            lines.push(b'\n');
            sagas += 1;
            *files.entry(day_of(ended)).or_default() += 1;
        }
        for (day, lines) in by_day {
            write_file(&args.out, &day, &lines).map_err(|e| CliError::failed(e.to_string()))?;
        }
        if cursor.is_none() || sagas >= args.max {
            break;
        }
    }
    writeln!(out, "exported {sagas} sagas to {}", args.out.display())?;
    for (day, n) in &files {
        writeln!(out, "  {day}/  {n}")?;
    }
    if cursor.is_some() {
        writeln!(out, "stopped at --max {}; more sagas match", args.max)?;
    }
    Ok(Outcome::Success)
}

/// `--tag NAME=VALUE` as the API's `tag.NAME` query pairs.
pub(crate) fn tag_pairs(tags: &[String]) -> Result<Vec<(String, String)>, CliError> {
    tags.iter()
        .map(|t| match t.split_once('=') {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((format!("tag.{}", name.trim()), value.to_owned()))
            }
            _ => Err(CliError::usage(format!("--tag `{t}` is not NAME=VALUE, e.g. customer=42"))),
        })
        .collect()
}
