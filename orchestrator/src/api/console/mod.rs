//! The operator's web console under `/console`: server-rendered HTML (askama)
//! with htmx for repairs, everything served from the binary (no CDN, no web
//! fonts), so it works where the orchestrator runs and in headless Chromium.
//!
//! Pages: overview (counts by status and type, stuck counts), stuck inbox,
//! filterable saga list with cursor paging, and one saga (summary, step table,
//! timeline of events, commands and replies, repair buttons for operators).
//! Every number and list comes from the same functions as the JSON API
//! ([`super::overview_of`], [`super::sagas::page`], [`super::sagas::detail`]),
//! and a repair goes through [`crate::engine::driver::Driver::repair`] as the API's does.
//!
//! Auth: `/console/login` checks a token with [`super::Tokens::check`] and
//! opens a server-side session (`store::sessions`) whose random id is the
//! `skald_session` cookie (HttpOnly, SameSite=Strict, Path=/), which the JSON
//! API accepts too (same-site only); `/console/logout` closes it. A console
//! page without an open session redirects to the login page instead of
//! answering JSON 401.
//!
//! CSRF: besides SameSite=Strict, every POST is refused when the browser says
//! it comes from another site (`Sec-Fetch-Site`, `Origin` against `Host`),
//! and a repair must carry `HX-Request: true`, a header a cross-site form
//! cannot send (no CORS is allowed). Each repair form carries a request id
//! made when the page was rendered, so a double click repeats one request and
//! the driver answers it once.

pub mod pages;

mod session;
pub mod throttle;

use super::auth::{self, Caller, Role};
use super::error::ApiError;
use super::filter::FilterSpec;
use super::state::ApiState;
use super::{overview_of, sagas};
use crate::api::auth::cross_site;
use ::sagas::machine::{OperatorInput, SAGA_ID_LEN_MAX};
use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use pages::{
    AuditFragment, AuditPage, AuditPanel, Chrome, Count, ErrorPage, FilterForm, ListPage,
    LoginPage, Notice, OverviewPage, RepairFragment, RepairPanel, Row, SagaPage, SagaView,
    StuckPage, TypeRow,
};
use serde::Deserialize;
use session::{login, login_form, logout, require_caller};
use std::sync::LazyLock;
use std::time::SystemTime;

/// htmx 2 (`htmx.org` from npm, `dist/htmx.min.js`), vendored.
const HTMX_JS: &str = include_str!("../../../assets/htmx.min.js");
/// The console's style sheet.
const CONSOLE_CSS: &str = include_str!("../../../assets/console.css");
/// The tab icon.
const FAVICON_SVG: &str = include_str!("../../../assets/favicon.svg");
/// Asset URLs carry a hash of their content, so they can be cached for a year
/// and a new build is still fetched.
static HTMX_SRC: LazyLock<String> =
    LazyLock::new(|| format!("/console/assets/htmx.min.js?v={:016x}", fnv1a(HTMX_JS.as_bytes())));
static CSS_HREF: LazyLock<String> = LazyLock::new(|| {
    format!("/console/assets/console.css?v={:016x}", fnv1a(CONSOLE_CSS.as_bytes()))
});
/// Rows per list page.
const PAGE_ROWS: u64 = 50;
/// How long the login cookie lives, in seconds (the token's own expiry still applies).
const COOKIE_MAX_AGE_S: u64 = 12 * 3600;
/// Longest reason accepted from the repair form, in bytes (the machine checks its own limit too).
const REASON_LEN_MAX: usize = ::sagas::machine::OPERATOR_TEXT_LEN_MAX;

/// FNV-1a: a content hash for cache busting, not for security.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The console's routes; merged into [`super::app`].
pub fn routes(state: &ApiState) -> Router<ApiState> {
    let signed_in = Router::new()
        .route("/console", get(overview))
        .route("/console/stuck", get(stuck))
        .route("/console/sagas", get(list))
        .route("/console/sagas/{saga_id}", get(saga))
        .route("/console/sagas/{saga_id}/repair", post(repair))
        .route("/console/sagas/{saga_id}/audit", get(audit))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_caller));
    let open = Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route(
            "/console/assets/htmx.min.js",
            get(|| async { asset(HTMX_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/console/assets/favicon.svg", get(|| async { asset(FAVICON_SVG, "image/svg+xml") }))
        .route(
            "/console/assets/console.css",
            get(|| async { asset(CONSOLE_CSS, "text/css; charset=utf-8") }),
        );
    signed_in.merge(open).layer(middleware::map_response(security_headers))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every console answer: no framing, no inline or foreign script,
/// and pages (which show saga data) are not stored by caches.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn chrome(caller: Option<&Caller>) -> Chrome {
    Chrome {
        user: caller.map(|c| format!("{} ({})", c.name, c.role.as_str())),
        htmx_src: HTMX_SRC.as_str(),
        css_href: CSS_HREF.as_str(),
    }
}

/// Render a template; a template that cannot render is a bug, logged and answered 500.
fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

/// The status the API would answer `e` with, and its message. The API's own
/// answer decides the status, and logs the cause of an infrastructure fault.
fn status_and_message(e: ApiError) -> (StatusCode, String) {
    let message = e.to_string();
    (e.into_response().status(), message)
}

/// An [`ApiError`] as a console page.
fn error_page(caller: Option<&Caller>, e: ApiError) -> Response {
    let (status, message) = status_and_message(e);
    render(status, &ErrorPage { chrome: chrome(caller), status: status.as_u16(), message })
}

async fn overview(State(state): State<ApiState>, Extension(caller): Extension<Caller>) -> Response {
    let o = match overview_of(&state).await {
        Ok(o) => o,
        Err(e) => return error_page(Some(&caller), e),
    };
    let statuses: Vec<&'static str> = super::filter::STATUSES.to_vec();
    let by_status = statuses
        .iter()
        .map(|s| Count {
            label: (*s).to_owned(),
            count: o.by_status.get(*s).copied().unwrap_or(0).to_string(),
            href: format!("/console/sagas{}", pages::query(&[("status", s)])),
        })
        .collect();
    let mut names = state.driver.registry().names();
    names.extend(o.by_type.keys().cloned());
    names.sort();
    names.dedup();
    let types = names
        .iter()
        .map(|name| {
            let counts = o.by_type.get(name);
            let cells = statuses
                .iter()
                .map(|s| Count {
                    label: (*s).to_owned(),
                    count: counts.and_then(|c| c.get(*s)).copied().unwrap_or(0).to_string(),
                    href: format!(
                        "/console/sagas{}",
                        pages::query(&[("type", name), ("status", s)])
                    ),
                })
                .collect();
            TypeRow {
                name: name.clone(),
                href: format!("/console/sagas{}", pages::query(&[("type", name)])),
                cells,
                total: counts.map_or(0, |c| c.values().sum()),
            }
        })
        .collect();
    let stuck = o
        .stuck
        .iter()
        .map(|(class, n)| Count {
            label: class.clone(),
            count: n.to_string(),
            href: format!("/console/stuck{}", pages::query(&[("class", class)])),
        })
        .collect();
    let page = OverviewPage {
        chrome: chrome(Some(&caller)),
        total: o.by_status.values().sum(),
        by_status,
        statuses,
        types,
        stuck_total: o.stuck_total,
        stuck,
        partitions_owned: o.partitions_owned,
    };
    render(StatusCode::OK, &page)
}

/// Saga ids and cursors: what [`sagas::page`] hands out.
fn is_saga_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= SAGA_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One page of sagas; `Err` is the message to show above an empty list.
async fn rows(
    state: &ApiState,
    spec: &FilterSpec,
    cursor: Option<&str>,
) -> Result<(Vec<Row>, Option<String>), String> {
    let cursor = cursor.filter(|c| !c.is_empty());
    if cursor.is_some_and(|c| !is_saga_id(c)) {
        return Err("That page link is not valid; start from the first page.".to_owned());
    }
    let filter = spec.to_filter().map_err(|e| e.to_string())?;
    match sagas::page(state, &filter, cursor, PAGE_ROWS).await {
        Ok(p) => Ok((p.items.iter().map(Row::of).collect(), p.next_cursor)),
        Err(e) => Err(status_and_message(e).1),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    #[serde(rename = "type")]
    saga_type: Option<String>,
    status: Option<String>,
    step: Option<String>,
    stuck: Option<String>,
    key: Option<String>,
    older_than: Option<String>,
    newer_than: Option<String>,
    /// One tag to match, written `name=value`.
    tag: Option<String>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (q, bad_query) = match query {
        Ok(Query(q)) => (q, None),
        Err(e) => (ListParams::default(), Some(e.body_text())),
    };
    let text = |v: &Option<String>| v.as_deref().unwrap_or("").trim().to_owned();
    let form = FilterForm {
        saga_type: text(&q.saga_type),
        status: text(&q.status),
        step: text(&q.step),
        stuck: text(&q.stuck),
        key: text(&q.key),
        older_than: text(&q.older_than),
        newer_than: text(&q.newer_than),
        tag: text(&q.tag),
    };
    let tags = match form.tag.split_once('=') {
        Some((name, value)) => [(name.trim().to_owned(), value.trim().to_owned())].into(),
        None => std::collections::BTreeMap::new(),
    };
    let bad_query = bad_query.or_else(|| {
        (!form.tag.is_empty() && tags.is_empty())
            .then(|| format!("`{}` is not a tag filter; write name=value", form.tag))
    });
    let spec = FilterSpec {
        tags,
        saga_type: Some(form.saga_type.clone()),
        status: Some(form.status.clone()),
        step: Some(form.step.clone()),
        older_than: Some(form.older_than.clone()),
        newer_than: Some(form.newer_than.clone()),
        stuck: Some(form.stuck.clone()),
        key: Some(form.key.clone()),
        ended_within: None,
    };
    let result = match bad_query {
        Some(e) => Err(e),
        None => rows(&state, &spec, q.cursor.as_deref()).await,
    };
    let (status, rows, next, error) = match result {
        Ok((rows, next)) => (StatusCode::OK, rows, next, None),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Vec::new(), None, Some(e)),
    };
    let next_href = next.map(|c| {
        let mut pairs = form.pairs();
        pairs.push(("cursor", &c));
        format!("/console/sagas{}", pages::query(&pairs))
    });
    let page = ListPage {
        chrome: chrome(Some(&caller)),
        types: pages::choices("any", &state.driver.registry().names(), &form.saga_type),
        statuses: pages::status_choices(&form.status),
        stuck_classes: pages::stuck_choices("no filter", &form.stuck),
        form,
        rows,
        next_href,
        error,
    };
    render(status, &page)
}

#[derive(Debug, Default, Deserialize)]
struct StuckParams {
    class: Option<String>,
    cursor: Option<String>,
}

async fn stuck(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<StuckParams>,
) -> Response {
    let class =
        q.class.as_deref().map(str::trim).filter(|c| !c.is_empty()).unwrap_or("any").to_owned();
    let spec = FilterSpec { stuck: Some(class.clone()), ..FilterSpec::default() };
    let (status, rows, next, error) = match rows(&state, &spec, q.cursor.as_deref()).await {
        Ok((rows, next)) => (StatusCode::OK, rows, next, None),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Vec::new(), None, Some(e)),
    };
    let next_href = next
        .map(|c| format!("/console/stuck{}", pages::query(&[("class", &class), ("cursor", &c)])));
    let mut classes = pages::stuck_choices("any", &class);
    // `any` is both the empty choice and a value: keep one.
    classes.retain(|c| !c.value.is_empty());
    let page = StuckPage { chrome: chrome(Some(&caller)), classes, rows, next_href, error };
    render(status, &page)
}

async fn saga(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(saga_id): Path<String>,
) -> Response {
    let detail = match sagas::detail(&state, &saga_id).await {
        Ok(d) => d,
        Err(e) => return error_page(Some(&caller), e),
    };
    let repair = (caller.role >= Role::Operator)
        .then(|| RepairPanel::new(&detail.summary.saga_id, &detail.summary.status));
    let page = SagaPage {
        chrome: chrome(Some(&caller)),
        audit: AuditPanel::unasked(&detail.summary.saga_id),
        saga: SagaView::of(&detail),
        repair,
        role: caller.role.as_str().to_owned(),
    };
    render(StatusCode::OK, &page)
}

/// The saga across services: its participants asked over the bus. Answers
/// the panel to swap in (htmx), or a page of its own.
async fn audit(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(saga_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = super::audit::one(&state, &saga_id).await;
    let htmx = headers.get("hx-request").is_some_and(|v| v == "true");
    if !htmx && let Err(e) = found {
        return error_page(Some(&caller), e);
    }
    let panel = match found {
        Ok(audit) => AuditPanel::of(&audit),
        Err(e) => {
            AuditPanel { error: Some(status_and_message(e).1), ..AuditPanel::unasked(&saga_id) }
        }
    };
    if htmx {
        render(StatusCode::OK, &AuditFragment { audit: &panel })
    } else {
        render(StatusCode::OK, &AuditPage { chrome: chrome(Some(&caller)), audit: panel })
    }
}

#[derive(Debug, Deserialize)]
struct RepairForm {
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    outcome: String,
    request_id: String,
}

/// A repair from the saga page (htmx): answers the repair panel to swap in,
/// with the result or what went wrong.
async fn repair(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(saga_id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<RepairForm>, FormRejection>,
) -> Response {
    let mut panel = RepairPanel::new(&saga_id, "");
    if cross_site(&headers) || headers.get("hx-request").is_none_or(|v| v != "true") {
        return refuse_closed(
            StatusCode::FORBIDDEN,
            "Repairs are sent from the saga page of this console; reload it and try again.".into(),
            &mut panel,
        );
    }
    if caller.role < Role::Operator {
        let e = ApiError::Forbidden { needed: Role::Operator, have: caller.role };
        return refuse_closed(StatusCode::FORBIDDEN, e.to_string(), &mut panel);
    }
    if !is_saga_id(&saga_id) {
        return refuse_closed(
            StatusCode::NOT_FOUND,
            format!("saga {saga_id} not found"),
            &mut panel,
        );
    }
    let Ok(Form(form)) = form else {
        return refuse_closed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Send the repair form.".into(),
            &mut panel,
        );
    };
    // Keep what the operator typed, and the request id, for another try.
    panel.request_id = form.request_id.clone();
    panel.reason = form.reason.clone();
    panel.outcomes = pages::outcome_choices(&form.outcome);
    if form.reason.len() > REASON_LEN_MAX {
        let text = format!("The reason is longer than {REASON_LEN_MAX} bytes.");
        return refuse(StatusCode::UNPROCESSABLE_ENTITY, text, &mut panel);
    }
    let outcome = Some(form.outcome.as_str()).filter(|o| !o.is_empty());
    let action = match sagas::operator_action(&form.action, outcome) {
        Ok(a) => a,
        Err(e) => return refuse(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), &mut panel),
    };
    let op =
        OperatorInput { action, by: caller.name.clone(), reason: form.reason.trim().to_owned() };
    match state.driver.repair(&saga_id, op, &form.request_id).await {
        Ok(done) => {
            tracing::info!(saga_id, action = %done.action, by = %caller.name, "console repair");
            panel.notice = Some(Notice::done(&done));
            panel.done = true;
            panel.status_after = Some(done.status.clone());
            render(StatusCode::OK, &RepairFragment { panel: &panel })
        }
        Err(e) => {
            let (status, text) = status_and_message(e.into());
            refuse(status, text, &mut panel)
        }
    }
}

/// The repair panel with what went wrong and a link to reload the page, no
/// form: the request cannot succeed from this page as it is.
fn refuse_closed(status: StatusCode, text: String, panel: &mut RepairPanel) -> Response {
    panel.done = true;
    refuse(status, text, panel)
}

/// The repair panel again, with what went wrong.
fn refuse(status: StatusCode, text: String, panel: &mut RepairPanel) -> Response {
    panel.notice = Some(Notice { ok: false, text });
    render(status, &RepairFragment { panel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use session::safe_next;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        assert!(!cross_site(&headers(&[])));
        assert!(!cross_site(&headers(&[("host", "a:1"), ("origin", "http://a:1")])));
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(cross_site(&headers(&[("host", "a:1"), ("origin", "http://evil:1")])));
        assert!(cross_site(&headers(&[("host", "a:1"), ("origin", "null")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
    }

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/console/sagas?status=parked")), "/console/sagas?status=parked");
        assert_eq!(safe_next(Some("https://evil.example/")), "/console");
        assert_eq!(safe_next(Some("//evil.example/")), "/console");
        assert_eq!(safe_next(Some("/console\r\nX: y")), "/console");
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn asset_urls_carry_a_content_hash() {
        assert!(HTMX_SRC.starts_with("/console/assets/htmx.min.js?v="));
        assert_eq!(HTMX_SRC.len(), "/console/assets/htmx.min.js?v=".len() + 16);
        assert_ne!(*HTMX_SRC, *CSS_HREF);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }
}
