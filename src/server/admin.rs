//! Operator endpoints under `/_nimbus/admin/`, served only with `--admin` (keep them off
//! public listeners: they act on every client of the node).
use actix_web::{web, HttpResponse, ResponseError};
use bytestring::ByteString;
use serde::Deserialize;

use crate::atmosphere::messages::DropTransport;
use crate::atmosphere::Atmosphere;
use crate::error::HttpError;
use crate::node::{Node, Stats};
use crate::topic::{Audience, Message, SessionId};

fn disabled() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("admin endpoints are disabled (start with --admin)\n")
}

/// Close every client transport; clients reconnect and resume from their cursor (nothing is
/// lost within the reconnect window).
pub async fn drop_transports(atmosphere: web::Data<Atmosphere>) -> HttpResponse {
    if !atmosphere.node().config.admin {
        return disabled();
    }
    let connections = atmosphere.connections();
    for connection in &connections {
        connection.do_send(DropTransport);
    }
    HttpResponse::Ok().body(format!(
        "dropped the transports of {} connections\n",
        connections.len()
    ))
}

#[derive(Deserialize)]
pub struct PublishQuery {
    /// The topic (an Atmosphere path such as `/chat/lobby`).
    topic: String,
    /// Comma-separated session ids (Atmosphere tracking ids): send to those only.
    to: Option<String>,
}

/// `POST /_nimbus/admin/publish?topic=/chat/lobby[&to=id,id]` with the message as the body:
/// what an application server does to push to a topic, or to some of its clients, through any
/// node of the cluster.
pub async fn publish(
    node: web::Data<Node>,
    query: web::Query<PublishQuery>,
    body: web::Bytes,
) -> HttpResponse {
    // Errors are answered here, not returned, so the node's headers are added to them.
    publish_as_asked(&node, &query, body)
        .await
        .unwrap_or_else(|error| error.error_response())
}

async fn publish_as_asked(
    node: &Node,
    query: &PublishQuery,
    body: web::Bytes,
) -> Result<HttpResponse, HttpError> {
    if !node.config.admin {
        return Ok(disabled());
    }
    if body.len() > node.config.max_message_bytes {
        return Err(HttpError::TooLarge {
            size: body.len(),
            limit: node.config.max_message_bytes,
        });
    }
    let text = ByteString::try_from(body).map_err(|_| HttpError::InvalidUtf8)?;
    let ids: Vec<SessionId> = query
        .to
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|id| !id.is_empty())
        .map(SessionId::from)
        .collect();
    let audience = match ids.len() {
        0 => Audience::All,
        1 => Audience::One(ids[0].clone()),
        _ => Audience::Set(ids.into()),
    };
    let published = node
        .broker
        .publish_confirmed(&query.topic, audience, Message::text(text))
        .await?;
    Stats::add(&node.stats.published, 1);
    Ok(crate::atmosphere::http::published_response(published))
}
