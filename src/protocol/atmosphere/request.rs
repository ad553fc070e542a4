//! Reading an Atmosphere request.
//!
//! atmosphere.js 5 sends every `X-Atmosphere-*` value as a query parameter (browsers cannot set
//! headers on WebSocket or EventSource requests); other clients send real headers. Both are
//! read, and a header wins over a query parameter of the same name, as in the Java server.
use std::borrow::Cow;

use thiserror::Error;

use super::frame::Framing;

/// The transport a request asks for (`X-Atmosphere-Transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    WebSocket,
    Sse,
    Streaming,
    LongPolling,
    /// The classic client's departure notice.
    Close,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Sse => "sse",
            TransportKind::Streaming => "streaming",
            TransportKind::LongPolling => "long-polling",
            TransportKind::Close => "close",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().replace('_', "-").as_str() {
            "websocket" => Some(TransportKind::WebSocket),
            "sse" => Some(TransportKind::Sse),
            "streaming" => Some(TransportKind::Streaming),
            "long-polling" | "polling" | "ajax" => Some(TransportKind::LongPolling),
            "close" => Some(TransportKind::Close),
            _ => None,
        }
    }
}

/// Why a request cannot be served; each maps to a status and a message for the client.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error(
        "this path is an Atmosphere topic: connect with X-Atmosphere-Transport=websocket|sse|streaming|long-polling \
         (query parameter or header), or POST a message with X-Atmosphere-Transport and X-Atmosphere-tracking-id"
    )]
    NotAtmosphere,
    #[error("unknown X-Atmosphere-Transport {0:?}: expected websocket, sse, streaming, long-polling or close")]
    UnknownTransport(String),
    #[error("malformed X-Atmosphere-tracking-id: expected 1 to 128 characters of [A-Za-z0-9_-]")]
    BadTrackingId,
    #[error("X-Heartbeat-Server must be a whole number of seconds")]
    BadHeartbeat,
    #[error("X-Nimbus-History must be a whole number of messages")]
    BadHistory,
    #[error("Atmosphere protocol version {0:?} is not supported (need 2.2.1 or later)")]
    UnsupportedVersion(String),
}

/// Everything Nimbus needs from an Atmosphere request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AtmosphereRequest {
    pub transport: TransportKind,
    /// `None` when the client has no id yet (`0` or absent): the server issues one.
    pub tracking_id: Option<String>,
    /// `X-atmo-protocol=true`: send the `uuid|hb|X|` handshake.
    pub protocol: bool,
    pub track_message_size: bool,
    /// `X-Heartbeat-Server`: seconds, `0` = no server heartbeat; `None` = server default.
    pub heartbeat_server: Option<u64>,
    /// `X-Atmosphere-Session-Token`: the long-poll cursor the client echoes back.
    pub session_token: Option<String>,
    /// `X-Atmosphere-Auth`: the client's token (atmosphere.js `authToken`).
    pub auth: Option<String>,
    /// `X-Nimbus-History` (a Nimbus extension): how many of the topic's last messages a new
    /// connection receives before the live ones; `0` (the default) for none.
    pub history: usize,
    /// `X-Nimbus-Presence=true` (a Nimbus extension): the connection also receives the
    /// topic's presence notices (who joined, who left) among its messages.
    pub presence: bool,
}

impl AtmosphereRequest {
    /// Read the parameters from `query` (raw query string) and `header` (a header lookup).
    ///
    /// `websocket_upgrade` says the request asks for a WebSocket upgrade: a raw upgrade with no
    /// Atmosphere parameters is still a WebSocket connection, as in the Java server.
    pub fn parse(
        query: &str,
        header: impl Fn(&str) -> Option<String>,
        websocket_upgrade: bool,
    ) -> Result<Self, RequestError> {
        let params = QueryParams::parse(query);
        let get = |name: &str| header(name).or_else(|| params.get(name));

        let transport = match get("X-Atmosphere-Transport") {
            Some(t) => TransportKind::parse(&t).ok_or(RequestError::UnknownTransport(t))?,
            None if websocket_upgrade => TransportKind::WebSocket,
            None => return Err(RequestError::NotAtmosphere),
        };
        let tracking_id = match get("X-Atmosphere-tracking-id") {
            None => None,
            Some(id) if id == "0" || id.is_empty() => None,
            Some(id) if is_valid_tracking_id(&id) => Some(id),
            Some(_) => return Err(RequestError::BadTrackingId),
        };
        if let Some(version) = get("X-Atmosphere-Framework") {
            if !version_supported(&version) {
                return Err(RequestError::UnsupportedVersion(version));
            }
        }
        let heartbeat_server = match get("X-Heartbeat-Server") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| RequestError::BadHeartbeat)?),
        };
        let history = match get("X-Nimbus-History") {
            None => 0,
            Some(v) => v.trim().parse().map_err(|_| RequestError::BadHistory)?,
        };
        Ok(AtmosphereRequest {
            history,
            presence: is_true(get("X-Nimbus-Presence")),
            transport,
            tracking_id,
            protocol: is_true(get("X-atmo-protocol")),
            track_message_size: is_true(get("X-Atmosphere-TrackMessageSize")),
            heartbeat_server,
            session_token: get("X-Atmosphere-Session-Token"),
            auth: get("X-Atmosphere-Auth"),
        })
    }

    /// The framing of server-to-client messages on this connection.
    pub fn framing(&self) -> Framing {
        Framing {
            track_message_size: self.track_message_size,
            sse: self.transport == TransportKind::Sse,
        }
    }
}

/// The query parameters Nimbus reads (names compare case-insensitively).
const PARAMS: [&str; 10] = [
    "X-Atmosphere-Transport",
    "X-Atmosphere-tracking-id",
    "X-Atmosphere-Framework",
    "X-Heartbeat-Server",
    "X-atmo-protocol",
    "X-Atmosphere-TrackMessageSize",
    "X-Atmosphere-Session-Token",
    "X-Atmosphere-Auth",
    "X-Nimbus-History",
    "X-Nimbus-Presence",
];

/// The values of [`PARAMS`] in a query string (the last occurrence of a name wins). Every poll
/// is parsed, and atmosphere.js sends a dozen parameters: only these are kept, borrowed from
/// the query unless percent-encoded.
struct QueryParams<'q>([Option<Cow<'q, str>>; PARAMS.len()]);

impl<'q> QueryParams<'q> {
    fn parse(query: &'q str) -> Self {
        let mut values: [Option<Cow<'q, str>>; PARAMS.len()] = Default::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if let Some(i) = PARAMS.iter().position(|p| p.eq_ignore_ascii_case(&name)) {
                values[i] = Some(value);
            }
        }
        QueryParams(values)
    }

    fn get(&self, name: &str) -> Option<String> {
        let i = PARAMS.iter().position(|p| p.eq_ignore_ascii_case(name));
        debug_assert!(i.is_some(), "{name} is not in PARAMS");
        self.0[i?].as_deref().map(str::to_string)
    }
}

fn is_true(value: Option<String>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Tracking ids are `[A-Za-z0-9_-]{1,128}`, as the Java server validates them.
pub fn is_valid_tracking_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Atmosphere's version gate: `5.0.7` → 507, accepted when ≥ 221 (2.2.1). Unparseable versions
/// are rejected like the Java server does (they parse as 0).
fn version_supported(version: &str) -> bool {
    let number = version.split('-').next().unwrap_or("");
    let digits: String = number.split('.').take(3).collect();
    digits.parse::<u64>().map(|v| v >= 221).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(query: &str) -> Result<AtmosphereRequest, RequestError> {
        AtmosphereRequest::parse(query, |_| None, false)
    }

    #[test]
    fn reads_the_atmosphere_js_query() {
        let r = parse(
            "X-Atmosphere-tracking-id=0&X-Atmosphere-Framework=5.0.7&X-Atmosphere-Transport=long-polling\
             &X-Atmosphere-TrackMessageSize=true&X-Heartbeat-Server=90&X-atmo-protocol=true",
        )
        .unwrap();
        assert_eq!(r.transport, TransportKind::LongPolling);
        assert_eq!(r.tracking_id, None);
        assert!(r.protocol && r.track_message_size);
        assert_eq!(r.heartbeat_server, Some(90));
    }

    #[test]
    fn query_names_ignore_case_values_are_decoded_and_the_last_one_wins() {
        let r = parse(
            "x-atmosphere-transport=streaming&X-ATMOSPHERE-TRANSPORT=long%2Dpolling&_=1700000000\
             &x-atmosphere-session-token=17%2D42&Content-Type=text%2Fx-gwt-rpc",
        )
        .unwrap();
        assert_eq!(r.transport, TransportKind::LongPolling);
        assert_eq!(r.session_token.as_deref(), Some("17-42"));
    }

    #[test]
    fn headers_win_over_query() {
        let r = AtmosphereRequest::parse(
            "X-Atmosphere-Transport=sse&X-Atmosphere-tracking-id=abc",
            |name| (name == "X-Atmosphere-tracking-id").then(|| "fromheader".to_string()),
            false,
        )
        .unwrap();
        assert_eq!(r.tracking_id.as_deref(), Some("fromheader"));
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(parse(""), Err(RequestError::NotAtmosphere));
        assert!(matches!(
            parse("X-Atmosphere-Transport=carrier-pigeon"),
            Err(RequestError::UnknownTransport(_))
        ));
        assert_eq!(
            parse("X-Atmosphere-Transport=sse&X-Atmosphere-tracking-id=a%20b"),
            Err(RequestError::BadTrackingId)
        );
        let long = "a".repeat(129);
        assert_eq!(
            parse(&format!(
                "X-Atmosphere-Transport=sse&X-Atmosphere-tracking-id={long}"
            )),
            Err(RequestError::BadTrackingId)
        );
        assert!(matches!(
            parse("X-Atmosphere-Transport=sse&X-Atmosphere-Framework=2.1.0"),
            Err(RequestError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn bare_websocket_upgrade_is_websocket() {
        let r = AtmosphereRequest::parse("", |_| None, true).unwrap();
        assert_eq!(r.transport, TransportKind::WebSocket);
    }

    proptest! {
        // Any query string and headers a client sends: parameters or a clear error, never a
        // panic.
        #[test]
        fn any_request_parses_or_fails_cleanly(
            query in ".*",
            near in "(X-Atmosphere-(tracking-id|Transport|Framework|TrackMessageSize|Heartbeat)=[%0-9a-zA-Z.-]{0,8}&?){0,6}",
            header in proptest::option::of(".{0,16}"),
            upgrade in any::<bool>(),
        ) {
            let _ = parse(&query);
            let _ = AtmosphereRequest::parse(&near, |_| header.clone(), upgrade);
        }
    }
}
