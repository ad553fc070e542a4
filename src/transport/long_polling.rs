//! Long-polling: each GET is answered with what the client has not seen yet, or parked until
//! something arrives or the heartbeat interval passes.
//!
//! The connection outlives the polls. Its cursor moves only when an answer was handed to a
//! client that was still there, and the `X-Atmosphere-Session-Token` header (which
//! atmosphere.js echoes on its next request) carries the cursor the client acknowledged, so an
//! answer lost on the way is sent again.
use actix::Addr;
use actix_web::HttpResponse;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{Connection, Mode, Poll, PollReply};

/// Run one poll against `connection`.
pub async fn poll(
    connection: Addr<Connection>,
    mode: Mode,
    handshake_only: bool,
    reconnect: bool,
    session_token: Option<String>,
) -> HttpResponse {
    let (reply, answer) = oneshot::channel();
    let poll = Poll {
        mode,
        handshake_only,
        reconnect,
        session_token,
        reply,
    };
    let answer = match connection.send(poll).await {
        Ok(()) => answer.await.ok(),
        Err(_) => None,
    };
    // A connection that ended under us answers empty: the client simply polls again.
    let PollReply {
        body,
        session_token,
    } = answer.unwrap_or(PollReply {
        body: Bytes::new(),
        session_token: String::new(),
    });
    let mut response = HttpResponse::Ok();
    response.content_type("text/plain; charset=utf-8");
    if !session_token.is_empty() {
        response.insert_header(("X-Atmosphere-Session-Token", session_token));
    }
    response.body(body)
}
