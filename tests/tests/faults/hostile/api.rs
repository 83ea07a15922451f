//! The HTTP API through its router (no socket), over the orchestrator's
//! database, with a token of each role and an expired one; and the answers
//! the hostile scenarios judge.

use crate::world::World;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use orchestrator::api::{self, ApiState, Role, Tokens};
use orchestrator::cluster::partitions::Ownership;
use orchestrator::engine::driver::Driver;
use orchestrator::engine::registry::Registry;
use serde_json::Value;
use skald_tests::PARTITIONS;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tower::ServiceExt;

pub const VIEWER: &str = "fault-viewer-token";
pub const OPERATOR: &str = "fault-operator-token";
pub const ADMIN: &str = "fault-admin-token";
pub const EXPIRED: &str = "fault-expired-token";
/// The viewer's name: it must never appear as the author of a repair.
pub const VIEWER_NAME: &str = "vera";

pub struct Api {
    app: axum::Router,
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub json: Option<Value>,
    pub text: String,
    pub www_authenticate: bool,
    /// The request could not be built (a URI over 64 KiB).
    pub unsendable: bool,
}

impl Answer {
    /// `{"error": {"code": "...", "message": "..."}}`.
    pub fn is_error_shape(&self) -> bool {
        self.json.as_ref().is_some_and(|v| {
            v["error"]["code"].as_str().is_some_and(|c| !c.is_empty())
                && v["error"]["message"].as_str().is_some_and(|m| !m.is_empty())
        })
    }

    /// Not a server fault, and JSON: the error shape for a refusal.
    pub fn is_sound(&self) -> bool {
        if self.unsendable {
            return true;
        }
        if self.status.is_server_error() {
            return false;
        }
        if self.status.is_client_error() { self.is_error_shape() } else { self.json.is_some() }
    }

    pub fn brief(&self) -> String {
        let text: String = self.text.chars().take(200).collect();
        format!("{} {text}", self.status)
    }
}

impl Api {
    /// The API over the orchestrator's database, with a viewer, an operator,
    /// an admin and an expired admin token.
    pub async fn new(w: &World) -> Self {
        let store = w.store().await;
        let registry = Registry::load(&store, &w.defs).await.unwrap();
        let driver = Driver::new(store, Arc::new(registry), w.ns.clone(), PARTITIONS);
        let mut tokens = Tokens::none();
        tokens.insert(VIEWER_NAME, Role::Viewer, VIEWER, None);
        tokens.insert("otto", Role::Operator, OPERATOR, None);
        tokens.insert("ada", Role::Admin, ADMIN, None);
        let past = SystemTime::now() - Duration::from_secs(1);
        tokens.insert("old", Role::Admin, EXPIRED, Some(past));
        let state = ApiState::new(driver, tokens, Ownership::all(PARTITIONS), "faults".into());
        Self { app: api::app(state) }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let req = match req.body(Body::from(body)) {
            Ok(req) => req,
            // Not even sendable (a URI over 64 KiB): an HTTP server refuses it as 414.
            Err(_) => {
                return Answer {
                    status: StatusCode::URI_TOO_LONG,
                    json: None,
                    text: String::new(),
                    www_authenticate: false,
                    unsendable: true,
                };
            }
        };
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let www_authenticate = res.headers().contains_key(header::WWW_AUTHENTICATE);
        let bytes = axum::body::to_bytes(res.into_body(), 64 << 20).await.unwrap();
        Answer {
            status,
            json: serde_json::from_slice(&bytes).ok(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
            www_authenticate,
            unsendable: false,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Answer {
        self.send("GET", path, Some(&format!("Bearer {token}")), None, Vec::new()).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        let auth = format!("Bearer {token}");
        self.send("POST", path, Some(&auth), Some("application/json"), body.to_string().into())
            .await
    }
}
