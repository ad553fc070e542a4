//! The HTTP edge and the composition root: builds the node (`compose`), binds the listener,
//! mounts the reserved routes, and sends every other path to the Atmosphere topic handler.
//!
//! Reserved paths: `/` (chat page), `/healthz`, `/readyz`, `/metrics`, `/cettia`, `/vibe`,
//! the backend API under `/api/` and everything under `/_nimbus/` (assets, stats). Every other path is an Atmosphere topic.
mod admin;
mod api;
mod assets;
mod chat;
mod compose;
mod headers;
mod metrics;
mod shutdown;
mod upgrade;

use std::net::TcpListener;
use std::sync::Arc;

use actix_http::HttpService;
use actix_service::{map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use actix_web::{middleware::from_fn, web, App, HttpResponse};

use crate::atmosphere::Atmosphere;
use crate::cettia::Cettia;
use crate::config::Config;
use crate::node::Node;

/// Bind `config.bind` and serve until SIGINT/SIGTERM.
///
/// With `--redis-url` the node joins the cluster first: it waits (retrying every second) until
/// Redis answers once, so it never serves clients it could not continue elsewhere. After that,
/// Redis outages are ridden out (see `crate::cluster`).
pub async fn run(config: Config) -> std::io::Result<()> {
    raise_descriptor_limit(config.max_websockets);
    tracing::info!(
        max_websockets = config.websocket_limit(),
        "open WebSockets bound"
    );
    let invalid = |error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error);
    let listener = TcpListener::bind(config.bind)?;
    let node = match &config.redis_url {
        None => Node::new(config).map_err(invalid)?,
        Some(url) => {
            let url = url.clone();
            loop {
                match Node::clustered(config.clone()).await {
                    Ok(node) => break node,
                    Err(compose::StartError::Config(error)) => return Err(invalid(error)),
                    Err(error) => {
                        tracing::warn!(%url, %error, "waiting for Redis");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        }
    };
    tracing::info!(node = %node.id, addr = %listener.local_addr()?,
        clustered = node.is_clustered(), "nimbus serving");
    let atmosphere = Atmosphere::new(node.clone());
    let cettia = Cettia::with_defaults(node.clone());
    let server = serve_apps(node, listener, atmosphere.clone(), cettia, |_| {})?;
    actix_web::rt::spawn(shutdown::on_signal(atmosphere, server.handle()));
    server.await
}

/// Every connection is a descriptor, and the soft limit a process starts with is often 1,024:
/// raise it to the hard limit, as servers that hold many connections do, and say so when it
/// stays below what `--max-websockets` allows.
fn raise_descriptor_limit(max_websockets: Option<u64>) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if max_websockets.is_some_and(|max| limit < max) => tracing::warn!(
            limit,
            max_websockets,
            "the descriptor limit (ulimit -n) is below --max-websockets: \
             connections beyond it will be refused by the kernel"
        ),
        Ok(limit) => tracing::debug!(limit, "descriptor limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the descriptor limit"),
    }
}

/// Build the server on an already bound listener (tests bind port 0 and read the address),
/// with the stock applications: Atmosphere's echo-broadcast ([`Atmosphere::new`]) and Cettia's
/// defaults ([`Cettia::with_defaults`]).
pub fn serve(node: Arc<Node>, listener: TcpListener) -> std::io::Result<actix_web::dev::Server> {
    let cettia = Cettia::with_defaults(node.clone());
    serve_with(node, listener, cettia, |_| {})
}

/// Build the server with an application's own [`Cettia`] handlers, and its own routes added by
/// `routes` (they take precedence over topics; handlers can extract `web::Data<Cettia>`,
/// `web::Data<Atmosphere>` and `web::Data<Node>`). Atmosphere clients get the stock
/// echo-broadcast.
pub fn serve_with(
    node: Arc<Node>,
    listener: TcpListener,
    cettia: Cettia,
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<actix_web::dev::Server> {
    let atmosphere = Atmosphere::new(node.clone());
    serve_apps(node, listener, atmosphere, cettia, routes)
}

/// Build the server with an application's own hooks for both protocols.
pub fn serve_apps(
    node: Arc<Node>,
    listener: TcpListener,
    atmosphere: Atmosphere,
    cettia: Cettia,
    routes: impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
) -> std::io::Result<actix_web::dev::Server> {
    let workers = node
        .config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let shutdown_timeout = node.config.drain_secs.max(1);
    node.webhooks.start();
    let commands = crate::session::Commands::new(node.clone());
    commands.serve(Arc::new(atmosphere.clone()));
    commands.serve(Arc::new(cettia.clone()));
    let commands_data = web::Data::new(commands);
    let telemetry = node
        .config
        .telemetry_bind
        .map(TcpListener::bind)
        .transpose()?;
    let public_telemetry = telemetry.is_none();
    let data = web::Data::from(node);
    let telemetry_data = (data.clone(), web::Data::new(atmosphere.clone()));
    let cettia_data = web::Data::new(cettia);
    let atmosphere_data = web::Data::new(atmosphere);
    let app = move || {
        App::new()
            .app_data(data.clone())
            .app_data(cettia_data.clone())
            .app_data(atmosphere_data.clone())
            .app_data(commands_data.clone())
            .configure(routes.clone())
            .wrap(from_fn(headers::nimbus_headers))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .configure(chat::routes)
            .configure(|config| {
                if public_telemetry {
                    config
                        .route("/_nimbus/stats", web::get().to(stats))
                        .route("/metrics", web::get().to(metrics::metrics));
                } else {
                    config.route("/metrics", web::to(telemetry_elsewhere));
                }
            })
            .route("/api/{method}", web::post().to(api::call))
            .route("/api/{tail:.*}", web::to(api_refused))
            .route(
                "/_nimbus/admin/drop-transports",
                web::post().to(admin::drop_transports),
            )
            // The rest of the reserved prefix is not a topic: answer 404 rather than letting a
            // client subscribe to e.g. `/_nimbus/stats/x`.
            .route("/_nimbus", web::to(not_found))
            .route("/_nimbus/{tail:.*}", web::to(not_found))
            .route("/cettia", web::to(crate::cettia::http::cettia))
            .route("/vibe", web::to(crate::cettia::http::vibe))
            .default_service(web::to(crate::atmosphere::http::topic))
    };
    // The application as an HTTP service (what `actix_web::HttpServer` builds internally).
    let service = move || {
        let app = app.clone()()
            .into_factory()
            .map_err(|error: actix_web::Error| error.as_response_error().error_response());
        map_config(app, |_| AppConfig::default())
    };
    let addr = listener.local_addr()?;
    let server = listen_telemetry(actix_server::Server::build(), telemetry, telemetry_data)?;
    let server = server
        .workers(workers)
        // Signals are handled by `shutdown::on_signal` (drain first, then stop); the timeout is
        // what in-flight requests get once the server stops.
        .disable_signals()
        .shutdown_timeout(shutdown_timeout)
        .max_concurrent_connections(100_000)
        .backlog(4096)
        .listen("nimbus", listener, move || {
            HttpService::build()
                // A client's EOF means it is gone (browsers never half-close a request they
                // await). With half-closed connections allowed, a departed SSE, streaming or
                // long-poll client goes unnoticed until the next write fails, and whatever that
                // write carried counts as delivered: its messages are lost instead of replayed
                // when it reconnects. Without half-closures the response (body channel, parked
                // poll) is dropped at once, so the connection detaches and keeps its cursor.
                .h1_allow_half_closed(false)
                // What `actix_web::HttpServer` sets: a closing connection that does not finish
                // its shutdown within a second is dropped.
                .client_disconnect_timeout(std::time::Duration::from_secs(1))
                .keep_alive(IDLE_KEEP_ALIVE)
                .local_addr(addr)
                // WebSocket handshakes leave the HTTP dispatcher: see `upgrade`.
                .upgrade(upgrade::factory(service.clone()))
                .finish(service.clone()())
                .tcp()
        })?
        .run();
    Ok(server)
}

/// How long an idle HTTP/1.1 connection stays open between requests. Longer than a balancer
/// keeps idle connections to a node for reuse (HAProxy's `timeout server` in
/// `deploy/haproxy.cfg` is 120 s): with actix's default of 5 s a node could close a connection
/// at the moment the balancer sends a request on it, and HAProxy does not resend a POST, so the
/// client got a 502 (a Cettia client then drops its transport). A closing balancer is harmless.
const IDLE_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(130);

/// Add the telemetry listener, if the node has one.
fn listen_telemetry(
    server: actix_server::ServerBuilder,
    listener: Option<TcpListener>,
    (node, atmosphere): (web::Data<Node>, web::Data<Atmosphere>),
) -> std::io::Result<actix_server::ServerBuilder> {
    let Some(listener) = listener else {
        return Ok(server);
    };
    server.listen("telemetry", listener, move || {
        let app = App::new()
            .app_data(node.clone())
            .app_data(atmosphere.clone())
            .configure(telemetry_routes)
            .into_factory()
            .map_err(|error: actix_web::Error| error.as_response_error().error_response());
        HttpService::build()
            .finish(map_config(app, |_| AppConfig::default()))
            .tcp()
    })
}

/// The telemetry listener's routes (`--telemetry-bind`): metrics, stats and the health
/// checks, nothing a client could use.
fn telemetry_routes(config: &mut web::ServiceConfig) {
    config
        .route("/metrics", web::get().to(metrics::metrics))
        .route("/_nimbus/stats", web::get().to(stats))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// `/metrics` on the public port of a node that serves its telemetry elsewhere.
async fn telemetry_elsewhere() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("telemetry is served on this node's --telemetry-bind address\n")
}

/// Liveness: the node is up and answering HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}

/// Readiness: the node can serve, its broker included, and is not draining for shutdown.
async fn readyz(node: web::Data<Node>) -> HttpResponse {
    if node.is_draining() {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("draining for shutdown\n")
    } else if node.broker.is_ready() {
        HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ready\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .body("broker unreachable\n")
    }
}

async fn stats(node: web::Data<Node>, atmosphere: web::Data<Atmosphere>) -> HttpResponse {
    HttpResponse::Ok().json(node.snapshot(atmosphere.len()))
}

/// The JSON refusal of the node's own endpoints (the backend API, the chat page's):
/// `{"error": {"code": <HTTP status>, "message": ...}}`.
fn json_error(
    status: actix_web::http::StatusCode,
    message: impl std::fmt::Display,
) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": {
        "code": status.as_u16(),
        "message": message.to_string(),
    }}))
}

/// Anything under `/api/` but a `POST /api/<method>`.
async fn api_refused() -> HttpResponse {
    json_error(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "the backend API takes POST /api/<method> with a JSON body",
    )
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("no such path: /_nimbus/ is reserved for the node's own endpoints\n")
}
