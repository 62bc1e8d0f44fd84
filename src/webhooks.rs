//! Webhooks: every hub event, in batches, POSTed to each `--webhook-url`.
//!
//! Each URL gets its own task and its own subscription to the event bus, and
//! that subscription is its bounded queue: while a batch is out (or waiting to
//! be retried) new events wait there, and a webhook that falls more than
//! `--event-buffer` events behind loses the oldest ones (counted, and reported in
//! the next batch's `missed`) rather than holding the hub back. A batch is what
//! has accumulated since the last one, up to [`MAX_BATCH`] events, so batches
//! grow with the load and a quiet hub sends each event at once.
//!
//! Network errors, timeouts, 408, 429 and 5xx answers are retried with
//! exponential backoff and jitter, up to [`MAX_ATTEMPTS`] attempts; other
//! answers fail the batch at once. With `--webhook-secret`, each body is signed
//! with HMAC-SHA256 in the [`SIGNATURE_HEADER`] header, `sha256=<hex>`.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, warn};
use utoipa::ToSchema;

use crate::config::Config;
use crate::events::Event;
use crate::metrics::OutcomeLabels;
use crate::registry::Registry;

/// The header holding the body's signature, `sha256=<lowercase hex>`.
pub const SIGNATURE_HEADER: &str = "x-tcphub-signature";
/// Most events in one POST.
pub const MAX_BATCH: usize = 500;
/// Attempts per batch before it is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// The pause before the first retry; each further retry doubles it.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long one attempt may take, connecting included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The body of a webhook POST.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "events": [{"id": 7, "time": "2026-11-25T18:40:30.123Z", "clientId": "c3", "name": null,
                "peer": "127.0.0.1:50312", "type": "client.connected"}],
    "missed": 0
}))]
pub struct EventBatch {
    /// Consecutive events, oldest first (ids increase; a gap means `missed`).
    #[schema(value_type = Vec<Event>)]
    pub events: Vec<Arc<Event>>,
    /// Events dropped before this batch because the webhook fell behind.
    pub missed: u64,
}

/// The running webhook deliveries.
#[derive(Debug)]
pub struct Webhooks {
    deliveries: Vec<JoinHandle<()>>,
}

/// Starts one delivery task per configured URL, subscribed from now on.
pub fn start(config: &Config, registry: &Registry) -> io::Result<Webhooks> {
    if config.webhook_urls.is_empty() {
        return Ok(Webhooks {
            deliveries: Vec::new(),
        });
    }
    let http = reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        // A redirected POST would turn into a GET elsewhere: a 3xx is an answer.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tcphub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(io::Error::other)?;
    let key: Option<Arc<[u8]>> = config
        .webhook_secret
        .as_deref()
        .map(|secret| Arc::from(secret.as_bytes()));
    let deliveries = config
        .webhook_urls
        .iter()
        .map(|url| {
            let webhook = Webhook {
                url: url.clone(),
                http: http.clone(),
                key: key.clone(),
                registry: registry.clone(),
            };
            tokio::spawn(webhook.run(registry.events().subscribe()))
        })
        .collect();
    Ok(Webhooks { deliveries })
}

impl Webhooks {
    /// Lets every webhook send what the hub emitted before its event bus closed,
    /// for at most `grace`; deliveries still going after that are abandoned.
    pub async fn finish(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for delivery in self.deliveries {
            let abort = delivery.abort_handle();
            if timeout_at(deadline, delivery).await.is_err() {
                warn!("webhook delivery still going after the grace period: abandoned");
                abort.abort();
            }
        }
    }
}

/// The HMAC-SHA256 signature of `body` under `key`, as sent in [`SIGNATURE_HEADER`].
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let mut header = String::from("sha256=");
    for byte in mac.finalize().into_bytes() {
        // Writing to a String cannot fail.
        let _ = write!(header, "{byte:02x}");
    }
    header
}

struct Webhook {
    url: Url,
    http: reqwest::Client,
    key: Option<Arc<[u8]>>,
    registry: Registry,
}

/// What one POST came to.
enum Attempt {
    Delivered,
    /// Worth trying again: the receiver may recover.
    Failed(String),
    /// Trying again would get the same answer.
    Refused(StatusCode),
}

impl Webhook {
    async fn run(self, mut events: broadcast::Receiver<Arc<Event>>) {
        while let Some(batch) = self.next_batch(&mut events).await {
            self.deliver(&batch).await;
        }
    }

    /// Waits for an event, then takes every event already waiting (up to a
    /// batch); `None` once the bus is closed and drained.
    async fn next_batch(&self, events: &mut broadcast::Receiver<Arc<Event>>) -> Option<EventBatch> {
        let mut batch = EventBatch {
            events: Vec::new(),
            missed: 0,
        };
        loop {
            tokio::select! {
                // Events first: the bus closing ends the webhook only once it is drained.
                biased;
                received = events.recv() => match received {
                    Ok(event) => {
                        batch.events.push(event);
                        break;
                    }
                    Err(RecvError::Lagged(missed)) => self.missed(&mut batch, missed),
                    Err(RecvError::Closed) => return None,
                },
                () = self.registry.events().closed() => return None,
            }
        }
        while batch.events.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.events.push(event),
                Err(TryRecvError::Lagged(missed)) => self.missed(&mut batch, missed),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        Some(batch)
    }

    fn missed(&self, batch: &mut EventBatch, missed: u64) {
        warn!(webhook = %self.redacted_url(), missed, "webhook fell behind: events dropped");
        self.registry
            .metrics()
            .webhook_events_dropped
            .inc_by(missed);
        batch.missed += missed;
    }

    /// POSTs `batch` until it is delivered, refused, or out of attempts.
    async fn deliver(&self, batch: &EventBatch) {
        let body = match serde_json::to_vec(batch) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                warn!(%err, "cannot serialize a webhook batch");
                return self.count("failed");
            }
        };
        let signature = self.key.as_deref().map(|key| signature(key, &body));
        for attempt in 1..=MAX_ATTEMPTS {
            let failure = match self.post(body.clone(), signature.as_deref()).await {
                Attempt::Delivered => return self.count("delivered"),
                Attempt::Refused(status) => {
                    warn!(webhook = %self.redacted_url(), %status, events = batch.events.len(),
                        "webhook refused a batch: dropped");
                    return self.count("failed");
                }
                Attempt::Failed(failure) => failure,
            };
            if attempt == MAX_ATTEMPTS {
                warn!(webhook = %self.redacted_url(), %failure, attempt, events = batch.events.len(),
                    "webhook delivery failed: batch dropped");
                return self.count("failed");
            }
            let pause = backoff(attempt);
            debug!(webhook = %self.redacted_url(), %failure, attempt, pause_ms = pause.as_millis(), "webhook delivery failed: retrying");
            self.registry.metrics().webhook_retries.inc();
            tokio::time::sleep(pause).await;
        }
    }

    async fn post(&self, body: Bytes, signature: Option<&str>) -> Attempt {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(signature) = signature {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Delivered,
            Ok(response) => {
                let status = response.status();
                let retryable = status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS;
                if retryable {
                    Attempt::Failed(format!("answered {status}"))
                } else {
                    Attempt::Refused(status)
                }
            }
            Err(err) => Attempt::Failed(err.to_string()),
        }
    }

    fn count(&self, outcome: &'static str) {
        self.registry
            .metrics()
            .webhook_batches
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The URL without credentials or query, which may carry secrets, for logs.
    fn redacted_url(&self) -> String {
        format!(
            "{}{}",
            self.url.origin().ascii_serialization(),
            self.url.path()
        )
    }
}

/// The pause after failed attempt number `attempt` (from 1): doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], then a random half of it taken off,
/// so that webhooks failing together do not retry in lockstep.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(MAX_BACKOFF);
    // Each RandomState is freshly keyed, which is all the randomness jitter needs.
    let random = RandomState::new().build_hasher().finish();
    let jitter = (full / 2).mul_f64(random as f64 / u64::MAX as f64);
    full - jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        for attempt in 1..=MAX_ATTEMPTS + 4 {
            let full = FIRST_BACKOFF
                .saturating_mul(1 << (attempt - 1))
                .min(MAX_BACKOFF);
            let pause = backoff(attempt);
            assert!(
                full / 2 <= pause && pause <= full,
                "attempt {attempt}: {pause:?}"
            );
        }
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
