//! The simulator's agenda: frame arrivals and node wake-ups, ordered by (time, sequence) so
//! that events at the same instant run in the order they were scheduled, on every run.

use std::collections::BTreeMap;

use ztmesh_core::Timestamp;

use crate::Channel;

/// A frame travelling from `from` to `to`.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) channel: Channel,
    pub(crate) bytes: Vec<u8>,
    /// The link's epoch when it was sent.
    pub(crate) epoch: u64,
    /// Its entry in the message-frame log, if it carries a gossip message.
    pub(crate) log: Option<usize>,
}

#[derive(Debug)]
pub(crate) enum Event {
    Frame(Box<InFlight>),
    /// A node asked to be woken now. Stale when the node has asked for another time since
    /// (or crashed): the node keeps the one time it currently wants.
    Timer {
        node: usize,
    },
}

#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    events: BTreeMap<(Timestamp, u64), Event>,
    next_seq: u64,
}

impl EventQueue {
    pub(crate) fn push(&mut self, at: Timestamp, event: Event) {
        self.events.insert((at, self.next_seq), event);
        self.next_seq += 1;
    }

    pub(crate) fn pop(&mut self) -> Option<(Timestamp, Event)> {
        self.events.pop_first().map(|((at, _), event)| (at, event))
    }

    pub(crate) fn next_time(&self) -> Option<Timestamp> {
        self.events.first_key_value().map(|((at, _), _)| *at)
    }
}
