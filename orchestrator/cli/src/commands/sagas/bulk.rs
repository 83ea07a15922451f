//! `skald sagas bulk ACTION --filter ...`: a dry run, or a bulk job followed to its end.

use super::*;

/// The `filter` object of a bulk request from `--filter KEY=VALUE` flags.
pub(super) fn bulk_filter(filters: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut map = Map::new();
    for f in filters {
        let Some((key, value)) = f.split_once('=') else {
            return Err(CliError::usage(format!(
                "--filter `{f}` is not KEY=VALUE; use e.g. --filter status=parked"
            )));
        };
        if let Some(name) = key.trim().strip_prefix("tag.") {
            let tags = map.entry("tags").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(tags) = tags {
                tags.insert(name.to_owned(), Value::String(value.trim().to_owned()));
            }
            continue;
        }
        let key = key.trim().replace('-', "_");
        if !FILTER_KEYS.contains(&key.as_str()) {
            return Err(CliError::usage(format!(
                "--filter `{f}`: unknown key `{key}`; use one of {} or tag.<name>",
                FILTER_KEYS.join(", ")
            )));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(CliError::usage(format!("--filter `{f}` has no value")));
        }
        match map.get_mut(&key) {
            Some(Value::String(statuses)) if key == "status" => {
                statuses.push(',');
                statuses.push_str(value);
            }
            Some(_) => {
                return Err(CliError::usage(format!(
                    "--filter {key}= is given twice; give it once (only status= may repeat)"
                )));
            }
            None => {
                map.insert(key, Value::String(value.to_owned()));
            }
        }
    }
    Ok(map)
}

pub(super) async fn bulk(
    args: &BulkArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Outcome, CliError> {
    if args.outcome.is_some() && args.action != Action::Resolve {
        return Err(CliError::usage("--outcome is only for `bulk resolve`"));
    }
    if args.to_version.is_some() && args.action != Action::Migrate {
        return Err(CliError::usage("--to-version is only for `bulk migrate`"));
    }
    let filter = bulk_filter(&args.filters)?;
    let client = Client::new(&args.api)?;
    let job_id = args.request_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut body = json!({
        "action": args.action.as_str(),
        "filter": filter,
        "reason": args.reason,
        "dry_run": args.dry_run,
        "request_id": job_id,
    });
    if let Some(o) = args.outcome {
        body["outcome"] = json!(o.as_str());
    }
    if let Some(v) = args.to_version {
        body["to_version"] = json!(v);
    }
    if let Some(r) = args.rate {
        body["rate_per_second"] = json!(r);
    }
    if let Some(m) = args.max {
        body["max_sagas"] = json!(m);
    }
    let answer = client.post(&["v1", "bulk"], Body::Json(&body)).await.map_err(|e| {
        e.with_timeout_hint(&format!(
            "the job may have started: repeat with --request-id {job_id} to follow it \
             without starting another"
        ))
    })?;
    if args.dry_run {
        return preview(args, &answer.body, out);
    }
    let action = args.action.as_str();
    let mut job: BulkJob = decode(&answer.body, "bulk job")?;
    writeln!(
        err,
        "bulk job {}: {action} on {} sagas; to follow it again, repeat with --request-id {}",
        job.job_id, job.total, job.job_id
    )?;
    let mut last = answer.body;
    let (mut seen, mut progressed_at) = (None, Instant::now());
    while job.state != "done" {
        if seen != Some(job.done) {
            writeln!(err, "{}", progress_line(&job))?;
            seen = Some(job.done);
            progressed_at = Instant::now();
        } else if progressed_at.elapsed() > STALL_MAX {
            return Err(CliError::failed(format!(
                "bulk job {} made no progress for {}s ({}/{} done); follow it again by \
                 repeating the command with --request-id {}",
                job.job_id,
                STALL_MAX.as_secs(),
                job.done,
                job.total,
                job.job_id
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        last = client
            .get(&["v1", "bulk", &job.job_id], &[])
            .await
            .map_err(|e| {
                e.with_timeout_hint(&format!("follow the job again with --request-id {job_id}"))
            })?
            .body;
        job = decode(&last, "bulk job")?;
    }
    writeln!(err, "{}", progress_line(&job))?;
    if args.api.json {
        print_json(&last, out)?;
    } else {
        writeln!(
            out,
            "bulk {action} {}: {} sagas, {} succeeded, {} already done, {} failed",
            job.job_id, job.total, job.succeeded, job.replayed, job.failed_count
        )?;
        if !job.failed.is_empty() {
            writeln!(out, "failed:")?;
            let rows: Vec<Vec<String>> =
                job.failed.iter().map(|f| vec![f.saga_id.clone(), one_line(&f.error)]).collect();
            write_table(&["saga", "error"], &rows, out)?;
        }
        let unlisted = job.failed_count.saturating_sub(job.failed.len() as u64);
        if unlisted > 0 {
            writeln!(out, "({unlisted} more failures not listed)")?;
        }
    }
    Ok(if job.failed_count == 0 { Outcome::Success } else { Outcome::Failure })
}

pub(super) fn progress_line(job: &BulkJob) -> String {
    format!(
        "bulk job {}: {}/{} done ({} succeeded, {} already done, {} failed){}",
        job.job_id,
        job.done,
        job.total,
        job.succeeded,
        job.replayed,
        job.failed_count,
        if job.state == "done" { ", finished" } else { "" }
    )
}

pub(super) fn preview(
    args: &BulkArgs,
    body: &Value,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    if args.api.json {
        print_json(body, out)?;
        return Ok(Outcome::Success);
    }
    let p: BulkPreview = decode(body, "bulk preview")?;
    writeln!(
        out,
        "dry run: {} on {} matching sagas: {} would change, {} would be refused; nothing was changed",
        args.action.as_str(),
        p.matched,
        p.would_change.len(),
        p.would_fail.len()
    )?;
    if !p.would_change.is_empty() {
        writeln!(out, "would change:")?;
        let rows: Vec<Vec<String>> =
            p.would_change.iter().map(|c| vec![c.saga_id.clone(), c.events.join(", ")]).collect();
        write_table(&["saga", "events it would record"], &rows, out)?;
    }
    if !p.would_fail.is_empty() {
        writeln!(out, "would be refused:")?;
        let rows: Vec<Vec<String>> =
            p.would_fail.iter().map(|f| vec![f.saga_id.clone(), one_line(&f.error)]).collect();
        write_table(&["saga", "why"], &rows, out)?;
    }
    if p.truncated {
        writeln!(
            out,
            "(more matched than were examined or listed: narrow the filter or raise --max)"
        )?;
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bulk_filters_are_key_value_pairs_with_statuses_joined() {
        let f = bulk_filter(&[
            "type=topup".into(),
            "status=running".into(),
            "status=parked".into(),
            "older-than=10m".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(f),
            json!({"type": "topup", "status": "running,parked", "older_than": "10m"})
        );
        for bad in ["type", "colour=red", "type=", "type=a"] {
            let filters = vec!["type=x".to_owned(), bad.to_owned()];
            let e = bulk_filter(&filters).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
    }
}
