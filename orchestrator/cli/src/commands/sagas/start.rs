//! `skald sagas start TYPE`: start a saga with an idempotency key and an input.

use super::*;

pub(super) async fn start(
    saga_type: &str,
    input: &str,
    key: &str,
    wait: Option<&str>,
    api: &ApiArgs,
    out: &mut dyn Write,
) -> Result<Outcome, CliError> {
    let input = read_input(input)?;
    let wait = wait.map(parse_wait).transpose()?;
    let client = Client::new(api)?;
    let body = json!({ "type": saga_type, "input": input, "idempotency_key": key });
    let answer = match wait {
        None => client.post(&["v1", "sagas"], Body::Json(&body)).await,
        Some(wait) => client.post_waiting(&["v1", "sagas"], Body::Json(&body), wait).await,
    }
    .map_err(|e| {
        e.with_timeout_hint("repeat the same command (same --key): it starts the saga at most once")
    })?;
    let started: StartAnswer = decode(&answer.body, "start answer")?;
    let ended_well = started.outcome.as_ref().is_none_or(|o| o.status == "completed");
    if api.json {
        print_json(&answer.body, out)?;
    } else {
        if started.created {
            writeln!(out, "started {saga_type} saga {} (key {key})", started.saga_id)?;
        } else {
            writeln!(
                out,
                "{saga_type} saga {} was already started with key {key}; nothing new started",
                started.saga_id
            )?;
        }
        if let Some(outcome) = &started.outcome {
            write_outcome(outcome, out)?;
        }
    }
    Ok(if ended_well { Outcome::Success } else { Outcome::Failure })
}

/// `--wait`: a duration up to the server's most.
fn parse_wait(text: &str) -> Result<Duration, CliError> {
    let most = Duration::from_millis(sagas::protocol::START_WAIT_MS_MAX);
    match humantime::parse_duration(text) {
        Ok(d) if d <= most => Ok(d),
        Ok(_) => Err(CliError::usage(format!("--wait is at most {}s", most.as_secs()))),
        Err(e) => Err(CliError::usage(format!("--wait `{text}` is not a duration like 30s: {e}"))),
    }
}

/// Where a waited-for saga stands, for people.
fn write_outcome(
    outcome: &sagas::protocol::SagaOutcome,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default();
    if outcome.ended || outcome.status == "parked" {
        writeln!(out, "ended: {}", outcome.status)?;
    } else {
        writeln!(
            out,
            "still {} when the wait ran out; follow it with `skald sagas show`",
            outcome.status
        )?;
    }
    if let Some(output) = &outcome.output {
        writeln!(out, "output: {}", pretty(output))?;
    }
    if let Some(cause) = &outcome.cause {
        writeln!(out, "cause: {}", pretty(cause))?;
    }
    Ok(())
}

/// `--input`: JSON text, `@file`, or `@-` for stdin.
pub(super) fn read_input(input: &str) -> Result<Value, CliError> {
    let (text, from) = match input.strip_prefix('@') {
        None => (input.to_owned(), "--input".to_owned()),
        Some(path) => {
            let mut text = String::new();
            let read = if path == "-" {
                std::io::stdin().take(INPUT_BYTES_MAX + 1).read_to_string(&mut text)
            } else {
                std::fs::File::open(path)
                    .and_then(|f| f.take(INPUT_BYTES_MAX + 1).read_to_string(&mut text))
            };
            read.map_err(|e| {
                CliError::usage(format!("cannot read --input {input}: {e}; check the path"))
            })?;
            if text.len() as u64 > INPUT_BYTES_MAX {
                return Err(CliError::usage(format!(
                    "--input {input} is larger than {INPUT_BYTES_MAX} bytes"
                )));
            }
            (text, format!("--input {input}"))
        }
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "{from} is not JSON ({e}); give JSON like '{{\"amount\": 5}}', @file or @-"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn input_is_json_text_or_a_file() {
        assert_eq!(read_input(r#"{"a": 1}"#).unwrap(), json!({"a": 1}));
        let e = read_input("{a: 1}").unwrap_err();
        assert!(e.to_string().starts_with("--input is not JSON"), "{e}");
        let e = read_input("@/nonexistent/skald/input.json").unwrap_err();
        assert!(e.to_string().contains("cannot read --input @/nonexistent"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
