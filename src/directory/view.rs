//! A client as the API shows it: a plain record, the same whether the client
//! is connected to this node or (in a cluster) to another.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::registry::{Client, Listed};
use crate::time_format::rfc3339;

/// A live TCP client.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "id": "c7", "name": "Client-1", "peer": "127.0.0.1:50312",
    "connectedAt": "2026-11-25T18:40:30.123Z", "lastActiveAt": "2026-11-25T18:40:33.125Z",
    "framesIn": 2, "framesOut": 1, "bytesIn": 141, "bytesOut": 55, "queueLen": 0, "dropped": 0,
    "groups": ["floor-2", "kiosks"], "node": "hub-a-3f9c01d2"
}))]
pub struct ClientView {
    /// Session id, unique for the process.
    pub id: String,
    /// Registered name; null until the client sends `sync`.
    #[schema(required = true)]
    pub name: Option<String>,
    /// Remote address, `ip:port`.
    pub peer: String,
    /// When it connected: RFC 3339 UTC with milliseconds, `2026-11-25T18:40:30.120Z`.
    #[schema(format = DateTime)]
    pub connected_at: String,
    /// When it last sent a frame, or connected (RFC 3339 UTC with milliseconds).
    #[schema(format = DateTime)]
    pub last_active_at: String,
    /// Frames received from it.
    pub frames_in: u64,
    /// Frames written to it.
    pub frames_out: u64,
    /// Bytes received from it.
    pub bytes_in: u64,
    /// Bytes written to it.
    pub bytes_out: u64,
    /// Frames waiting in its outbound queue.
    pub queue_len: usize,
    /// Pushed messages dropped because its queue was full.
    pub dropped: u64,
    /// The groups it is in, sorted.
    pub groups: Vec<String>,
    /// The id of the node it is connected to (see `GET /nodes`).
    pub node: String,
}

impl ClientView {
    /// The view of `listed` on node `node`, under the name it held when listed.
    pub fn listed(listed: &Listed, node: &str) -> ClientView {
        ClientView::named(&listed.client, listed.name.clone(), node)
    }

    /// The view of `client` on node `node` under `name`, the name it held when
    /// it was looked up.
    pub fn named(client: &Client, name: Option<Arc<str>>, node: &str) -> ClientView {
        let stats = client.stats();
        ClientView {
            id: client.id(),
            name: name.map(|name| name.to_string()),
            peer: client.peer().to_string(),
            connected_at: rfc3339(client.connected_at()),
            last_active_at: rfc3339(client.last_active_at()),
            frames_in: stats.frames_in.load(Ordering::Relaxed),
            frames_out: stats.frames_out.load(Ordering::Relaxed),
            bytes_in: stats.bytes_in.load(Ordering::Relaxed),
            bytes_out: stats.bytes_out.load(Ordering::Relaxed),
            queue_len: client.queue_len(),
            dropped: stats.dropped.load(Ordering::Relaxed),
            groups: client.groups().iter().map(|g| g.to_string()).collect(),
            node: node.to_owned(),
        }
    }
}
