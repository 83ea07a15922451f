//! Signing in to the console: a server-side session (`store::sessions`)
//! whose random id is the `skald_session` cookie, never the token; the login
//! and logout pages (signing out closes the session); the middleware that
//! sends a visitor without a valid session to the login page; and the
//! cross-site checks every POST passes.

use super::*;

/// Middleware: an open session (or a bearer token) or off to the login page.
pub(super) async fn require_caller(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match auth::cookie(&req, auth::COOKIE) {
        Some(session) => auth::session_caller(&state, session).await,
        None => bearer(req.headers()).and_then(|t| state.tokens.check(t, SystemTime::now())),
    };
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    let here = req.uri().path_and_query().map_or("/console", |p| p.as_str());
    let login = format!("/console/login{}", pages::query(&[("next", here)]));
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return Redirect::to(&login).into_response();
    }
    // htmx follows `HX-Redirect`; anything else gets a plain 401.
    let mut response =
        (StatusCode::UNAUTHORIZED, "sign in again at /console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&login) {
        response.headers_mut().insert("hx-redirect", v);
    }
    response
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Where to go after signing in: a console path, never another site.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

pub(super) fn login_cookie(session: &str, headers: &HeaderMap) -> String {
    // `Secure` when a TLS proxy in front says so; plain HTTP on localhost has no TLS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    format!(
        "{}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={COOKIE_MAX_AGE_S}{}",
        auth::COOKIE,
        if secure { "; Secure" } else { "" }
    )
}

#[derive(Debug, Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn login_form(Query(q): Query<NextQuery>) -> Response {
    let page = LoginPage { chrome: chrome(None), next: safe_next(q.next.as_deref()), error: None };
    render(StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(super) async fn login(
    State(state): State<ApiState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<crate::api::limits::Peer>>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let client = peer.map(|axum::Extension(info)| info.0.0.ip());
    let now = std::time::Instant::now();
    let again = |status: StatusCode, next: String, error: &str| {
        let page = LoginPage { chrome: chrome(None), next, error: Some(error.to_owned()) };
        render(status, &page)
    };
    if cross_site(&headers) {
        return again(
            StatusCode::FORBIDDEN,
            "/console".into(),
            "Sign in from this console's own page.",
        );
    }
    let Ok(Form(form)) = form else {
        return again(StatusCode::BAD_REQUEST, "/console".into(), "Send the sign-in form.");
    };
    let next = safe_next(form.next.as_deref());
    if !state.sign_ins.allows(client, now) {
        tracing::warn!(?client, "console sign-in refused: too many failures");
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            next,
            "Too many failed sign-ins from here; wait a minute and try again.",
        );
    }
    let token = form.token.trim();
    let Some(caller) = state.tokens.check(token, SystemTime::now()) else {
        state.sign_ins.failed(client, now);
        return again(
            StatusCode::UNAUTHORIZED,
            next,
            "That token is not valid (unknown or expired).",
        );
    };
    let session = auth::new_token();
    let store = state.driver.store();
    let max_age_ms = i64::try_from(COOKIE_MAX_AGE_S * 1_000).unwrap_or(i64::MAX);
    let expires_at_ms = store.clock().now_db().saturating_add(max_age_ms);
    let (session_hash, token_hash) = (auth::hash_token(&session), auth::hash_token(token));
    let opened = store.open_session(&session_hash, &token_hash, expires_at_ms);
    if let Err(e) = opened.await {
        tracing::warn!(error = %e, "cannot open a console session");
        return again(
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            "The console cannot sign you in right now (its database did not answer); try again.",
        );
    }
    tracing::info!(name = %caller.name, role = caller.role.as_str(), "console sign-in");
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&login_cookie(&session, &headers)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub(super) async fn logout(State(state): State<ApiState>, req: Request) -> Response {
    if cross_site(req.headers()) {
        return (StatusCode::FORBIDDEN, "sign out from the console's own page").into_response();
    }
    // The session ends here, whatever the browser does with its cookie.
    if let Some(session) = auth::cookie(&req, auth::COOKIE)
        && let Err(e) = state.driver.store().close_session(&auth::hash_token(session)).await
    {
        tracing::warn!(error = %e, "cannot close a console session");
        return (StatusCode::SERVICE_UNAVAILABLE, "cannot sign out now; try again").into_response();
    }
    let clear = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
