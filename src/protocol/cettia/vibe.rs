//! The Vibe 3.0.0-Alpha1 dialect (`/vibe`): the protocol Cettia grew out of.
//!
//! Parameters carry no prefix; the client chooses the socket `id` and the `heartbeat`; there is
//! no handshake message (the padding of a stream, or the empty answer to a long-poll `open`,
//! opens the socket); stream events are `data: <json>\n\n`; a long-poll answer carries every
//! event the client has not acknowledged (`lastEventIds`), one as an object, several as an
//! array. Events, replies and heartbeats are the same as Cettia's.
use bytes::Bytes;
use thiserror::Error;

/// Vibe's stream padding: 2048 spaces and a newline (a 0x801-byte first chunk).
pub const STREAM_PADDING: usize = 2049;

/// The transports a Vibe 3.0.0-Alpha1 client names in `transport=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VibeTransport {
    Ws,
    Sse,
    StreamXhr,
    StreamXdr,
    StreamIframe,
    LongPollAjax,
    LongPollXdr,
    LongPollJsonp,
}

impl VibeTransport {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ws" => VibeTransport::Ws,
            "sse" => VibeTransport::Sse,
            "streamxhr" => VibeTransport::StreamXhr,
            "streamxdr" => VibeTransport::StreamXdr,
            "streamiframe" => VibeTransport::StreamIframe,
            "longpollajax" => VibeTransport::LongPollAjax,
            "longpollxdr" => VibeTransport::LongPollXdr,
            "longpolljsonp" => VibeTransport::LongPollJsonp,
            _ => return None,
        })
    }

    pub fn is_stream(self) -> bool {
        matches!(
            self,
            VibeTransport::Sse
                | VibeTransport::StreamXhr
                | VibeTransport::StreamXdr
                | VibeTransport::StreamIframe
        )
    }

    pub fn is_long_poll(self) -> bool {
        matches!(
            self,
            VibeTransport::LongPollAjax | VibeTransport::LongPollXdr | VibeTransport::LongPollJsonp
        )
    }
}

/// What a `/vibe` request says.
#[derive(Debug, Clone, Default)]
pub struct VibeRequest {
    pub params: Vec<(String, String)>,
    pub id: Option<String>,
    pub when: Option<String>,
    pub transport: Option<String>,
    /// `heartbeat=<ms>`; `heartbeat=false` (or absent) turns it off.
    pub heartbeat: Option<u64>,
    pub callback: Option<String>,
    pub last_event_ids: Vec<String>,
}

/// A `/vibe` request the server cannot act on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VibeError {
    #[error("malformed query string: {0}")]
    Query(String),
    #[error("a socket id is required (`id=`), at most 128 characters")]
    MissingId,
    #[error("unsupported transport {0:?}")]
    UnsupportedTransport(String),
    #[error("malformed heartbeat {0:?}: milliseconds or false")]
    Heartbeat(String),
}

impl VibeRequest {
    pub fn parse(query: &str) -> Result<VibeRequest, VibeError> {
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| VibeError::Query(e.to_string()))?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let heartbeat = match get("heartbeat").as_deref() {
            None | Some("false") => None,
            Some(ms) => Some(
                ms.parse::<u64>()
                    .map_err(|_| VibeError::Heartbeat(ms.to_string()))?,
            ),
        };
        let last_event_ids = get("lastEventIds")
            .map(|ids| {
                ids.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(VibeRequest {
            id: get("id").filter(|v| !v.is_empty()),
            when: get("when"),
            transport: get("transport"),
            heartbeat,
            callback: get("callback"),
            last_event_ids,
            params,
        })
    }

    /// Every `topic` parameter (the default application joins them).
    pub fn values_topic(&self) -> impl Iterator<Item = &str> + '_ {
        self.params
            .iter()
            .filter(|(k, _)| k == "topic")
            .map(|(_, v)| v.as_str())
    }

    /// The socket id, which the client chose.
    /// The `token` parameter: the client's JSON Web Token.
    pub fn token(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.as_str())
    }

    pub fn socket_id(&self) -> Result<&str, VibeError> {
        match self.id.as_deref() {
            Some(id) if id.len() <= 128 => Ok(id),
            _ => Err(VibeError::MissingId),
        }
    }

    pub fn transport(&self) -> Result<VibeTransport, VibeError> {
        let name = self.transport.as_deref().unwrap_or_default();
        VibeTransport::parse(name).ok_or_else(|| VibeError::UnsupportedTransport(name.into()))
    }
}

/// The padding a stream starts with.
pub fn stream_padding() -> Bytes {
    super::framing::padding(STREAM_PADDING)
}

/// One event on a stream: `data: <json>` lines and an empty line.
pub fn stream_event(json: &str) -> Bytes {
    super::framing::sse_event(json)
}

/// A long-poll body: one event as is, several as a JSON array.
pub fn long_poll_body<'a>(events: impl ExactSizeIterator<Item = &'a str>) -> String {
    if events.len() == 1 {
        return events.into_iter().next().unwrap_or_default().to_string();
    }
    let mut out = String::from("[");
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_seed_request() {
        let r = VibeRequest::parse(
            "id=d009d9f3-088f-4977-8ec0-99576f84cb4c&_=32fb5d&when=open&transport=sse&heartbeat=20000",
        )
        .unwrap();
        assert_eq!(
            r.socket_id().unwrap(),
            "d009d9f3-088f-4977-8ec0-99576f84cb4c"
        );
        assert_eq!(r.transport().unwrap(), VibeTransport::Sse);
        assert_eq!(r.heartbeat, Some(20000));
        assert_eq!(
            VibeRequest::parse("heartbeat=false").unwrap().heartbeat,
            None
        );
        assert!(VibeRequest::parse("heartbeat=x").is_err());
        assert_eq!(
            VibeRequest::parse("lastEventIds=1,2")
                .unwrap()
                .last_event_ids,
            vec!["1", "2"]
        );
    }

    #[test]
    fn seed_framing() {
        // The seed's chunk sizes: 0x801 for the padding, 0x47 for the echo event.
        assert_eq!(stream_padding().len(), 0x801);
        let e = r#"{"id":"1","type":"echo","data":"An echo message","reply":false}"#;
        assert_eq!(stream_event(e).len(), 0x47);
        assert_eq!(long_poll_body(["{}"].into_iter()), "{}");
        assert_eq!(long_poll_body(["{}", "[]"].into_iter()), "[{},[]]");
    }

    proptest! {
        // Any query string a Vibe client sends: parameters or a clear error, never a panic.
        #[test]
        fn any_query_parses_or_fails_cleanly(
            query in ".*",
            near in "((id|when|transport|heartbeat|lastEventIds|callback|_)=[%0-9a-zA-Z.,-]{0,8}&?){0,6}",
        ) {
            let _ = VibeRequest::parse(&query);
            let _ = VibeRequest::parse(&near);
        }
    }
}
