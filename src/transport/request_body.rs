//! The one reader of request bodies: a POSTed message, an API call. Bounded in size (refused
//! as soon as it is over, not once it is all here) and in time (a client trickling a byte
//! every few seconds is answered `408` instead of holding a connection forever).
use std::time::Duration;

use actix_web::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use thiserror::Error;

/// Why a body was not read.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("request body over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body did not arrive within {} s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error("could not read the request body: {0}")]
    Read(String),
}

impl BodyError {
    /// `413`, `408` or `400`.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// The whole body of `payload`, at most `limit` bytes, all of it within `timeout`.
pub async fn read<S, E>(payload: S, limit: usize, timeout: Duration) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    tokio::time::timeout(timeout, read_all(payload, limit))
        .await
        .unwrap_or(Err(BodyError::Timeout(timeout)))
}

async fn read_all<S, E>(mut payload: S, limit: usize) -> Result<Bytes, BodyError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut bytes = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    type Chunk = Result<Bytes, std::convert::Infallible>;

    #[tokio::test]
    async fn a_body_is_read_whole_within_its_limit() {
        let chunks: Vec<Chunk> = vec![Ok(Bytes::from("ab")), Ok(Bytes::from("cd"))];
        let body = read(stream::iter(chunks), 4, Duration::from_secs(1)).await;
        assert_eq!(body.unwrap(), "abcd");
    }

    #[tokio::test]
    async fn a_body_over_its_limit_is_refused_at_the_chunk_that_passes_it() {
        let chunks = stream::iter(vec![Ok(Bytes::from("abc")), Ok(Bytes::from("de"))])
            .chain(stream::pending::<Chunk>());
        let refused = read(chunks, 4, Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_trickles_is_refused_when_its_time_is_up() {
        let trickle = stream::iter(vec![Ok(Bytes::from("a"))]).chain(stream::pending::<Chunk>());
        let refused = read(trickle, 100, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert_eq!(refused.status(), StatusCode::REQUEST_TIMEOUT);
    }
}
