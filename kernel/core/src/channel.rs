//! Channels: bounded message queues between two agents.
//!
//! An end is an [`Endpoint`]: a partition and the slot of one of its agents.
//! A channel between two single-agent partitions has slot 0 at both ends,
//! which is exactly a channel between the two partitions.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use rvm_abi::HvError;

use crate::partition::PartitionId;

/// Largest message a channel carries.
pub const MAX_MESSAGE: usize = 4096;
/// Most messages waiting in one direction.
pub const MAX_QUEUE: usize = 64;

/// Which agent of a partition: its position in the partition's agent table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentSlot(pub u16);

impl AgentSlot {
    /// The first (in a single-agent partition, the only) agent.
    pub const FIRST: AgentSlot = AgentSlot(0);
}

/// One end of a channel: an agent, named by its partition and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub partition: PartitionId,
    pub slot: AgentSlot,
}

impl From<PartitionId> for Endpoint {
    /// The partition's first agent.
    fn from(partition: PartitionId) -> Self {
        Endpoint { partition, slot: AgentSlot::FIRST }
    }
}

/// A two-way channel: one queue per direction.
pub struct Channel {
    /// The partition of each end.
    ends: [PartitionId; 2],
    /// The agent of each end, within its partition.
    slots: [AgentSlot; 2],
    queues: [VecDeque<Vec<u8>>; 2],
    capacity: usize,
    /// Messages and bytes delivered per direction (end 0 → 1, 1 → 0).
    delivered: [u64; 2],
    bytes: [u64; 2],
}

/// What re-pointing an agent's channel ends found ([`repoint_all`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repointed {
    /// Channel ends re-pointed.
    pub channels: u32,
    /// Messages waiting in those channels (both directions), kept.
    pub queued: u64,
}

/// Re-point every end `from` holds to `to` (an agent moved to another
/// partition): queued messages stay queued, nothing lost or duplicated.
pub fn repoint_all(channels: &mut [Channel], from: Endpoint, to: Endpoint) -> Repointed {
    let mut r = Repointed::default();
    for ch in channels.iter_mut() {
        if ch.repoint(from, to) {
            r.channels += 1;
            r.queued += (ch.pending_for(to) + ch.peer_endpoint(to).map_or(0, |p| ch.pending_for(p))) as u64;
        }
    }
    r
}

impl Channel {
    /// A channel between the first agents of two partitions.
    pub fn new(a: PartitionId, b: PartitionId, capacity: usize) -> Self {
        Self::between(a.into(), b.into(), capacity)
    }

    /// A channel between two agents.
    pub fn between(a: Endpoint, b: Endpoint, capacity: usize) -> Self {
        Self {
            ends: [a.partition, b.partition],
            slots: [a.slot, b.slot],
            queues: [VecDeque::new(), VecDeque::new()],
            capacity: capacity.clamp(1, MAX_QUEUE),
            delivered: [0; 2],
            bytes: [0; 2],
        }
    }

    fn end_of(&self, p: impl Into<Endpoint>) -> Option<usize> {
        let e = p.into();
        (0..2).find(|&i| self.ends[i] == e.partition && self.slots[i] == e.slot)
    }

    /// End `i` (0 or 1) as an endpoint.
    pub fn endpoint(&self, i: usize) -> Endpoint {
        Endpoint { partition: self.ends[i & 1], slot: self.slots[i & 1] }
    }

    /// The partition of each end.
    pub fn ends(&self) -> [PartitionId; 2] {
        self.ends
    }

    /// Messages delivered per direction (end 0 → 1, 1 → 0).
    pub fn delivered(&self) -> [u64; 2] {
        self.delivered
    }

    /// Bytes delivered per direction (end 0 → 1, 1 → 0).
    pub fn bytes(&self) -> [u64; 2] {
        self.bytes
    }

    /// The other end of the channel from `p`'s partition.
    pub fn peer_of(&self, p: PartitionId) -> Option<PartitionId> {
        Some(self.ends[1 - self.end_of(p)?])
    }

    /// The other end of the channel from agent `e`.
    pub fn peer_endpoint(&self, e: Endpoint) -> Option<Endpoint> {
        Some(self.endpoint(1 - self.end_of(e)?))
    }

    /// Re-point the end held by `from` to `to` (an agent moved to another
    /// partition); the queued messages stay where they are. Whether it
    /// held an end.
    pub fn repoint(&mut self, from: Endpoint, to: Endpoint) -> bool {
        match self.end_of(from) {
            Some(i) => {
                self.ends[i] = to.partition;
                self.slots[i] = to.slot;
                true
            }
            None => false,
        }
    }

    /// Whether `send(from, len bytes)` would be accepted (no change made).
    pub fn check_send(&self, from: impl Into<Endpoint>, len: usize) -> Result<(), HvError> {
        let end = self.end_of(from).ok_or(HvError::BadHandle)?;
        if len > MAX_MESSAGE {
            return Err(HvError::InvalidArgument);
        }
        if self.queues[end].len() >= self.capacity {
            return Err(HvError::Full);
        }
        Ok(())
    }

    /// Queue `msg` from `from` to the other end.
    pub fn send(&mut self, from: impl Into<Endpoint>, msg: &[u8]) -> Result<(), HvError> {
        let from = from.into();
        self.check_send(from, msg.len())?;
        let end = self.end_of(from).ok_or(HvError::BadHandle)?;
        self.queues[end].push_back(msg.to_vec());
        self.delivered[end] += 1;
        self.bytes[end] += msg.len() as u64;
        Ok(())
    }

    /// Length of the next message waiting for `to`, if any.
    pub fn peek_len(&self, to: impl Into<Endpoint>) -> Result<Option<usize>, HvError> {
        let end = self.end_of(to).ok_or(HvError::BadHandle)?;
        Ok(self.queues[1 - end].front().map(Vec::len))
    }

    /// The next message waiting for `to`, left in place.
    pub fn peek(&self, to: impl Into<Endpoint>) -> Option<&[u8]> {
        let end = self.end_of(to)?;
        self.queues[1 - end].front().map(Vec::as_slice)
    }

    /// Take the next message waiting for `to`.
    pub fn receive(&mut self, to: impl Into<Endpoint>) -> Result<Vec<u8>, HvError> {
        let end = self.end_of(to).ok_or(HvError::BadHandle)?;
        self.queues[1 - end].pop_front().ok_or(HvError::WouldBlock)
    }

    /// Messages waiting for `to`.
    pub fn pending_for(&self, to: impl Into<Endpoint>) -> usize {
        self.end_of(to).map_or(0, |end| self.queues[1 - end].len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_flow_both_ways_in_order_and_bounded() {
        let (a, b) = (PartitionId(1), PartitionId(2));
        let mut ch = Channel::new(a, b, 2);
        ch.send(a, b"one").unwrap();
        ch.send(a, b"two").unwrap();
        assert_eq!(ch.send(a, b"three"), Err(HvError::Full));
        assert_eq!(ch.receive(a), Err(HvError::WouldBlock));
        assert_eq!(ch.receive(b).unwrap(), b"one");
        assert_eq!(ch.receive(b).unwrap(), b"two");
        assert_eq!(ch.send(PartitionId(3), b"x"), Err(HvError::BadHandle));
        assert_eq!(ch.peer_of(b), Some(a));
    }

    #[test]
    fn agents_of_one_partition_are_distinct_ends_and_moves_keep_the_queue() {
        let p = PartitionId(1);
        let (x, y) = (Endpoint { partition: p, slot: AgentSlot(0) }, Endpoint { partition: p, slot: AgentSlot(1) });
        let mut ch = Channel::between(x, y, 4);
        ch.send(x, b"hi").unwrap();
        assert_eq!(ch.send(Endpoint { partition: p, slot: AgentSlot(2) }, b"x"), Err(HvError::BadHandle));
        assert_eq!(ch.receive(x), Err(HvError::WouldBlock));
        assert_eq!(ch.peer_endpoint(x), Some(y));
        let moved = Endpoint { partition: PartitionId(2), slot: AgentSlot(0) };
        assert!(ch.repoint(y, moved));
        assert_eq!(ch.pending_for(y), 0);
        assert_eq!(ch.receive(moved).unwrap(), b"hi");
    }
}
