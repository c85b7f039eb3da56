//! Operator orders under QEMU: signed `@O` lines written into QEMU's
//! standard input (the PL011's receive side) while the machine runs.
//!
//! `victim` (a raw probe) snapshots, then writes hypervisor memory: a
//! stage-2 abort, fenced (F3) with no fence timeout, so only the operator
//! can end it. A forged order is refused; a signed `unfence` recreates it
//! from its pristine image and that snapshot, and it finishes. The
//! `faulty` agent abuses hypercalls and is fenced; an `unfence` resumes it
//! from its last snapshot (the runtime restores it — and, its plan being
//! to abuse at that turn, it offends again and is fenced again); an `evict`
//! then evicts it, and another ends a partition that spins forever. The
//! reference pair alongside finishes untouched, and every chain verifies.

use ed25519_dalek::{Signer, SigningKey};
use rvm_abi::bundle::{PartitionDesc, RecoveryDesc};
use rvm_abi::frame::{OrderArgs, OrderFrame, OrderKind};
use rvm_abi::witness::KernelEvent;
use rvm_abi::{HvError, Outcome, WitnessRecord};
use rvm_tests_qemu::{artifact, boot_interactive, BundleSpec, PartitionSpec, QemuOptions, QemuRun};
use sha2::{Digest, Sha256};

const FAULTY_MARKER: &[u8; 16] = b"RVM-FAULTY-PLAN1";
const OPERATOR_SEED: [u8; 32] = [0x5e; 32];

fn faulty_abuser() -> Vec<u8> {
    let mut wasm = artifact("agents/faulty.wasm");
    let at = wasm.windows(16).position(|w| w == FAULTY_MARKER).expect("plan marker") + 16;
    // Abuse (2) at turn 3.
    wasm[at..at + 8].copy_from_slice(&[2, 0, 3, 0, 0, 0, 0, 0]);
    wasm
}

/// A signed order line for `bundle`.
fn order(bundle: &[u8], seed: &[u8; 32], kind: OrderKind, nonce: u64, name: &str) -> Vec<u8> {
    let partition = PartitionDesc::name_field(name).unwrap();
    let digest: [u8; 32] = Sha256::digest(bundle).into();
    let signature = SigningKey::from_bytes(seed).sign(&OrderFrame::message(kind, nonce, &partition, &digest)).to_bytes();
    OrderFrame { kind, nonce, partition, signature }.encode().as_bytes().to_vec()
}

#[test]
fn operator_orders_unfence_and_evict_on_a_running_machine_and_forgeries_are_refused() {
    let operator = SigningKey::from_bytes(&OPERATOR_SEED).verifying_key().to_bytes();
    let faulty = PartitionSpec::wasm("faulty", faulty_abuser())
        .recovery(RecoveryDesc { fence_timeout_ms: 0, ..RecoveryDesc::DEFAULT });
    let victim = PartitionSpec::image("victim", artifact("probes/probe-fence-resume.elf"))
        .recovery(RecoveryDesc { fence_timeout_ms: 0, ..RecoveryDesc::DEFAULT });
    let bundle = BundleSpec::new()
        .operator_key(operator)
        .partition(PartitionSpec::wasm("agent-a", artifact("agents/reference.wasm")))
        .partition(PartitionSpec::wasm("agent-b", artifact("agents/reference.wasm")))
        .partition(faulty)
        .partition(PartitionSpec::wasm("spinner", artifact("agents/spin.wasm")))
        .partition(victim)
        .channel(0, 1)
        .budget_ms(240_000)
        .build();
    // The orders, each written once as soon as the serial line shows it is
    // due, signed then with the next nonce (the hypervisor wants them rising).
    let forger = [0x13u8; 32];
    let plan: [(OrderKind, &str, &[u8; 32]); 5] = [
        (OrderKind::Unfence, "faulty", &forger),
        (OrderKind::Unfence, "faulty", &OPERATOR_SEED),
        (OrderKind::Evict, "faulty", &OPERATOR_SEED),
        (OrderKind::Unfence, "victim", &OPERATOR_SEED),
        (OrderKind::Evict, "spinner", &OPERATOR_SEED),
    ];
    let mut nonces = [0u64; 5];
    let mut next_nonce = 0;
    let mut seen = String::new();
    let began = std::time::Instant::now();
    let opts = QemuOptions { timeout: std::time::Duration::from_secs(420), ..QemuOptions::default() };
    let run = boot_interactive(&bundle, &opts, |chunk, stdin| {
        seen.push_str(&String::from_utf8_lossy(chunk));
        let fenced = |name: &str| seen.lines().filter(|l| l.contains(name) && l.contains("fenced (F3)")).count();
        let done = |n: u64| nonces[usize::try_from(n).unwrap_or(0)] != 0 && seen.contains(&format!("order {} ", nonces[n as usize]));
        let due = [
            fenced("'faulty'") >= 1,
            fenced("'faulty'") >= 1,
            fenced("'faulty'") >= 2 && done(1),
            fenced("'victim'") >= 1,
            seen.contains("'victim' exited") && done(2),
        ];
        for (n, (kind, name, seed)) in plan.iter().enumerate() {
            if due[n] && nonces[n] == 0 {
                next_nonce += 1;
                nonces[n] = next_nonce;
                eprintln!("orders: {} {name} as nonce {next_nonce} at {} ms", kind.name(), began.elapsed().as_millis());
                // A failed write (QEMU gone) shows in the assertions below.
                let _ = stdin.write_all(&order(&bundle, seed, *kind, next_nonce, name));
            }
        }
        for l in chunk.split(|&b| b == b'\n') {
            if l.starts_with(b"rvm: order ") {
                eprintln!("orders: answer at {} ms: {}", began.elapsed().as_millis(), String::from_utf8_lossy(l).trim_end());
            }
        }
    });
    run.assert(run.exit == Some(0), "clean power-off");
    run.assert(
        run.contains(&format!("rvm: order {} unfence 'faulty' refused: signature does not verify with the operator key", nonces[0])),
        "the forged order is refused",
    );
    let resumed = run
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rvm: order {} unfence 'faulty' done: resumed from snapshot ", nonces[1])))
        .and_then(|n| n.trim().parse::<u64>().ok());
    run.assert(resumed.is_some_and(|n| n >= 2), "unfenced, resuming from a snapshot");
    let ck = resumed.unwrap_or(0);
    run.assert(
        run.console_of("faulty").any(|l| l.starts_with(&format!("runtime: restored snapshot {ck} "))),
        "the runtime restored that snapshot",
    );
    run.assert(run.contains(&format!("rvm: order {} evict 'faulty' done: evicted (F4)", nonces[2])), "evicted by order");
    run.assert(run.contains(&format!("rvm: order {} unfence 'victim' done: resumed from snapshot 1", nonces[3])), "the probe unfenced");
    run.assert(
        run.contains("probe fence-resume: start 1 resumed from snapshot 1 (16 bytes, intact)"),
        "it resumed from its snapshot",
    );
    run.assert(run.contains("'victim' exited: code 0x0"), "and finished");
    let victim_log: Vec<KernelEvent> = run
        .log(5)
        .iter()
        .filter_map(|r| KernelEvent::from_code(r.op))
        .filter(|e| matches!(e, KernelEvent::Fault | KernelEvent::RecoverFence | KernelEvent::OperatorOrder | KernelEvent::Unfence))
        .collect();
    run.assert(
        victim_log == [KernelEvent::Fault, KernelEvent::RecoverFence, KernelEvent::OperatorOrder, KernelEvent::Unfence],
        &format!("the victim's log: stage-2 fault, fence, order, unfence: {victim_log:?}"),
    );
    // The spinner may be on another CPU when the order arrives: then the
    // eviction waits for that CPU to come back (end of its slice).
    run.assert(run.contains(&format!("rvm: order {} evict 'spinner' done: ", nonces[4])), "a running partition evicted by order");
    run.assert(
        run.log(4).iter().any(|r| KernelEvent::from_code(r.op) == Some(KernelEvent::RecoverEvict)),
        "the spinner's log ends with its eviction",
    );
    run.assert(
        run.contains("'agent-a' exited: code 0x0") && run.contains("'agent-b' exited: code 0x0"),
        "the others finished",
    );
    // The faulty agent's log: fence, refused forgery, order, unfence, fence, order, evict.
    let of_interest = [
        KernelEvent::RecoverFence,
        KernelEvent::OrderRefused,
        KernelEvent::OperatorOrder,
        KernelEvent::Unfence,
        KernelEvent::RecoverEvict,
    ];
    let log: Vec<(KernelEvent, WitnessRecord)> = run
        .log(3)
        .into_iter()
        .filter_map(|r| KernelEvent::from_code(r.op).filter(|e| of_interest.contains(e)).map(|e| (e, r)))
        .collect();
    let kinds: Vec<KernelEvent> = log.iter().map(|(e, _)| *e).collect();
    run.assert(
        kinds
            == [
                KernelEvent::RecoverFence,
                KernelEvent::OrderRefused,
                KernelEvent::OperatorOrder,
                KernelEvent::Unfence,
                KernelEvent::RecoverFence,
                KernelEvent::OperatorOrder,
                KernelEvent::RecoverEvict,
            ],
        &format!("the faulty agent's recovery and order records: {kinds:?}"),
    );
    let refused = &log[1].1;
    run.assert(refused.outcome() == Some(Outcome::Denied(HvError::BadProof)), "the refusal says BadProof");
    run.assert(OrderArgs::from_bytes(&refused.args).nonce == nonces[0], "and names the nonce");
    assert_chains(&run);
}

/// Every log on the serial line is consecutive and hash-linked.
fn assert_chains(run: &QemuRun) {
    run.assert(run.assert_chains_linked() >= 2, "logs streamed");
}
