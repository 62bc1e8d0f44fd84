//! Property tests of groups: `join` and `leave` frames carry exactly the names
//! sent, and any sequence of changes leaves the member index equal to the
//! sets the changes describe, with every set sorted, duplicate-free and within
//! the limit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;
use tcphub::groups::{GroupChange, GroupIndex, JoinRules};
use tcphub::protocol::{ClientFrame, ErrorCode};

const MAX_GROUPS: usize = 4;

fn names() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(any::<String>(), 0..6)
}

/// A few group names, so that changes overlap often.
fn small_set() -> impl Strategy<Value = BTreeSet<Arc<str>>> {
    prop::collection::btree_set(
        prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]),
        0..4,
    )
    .prop_map(|set| set.into_iter().map(Arc::from).collect())
}

fn change() -> impl Strategy<Value = (u64, GroupChange)> {
    let session = 1..4u64;
    let change = prop_oneof![
        small_set().prop_map(GroupChange::Join),
        small_set().prop_map(GroupChange::Leave),
        small_set().prop_map(GroupChange::Replace),
    ];
    (session, change)
}

proptest! {
    #[test]
    fn join_and_leave_frames_carry_exactly_the_names_sent(groups in names()) {
        let join = ClientFrame::from_value(json!({"type": "join", "groups": groups}));
        prop_assert_eq!(join, Ok(ClientFrame::Join { groups: groups.clone() }));
        let leave = ClientFrame::from_value(json!({"type": "leave", "groups": groups}));
        prop_assert_eq!(leave, Ok(ClientFrame::Leave { groups }));
    }

    #[test]
    fn non_string_groups_are_invalid_frames(n in any::<i64>(), kind in prop::sample::select(vec!["join", "leave"])) {
        let frame = ClientFrame::from_value(json!({"type": kind, "groups": ["ok", n]}));
        prop_assert_eq!(frame.map_err(|e| e.code), Err(ErrorCode::InvalidFrame));
    }

    #[test]
    fn the_index_matches_the_sets_after_any_changes(changes in prop::collection::vec(change(), 0..40)) {
        let mut index = GroupIndex::<u64>::default();
        let mut sets: BTreeMap<u64, Vec<Arc<str>>> = BTreeMap::new();
        let rules = JoinRules { max_groups: MAX_GROUPS, authenticated: false, named: false, claim: None };
        for (session, change) in changes {
            let current = sets.get(&session).cloned().unwrap_or_default();
            let next = change.apply(&current);
            prop_assert!(next.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
            if rules.check(&current, &next).is_err() {
                prop_assert!(next.len() > MAX_GROUPS);
                continue;
            }
            index.update(session, &session, &current, &next);
            sets.insert(session, next);
        }
        for group in ["a", "b", "c", "d", "e", "f"] {
            let members: Vec<u64> = index.members(group).copied().collect();
            let want: Vec<u64> = sets
                .iter()
                .filter(|(_, set)| set.iter().any(|g| &**g == group))
                .map(|(session, _)| *session)
                .collect();
            prop_assert_eq!(index.count(group), want.len());
            prop_assert_eq!(members, want);
        }
        let (total, _) = index.page("", 0, 100);
        let in_use: BTreeSet<&Arc<str>> = sets.values().flatten().collect();
        prop_assert_eq!(total, in_use.len());
    }
}
