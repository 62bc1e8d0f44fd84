//! Answering other nodes: each call ends in this node's registry, exactly as
//! the same request on this node's own API would, so delivery rules, events
//! and metrics stay in one place.
//!
//! A call to one name acts only if the session it names still holds the name
//! (else `not_found`, and the caller reads the name table again). Calls to
//! every node (listings, broadcasts, group sends) arrive here too when this
//! node asks them: one code path for the asker and the others.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tracing::debug;

use super::calls::{AllAnswer, AllCall, NodeAnswer, NodeCall};
use super::membership::Membership;
use super::rpc::{Incoming, Replier, RpcError, Server};
use crate::directory::ClientView;
use crate::groups::{self, GroupChange, GroupsError};
use crate::metrics::OutcomeLabels;
use crate::protocol::ByeReason;
use crate::registry::{ListQuery, Registry, SendError};

/// The verb of the subject every node answers (`all.call`).
pub(super) const ALL: &str = "call";

/// Subscribes this node's subjects and answers them until it leaves.
pub(super) async fn start(membership: &Arc<Membership>) -> Result<(), RpcError> {
    let node_calls: Server<NodeCall> = membership.rpc.serve_node().await?;
    let all_calls: Server<AllCall> = membership.rpc.serve_all(ALL).await?;
    tokio::spawn(serve(Arc::clone(membership), node_calls));
    tokio::spawn(serve(Arc::clone(membership), all_calls));
    Ok(())
}

/// How one kind of call is answered: most at once, the others (an ack wait,
/// a broker read, a delivery that runs off the runtime) by a task.
trait Answered: Sized + Send + 'static {
    type Answer: serde::Serialize + Send + Sync;

    /// The answer when it is ready at once, else the call, for [`Answered::later`].
    fn at_once(self, membership: &Membership) -> Result<Self::Answer, Self>;

    /// The answer to a call that waits.
    fn later(self, membership: Arc<Membership>) -> impl Future<Output = Self::Answer> + Send;
}

/// Answers each call of `server`: at once when it can be (a send, a kick:
/// most calls), packed with the other answers ready for the same asker; else
/// in a task of its own, alone, so that an ack wait does not hold up the
/// calls behind it.
async fn serve<Call>(membership: Arc<Membership>, mut server: Server<Call>)
where
    Call: Answered + serde::de::DeserializeOwned,
{
    loop {
        let Incoming { request, reply } = tokio::select! {
            () = membership.stop.cancelled() => return,
            next = server.next() => match next {
                Some(incoming) => incoming,
                None => return,
            },
        };
        match request.at_once(&membership) {
            Ok(answer) => {
                if reply.deadline() < SystemTime::now() {
                    continue; // the asker stopped waiting; what was done stays done
                }
                if let Err(err) = server.answer(reply, &answer).await {
                    debug!(%err, "answer not sent");
                }
            }
            Err(call) => {
                let membership = Arc::clone(&membership);
                tokio::spawn(async move { send_answer(reply, call.later(membership).await).await });
            }
        }
    }
}

async fn send_answer<Resp: serde::Serialize>(reply: Replier, response: Resp) {
    if reply.deadline() < SystemTime::now() {
        // The asker stopped waiting; what was done stays done.
        return;
    }
    if let Err(err) = reply.send(&response).await {
        debug!(%err, "answer not sent");
    }
}

impl Answered for NodeCall {
    type Answer = NodeAnswer;

    fn at_once(self, membership: &Membership) -> Result<NodeAnswer, NodeCall> {
        let registry = &membership.registry;
        let node = &membership.node.id;
        Ok(match self {
            NodeCall::Ping => NodeAnswer::Done,
            NodeCall::Get { name, session } => match registry.holder(&name, session) {
                Some(client) => {
                    NodeAnswer::Client(ClientView::named(&client, Some(name.into()), node))
                }
                None => NodeAnswer::NotFound,
            },
            NodeCall::Send {
                name,
                session,
                message,
            } => match registry.holder(&name, session) {
                Some(client) => sent(registry.send_to_client(&client, &message)),
                None => NodeAnswer::NotFound,
            },
            NodeCall::Kick { name, session } => {
                match registry.kick_holder(&name, Some(session), ByeReason::Kicked) {
                    Ok(()) => NodeAnswer::Done,
                    Err(_) => NodeAnswer::NotFound,
                }
            }
            NodeCall::Replaced {
                name,
                session,
                revision,
            } => {
                membership.replaced(&name, session, revision);
                NodeAnswer::Done
            }
            NodeCall::SetGroups {
                name,
                session,
                groups,
            } => {
                let Some(client) = registry.holder(&name, session) else {
                    return Ok(NodeAnswer::NotFound);
                };
                let changed = groups::parse_names(&groups)
                    .and_then(|set| registry.set_groups_for(&client, &GroupChange::Replace(set)));
                match changed {
                    Ok(groups) => NodeAnswer::Groups {
                        groups: groups.iter().map(|g| g.to_string()).collect(),
                    },
                    Err(GroupsError::NotFound) => NodeAnswer::NotFound,
                    Err(GroupsError::Invalid(detail) | GroupsError::Forbidden(detail)) => {
                        NodeAnswer::InvalidGroups { detail }
                    }
                }
            }
            waits @ (NodeCall::SendAwaitingAck { .. }
            | NodeCall::DeliverStored { .. }
            | NodeCall::Bulk { .. }) => return Err(waits),
        })
    }

    async fn later(self, membership: Arc<Membership>) -> NodeAnswer {
        let registry = &membership.registry;
        match self {
            NodeCall::SendAwaitingAck {
                name,
                session,
                message,
                patience_ms,
            } => {
                let Some(client) = registry.holder(&name, session) else {
                    return NodeAnswer::NotFound;
                };
                let patience = Duration::from_millis(patience_ms);
                await_ack(registry, &name, &client, &message, patience).await
            }
            NodeCall::DeliverStored { name, session } => match registry.holder(&name, session) {
                Some(client) => NodeAnswer::Delivered {
                    ids: membership.deliver(&client).await,
                },
                None => NodeAnswer::NotFound,
            },
            NodeCall::Bulk { items } => {
                let registry = registry.clone();
                let sent = tokio::task::spawn_blocking(move || {
                    registry
                        .send_bulk(items.iter().map(|(names, message)| (&names[..], message)))
                        .into_iter()
                        .flat_map(|(id, deliveries)| {
                            deliveries
                                .into_iter()
                                .map(move |delivery| (id.clone(), delivery.as_str().to_owned()))
                        })
                        .collect()
                })
                .await;
                match sent {
                    Ok(results) => NodeAnswer::Bulk { results },
                    // Only a bug (a panic) ends the task early; the asker reports it.
                    Err(_) => NodeAnswer::Bulk {
                        results: Vec::new(),
                    },
                }
            }
            // Answered at once, never here; answered all the same.
            at_once => at_once.at_once(&membership).unwrap_or(NodeAnswer::NotFound),
        }
    }
}

fn sent(outcome: Result<String, SendError>) -> NodeAnswer {
    match outcome {
        Ok(id) => NodeAnswer::Sent { id },
        Err(SendError::NotFound) => NodeAnswer::NotFound,
        Err(SendError::Backlogged) => NodeAnswer::Backlogged,
    }
}

/// Pushes `message` and holds the answer until the client acks it or `patience` runs out.
async fn await_ack(
    registry: &Registry,
    name: &str,
    client: &Arc<crate::registry::Client>,
    message: &Value,
    patience: Duration,
) -> NodeAnswer {
    let mut wait = match registry.send_awaiting_ack_from(client, message) {
        Ok(wait) => wait,
        Err(SendError::NotFound) => return NodeAnswer::NotFound,
        Err(SendError::Backlogged) => return NodeAnswer::Backlogged,
    };
    let id = wait.id().to_owned();
    let (outcome, answer) = match tokio::time::timeout(patience, wait.acked()).await {
        Ok(Ok(())) => ("acked", NodeAnswer::Acked { id }),
        Ok(Err(_gone)) => (
            "disconnected",
            NodeAnswer::AckTimeout {
                detail: format!("{name:?} disconnected before acknowledging message {id}"),
            },
        ),
        Err(_elapsed) => (
            "timeout",
            NodeAnswer::AckTimeout {
                detail: format!(
                    "{name:?} did not acknowledge message {id} within {} ms",
                    patience.as_millis()
                ),
            },
        ),
    };
    registry
        .metrics()
        .ack_waits
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    answer
}

impl Answered for AllCall {
    type Answer = AllAnswer;

    fn at_once(self, membership: &Membership) -> Result<AllAnswer, AllCall> {
        let registry = &membership.registry;
        let node = &membership.node.id;
        Ok(match self {
            AllCall::List {
                prefix,
                named,
                after,
                want,
            } => {
                let query = ListQuery {
                    prefix,
                    named,
                    after: None,
                    offset: 0,
                    limit: want,
                };
                let listing = crate::directory::local_page(registry, node, &query, after.as_ref());
                AllAnswer::Clients {
                    total: listing.total,
                    sessions: listing.page.iter().map(|l| l.client.session()).collect(),
                    clients: listing
                        .page
                        .iter()
                        .map(|listed| ClientView::listed(listed, node))
                        .collect(),
                    more: listing.more,
                }
            }
            AllCall::Groups { prefix } => {
                let (_, groups) = registry.group_page(&prefix, 0, usize::MAX);
                AllAnswer::Groups {
                    groups: groups
                        .into_iter()
                        .map(|(name, members)| (name.to_string(), members))
                        .collect(),
                }
            }
            AllCall::GroupMembers { group, want } => {
                let (total, page) = registry.group_members(&group, 0, want);
                AllAnswer::Clients {
                    total,
                    sessions: page.iter().map(|l| l.client.session()).collect(),
                    clients: page
                        .iter()
                        .map(|listed| ClientView::listed(listed, node))
                        .collect(),
                    more: total > want,
                }
            }
            // Deliveries to every client run off the runtime.
            waits @ (AllCall::Broadcast { .. } | AllCall::GroupSend { .. }) => return Err(waits),
        })
    }

    async fn later(self, membership: Arc<Membership>) -> AllAnswer {
        let registry = membership.registry.clone();
        match self {
            AllCall::Broadcast { id, message } => reached(
                tokio::task::spawn_blocking(move || registry.broadcast_as(id, &message)).await,
            ),
            AllCall::GroupSend { id, group, message } => reached(
                tokio::task::spawn_blocking(move || {
                    registry.send_to_group_as(id, &group, &message)
                })
                .await,
            ),
            // Answered at once, never here; answered all the same.
            at_once => at_once
                .at_once(&membership)
                .unwrap_or(AllAnswer::Groups { groups: Vec::new() }),
        }
    }
}

fn reached(report: Result<crate::registry::BroadcastReport, tokio::task::JoinError>) -> AllAnswer {
    // Only a bug (a panic) ends a delivery task early: nothing is reported reached.
    let report = report.unwrap_or_else(|_| crate::registry::BroadcastReport {
        id: String::new(),
        recipients: 0,
        queued: 0,
        dropped: 0,
    });
    AllAnswer::Reached {
        recipients: report.recipients,
        queued: report.queued,
        dropped: report.dropped,
    }
}
