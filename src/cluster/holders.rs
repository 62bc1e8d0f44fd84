//! Who held a name the last time this node called it on another node, so that
//! a send to a name held elsewhere is one call rather than a read of the name
//! table and a call.
//!
//! An entry is a guess, never trusted further than one call: the call names
//! the holder's session, and a node that no longer has that session (the
//! client left or was replaced, the node restarted or died) answers
//! `not_found`, after which the caller forgets the entry and reads the table.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::names::Holder;

/// Entries kept at most; past it the cache starts over (a send then reads the
/// table, as it would with no cache). About 100 bytes an entry.
const CAPACITY: usize = 65_536;

/// Recent holders of names on other nodes.
#[derive(Debug, Default)]
pub(super) struct HolderCache {
    holders: Mutex<HashMap<Box<str>, Holder>>,
}

impl HolderCache {
    /// The holder last seen for `name`, if any.
    pub(super) fn get(&self, name: &str) -> Option<Holder> {
        self.lock().get(name).cloned()
    }

    /// Notes that `holder` answered for `name`.
    pub(super) fn remember(&self, name: &str, holder: &Holder) {
        let mut holders = self.lock();
        if holders.len() >= CAPACITY && !holders.contains_key(name) {
            holders.clear();
        }
        holders.insert(name.into(), holder.clone());
    }

    /// Drops the entry of `name`: its holder no longer answers for it.
    pub(super) fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Drops every entry of a node not in `live`: it left the cluster.
    pub(super) fn keep_nodes(&self, live: &HashSet<String>) {
        self.lock().retain(|_, holder| live.contains(&holder.node));
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Box<str>, Holder>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(node: &str, session: u64) -> Holder {
        Holder {
            node: node.to_owned(),
            session,
            since: 0,
        }
    }

    #[test]
    fn remembers_forgets_and_starts_over_when_full() {
        let cache = HolderCache::default();
        cache.remember("a", &holder("n1", 1));
        cache.remember("b", &holder("n2", 2));
        assert_eq!(cache.get("a"), Some(holder("n1", 1)));
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
        cache.keep_nodes(&HashSet::from(["n1".to_owned()]));
        assert_eq!(cache.get("b"), None);

        for n in 0..CAPACITY {
            cache.remember(&n.to_string(), &holder("n1", n as u64));
        }
        assert_eq!(cache.lock().len(), CAPACITY);
        cache.remember("0", &holder("n1", 7));
        assert_eq!(
            cache.lock().len(),
            CAPACITY,
            "a known name replaces its entry"
        );
        cache.remember("one more", &holder("n1", 1));
        assert_eq!(cache.lock().len(), 1);
    }
}
