//! The source role: answers requests, one per turn.

use rvm_guest::{println, yield_now, Channel, HvError, TurnCell};

use crate::protocol::{packet, Message, MAX_MESSAGE};
use crate::{PLAN, TURNS};

/// Faults sent so far.
static FAULTS_SENT: TurnCell<u8> = TurnCell::new(0);

pub(crate) fn turn() -> i32 {
    let Ok(channel) = Channel::nth(0) else {
        println!("source: no channel");
        rvm_guest::exit(2)
    };
    let mut buf = [0u8; MAX_MESSAGE];
    // Parked until a request comes (in a partition of several agents this
    // only looks, and the turn ends with a yield below).
    let k = match channel.recv_wait(&mut buf, None) {
        Ok(n) => match Message::decode(&buf[..n.min(MAX_MESSAGE)]) {
            Some(Message::Req(k)) => k,
            _ => {
                println!("source: unexpected message of {n} bytes");
                rvm_guest::exit(4)
            }
        },
        Err(HvError::WouldBlock) => {
            let _ = yield_now();
            return rvm_guest::turn::CONTINUE;
        }
        Err(e) => {
            println!("source: recv failed: {}", e.name());
            rvm_guest::exit(6)
        }
    };
    let answer = if k <= TURNS {
        Message::Packet(k, packet(k))
    } else if FAULTS_SENT.with(|f| {
        let more = *f < PLAN.read()[1];
        *f += u8::from(more);
        more
    }) {
        println!("source: fault {} at request {k}", FAULTS_SENT.with(|f| *f));
        Message::Fault(k)
    } else {
        println!("source: end at request {k}");
        Message::End(k)
    };
    let n = answer.encode(&mut buf);
    loop {
        match channel.send(&buf[..n]) {
            Ok(()) => break,
            Err(HvError::Full) => {
                let _ = yield_now();
            }
            Err(e) => {
                println!("source: send failed: {}", e.name());
                rvm_guest::exit(6)
            }
        }
    }
    if matches!(answer, Message::End(_)) {
        rvm_guest::turn::DONE
    } else {
        rvm_guest::turn::CONTINUE
    }
}
