//! The small HTTP client the `skald sagas` and `skald definitions` commands
//! use to talk to the operator API of a running `skald serve`, and the one
//! error type those commands share.
//!
//! Every request has a bounded time ([`REQUEST_TIMEOUT`]) and a bounded answer
//! ([`RESPONSE_BYTES_MAX`]). Every failure becomes a [`CliError`]: one line
//! that says what to do, and the exit status that goes with it (1 the API
//! refused or failed, 2 a usage mistake, 3 the API cannot be reached).

use reqwest::{Method, StatusCode, Url};
use serde_json::Value;
use std::process::ExitCode;
use std::time::Duration;

/// The longest any one request may take, connection included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read from the API.
const RESPONSE_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The most of an unexpected (non-JSON) answer quoted in an error.
const QUOTED_CHARS_MAX: usize = 200;
/// Where `skald serve` listens by default.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// Where the API is, who is asking, and how to print the answer.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The Skald API's base URL (`skald serve --http-addr`).
    #[arg(long, env = "SKALD_API_URL", default_value = DEFAULT_API_URL, value_name = "URL")]
    pub api_url: String,
    /// Bearer token for the API (`skald token new` makes one).
    #[arg(long, env = "SKALD_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Print the API's JSON answer (pretty) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked for was done (exit 0).
    Success,
    /// The command ran, but something it reported failed (exit 1).
    Failure,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failure => ExitCode::FAILURE,
        }
    }
}

/// Why a command could not do what it was asked: each says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something impossible (exit 2, like clap's errors).
    #[error("{message}")]
    Usage { message: String },
    /// No connection to the API could be made (exit 3).
    #[error(
        "cannot reach the Skald API at {url}: {cause}; is `skald serve` running? \
         set --api-url or SKALD_API_URL"
    )]
    Unreachable { url: String, cause: String },
    /// The request was sent but no answer came in time (exit 3).
    #[error("the Skald API at {url} did not answer within {}s{hint}", REQUEST_TIMEOUT.as_secs())]
    TimedOut { url: String, hint: String },
    /// The API answered with an error (exit 1); `line` is its message and what to do.
    #[error("{line}")]
    Api { status: u16, code: String, line: String },
    /// Anything else that stops the command (exit 1).
    #[error("{message}")]
    Failed { message: String },
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage { message: message.into() }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed { message: message.into() }
    }

    /// The process exit status for this error.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage { .. } => 2,
            Self::Unreachable { .. } | Self::TimedOut { .. } => 3,
            Self::Api { .. } | Self::Failed { .. } => 1,
        }
    }

    /// This error with `hint` added when the request may have been applied
    /// without its answer arriving (how to repeat it safely).
    #[must_use]
    pub fn with_timeout_hint(self, hint: &str) -> Self {
        match self {
            Self::TimedOut { url, .. } => Self::TimedOut { url, hint: format!("; {hint}") },
            other => other,
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::failed(format!("cannot write the output: {e}"))
    }
}

/// A JSON answer and its HTTP status (always a success status).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

/// A request body.
#[derive(Debug)]
pub enum Body<'a> {
    None,
    Json(&'a Value),
    Yaml(String),
}

/// The operator API of one `skald serve`, with one token.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl Client {
    /// A client for `args.api_url`; a URL that cannot be one is a usage error.
    pub fn new(args: &ApiArgs) -> Result<Self, CliError> {
        let bad = |why: String| {
            CliError::usage(format!(
                "--api-url `{}` is not an http(s) URL ({why}); use one like {DEFAULT_API_URL}",
                args.api_url
            ))
        };
        let base = Url::parse(args.api_url.trim()).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad(format!("scheme `{}`", base.scheme())));
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("skald-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::failed(format!("cannot set up the HTTP client: {e}")))?;
        let token = args.token.clone().filter(|t| !t.trim().is_empty());
        Ok(Self { http, base, token })
    }

    /// The URL of `segments` under the base URL, each segment escaped.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The base URL as the user gave it, for messages.
    #[must_use]
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET` the path `segments` with `query` (empty values left out).
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Answer, CliError> {
        let mut url = self.url(segments);
        let pairs: Vec<&(&str, String)> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
        }
        self.send(Method::GET, url, Body::None, None).await
    }

    /// `POST` a body to the path `segments`.
    pub async fn post(&self, segments: &[&str], body: Body<'_>) -> Result<Answer, CliError> {
        self.send(Method::POST, self.url(segments), body, None).await
    }

    /// `POST` with `?wait=`: the server may hold the answer for `wait`, so
    /// the request's time is that much longer.
    pub async fn post_waiting(
        &self,
        segments: &[&str],
        body: Body<'_>,
        wait: Duration,
    ) -> Result<Answer, CliError> {
        let mut url = self.url(segments);
        url.query_pairs_mut().append_pair("wait", &format!("{}ms", wait.as_millis()));
        self.send(Method::POST, url, body, Some(REQUEST_TIMEOUT + wait)).await
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Body<'_>,
        timeout: Option<Duration>,
    ) -> Result<Answer, CliError> {
        let mut request = self.http.request(method, url).header("accept", "application/json");
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        request = match body {
            Body::None => request,
            Body::Json(v) => request.json(v),
            Body::Yaml(text) => request.header("content-type", "application/yaml").body(text),
        };
        let mut response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
                return Err(CliError::failed(format!(
                    "the answer from {} is larger than {RESPONSE_BYTES_MAX} bytes; \
                     narrow the request (--limit, --filter) or use the API directly",
                    self.base()
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            let body = parsed.ok_or_else(|| self.not_json(status, &bytes))?;
            return Ok(Answer { status, body });
        }
        Err(self.refusal(status, parsed.as_ref(), &bytes))
    }

    /// A request that got no HTTP answer.
    fn transport(&self, e: &reqwest::Error) -> CliError {
        let url = self.base().to_owned();
        if e.is_timeout() {
            return CliError::TimedOut { url, hint: String::new() };
        }
        CliError::Unreachable { url, cause: root_cause(e) }
    }

    fn not_json(&self, status: StatusCode, bytes: &[u8]) -> CliError {
        CliError::failed(format!(
            "{} answered {status} with something that is not JSON (`{}`); \
             does --api-url point at `skald serve`?",
            self.base(),
            quote(bytes)
        ))
    }

    /// An error answer, as one line saying what to do.
    fn refusal(&self, status: StatusCode, body: Option<&Value>, bytes: &[u8]) -> CliError {
        let error = body.and_then(|b| b.get("error"));
        let field = |name: &str| error.and_then(|e| e.get(name)).and_then(Value::as_str);
        let Some(message) = field("message") else {
            return CliError::failed(format!(
                "{} answered {status} without the Skald error shape (`{}`); \
                 does --api-url point at `skald serve`?",
                self.base(),
                quote(bytes)
            ));
        };
        let code = field("code").unwrap_or("error").to_owned();
        let details: Vec<&str> = error
            .and_then(|e| e.get("details"))
            .and_then(Value::as_array)
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut line = one_line(message);
        if !details.is_empty() {
            line.push_str(": ");
            line.push_str(&one_line(&details.join("; ")));
        }
        line.push_str(&format!(" ({} {code})", status.as_u16()));
        match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => line.push_str(
                "; no token was given: set --token or SKALD_TOKEN \
                 (`skald token new` makes one)",
            ),
            StatusCode::UNAUTHORIZED => line.push_str(
                "; the token is unknown or expired: set --token or SKALD_TOKEN to a valid one \
                 (`skald token new` makes one)",
            ),
            StatusCode::FORBIDDEN => line.push_str("; use a token with that role"),
            _ => {}
        }
        CliError::Api { status: status.as_u16(), code, line }
    }
}

/// The innermost cause of a transport error (`Connection refused (os error 111)`).
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    one_line(&cause.to_string())
}

/// Text on one line: newlines and tabs become spaces.
#[must_use]
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut quoted: String = one_line(&text).chars().take(QUOTED_CHARS_MAX).collect();
    if text.chars().count() > QUOTED_CHARS_MAX {
        quoted.push('…');
    }
    quoted
}

/// Print a JSON value as the API sent it, pretty.
pub fn print_json(value: &Value, out: &mut dyn std::io::Write) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failed(format!("cannot print the answer as JSON: {e}")))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Read the API's JSON into `T` (the CLI's view of an answer).
pub fn decode<T: serde::de::DeserializeOwned>(value: &Value, what: &str) -> Result<T, CliError> {
    T::deserialize(value).map_err(|e| {
        CliError::failed(format!(
            "the API's answer is not a {what} this skald understands ({e}); \
             is the server a different version? use --json to see it"
        ))
    })
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn write_table(
    header: &[&str],
    rows: &[Vec<String>],
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            line.push_str(cell);
            let pad = w.saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// The columns every steps table starts with (`definitions show`, `sagas show`).
pub const STEP_HEADER: [&str; 5] = ["#", "step", "participant", "action", "compensation"];

/// The first cells of step `i`'s row under [`STEP_HEADER`]: its number, its
/// name (`group/branch/step` in a parallel group; marked when it is the
/// pivot), participant, action and compensation (`-` for none).
#[must_use]
pub fn step_cells(
    i: usize,
    name: &str,
    place: Option<(&str, &str)>,
    pivot: bool,
    participant: &str,
    action: &str,
    compensation: Option<&str>,
) -> Vec<String> {
    let pivot = if pivot { " (pivot)" } else { "" };
    let place = place.map(|(group, branch)| format!("{group}/{branch}/")).unwrap_or_default();
    vec![
        (i + 1).to_string(),
        format!("{place}{name}{pivot}"),
        participant.to_owned(),
        action.to_owned(),
        compensation.unwrap_or("-").to_owned(),
    ]
}

/// A time in milliseconds since the Unix epoch as RFC 3339 (UTC, seconds).
#[must_use]
pub fn time_ms(ms: i64) -> String {
    let Ok(ms) = u64::try_from(ms) else { return "-".to_owned() };
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(url: &str, token: Option<&str>) -> Result<Client, CliError> {
        Client::new(&ApiArgs { api_url: url.into(), token: token.map(Into::into), json: false })
    }

    #[test]
    fn urls_escape_segments_and_keep_a_base_path() {
        let c = client("http://h:1/skald/", None).unwrap();
        assert_eq!(c.url(&["v1", "sagas", "a b"]).as_str(), "http://h:1/skald/v1/sagas/a%20b");
        assert_eq!(c.base(), "http://h:1/skald");
        let c = client("http://h:1", None).unwrap();
        assert_eq!(
            c.url(&["v1", "definitions", "../x"]).as_str(),
            "http://h:1/v1/definitions/..%2Fx"
        );
    }

    #[test]
    fn a_bad_url_is_a_usage_error() {
        for bad in ["127.0.0.1:8080", "ftp://h/", "not a url"] {
            let e = client(bad, None).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
            assert!(e.to_string().contains("--api-url"), "{e}");
        }
    }

    #[test]
    fn refusals_are_one_line_with_what_to_do() {
        let c = client("http://h:1", None).unwrap();
        let body = serde_json::json!({"error": {"code": "invalid", "message": "bad\ninput",
            "details": ["/a: missing", "/b: wrong"]}});
        let e = c.refusal(StatusCode::UNPROCESSABLE_ENTITY, Some(&body), b"");
        assert_eq!(e.to_string(), "bad input: /a: missing; /b: wrong (422 invalid)");
        assert_eq!(e.exit_code(), 1);
        let body = serde_json::json!({"error": {"code": "unauthorized", "message": "no"}});
        let e = c.refusal(StatusCode::UNAUTHORIZED, Some(&body), b"");
        assert!(e.to_string().contains("set --token or SKALD_TOKEN"), "{e}");
        let e = c.refusal(StatusCode::BAD_GATEWAY, None, b"<html>\n</html>");
        assert!(e.to_string().contains("(`<html> </html>`)"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn tables_align_columns() {
        let mut out = Vec::new();
        let rows = vec![vec!["1".into(), "long cell".into(), String::new()]];
        write_table(&["a", "bb", "c"], &rows, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a  bb         c\n1  long cell\n");
        assert_eq!(time_ms(0), "1970-01-01T00:00:00Z");
    }
}
