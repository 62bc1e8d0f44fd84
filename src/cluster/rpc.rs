//! Cross-node calls over core NATS request/reply, generic over serde types.
//!
//! Subjects, under `tcphub.<cluster>.`: `node.<node-id>.rpc` reaches one node
//! and `all.<verb>` every node (each subscribes without a queue group, the
//! asker included). A request carries the protocol version and a deadline;
//! a node refuses a version it does not speak or a body it cannot decode
//! (with an error reply, counted in [`RpcStats`]) and drops a request whose
//! deadline has passed. Replies too big for one message travel in chunks
//! (see the wire format in `wire.rs`).
//!
//! Knows nothing of what the calls mean.

use std::collections::{BTreeSet, HashSet};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Message, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::broker::{Broker, BrokerState};
use super::epoch_millis;
use super::inbox::{Inbox, Replies};
use super::wire::{
    self, Assembly, CHUNK_HEADER, Decoded, HEADER_ROOM, NODE_HEADER, Reply, RequestOut,
};

pub use super::wire::{MAX_REPLY_BYTES, Refusal, VERSION};

/// Why a call got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// Nobody listens on the subject: the node is gone (reported by the
    /// broker at once, never after a timeout).
    #[error("no node answers on the subject")]
    NoResponders,
    /// The node did not answer in time: the call may or may not have had its effect.
    #[error("no answer in time")]
    Timeout,
    /// The broker is unreachable or failed the call.
    #[error("broker: {0}")]
    Broker(String),
    /// The node refused the call (another protocol version, a body it could not read).
    #[error("refused: {} ({})", .0.code, .0.detail)]
    Refused(Refusal),
    /// The request or the reply is over the size the transport carries.
    #[error("{what} of {bytes} bytes is over the limit of {max}")]
    TooLarge {
        /// `request` or `reply`.
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The reply did not decode as the expected type.
    #[error("unreadable reply: {0}")]
    BadReply(String),
    /// A node id or verb that cannot be a subject token.
    #[error("{0:?} cannot be part of a subject")]
    BadSubject(String),
}

/// Requests a node refused or dropped, for the caller to export as metrics.
#[derive(Debug, Default)]
pub struct RpcStats {
    refused_version: AtomicU64,
    refused_malformed: AtomicU64,
    expired: AtomicU64,
}

impl RpcStats {
    /// Requests refused for a protocol version this build does not speak.
    pub fn refused_version(&self) -> u64 {
        self.refused_version.load(Ordering::Relaxed)
    }

    /// Requests refused because they did not decode.
    pub fn refused_malformed(&self) -> u64 {
        self.refused_malformed.load(Ordering::Relaxed)
    }

    /// Requests dropped because their deadline had passed on arrival.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

/// What a scatter-gather collected by its deadline.
#[derive(Debug, PartialEq, Eq)]
pub struct Gathered<Resp> {
    /// Each answering node's id and answer, in order of arrival, once per
    /// node (nodes that were not expected included).
    pub replies: Vec<(String, Resp)>,
    /// The expected nodes that gave no usable answer, sorted.
    pub missing: Vec<String>,
}

/// The call transport of one node; cheap to clone.
#[derive(Debug, Clone)]
pub struct Rpc {
    broker: Broker,
    prefix: Arc<str>,
    node_id: Arc<str>,
    stats: Arc<RpcStats>,
    inbox: Arc<Inbox>,
}

impl Rpc {
    /// The transport of node `node_id` in cluster `cluster_name`.
    pub fn new(broker: &Broker, cluster_name: &str, node_id: &str) -> Rpc {
        Rpc {
            broker: broker.clone(),
            prefix: format!("tcphub.{cluster_name}.").into(),
            node_id: node_id.into(),
            stats: Arc::default(),
            inbox: Arc::default(),
        }
    }

    /// The counters of requests this node's servers refused or dropped.
    pub fn stats(&self) -> Arc<RpcStats> {
        Arc::clone(&self.stats)
    }

    /// Calls node `node_id` and waits at most `timeout` for its answer.
    pub async fn request<Req, Resp>(
        &self,
        node_id: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let subject = self.node_subject(node_id)?;
        let deadline = Instant::now() + timeout;
        let mut replies = self.send(subject, request, deadline).await?;
        let mut assembly = Assembly::default();
        let wait = async {
            while let Some(message) = replies.next().await {
                if message.status == Some(StatusCode::NO_RESPONDERS) {
                    return Err(RpcError::NoResponders);
                }
                let node = header(&message, NODE_HEADER).unwrap_or(node_id).to_owned();
                let chunk = header(&message, CHUNK_HEADER).map(str::to_owned);
                if let Some(whole) = assembly.add(&node, chunk.as_deref(), message.payload) {
                    return decode_reply(&whole.map_err(RpcError::BadReply)?);
                }
            }
            Err(RpcError::Broker("connection closed".to_owned()))
        };
        tokio::time::timeout_at(deadline, wait)
            .await
            .unwrap_or(Err(RpcError::Timeout))
    }

    /// Asks every node subscribed to `all.<verb>` and collects their answers
    /// until each of `expected` answered or `deadline` passed. A node whose
    /// answer is a refusal or unreadable counts as missing (and is logged).
    pub async fn scatter<Req, Resp>(
        &self,
        verb: &str,
        request: &Req,
        expected: &[String],
        deadline: Instant,
    ) -> Result<Gathered<Resp>, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let subject = self.all_subject(verb)?;
        let mut replies = self.send(subject, request, deadline).await?;
        let mut waiting: HashSet<&str> = expected.iter().map(String::as_str).collect();
        let mut answered = HashSet::new();
        let mut failed = BTreeSet::new();
        let mut gathered = Vec::new();
        let mut assembly = Assembly::default();
        let collect = async {
            while !waiting.is_empty() {
                let Some(message) = replies.next().await else {
                    break;
                };
                if message.status == Some(StatusCode::NO_RESPONDERS) {
                    break;
                }
                let Some(node) = header(&message, NODE_HEADER).map(str::to_owned) else {
                    warn!(%verb, "scatter reply without a node id ignored");
                    continue;
                };
                let chunk = header(&message, CHUNK_HEADER).map(str::to_owned);
                let Some(whole) = assembly.add(&node, chunk.as_deref(), message.payload) else {
                    continue;
                };
                waiting.remove(node.as_str());
                if !answered.insert(node.clone()) {
                    continue; // a second answer from one node counts once
                }
                match whole
                    .map_err(RpcError::BadReply)
                    .and_then(|b| decode_reply(&b))
                {
                    Ok(reply) => gathered.push((node, reply)),
                    Err(err) => {
                        warn!(%verb, %node, %err, "scatter reply unusable");
                        failed.insert(node);
                    }
                }
            }
        };
        // What did not come by the deadline is missing: no error for that.
        let _ = tokio::time::timeout_at(deadline, collect).await;
        let mut missing: Vec<String> = waiting.into_iter().map(str::to_owned).collect();
        missing.extend(failed.into_iter().filter(|node| expected.contains(node)));
        missing.sort();
        Ok(Gathered {
            replies: gathered,
            missing,
        })
    }

    /// Serves this node's own subject, `node.<node-id>.rpc`.
    pub async fn serve_node<Req: DeserializeOwned>(&self) -> Result<Server<Req>, RpcError> {
        let subject = self.node_subject(&self.node_id)?;
        self.serve(subject, false).await
    }

    /// Serves `all.<verb>`, which every node subscribes to.
    pub async fn serve_all<Req: DeserializeOwned>(
        &self,
        verb: &str,
    ) -> Result<Server<Req>, RpcError> {
        let subject = self.all_subject(verb)?;
        self.serve(subject, true).await
    }

    /// `sign`: whether every reply names this node (a scatter's asker tells
    /// the answers apart by it; a directed call's asker knows who answers).
    async fn serve<Req: DeserializeOwned>(
        &self,
        subject: String,
        sign: bool,
    ) -> Result<Server<Req>, RpcError> {
        let subscriber = self
            .broker
            .client()
            .subscribe(subject)
            .await
            .map_err(|err| RpcError::Broker(err.to_string()))?;
        Ok(Server {
            subscriber,
            rpc: self.clone(),
            sign,
            _request: PhantomData,
        })
    }

    /// Publishes `request` to `subject` with a reply subject of its own in
    /// this node's inbox.
    async fn send<Req: Serialize>(
        &self,
        subject: String,
        request: &Req,
        deadline: Instant,
    ) -> Result<Replies, RpcError> {
        if self.broker.state() == BrokerState::Disconnected {
            return Err(RpcError::Broker("broker unreachable".to_owned()));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        let payload = serde_json::to_vec(&RequestOut {
            version: wire::VERSION,
            deadline: epoch_millis(SystemTime::now() + remaining),
            body: request,
        })
        .map_err(|err| RpcError::Broker(format!("request does not encode: {err}")))?;
        let max = self.max_message();
        if payload.len() > max {
            return Err(RpcError::TooLarge {
                what: "request",
                bytes: payload.len(),
                max,
            });
        }
        let client = self.broker.client();
        let replies = self
            .inbox
            .open(client)
            .await
            .map_err(|err| RpcError::Broker(err.to_string()))?;
        client
            .publish_with_reply(subject, replies.subject().to_owned(), Bytes::from(payload))
            .await
            .map_err(|err| RpcError::Broker(err.to_string()))?;
        Ok(replies)
    }

    /// The largest payload one message may carry here.
    fn max_message(&self) -> usize {
        self.broker
            .client()
            .max_payload()
            .saturating_sub(HEADER_ROOM)
    }

    fn node_subject(&self, node_id: &str) -> Result<String, RpcError> {
        token(node_id).map(|id| format!("{}node.{id}.rpc", self.prefix))
    }

    fn all_subject(&self, verb: &str) -> Result<String, RpcError> {
        token(verb).map(|verb| format!("{}all.{verb}", self.prefix))
    }
}

/// A subscription that yields the requests this node should answer.
#[derive(Debug)]
pub struct Server<Req> {
    subscriber: Subscriber,
    rpc: Rpc,
    /// Whether replies carry this node's id in a header.
    sign: bool,
    _request: PhantomData<fn() -> Req>,
}

impl<Req: DeserializeOwned> Server<Req> {
    /// The next request to answer, or `None` once the connection is closed
    /// for good. Refuses (and counts) the ones of another version or that do
    /// not decode, and drops (and counts) the ones past their deadline, on the way.
    pub async fn next(&mut self) -> Option<Incoming<Req>> {
        loop {
            let message = self.subscriber.next().await?;
            let replier = Replier {
                rpc: self.rpc.clone(),
                to: message.reply,
                deadline: UNIX_EPOCH,
                sign: self.sign,
            };
            let stats = &self.rpc.stats;
            match wire::decode_request::<Req>(&message.payload) {
                Decoded::Request { deadline, body } => {
                    let deadline = UNIX_EPOCH + Duration::from_millis(deadline);
                    if deadline < SystemTime::now() {
                        stats.expired.fetch_add(1, Ordering::Relaxed);
                        debug!(subject = %message.subject, "late request dropped");
                        continue;
                    }
                    return Some(Incoming {
                        request: body,
                        reply: Replier {
                            deadline,
                            ..replier
                        },
                    });
                }
                Decoded::Unsupported(version) => {
                    stats.refused_version.fetch_add(1, Ordering::Relaxed);
                    let detail = format!(
                        "protocol version {version}; this node speaks {}",
                        wire::VERSION
                    );
                    replier
                        .refuse(Refusal::new("unsupported_version", detail))
                        .await;
                }
                Decoded::Malformed(detail) => {
                    stats.refused_malformed.fetch_add(1, Ordering::Relaxed);
                    replier.refuse(Refusal::new("bad_request", detail)).await;
                }
            }
        }
    }
}

/// A request to answer, and the way to answer it.
#[derive(Debug)]
pub struct Incoming<Req> {
    /// The request.
    pub request: Req,
    /// Where the answer goes.
    pub reply: Replier,
}

/// Sends the answer to one request.
#[derive(Debug)]
pub struct Replier {
    rpc: Rpc,
    to: Option<Subject>,
    deadline: SystemTime,
    sign: bool,
}

impl Replier {
    /// When the asker stops waiting: work past it is wasted.
    pub fn deadline(&self) -> SystemTime {
        self.deadline
    }

    /// Sends `response`, in chunks if it is over one message. A reply over
    /// [`MAX_REPLY_BYTES`] is not sent: the asker gets a `too_large`
    /// refusal instead, and this returns [`RpcError::TooLarge`].
    pub async fn send<Resp: Serialize>(self, response: &Resp) -> Result<(), RpcError> {
        let payload = serde_json::to_vec(&Reply::Ok(response))
            .map_err(|err| RpcError::Broker(format!("reply does not encode: {err}")))?;
        if payload.len() > MAX_REPLY_BYTES {
            let err = RpcError::TooLarge {
                what: "reply",
                bytes: payload.len(),
                max: MAX_REPLY_BYTES,
            };
            self.refuse(Refusal::new("too_large", err.to_string()))
                .await;
            return Err(err);
        }
        self.publish(Bytes::from(payload)).await
    }

    async fn refuse(self, refusal: Refusal) {
        let reply: Reply<()> = Reply::Error(refusal);
        let Ok(payload) = serde_json::to_vec(&reply) else {
            return;
        };
        if let Err(err) = self.publish(Bytes::from(payload)).await {
            debug!(%err, "refusal not sent");
        }
    }

    async fn publish(self, payload: Bytes) -> Result<(), RpcError> {
        let Some(to) = self.to else {
            return Ok(()); // published without a reply subject: nobody waits
        };
        let client = self.rpc.broker.client();
        for (chunk, bytes) in wire::chunks(payload, self.rpc.max_message()) {
            let published = if chunk.is_none() && !self.sign {
                // Most replies: one message, no headers to write or to parse.
                client.publish(to.clone(), bytes).await
            } else {
                let mut headers = HeaderMap::new();
                headers.insert(NODE_HEADER, &*self.rpc.node_id);
                if let Some(chunk) = chunk {
                    headers.insert(CHUNK_HEADER, chunk.as_str());
                }
                client
                    .publish_with_headers(to.clone(), headers, bytes)
                    .await
            };
            published.map_err(|err| RpcError::Broker(err.to_string()))?;
        }
        Ok(())
    }
}

/// `value` if it can be one token of a subject.
fn token(value: &str) -> Result<&str, RpcError> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(value)
    } else {
        Err(RpcError::BadSubject(value.to_owned()))
    }
}

fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers
        .as_ref()
        .and_then(|headers| headers.get(name))
        .map(|value| value.as_str())
}

fn decode_reply<Resp: DeserializeOwned>(bytes: &[u8]) -> Result<Resp, RpcError> {
    match serde_json::from_slice::<Reply<Resp>>(bytes) {
        Ok(Reply::Ok(response)) => Ok(response),
        Ok(Reply::Error(refusal)) => Err(RpcError::Refused(refusal)),
        Err(err) => Err(RpcError::BadReply(err.to_string())),
    }
}
