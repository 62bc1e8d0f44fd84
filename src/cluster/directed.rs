//! Calls to the one node that holds a name: the directory asks here when the
//! name has no live client on this node.
//!
//! The name table says which node and session hold it (or, for a name called
//! before, the holder that answered then); the call names that session, and a
//! `not_found` answer (the session left or was replaced since) reads the table
//! afresh. A node with no subscription (it died) answers
//! at once through the broker: `not_found`, never a wait for the timeout.

use std::time::Duration;

use serde_json::Value;

use super::calls::{NodeAnswer, NodeCall};
use super::membership::Membership;
use super::names::Holder;
use super::rpc::RpcError;
use crate::directory::{ClientView, Failure};

impl Membership {
    /// Asks the node holding `name` to act on it: `call` builds the call for
    /// the holding session. `Ok(None)` when no live client holds the name.
    pub(crate) async fn call_holder(
        &self,
        name: &str,
        timeout: Duration,
        call: impl Fn(u64) -> NodeCall,
    ) -> Result<Option<NodeAnswer>, Failure> {
        if let Some(holder) = self.holders.get(name) {
            match self
                .call(&holder.node, &call(holder.session), timeout)
                .await
            {
                Ok(NodeAnswer::NotFound) => self.holders.forget(name),
                Ok(answer) => return Ok(Some(answer)),
                // The name may have moved off a node that stopped answering.
                Err(Failure::NodeUnreachable(_)) => self.holders.forget(name),
                Err(failure) => return Err(failure),
            }
        }
        for _ in 0..2 {
            let Some(holder) = self.locate(name).await? else {
                return Ok(None);
            };
            match self
                .call(&holder.node, &call(holder.session), timeout)
                .await?
            {
                NodeAnswer::NotFound => continue,
                answer => {
                    self.holders.remember(name, &holder);
                    return Ok(Some(answer));
                }
            }
        }
        Ok(None)
    }

    /// The client named `name`, wherever it is connected.
    pub(crate) async fn remote_client(&self, name: &str) -> Result<ClientView, Failure> {
        let call = |session| NodeCall::Get {
            name: name.to_owned(),
            session,
        };
        match self
            .call_holder(name, self.settings.rpc_timeout, call)
            .await?
        {
            Some(NodeAnswer::Client(view)) => Ok(view),
            other => Err(unexpected(name, other)),
        }
    }

    /// Pushes `message` to the client named `name` on another node; its id.
    pub(crate) async fn remote_send(&self, name: &str, message: &Value) -> Result<String, Failure> {
        let call = |session| NodeCall::Send {
            name: name.to_owned(),
            session,
            message: message.clone(),
        };
        match self
            .call_holder(name, self.settings.rpc_timeout, call)
            .await?
        {
            Some(NodeAnswer::Sent { id }) => Ok(id),
            other => Err(unexpected(name, other)),
        }
    }

    /// Pushes `message` to the client named `name` on another node and waits
    /// for its ack there; the message id once acked.
    pub(crate) async fn remote_send_awaiting_ack(
        &self,
        name: &str,
        message: &Value,
        patience: Duration,
    ) -> Result<String, Failure> {
        let call = |session| NodeCall::SendAwaitingAck {
            name: name.to_owned(),
            session,
            message: message.clone(),
            patience_ms: patience.as_millis() as u64,
        };
        // The owner holds its answer for as long as the client may take.
        let timeout = patience + self.settings.rpc_timeout;
        match self.call_holder(name, timeout, call).await? {
            Some(NodeAnswer::Acked { id }) => Ok(id),
            other => Err(unexpected(name, other)),
        }
    }

    /// Disconnects the client named `name` on another node.
    pub(crate) async fn remote_kick(&self, name: &str) -> Result<(), Failure> {
        let call = |session| NodeCall::Kick {
            name: name.to_owned(),
            session,
        };
        match self
            .call_holder(name, self.settings.rpc_timeout, call)
            .await?
        {
            Some(NodeAnswer::Done) => Ok(()),
            other => Err(unexpected(name, other)),
        }
    }

    /// Replaces the group set of the client named `name` on another node.
    pub(crate) async fn remote_set_groups(
        &self,
        name: &str,
        groups: Vec<String>,
    ) -> Result<Vec<String>, Failure> {
        let call = |session| NodeCall::SetGroups {
            name: name.to_owned(),
            session,
            groups: groups.clone(),
        };
        match self
            .call_holder(name, self.settings.rpc_timeout, call)
            .await?
        {
            Some(NodeAnswer::Groups { groups }) => Ok(groups),
            other => Err(unexpected(name, other)),
        }
    }

    /// Who holds `name` in the name table, if another node does.
    pub(crate) async fn locate(&self, name: &str) -> Result<Option<Holder>, Failure> {
        let held = self
            .names
            .get(name)
            .await
            .map_err(|err| self.unavailable(&err))?;
        // A name this node holds in the table but not in its registry is a
        // claim finishing or a release on its way: nobody to reach.
        Ok(held
            .map(|(holder, _)| holder)
            .filter(|holder| holder.node != self.node.id))
    }

    /// Sends `call` to node `node`; its answer, or what its silence means.
    pub(crate) async fn call(
        &self,
        node: &str,
        call: &NodeCall,
        timeout: Duration,
    ) -> Result<NodeAnswer, Failure> {
        let started = std::time::Instant::now();
        let outcome = self.rpc.request(node, call, timeout).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(RpcError::NoResponders) => "no_responders",
            Err(RpcError::Timeout) => "timeout",
            Err(RpcError::Refused(_)) => "refused",
            Err(_) => "error",
        };
        self.registry
            .metrics()
            .record_cluster_call(label, started.elapsed());
        match outcome {
            Ok(answer) => Ok(answer),
            // The node is gone: its sessions with it.
            Err(RpcError::NoResponders) => Ok(NodeAnswer::NotFound),
            Err(RpcError::Timeout) => Err(Failure::NodeUnreachable(node.to_owned())),
            Err(RpcError::Broker(detail)) => Err(self.unavailable(&detail)),
            // A node of another release, during a rolling upgrade: the
            // cluster cannot serve this until they match.
            Err(RpcError::Refused(refusal)) if refusal.code == "unsupported_version" => {
                tracing::warn!(%node, detail = %refusal.detail, "a node speaks another protocol version");
                Err(Failure::ClusterUnavailable)
            }
            Err(err) => {
                tracing::warn!(%node, %err, "cluster call failed");
                Err(Failure::Internal)
            }
        }
    }
}

/// The failure an answer other than the one a call expects stands for.
fn unexpected(name: &str, answer: Option<NodeAnswer>) -> Failure {
    match answer {
        None | Some(NodeAnswer::NotFound) => Failure::NotFound(name.to_owned()),
        Some(NodeAnswer::Backlogged) => Failure::Backlogged(name.to_owned()),
        Some(NodeAnswer::AckTimeout { detail }) => Failure::AckTimeout(detail),
        Some(NodeAnswer::InvalidGroups { detail }) => Failure::InvalidGroups(detail),
        Some(other) => {
            tracing::warn!(
                ?other,
                "a node answered a call with the wrong kind of answer"
            );
            Failure::Internal
        }
    }
}
