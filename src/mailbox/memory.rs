//! The stored messages of every name, in memory: what delivery, listing and
//! expiry read. With a data dir this is the index in front of the database,
//! loaded from it at start; without one it is the whole mailbox.
//!
//! A message is appended when a send reserves its place (so that the limits
//! count it and the order is the order of the sends) and becomes visible once
//! it is durable. Delivery stops at the first message that is not yet, so a
//! name's messages always arrive in the order they were stored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

/// One stored message.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its number, the `n` of its id `m<n>`.
    pub number: u64,
    /// The message as the sender gave it.
    pub message: Arc<Value>,
    /// Bytes of its JSON text.
    pub size: u64,
    /// When it was stored, in milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// When it expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// Kept until the client acks it, rather than removed once delivered.
    pub until_ack: bool,
    /// Committed to the store (always, without a data dir).
    pub durable: bool,
    /// The session it was last delivered to, if any.
    pub delivered_to: Option<u64>,
}

/// A message taken or offered for delivery.
#[derive(Debug)]
pub struct Offered {
    /// Its number.
    pub number: u64,
    /// The message.
    pub message: Arc<Value>,
    /// Whether an earlier session got it already.
    pub redelivered: bool,
    /// Whether it stays stored until acked.
    pub until_ack: bool,
}

/// One name's stored messages, in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The name.
    pub name: Arc<str>,
    /// How many messages it has stored.
    pub pending: usize,
    /// Bytes of their JSON text.
    pub bytes: u64,
    /// When the oldest was stored, in milliseconds since the Unix epoch.
    pub oldest_ms: u64,
}

/// Why a message was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The name holds `--mailbox-capacity` messages already.
    NameFull,
    /// All mailboxes hold `--mailbox-max-bytes` already.
    BytesFull,
}

/// Every name's stored messages, oldest first.
#[derive(Debug, Default)]
pub struct Boxes {
    by_name: BTreeMap<Arc<str>, VecDeque<Stored>>,
    bytes: u64,
    count: usize,
}

impl Boxes {
    /// Appends `stored` to `name`'s mailbox unless a limit refuses it.
    pub fn reserve(
        &mut self,
        name: &str,
        stored: Stored,
        capacity: usize,
        max_bytes: u64,
    ) -> Result<(), Refusal> {
        let held = self.by_name.get(name).map_or(0, VecDeque::len);
        if held >= capacity {
            return Err(Refusal::NameFull);
        }
        if self.bytes + stored.size > max_bytes {
            return Err(Refusal::BytesFull);
        }
        self.bytes += stored.size;
        self.count += 1;
        self.by_name
            .entry(Arc::from(name))
            .or_default()
            .push_back(stored);
        Ok(())
    }

    /// Marks a reserved message durable; false if it is gone (purged meanwhile).
    pub fn make_durable(&mut self, name: &str, number: u64) -> bool {
        self.find(name, number)
            .map(|stored| stored.durable = true)
            .is_some()
    }

    /// Removes one message; returns it if it was there.
    pub fn remove(&mut self, name: &str, number: u64) -> Option<Stored> {
        let queue = self.by_name.get_mut(name)?;
        let at = queue.iter().position(|stored| stored.number == number)?;
        let stored = queue.remove(at)?;
        if queue.is_empty() {
            self.by_name.remove(name);
        }
        self.forget(&stored);
        Some(stored)
    }

    /// Offers `name`'s durable messages, oldest first, to `session` through
    /// `offer` until it refuses one. Plain messages leave the mailbox as they are
    /// taken; `until_ack` ones stay, remembered as delivered to `session` (which
    /// is not offered them twice). Expired messages are left for the sweep.
    pub fn deliver(
        &mut self,
        name: &str,
        session: u64,
        now_ms: u64,
        mut offer: impl FnMut(&Offered) -> bool,
    ) -> Vec<Offered> {
        let mut delivered = Vec::new();
        let Some(queue) = self.by_name.get_mut(name) else {
            return delivered;
        };
        let mut at = 0;
        let mut taken_bytes = 0;
        while let Some(stored) = queue.get_mut(at) {
            if !stored.durable {
                break;
            }
            if stored.expires_at_ms <= now_ms || stored.delivered_to == Some(session) {
                at += 1;
                continue;
            }
            let offered = Offered {
                number: stored.number,
                message: Arc::clone(&stored.message),
                redelivered: stored.delivered_to.is_some(),
                until_ack: stored.until_ack,
            };
            if !offer(&offered) {
                break;
            }
            if stored.until_ack {
                stored.delivered_to = Some(session);
                at += 1;
            } else if let Some(taken) = queue.remove(at) {
                taken_bytes += taken.size;
                self.count -= 1;
            }
            delivered.push(offered);
        }
        self.bytes -= taken_bytes;
        if queue.is_empty() {
            self.by_name.remove(name);
        }
        delivered
    }

    /// Removes every message that expired by `now_ms`: `(name, number)` of each.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(Arc<str>, u64)> {
        let mut expired = Vec::new();
        let (mut bytes, mut count) = (0, 0);
        self.by_name.retain(|name, queue| {
            queue.retain(|stored| {
                let keep = !stored.durable || stored.expires_at_ms > now_ms;
                if !keep {
                    expired.push((Arc::clone(name), stored.number));
                    bytes += stored.size;
                    count += 1;
                }
                keep
            });
            !queue.is_empty()
        });
        self.bytes -= bytes;
        self.count -= count;
        expired
    }

    /// Removes `name`'s durable messages; returns their numbers.
    pub fn purge(&mut self, name: &str) -> Vec<u64> {
        let Some(queue) = self.by_name.get_mut(name) else {
            return Vec::new();
        };
        let mut purged = Vec::new();
        let mut bytes = 0;
        queue.retain(|stored| {
            if stored.durable {
                purged.push(stored.number);
                bytes += stored.size;
            }
            !stored.durable
        });
        if queue.is_empty() {
            self.by_name.remove(name);
        }
        self.bytes -= bytes;
        self.count -= purged.len();
        purged
    }

    /// `name`'s durable messages, oldest first.
    pub fn messages(&self, name: &str) -> Vec<Stored> {
        self.by_name.get(name).map_or_else(Vec::new, |queue| {
            queue.iter().filter(|s| s.durable).cloned().collect()
        })
    }

    /// Names with durable messages starting with `prefix`: how many in all, and
    /// the page `offset..offset+limit`.
    pub fn names(&self, prefix: &str, offset: usize, limit: usize) -> (usize, Vec<Summary>) {
        let matching = self
            .by_name
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter_map(|(name, queue)| {
                let mut durable = queue.iter().filter(|s| s.durable);
                let oldest = durable.next()?;
                let (pending, bytes) = durable
                    .fold((1, oldest.size), |(pending, bytes), stored| {
                        (pending + 1, bytes + stored.size)
                    });
                Some(Summary {
                    name: Arc::clone(name),
                    pending,
                    bytes,
                    oldest_ms: oldest.stored_at_ms,
                })
            });
        let mut total = 0;
        let mut page = Vec::new();
        for entry in matching {
            if total >= offset && page.len() < limit {
                page.push(entry);
            }
            total += 1;
        }
        (total, page)
    }

    /// Messages and bytes held, durable or not.
    pub fn totals(&self) -> (usize, u64) {
        (self.count, self.bytes)
    }

    fn find(&mut self, name: &str, number: u64) -> Option<&mut Stored> {
        // From the back: a message is made durable right after it was appended.
        self.by_name
            .get_mut(name)?
            .iter_mut()
            .rev()
            .find(|stored| stored.number == number)
    }

    fn forget(&mut self, stored: &Stored) {
        self.bytes -= stored.size;
        self.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(number: u64, until_ack: bool) -> Stored {
        Stored {
            number,
            message: Arc::new(Value::from(number)),
            size: 10,
            stored_at_ms: number,
            expires_at_ms: 1000,
            until_ack,
            durable: true,
            delivered_to: None,
        }
    }

    #[test]
    fn delivery_stops_at_a_message_not_yet_durable() {
        let mut boxes = Boxes::default();
        boxes.reserve("a", message(1, false), 10, 100).unwrap();
        boxes
            .reserve(
                "a",
                Stored {
                    durable: false,
                    ..message(2, false)
                },
                10,
                100,
            )
            .unwrap();
        boxes.reserve("a", message(3, false), 10, 100).unwrap();
        let numbers = |offered: Vec<Offered>| offered.iter().map(|o| o.number).collect::<Vec<_>>();
        assert_eq!(numbers(boxes.deliver("a", 1, 0, |_| true)), vec![1]);
        assert!(boxes.make_durable("a", 2));
        assert_eq!(numbers(boxes.deliver("a", 1, 0, |_| true)), vec![2, 3]);
        assert_eq!(boxes.totals(), (0, 0));
    }

    #[test]
    fn until_ack_messages_stay_and_are_redelivered_to_the_next_session_only() {
        let mut boxes = Boxes::default();
        boxes.reserve("a", message(1, true), 10, 100).unwrap();
        let first = boxes.deliver("a", 1, 0, |_| true);
        assert_eq!((first.len(), first[0].redelivered), (1, false));
        assert!(boxes.deliver("a", 1, 0, |_| true).is_empty());
        let second = boxes.deliver("a", 2, 0, |_| true);
        assert_eq!((second.len(), second[0].redelivered), (1, true));
        assert!(boxes.remove("a", 1).is_some());
        assert_eq!(boxes.totals(), (0, 0));
    }

    #[test]
    fn names_are_listed_with_their_durable_messages_and_bytes() {
        let mut boxes = Boxes::default();
        boxes.reserve("a-1", message(1, false), 10, 100).unwrap();
        boxes.reserve("a-1", message(2, false), 10, 100).unwrap();
        let pending = Stored {
            durable: false,
            ..message(3, false)
        };
        boxes.reserve("a-1", pending, 10, 100).unwrap();
        boxes.reserve("a-2", message(4, false), 10, 100).unwrap();
        boxes.reserve("b", message(5, false), 10, 100).unwrap();
        let summary = |name: &str, pending, bytes, oldest_ms| Summary {
            name: Arc::from(name),
            pending,
            bytes,
            oldest_ms,
        };
        assert_eq!(
            boxes.names("a-", 0, 10),
            (2, vec![summary("a-1", 2, 20, 1), summary("a-2", 1, 10, 4)])
        );
        assert_eq!(boxes.names("", 2, 1), (3, vec![summary("b", 1, 10, 5)]));
    }

    #[test]
    fn limits_refuse_and_count_nothing() {
        let mut boxes = Boxes::default();
        boxes.reserve("a", message(1, false), 1, 15).unwrap();
        assert_eq!(
            boxes.reserve("a", message(2, false), 1, 100),
            Err(Refusal::NameFull)
        );
        assert_eq!(
            boxes.reserve("b", message(3, false), 1, 15),
            Err(Refusal::BytesFull)
        );
        assert_eq!(boxes.totals(), (1, 10));
        assert_eq!(boxes.expire(1000).len(), 1);
        assert_eq!(boxes.totals(), (0, 0));
    }
}
