//! Channels: bounded message queues between two partitions.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use rvm_abi::HvError;

use crate::partition::PartitionId;

/// Largest message a channel carries.
pub const MAX_MESSAGE: usize = 4096;
/// Most messages waiting in one direction.
pub const MAX_QUEUE: usize = 64;

/// A two-way channel: one queue per direction.
pub struct Channel {
    pub ends: [PartitionId; 2],
    queues: [VecDeque<Vec<u8>>; 2],
    capacity: usize,
    /// Messages and bytes delivered per direction (end 0 → 1, 1 → 0).
    pub delivered: [u64; 2],
    pub bytes: [u64; 2],
}

impl Channel {
    pub fn new(a: PartitionId, b: PartitionId, capacity: usize) -> Self {
        Self {
            ends: [a, b],
            queues: [VecDeque::new(), VecDeque::new()],
            capacity: capacity.clamp(1, MAX_QUEUE),
            delivered: [0; 2],
            bytes: [0; 2],
        }
    }

    fn end_of(&self, p: PartitionId) -> Option<usize> {
        self.ends.iter().position(|e| *e == p)
    }

    /// The other end of the channel from `p`.
    pub fn peer_of(&self, p: PartitionId) -> Option<PartitionId> {
        Some(self.ends[1 - self.end_of(p)?])
    }

    /// Whether `send(from, len bytes)` would be accepted (no change made).
    pub fn check_send(&self, from: PartitionId, len: usize) -> Result<(), HvError> {
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
    pub fn send(&mut self, from: PartitionId, msg: &[u8]) -> Result<(), HvError> {
        self.check_send(from, msg.len())?;
        let end = self.end_of(from).ok_or(HvError::BadHandle)?;
        self.queues[end].push_back(msg.to_vec());
        self.delivered[end] += 1;
        self.bytes[end] += msg.len() as u64;
        Ok(())
    }

    /// Length of the next message waiting for `to`, if any.
    pub fn peek_len(&self, to: PartitionId) -> Result<Option<usize>, HvError> {
        let end = self.end_of(to).ok_or(HvError::BadHandle)?;
        Ok(self.queues[1 - end].front().map(Vec::len))
    }

    /// The next message waiting for `to`, left in place.
    pub fn peek(&self, to: PartitionId) -> Option<&[u8]> {
        let end = self.end_of(to)?;
        self.queues[1 - end].front().map(Vec::as_slice)
    }

    /// Take the next message waiting for `to`.
    pub fn receive(&mut self, to: PartitionId) -> Result<Vec<u8>, HvError> {
        let end = self.end_of(to).ok_or(HvError::BadHandle)?;
        self.queues[1 - end].pop_front().ok_or(HvError::WouldBlock)
    }

    /// Messages waiting for `to`.
    pub fn pending_for(&self, to: PartitionId) -> usize {
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
}
