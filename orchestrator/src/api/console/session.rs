//! Signing in to the console: the `skald_token` cookie, the login and logout
//! pages, the middleware that sends a visitor without a valid token to the
//! login page, and the cross-site checks every POST passes.

use super::*;

/// Middleware: a valid `skald_token` cookie (or bearer token) or off to the login page.
pub(super) async fn require_caller(
    State(state): State<ApiState>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = auth::cookie(&req, auth::COOKIE)
        .or_else(|| bearer(req.headers()))
        .and_then(|t| state.tokens.check(t, SystemTime::now()));
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

/// Whether a token can be a cookie value as it is (RFC 6265 cookie-octets).
pub(super) fn cookie_safe(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b',' | b';' | b'\\'))
}

pub(super) fn login_cookie(token: &str, headers: &HeaderMap) -> String {
    // `Secure` when a TLS proxy in front says so; plain HTTP on localhost has no TLS.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    format!(
        "{}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={COOKIE_MAX_AGE_S}{}",
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
    if !cookie_safe(token) {
        return again(
            StatusCode::BAD_REQUEST,
            next,
            "This token has characters a cookie cannot hold; make one with `skald token new`.",
        );
    }
    tracing::info!(name = %caller.name, role = caller.role.as_str(), "console sign-in");
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&login_cookie(token, &headers)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

pub(super) async fn logout(headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "sign out from the console's own page").into_response();
    }
    let clear = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    let mut response = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
