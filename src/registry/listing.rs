//! Listing live clients: filters and pages, in connection order, by offset or
//! after a cursor (the session of the last client of the previous page).

use std::ops::Bound;
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
    /// Only clients that connected after the one with this session.
    pub after: Option<u64>,
    /// Skip this many matches (after `after`).
    pub offset: usize,
    /// Return at most this many.
    pub limit: usize,
}

/// A page of clients.
#[derive(Debug)]
pub struct Listing {
    /// Clients matching the filters, on all pages (whatever `after` and `offset` say).
    pub total: usize,
    /// This page, oldest connection first.
    pub page: Vec<Listed>,
    /// Whether more matches follow this page.
    pub more: bool,
}

impl Registry {
    /// Live clients matching `query`, oldest first, and how many match in all.
    ///
    /// Each comes with the name it held while the registry was locked: read
    /// later, a name could already have moved to another connection (which
    /// would then show twice) or be a replaced connection's last name. Without
    /// filters a page costs the same however deep it is.
    pub fn list(&self, query: &ListQuery) -> Listing {
        let clients = self.lock();
        let start = query.after.map_or(Bound::Unbounded, Bound::Excluded);
        let candidates = clients.by_session.range((start, Bound::Unbounded));
        let prefix = query.prefix.as_deref().filter(|prefix| !prefix.is_empty());
        if prefix.is_none() && query.named.is_none() {
            let mut page: Vec<Listed> = candidates
                .skip(query.offset)
                .take(query.limit.saturating_add(1))
                .map(|(_, client)| Listed {
                    client: Arc::clone(client),
                    name: client.name(),
                })
                .collect();
            let more = page.len() > query.limit;
            page.truncate(query.limit);
            return Listing {
                total: clients.by_session.len(),
                page,
                more,
            };
        }
        let wanted = |client: &Client| {
            let name = lock(&client.name);
            let wanted = query.named.is_none_or(|named| named == name.is_some())
                && prefix
                    .is_none_or(|prefix| name.as_deref().is_some_and(|n| n.starts_with(prefix)));
            wanted.then(|| name.clone())
        };
        let mut total = 0;
        let mut skipped = 0;
        let mut page = Vec::new();
        let mut more = false;
        for (&session, client) in &clients.by_session {
            let Some(name) = wanted(client) else {
                continue;
            };
            total += 1;
            if query.after.is_some_and(|after| session <= after) {
                continue;
            }
            if skipped < query.offset {
                skipped += 1;
            } else if page.len() < query.limit {
                page.push(Listed {
                    client: Arc::clone(client),
                    name,
                });
            } else {
                more = true;
            }
        }
        Listing { total, page, more }
    }
}
