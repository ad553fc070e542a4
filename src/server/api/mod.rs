//! The backend API: `POST /api/<method>` with `Authorization: apikey <key>` (`--api-key`),
//! JSON in and out, for the application's backend to act on clients.
//!
//! Every answer is `{"result": ...}` or `{"error": {"code": ..., "message": ...}}`, the code
//! being the HTTP status: 400 (bad request), 401 (wrong or missing key), 404 (no such method,
//! or the API is off because no key is configured), 413 (body too large), 503 (cluster
//! unreachable). One file per method; each says what it does across the cluster.
mod broadcast;
mod disconnect;
mod history;
mod info;
mod presence;
mod publish;
mod topics;
mod unsubscribe;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use thiserror::Error;

use crate::node::Node;
use crate::session::Commands;

/// Largest request body.
const MAX_BODY: usize = 1024 * 1024;

/// What an API call may need.
pub struct Api<'a> {
    pub node: &'a Node,
    pub commands: &'a Commands,
}

/// The body of a method that takes nothing: `{}` (or none).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArguments {}

/// Why a call failed.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid API key is required: Authorization: apikey <key>")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Body(crate::transport::request_body::BodyError),
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Body(error) => error.status(),
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn response(&self) -> HttpResponse {
        super::json_error(self.status(), self)
    }
}

impl From<crate::topic::PublishError> for ApiError {
    fn from(error: crate::topic::PublishError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

impl From<crate::topic::StoreError> for ApiError {
    fn from(error: crate::topic::StoreError) -> Self {
        ApiError::Unavailable(error.to_string())
    }
}

/// `POST /api/{method}`.
pub async fn call(
    req: HttpRequest,
    method: web::Path<String>,
    body: web::Payload,
    node: web::Data<Node>,
    commands: web::Data<Commands>,
) -> HttpResponse {
    let api = Api {
        node: &node,
        commands: &commands,
    };
    match answer(&req, &method, body, &api).await {
        Ok(result) => HttpResponse::Ok().json(json!({ "result": result })),
        Err(error) => error.response(),
    }
}

async fn answer(
    req: &HttpRequest,
    method: &str,
    body: web::Payload,
    api: &Api<'_>,
) -> Result<Value, ApiError> {
    authorize(req, api.node)?;
    let body = read_body(body, api.node.config.body_timeout()).await?;
    match method {
        "publish" => publish::call(api, parse(&body)?).await,
        "broadcast" => broadcast::call(api, parse(&body)?).await,
        "disconnect" => disconnect::call(api, parse(&body)?).await,
        "unsubscribe" => unsubscribe::call(api, parse(&body)?).await,
        "history" => history::call(api, parse(&body)?).await,
        "presence" => presence::page(api, parse(&body)?).await,
        "presence_stats" => presence::stats(api, parse(&body)?).await,
        "topics" => {
            parse::<NoArguments>(&body)?;
            topics::call(api).await
        }
        "info" => {
            parse::<NoArguments>(&body)?;
            info::call(api).await
        }
        other => Err(ApiError::NotFound(format!(
            "no API method {other:?}: publish, broadcast, disconnect, unsubscribe, history, presence, presence_stats, topics, info"
        ))),
    }
}

/// The key must match `--api-key` (compared in constant time); without one the API is off.
fn authorize(req: &HttpRequest, node: &Node) -> Result<(), ApiError> {
    let Some(key) = node.config.api_key.as_deref() else {
        return Err(ApiError::NotFound(
            "the backend API is off: start the node with --api-key".into(),
        ));
    };
    let given = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
        .unwrap_or_default();
    let same = given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

async fn read_body(
    body: web::Payload,
    timeout: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    crate::transport::request_body::read(body, MAX_BODY, timeout)
        .await
        .map_err(ApiError::Body)
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
}

/// The answer of a command on sessions: how many this node reached when it ran here alone, or
/// nothing in a cluster (every node runs it on its own clients).
fn sessions_reached(here: Option<usize>) -> Value {
    match here {
        Some(n) => json!({ "sessions": n }),
        None => json!({}),
    }
}

/// A topic name as clients use it (the one rule of `crate::topic`).
fn check_topic(topic: &str) -> Result<(), ApiError> {
    crate::topic::check_name(topic).map_err(|bad| ApiError::BadRequest(bad.to_string()))
}
