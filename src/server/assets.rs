//! The chat page and the atmosphere.js build it loads.
//!
//! The page is compiled in; atmosphere.js comes from `web/node_modules` (installed by
//! `npm ci --prefix web`), so the exact npm release is what browsers run.
use actix_web::{web, HttpResponse};

use crate::node::Node;

const CHAT_PAGE: &str = include_str!("../../web/index.html");
const ATMOSPHERE_JS: &str = "node_modules/atmosphere.js/dist/atmosphere.global.js";

pub async fn chat_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(CHAT_PAGE)
}

pub async fn atmosphere_js(node: web::Data<Node>) -> HttpResponse {
    let path = node.config.web_dir.join(ATMOSPHERE_JS);
    match tokio::fs::read(&path).await {
        Ok(script) => HttpResponse::Ok()
            .content_type("application/javascript; charset=utf-8")
            .insert_header(("Cache-Control", "public, max-age=3600"))
            .body(script),
        Err(error) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body(format!(
                "atmosphere.js is not installed at {} ({error}); run `npm ci --prefix web`\n",
                path.display()
            )),
    }
}
