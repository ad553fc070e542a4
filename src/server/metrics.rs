//! `GET /metrics`: the node's Prometheus page (see `crate::metrics`).
use actix_web::{web, HttpResponse};

use crate::atmosphere::Atmosphere;
use crate::cettia::Cettia;
use crate::metrics::{render, Sessions};
use crate::node::Node;

pub async fn metrics(
    node: web::Data<Node>,
    atmosphere: web::Data<Atmosphere>,
    cettia: web::Data<Cettia>,
) -> HttpResponse {
    let (sockets, _) = cettia.counts();
    let sessions = Sessions {
        open: vec![
            ("atmosphere", "any", atmosphere.len() as u64),
            ("cettia", "any", sockets as u64),
        ],
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(render(&node, &sessions))
}
