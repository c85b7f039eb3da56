//! Property tests of the capability algebra: random operation sequences
//! checked against a shadow model of the derivation forest.
//!
//! * derivation never amplifies rights, window, expiry or quota;
//! * after a revoke (or an eviction) no descendant is usable, ever again, and
//!   nothing else was removed;
//! * a GRANT_ONCE capability derives at most once under any interleaving;
//! * no sequence of operations, with arbitrary handles and arguments, panics.

use proptest::prelude::*;
use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, ProofTier, Rights};
use rvm_cap::proof::{
    approval_message, authority_key, revoke_args_digest, sign_operation, RootRef,
};
use rvm_cap::tiers::TierMap;
use rvm_cap::*;

const SEED: [u8; 32] = [0x42; 32];
const PARTITIONS: u32 = 4;
const NOW: Timestamp = Timestamp(1_000);

#[derive(Clone, Debug)]
enum Op {
    Install {
        p: u32,
        rights: u8,
        tier: u8,
        expiry: u64,
        window: (u64, u64),
        calls: u32,
    },
    /// `narrow`: request only rights the parent holds (most derives), so the
    /// tree grows; otherwise the requested rights are arbitrary.
    /// `caller`: `None` = the partition holding the picked capability;
    /// `Some` = present its handle from that partition instead.
    Derive {
        caller: Option<u32>,
        pick: usize,
        target: u32,
        rights: u8,
        narrow: bool,
        expiry: Option<u64>,
        window: Option<(u64, u64)>,
        calls: Option<u32>,
        sign: bool,
    },
    Revoke {
        pick: usize,
        sign: bool,
    },
    Use {
        pick: usize,
        rights: u8,
        access: Option<(u64, u64)>,
        epoch: u64,
    },
    Forged {
        p: u32,
        raw: u64,
        rights: u8,
    },
    Suspend {
        p: u32,
    },
    Resume {
        p: u32,
    },
    Evict {
        p: u32,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PARTITIONS + 1; // one id without a table
    prop_oneof![
        // Most roots may grant and revoke, so that trees grow.
        3 => (p.clone(), any::<u8>(), proptest::bool::weighted(0.7), 1u8..=3, 500u64..5_000, (0u64..200, 0u64..200),
              prop_oneof![3 => Just(0u32), 2 => 1u32..5])
            .prop_map(|(p, rights, delegable, tier, expiry, window, calls)| {
                let rights = if delegable { rights | (Rights::GRANT | Rights::REVOKE).bits() } else { rights };
                Op::Install { p, rights, tier, expiry, window, calls }
            }),
        8 => (proptest::option::weighted(0.15, p.clone()), any::<usize>(), p.clone(), any::<u8>(), proptest::bool::weighted(0.8),
              proptest::option::weighted(0.3, 500u64..6_000),
              proptest::option::weighted(0.3, (0u64..250, 0u64..250)),
              proptest::option::weighted(0.3, 0u32..6), proptest::bool::weighted(0.8))
            .prop_map(|(caller, pick, target, rights, narrow, expiry, window, calls, sign)|
                Op::Derive { caller, pick, target, rights, narrow, expiry, window, calls, sign }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, sign)| Op::Revoke { pick, sign }),
        3 => (any::<usize>(), any::<u8>(), proptest::option::of((0u64..300, 0u64..300)), 0u64..3)
            .prop_map(|(pick, rights, access, epoch)| Op::Use { pick, rights, access, epoch }),
        2 => (p.clone(), any::<u64>(), any::<u8>()).prop_map(|(p, raw, rights)| Op::Forged { p, raw, rights }),
        1 => p.clone().prop_map(|p| Op::Suspend { p }),
        4 => p.clone().prop_map(|p| Op::Resume { p }),
        1 => (0..PARTITIONS * 8).prop_map(|p| Op::Evict { p }), // rarely a real one
    ]
}

/// One capability the test has seen created.
#[derive(Clone, Debug)]
struct Known {
    p: PartitionId,
    h: CapHandle,
    parent: Option<usize>,
    alive: bool,
    /// Held GRANT_ONCE without GRANT when created.
    once_only: bool,
    derives: u32,
}

struct Harness {
    space: CapabilitySpace,
    known: Vec<Known>,
    suspended: [bool; PARTITIONS as usize + 1],
    evicted: [bool; PARTITIONS as usize + 1],
    nonce: u64,
}

fn rights_of(bits: u8) -> Rights {
    Rights::from_bits_truncate(bits)
}

/// The boot the approvals are signed for.
const BOOT_ID: [u8; 32] = [0x5b; 32];
/// What an approval names when the handle has no root (it is dead: the
/// operation is refused before the signature matters).
const NO_ROOT: RootRef = RootRef {
    partition: u32::MAX,
    index: 0,
    generation: 0,
};

impl Harness {
    fn new() -> Harness {
        let mut space = CapabilitySpace::new(SpacePolicy {
            slots_per_partition: 12,
            ..SpacePolicy::DEFAULT
        });
        for p in 0..PARTITIONS {
            space.add_partition(PartitionId(p)).unwrap();
        }
        space.set_boot_id(BOOT_ID);
        Harness {
            space,
            known: Vec::new(),
            suspended: Default::default(),
            evicted: Default::default(),
            nonce: 0,
        }
    }

    fn next_nonce(&mut self) -> Nonce {
        self.nonce += 1;
        Nonce(self.nonce)
    }

    fn pick(&self, pick: usize) -> Option<usize> {
        (!self.known.is_empty()).then(|| pick % self.known.len())
    }

    fn kill_subtree(&mut self, at: usize, include_root: bool) -> u32 {
        let mut killed = 0;
        if include_root && self.known[at].alive {
            self.known[at].alive = false;
            killed += 1;
        }
        for i in 0..self.known.len() {
            if self.known[i].parent == Some(at) {
                killed += self.kill_subtree(i, true);
            }
        }
        killed
    }

    fn apply(&mut self, op: &Op) {
        let req = |n: Option<Nonce>| Request {
            now: NOW,
            epoch: Epoch(0),
            access: None,
            nonce: n,
        };
        match *op {
            Op::Install {
                p,
                rights,
                tier,
                expiry,
                window,
                calls,
            } => {
                let rights = rights_of(rights);
                let tier = ProofTier::from_u8(tier).unwrap();
                let params = CapParams {
                    object: ObjectRef::new(ObjectKind::Region, 1),
                    rights,
                    tiers: TierMap::uniform(rights, tier).to_table(rights),
                    expiry: Timestamp(expiry),
                    window: ByteWindow::from_table(window.0, window.1).unwrap(),
                    quota: Quota::from_table(calls),
                    authority: Some(authority_key(&SEED)),
                    resource: [0; 16],
                };
                if let Ok(h) = self.space.install(PartitionId(p), &params) {
                    let once_only =
                        rights.contains(Rights::GRANT_ONCE) && !rights.contains(Rights::GRANT);
                    self.known.push(Known {
                        p: PartitionId(p),
                        h,
                        parent: None,
                        alive: true,
                        once_only,
                        derives: 0,
                    });
                }
            }
            Op::Derive {
                caller,
                pick,
                target,
                rights,
                narrow,
                expiry,
                window,
                calls,
                sign,
            } => {
                // Use a known capability from its own partition, or (when the
                // caller differs) as another partition's forged handle.
                let Some(i) = self.pick(pick) else { return };
                let parent = self.known[i].clone();
                let caller = caller.map_or(parent.p, PartitionId);
                let before = self.space.query(caller, parent.h);
                let mut rights = rights_of(rights);
                if narrow {
                    rights |= Rights::GRANT | Rights::REVOKE;
                    rights &= before.map_or(Rights::all(), |b| b.rights);
                }
                let params = DeriveParams {
                    rights,
                    expiry: expiry.map(Timestamp),
                    window: window.and_then(|(s, l)| ByteWindow::new(s, l)),
                    quota: calls.map(|c| Quota {
                        calls: c,
                        bytes: u64::MAX,
                    }),
                };
                let nonce = self.next_nonce();
                let target = PartitionId(target);
                let sig = sign.then(|| {
                    let obj = ObjectRef::new(ObjectKind::Region, 1);
                    let root = self.space.root(caller, parent.h).unwrap_or(NO_ROOT);
                    sign_operation(
                        &SEED,
                        &approval_message(
                            Hypercall::CapDerive,
                            obj,
                            caller,
                            root,
                            nonce,
                            BOOT_ID,
                            &params.args_digest(target),
                        ),
                    )
                });
                match self.space.derive(
                    caller,
                    parent.h,
                    target,
                    &params,
                    &req(Some(nonce)),
                    sig.as_ref(),
                ) {
                    Ok(d) => {
                        // A handle is a number in the caller's table: the
                        // capability used must be one the model knows alive
                        // there (another partition's handle only reaches a
                        // capability of the caller's own).
                        let i = self
                            .known
                            .iter()
                            .position(|k| k.p == caller && k.h == parent.h && k.alive)
                            .expect("derive used a capability the model does not hold alive");
                        let before =
                            before.expect("a derive succeeded from a handle query refuses");
                        let child = self.space.query(target, d.handle).unwrap();
                        // Never amplifies.
                        assert!(
                            before.rights.contains(child.rights),
                            "{before:?} -> {child:?}"
                        );
                        assert!(before.window.contains(child.window));
                        assert!(child.expiry <= before.expiry);
                        assert!(child.quota.within(before.quota));
                        assert_eq!(child.depth, before.depth + 1);
                        assert!(child.depth <= MAX_DERIVATION_DEPTH);
                        assert_eq!(child.object, before.object);
                        // Tiers never weaken.
                        for r in child.rights.iter() {
                            assert!(child.tier_for(r) >= before.tier_for(r));
                        }
                        // The chain re-check agrees (at a time before any
                        // expiry: a derive at P1 does not look at expiry).
                        if !self.suspended.iter().any(|s| *s) {
                            assert_eq!(
                                self.space.verify_chain(target, d.handle, Timestamp(0)),
                                Ok(())
                            );
                        }
                        self.known[i].derives += 1;
                        if self.known[i].once_only {
                            assert_eq!(d.used, Rights::GRANT_ONCE);
                            assert_eq!(self.known[i].derives, 1, "GRANT_ONCE derived twice");
                        }
                        let r = child.rights;
                        let once_only =
                            r.contains(Rights::GRANT_ONCE) && !r.contains(Rights::GRANT);
                        self.known.push(Known {
                            p: target,
                            h: d.handle,
                            parent: Some(i),
                            alive: true,
                            once_only,
                            derives: 0,
                        });
                    }
                    Err(denied) => {
                        assert_eq!(denied.cap, parent.h.witness_id());
                        if parent.once_only
                            && parent.derives >= 1
                            && caller == parent.p
                            && parent.alive
                            && !self.suspended[parent.p.0 as usize]
                        {
                            assert_eq!(denied.error, HvError::GrantConsumed);
                        }
                    }
                }
            }
            Op::Revoke { pick, sign } => {
                let Some(i) = self.pick(pick) else { return };
                let k = self.known[i].clone();
                let nonce = self.next_nonce();
                let sig = sign.then(|| {
                    let obj = ObjectRef::new(ObjectKind::Region, 1);
                    let root = self.space.root(k.p, k.h).unwrap_or(NO_ROOT);
                    sign_operation(
                        &SEED,
                        &approval_message(
                            Hypercall::CapRevoke,
                            obj,
                            k.p,
                            root,
                            nonce,
                            BOOT_ID,
                            &revoke_args_digest(),
                        ),
                    )
                });
                if let Ok(report) = self.space.revoke(k.p, k.h, &req(Some(nonce)), sig.as_ref()) {
                    assert!(k.alive);
                    let killed = self.kill_subtree(i, false);
                    assert_eq!(
                        report.removed, killed,
                        "removed count differs from the model"
                    );
                }
            }
            Op::Use {
                pick,
                rights,
                access,
                epoch,
            } => {
                let Some(i) = self.pick(pick) else { return };
                let k = self.known[i].clone();
                let r = Request {
                    now: NOW,
                    epoch: Epoch(epoch),
                    access: access.map(|(offset, len)| Access { offset, len }),
                    nonce: Some(self.next_nonce()),
                };
                if self
                    .space
                    .check(k.p, k.h, rights_of(rights), &r, None)
                    .is_ok()
                {
                    assert!(k.alive, "a revoked capability was usable");
                }
            }
            Op::Forged { p, raw, rights } => {
                let Some(h) = CapHandle::from_raw(raw & 0xffff_ffff_ffff) else {
                    return;
                };
                let r = req(Some(self.next_nonce()));
                if self
                    .space
                    .check(PartitionId(p), h, rights_of(rights), &r, None)
                    .is_ok()
                {
                    // Only a handle the model knows alive in that partition may work.
                    assert!(self.known.iter().any(|k| k.p.0 == p && k.h == h && k.alive));
                }
            }
            Op::Suspend { p } => {
                if self.space.suspend_partition(PartitionId(p)).is_ok() {
                    self.suspended[p as usize] = true;
                }
            }
            Op::Resume { p } => {
                if self.space.resume_partition(PartitionId(p)).is_ok() {
                    self.suspended[p as usize] = false;
                }
            }
            Op::Evict { p } => {
                if let Ok(removed) = self.space.revoke_partition(PartitionId(p)) {
                    let mut killed = 0;
                    for i in 0..self.known.len() {
                        if self.known[i].p == PartitionId(p) {
                            killed += self.kill_subtree(i, true);
                        }
                    }
                    assert_eq!(
                        removed, killed,
                        "eviction removed a different set than the model"
                    );
                    self.evicted[p as usize] = true;
                    self.suspended[p as usize] = false;
                }
            }
        }
    }

    /// Every handle the model knows resolves exactly as the model says.
    fn audit(&self) {
        for k in &self.known {
            let got = self.space.query(k.p, k.h);
            if self.suspended[k.p.0 as usize] {
                assert_eq!(got.err(), Some(HvError::Suspended));
            } else if k.alive {
                assert!(got.is_ok(), "{k:?} should be alive: {got:?}");
            } else {
                let e = got.expect_err("a revoked capability is still there");
                assert!(
                    matches!(e, HvError::Revoked | HvError::StaleHandle),
                    "{k:?}: {e:?}"
                );
            }
        }
        let live = |p: u32| self.known.iter().filter(|k| k.p.0 == p && k.alive).count();
        for p in 0..PARTITIONS {
            assert_eq!(
                self.space.live_count(PartitionId(p)).map(usize::from),
                Some(live(p))
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_the_algebra(ops in proptest::collection::vec(op(), 1..80)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
            h.audit();
        }
    }
}

/// GRANT_ONCE under interleavings: many GRANT_ONCE holders, derives from them
/// interleaved with revokes of their children, evictions and re-derives by
/// their own children; each holder derives at most once.
#[derive(Clone, Debug)]
enum OnceOp {
    Derive { holder: usize, target: u32 },
    RevokeChildren { holder: usize },
    EvictTarget { target: u32 },
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn grant_once_derives_at_most_once(ops in proptest::collection::vec(
        prop_oneof![
            4 => (0usize..4, 1u32..4).prop_map(|(holder, target)| OnceOp::Derive { holder, target }),
            1 => (0usize..4).prop_map(|holder| OnceOp::RevokeChildren { holder }),
            1 => (1u32..4).prop_map(|target| OnceOp::EvictTarget { target }),
        ], 1..60))
    {
        let mut space = CapabilitySpace::default();
        for p in 0..4 {
            space.add_partition(PartitionId(p)).unwrap();
        }
        let rights = Rights::READ | Rights::GRANT_ONCE | Rights::REVOKE;
        let params = CapParams {
            object: ObjectRef::new(ObjectKind::Channel, 3),
            rights,
            tiers: TierMap::ALL_P1.to_table(rights),
            expiry: Timestamp::NEVER,
            window: ByteWindow::WHOLE,
            quota: Quota::UNLIMITED,
            authority: None,
            resource: [0; 16],
        };
        let holders: Vec<CapHandle> = (0..4).map(|_| space.install(PartitionId(0), &params).unwrap()).collect();
        let mut successes = [0u32; 4];
        let req = Request::at(Timestamp(0), Epoch(0));
        for op in &ops {
            match *op {
                OnceOp::Derive { holder, target } => {
                    let d = DeriveParams::rights(Rights::READ | Rights::GRANT_ONCE);
                    match space.derive(PartitionId(0), holders[holder], PartitionId(target), &d, &req, None) {
                        Ok(_) => successes[holder] += 1,
                        Err(denied) => {
                            prop_assert!(successes[holder] >= 1 || space.partition_state(PartitionId(target)) != Some(PartitionCapState::Active));
                            if successes[holder] >= 1 {
                                prop_assert_eq!(denied.error, HvError::GrantConsumed);
                            }
                        }
                    }
                }
                OnceOp::RevokeChildren { holder } => {
                    space.revoke(PartitionId(0), holders[holder], &req, None).unwrap();
                }
                OnceOp::EvictTarget { target } => {
                    let _ = space.revoke_partition(PartitionId(target));
                }
            }
            prop_assert!(successes.iter().all(|&n| n <= 1), "{successes:?}");
        }
    }
}

/// Revocation over deep, wide forests spread across partitions: every
/// capability of a revoked subtree is unusable at once and forever after,
/// every other capability still works, and the removed count is exact.
#[derive(Clone, Debug)]
enum ForestOp {
    Derive { from: usize, to: u32 },
    Revoke { at: usize },
    Evict { p: u32 },
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn after_revoke_no_descendant_is_usable(ops in proptest::collection::vec(
        prop_oneof![
            12 => (any::<usize>(), 0u32..4).prop_map(|(from, to)| ForestOp::Derive { from, to }),
            2 => any::<usize>().prop_map(|at| ForestOp::Revoke { at }),
            1 => (0u32..12).prop_map(|p| ForestOp::Evict { p }),
        ], 1..200))
    {
        let mut space = CapabilitySpace::new(SpacePolicy { slots_per_partition: 64, ..SpacePolicy::DEFAULT });
        for p in 0..4 {
            space.add_partition(PartitionId(p)).unwrap();
        }
        let rights = Rights::READ | Rights::GRANT | Rights::REVOKE;
        let params = CapParams {
            object: ObjectRef::new(ObjectKind::StateStore, 1),
            rights,
            tiers: TierMap::ALL_P1.to_table(rights),
            expiry: Timestamp::NEVER,
            window: ByteWindow::WHOLE,
            quota: Quota::UNLIMITED,
            authority: None,
            resource: [0; 16],
        };
        // (partition, handle, parent index, alive, depth)
        let mut known: Vec<(PartitionId, CapHandle, Option<usize>, bool, u8)> = Vec::new();
        for p in 0..2 {
            let h = space.install(PartitionId(p), &params).unwrap();
            known.push((PartitionId(p), h, None, true, 0));
        }
        let req = Request::at(Timestamp(0), Epoch(0));
        for op in &ops {
            match *op {
                ForestOp::Derive { from, to } => {
                    let i = from % known.len();
                    let (p, h, _, alive, depth) = known[i];
                    let r = space.derive(p, h, PartitionId(to), &DeriveParams::rights(rights), &req, None);
                    match r {
                        Ok(d) => {
                            prop_assert!(alive);
                            known.push((PartitionId(to), d.handle, Some(i), true, depth + 1));
                        }
                        Err(e) => prop_assert!(
                            !alive || depth == MAX_DERIVATION_DEPTH
                                || space.partition_state(PartitionId(to)) == Some(PartitionCapState::Evicted)
                                || e.error == HvError::Full,
                            "unexpected {:?}", e
                        ),
                    }
                }
                ForestOp::Revoke { at } => {
                    let i = at % known.len();
                    let (p, h, _, alive, _) = known[i];
                    match space.revoke(p, h, &req, None) {
                        Ok(report) => {
                            prop_assert!(alive);
                            // Mark the model's subtree (children come after
                            // their parents in `known`).
                            let mut dead = vec![false; known.len()];
                            let mut removed = 0;
                            for j in 0..known.len() {
                                let under = known[j].2.is_some_and(|q| q == i || dead[q]);
                                if under && known[j].3 {
                                    dead[j] = true;
                                    known[j].3 = false;
                                    removed += 1;
                                } else if under {
                                    dead[j] = true;
                                }
                            }
                            prop_assert_eq!(report.removed, removed);
                        }
                        Err(e) => prop_assert!(!alive, "live capability refused revoke: {:?}", e),
                    }
                }
                ForestOp::Evict { p } => {
                    if space.revoke_partition(PartitionId(p)).is_ok() {
                        let mut dead = vec![false; known.len()];
                        for j in 0..known.len() {
                            let under = known[j].0 == PartitionId(p) || known[j].2.is_some_and(|q| dead[q]);
                            if under {
                                dead[j] = true;
                                known[j].3 = false;
                            }
                        }
                    }
                }
            }
            for &(p, h, _, alive, _) in &known {
                let used = space.check(p, h, Rights::READ, &req, None);
                if alive {
                    prop_assert!(used.is_ok(), "{:?}", used);
                } else {
                    let e = used.unwrap_err().error;
                    prop_assert!(matches!(e, HvError::Revoked | HvError::StaleHandle), "{:?}", e);
                }
            }
        }
    }
}
