//! `skald sagas retry|skip|abort|resume|resolve|migrate ID`: one repair, under a request id.

use super::*;

pub(super) async fn repair(
    action: Action,
    args: &RepairArgs,
    extra: Value,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let client = Client::new(&args.api)?;
    let request_id = args.request_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let dry_run = extra.get("dry_run") == Some(&Value::Bool(true));
    let mut body = json!({ "reason": args.reason, "request_id": request_id });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let answer = client
        .post(&["v1", "sagas", &args.saga_id, action.as_str()], Body::Json(&body))
        .await
        .map_err(|e| {
            e.with_timeout_hint(&format!(
                "the {} may have been applied: repeat with --request-id {request_id} \
                 to apply it at most once",
                action.as_str()
            ))
        })?;
    if args.api.json {
        print_json(&answer.body, out)?;
        return Ok(Outcome::Success);
    }
    let r: RepairOutcome = decode(&answer.body, "repair answer")?;
    if dry_run {
        writeln!(
            out,
            "{} {}: could be done (now {}); nothing changed",
            action.as_str(),
            r.saga_id,
            r.status
        )?;
        return Ok(Outcome::Success);
    }
    let recorded = if r.events.is_empty() { "nothing".to_owned() } else { r.events.join(", ") };
    let replayed = if r.replayed {
        format!(" (request {request_id} was already done; this is its first answer)")
    } else {
        String::new()
    };
    writeln!(
        out,
        "{} {}: now {}; recorded {recorded}{replayed}",
        action.as_str(),
        r.saga_id,
        r.status
    )?;
    Ok(Outcome::Success)
}
