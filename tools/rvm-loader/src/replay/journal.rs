//! Reading the journal, and binding it to the log before anything is
//! re-executed: every entry must recompute its record's `args` digest (with
//! the kernel's own digests, [`rvm_state::digest`]) and agree with its
//! outcome, every record that says it is journaled must have its entry, and
//! the log's chain must hold.

use std::collections::BTreeMap;

use rvm_abi::journal::{self, Entry};
use rvm_abi::witness::KernelEvent;
use rvm_abi::WitnessRecord;
use rvm_state::digest;

use super::{hex, op_name, ReplayFailure};

/// The entries of log `log` among journal frame lines (other lines and
/// other logs' entries are skipped; a damaged journal line is an error
/// naming its line number).
pub fn parse_journal(text: &str, log: u32) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if !journal::is_journal_line(line) {
            continue;
        }
        let f = journal::JournalFrame::parse(line)
            .ok_or_else(|| format!("line {}: a damaged journal frame", n + 1))?;
        if f.log == log {
            out.push(f.entry);
        }
    }
    Ok(out)
}

/// Check the log's chain and every journal entry's binding to its record.
/// Returns the records decoded and the entries by sequence number.
pub fn check_bindings(
    log: u32,
    raw: &[[u8; 64]],
    journal: Vec<Entry>,
) -> Result<(Vec<WitnessRecord>, BTreeMap<u64, Entry>), ReplayFailure> {
    let mut records = Vec::with_capacity(raw.len());
    for (i, bytes) in raw.iter().enumerate() {
        let seq = i as u64;
        let r = WitnessRecord::from_bytes(bytes).map_err(|e| ReplayFailure::Tampered {
            seq,
            reason: format!("not a record ({e:?})"),
        })?;
        if r.seq != seq {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: format!("says it is #{}", r.seq),
            });
        }
        if r.partition != log {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: format!("belongs to partition {}", r.partition),
            });
        }
        records.push(r);
    }
    // Entries before links: a changed call record is named by its own
    // binding, not by the link of the record after it.
    let by_seq = bind_entries(&records, journal)?;
    let mut head = rvm_witness::Hash::ZERO;
    for (i, (bytes, r)) in raw.iter().zip(&records).enumerate() {
        if r.prev != head.prefix16() {
            return Err(ReplayFailure::Tampered {
                seq: i as u64,
                reason: "does not link its predecessor (this record or the one before was changed)"
                    .into(),
            });
        }
        head = rvm_witness::chain::chain_step(&head, bytes);
    }
    Ok((records, by_seq))
}

/// Check each entry against its record; the entries by sequence number.
fn bind_entries(
    records: &[WitnessRecord],
    journal: Vec<Entry>,
) -> Result<BTreeMap<u64, Entry>, ReplayFailure> {
    let mut journal = journal;
    journal.sort_by_key(Entry::seq);
    let mut by_seq = BTreeMap::new();
    for e in journal {
        let seq = e.seq();
        let Some(r) = records.get(usize::try_from(seq).unwrap_or(usize::MAX)) else {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: "a journal entry names a record the log does not hold".into(),
            });
        };
        match &e {
            Entry::Call {
                regs, status, data, ..
            } => {
                if r.flags & rvm_abi::witness::flags::KERNEL_EVENT != 0 {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: "a call's journal entry is bound to a kernel event".into(),
                    });
                }
                if i64::from(r.outcome) != *status {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: format!(
                            "journal status {status} but the record's outcome is {}",
                            r.outcome
                        ),
                    });
                }
                let digest = digest::of_call(regs, data);
                if digest != r.args {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: format!(
                            "{}: the journal entry's digest {} is not the record's args {}",
                            op_name(r.op),
                            hex(&digest),
                            hex(&r.args)
                        ),
                    });
                }
            }
            Entry::Start { handles, .. } => {
                if r.op != KernelEvent::PartitionStart as u16 {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: "a start entry is not bound to PartitionStart".into(),
                    });
                }
                if digest::of_start(handles) != r.args {
                    return Err(ReplayFailure::Tampered {
                        seq,
                        reason: "the start entry's handles are not the ones the record binds"
                            .into(),
                    });
                }
            }
        }
        if by_seq.insert(seq, e).is_some() {
            return Err(ReplayFailure::Tampered {
                seq,
                reason: "two journal entries for one record".into(),
            });
        }
    }
    // A record that says it has an entry must have one: a dropped entry is
    // named at its record.
    if !by_seq.is_empty() {
        if let Some(r) = records.iter().find(|r| {
            r.flags & rvm_abi::witness::flags::JOURNALED != 0 && !by_seq.contains_key(&r.seq)
        }) {
            return Err(ReplayFailure::Tampered {
                seq: r.seq,
                reason: format!(
                    "{} says it is journaled, but the journal has no entry for it",
                    op_name(r.op)
                ),
            });
        }
    }
    Ok(by_seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvm_abi::bootinfo::HandleInfo;
    use rvm_abi::witness::{Outcome, WitnessOp, RECORD_VERSION};
    use rvm_abi::{HvError, Hypercall};

    /// A chained log of `recs` (op, outcome, args) for partition 1.
    fn chain(recs: &[(u16, i16, [u8; 16])]) -> Vec<[u8; 64]> {
        let mut head = rvm_witness::Hash::ZERO;
        let mut out = Vec::new();
        for (i, (op, outcome, args)) in recs.iter().enumerate() {
            let mut r = WitnessRecord::new(WitnessOp::Call(Hypercall::Null), Outcome::Done, 1);
            r.version = RECORD_VERSION;
            r.op = *op;
            if op & 0x8000 != 0 {
                r.flags = rvm_abi::witness::flags::KERNEL_EVENT;
            }
            r.outcome = *outcome;
            r.seq = i as u64;
            r.args = *args;
            r.prev = head.prefix16();
            let b = r.to_bytes();
            head = rvm_witness::chain::chain_step(&head, &b);
            out.push(b);
        }
        out
    }

    fn call_entry(seq: u64, regs: [u64; 6], status: i64, data: &[u8]) -> (Entry, [u8; 16]) {
        let e = Entry::Call {
            seq,
            regs,
            status,
            results: [data.len() as u64, 0, 0],
            data: data.to_vec(),
        };
        (e, digest::of_parts(&[&journal::regs_bytes(&regs), data]))
    }

    #[test]
    fn bindings_hold_and_a_changed_entry_is_named() {
        let handles = vec![HandleInfo {
            raw: 0x1_0000,
            kind: 4,
            rights: 3,
            agent: 0,
        }];
        let mut start_input = Vec::new();
        journal::start_digest_input(&mut |b: &[u8]| start_input.extend_from_slice(b), &handles);
        let (recv, recv_args) = call_entry(1, [0x1_0000, 0x4000, 64, 0, 0, 0], 0, b"packet-1");
        let (block, block_args) = call_entry(
            2,
            [0x1_0000, 0x4000, 64, 0, 0, 0],
            HvError::WouldBlock.code(),
            b"",
        );
        let log = chain(&[
            (
                KernelEvent::PartitionStart as u16,
                0,
                digest::of_parts(&[&start_input]),
            ),
            (Hypercall::ChannelRecv as u16, 0, recv_args),
            (
                Hypercall::ChannelRecv as u16,
                HvError::WouldBlock.outcome_code(),
                block_args,
            ),
        ]);
        let good = vec![
            Entry::Start {
                seq: 0,
                handles: handles.clone(),
            },
            recv.clone(),
            block.clone(),
        ];
        let (records, by_seq) = check_bindings(1, &log, good).expect("an untouched journal binds");
        assert_eq!((records.len(), by_seq.len()), (3, 3));

        // One byte of a received message changed.
        let Entry::Call {
            seq,
            regs,
            status,
            results,
            mut data,
        } = recv.clone()
        else {
            unreachable!()
        };
        data[0] ^= 1;
        let changed = Entry::Call {
            seq,
            regs,
            status,
            results,
            data,
        };
        let err = check_bindings(1, &log, vec![changed, block.clone()]).unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 1, .. }),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);

        // A WouldBlock turned into success.
        let Entry::Call {
            seq,
            regs,
            results,
            data,
            ..
        } = block
        else {
            unreachable!()
        };
        let err = check_bindings(
            1,
            &log,
            vec![Entry::Call {
                seq,
                regs,
                status: 0,
                results,
                data,
            }],
        )
        .unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 2, .. }),
            "{err}"
        );

        // Foreign handles in the start entry.
        let other = vec![HandleInfo {
            raw: 0x2_0000,
            ..handles[0]
        }];
        let err = check_bindings(
            1,
            &log,
            vec![Entry::Start {
                seq: 0,
                handles: other,
            }],
        )
        .unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 0, .. }),
            "{err}"
        );

        // A changed call record is named by its entry's binding...
        let mut bad_log = log.clone();
        bad_log[1][40] ^= 1;
        let err = check_bindings(1, &bad_log, vec![recv.clone()]).unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 1, .. }),
            "{err}"
        );
        // ... and one without an entry by the link of the record after it.
        let err = check_bindings(1, &bad_log, vec![]).unwrap_err();
        assert!(
            matches!(err, ReplayFailure::Tampered { seq: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn journal_lines_are_picked_out_of_a_console_stream() {
        let (e, _) = call_entry(4, [1, 2, 3, 4, 5, 6], 0, b"x");
        let line = String::from_utf8(e.encode(7)).unwrap();
        let text = format!(
            "rvm: hello\n{line}[agent] text\n{}",
            String::from_utf8(e.encode(8)).unwrap()
        );
        assert_eq!(parse_journal(&text, 7), Ok(vec![e.clone()]));
        assert_eq!(parse_journal(&text, 9), Ok(vec![]));
        // One hex digit lost in transit.
        let damaged = format!("{}\n", &line[..line.len() - 2]);
        assert!(parse_journal(&damaged, 7).unwrap_err().contains("line 1"));
    }
}
