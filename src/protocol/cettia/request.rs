//! The `cettia-*` query parameters of a request to `/cettia`.
use thiserror::Error;

/// An HTTP transport kind (`cettia-transport-name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportName {
    Stream,
    LongPoll,
}

/// `cettia-transport-when` of a GET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Open,
    Poll,
    Abort,
}

/// What a `/cettia` request says about itself.
#[derive(Debug, Clone, Default)]
pub struct CettiaRequest {
    /// Every query parameter, in order (applications read their own, e.g. `topic`).
    pub params: Vec<(String, String)>,
    /// `cettia-id`: the socket the client had.
    pub socket_id: Option<String>,
    pub transport_name: Option<String>,
    pub when: Option<String>,
    pub transport_id: Option<String>,
    pub sse: bool,
    pub jsonp: bool,
    pub callback: Option<String>,
}

/// A request the server cannot act on.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("malformed query string: {0}")]
    Query(String),
    #[error("unsupported transport {0:?}: use stream or longpoll (or a WebSocket upgrade)")]
    UnsupportedTransport(String),
    #[error("unsupported cettia-transport-when {0:?}: use open, poll or abort")]
    UnsupportedWhen(String),
    #[error("a JSONP long-poll needs cettia-transport-callback, a JavaScript identifier")]
    BadCallback,
}

impl CettiaRequest {
    pub fn parse(query: &str) -> Result<CettiaRequest, RequestError> {
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|e| RequestError::Query(e.to_string()))?;
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        Ok(CettiaRequest {
            socket_id: get("cettia-id").filter(|v| !v.is_empty()),
            transport_name: get("cettia-transport-name"),
            when: get("cettia-transport-when"),
            transport_id: get("cettia-transport-id"),
            sse: get("cettia-transport-sse").as_deref() == Some("true"),
            jsonp: get("cettia-transport-jsonp").as_deref() == Some("true"),
            callback: get("cettia-transport-callback"),
            params,
        })
    }

    /// Every value of parameter `name`.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `token` parameter: the client's JSON Web Token, put in the socket URI by the
    /// application (`cettia.open("/cettia?token=...")`).
    pub fn token(&self) -> Option<&str> {
        self.values("token").next()
    }

    pub fn when(&self) -> Result<When, RequestError> {
        match self.when.as_deref() {
            Some("open") => Ok(When::Open),
            Some("poll") => Ok(When::Poll),
            Some("abort") => Ok(When::Abort),
            other => Err(RequestError::UnsupportedWhen(
                other.unwrap_or_default().to_string(),
            )),
        }
    }

    pub fn transport(&self) -> Result<TransportName, RequestError> {
        match self.transport_name.as_deref() {
            Some("stream") => Ok(TransportName::Stream),
            Some("longpoll") => Ok(TransportName::LongPoll),
            other => Err(RequestError::UnsupportedTransport(
                other.unwrap_or_default().to_string(),
            )),
        }
    }

    /// The JSONP callback of a `jsonp=true` long-poll, validated.
    pub fn jsonp_callback(&self) -> Result<Option<String>, RequestError> {
        if !self.jsonp {
            return Ok(None);
        }
        match &self.callback {
            Some(c) if super::framing::valid_callback(c) => Ok(Some(c.clone())),
            _ => Err(RequestError::BadCallback),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_the_cettia_parameters() {
        let r = CettiaRequest::parse(
            "cettia-version=1.0&cettia-transport-name=longpoll&cettia-transport-when=open&cettia-transport-jsonp=true&cettia-transport-callback=socket_7&topic=%2Fa&topic=%2Fb&cettia-id=",
        )
        .unwrap();
        assert_eq!(r.transport().unwrap(), TransportName::LongPoll);
        assert_eq!(r.when().unwrap(), When::Open);
        assert_eq!(r.jsonp_callback().unwrap().as_deref(), Some("socket_7"));
        assert_eq!(r.values("topic").collect::<Vec<_>>(), vec!["/a", "/b"]);
        assert_eq!(r.socket_id, None);
        assert!(matches!(
            CettiaRequest::parse("cettia-transport-name=sse")
                .unwrap()
                .transport(),
            Err(RequestError::UnsupportedTransport(_))
        ));
        assert!(CettiaRequest::parse("cettia-transport-when=x")
            .unwrap()
            .when()
            .is_err());
    }

    proptest! {
        // Any query string a client sends: parameters or a clear error, never a panic.
        #[test]
        fn any_query_parses_or_fails_cleanly(
            query in ".*",
            near in "(cettia-(version|id|transport-(name|when|id|jsonp|callback))=[%0-9a-zA-Z.-]{0,6}&?){0,6}",
        ) {
            let _ = CettiaRequest::parse(&query);
            let _ = CettiaRequest::parse(&near);
        }
    }
}
