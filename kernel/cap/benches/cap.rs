//! Criterion benches of the capability kernel's hot paths.
//!
//! Targets (issue 4): P1 check ≤ 5 ns, P2 ≤ 20 ns, P3 chain walk at depth 8
//! without the signature ≤ 100 ns; Ed25519 verification, derive and a
//! 1 000-descendant subtree revoke as measured.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rvm_abi::{CapHandle, Hypercall, ObjectKind, ProofTier, Rights};
use rvm_cap::proof::{approval_message, authority_key, sign_operation, RootRef};
use rvm_cap::tiers::TierMap;
use rvm_cap::*;

const SEED: [u8; 32] = [0x5e; 32];
const OBJ: ObjectRef = ObjectRef::new(ObjectKind::Region, 1);

fn params(tier: ProofTier) -> CapParams {
    let rights = Rights::READ | Rights::WRITE | Rights::GRANT | Rights::REVOKE;
    CapParams {
        object: OBJ,
        rights,
        tiers: TierMap::uniform(rights, tier).to_table(rights),
        expiry: Timestamp::NEVER,
        window: ByteWindow::new(0, 1 << 20).unwrap(),
        quota: Quota {
            calls: u32::MAX - 1,
            bytes: u64::MAX - 1,
        },
        authority: Some(authority_key(&SEED)),
        resource: [0; 16],
    }
}

/// Rights READ and WRITE at P3, GRANT and REVOKE at P1: chains can be built
/// without approvals while uses of the leaf run at P3.
fn p3_use_params() -> CapParams {
    let rights = Rights::READ | Rights::WRITE | Rights::GRANT | Rights::REVOKE;
    // RIGHT_NAMES order: READ, WRITE, GRANT, REVOKE, EXECUTE, PROVE, GRANT_ONCE
    CapParams {
        tiers: [3, 3, 1, 1, 0, 0, 0],
        ..params(ProofTier::P3)
    }
    .with_rights(rights)
}

trait WithRights {
    fn with_rights(self, rights: Rights) -> Self;
}

impl WithRights for CapParams {
    fn with_rights(mut self, rights: Rights) -> Self {
        self.rights = rights;
        self
    }
}

fn space_with(partitions: u32, slots: u16) -> CapabilitySpace {
    let mut s = CapabilitySpace::new(SpacePolicy {
        slots_per_partition: slots,
        ..SpacePolicy::DEFAULT
    });
    for p in 0..partitions {
        s.add_partition(PartitionId(p)).unwrap();
    }
    s.set_boot_id(BOOT_ID);
    s
}

const BOOT_ID: [u8; 32] = [0x5b; 32];

/// A chain of `depth` derives below a root in partition 0, alternating
/// through eight partitions; returns the leaf.
fn chain(s: &mut CapabilitySpace, root: CapHandle, depth: u8) -> (PartitionId, CapHandle) {
    let req = Request::at(Timestamp(0), Epoch(0));
    let d = DeriveParams::rights(Rights::READ | Rights::WRITE | Rights::GRANT);
    let (mut p, mut h) = (PartitionId(0), root);
    for i in 0..depth {
        let next = PartitionId(u32::from(i % 7) + 1);
        h = s.derive(p, h, next, &d, &req, None).unwrap().handle;
        p = next;
    }
    (p, h)
}

/// Time `iters` calls of `f`, keeping each result alive with
/// `std::hint::black_box` (criterion 0.5's own `black_box` without the
/// `real_blackbox` feature reads the result byte by byte with volatile loads,
/// which costs more than a P1 check).
fn timed<T>(iters: u64, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    start.elapsed()
}

/// Fold a grant into one word, as the dispatcher consumes it (object to act
/// on, tier and capability id for the witness record).
fn digest(g: Granted) -> u64 {
    u64::from(g.cap)
        ^ (u64::from(g.object.id.0) << 32)
        ^ (g.tier as u64)
        ^ ((g.object.kind as u64) << 8)
}

/// What the machine does in the time of a trivial operation, to read the
/// other figures against (the benches share a loaded host).
fn baseline(c: &mut Criterion) {
    let v: Vec<u64> = (0..256).collect();
    c.bench_function("baseline/vec_index_add", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                black_box(&v)[black_box(37usize)].wrapping_add(black_box(1))
            })
        })
    });
}

fn checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("check");

    // P1: a handle among 64 live ones.
    let mut s = space_with(2, 256);
    let handles: Vec<_> = (0..64)
        .map(|_| s.install(PartitionId(1), &params(ProofTier::P1)).unwrap())
        .collect();
    let h = handles[37];
    let req = Request::at(Timestamp(10), Epoch(0));
    // The handle arrives as a register and is decoded, as in dispatch.
    g.bench_function("p1_granted", |b| {
        let raw = h.to_raw();
        b.iter_custom(|iters| {
            timed(iters, || {
                let Some(h) = CapHandle::from_raw(black_box(raw)) else {
                    return u64::MAX;
                };
                s.check(
                    black_box(PartitionId(1)),
                    h,
                    black_box(Rights::READ),
                    &req,
                    None,
                )
                .map_or(0, digest)
            })
        })
    });
    g.bench_function("p1_denied_bad_handle", |b| {
        let raw = CapHandle::new(37, 9).to_raw();
        b.iter_custom(|iters| {
            timed(iters, || {
                let Some(h) = CapHandle::from_raw(black_box(raw)) else {
                    return u64::MAX;
                };
                s.check(
                    black_box(PartitionId(1)),
                    h,
                    black_box(Rights::READ),
                    &req,
                    None,
                )
                .map_or_else(|d| d.error as u64, digest)
            })
        })
    });

    // P2: expiry, window, nonce and quota, with state committed each time.
    let mut s = space_with(2, 256);
    for _ in 0..37 {
        s.install(PartitionId(1), &params(ProofTier::P1)).unwrap();
    }
    let h = s.install(PartitionId(1), &params(ProofTier::P2)).unwrap();
    let mut nonce = 0u64;
    g.bench_function("p2_granted", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                nonce += 1;
                let req = Request {
                    now: Timestamp(1_000),
                    epoch: Epoch(0),
                    access: Some(Access {
                        offset: 4096,
                        len: 64,
                    }),
                    nonce: Some(Nonce(nonce)),
                };
                s.check(
                    black_box(PartitionId(1)),
                    black_box(h),
                    black_box(Rights::WRITE),
                    black_box(&req),
                    None,
                )
                .map_or(0, digest)
            })
        })
    });

    // P3 chain walk at depth 8, no signature.
    let mut s = space_with(8, 256);
    let root = s.install(PartitionId(0), &p3_use_params()).unwrap();
    let (leaf_p, leaf) = chain(&mut s, root, MAX_DERIVATION_DEPTH);
    let leaf_root = s.root(leaf_p, leaf).unwrap();
    assert_eq!(
        s.required_tier(leaf_p, leaf, Rights::WRITE),
        Ok(ProofTier::P3)
    );
    assert_eq!(s.query(leaf_p, leaf).unwrap().depth, 8);
    g.bench_function("p3_chain_walk_depth8", |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                s.verify_chain(black_box(leaf_p), black_box(leaf), black_box(Timestamp(5)))
            })
        })
    });

    // Full P3 check at depth 8, signature included (a fresh approval per
    // iteration, signed outside the timed part).
    let mut nonce = 0u64;
    let args = ArgsDigest::of(&[4096, 64], &[0xab; 64]);
    g.bench_function("p3_full_depth8", |b| {
        b.iter_batched(
            || {
                nonce += 1;
                (
                    Nonce(nonce),
                    sign_operation(
                        &SEED,
                        &approval_message(
                            Hypercall::RegionWrite,
                            OBJ,
                            leaf_p,
                            leaf_root,
                            Nonce(nonce),
                            BOOT_ID,
                            &args,
                        ),
                    ),
                )
            },
            |(n, sig)| {
                let req = Request {
                    now: Timestamp(1_000),
                    epoch: Epoch(0),
                    access: Some(Access {
                        offset: 4096,
                        len: 64,
                    }),
                    nonce: Some(n),
                };
                let proof = Proof {
                    op: Hypercall::RegionWrite,
                    args,
                    signature: &sig,
                };
                s.check(leaf_p, leaf, Rights::WRITE, &req, Some(&proof))
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn ed25519(c: &mut Criterion) {
    use rvm_cap::ed25519_dalek::{Signature as Sig, VerifyingKey};
    let key = VerifyingKey::from_bytes(&authority_key(&SEED).0).unwrap();
    let args = ArgsDigest::of(&[1, 2], &[]);
    let root = RootRef {
        partition: 1,
        index: 0,
        generation: 0,
    };
    let m = approval_message(
        Hypercall::CapDerive,
        OBJ,
        PartitionId(1),
        root,
        Nonce(1),
        BOOT_ID,
        &args,
    );
    let msg = m.to_bytes();
    let sig = sign_operation(&SEED, &m);
    let sig = Sig::from_bytes(&sig.0);
    c.bench_function("ed25519/verify_strict", |b| {
        b.iter(|| {
            black_box(&key)
                .verify_strict(black_box(&msg), black_box(&sig))
                .unwrap()
        })
    });
    c.bench_function("ed25519/args_digest_2_words", |b| {
        b.iter(|| ArgsDigest::of(black_box(&[1, 2]), &[]))
    });
}

fn derive_and_revoke(c: &mut Criterion) {
    let req = Request::at(Timestamp(0), Epoch(0));
    let d = DeriveParams::rights(Rights::READ);
    c.bench_function("derive/p1_into_other_partition", |b| {
        b.iter_batched_ref(
            || {
                let mut s = space_with(2, 16);
                let root = s.install(PartitionId(0), &params(ProofTier::P1)).unwrap();
                // Give the parent siblings' worth of children already.
                for _ in 0..4 {
                    s.derive(PartitionId(0), root, PartitionId(1), &d, &req, None)
                        .unwrap();
                }
                (s, root)
            },
            |(s, root)| {
                s.derive(PartitionId(0), *root, PartitionId(1), &d, &req, None)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });

    // 1 000 descendants: 100 children of the root in partition 1, each the
    // head of a chain of 6 more (depths 2..=7) through partitions 2..=4, whose
    // last link has 3 children at depth 8: 10 per group, down to the
    // deepest level allowed.
    let build = || {
        let mut s = space_with(5, 1024);
        let rights = Rights::READ | Rights::GRANT;
        let root = s.install(PartitionId(0), &params(ProofTier::P1)).unwrap();
        let dp = DeriveParams::rights(rights);
        let mut count = 0;
        for _ in 0..100 {
            let mut p = PartitionId(1);
            let mut h = s
                .derive(PartitionId(0), root, p, &dp, &req, None)
                .unwrap()
                .handle;
            count += 1;
            for i in 0..6u32 {
                let next = PartitionId(2 + i % 3);
                h = s.derive(p, h, next, &dp, &req, None).unwrap().handle;
                p = next;
                count += 1;
            }
            for leaf in 2..5 {
                s.derive(p, h, PartitionId(leaf), &dp, &req, None).unwrap();
                count += 1;
            }
        }
        assert_eq!(count, 1000);
        (s, root)
    };
    c.bench_function("revoke/subtree_1000_descendants", |b| {
        b.iter_batched_ref(
            build,
            |(s, root)| {
                let r = s.revoke(PartitionId(0), *root, &req, None).unwrap();
                assert_eq!(r.removed, 1000);
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = baseline, checks, ed25519, derive_and_revoke
}
criterion_main!(benches);
