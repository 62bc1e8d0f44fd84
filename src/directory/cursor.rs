//! The `after` cursor of `GET /clients`: where the previous page ended.
//!
//! Clients are listed node by node (by node id), each node's in connection
//! order, so a position is a node id and a session number on it. Each node can
//! then start its part of a page from the cursor without reading what comes
//! before it, on one node as in a cluster, and no order depends on clocks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A position in the listing: after session `session` of node `node`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    /// The node id (node ids hold no `.`).
    pub node: String,
    /// The session number on that node.
    pub session: u64,
}

impl Cursor {
    /// Which of node `node`'s sessions come after this cursor: `Some(None)`
    /// for all of them, `Some(Some(n))` for those after `n`, `None` for none.
    pub fn sessions_after_on(&self, node: &str) -> Option<Option<u64>> {
        match node.cmp(self.node.as_str()) {
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => Some(Some(self.session)),
            std::cmp::Ordering::Greater => Some(None),
        }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.node, self.session)
    }
}

/// A string that is not a cursor this hub gave out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("after must be the next of an earlier page, not {0:?}")]
pub struct BadCursor(String);

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(text: &str) -> Result<Cursor, BadCursor> {
        let bad = || BadCursor(text.to_owned());
        let (node, session) = text.rsplit_once('.').ok_or_else(bad)?;
        if node.is_empty() || node.contains('.') {
            return Err(bad());
        }
        Ok(Cursor {
            node: node.to_owned(),
            session: session.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_what_it_prints() {
        let cursor = Cursor {
            node: "hub-a-3f9c01d2".into(),
            session: 42,
        };
        assert_eq!(cursor.to_string().parse(), Ok(cursor));
        for bad in ["", "42", "hub.", ".42", "a.b.42", "hub.-1", "hub.x"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn nodes_before_the_cursor_are_done_and_nodes_after_it_start_over() {
        let cursor = Cursor {
            node: "b".into(),
            session: 7,
        };
        assert_eq!(cursor.sessions_after_on("a"), None);
        assert_eq!(cursor.sessions_after_on("b"), Some(Some(7)));
        assert_eq!(cursor.sessions_after_on("c"), Some(None));
    }
}
