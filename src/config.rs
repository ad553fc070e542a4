//! Configuration: every flag has an environment twin (`NIMBUS_*`) so the same binary runs from a
//! shell, docker-compose or Kubernetes without a config file.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Flags of the `nimbus` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "nimbus",
    version,
    about = "Real-time broadcast server (Atmosphere protocol)"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "NIMBUS_BIND", default_value = "0.0.0.0:8080")]
    pub bind: SocketAddr,

    /// Serve the telemetry (`/metrics`, `/_nimbus/stats`, with `/healthz` and `/readyz`) on
    /// this address, off the public port (where those two paths then answer 404).
    #[arg(long, env = "NIMBUS_TELEMETRY_BIND")]
    pub telemetry_bind: Option<SocketAddr>,

    /// Identifier of this node, sent as `X-Nimbus-Node` on every response (default: random).
    #[arg(long, env = "NIMBUS_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis URL (`redis://host:6379/`): run as one node of a cluster that shares topics,
    /// histories and sessions through Redis. Without it the node runs alone with the
    /// in-process broker.
    #[arg(long, env = "NIMBUS_REDIS_URL")]
    pub redis_url: Option<String>,

    /// `--redis-url` names the seed nodes of a Redis Cluster (comma separated): keys spread over
    /// the shards by topic, relays use sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`).
    #[arg(long, env = "NIMBUS_REDIS_CLUSTER")]
    pub redis_cluster: bool,

    /// On SIGTERM/SIGINT: seconds to wait, after closing client connections (so they reconnect
    /// to other nodes) and recording where each client stands, before exiting.
    #[arg(long, env = "NIMBUS_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,

    /// Seconds of idle time after which the server sends the heartbeat padding `X` (0 = off).
    #[arg(long, env = "NIMBUS_HEARTBEAT_SECS", default_value_t = 60)]
    pub heartbeat_secs: u64,

    /// Client heartbeat interval announced in the Atmosphere handshake, in seconds (0 = none).
    #[arg(long, env = "NIMBUS_CLIENT_HEARTBEAT_SECS", default_value_t = 0)]
    pub client_heartbeat_secs: u64,

    /// Largest message a client may send (bytes); larger POSTs get 413, larger frames close 1009.
    #[arg(long, env = "NIMBUS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Seconds a request body (a POSTed message, an API call) may take to arrive whole; a
    /// slower one is answered 408.
    #[arg(long, env = "NIMBUS_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// How long a WebSocket/SSE/streaming client may stay away and still resume with its tracking id.
    #[arg(long, env = "NIMBUS_RECONNECT_WINDOW_SECS", default_value_t = 30)]
    pub reconnect_window_secs: u64,

    /// How long a WebSocket the server closes (slow consumer, drain) may take to read what was
    /// queued for it and the close frame; a client that reads nothing in that time is let go.
    #[arg(long, env = "NIMBUS_WS_CLOSE_GRACE_SECS", default_value_t = 30)]
    pub ws_close_grace_secs: u64,

    /// Most WebSockets open on this node at once; an upgrade beyond gets `503` (atmosphere.js then
    /// falls back to its fallback transport). Upgraded WebSockets leave the HTTP server's own
    /// connection limit, so this is their bound. Default: three quarters of the descriptor
    /// limit (`ulimit -n`, which the node raises to its hard limit at start).
    #[arg(long, env = "NIMBUS_MAX_WEBSOCKETS")]
    pub max_websockets: Option<u64>,

    /// How long a long-polling client may go without re-polling before it counts as gone.
    #[arg(long, env = "NIMBUS_LONG_POLL_EXPIRY_SECS", default_value_t = 30)]
    pub long_poll_expiry_secs: u64,

    /// Replay history kept per topic: most messages.
    #[arg(long, env = "NIMBUS_HISTORY_MESSAGES", default_value_t = 1000)]
    pub history_messages: usize,

    /// Replay history kept per topic: most payload bytes.
    #[arg(long, env = "NIMBUS_HISTORY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub history_bytes: usize,

    /// Replay history kept per topic: oldest message age in seconds.
    #[arg(long, env = "NIMBUS_HISTORY_AGE_SECS", default_value_t = 3600)]
    pub history_age_secs: u64,

    /// Replay history of every topic together: most bytes of memory (messages and the frames
    /// built from them). Over it, a topic that adds a message evicts its own oldest.
    #[arg(long, env = "NIMBUS_HISTORY_BUDGET_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub history_budget_bytes: usize,

    /// Messages a session may fall behind on its current transport (given to it since the
    /// transport attached, not yet written) before the server closes the transport: the
    /// slow-consumer policy, the same measure on both protocols; the client resumes where it
    /// stands when it reconnects. A Cettia socket between transports keeps at most this many
    /// messages for its client, dropping the oldest.
    #[arg(long, env = "NIMBUS_MAX_LAG_MESSAGES", default_value_t = 512)]
    pub max_lag_messages: u64,

    /// Origins allowed to use the node from a browser (CORS, and WebSocket upgrades, which
    /// browsers do not subject to CORS), comma separated; `*` allows any. Empty (the default):
    /// only the node's own origin (the `Origin` naming the request's `Host`).
    #[arg(long, env = "NIMBUS_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Directory holding the web assets (the chat page's `atmosphere.js`, installed by npm).
    #[arg(long, env = "NIMBUS_WEB_DIR", default_value = "web")]
    pub web_dir: PathBuf,

    /// Refuse WebSocket upgrades (clients fall back to their HTTP transports), e.g. behind a
    /// proxy that cannot carry WebSockets.
    #[arg(long, env = "NIMBUS_DISABLE_WEBSOCKET")]
    pub disable_websocket: bool,

    /// Serve the operator endpoints under `/_nimbus/admin/` (keep them off public listeners).
    #[arg(long, env = "NIMBUS_ADMIN")]
    pub admin: bool,

    /// Cettia: how long a socket without transport waits for its client to resume with its
    /// `cettia-id` before it is deleted.
    #[arg(long, env = "NIMBUS_CETTIA_RESUME_WINDOW_SECS", default_value_t = 60)]
    pub cettia_resume_window_secs: u64,

    /// Cettia/Vibe: heartbeat interval announced to sockets (`cettia-heartbeat`, ms); a socket
    /// whose client sends no heartbeat within it loses its transport. 0 = off.
    #[arg(long, env = "NIMBUS_CETTIA_HEARTBEAT_MS", default_value_t = 20_000)]
    pub cettia_heartbeat_ms: u64,

    /// Cettia: `cettia-_heartbeat` announced to sockets (ms): how long the client waits for the
    /// server's heartbeat echo.
    #[arg(long, env = "NIMBUS_CETTIA_FAST_HEARTBEAT_MS", default_value_t = 5_000)]
    pub cettia_fast_heartbeat_ms: u64,

    /// HS256 secret that signs clients' JSON Web Tokens. With it (or `--jwt-public-key`) every
    /// client needs a valid token (`sub` = user id), unless `--allow-anonymous`.
    #[arg(long, env = "NIMBUS_JWT_HMAC_SECRET", hide_env_values = true)]
    pub jwt_hmac_secret: Option<String>,

    /// A previous HS256 secret, still accepted until `--jwt-hmac-previous-until` (key rotation).
    #[arg(long, env = "NIMBUS_JWT_HMAC_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_hmac_previous_secret: Option<String>,

    /// Until when the previous secret is accepted (RFC 3339, e.g. `2026-12-31T00:00:00Z`).
    #[arg(long, env = "NIMBUS_JWT_HMAC_PREVIOUS_UNTIL", value_parser = humantime::parse_rfc3339_weak)]
    pub jwt_hmac_previous_until: Option<std::time::SystemTime>,

    /// PEM file with the RSA or EC public key that verifies tokens (RS256/384/512, ES256/384).
    #[arg(long, env = "NIMBUS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// Required `aud` claim of tokens.
    #[arg(long, env = "NIMBUS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Required `iss` claim of tokens.
    #[arg(long, env = "NIMBUS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// With token keys configured, still let clients without a token in, as anonymous.
    #[arg(long, env = "NIMBUS_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Secret that signs the session ids the node issues (tracking ids, Cettia socket ids).
    /// Default: in a cluster one the nodes share through Redis; alone, a random one.
    #[arg(long, env = "NIMBUS_SESSION_SECRET", hide_env_values = true)]
    pub session_secret: Option<String>,

    /// `signed`: a session id must be one the cluster issued to the same user (403 otherwise);
    /// `open`: any well-formed id. Default: `signed` when tokens are checked, else `open`.
    #[arg(long, env = "NIMBUS_SESSION_IDS", value_enum)]
    pub session_ids: Option<crate::gate::IdPolicy>,

    /// Bytes of history one client (a signed-in user, or an anonymous address) may take:
    /// its messages' cost in every history that keeps them (about three times their size,
    /// once per topic), at most this much within any `--history-age-secs`; past it a publish
    /// is refused 429, so one client cannot evict what others missed. Default: a sixteenth of
    /// `--history-budget-bytes`; `0` = no share.
    #[arg(long, env = "NIMBUS_HISTORY_SHARE_BYTES")]
    pub history_share_bytes: Option<u64>,

    /// Messages a client may publish per second (bursts as large): a signed-in user, however
    /// many connections it has, or an anonymous client's address; `0` = no limit. Over it a
    /// POST gets 429 and a WebSocket is closed with 1008.
    #[arg(long, env = "NIMBUS_MAX_PUBLISHES_PER_SEC", default_value_t = 1000)]
    pub max_publishes_per_sec: u32,

    /// Address ranges of the balancers in front of the node (e.g. `10.0.0.0/8,127.0.0.1/32`):
    /// a request from one of them is taken to come from the address its `X-Forwarded-For`
    /// names (the last one not itself trusted). Per-address limits count that address.
    #[arg(long, env = "NIMBUS_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: TrustedProxies,

    /// Connections (sessions, whatever their transport) one client address may hold in the
    /// whole cluster; more are refused with 429. `0` = no limit (the default: behind NAT or a
    /// balancer without `--trusted-proxies`, many users share one address).
    #[arg(long, env = "NIMBUS_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 0)]
    pub max_connections_per_address: u64,

    /// Connections one signed-in user may hold in the whole cluster; more are refused with
    /// 429. `0` = no limit.
    #[arg(long, env = "NIMBUS_MAX_CONNECTIONS_PER_USER", default_value_t = 0)]
    pub max_connections_per_user: u64,

    /// New connections one client address may open per second on a node (bursts as large);
    /// more are refused with 429. `0` = no limit.
    #[arg(
        long,
        env = "NIMBUS_MAX_CONNECTS_PER_ADDRESS_PER_SEC",
        default_value_t = 0
    )]
    pub max_connects_per_address_per_sec: u32,

    /// Topics one connection may be in; subscribing past it is refused (403, Cettia `error`,
    /// WebSocket 1008), never dropped in silence.
    #[arg(long, env = "NIMBUS_MAX_TOPICS_PER_CONNECTION", default_value_t = crate::gate::DEFAULT_MAX_TOPICS)]
    pub max_topics_per_connection: usize,

    /// Refuse tokens without an `exp` claim (a token that never expires cannot be withdrawn).
    #[arg(long, env = "NIMBUS_JWT_REQUIRE_EXP")]
    pub jwt_require_exp: bool,

    /// TOML configuration file: topic namespaces with who may subscribe and publish (see the
    /// README). Without it every topic is open to every client the door lets in.
    #[arg(long, env = "NIMBUS_CONFIG")]
    pub config: Option<PathBuf>,

    /// Key of the backend API (`POST /api/<method>` with `Authorization: apikey <key>`);
    /// without it the API is off.
    #[arg(long, env = "NIMBUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// The backend's webhook URL (`http://...`): users coming online, going offline, joining
    /// and leaving topics are POSTed there, signed with `--webhook-secret` (see the README).
    #[arg(long, env = "NIMBUS_WEBHOOK_URL", requires = "webhook_secret", value_parser = http_url)]
    pub webhook_url: Option<String>,

    /// The secret webhook POSTs are signed with (HMAC-SHA256, `X-Nimbus-Signature`).
    #[arg(long, env = "NIMBUS_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// How long one webhook POST may take before it counts as failed (and is retried).
    #[arg(long, env = "NIMBUS_WEBHOOK_TIMEOUT_SECS", default_value_t = 5)]
    pub webhook_timeout_secs: u64,

    /// HTTP worker threads (default: one per CPU).
    #[arg(long, env = "NIMBUS_WORKERS")]
    pub workers: Option<usize>,
}

/// The balancers trusted to name the client (`--trusted-proxies`): address ranges separated
/// by commas; empty (the variable set to nothing included) is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<ipnet::IpNet>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|range| !range.is_empty())
            .map(|range| {
                // A lone address is its own range.
                let net = range
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| range.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                net.map_err(|_| format!("{range:?} is not an address range (e.g. 10.0.0.0/8)"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

/// A webhook URL: plain HTTP (the node carries no TLS client; the backend is expected on the
/// private network, or behind a proxy that adds TLS).
fn http_url(url: &str) -> Result<String, String> {
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() => Ok(url.to_string()),
        _ => Err("a webhook URL starts with http:// (https is not supported)".into()),
    }
}

impl Config {
    /// Where the backend's webhooks go, if anywhere.
    pub fn webhook_settings(&self) -> Option<crate::webhook::Settings> {
        Some(crate::webhook::Settings {
            url: self.webhook_url.clone()?,
            secret: self.webhook_secret.clone().unwrap_or_default(),
            timeout: Duration::from_secs(self.webhook_timeout_secs.max(1)),
        })
    }

    /// The gate's rate limits and connection caps.
    pub fn limit_settings(&self) -> crate::gate::limits::Settings {
        crate::gate::limits::Settings {
            publishes_per_sec: self.max_publishes_per_sec,
            history_share: self
                .history_share_bytes
                .unwrap_or(self.history_budget_bytes as u64 / 16),
            history_age: Duration::from_secs(self.history_age_secs),
            connects_per_sec: self.max_connects_per_address_per_sec,
            caps: crate::gate::Caps {
                per_address: self.max_connections_per_address,
                per_user: self.max_connections_per_user,
            },
        }
    }

    /// A configuration with every default, bound to `bind` (used by tests and embedders).
    pub fn for_bind(bind: SocketAddr) -> Self {
        let mut config = Config::parse_from(["nimbus"]);
        config.bind = bind;
        config
    }

    pub fn heartbeat(&self) -> Option<Duration> {
        (self.heartbeat_secs > 0).then(|| Duration::from_secs(self.heartbeat_secs))
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.body_timeout_secs)
    }

    pub fn reconnect_window(&self) -> Duration {
        Duration::from_secs(self.reconnect_window_secs)
    }

    pub fn long_poll_expiry(&self) -> Duration {
        Duration::from_secs(self.long_poll_expiry_secs)
    }

    /// The bound on open WebSockets: `--max-websockets`, or three quarters of the process's
    /// descriptor limit, the rest left for HTTP connections, Redis and files (a node out of
    /// descriptors cannot even accept its health checks).
    /// Whether a request from `origin` to `host` (its `Host` header) may use the node: one
    /// `--cors-origins` lists (or any, with `*`), or without a list the node's own origin.
    pub fn allows_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let allow = &self.cors_origins;
        if allow.is_empty() {
            let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            return host.is_some_and(|host| authority.eq_ignore_ascii_case(host));
        }
        allow.iter().any(|a| a == origin || a == "*")
    }

    pub fn websocket_limit(&self) -> u64 {
        self.max_websockets.unwrap_or_else(|| {
            rlimit::Resource::NOFILE
                .get()
                .map_or(u64::MAX, |(soft, _)| soft / 4 * 3)
        })
    }

    /// How long a cluster keeps a session record after its client's last visit.
    pub fn session_ttl(&self) -> Duration {
        self.reconnect_window().max(self.long_poll_expiry()) * 2 + Duration::from_secs(10)
    }

    pub fn history_limits(&self) -> crate::topic::HistoryLimits {
        crate::topic::HistoryLimits {
            max_messages: self.history_messages.max(1),
            max_bytes: self.history_bytes.max(1),
            max_age: Duration::from_secs(self.history_age_secs.max(1)),
            budget_bytes: self.history_budget_bytes.max(1),
        }
    }
}

impl Config {
    /// The token keys the flags name.
    pub fn key_settings(&self) -> crate::gate::KeySettings {
        crate::gate::KeySettings {
            hmac_secret: self.jwt_hmac_secret.clone(),
            previous_hmac_secret: self.jwt_hmac_previous_secret.clone(),
            previous_hmac_until: self.jwt_hmac_previous_until,
            public_key: self.jwt_public_key.clone(),
            audience: self.jwt_audience.clone(),
            issuer: self.jwt_issuer.clone(),
            require_exp: self.jwt_require_exp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_are_ranges_or_addresses_and_empty_is_none() {
        let parsed: TrustedProxies = "10.0.0.0/8, 127.0.0.1,::1/128".parse().unwrap();
        let shown: Vec<String> = parsed.0.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]);
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        assert!("10.0.0.0/8,nope".parse::<TrustedProxies>().is_err());
        let from_env_set_empty = Config::try_parse_from(["nimbus", "--trusted-proxies", ""]);
        assert_eq!(
            from_env_set_empty.unwrap().trusted_proxies,
            TrustedProxies::default()
        );
    }
}
