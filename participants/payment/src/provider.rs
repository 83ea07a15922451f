//! The provider client: one HTTP call per effect, with the caller's
//! idempotency key, bounded in time and in what it reads.
//!
//! Every call returns a [`ProviderOutcome`], never an error: a timeout or a
//! refused connection is an outcome like a decline (`Transient`), and
//! [`crate::outcome::verdict`] decides what to answer. Redirects are not
//! followed (a redirected `POST` is not the call that was keyed).
//!
//! A provider may also be reached in process ([`Provider::in_process`], an
//! [`InProcess`] model, as the deterministic simulation does): its answers
//! go through the same classification as an HTTP answer's status and body.

use crate::api::{
    CHARGES_PATH, Charge, ChargeList, ChargeRequest, IDEMPOTENCY_KEY_HEADER, PAYOUTS_PATH,
    PayoutRequest, REFUNDS_PATH, RefundRequest,
};
use crate::outcome::{ProviderOutcome, TransportFailure, classify, transport};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Default for [`ProviderConfig::connect_timeout`].
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(2);
/// Default for [`ProviderConfig::request_timeout`].
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(5);
/// Default for [`ProviderConfig::response_bytes_max`]: a receipt or an error
/// is a few hundred bytes.
pub const RESPONSE_BYTES_MAX_DEFAULT: usize = 64 * 1024;
/// Idle connections kept per provider host.
const IDLE_CONNECTIONS_MAX: usize = 32;

/// Where the provider is and how long to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// The API's base URL, e.g. `http://127.0.0.1:7070` (paths are appended).
    pub base_url: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole call, connection and body included.
    pub request_timeout: Duration,
    /// Largest response body read; a larger one is a `retry`.
    pub response_bytes_max: usize,
}

impl ProviderConfig {
    /// The provider at `base_url` with the default limits.
    #[must_use]
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
            response_bytes_max: RESPONSE_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider URL `{url}` is not valid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot build the HTTP client for the provider: {source}")]
    Client {
        #[source]
        source: reqwest::Error,
    },
}

/// A provider answered in process rather than over HTTP: a model of one.
/// It is handed each call as the HTTP client would send it and answers
/// with an HTTP status and body, or with why no answer came.
pub trait InProcess: Send + Sync + std::fmt::Debug {
    /// A `POST` to `path` (e.g. [`CHARGES_PATH`]) with idempotency key `key`.
    ///
    /// # Errors
    /// Why the call got no HTTP answer (the provider may or may not have
    /// acted, as [`TransportFailure`] says).
    fn post(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> Result<(u16, Vec<u8>), TransportFailure>;

    /// The charges held under `reference`.
    ///
    /// # Errors
    /// Why the provider could not be asked.
    fn charges_of(&self, reference: &str) -> Result<Vec<Charge>, String>;
}

/// A client of one payment provider.
#[derive(Debug, Clone)]
pub struct Provider {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Http { http: reqwest::Client, base_url: reqwest::Url, response_bytes_max: usize },
    InProcess(Arc<dyn InProcess>),
}

impl Provider {
    /// A client for the provider of `config`.
    ///
    /// # Errors
    /// An URL that is not `http(s)://host[:port][/path]`, or a TLS set-up failure.
    pub fn new(config: &ProviderConfig) -> Result<Self, ProviderError> {
        let invalid =
            |reason: String| ProviderError::InvalidUrl { url: config.base_url.clone(), reason };
        let mut base_url =
            reqwest::Url::parse(&config.base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host().is_none() {
            return Err(invalid("use http://HOST[:PORT] or https://HOST[:PORT]".into()));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(invalid("a query or fragment makes no sense in a base URL".into()));
        }
        // `join` replaces the last segment unless the path ends with `/`.
        let path = base_url.path().trim_end_matches('/').to_owned();
        base_url.set_path(&format!("{path}/"));
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(IDLE_CONNECTIONS_MAX)
            .user_agent(concat!("skald-payment/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ProviderError::Client { source })?;
        let response_bytes_max = config.response_bytes_max;
        Ok(Self { backend: Backend::Http { http, base_url, response_bytes_max } })
    }

    /// A client of the provider `model`, answered in process.
    #[must_use]
    pub fn in_process(model: Arc<dyn InProcess>) -> Self {
        Self { backend: Backend::InProcess(model) }
    }

    /// `POST /v1/charges` with `key` as the idempotency key.
    pub async fn charge(&self, key: &str, request: &ChargeRequest) -> ProviderOutcome {
        self.post(CHARGES_PATH, key, request).await
    }

    /// `POST /v1/refunds` with `key` as the idempotency key.
    pub async fn refund(&self, key: &str, request: &RefundRequest) -> ProviderOutcome {
        self.post(REFUNDS_PATH, key, request).await
    }

    /// `POST /v1/payouts` with `key` as the idempotency key.
    pub async fn payout(&self, key: &str, request: &PayoutRequest) -> ProviderOutcome {
        self.post(PAYOUTS_PATH, key, request).await
    }

    /// `GET /v1/charges?reference=…`: the charges the provider holds under
    /// `reference` (the first page: a saga is charged once).
    ///
    /// # Errors
    /// Why the provider could not be asked or its answer read.
    pub async fn charges_of(&self, reference: &str) -> Result<Vec<Charge>, String> {
        let (http, base_url, response_bytes_max) = match &self.backend {
            Backend::Http { http, base_url, response_bytes_max } => {
                (http, base_url, *response_bytes_max)
            }
            Backend::InProcess(model) => return model.charges_of(reference),
        };
        let mut url =
            base_url.join(CHARGES_PATH.trim_start_matches('/')).map_err(|e| e.to_string())?;
        url.query_pairs_mut().append_pair("reference", reference);
        let response = http.get(url).send().await.map_err(|e| root_cause(&e))?;
        let http_status = response.status();
        let body = read_bounded(response, response_bytes_max)
            .await
            .map_err(|f| format!("the provider's answer could not be read: {f:?}"))?;
        if !http_status.is_success() {
            return Err(format!(
                "the provider answered {http_status}: {}",
                String::from_utf8_lossy(&body).chars().take(200).collect::<String>()
            ));
        }
        let list = serde_json::from_slice::<ChargeList>(&body)
            .map_err(|e| format!("the provider's charge list cannot be read: {e}"))?;
        if list.count > list.charges.len() {
            return Err(format!(
                "the provider holds {} charges under `{reference}`, more than one page ({})",
                list.count,
                list.charges.len()
            ));
        }
        Ok(list.charges)
    }

    async fn post(&self, path: &str, key: &str, body: &impl Serialize) -> ProviderOutcome {
        let (http, base_url, response_bytes_max) = match &self.backend {
            Backend::Http { http, base_url, response_bytes_max } => {
                (http, base_url, *response_bytes_max)
            }
            Backend::InProcess(model) => {
                let answer = serde_json::to_value(body)
                    .map_err(|e| TransportFailure::Other { message: e.to_string() })
                    .and_then(|body| model.post(path, key, body));
                return match answer {
                    Ok((http_status, body)) => classify(http_status, &body),
                    Err(failure) => transport(failure),
                };
            }
        };
        let url = match base_url.join(path.trim_start_matches('/')) {
            Ok(url) => url,
            Err(e) => return transport(TransportFailure::Other { message: e.to_string() }),
        };
        debug!(%url, key, "calling the provider");
        let response =
            match http.post(url).header(IDEMPOTENCY_KEY_HEADER, key).json(body).send().await {
                Ok(response) => response,
                Err(e) => return transport(failure_of(&e)),
            };
        let http_status = response.status().as_u16();
        match read_bounded(response, response_bytes_max).await {
            Ok(body) => classify(http_status, &body),
            Err(failure) => transport(failure),
        }
    }
}

/// The body, unless it is larger than `bytes_max` or breaks off.
async fn read_bounded(
    mut response: reqwest::Response,
    bytes_max: usize,
) -> Result<Vec<u8>, TransportFailure> {
    let http_status = response.status().as_u16();
    let too_large = TransportFailure::TooLarge { http_status, bytes: bytes_max };
    if response.content_length().is_some_and(|n| n > bytes_max as u64) {
        return Err(too_large);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > bytes_max {
                    return Err(too_large);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(failure_of(&e)),
        }
    }
}

fn failure_of(e: &reqwest::Error) -> TransportFailure {
    if e.is_timeout() {
        TransportFailure::Timeout
    } else if e.is_connect() {
        TransportFailure::Connect { message: root_cause(e) }
    } else {
        TransportFailure::Other { message: root_cause(e) }
    }
}

/// The innermost cause: reqwest's own message only says "error sending request".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert!(Provider::new(&ProviderConfig::new("http://127.0.0.1:7070")).is_ok());
        assert!(Provider::new(&ProviderConfig::new("https://psp.example/api/")).is_ok());
        for bad in ["127.0.0.1:7070", "ftp://psp", "http://psp/?x=1", "not a url"] {
            let err = Provider::new(&ProviderConfig::new(bad)).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn paths_are_appended_to_the_base_path() {
        let provider = Provider::new(&ProviderConfig::new("https://psp.example/api")).unwrap();
        let Backend::Http { base_url, .. } = &provider.backend else { unreachable!() };
        let url = base_url.join(CHARGES_PATH.trim_start_matches('/')).unwrap();
        assert_eq!(url.as_str(), "https://psp.example/api/v1/charges");
    }
}
