//! Calls every live node answers: listings and fan-outs across the cluster,
//! merged here. A node that does not answer by the deadline is named in the
//! result (`missingNodes`), never silently left out.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tokio::time::Instant;

use super::answer::ALL;
use super::calls::{AllAnswer, AllCall, NodeAnswer, NodeCall};
use super::membership::Membership;
use super::nodes::NodeRecord;
use crate::directory::{ClientView, Cursor, Failure, NodeView};
use crate::registry::{BroadcastReport, Delivery, ListQuery};
use crate::time_format::rfc3339;

/// What every node answered, and which did not.
#[derive(Debug)]
pub(crate) struct Gathered {
    /// Each answering node's id and answer, by node id.
    pub answers: Vec<(String, AllAnswer)>,
    /// Live nodes that did not answer in time, sorted.
    pub missing: Vec<String>,
}

/// A page of clients merged from every node.
#[derive(Debug)]
pub(crate) struct MergedPage {
    /// Matches on the nodes that answered.
    pub total: usize,
    /// The page.
    pub clients: Vec<ClientView>,
    /// The cursor after the page, when more follow.
    pub next: Option<Cursor>,
    /// Nodes that did not answer.
    pub missing: Vec<String>,
}

impl Membership {
    /// Asks every live node `call` and waits up to `timeout` for their answers.
    pub(crate) async fn gather(
        &self,
        call: &AllCall,
        timeout: std::time::Duration,
    ) -> Result<Gathered, Failure> {
        let expected = self.live_ids();
        let deadline = Instant::now() + timeout;
        let gathered = self
            .rpc
            .scatter::<_, AllAnswer>(ALL, call, &expected, deadline)
            .await
            .map_err(|err| self.unavailable(&err))?;
        let mut answers = gathered.replies;
        answers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Gathered {
            answers,
            missing: gathered.missing,
        })
    }

    /// Clients matching `query` after `after`, node by node.
    pub(crate) async fn list_all(
        &self,
        query: &ListQuery,
        after: Option<&Cursor>,
    ) -> Result<MergedPage, Failure> {
        let want = query.offset.saturating_add(query.limit);
        let call = AllCall::List {
            prefix: query.prefix.clone(),
            named: query.named,
            after: after.cloned(),
            want,
        };
        let gathered = self.gather(&call, self.settings.list_timeout).await?;
        Ok(merge_pages(gathered, query.offset, query.limit))
    }

    /// A page of `group`'s members across the cluster.
    pub(crate) async fn group_members_all(
        &self,
        group: &str,
        offset: usize,
        limit: usize,
    ) -> Result<MergedPage, Failure> {
        let call = AllCall::GroupMembers {
            group: group.to_owned(),
            want: offset.saturating_add(limit),
        };
        let gathered = self.gather(&call, self.settings.list_timeout).await?;
        Ok(merge_pages(gathered, offset, limit))
    }

    /// Groups with members across the cluster whose name starts with `prefix`:
    /// one page by name, how many there are, and the nodes that did not answer.
    pub(crate) async fn groups_all(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(usize, Vec<(String, usize)>, Vec<String>), Failure> {
        let call = AllCall::Groups {
            prefix: prefix.to_owned(),
        };
        let gathered = self.gather(&call, self.settings.list_timeout).await?;
        let mut members: BTreeMap<String, usize> = BTreeMap::new();
        for (_, answer) in gathered.answers {
            if let AllAnswer::Groups { groups } = answer {
                for (group, count) in groups {
                    *members.entry(group).or_default() += count;
                }
            }
        }
        let total = members.len();
        let page = members.into_iter().skip(offset).take(limit).collect();
        Ok((total, page, gathered.missing))
    }

    /// Delivers `message` to every live client of the cluster, or to every
    /// member of `group`, under one id.
    pub(crate) async fn fan_out_all(
        &self,
        group: Option<String>,
        message: Value,
    ) -> Result<(BroadcastReport, Vec<String>), Failure> {
        let (_, id) = self.registry.issue_message_id();
        let call = match group {
            None => AllCall::Broadcast {
                id: id.clone(),
                message,
            },
            Some(group) => AllCall::GroupSend {
                id: id.clone(),
                group,
                message,
            },
        };
        let gathered = self.gather(&call, self.settings.rpc_timeout).await?;
        let mut report = BroadcastReport {
            id,
            recipients: 0,
            queued: 0,
            dropped: 0,
        };
        for (_, answer) in gathered.answers {
            if let AllAnswer::Reached {
                recipients,
                queued,
                dropped,
            } = answer
            {
                report.recipients += recipients;
                report.queued += queued;
                report.dropped += dropped;
            }
        }
        Ok((report, gathered.missing))
    }

    /// The live nodes, this one first read from its own registry.
    pub(crate) async fn nodes_all(&self) -> Vec<NodeView> {
        let live: Vec<NodeRecord> = super::membership::lock(&self.live).clone();
        let mut views: Vec<NodeView> = live
            .into_iter()
            .filter(|record| record.id != self.node.id)
            .map(|record| NodeView {
                id: record.id,
                name: record.name,
                http_addr: record.http_addr,
                started_at: rfc3339(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.started_at),
                ),
                clients: usize::try_from(record.clients).unwrap_or(usize::MAX),
            })
            .collect();
        views.push(NodeView::of(&self.node, self.registry.len()));
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// Delivers bulk items to the names this node does not hold: one call per
    /// holding node. `pending[i]` lists, for item `i`, the positions (within
    /// the item's names) still to deliver; answers come back in their place
    /// as `(id, delivery)`.
    pub(crate) async fn bulk_remote(
        &self,
        items: &[(Vec<String>, Value)],
        pending: &[Vec<usize>],
    ) -> Result<HashMap<(usize, usize), (String, Delivery)>, Failure> {
        // Which node holds each pending name: table reads, all at once.
        let lookups = pending.iter().enumerate().flat_map(|(item, positions)| {
            positions.iter().map(move |&position| {
                let name = items[item].0[position].clone();
                async move { (item, position, self.locate(&name).await) }
            })
        });
        let located = futures_util::future::join_all(lookups).await;
        let mut by_node: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (item, position, holder) in located {
            if let Some(holder) = holder? {
                by_node
                    .entry(holder.node)
                    .or_default()
                    .push((item, position));
            }
        }
        let calls = by_node.into_iter().map(|(node, places)| async move {
            // One call item per original item, with that node's names only.
            let mut grouped: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (item, position) in &places {
                grouped.entry(*item).or_default().push(*position);
            }
            let call_items: Vec<(Vec<String>, Value)> = grouped
                .iter()
                .map(|(&item, positions)| {
                    let names = positions
                        .iter()
                        .map(|&p| items[item].0[p].clone())
                        .collect();
                    (names, items[item].1.clone())
                })
                .collect();
            let answer = self
                .call(
                    &node,
                    &NodeCall::Bulk { items: call_items },
                    self.settings.rpc_timeout,
                )
                .await;
            let order: Vec<(usize, usize)> = grouped
                .into_iter()
                .flat_map(|(item, positions)| positions.into_iter().map(move |p| (item, p)))
                .collect();
            (order, answer)
        });
        let mut delivered = HashMap::new();
        for (order, answer) in futures_util::future::join_all(calls).await {
            let results = match answer? {
                NodeAnswer::Bulk { results } => results,
                // A node that died meanwhile holds none of them.
                _ => continue,
            };
            for (place, (id, status)) in order.into_iter().zip(results) {
                let delivery = match status.as_str() {
                    "queued" => Delivery::Queued,
                    "backlogged" => Delivery::Backlogged,
                    _ => Delivery::NotFound,
                };
                delivered.insert(place, (id, delivery));
            }
        }
        Ok(delivered)
    }
}

/// Concatenates the nodes' pages in node order and cuts `offset..offset+limit`.
fn merge_pages(gathered: Gathered, offset: usize, limit: usize) -> MergedPage {
    let mut total = 0;
    let mut rows: Vec<(ClientView, Cursor)> = Vec::new();
    let mut any_more = false;
    for (node, answer) in gathered.answers {
        if let AllAnswer::Clients {
            total: node_total,
            clients,
            sessions,
            more,
        } = answer
        {
            total += node_total;
            any_more |= more;
            rows.extend(clients.into_iter().zip(sessions).map(|(client, session)| {
                let cursor = Cursor {
                    node: node.clone(),
                    session,
                };
                (client, cursor)
            }));
        }
    }
    let more = any_more || rows.len() > offset.saturating_add(limit);
    let page: Vec<(ClientView, Cursor)> = rows.into_iter().skip(offset).take(limit).collect();
    let next = page
        .last()
        .filter(|_| more)
        .map(|(_, cursor)| cursor.clone());
    MergedPage {
        total,
        clients: page.into_iter().map(|(client, _)| client).collect(),
        next,
        missing: gathered.missing,
    }
}
