//! `skald sagas signal ID EVENT`: send a saga an event one of its steps
//! waits for (signaller role).

use super::start::read_input;
use super::*;

pub(super) async fn signal(args: &SignalArgs, out: &mut dyn Write) -> Result<Outcome, CliError> {
    let payload = read_input(&args.payload)?;
    let client = Client::new(&args.api)?;
    let mut body = json!({ "event_id": args.event_id, "payload": payload });
    if let Some(key) = &args.key {
        body["key"] = json!(key);
    }
    let by_key = args.saga_id == "-";
    if by_key && args.key.is_none() {
        return Err(CliError::usage("`-` for SAGA_ID sends the event by its key: give --key"));
    }
    let path: Vec<&str> = if by_key {
        vec!["v1", "events", &args.event]
    } else {
        vec!["v1", "sagas", &args.saga_id, "events", &args.event]
    };
    let hint = if by_key {
        // Once taken, no saga waits for the key any more: a repeat finds none.
        "sent by key, it may have been taken: a repeat that finds no saga waiting is refused; \
         send it again by saga id with the same --event-id to be sure"
    } else {
        "send it again with the same --event-id: it is taken at most once"
    };
    let answer =
        client.post(&path, Body::Json(&body)).await.map_err(|e| e.with_timeout_hint(hint))?;
    if args.api.json {
        print_json(&answer.body, out)?;
        return Ok(Outcome::Success);
    }
    let field = |name: &str| answer.body[name].as_str().unwrap_or_default().to_owned();
    let (status, saga_status) = (field("status"), field("saga_status"));
    let taken = answer.body["taken"].as_bool().unwrap_or(false);
    let what = match (status.as_str(), taken) {
        ("duplicate", _) => "was sent before; nothing changed".to_owned(),
        (_, true) => "was taken by the step waiting for it".to_owned(),
        _ => "is kept until a step waits for it".to_owned(),
    };
    writeln!(
        out,
        "event `{}` ({}) for saga {} {what}; the saga is {saga_status}",
        args.event,
        args.event_id,
        field("saga_id")
    )?;
    Ok(Outcome::Success)
}
