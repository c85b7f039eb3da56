//! Witness log figures: the SHA-256 floor against one append, verification
//! throughput, and Merkle proofs at one million records.
//!
//! `cargo bench -p rvm-witness --bench witness`

use core::hint::black_box;
use core::num::{NonZeroU64, NonZeroUsize};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rvm_abi::witness::{Outcome, WitnessOp, WitnessRecord, RECORD_LEN};
use rvm_abi::Hypercall;
use rvm_witness::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use rvm_witness::{
    verify_log, CheckpointPolicy, CheckpointSigner, LogConfig, LogId, MerkleTree, Outgoing,
    RootCheck, SignedCheckpoint, VerifyInput, WitnessLog,
};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

const LOG: LogId = LogId(1);

fn record(i: u64) -> WitnessRecord {
    let mut r = WitnessRecord::new(
        WitnessOp::Call(Hypercall::ChannelSend),
        Outcome::Done,
        LOG.0,
    );
    r.timestamp = i * 1000;
    r.tier = 1;
    r.cap = 7;
    r.args = [i as u8; 16];
    r
}

fn no_checkpoints() -> CheckpointPolicy {
    CheckpointPolicy {
        every: None,
        on_p3: false,
        on_shutdown: false,
    }
}

/// `n` records as the host receives them, checkpointed by `policy`, with a
/// final checkpoint.
fn stream(
    n: u64,
    policy: CheckpointPolicy,
    signer: &CheckpointSigner,
) -> (Vec<u8>, Vec<SignedCheckpoint>) {
    let config = LogConfig {
        ring_capacity: NonZeroUsize::new(4096).unwrap(),
        checkpoints: policy,
    };
    let mut log = WitnessLog::new(LOG, config).unwrap();
    let mut records = Vec::with_capacity(n as usize * RECORD_LEN);
    let mut cps = Vec::new();
    let mut take = |log: &mut WitnessLog| {
        while let Some(o) = log.drain_next() {
            match o {
                Outgoing::Record { bytes, .. } => records.extend_from_slice(&bytes),
                Outgoing::Checkpoint(c) => cps.push(c),
            }
        }
    };
    for i in 0..n {
        if log.append(record(i)).unwrap().checkpoint_due {
            log.checkpoint(signer).unwrap();
        }
        take(&mut log);
    }
    log.checkpoint(signer).unwrap();
    take(&mut log);
    (records, cps)
}

fn floor_vs_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    let buf = [0x5au8; 96];
    g.bench_function("sha256_96_bytes_floor", |b| {
        b.iter(|| Sha256::digest(black_box(&buf)))
    });
    // The same, but each hash over the previous digest ‖ 64 bytes, as a
    // hash chain must: no two hashes can overlap in the pipeline.
    g.bench_function("sha256_96_bytes_chained_floor", |b| {
        let mut buf = [0x5au8; 96];
        b.iter(|| {
            let d = Sha256::digest(buf);
            buf[..32].copy_from_slice(&d);
            black_box(&buf);
        })
    });
    let rec = [0x33u8; RECORD_LEN];
    let head = rvm_witness::Hash([0x44; 32]);
    g.bench_function("chain_step_only", |b| {
        b.iter(|| rvm_witness::chain_step(black_box(&head), black_box(&rec)))
    });

    // One append: chain hash, record encode, ring store. The ring's memory
    // is warm (as the kernel's, allocated at boot, is); it is drained
    // between batches outside the timed region (draining folds the Merkle
    // range, which the streamer does at UART speed, not on the hypercall
    // path).
    const BATCH: u64 = 4096;
    g.bench_function("append_one_record", |b| {
        let config = LogConfig {
            ring_capacity: NonZeroUsize::new(BATCH as usize).unwrap(),
            checkpoints: no_checkpoints(),
        };
        let mut log = WitnessLog::new(LOG, config).unwrap();
        let recs: Vec<WitnessRecord> = (0..BATCH).map(record).collect();
        // Touch every slot once.
        for r in &recs {
            log.append(*r).unwrap();
        }
        while log.drain_next().is_some() {}
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = BATCH.min(iters - done);
                let t = Instant::now();
                for r in &recs[..n as usize] {
                    black_box(log.append(black_box(*r)).unwrap());
                }
                total += t.elapsed();
                while log.drain_next().is_some() {}
                done += n;
            }
            total
        })
    });

    // What the kernel pays per record all told: append, drain (Merkle
    // fold) and, every 1024 records (the default), an Ed25519 signature.
    let signer = CheckpointSigner::from_seed(&[7; 32]);
    g.bench_function("append_drain_checkpoint_every_1024_amortised", |b| {
        let config = LogConfig {
            ring_capacity: NonZeroUsize::new(64).unwrap(),
            checkpoints: CheckpointPolicy::default(),
        };
        let mut log = WitnessLog::new(LOG, config).unwrap();
        let mut i = 0;
        b.iter(|| {
            i += 1;
            if log.append(record(i)).unwrap().checkpoint_due {
                log.checkpoint(&signer).unwrap();
            }
            while let Some(o) = log.drain_next() {
                black_box(o);
            }
        })
    });
    g.bench_function("checkpoint_sign", |b| {
        let cp = rvm_witness::Checkpoint {
            log: LOG,
            size: 1 << 20,
            root: rvm_witness::Hash([1; 32]),
            head: rvm_witness::Hash([2; 32]),
        };
        b.iter(|| black_box(cp).sign(&signer))
    });
    g.finish();
}

fn verification(c: &mut Criterion) {
    let signer = CheckpointSigner::from_seed(&[7; 32]);
    let key = signer.public_key();
    const N: u64 = 200_000;
    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    let cases = [
        ("chain_one_checkpoint", no_checkpoints(), RootCheck::Skip),
        (
            "chain_checkpoint_every_256",
            CheckpointPolicy::every(NonZeroU64::new(256).unwrap()),
            RootCheck::Skip,
        ),
        (
            "chain_checkpoint_every_1024_default",
            CheckpointPolicy::default(),
            RootCheck::Skip,
        ),
        (
            "chain_and_roots_checkpoint_every_1024_default",
            CheckpointPolicy::default(),
            RootCheck::Check,
        ),
    ];
    for (name, policy, roots) in cases {
        let (records, cps) = stream(N, policy, &signer);
        g.bench_function(name, |b| {
            b.iter(|| {
                let s = verify_log(VerifyInput {
                    log: LOG,
                    records: &records,
                    checkpoints: &cps,
                    key: &key,
                    roots,
                })
                .unwrap();
                assert_eq!(s.signed, N);
            })
        });
    }
    g.bench_function("ed25519_verify_one_checkpoint", |b| {
        let (_, cps) = stream(1, no_checkpoints(), &signer);
        b.iter(|| cps[0].verify(black_box(&key)).unwrap())
    });
    g.finish();
}

fn proofs(c: &mut Criterion) {
    const N: u64 = 1 << 20;
    let signer = CheckpointSigner::from_seed(&[7; 32]);
    let (records, cps) = stream(N, no_checkpoints(), &signer);
    let t = Instant::now();
    let tree = MerkleTree::from_leaves(records.chunks_exact(RECORD_LEN));
    let build = t.elapsed();
    let root = tree.root(N).unwrap();
    assert_eq!(
        cps.last().unwrap().checkpoint.root,
        root,
        "kernel compact range agrees"
    );
    let index = 777_777;
    let path = tree.inclusion_proof(index, N).unwrap();
    let old = 600_000;
    let cons = tree.consistency_proof(old, N).unwrap();
    eprintln!(
        "merkle at {N} records: tree build {build:?}; inclusion proof {} hashes = {} bytes; consistency proof {old}->{N} {} hashes = {} bytes",
        path.len(),
        path.len() * 32,
        cons.len(),
        cons.len() * 32
    );
    let leaf = leaf_hash(&records[index as usize * RECORD_LEN..(index as usize + 1) * RECORD_LEN]);
    let mut g = c.benchmark_group("merkle_1M");
    g.sample_size(10);
    g.bench_function("inclusion_proof_verify", |b| {
        b.iter(|| verify_inclusion(black_box(&leaf), index, N, black_box(&path), &root).unwrap())
    });
    g.bench_function("inclusion_proof_build", |b| {
        b.iter(|| tree.inclusion_proof(black_box(index), N).unwrap())
    });
    let old_root = tree.root(old).unwrap();
    g.bench_function("consistency_proof_verify", |b| {
        b.iter(|| verify_consistency(old, N, &old_root, &root, black_box(&cons)).unwrap())
    });
    g.bench_function("tree_build_from_records", |b| {
        b.iter_batched(
            || (),
            |_| MerkleTree::from_leaves(records.chunks_exact(RECORD_LEN)),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = floor_vs_append, verification, proofs
}
criterion_main!(benches);
