//! The ping/pong wire format and the state machine of one side, kept free
//! of host calls so it can be tested on the host.

/// Pings each side sends (and pongs it expects).
pub const ROUNDS: u32 = 8;
/// Length of every message.
pub const MESSAGE_LEN: usize = 8;
const TAG: [u8; 2] = *b"RP";

/// One message on the channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    Ping(u32),
    Pong(u32),
}

impl Message {
    /// `"RP"`, kind (`1` ping, `2` pong), 0, counter (u32 LE).
    pub fn encode(self) -> [u8; MESSAGE_LEN] {
        let (kind, n) = match self {
            Message::Ping(n) => (1, n),
            Message::Pong(n) => (2, n),
        };
        let c = n.to_le_bytes();
        [TAG[0], TAG[1], kind, 0, c[0], c[1], c[2], c[3]]
    }

    /// The message in `bytes`, if they are one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; MESSAGE_LEN] = bytes.try_into().ok()?;
        if b[..2] != TAG || b[3] != 0 {
            return None;
        }
        let n = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        match b[2] {
            1 => Some(Message::Ping(n)),
            2 => Some(Message::Pong(n)),
            _ => None,
        }
    }
}

/// A message the peer should not have sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub Message);

/// One side's progress. Outgoing messages wait in a two-slot queue (at most
/// one ping and one pong are ever outstanding), so a full channel never
/// deadlocks the pair: the side keeps receiving while its sends wait.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// Pings sent so far.
    pub pings_sent: u32,
    /// Pongs received so far (== pings answered by the peer).
    pub pongs_received: u32,
    /// Peer pings answered so far.
    pub pings_answered: u32,
    outbox: [Option<Message>; 2],
}

impl Side {
    /// A side that has done nothing yet; its first ping is queued.
    pub fn new() -> Self {
        let mut side = Self::default();
        side.queue_next_ping();
        side
    }

    fn queue_next_ping(&mut self) {
        if self.pings_sent < ROUNDS {
            self.pings_sent += 1;
            self.push(Message::Ping(self.pings_sent));
        }
    }

    fn push(&mut self, m: Message) {
        // Slot 0 carries pings, slot 1 pongs: each kind has at most one outstanding.
        let slot = usize::from(matches!(m, Message::Pong(_)));
        debug_assert!(self.outbox[slot].is_none());
        self.outbox[slot] = Some(m);
    }

    /// The next message to send, if any (pongs first, so the peer progresses).
    pub fn next_outgoing(&self) -> Option<Message> {
        self.outbox[1].or(self.outbox[0])
    }

    /// The message from [`next_outgoing`](Self::next_outgoing) was sent.
    pub fn sent(&mut self) {
        if self.outbox[1].take().is_none() {
            self.outbox[0] = None;
        }
    }

    /// Whether an answer to the peer is waiting to be sent (then nothing more
    /// may be received until it has gone).
    pub fn pong_pending(&self) -> bool {
        self.outbox[1].is_some()
    }

    /// Take a message from the peer.
    pub fn received(&mut self, m: Message) -> Result<(), ProtocolError> {
        match m {
            Message::Ping(j)
                if j == self.pings_answered + 1 && j <= ROUNDS && !self.pong_pending() =>
            {
                self.pings_answered = j;
                self.push(Message::Pong(j));
                Ok(())
            }
            Message::Pong(k) if k == self.pongs_received + 1 && k == self.pings_sent => {
                self.pongs_received = k;
                self.queue_next_ping();
                Ok(())
            }
            _ => Err(ProtocolError(m)),
        }
    }

    /// All pongs had, all peer pings answered and every answer sent.
    pub fn done(&self) -> bool {
        self.pongs_received == ROUNDS
            && self.pings_answered == ROUNDS
            && self.next_outgoing().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_junk_is_refused() {
        for m in [Message::Ping(1), Message::Pong(u32::MAX)] {
            assert_eq!(Message::decode(&m.encode()), Some(m));
        }
        assert_eq!(Message::decode(b"RP\x03\0\0\0\0\0"), None);
        assert_eq!(Message::decode(b"short"), None);
    }

    /// Two sides over two queues of capacity 1, scheduled in every order a
    /// simple round-robin with skew produces, always finish.
    #[test]
    fn two_sides_finish_under_any_skew() {
        for skew in 1..5 {
            let mut sides = [Side::new(), Side::new()];
            let mut queues: [Option<Message>; 2] = [None, None]; // queues[i]: to side i
            for step in 0..10_000 {
                if sides.iter().all(Side::done) {
                    break;
                }
                let me = usize::from(step % (skew + 1) == 0);
                let peer = 1 - me;
                if let Some(m) = sides[me].next_outgoing() {
                    if queues[peer].is_none() {
                        queues[peer] = Some(m);
                        sides[me].sent();
                    }
                }
                if !sides[me].pong_pending() {
                    if let Some(m) = queues[me].take() {
                        sides[me].received(m).unwrap();
                    }
                }
            }
            assert!(sides.iter().all(Side::done), "skew {skew}: {sides:?}");
            assert!(queues.iter().all(Option::is_none));
        }
    }

    #[test]
    fn out_of_order_messages_are_protocol_errors() {
        let mut side = Side::new();
        assert_eq!(
            side.received(Message::Pong(2)),
            Err(ProtocolError(Message::Pong(2)))
        );
        assert_eq!(
            side.received(Message::Ping(3)),
            Err(ProtocolError(Message::Ping(3)))
        );
    }
}
