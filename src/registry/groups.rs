//! Group membership and group sends: the registry's verbs over the member index
//! of [`crate::groups`], which it keeps under its lock next to each client's set.

use std::sync::Arc;

use serde_json::Value;

use super::{BroadcastReport, Client, Listed, Registry, lock};
use crate::events::EventKind;
use crate::groups::{GroupChange, GroupClaim, GroupsError, JoinRules};
use crate::protocol::{HubFrame, Scope};

/// Who asks for a group change, which decides whether a token's claim applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asker {
    /// The client itself (`sync`, `join`, `leave`): its token's claim applies.
    Client,
    /// An HTTP caller, trusted with any group.
    Operator,
}

impl Registry {
    /// Whether `change` would be allowed for `client` once it has authenticated
    /// with a token carrying `claim`; checked before a `sync` registers anything.
    pub fn check_groups(
        &self,
        client: &Client,
        claim: Option<&GroupClaim>,
        change: &GroupChange,
    ) -> Result<(), GroupsError> {
        let current = client.groups();
        let rules = JoinRules {
            max_groups: self.inner.max_groups,
            authenticated: self.inner.client_auth.is_some(),
            named: true,
            claim,
        };
        rules.check(&current, &change.apply(&current))
    }

    /// Keeps the `groups` claim of the token `client` authenticated with.
    pub fn set_group_claim(&self, client: &Client, claim: Option<GroupClaim>) {
        let mut clients = self.lock();
        if clients.by_session.contains_key(&client.session) {
            clients.groups.set_claim(client.session, claim);
        }
    }

    /// Applies a change the client asked for; returns its sorted set.
    pub fn change_groups(
        &self,
        client: &Arc<Client>,
        change: &GroupChange,
    ) -> Result<Vec<Arc<str>>, GroupsError> {
        self.apply_groups(client, change, Asker::Client)
            .map(|(groups, _)| groups)
    }

    /// Replaces the set of the client named `name` over HTTP and, when that
    /// changes it, tells the client with a `groups` frame; returns the set.
    pub fn set_groups_of(
        &self,
        name: &str,
        change: &GroupChange,
    ) -> Result<Vec<Arc<str>>, GroupsError> {
        let client = self.get(name).ok_or(GroupsError::NotFound)?;
        self.set_groups_for(&client, change)
    }

    /// Replaces `client`'s set as [`Registry::set_groups_of`] does.
    pub fn set_groups_for(
        &self,
        client: &Arc<Client>,
        change: &GroupChange,
    ) -> Result<Vec<Arc<str>>, GroupsError> {
        let (groups, changed) = self.apply_groups(client, change, Asker::Operator)?;
        if changed {
            self.reply(client, &HubFrame::Groups { groups: &groups }.encode());
        }
        Ok(groups)
    }

    /// The set after `change`, and whether it differs from before.
    fn apply_groups(
        &self,
        client: &Arc<Client>,
        change: &GroupChange,
        asker: Asker,
    ) -> Result<(Vec<Arc<str>>, bool), GroupsError> {
        let next = {
            let mut clients = self.lock();
            if !clients.by_session.contains_key(&client.session) {
                return Err(GroupsError::NotFound);
            }
            let mut current = lock(&client.groups);
            let next = change.apply(&current);
            if next[..] == current[..] {
                return Ok((next, false));
            }
            let rules = JoinRules {
                max_groups: self.inner.max_groups,
                authenticated: self.inner.client_auth.is_some() && asker == Asker::Client,
                named: client.name().is_some(),
                claim: clients.groups.claim(client.session),
            };
            rules.check(&current, &next)?;
            clients
                .groups
                .update(client.session, client, &current, &next);
            *current = clients.groups.shared_names(&next);
            next
        };
        self.emit(
            client,
            EventKind::Groups {
                groups: next.clone(),
            },
        );
        Ok((next, true))
    }

    /// Pushes `message` to every member of `group`, serialized once for all.
    pub fn send_to_group(&self, group: &str, message: &Value) -> BroadcastReport {
        self.send_to_group_as(self.next_message_id(), group, message)
    }

    /// Pushes `message` as message `id` (issued elsewhere: a cluster-wide send)
    /// to every member of `group` on this node.
    pub fn send_to_group_as(&self, id: String, group: &str, message: &Value) -> BroadcastReport {
        let recipients: Vec<Arc<Client>> = self.lock().groups.members(group).cloned().collect();
        let frame = HubFrame::Message {
            id: &id,
            scope: Scope::Group,
            group: Some(group),
            message,
        }
        .encode();
        let report = self.fan_out(&recipients, &frame, id, Scope::Group);
        self.inner.metrics.group_sends.inc();
        self.inner
            .metrics
            .group_fanout
            .observe(report.recipients as f64);
        report
    }

    /// Groups whose name starts with `prefix`, by name, with their member
    /// counts: one page, and how many match in all.
    pub fn group_page(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<(Arc<str>, usize)>) {
        self.lock().groups.page(prefix, offset, limit)
    }

    /// One page of the members of `group`, oldest first, and how many it has.
    pub fn group_members(&self, group: &str, offset: usize, limit: usize) -> (usize, Vec<Listed>) {
        let clients = self.lock();
        let page = clients
            .groups
            .members(group)
            .skip(offset)
            .take(limit)
            .map(|client| Listed {
                client: Arc::clone(client),
                name: client.name(),
            })
            .collect();
        (clients.groups.count(group), page)
    }
}
