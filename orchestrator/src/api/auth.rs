//! Bearer tokens and roles.
//!
//! Tokens come from a YAML file (`--api-tokens-file`) that stores only their
//! SHA-256, each with a name (recorded as `by` on every repair), a role and an
//! optional expiry. Roles are ordered: `viewer` reads, `operator` also starts
//! sagas and repairs them, `admin` also registers definitions. Every route is
//! mounted under the role it needs (see `api::app`); the middleware here turns
//! a missing or unknown token into 401 and a too-weak role into 403.
//!
//! The console signs a browser in to a server-side session (its random id is
//! the `skald_session` cookie: HttpOnly, SameSite=Strict) that speaks for the
//! token it was opened with; the browser never holds the token itself, and
//! signing out ends the session on the server.

use super::error::ApiError;
use super::state::ApiState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// The cookie the console keeps its session id in (never the token).
pub const COOKIE: &str = "skald_session";
/// Most tokens a file may hold.
pub const TOKENS_MAX: usize = 1_000;
/// Longest bearer token accepted, in bytes.
const TOKEN_LEN_MAX: usize = 512;
/// Longest token name (it becomes an event's `by`).
const NAME_LEN_MAX: usize = 128;

/// What a caller may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    /// Reads, and sends events to sagas that wait for them (a service
    /// forwarding a provider's webhook, say); starts and repairs nothing.
    Signaller,
    Operator,
    Admin,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Signaller => "signaller",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// Who is calling: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    role: Role,
    expires_at: Option<SystemTime>,
}

/// The configured tokens, by SHA-256 of the token.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenLine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    name: String,
    role: Role,
    /// Hex SHA-256 of the token.
    sha256: String,
    /// RFC 3339 time after which the token is refused.
    expires_at: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read the API tokens file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("API tokens file {path}: {message}")]
    Invalid { path: String, message: String },
}

/// The tokens the API checks now: one set shared by every request, replaced
/// whole when the tokens file is loaded again (`skald serve` on SIGHUP).
#[derive(Debug, Clone, Default)]
pub struct SharedTokens(Arc<RwLock<Arc<Tokens>>>);

impl SharedTokens {
    #[must_use]
    pub fn new(tokens: Tokens) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(tokens))))
    }

    /// The set in force.
    #[must_use]
    pub fn current(&self) -> Arc<Tokens> {
        self.0.read().map_or_else(|poisoned| poisoned.into_inner().clone(), |t| t.clone())
    }

    /// Who `token` is now, if anyone (see [`Tokens::check`]).
    #[must_use]
    pub fn check(&self, token: &str, now: SystemTime) -> Option<Caller> {
        self.current().check(token, now)
    }

    /// Put `tokens` in force for every request from now on.
    pub fn replace(&self, tokens: Tokens) {
        let tokens = Arc::new(tokens);
        match self.0.write() {
            Ok(mut current) => *current = tokens,
            Err(poisoned) => *poisoned.into_inner() = tokens,
        }
    }
}

impl Tokens {
    /// No tokens: every authenticated route answers 401.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// One token with this role (the quickstart's generated admin token, tests).
    #[must_use]
    pub fn single(name: &str, role: Role, token: &str) -> Self {
        let mut t = Self::default();
        t.by_hash
            .insert(hash_token(token), Entry { name: name.to_owned(), role, expires_at: None });
        t
    }

    /// Add a token (tests, the quickstart).
    pub fn insert(&mut self, name: &str, role: Role, token: &str, expires_at: Option<SystemTime>) {
        self.by_hash.insert(hash_token(token), Entry { name: name.to_owned(), role, expires_at });
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Read a tokens file:
    ///
    /// ```yaml
    /// tokens:
    ///   - name: alice
    ///     role: operator
    ///     sha256: 5e88…  # `skald token new` prints a token and this line
    ///     expires_at: 2027-01-01T00:00:00Z   # optional
    /// ```
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokensError::Read { path: label.clone(), source })?;
        Self::parse(&label, &text)
    }

    /// Parse the text of a tokens file (`label` names it in errors).
    pub fn parse(label: &str, text: &str) -> Result<Self, TokensError> {
        let invalid = |message: String| TokensError::Invalid { path: label.to_owned(), message };
        let file: TokensFile = yaml_serde::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.tokens.len() > TOKENS_MAX {
            return Err(invalid(format!("{} tokens; at most {TOKENS_MAX}", file.tokens.len())));
        }
        let mut tokens = Self::default();
        for (i, line) in file.tokens.into_iter().enumerate() {
            let at = format!("token {} ({})", i + 1, line.name);
            if line.name.is_empty() || line.name.len() > NAME_LEN_MAX {
                return Err(invalid(format!("{at}: name must be 1-{NAME_LEN_MAX} characters")));
            }
            let hash = line.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "{at}: sha256 must be 64 hex digits (the SHA-256 of the token, not the token; \
                     `skald token new` prints it)"
                )));
            }
            let expires_at = match &line.expires_at {
                None => None,
                Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| {
                    invalid(format!("{at}: expires_at `{t}` is not an RFC 3339 time: {e}"))
                })?),
            };
            if tokens.by_hash.contains_key(&hash) {
                return Err(invalid(format!("{at}: the same token hash appears twice")));
            }
            tokens.by_hash.insert(hash, Entry { name: line.name, role: line.role, expires_at });
        }
        Ok(tokens)
    }

    /// The caller this token belongs to, if it is known and not expired.
    #[must_use]
    pub fn check(&self, token: &str, now: SystemTime) -> Option<Caller> {
        if token.is_empty() || token.len() > TOKEN_LEN_MAX {
            return None;
        }
        // Looked up by hash: the comparison never touches the secret itself.
        self.check_hash(&hash_token(token), now)
    }

    /// The caller whose token has this SHA-256 (hex), if it is known and not
    /// expired: what a console session keeps instead of the token.
    #[must_use]
    pub fn check_hash(&self, hash: &str, now: SystemTime) -> Option<Caller> {
        let entry = self.by_hash.get(hash)?;
        if entry.expires_at.is_some_and(|t| t <= now) {
            return None;
        }
        Some(Caller { name: entry.name.clone(), role: entry.role })
    }
}

/// Hex SHA-256 of a token, as stored in the tokens file.
#[must_use]
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits from the OS generator, as hex with a prefix).
#[must_use]
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("skald_{a}{b}")
}

/// True when the browser says the request comes from another site: a
/// `Sec-Fetch-Site` other than same-origin, or an `Origin` whose host is not
/// the one addressed. Clients that send neither (curl, tests) pass.
pub fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let Some((_, origin_host)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        return true; // `Origin: null` and the like
    };
    let hosts = [headers.get(header::HOST), headers.get("x-forwarded-host")];
    !hosts.iter().flatten().any(|h| h.to_str().is_ok_and(|h| h.eq_ignore_ascii_case(origin_host)))
}

/// Who the console session `session` (the cookie's value) speaks for: its
/// token's caller, as the tokens in force say now. `None` for no such open
/// session, or when the store cannot answer (the request is refused, never
/// let through).
pub async fn session_caller(state: &ApiState, session: &str) -> Option<Caller> {
    if session.is_empty() || session.len() > TOKEN_LEN_MAX {
        return None;
    }
    match state.driver.store().session_token(&hash_token(session)).await {
        Ok(Some(token_hash)) => state.tokens.current().check_hash(&token_hash, SystemTime::now()),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a console session; refusing the request");
            None
        }
    }
}

/// The token a request carries: `Authorization: Bearer …`, else the console
/// session cookie (then the second value is true).
fn token_of(req: &Request) -> Option<(&str, bool)> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then_some((token.trim(), false));
    }
    cookie(req, COOKIE).map(|token| (token, true))
}

/// The value of a cookie, if the request has it.
#[must_use]
pub fn cookie<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Middleware: let the request through only with a valid token of at least `role`.
pub async fn require(
    State((state, role)): State<(ApiState, Role)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (token, from_cookie) = token_of(&req).ok_or(ApiError::Unauthorized)?;
    // A browser sends the console's cookie with requests other sites make
    // it send (another port is the same site): the cookie speaks for the
    // console's own pages only.
    if from_cookie && cross_site(req.headers()) {
        return Err(ApiError::CrossSite);
    }
    let caller = if from_cookie {
        session_caller(&state, token).await
    } else {
        state.tokens.check(token, SystemTime::now())
    };
    let caller = caller.ok_or(ApiError::Unauthorized)?;
    if caller.role < role {
        return Err(ApiError::Forbidden { needed: role, have: caller.role });
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn file_tokens_are_checked_by_hash_role_and_expiry() {
        let now = SystemTime::now();
        let text = format!(
            "tokens:\n  - name: ann\n    role: operator\n    sha256: {}\n  - name: old\n    role: admin\n    sha256: {}\n    expires_at: 2001-01-01T00:00:00Z\n",
            hash_token("ann-secret"),
            hash_token("old-secret"),
        );
        let tokens = Tokens::parse("t.yaml", &text).unwrap();
        assert_eq!(
            tokens.check("ann-secret", now),
            Some(Caller { name: "ann".into(), role: Role::Operator })
        );
        assert_eq!(tokens.check("old-secret", now), None, "expired");
        assert_eq!(tokens.check("forged", now), None);
        assert_eq!(tokens.check("", now), None);
        assert!(tokens.check("ann-secret", now + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err =
            Tokens::parse("t.yaml", "tokens:\n  - name: x\n    role: admin\n    sha256: abc\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        let err = Tokens::parse("t.yaml", "tokens:\n  - name: x\n    role: root\n    sha256: a\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.yaml"), "{err}");
        let h = hash_token("x");
        let dup = format!(
            "tokens:\n  - {{name: a, role: admin, sha256: {h}}}\n  - {{name: b, role: viewer, sha256: {h}}}\n"
        );
        assert!(Tokens::parse("t.yaml", &dup).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        assert!(new_token().len() > 64);
        assert_ne!(new_token(), new_token());
    }
}
