//! Long-polling: each GET is answered with what the client has not seen yet, or parked until
//! something arrives or the heartbeat interval passes.
//!
//! The connection outlives the polls. Its cursor moves only when an answer was handed to a
//! client that was still there, and the `X-Atmosphere-Session-Token` header (which
//! atmosphere.js echoes on its next request) carries the cursor the client acknowledged, so an
//! answer lost on the way is sent again.
//!
//! In a cluster every answer is recorded in the session's record before it is sent (where the
//! client stands, and that no poll is outstanding), so the next poll may land on any node.
use actix::Addr;
use actix_web::HttpResponse;
use tokio::sync::oneshot;

use super::connection::Connection;
use super::messages::{Poll, PollReply, PollRequest};
use crate::broker::SessionRecord;
use crate::node::Node;
use crate::topic::SessionId;

/// Run one poll of session `id` against `connection`.
pub async fn poll(
    node: &Node,
    id: &SessionId,
    topic: &str,
    connection: Addr<Connection>,
    request: PollRequest,
) -> HttpResponse {
    let (reply, answer) = oneshot::channel();
    let poll = Poll { request, reply };
    let answer = match connection.send(poll).await {
        Ok(()) => answer.await.ok(),
        Err(_) => None,
    };
    let mut response = HttpResponse::Ok();
    response.content_type("text/plain; charset=utf-8");
    // A connection that ended under us answers empty: the client simply polls again.
    let Some(PollReply {
        body,
        session_token,
        epoch,
        cursor,
        floor,
    }) = answer
    else {
        return response.finish();
    };
    if node.is_clustered() {
        let record = SessionRecord {
            topic: Some(topic.to_string()),
            epoch,
            cursor,
            polling: false,
            node: Some(node.id.clone()),
            floor: Some(floor),
        };
        if let Err(error) = node.broker.save_session(id.clone(), record).await {
            tracing::warn!(session = %id, %error, "cannot record the poll's answer");
        }
    }
    response.insert_header(("X-Atmosphere-Session-Token", session_token));
    response.body(body)
}
