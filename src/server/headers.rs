//! Headers on every response: `X-Nimbus-Node`, no-cache, and CORS (with preflight answers).
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};

use crate::node::Node;

const ALLOW_HEADERS: &str = "Origin, Content-Type, AuthToken, X-Atmosphere-Framework, X-Requested-With, \
    X-Atmosphere-tracking-id, X-Heartbeat-Server, X-Atmosphere-Transport, X-Atmosphere-TrackMessageSize, \
    X-atmo-protocol, X-Atmosphere-Session-Token";
const EXPOSE_HEADERS: &str =
    "X-Atmosphere-tracking-id, X-Heartbeat-Server, X-Atmosphere-Session-Token, X-Nimbus-Node";

/// Middleware adding the node's headers to every response, errors included, and answering
/// CORS preflight requests itself.
pub async fn nimbus_headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let node = req
        .app_data::<web::Data<Node>>()
        .cloned()
        .expect("node data is registered");
    let origin = req.headers().get(header::ORIGIN).cloned();
    let host = req.headers().get(header::HOST).cloned();
    let allowed_origin = origin.filter(|o| origin_allowed(&node, o, host.as_ref()));
    // The Cettia/Vibe protocols send `access-control-allow-origin` on every response, `*` when
    // the request has no `Origin` (their reference servers do; preflights included).
    let cettia_wildcard =
        !req.headers().contains_key(header::ORIGIN) && matches!(req.path(), "/cettia" | "/vibe");
    // An anonymous browser without a secret gets one, for the session ids issued to it later
    // (not on the backend's API or the telemetry paths, whose callers are no browsers).
    let give_secret = node.gate.binds_browsers()
        && req.method() != Method::OPTIONS
        && crate::transport::browser_secret(req.request()).is_none()
        && !req.path().starts_with("/api/")
        && !matches!(
            req.path(),
            "/metrics" | "/healthz" | "/readyz" | "/_nimbus/stats"
        );

    let mut response = if req.method() == Method::OPTIONS {
        let mut preflight =
            if allowed_origin.is_some() || !req.headers().contains_key(header::ORIGIN) {
                HttpResponse::Ok()
            } else {
                HttpResponse::Forbidden()
            };
        preflight
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "OPTIONS, GET, POST"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"));
        req.into_response(preflight.finish()).map_into_boxed_body()
    } else {
        // Handlers answer their own errors (see `server::atmosphere`), so every response that
        // reaches a client passes through here.
        next.call(req).await?.map_into_boxed_body()
    };

    let headers = response.headers_mut();
    if give_secret {
        if let Ok(cookie) = HeaderValue::from_str(&crate::transport::new_browser_cookie()) {
            headers.append(header::SET_COOKIE, cookie);
        }
    }
    if let Ok(node_id) = HeaderValue::from_str(&node.id) {
        headers.insert(HeaderName::from_static("x-nimbus-node"), node_id);
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, no-store, must-revalidate"),
        );
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        headers.insert(header::EXPIRES, HeaderValue::from_static("0"));
    }
    if let Some(origin) = allowed_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    } else if cettia_wildcard && !headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    Ok(response)
}

fn origin_allowed(node: &Node, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let host = host.and_then(|h| h.to_str().ok());
    origin
        .to_str()
        .is_ok_and(|origin| node.config.allows_origin(origin, host))
}
