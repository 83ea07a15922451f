//! The web console through `api::app` with `oneshot`: no socket, a SQLite
//! store in a temporary file, sagas started and repaired through the driver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use common::Engine;
use orchestrator::api::{Role, Tokens};
use serde_json::json;
use skald_testkit::Backend;

const OPERATOR: &str = "skald_operator_token";
const VIEWER: &str = "skald_viewer_token";

/// Two steps with compensations: a started saga waits for `reserve` and can be aborted.
const SHOP: &str = include_str!("fixtures/shop.yaml");

struct Fixture {
    app: Router,
    engine: Engine,
}

async fn fixture() -> Fixture {
    let engine = Engine::new(Backend::Sqlite, &[SHOP]).await;
    let mut tokens = Tokens::none();
    tokens.insert("olga", Role::Operator, OPERATOR, None);
    tokens.insert("vic", Role::Viewer, VIEWER, None);
    Fixture { app: engine.router(tokens, "test"), engine }
}

impl Fixture {
    async fn start(&self, key: &str, note: &str) -> String {
        let started =
            self.engine.driver.start("shop", key, &json!({ "note": note })).await.unwrap();
        started.saga_id().to_owned()
    }

    async fn status(&self, saga_id: &str) -> String {
        self.engine.driver.state(saga_id).await.unwrap().0.status
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let (status, headers, bytes) = common::send(&self.app, req).await;
        (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// GET `uri` without signing in.
    async fn get_signed_out(&self, uri: &str) -> (StatusCode, HeaderMap, String) {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    /// Sign in with `token` through the login form: the session cookie
    /// (`skald_session=<id>`) a browser would send from then on.
    async fn cookie(&self, token: &str) -> String {
        let req = Request::post("/console/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap();
        let (status, headers, body) = self.send(req).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "sign-in refused: {body}");
        let set = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }

    /// GET `uri` signed in with `token`.
    async fn get(&self, uri: &str, token: &str) -> (StatusCode, HeaderMap, String) {
        self.get_as(uri, &self.cookie(token).await).await
    }

    /// GET `uri` with `cookie` (`name=value`).
    async fn get_as(&self, uri: &str, cookie: &str) -> (StatusCode, HeaderMap, String) {
        let req = Request::get(uri).header(header::COOKIE, cookie).body(Body::empty()).unwrap();
        self.send(req).await
    }

    /// An htmx repair POST signed in with `token`.
    async fn repair(&self, saga_id: &str, token: &str, form: &str) -> (StatusCode, String) {
        self.repair_as(saga_id, &self.cookie(token).await, form).await
    }

    /// An htmx repair POST with `cookie` (`name=value`).
    async fn repair_as(&self, saga_id: &str, cookie: &str, form: &str) -> (StatusCode, String) {
        let req = Request::post(format!("/console/sagas/{saga_id}/repair"))
            .header(header::COOKIE, cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("HX-Request", "true")
            .body(Body::from(form.to_owned()))
            .unwrap();
        let (status, _, body) = self.send(req).await;
        (status, body)
    }
}

fn location(headers: &HeaderMap) -> &str {
    headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The attribute value that follows `before` (which ends with `="`).
fn attribute<'h>(html: &'h str, before: &str) -> Option<&'h str> {
    let at = html.find(before)? + before.len();
    html[at..].split('"').next()
}

/// The hidden request id a saga page's repair form carries.
fn request_id(html: &str) -> String {
    attribute(html, r#"name="request_id" value=""#).expect("a repair form").to_owned()
}

/// Undo HTML escaping, whichever entities the template engine chose.
fn html_unescape(s: &str) -> String {
    [
        ("&#60;", "<"),
        ("&lt;", "<"),
        ("&#62;", ">"),
        ("&gt;", ">"),
        ("&#34;", "\""),
        ("&quot;", "\""),
        ("&#39;", "'"),
        ("&#x27;", "'"),
        ("&#38;", "&"),
        ("&amp;", "&"),
    ]
    .iter()
    .fold(s.to_owned(), |acc, (entity, c)| acc.replace(entity, c))
}

#[tokio::test]
async fn login_sets_an_http_only_same_site_cookie() {
    let f = fixture().await;
    let (status, _, body) = f.get_signed_out("/console/login").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"name="token""#), "{body}");

    let login = |token: &str, origin: Option<&str>| {
        let mut req = Request::post("/console/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::HOST, "console.test");
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        req.body(Body::from(format!("token={token}&next=%2Fconsole%2Fsagas%3Fstatus%3Drunning")))
            .unwrap()
    };
    let (status, headers, _) = f.send(login(OPERATOR, Some("http://console.test"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console/sagas?status=running");
    let cookie = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().to_owned();
    assert!(cookie.starts_with("skald_session="), "{cookie}");
    assert!(!cookie.contains(OPERATOR), "the cookie holds the token: {cookie}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie} lacks {part}");
    }
    let session = cookie.split(';').next().unwrap().to_owned();

    let (status, headers, body) = f.send(login("forged", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains("not valid"), "{body}");

    // A sign-in form posted from another site is refused.
    let (status, headers, _) = f.send(login(OPERATOR, Some("https://evil.example"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::SET_COOKIE).is_none());

    // The cookie opens the console; signing out clears it and ends the
    // session on the server: the same cookie, sent again, opens nothing.
    let with_session = |req: axum::http::request::Builder| {
        req.header(header::COOKIE, session.as_str()).body(Body::empty()).unwrap()
    };
    let (status, _, body) = f.send(with_session(Request::get("/console"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("olga (operator)"), "{body}");
    let (status, headers, _) = f.send(with_session(Request::post("/console/logout"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers.get(header::SET_COOKIE).unwrap().to_str().unwrap().contains("Max-Age=0"));
    let (status, headers, _) = f.send(with_session(Request::get("/console"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "a closed session still opens the console");
    assert!(location(&headers).starts_with("/console/login"));
    let (status, _, _) = f.send(with_session(Request::get("/v1/sagas"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a closed session still opens the API");
}

#[tokio::test]
async fn pages_without_a_valid_cookie_redirect_to_the_login_page() {
    let f = fixture().await;
    let id = f.start("k1", "n").await;
    for uri in [
        "/console",
        "/console/stuck",
        "/console/sagas?status=running",
        &format!("/console/sagas/{id}"),
    ] {
        let (status, headers, _) = f.get_signed_out(uri).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
        assert!(
            location(&headers).starts_with("/console/login?next=%2Fconsole"),
            "{uri}: {headers:?}"
        );
        let (status, headers, _) = f.get_as(uri, "skald_session=forged").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
        assert!(location(&headers).starts_with("/console/login"));
    }
    // htmx is sent to the login page too; the JSON API keeps answering 401.
    let (status, body) =
        f.repair_as(&id, "skald_session=forged", "action=abort&reason=x&request_id=r1").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = f.get_signed_out("/v1/sagas").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The root leads to the console.
    let (status, headers, _) = f.get_signed_out("/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/console");
}

#[tokio::test]
async fn a_viewer_sees_no_repair_buttons_and_cannot_repair() {
    let f = fixture().await;
    let id = f.start("k1", "n").await;
    let (status, _, body) = f.get(&format!("/console/sagas/{id}"), VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&id));
    assert!(!body.contains("hx-post"), "a viewer got a repair form");
    assert!(!body.contains(r#"value="abort""#));
    assert!(body.contains("Repairs need the operator role"), "{body}");

    let (status, body) = f.repair(&id, VIEWER, "action=abort&reason=x&request_id=r1").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("operator role"), "{body}");
    assert!(!body.contains("hx-post"), "a refused viewer got a repair form: {body}");
    assert_eq!(f.status(&id).await, "running");

    let (_, _, body) = f.get(&format!("/console/sagas/{id}"), OPERATOR).await;
    assert!(body.contains("hx-post"), "an operator got no repair form");
    assert!(body.contains(r#"value="abort""#));
}

#[tokio::test]
async fn an_operator_repair_through_the_console_changes_the_saga_once() {
    let f = fixture().await;
    let id = f.start("k1", "n").await;
    let (_, _, page) = f.get(&format!("/console/sagas/{id}"), OPERATOR).await;
    let rid = request_id(&page);
    assert!(!rid.is_empty());

    // Without HX-Request (a plain cross-site form could send this): refused.
    let req = Request::post(format!("/console/sagas/{id}/repair"))
        .header(header::COOKIE, f.cookie(OPERATOR).await)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("action=abort&reason=x&request_id={rid}")))
        .unwrap();
    assert_eq!(f.send(req).await.0, StatusCode::FORBIDDEN);
    assert_eq!(f.status(&id).await, "running");

    // Abort without a reason: the machine's message, and the form again.
    let (status, body) =
        f.repair(&id, OPERATOR, &format!("action=abort&reason=&request_id={rid}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("reason"), "{body}");
    assert!(body.contains("hx-post") && body.contains(&rid), "{body}");
    assert_eq!(f.status(&id).await, "running");

    let form = format!("action=abort&reason=customer+cancelled&outcome=&request_id={rid}");
    let (status, body) = f.repair(&id, OPERATOR, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("abort done: the saga is now compensating"), "{body}");
    // htmx swaps the new status into the page heading.
    assert!(body.contains(r#"id="saga-status" hx-swap-oob="true">compensating<"#), "{body}");
    assert!(body.starts_with(r#"<section class="repair" id="repair">"#), "{body}");
    assert_eq!(f.status(&id).await, "compensating");
    let events = f.engine.store.history(&id).await.unwrap().len();

    // A double click sends the same request id: answered again, done once.
    let (status, body) = f.repair(&id, OPERATOR, &form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("already been carried out"), "{body}");
    assert_eq!(f.engine.store.history(&id).await.unwrap().len(), events);

    // The saga page shows who did it and why.
    let (_, _, page) = f.get(&format!("/console/sagas/{id}"), OPERATOR).await;
    assert!(page.contains("customer cancelled") && page.contains("olga"), "{page}");
    assert!(page.contains(r#"id="saga-status">compensating<"#), "{page}");

    // A repair the machine refuses says why (resume is for parked sagas).
    let other = uuid::Uuid::new_v4();
    let (status, body) =
        f.repair(&id, OPERATOR, &format!("action=resume&request_id={other}")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains(r#"class="notice error""#), "{body}");
}

#[tokio::test]
async fn saga_data_is_html_escaped() {
    let f = fixture().await;
    let evil = "<script>alert(1)</script>";
    let id = f.start("<b>key</b>", evil).await;
    for uri in [format!("/console/sagas/{id}"), "/console/sagas".to_owned()] {
        let (status, _, body) = f.get(&uri, VIEWER).await;
        assert_eq!(status, StatusCode::OK);
        assert!(!body.contains("<script>alert"), "{uri} carries the input unescaped");
        assert!(!body.contains("<b>key"), "{uri} carries the key unescaped");
        assert!(html_unescape(&body).contains("<b>key</b>"), "{uri} does not show the key: {body}");
    }
    let (_, _, body) = f.get(&format!("/console/sagas/{id}"), VIEWER).await;
    assert!(html_unescape(&body).contains(r#""note": "<script>alert(1)</script>""#), "{body}");
    // A filter value is shown back escaped too.
    let (_, _, body) = f.get("/console/sagas?key=%22%3E%3Cscript%3Ex", VIEWER).await;
    assert!(!body.contains("\"><script>x"), "{body}");
}

#[tokio::test]
async fn overview_list_filter_and_stuck_inbox() {
    let f = fixture().await;
    let a = f.start("order-a", "n").await;
    let b = f.start("order-b", "n").await;
    let (_, _, page) = f.get(&format!("/console/sagas/{b}"), OPERATOR).await;
    let form = format!("action=abort&reason=test&request_id={}", request_id(&page));
    assert_eq!(f.repair(&b, OPERATOR, &form).await.0, StatusCode::OK);

    let (status, headers, body) = f.get("/console", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::CONTENT_SECURITY_POLICY).is_some());
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert!(body.contains(r#"id="total">2<"#), "{body}");
    assert!(
        html_unescape(&body).contains(r#"href="/console/sagas?type=shop&status=compensating">1<"#),
        "{body}"
    );

    let (status, _, body) = f.get("/console/sagas?status=compensating&type=&stuck=", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(&b) && !body.contains(&a), "{body}");
    assert!(body.contains(r#"<option value="compensating" selected>"#), "{body}");
    let (_, _, body) = f.get("/console/sagas?key=order-a", VIEWER).await;
    assert!(body.contains(&a) && !body.contains(&b));

    let (status, _, body) = f.get("/console/sagas?status=done", VIEWER).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("unknown status"), "{body}");

    let (status, _, body) = f.get("/console/stuck", VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("No sagas match"), "nothing is stuck yet: {body}");
    let (status, _, _) = f.get("/console/stuck?class=wedged", VIEWER).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, _, body) = f.get("/console/sagas/no-such-saga", VIEWER).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("not found"));
}

#[tokio::test]
async fn paging_links_carry_the_filter() {
    let f = fixture().await;
    for i in 0..52 {
        f.start(&format!("bulk-{i}"), "n").await;
    }
    let (_, _, body) = f.get("/console/sagas?key=bulk", VIEWER).await;
    let href =
        html_unescape(attribute(&body, r#"id="next-page" href=""#).expect("a next page link"));
    assert!(href.starts_with("/console/sagas?key=bulk&cursor="), "{href}");
    let (status, _, body) = f.get(&href, VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.matches(r#"<a class="mono" href="/console/sagas/"#).count(), 2, "{body}");
    assert!(!body.contains(r#"id="next-page""#));
}

#[tokio::test]
async fn assets_are_served_from_the_binary_and_pages_load_nothing_from_elsewhere() {
    let f = fixture().await;
    let (status, headers, body) = f.get_signed_out("/console/assets/htmx.min.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get(header::CACHE_CONTROL).unwrap().to_str().unwrap().contains("max-age=31536000")
    );
    assert!(body.starts_with("var htmx="));
    let (status, _, _) = f.get_signed_out("/console/assets/console.css").await;
    assert_eq!(status, StatusCode::OK);

    let id = f.start("k", "n").await;
    for uri in [
        "/console/login".to_owned(),
        "/console".to_owned(),
        "/console/sagas".to_owned(),
        format!("/console/sagas/{id}"),
    ] {
        let (_, _, body) = f.get(&uri, OPERATOR).await;
        assert!(body.contains(r#"<script src="/console/assets/htmx.min.js?v="#), "{uri}");
        for outside in [r#"src="http"#, r#"href="http"#, r#"src="//"#, r#"href="//"#] {
            assert!(!body.contains(outside), "{uri} loads {outside}");
        }
    }
}

/// The console's cookie speaks for the console's own pages only: on `/v1` a
/// request another site made (another port is the same site) is refused; a
/// bearer token is not sent by browsers on their own, so it is not checked.
#[tokio::test]
async fn the_cookie_is_refused_on_the_api_when_another_site_sends_it() {
    let f = fixture().await;
    let definition_post = |auth: (&'static str, String), origin: &str| {
        Request::post("/v1/definitions/validate")
            .header(header::HOST, "console.test:8080")
            .header(header::ORIGIN, origin)
            .header(header::CONTENT_TYPE, "application/yaml")
            .header(auth.0, auth.1)
            .body(Body::from(SHOP))
            .unwrap()
    };
    let session = f.cookie(OPERATOR).await;
    let cookie = || (header::COOKIE.as_str(), session.clone());
    let bearer = || (header::AUTHORIZATION.as_str(), format!("Bearer {OPERATOR}"));
    let (status, _, body) = f.send(definition_post(cookie(), "http://console.test:9999")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("\"cross_site\""), "{body}");
    let (status, _, body) = f.send(definition_post(cookie(), "http://console.test:8080")).await;
    assert_eq!(status, StatusCode::OK, "the console's own page: {body}");
    let (status, _, body) = f.send(definition_post(bearer(), "http://console.test:9999")).await;
    assert_eq!(status, StatusCode::OK, "a bearer token: {body}");
}

/// Guessing tokens at the sign-in form is slowed down: after ten failures a
/// client is refused for the rest of its minute, even with a good token.
#[tokio::test]
async fn failed_sign_ins_are_throttled() {
    let f = fixture().await;
    let login = |token: &str| {
        Request::post("/console/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    for _ in 0..orchestrator::api::console::throttle::FAILURES_MAX {
        let (status, _, _) = f.send(login("guess")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, headers, body) = f.send(login(OPERATOR)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains("Too many failed sign-ins"), "{body}");
}

/// The "across services" panel: a link that asks the participants (htmx swaps
/// the answer in); without a bus it says so; on a bus where nobody answers,
/// every step is shown unchecked, never as agreeing.
#[tokio::test]
async fn the_saga_page_asks_the_participants_across_services() {
    let f = fixture().await;
    let id = f.start("k-audit", "n").await;
    let (status, _, body) = f.get(&format!("/console/sagas/{id}"), VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    let href = format!("/console/sagas/{id}/audit");
    assert!(body.contains(&format!(r#"hx-get="{href}""#)), "no audit link: {body}");

    let cookie = f.cookie(VIEWER).await;
    let htmx = |app: &Router, cookie: &str| {
        let req = Request::get(&href)
            .header(header::COOKIE, cookie)
            .header("HX-Request", "true")
            .body(Body::empty())
            .unwrap();
        let app = app.clone();
        async move {
            let (status, _, bytes) = common::send(&app, req).await;
            (status, String::from_utf8(bytes.to_vec()).unwrap())
        }
    };
    let (status, panel) = htmx(&f.app, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(panel.contains(r#"id="audit-error""#) && panel.contains("without a bus"), "{panel}");
    let (status, _, page) = f.get_as(&href, &cookie).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");

    // With a bus on which no participant answers.
    let nats = async_nats::connect(skald_testkit::NATS_URL).await.unwrap();
    let mut tokens = Tokens::none();
    tokens.insert("vic", Role::Viewer, VIEWER, None);
    let state = orchestrator::api::ApiState::new(
        f.engine.driver.clone(),
        tokens,
        orchestrator::cluster::partitions::Ownership::all(common::PARTITIONS),
        "test".into(),
    )
    .with_nats(nats);
    let app = orchestrator::api::app(state);
    let cookie = {
        let req = Request::post("/console/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={VIEWER}")))
            .unwrap();
        let (_, headers, _) = common::send(&app, req).await;
        let set = headers.get(header::SET_COOKIE).unwrap().to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    };
    let (status, panel) = htmx(&app, &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(panel.contains(r#"id="audit-steps""#), "{panel}");
    assert!(panel.contains("verdict-unchecked") && !panel.contains("verdict-agrees"), "{panel}");
    assert!(panel.contains("no replica of `stock` answers inspections"), "{panel}");
    assert!(!panel.contains("Every participant agrees"), "{panel}");
}

#[tokio::test]
async fn the_saga_page_draws_a_parallel_group_with_its_branches_side_by_side() {
    let engine = Engine::new(Backend::Sqlite, &[include_str!("fixtures/screened.yaml")]).await;
    let mut tokens = Tokens::none();
    tokens.insert("vic", Role::Viewer, VIEWER, None);
    let f = Fixture { app: engine.router(tokens, "test"), engine };
    let started = f.engine.driver.start("screened", "k1", &json!({ "amount": 5 })).await.unwrap();
    let id = started.saga_id().to_owned();
    let (status, _, body) = f.get(&format!("/console/sagas/{id}"), VIEWER).await;
    assert_eq!(status, StatusCode::OK);
    let flow = &body[body.find(r#"id="flow""#).unwrap()..];
    let flow = &flow[..flow.find("</ol>\n\n").unwrap_or(flow.len())];
    assert!(flow.contains(r#"class="flow-group""#) && flow.contains("prepare"), "{flow}");
    let funds = flow.find(r#"aria-label="branch funds""#).unwrap();
    let risk = flow.find(r#"aria-label="branch risk""#).unwrap();
    assert!(funds < risk, "{flow}");
    // hold is in flight; screen was skipped by its condition; then the wait.
    assert!(flow[funds..risk].contains("hold") && flow[funds..risk].contains("result-pending"));
    assert!(flow[risk..].contains("screen") && flow[risk..].contains("its condition was false"));
    assert!(flow.contains("confirmed") && flow.contains("waits for event"), "{flow}");
}
