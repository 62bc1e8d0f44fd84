//! Groups: named sets of connections that one send reaches together.
//!
//! This module owns the rules (group names follow the client-name rules, a
//! connection holds at most `--max-groups-per-client` groups, a token's `groups`
//! claim limits what its bearer may join) and the member index (group → members,
//! in connection order) that lets a group send find its recipients without
//! scanning every client. The registry keeps the index under its lock and each
//! client's sorted set next to its name; this module sees neither sockets nor
//! HTTP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::protocol::{ErrorCode, FrameError, validate_name};

/// Why a group change was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupsError {
    /// A name breaks the name rules, or the set would be too large.
    #[error("{0}")]
    Invalid(String),
    /// The client's token does not allow a group it asked for.
    #[error("{0}")]
    Forbidden(String),
    /// No live client has that name (or the connection is closing).
    #[error("no live client has that name")]
    NotFound,
}

impl GroupsError {
    /// The `error` frame that answers a TCP client's refused change.
    pub fn to_frame_error(&self) -> FrameError {
        let code = match self {
            GroupsError::Forbidden(_) => ErrorCode::ForbiddenGroup,
            GroupsError::Invalid(_) | GroupsError::NotFound => ErrorCode::InvalidGroups,
        };
        FrameError::new(code, self.to_string())
    }
}

/// Checks every name in `names` and returns them as a set.
pub fn parse_names(names: &[String]) -> Result<BTreeSet<Arc<str>>, GroupsError> {
    names
        .iter()
        .map(|name| match validate_name(name) {
            Ok(()) => Ok(Arc::from(name.as_str())),
            Err(refusal) => Err(GroupsError::Invalid(format!(
                "group {name:?}: {}",
                refusal.detail
            ))),
        })
        .collect()
}

/// A change to one connection's group set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupChange {
    /// The set becomes exactly these (`sync` with `groups`, or `PUT` over HTTP).
    Replace(BTreeSet<Arc<str>>),
    /// Adds these (`join`).
    Join(BTreeSet<Arc<str>>),
    /// Removes these (`leave`).
    Leave(BTreeSet<Arc<str>>),
}

impl GroupChange {
    /// The sorted set that results from applying the change to `current`.
    pub fn apply(&self, current: &[Arc<str>]) -> Vec<Arc<str>> {
        let mut set: BTreeSet<Arc<str>> = match self {
            GroupChange::Replace(_) => BTreeSet::new(),
            _ => current.iter().cloned().collect(),
        };
        match self {
            GroupChange::Replace(names) | GroupChange::Join(names) => {
                set.extend(names.iter().cloned());
            }
            GroupChange::Leave(names) => set.retain(|group| !names.contains(group)),
        }
        set.into_iter().collect()
    }
}

/// The groups a token allows: exact names, and prefixes written `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupClaim {
    patterns: Vec<String>,
}

impl GroupClaim {
    /// A claim allowing `patterns`.
    pub fn new(patterns: Vec<String>) -> GroupClaim {
        GroupClaim { patterns }
    }

    /// Whether the claim allows joining `group`.
    pub fn permits(&self, group: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => group.starts_with(prefix),
                None => pattern == group,
            })
    }
}

/// Who may join what: the hub's limit and, with client authentication, what
/// each connection's token allows.
#[derive(Debug, Clone, Copy)]
pub struct JoinRules<'a> {
    /// Most groups one connection may hold.
    pub max_groups: usize,
    /// Whether clients must authenticate (`--client-auth jwt`).
    pub authenticated: bool,
    /// Whether this connection has authenticated (sent a valid `sync`).
    pub named: bool,
    /// Its token's `groups` claim, if it had one.
    pub claim: Option<&'a GroupClaim>,
}

impl JoinRules<'_> {
    /// Checks going from `current` to `next`; only groups being added need the claim.
    pub fn check(&self, current: &[Arc<str>], next: &[Arc<str>]) -> Result<(), GroupsError> {
        if next.len() > self.max_groups {
            return Err(GroupsError::Invalid(format!(
                "a client may be in at most {} groups",
                self.max_groups
            )));
        }
        if !self.authenticated {
            return Ok(());
        }
        let added = next
            .iter()
            .filter(|group| current.binary_search(group).is_err());
        for group in added {
            if !self.named {
                return Err(GroupsError::Forbidden(format!(
                    "group {group:?}: sync with a token before joining groups"
                )));
            }
            if self.claim.is_some_and(|claim| !claim.permits(group)) {
                return Err(GroupsError::Forbidden(format!(
                    "group {group:?}: the token does not allow it"
                )));
            }
        }
        Ok(())
    }
}

/// The members of every non-empty group, by session number (so in connection
/// order), and the group claims of authenticated connections.
#[derive(Debug)]
pub struct GroupIndex<T> {
    members: BTreeMap<Arc<str>, BTreeMap<u64, T>>,
    claims: HashMap<u64, GroupClaim>,
}

impl<T> Default for GroupIndex<T> {
    fn default() -> Self {
        GroupIndex {
            members: BTreeMap::new(),
            claims: HashMap::new(),
        }
    }
}

impl<T: Clone> GroupIndex<T> {
    /// Moves `session` from the groups in `old` to those in `new` (both sorted).
    pub fn update(&mut self, session: u64, member: &T, old: &[Arc<str>], new: &[Arc<str>]) {
        for group in old.iter().filter(|g| new.binary_search(g).is_err()) {
            self.remove_member(group, session);
        }
        for group in new.iter().filter(|g| old.binary_search(g).is_err()) {
            self.members
                .entry(Arc::clone(group))
                .or_default()
                .insert(session, member.clone());
        }
    }

    /// `names` (groups that have members) as the index's own copies of them, so
    /// that a set kept beside each member does not hold its own copy of every name.
    pub fn shared_names(&self, names: &[Arc<str>]) -> Box<[Arc<str>]> {
        names
            .iter()
            .map(|name| {
                self.members
                    .get_key_value(name)
                    .map_or_else(|| Arc::clone(name), |(shared, _)| Arc::clone(shared))
            })
            .collect()
    }

    /// Forgets a connection that is leaving: its memberships in `groups` and its claim.
    pub fn forget(&mut self, session: u64, groups: &[Arc<str>]) {
        for group in groups {
            self.remove_member(group, session);
        }
        self.claims.remove(&session);
    }

    /// Records the group claim of the token `session` authenticated with.
    pub fn set_claim(&mut self, session: u64, claim: Option<GroupClaim>) {
        match claim {
            Some(claim) => self.claims.insert(session, claim),
            None => self.claims.remove(&session),
        };
    }

    /// The group claim `session` authenticated with, if any.
    pub fn claim(&self, session: u64) -> Option<&GroupClaim> {
        self.claims.get(&session)
    }

    /// The members of `group`, oldest connection first.
    pub fn members(&self, group: &str) -> impl Iterator<Item = &T> {
        self.members.get(group).into_iter().flat_map(|m| m.values())
    }

    /// How many connections are in `group`.
    pub fn count(&self, group: &str) -> usize {
        self.members.get(group).map_or(0, BTreeMap::len)
    }

    /// Groups whose name starts with `prefix`, by name, with their member
    /// counts: the page `offset..offset + limit`, and how many match in all.
    pub fn page(
        &self,
        prefix: &str,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<(Arc<str>, usize)>) {
        let matching = self
            .members
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix));
        let mut total = 0;
        let mut page = Vec::new();
        for (name, members) in matching {
            if total >= offset && page.len() < limit {
                page.push((Arc::clone(name), members.len()));
            }
            total += 1;
        }
        (total, page)
    }

    fn remove_member(&mut self, group: &str, session: u64) {
        if let Some(members) = self.members.get_mut(group) {
            members.remove(&session);
            if members.is_empty() {
                self.members.remove(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<Arc<str>> {
        names.iter().map(|name| Arc::from(*name)).collect()
    }

    fn sorted(names: &[&str]) -> Vec<Arc<str>> {
        set(names).into_iter().collect()
    }

    #[test]
    fn names_follow_the_client_name_rules() {
        let names = ["b".to_owned(), "a".to_owned(), "a".to_owned()];
        assert_eq!(parse_names(&names), Ok(set(&["a", "b"])));
        for bad in ["", "a/b", "tab\there"] {
            let refused = parse_names(&[bad.to_owned()]).unwrap_err();
            assert!(matches!(refused, GroupsError::Invalid(_)), "{bad:?}");
            assert_eq!(refused.to_frame_error().code, ErrorCode::InvalidGroups);
        }
    }

    #[test]
    fn changes_replace_add_and_remove() {
        let current = sorted(&["a", "b"]);
        assert_eq!(
            GroupChange::Replace(set(&["c"])).apply(&current),
            sorted(&["c"])
        );
        assert_eq!(
            GroupChange::Join(set(&["c", "a"])).apply(&current),
            sorted(&["a", "b", "c"])
        );
        assert_eq!(
            GroupChange::Leave(set(&["a", "z"])).apply(&current),
            sorted(&["b"])
        );
    }

    #[test]
    fn claims_allow_names_and_prefixes() {
        let claim = GroupClaim::new(vec!["kiosks".into(), "floor-*".into()]);
        assert!(claim.permits("kiosks"));
        assert!(claim.permits("floor-2"));
        assert!(!claim.permits("kiosks-2"));
        assert!(!claim.permits("floor"));
    }

    #[test]
    fn rules_limit_the_size_and_check_only_added_groups() {
        let claim = GroupClaim::new(vec!["floor-*".into()]);
        let rules = JoinRules {
            max_groups: 2,
            authenticated: true,
            named: true,
            claim: Some(&claim),
        };
        let current = sorted(&["legacy"]);
        assert_eq!(
            rules.check(&current, &sorted(&["floor-1", "legacy"])),
            Ok(())
        );
        assert!(matches!(
            rules.check(&current, &sorted(&["kiosks", "legacy"])),
            Err(GroupsError::Forbidden(_))
        ));
        assert!(matches!(
            rules.check(&current, &sorted(&["floor-1", "floor-2", "legacy"])),
            Err(GroupsError::Invalid(_))
        ));
        let unnamed = JoinRules {
            named: false,
            claim: None,
            ..rules
        };
        assert!(matches!(
            unnamed.check(&[], &sorted(&["floor-1"])),
            Err(GroupsError::Forbidden(_))
        ));
    }

    #[test]
    fn the_index_tracks_members_in_session_order_and_drops_empty_groups() {
        let mut index = GroupIndex::<&str>::default();
        index.update(2, &"two", &[], &sorted(&["a", "b"]));
        index.update(1, &"one", &[], &sorted(&["a"]));
        assert_eq!(
            index.members("a").copied().collect::<Vec<_>>(),
            ["one", "two"]
        );
        assert_eq!(
            index.page("", 0, 10),
            (2, vec![(Arc::from("a"), 2), (Arc::from("b"), 1)])
        );
        let shared = index.shared_names(&sorted(&["a", "z"]));
        let first_a = index.members.keys().next().unwrap();
        assert!(
            Arc::ptr_eq(&shared[0], first_a),
            "a group's name is the index's own"
        );
        assert_eq!(&*shared[1], "z", "a name the index lacks is kept as given");
        index.update(2, &"two", &sorted(&["a", "b"]), &sorted(&["a"]));
        assert_eq!(index.count("b"), 0);
        assert_eq!(index.page("b", 0, 10), (0, vec![]));
        index.forget(1, &sorted(&["a"]));
        index.forget(2, &sorted(&["a"]));
        assert_eq!(index.page("", 0, 10), (0, vec![]));
    }
}
