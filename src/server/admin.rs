//! Operator endpoints under `/_nimbus/admin/`, served only with `--admin` (keep them off
//! public listeners: they act on every client of the node).
//! Publishing is the backend API's (`POST /api/publish`, with its key).
use actix_web::{web, HttpResponse};

use crate::atmosphere::messages::DropTransport;
use crate::atmosphere::Atmosphere;

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
