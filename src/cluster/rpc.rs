//! Cross-node calls over core NATS request/reply, generic over serde types.
//!
//! Subjects, under `tcphub.<cluster>.`: `node.<node-id>.rpc` reaches one node
//! and `all.<verb>` every node (each subscribes without a queue group, the
//! asker included). Calls travel in batches (`outgoing.rs` gathers them, the
//! [`Server`] packs the answers that are ready together); each call carries
//! the protocol version, its id and a deadline. A node refuses a version it
//! does not speak or a call it cannot decode (with an error reply, counted in
//! [`RpcStats`]) and drops a call whose deadline has passed. Replies too big
//! for one message travel in chunks (see the wire format in `wire.rs`).
//!
//! Knows nothing of what the calls mean.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::{HeaderMap, Subject, Subscriber};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::broker::{Broker, BrokerState};
use super::epoch_millis;
use super::inbox::{Arrival, Content, Expects, Inbox, Replies};
use super::outgoing::{self, Outgoing};
use super::wire::{
    self, Answer, CALL_ROOM, CHUNK_HEADER, CallOut, Decoded, MESSAGE_ROOM, NODE_HEADER, Pack, Reply,
};

pub use super::wire::{MAX_REPLY_BYTES, Refusal, VERSION};

/// The most answers one reply message carries before it goes out, so that
/// a steady stream of calls does not hold the first answers back.
const MAX_PACKED: usize = 256;

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
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    broker: Broker,
    prefix: String,
    node_id: String,
    stats: Arc<RpcStats>,
    inbox: Arc<Inbox>,
    outgoing: Outgoing,
}

impl Rpc {
    /// The transport of node `node_id` in cluster `cluster_name`; starts the
    /// task that sends its calls.
    pub fn new(broker: &Broker, cluster_name: &str, node_id: &str) -> Rpc {
        let (inbox, replied) = Inbox::new();
        Rpc {
            shared: Arc::new(Shared {
                broker: broker.clone(),
                prefix: format!("tcphub.{cluster_name}."),
                node_id: node_id.to_owned(),
                stats: Arc::default(),
                outgoing: Outgoing::start(broker.clone(), Arc::clone(&inbox), replied),
                inbox,
            }),
        }
    }

    /// The counters of requests this node's servers refused or dropped.
    pub fn stats(&self) -> Arc<RpcStats> {
        Arc::clone(&self.shared.stats)
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
        let mut replies = self.send(subject, request, deadline, Expects::One).await?;
        let wait = async {
            match replies.next().await {
                Some(arrival) => match arrival.content {
                    Content::Reply(reply) => decode_reply(&reply),
                    Content::NoResponders => Err(RpcError::NoResponders),
                    Content::Refused(refusal) => Err(RpcError::Refused(refusal)),
                    Content::Unreadable(detail) => Err(RpcError::BadReply(detail)),
                    Content::Unsent(detail) => Err(RpcError::Broker(detail)),
                },
                None => Err(RpcError::Broker("connection closed".to_owned())),
            }
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
        let mut replies = self.send(subject, request, deadline, Expects::Many).await?;
        let mut waiting: HashSet<&str> = expected.iter().map(String::as_str).collect();
        let mut answered = HashSet::new();
        let mut failed = BTreeSet::new();
        let mut gathered = Vec::new();
        let collect = async {
            while !waiting.is_empty() {
                let Some(Arrival { node, content }) = replies.next().await else {
                    break;
                };
                let answer = match content {
                    Content::Reply(reply) => decode_reply(&reply),
                    Content::Refused(refusal) => Err(RpcError::Refused(refusal)),
                    Content::Unreadable(detail) => Err(RpcError::BadReply(detail)),
                    Content::NoResponders | Content::Unsent(_) => break,
                };
                let Some(node) = node else {
                    warn!(%verb, "scatter reply without a node id ignored");
                    continue;
                };
                waiting.remove(node.as_str());
                if !answered.insert(node.clone()) {
                    continue; // a second answer from one node counts once
                }
                match answer {
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
        let subject = self.node_subject(&self.shared.node_id)?;
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
            .shared
            .broker
            .client()
            .subscribe(subject)
            .await
            .map_err(|err| RpcError::Broker(err.to_string()))?;
        Ok(Server {
            subscriber,
            rpc: self.clone(),
            sign,
            ready: VecDeque::new(),
            packs: Vec::new(),
            _request: PhantomData,
        })
    }

    /// Queues `request` for `subject`; what comes for it.
    async fn send<Req: Serialize>(
        &self,
        subject: String,
        request: &Req,
        deadline: Instant,
        expects: Expects,
    ) -> Result<Replies, RpcError> {
        let shared = &self.shared;
        if shared.broker.state() == BrokerState::Disconnected {
            return Err(RpcError::Broker("broker unreachable".to_owned()));
        }
        let body = serde_json::value::to_raw_value(request)
            .map_err(|err| RpcError::Broker(format!("request does not encode: {err}")))?;
        let (bytes, max) = (
            MESSAGE_ROOM + CALL_ROOM + body.get().len(),
            self.max_message(),
        );
        if bytes > max {
            return Err(RpcError::TooLarge {
                what: "request",
                bytes,
                max,
            });
        }
        let replies = shared
            .inbox
            .open(shared.broker.client(), expects)
            .await
            .map_err(|err| RpcError::Broker(err.to_string()))?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let call = CallOut {
            id: replies.id(),
            deadline: epoch_millis(SystemTime::now() + remaining),
            body,
        };
        shared.outgoing.push(subject, call);
        Ok(replies)
    }

    /// The largest payload one message may carry here.
    fn max_message(&self) -> usize {
        outgoing::max_message(&self.shared.broker)
    }

    fn node_subject(&self, node_id: &str) -> Result<String, RpcError> {
        token(node_id).map(|id| format!("{}node.{id}.rpc", self.shared.prefix))
    }

    fn all_subject(&self, verb: &str) -> Result<String, RpcError> {
        token(verb).map(|verb| format!("{}all.{verb}", self.shared.prefix))
    }

    /// Publishes one reply message to `to`, named by this node if `sign`.
    async fn publish(&self, to: Subject, sign: bool, payload: Bytes) -> Result<(), RpcError> {
        let client = self.shared.broker.client();
        let published = if sign {
            let mut headers = HeaderMap::new();
            headers.insert(NODE_HEADER, self.shared.node_id.as_str());
            client.publish_with_headers(to, headers, payload).await
        } else {
            // Most replies: no headers to write or to parse.
            client.publish(to, payload).await
        };
        published.map_err(|err| RpcError::Broker(err.to_string()))
    }
}

/// A subscription that yields the calls this node should answer.
#[derive(Debug)]
pub struct Server<Req> {
    subscriber: Subscriber,
    rpc: Rpc,
    /// Whether replies carry this node's id in a header.
    sign: bool,
    /// Calls of messages taken, not yet yielded.
    ready: VecDeque<Incoming<Req>>,
    /// Answers not yet sent, one reply message per asker's reply subject.
    packs: Vec<(Subject, Pack)>,
    _request: PhantomData<fn() -> Req>,
}

impl<Req: DeserializeOwned> Server<Req> {
    /// The next call to answer, or `None` once the connection is closed for
    /// good. Sends the answers given to [`Server::answer`] before it waits for
    /// more calls. Refuses (and counts) the calls of another version or that
    /// do not decode, and drops (and counts) the ones past their deadline, on
    /// the way.
    pub async fn next(&mut self) -> Option<Incoming<Req>> {
        loop {
            if let Some(incoming) = self.ready.pop_front() {
                return Some(incoming);
            }
            let message = match self.subscriber.next().now_or_never() {
                Some(message) => message,
                None => {
                    self.flush().await;
                    self.subscriber.next().await
                }
            };
            let Some(message) = message else {
                self.flush().await;
                return None;
            };
            self.take(message.reply, &message.payload).await;
        }
    }

    /// Answers a call with `response`, in one reply message with the other
    /// answers ready for the same asker: sent when the server next waits for
    /// calls, or sooner when the message is full. A big answer (a listing)
    /// goes alone, at once, as [`Replier::send`] sends it.
    pub async fn answer<Resp: Serialize>(
        &mut self,
        reply: Replier,
        response: &Resp,
    ) -> Result<(), RpcError> {
        let (answer, refused) = reply.encode(response)?;
        self.pack(reply, answer).await?;
        refused.map_or(Ok(()), Err)
    }

    /// Adds an encoded answer to the reply message for its asker, sending that
    /// message first if the answer would not fit, and after if it is full.
    async fn pack(&mut self, reply: Replier, answer: Answer) -> Result<(), RpcError> {
        let Some(to) = reply.to.clone() else {
            return Ok(()); // published without a reply subject: nobody waits
        };
        let max = self.rpc.max_message();
        if goes_alone(&answer, max) {
            return reply.send_encoded(answer, None).await;
        }
        let at = self.pack_for(&to);
        if self.packs[at].1.size_with(&answer) > max {
            let full = std::mem::replace(&mut self.packs[at].1, Pack::new());
            self.rpc
                .publish(to.clone(), self.sign, full.finish())
                .await?;
        }
        self.packs[at].1.push(&answer);
        if self.packs[at].1.answers() >= MAX_PACKED {
            let (to, full) = self.packs.swap_remove(at);
            self.rpc.publish(to, self.sign, full.finish()).await?;
        }
        Ok(())
    }

    /// The index of the reply message for `to`, opened if there is none.
    fn pack_for(&mut self, to: &Subject) -> usize {
        match self.packs.iter().position(|(subject, _)| subject == to) {
            Some(at) => at,
            None => {
                self.packs.push((to.clone(), Pack::new()));
                self.packs.len() - 1
            }
        }
    }

    /// Sends every reply message opened since the last time, even one with no
    /// answer: the asker holds its next calls to this node until it hears.
    async fn flush(&mut self) {
        let rpc = self.rpc.clone();
        for (to, pack) in self.packs.drain(..) {
            if let Err(err) = rpc.publish(to, self.sign, pack.finish()).await {
                debug!(%err, "answers not sent");
            }
        }
    }

    /// Queues the calls of one request message, refusing what cannot be answered.
    async fn take(&mut self, to: Option<Subject>, payload: &[u8]) {
        let stats = Arc::clone(&self.rpc.shared.stats);
        let calls = match wire::decode_calls::<Req>(payload) {
            Decoded::Calls(calls) => calls,
            Decoded::Unsupported(version) => {
                stats.refused_version.fetch_add(1, Ordering::Relaxed);
                let detail = format!("protocol version {version}; this node speaks {VERSION}");
                self.refuse_message(to, Refusal::new("unsupported_version", detail))
                    .await;
                return;
            }
            Decoded::Malformed(detail) => {
                stats.refused_malformed.fetch_add(1, Ordering::Relaxed);
                self.refuse_message(to, Refusal::new("bad_request", detail))
                    .await;
                return;
            }
        };
        if let Some(to) = &to {
            self.pack_for(to);
        }
        let now = SystemTime::now();
        for call in calls {
            let deadline = UNIX_EPOCH + Duration::from_millis(call.deadline);
            let reply = Replier {
                rpc: self.rpc.clone(),
                to: to.clone(),
                id: call.id,
                deadline,
                sign: self.sign,
            };
            match call.body {
                Ok(_) if deadline < now => {
                    stats.expired.fetch_add(1, Ordering::Relaxed);
                    debug!(call = call.id, "late call dropped");
                }
                Ok(request) => self.ready.push_back(Incoming { request, reply }),
                Err(detail) => {
                    stats.refused_malformed.fetch_add(1, Ordering::Relaxed);
                    let refusal: Reply<()> = Reply::Error(Refusal::new("bad_request", detail));
                    let packed = match Answer::encode(call.id, &refusal) {
                        Ok(answer) => self.pack(reply, answer).await,
                        Err(err) => Err(RpcError::Broker(err.to_string())),
                    };
                    if let Err(err) = packed {
                        debug!(%err, "refusal not sent");
                    }
                }
            }
        }
    }

    /// Refuses a whole request message: every call it carried hears it.
    async fn refuse_message(&self, to: Option<Subject>, refusal: Refusal) {
        let Some(to) = to else {
            return;
        };
        let reply: Reply<()> = Reply::Error(refusal);
        let Ok(payload) = serde_json::to_vec(&reply) else {
            return;
        };
        if let Err(err) = self.rpc.publish(to, self.sign, payload.into()).await {
            debug!(%err, "refusal not sent");
        }
    }
}

/// A call to answer, and the way to answer it.
#[derive(Debug)]
pub struct Incoming<Req> {
    /// The request.
    pub request: Req,
    /// Where the answer goes.
    pub reply: Replier,
}

/// Sends the answer to one call.
#[derive(Debug)]
pub struct Replier {
    rpc: Rpc,
    to: Option<Subject>,
    id: u64,
    deadline: SystemTime,
    sign: bool,
}

impl Replier {
    /// When the asker stops waiting: work past it is wasted.
    pub fn deadline(&self) -> SystemTime {
        self.deadline
    }

    /// Sends `response` now, alone, in chunks if it is over one message. A
    /// reply over [`MAX_REPLY_BYTES`] is not sent: the asker gets a
    /// `too_large` refusal instead, and this returns [`RpcError::TooLarge`].
    pub async fn send<Resp: Serialize>(self, response: &Resp) -> Result<(), RpcError> {
        let (answer, refused) = self.encode(response)?;
        self.send_encoded(answer, refused).await
    }

    /// The answer, or a `too_large` refusal in its place (and the error to
    /// report) when it is over [`MAX_REPLY_BYTES`].
    fn encode<Resp: Serialize>(
        &self,
        response: &Resp,
    ) -> Result<(Answer, Option<RpcError>), RpcError> {
        let answer = Answer::encode(self.id, &Reply::Ok(response))
            .map_err(|err| RpcError::Broker(format!("reply does not encode: {err}")))?;
        if answer.reply.len() <= MAX_REPLY_BYTES {
            return Ok((answer, None));
        }
        let err = RpcError::TooLarge {
            what: "reply",
            bytes: answer.reply.len(),
            max: MAX_REPLY_BYTES,
        };
        let refusal: Reply<()> = Reply::Error(Refusal::new("too_large", err.to_string()));
        let refused = Answer::encode(self.id, &refusal)
            .map_err(|err| RpcError::Broker(format!("refusal does not encode: {err}")))?;
        Ok((refused, Some(err)))
    }

    /// Sends one answer alone: a small one in a reply message of its own, a
    /// big one bare (in chunks if need be) to the call's own subject; then
    /// reports `refused`, if any.
    async fn send_encoded(self, answer: Answer, refused: Option<RpcError>) -> Result<(), RpcError> {
        let Some(to) = self.to else {
            return Ok(()); // published without a reply subject: nobody waits
        };
        let max = self.rpc.max_message();
        if !goes_alone(&answer, max) {
            let mut pack = Pack::new();
            pack.push(&answer);
            self.rpc.publish(to, self.sign, pack.finish()).await?;
            return refused.map_or(Ok(()), Err);
        }
        let subject = format!("{to}.{}", self.id);
        let client = self.rpc.shared.broker.client();
        for (chunk, bytes) in wire::chunks(Bytes::from(answer.reply), max) {
            let mut headers = HeaderMap::new();
            if self.sign {
                headers.insert(NODE_HEADER, self.rpc.shared.node_id.as_str());
            }
            if let Some(chunk) = chunk {
                headers.insert(CHUNK_HEADER, chunk.as_str());
            }
            client
                .publish_with_headers(subject.clone(), headers, bytes)
                .await
                .map_err(|err| RpcError::Broker(err.to_string()))?;
        }
        refused.map_or(Ok(()), Err)
    }
}

/// Whether `answer` goes bare to its call's own subject rather than in a
/// reply message: too big to share one, or to fit one.
fn goes_alone(answer: &Answer, max: usize) -> bool {
    answer.reply.len() > wire::PACKED_MAX || Pack::new().size_with(answer) > max
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

fn decode_reply<Resp: DeserializeOwned>(bytes: &[u8]) -> Result<Resp, RpcError> {
    match serde_json::from_slice::<Reply<Resp>>(bytes) {
        Ok(Reply::Ok(response)) => Ok(response),
        Ok(Reply::Error(refusal)) => Err(RpcError::Refused(refusal)),
        Err(err) => Err(RpcError::BadReply(err.to_string())),
    }
}
