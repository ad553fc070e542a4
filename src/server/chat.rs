//! What the chat page needs from the node beyond the protocols: a guest sign-in (on a node
//! that checks no tokens) and the member list of a room for its clients.
//!
//! - `POST /_nimbus/sign-in {"name"}`: `{"user", "token", "expires_in"}`, a guest token (see
//!   `gate::guest`) the page passes as atmosphere.js' `authToken`. A node that checks tokens
//!   answers `404`: there, tokens come from the application's backend.
//! - `GET /_nimbus/presence?topic=...&limit=&cursor=` with the client's token (`Authorization:
//!   Bearer`, or `token=`): the room's counts and a page of its members, for a client the gate
//!   lets subscribe to the topic (`403` otherwise), as the backend API's `presence` answers.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::json_error;
use crate::node::Node;

/// The chat page, the atmosphere.js it loads, and what it asks the node.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/", web::get().to(super::assets::chat_page))
        .route(
            "/_nimbus/atmosphere.js",
            web::get().to(super::assets::atmosphere_js),
        )
        .route("/_nimbus/sign-in", web::post().to(sign_in))
        .route("/_nimbus/presence", web::get().to(presence));
}

/// Largest sign-in body.
const MAX_BODY: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    name: String,
}

/// `POST /_nimbus/sign-in`.
pub async fn sign_in(node: web::Data<Node>, body: web::Payload) -> HttpResponse {
    let body = match crate::transport::request_body::read(
        body,
        MAX_BODY,
        node.config.body_timeout(),
    )
    .await
    {
        Ok(body) => body,
        Err(error) => return json_error(error.status(), error),
    };
    let request: SignIn = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"name\": ...}}: {error}"),
            )
        }
    };
    match node.gate.guest(&request.name) {
        None => json_error(
            StatusCode::NOT_FOUND,
            "this node checks tokens: sign in with your application, whose backend issues them",
        ),
        Some(Err(bad)) => json_error(StatusCode::BAD_REQUEST, bad),
        Some(Ok((user, token))) => HttpResponse::Ok().json(json!({
            "user": user,
            "token": token,
            "expires_in": crate::gate::GUEST_TTL.as_secs(),
        })),
    }
}

#[derive(Deserialize)]
pub struct PresenceQuery {
    topic: String,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// `GET /_nimbus/presence`.
pub async fn presence(
    req: HttpRequest,
    node: web::Data<Node>,
    query: web::Query<PresenceQuery>,
) -> HttpResponse {
    let query = query.into_inner();
    let bearer = req
        .headers()
        .get("Authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let token = bearer.or(query.token);
    let gate = &node.gate;
    let cleared = gate
        .enter(token.as_deref(), crate::session::Caller::default(), &[])
        .and_then(|who| gate.subscribe(&who, 0, [query.topic.as_str()]));
    let topic = match cleared {
        Ok(mut cleared) => cleared.remove(0),
        Err(refused) => return json_error(refused.status(), refused),
    };
    if !topic.features().presence {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("{} keeps no presence", query.topic),
        );
    }
    // Presence bounds the page to what it serves (1 to `MAX_PAGE`).
    let limit = query.limit.unwrap_or(crate::presence::DEFAULT_PAGE);
    let stats = node.presence.stats(&query.topic).await;
    let page = node.presence.page(&query.topic, query.cursor, limit).await;
    match (stats, page) {
        (Ok(stats), Ok(page)) => HttpResponse::Ok().json(json!({
            "users": stats.users,
            "clients": stats.clients,
            "members": page.members,
            "cursor": page.cursor,
        })),
        (Err(error), _) | (_, Err(error)) => json_error(StatusCode::SERVICE_UNAVAILABLE, error),
    }
}
