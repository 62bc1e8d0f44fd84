//! Who this hub is: its node id, name, HTTP address and start time, as
//! `GET /nodes` and each client's `node` report them.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::cluster::nodes::new_node_id;
use crate::config::is_node_name;
use crate::time_format::rfc3339;

/// This hub's identity, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// `<name>-<8 hex digits>`, new at every start, so that a restarted hub is
    /// never taken for an earlier run of itself.
    pub id: String,
    /// `--node-name`, or the host name (with `-` for what a node name cannot hold).
    pub name: String,
    /// The address the HTTP API is bound to.
    pub http_addr: SocketAddr,
    /// When the hub started.
    pub started_at: SystemTime,
}

impl Node {
    /// A new identity for a hub called `name` serving its API on `http_addr`.
    pub fn new(name: Option<&str>, http_addr: SocketAddr) -> Node {
        let name = name.map_or_else(host_name, str::to_owned);
        Node {
            id: new_node_id(&name),
            name,
            http_addr,
            started_at: SystemTime::now(),
        }
    }
}

/// A live node as `GET /nodes` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "hub-a-3f9c01d2", "name": "hub-a", "httpAddr": "10.0.0.5:8080",
    "startedAt": "2026-11-25T18:40:30.123Z", "clients": 1200
}))]
pub struct NodeView {
    /// Node id: the name and 8 hex digits, new at every start.
    pub id: String,
    /// Node name (`--node-name`, or the host name).
    pub name: String,
    /// Where its HTTP API listens.
    pub http_addr: String,
    /// When it started (RFC 3339 UTC with milliseconds).
    #[schema(format = DateTime)]
    pub started_at: String,
    /// Live TCP clients on it.
    pub clients: usize,
}

impl NodeView {
    /// `node` as it is listed, holding `clients` clients.
    pub fn of(node: &Node, clients: usize) -> NodeView {
        NodeView {
            id: node.id.clone(),
            name: node.name.clone(),
            http_addr: node.http_addr.to_string(),
            started_at: rfc3339(node.started_at),
            clients,
        }
    }
}

/// The machine's host name made a valid node name (`web-1.example.com`
/// becomes `web-1-example-com`), or `tcphub` when it has none readable.
pub(crate) fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if is_node_name(&name) {
        name
    } else {
        "tcphub".to_owned()
    }
}
