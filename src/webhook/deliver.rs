//! The delivery loop: take a batch, POST it signed, mark it done on 2xx, back off otherwise.
use std::sync::{Arc, Weak};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Event, Inner, Settings, Source, BATCH};
use crate::metrics::Metrics;

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The `X-Nimbus-Signature` of `body` sent at `unix_secs`: `t=<secs>,v1=<hex HMAC-SHA256 of
/// "<secs>.<body>">`. The time inside the signed text lets a backend refuse old replays.
pub fn signature(secret: &str, unix_secs: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(unix_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={unix_secs},v1={hex}")
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot reach the backend: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("the backend answered {0}")]
    Status(u16),
}

async fn post(
    client: &reqwest::Client,
    settings: &Settings,
    events: &[Event],
) -> Result<(), PostError> {
    let body =
        serde_json::to_vec(&serde_json::json!({ "events": events })).expect("events serialize");
    let signed = signature(&settings.secret, super::unix_ms() / 1000, &body);
    let response = client
        .post(&settings.url)
        .header("Content-Type", "application/json")
        .header("X-Nimbus-Signature", signed)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError::Status(status.as_u16()))
    }
}

/// Deliver from `source` to the backend until the node (`webhooks`) is gone.
pub(super) async fn run(
    webhooks: Weak<Inner>,
    source: Arc<dyn Source>,
    settings: Settings,
    metrics: Metrics,
) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "webhooks: no HTTP client; events are not delivered");
            return;
        }
    };
    let mut backoff = FIRST_BACKOFF;
    while webhooks.strong_count() > 0 {
        let batch = match source.take(BATCH).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "webhooks: cannot read the queue; retrying");
                tokio::time::sleep(FIRST_BACKOFF).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        match post(&client, &settings, &batch).await {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                metrics.webhook_events("delivered", batch.len() as u64);
                let ids = batch.into_iter().map(|e| e.id).collect();
                if let Err(error) = source.done(ids).await {
                    // They are delivered again later: the backend deduplicates by id.
                    tracing::warn!(%error, "webhooks: cannot mark events delivered");
                }
            }
            Err(error) => {
                metrics.webhook_events("failed", batch.len() as u64);
                tracing::warn!(%error, events = batch.len(), retry_in = ?backoff,
                    "webhooks: delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_time_and_body() {
        let a = signature("s", 100, b"{}");
        assert!(a.starts_with("t=100,v1="));
        assert_eq!(a.len(), "t=100,v1=".len() + 64);
        assert_ne!(a, signature("s", 101, b"{}"), "the time is signed");
        assert_ne!(a, signature("s", 100, b"[]"), "the body is signed");
        assert_ne!(a, signature("t", 100, b"{}"), "under the secret");
    }
}
