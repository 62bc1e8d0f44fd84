//! Listing live clients: filters and pages, in connection order.

use std::sync::Arc;

use super::{Client, Registry, lock};

/// A client as [`Registry::list`] saw it.
#[derive(Debug)]
pub struct Listed {
    /// The client.
    pub client: Arc<Client>,
    /// Its name when it was listed.
    pub name: Option<Arc<str>>,
}

/// Which clients `list` returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only names starting with this.
    pub prefix: Option<String>,
    /// Only named (`true`) or unnamed (`false`) clients.
    pub named: Option<bool>,
    /// Skip this many matches.
    pub offset: usize,
    /// Return at most this many.
    pub limit: usize,
}

impl Registry {
    /// Live clients matching `query`, oldest first, and how many match in all.
    ///
    /// Each comes with the name it held while the registry was locked: read
    /// later, a name could already have moved to another connection (which
    /// would then show twice) or be a replaced connection's last name.
    pub fn list(&self, query: &ListQuery) -> (usize, Vec<Listed>) {
        let clients = self.lock();
        let listed = |client: &Arc<Client>| Listed {
            client: Arc::clone(client),
            name: client.name(),
        };
        let prefix = query.prefix.as_deref().filter(|prefix| !prefix.is_empty());
        if prefix.is_none() && query.named.is_none() {
            let total = clients.by_session.len();
            let page = clients
                .by_session
                .values()
                .skip(query.offset)
                .take(query.limit);
            return (total, page.map(listed).collect());
        }
        let mut total = 0;
        let mut page = Vec::new();
        for client in clients.by_session.values() {
            let name = lock(&client.name);
            let wanted = query.named.is_none_or(|named| named == name.is_some())
                && prefix
                    .is_none_or(|prefix| name.as_deref().is_some_and(|n| n.starts_with(prefix)));
            if wanted {
                if total >= query.offset && page.len() < query.limit {
                    page.push(Listed {
                        client: Arc::clone(client),
                        name: name.clone(),
                    });
                }
                total += 1;
            }
        }
        (total, page)
    }
}
