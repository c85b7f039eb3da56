//! Unit tests of the capability space: one test per denial reason, each
//! asserting the exact error, plus the success paths they guard.

use rvm_abi::{CapHandle, HvError, Hypercall, ObjectKind, ProofTier, Rights};

use crate::proof::{approval_message, authority_key, revoke_args_digest, sign_operation, RootRef};
use crate::tiers::TierMap;
use crate::*;

const SEED: [u8; 32] = [0x11; 32];
const OTHER_SEED: [u8; 32] = [0x22; 32];
const P1: PartitionId = PartitionId(1);
const P2: PartitionId = PartitionId(2);
const P3: PartitionId = PartitionId(3);
const REGION: ObjectRef = ObjectRef::new(ObjectKind::Region, 7);

fn space() -> CapabilitySpace {
    let mut s = CapabilitySpace::new(SpacePolicy {
        slots_per_partition: 16,
        ..SpacePolicy::DEFAULT
    });
    for p in [P1, P2, P3] {
        s.add_partition(p).unwrap();
    }
    s.set_boot_id(BOOT_ID);
    s
}

/// The boot the tests' approvals are signed for.
const BOOT_ID: [u8; 32] = [0xb0; 32];
/// The first capability installed into P1: the root the tests' approvals name.
const ROOT: RootRef = RootRef {
    partition: 1,
    index: 0,
    generation: 0,
};

/// Every right, each at `tier`.
fn params(tier: ProofTier) -> CapParams {
    CapParams {
        object: REGION,
        rights: Rights::all().difference(Rights::GRANT_ONCE),
        tiers: TierMap::uniform(Rights::all(), tier)
            .to_table(Rights::all().difference(Rights::GRANT_ONCE)),
        expiry: Timestamp::NEVER,
        window: ByteWindow::WHOLE,
        quota: Quota::UNLIMITED,
        authority: Some(authority_key(&SEED)),
        resource: [0; 16],
    }
}

fn req() -> Request {
    Request::at(Timestamp(1_000), Epoch(0))
}

fn err<T: core::fmt::Debug>(r: Result<T, Denied>) -> HvError {
    r.unwrap_err().error
}

fn check(
    s: &mut CapabilitySpace,
    p: PartitionId,
    h: CapHandle,
    needed: Rights,
) -> Result<Granted, Denied> {
    s.check(p, h, needed, &req(), None)
}

// ---------------------------------------------------------------- handles

#[test]
fn out_of_range_and_never_issued_handles_are_bad() {
    let mut s = space();
    let h = s.install(P1, &params(ProofTier::P1)).unwrap();
    assert_eq!(
        check(&mut s, P1, h, Rights::READ).unwrap().tier,
        ProofTier::P1
    );
    assert_eq!(
        err(check(&mut s, P1, CapHandle::new(1, 0), Rights::READ)),
        HvError::BadHandle
    );
    assert_eq!(
        err(check(&mut s, P1, CapHandle::new(u16::MAX, 0), Rights::READ)),
        HvError::BadHandle
    );
    // A generation that was never issued (forged) is bad, not stale.
    assert_eq!(
        err(check(&mut s, P1, CapHandle::new(0, 1), Rights::READ)),
        HvError::BadHandle
    );
    // A partition without a table.
    assert_eq!(
        err(check(&mut s, PartitionId(99), h, Rights::READ)),
        HvError::BadHandle
    );
}

#[test]
fn another_partitions_handle_does_not_reach_its_capability() {
    let mut s = space();
    s.install(P1, &params(ProofTier::P1)).unwrap();
    let theirs = s.install(P1, &params(ProofTier::P1)).unwrap();
    s.install(P2, &params(ProofTier::P1)).unwrap();
    assert_eq!(theirs.index, 1);
    assert_eq!(
        err(check(&mut s, P2, theirs, Rights::READ)),
        HvError::BadHandle
    );
    assert_eq!(
        err(s.query(P2, theirs).map_err(|e| Denied {
            error: e,
            tier: ProofTier::P1,
            cap: 0
        })),
        HvError::BadHandle
    );
}

#[test]
fn revoked_handle_answers_revoked_then_stale_once_its_slot_is_reused() {
    let mut s = CapabilitySpace::new(SpacePolicy {
        slots_per_partition: 2,
        ..SpacePolicy::DEFAULT
    });
    s.add_partition(P1).unwrap();
    s.add_partition(P2).unwrap();
    let root = s.install(P1, &params(ProofTier::P1)).unwrap();
    let child = s
        .derive(
            P1,
            root,
            P2,
            &DeriveParams::rights(Rights::READ),
            &req(),
            None,
        )
        .unwrap()
        .handle;
    let filler = s.install(P2, &params(ProofTier::P1)).unwrap();
    assert_ne!(child, filler);
    assert_eq!(s.revoke(P1, root, &req(), None).unwrap().removed, 1);
    // The very next use sees it.
    assert_eq!(
        err(check(&mut s, P2, child, Rights::READ)),
        HvError::Revoked
    );
    // P2's table is full of used slots, so the next capability takes the
    // revoked slot with a new generation.
    let again = s
        .derive(
            P1,
            root,
            P2,
            &DeriveParams::rights(Rights::READ),
            &req(),
            None,
        )
        .unwrap()
        .handle;
    assert_eq!(again.index, child.index);
    assert_eq!(again.generation, child.generation + 1);
    assert_eq!(
        err(check(&mut s, P2, child, Rights::READ)),
        HvError::StaleHandle
    );
    assert!(check(&mut s, P2, again, Rights::READ).is_ok());
}

#[test]
fn full_table_refuses_installs_and_derives() {
    let mut s = CapabilitySpace::new(SpacePolicy {
        slots_per_partition: 2,
        ..SpacePolicy::DEFAULT
    });
    s.add_partition(P1).unwrap();
    s.add_partition(P2).unwrap();
    let root = s.install(P1, &params(ProofTier::P1)).unwrap();
    s.install(P1, &params(ProofTier::P1)).unwrap();
    assert_eq!(s.install(P1, &params(ProofTier::P1)), Err(HvError::Full));
    let d = DeriveParams::rights(Rights::READ);
    s.derive(P1, root, P2, &d, &req(), None).unwrap();
    s.derive(P1, root, P2, &d, &req(), None).unwrap();
    let denied = s.derive(P1, root, P2, &d, &req(), None).unwrap_err();
    assert_eq!(denied.error, HvError::Full);
    assert_eq!(denied.cap, root.witness_id());
}

// ---------------------------------------------------------------- P1

#[test]
fn missing_right_is_no_rights() {
    let mut s = space();
    let mut p = params(ProofTier::P1);
    p.rights = Rights::READ;
    p.tiers = TierMap::ALL_P1.to_table(Rights::READ);
    let h = s.install(P1, &p).unwrap();
    assert!(check(&mut s, P1, h, Rights::READ).is_ok());
    let d = check(&mut s, P1, h, Rights::READ | Rights::WRITE).unwrap_err();
    assert_eq!(
        (d.error, d.tier, d.cap),
        (HvError::NoRights, ProofTier::P1, h.witness_id())
    );
    assert_eq!(
        err(s.derive(P1, h, P2, &DeriveParams::rights(Rights::READ), &req(), None)),
        HvError::NoRights
    );
    assert_eq!(err(s.revoke(P1, h, &req(), None)), HvError::NoRights);
}

#[test]
fn tier_is_the_strictest_of_the_needed_rights() {
    let mut s = space();
    let mut p = params(ProofTier::P1);
    p.rights = Rights::READ | Rights::WRITE | Rights::PROVE;
    // RIGHT_NAMES order: READ, WRITE, GRANT, REVOKE, EXECUTE, PROVE, GRANT_ONCE
    p.tiers = [1, 2, 0, 0, 0, 3, 0];
    let h = s.install(P1, &p).unwrap();
    assert_eq!(
        check(&mut s, P1, h, Rights::READ).unwrap().tier,
        ProofTier::P1
    );
    assert_eq!(
        check(&mut s, P1, h, Rights::READ | Rights::WRITE)
            .unwrap()
            .tier,
        ProofTier::P2
    );
    assert_eq!(
        s.required_tier(P1, h, Rights::READ | Rights::PROVE),
        Ok(ProofTier::P3)
    );
    let d = check(&mut s, P1, h, Rights::READ | Rights::PROVE).unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::BadProof, ProofTier::P3));
}

#[test]
fn suspended_partition_answers_suspended_until_resumed() {
    let mut s = space();
    let h = s.install(P1, &params(ProofTier::P1)).unwrap();
    s.suspend_partition(P1).unwrap();
    assert_eq!(err(check(&mut s, P1, h, Rights::READ)), HvError::Suspended);
    assert_eq!(s.query(P1, h), Err(HvError::Suspended));
    assert_eq!(
        err(s.derive(P1, h, P2, &DeriveParams::rights(Rights::READ), &req(), None)),
        HvError::Suspended
    );
    // Nothing can be derived into a fenced partition either.
    let h2 = s.install(P2, &params(ProofTier::P1)).unwrap();
    assert_eq!(
        err(s.derive(
            P2,
            h2,
            P1,
            &DeriveParams::rights(Rights::READ),
            &req(),
            None
        )),
        HvError::Suspended
    );
    s.resume_partition(P1).unwrap();
    assert!(check(&mut s, P1, h, Rights::READ).is_ok());
}

// ---------------------------------------------------------------- P2

#[test]
fn expired_capability_is_expired() {
    let mut s = space();
    let mut p = params(ProofTier::P2);
    p.expiry = Timestamp(5_000);
    let h = s.install(P1, &p).unwrap();
    let at = |t| Request::at(Timestamp(t), Epoch(0));
    assert!(s.check(P1, h, Rights::READ, &at(4_999), None).is_ok());
    let d = s.check(P1, h, Rights::READ, &at(5_000), None).unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::Expired, ProofTier::P2));
}

#[test]
fn access_outside_the_window_is_out_of_window() {
    let mut s = space();
    let mut p = params(ProofTier::P2);
    p.window = ByteWindow::new(4096, 4096).unwrap();
    let h = s.install(P1, &p).unwrap();
    let acc = |offset, len| req().with_access(Access { offset, len });
    assert!(s
        .check(P1, h, Rights::WRITE, &acc(4096, 4096), None)
        .is_ok());
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &acc(4095, 1), None)),
        HvError::OutOfWindow
    );
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &acc(8191, 2), None)),
        HvError::OutOfWindow
    );
    // A length that wraps the address space.
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &acc(4096, u64::MAX), None)),
        HvError::OutOfWindow
    );
}

#[test]
fn quota_runs_out_per_epoch() {
    let mut s = space();
    let mut p = params(ProofTier::P2);
    p.quota = Quota {
        calls: 3,
        bytes: 100,
    };
    let h = s.install(P1, &p).unwrap();
    let in_epoch =
        |e, len| Request::at(Timestamp(0), Epoch(e)).with_access(Access { offset: 0, len });
    for _ in 0..3 {
        s.check(P1, h, Rights::READ, &in_epoch(0, 10), None)
            .unwrap();
    }
    let d = s
        .check(P1, h, Rights::READ, &in_epoch(0, 10), None)
        .unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::QuotaExceeded, ProofTier::P2));
    // A new epoch refills; bytes run out too.
    s.check(P1, h, Rights::READ, &in_epoch(1, 100), None)
        .unwrap();
    assert_eq!(
        err(s.check(P1, h, Rights::READ, &in_epoch(1, 1), None)),
        HvError::QuotaExceeded
    );
    let info = s.query(P1, h).unwrap();
    assert_eq!(
        (info.usage_epoch, info.calls_used, info.bytes_used),
        (Epoch(1), 1, 100)
    );
}

#[test]
fn nonce_replay_is_replay() {
    let mut s = space();
    let h = s.install(P1, &params(ProofTier::P2)).unwrap();
    let n = |v| req().with_nonce(Nonce(v));
    assert_eq!(
        err(s.check(P1, h, Rights::READ, &n(0), None)),
        HvError::Replay
    );
    s.check(P1, h, Rights::READ, &n(5), None).unwrap();
    assert_eq!(
        err(s.check(P1, h, Rights::READ, &n(5), None)),
        HvError::Replay
    );
    assert_eq!(
        err(s.check(P1, h, Rights::READ, &n(4), None)),
        HvError::Replay
    );
    s.check(P1, h, Rights::READ, &n(6), None).unwrap();
}

#[test]
fn a_denied_use_changes_nothing() {
    let mut s = space();
    let mut p = params(ProofTier::P2);
    p.quota = Quota {
        calls: 1,
        bytes: u64::MAX,
    };
    p.window = ByteWindow::new(0, 10).unwrap();
    let h = s.install(P1, &p).unwrap();
    // Out of window with a fresh nonce: neither the nonce nor the call count.
    let bad = req()
        .with_nonce(Nonce(9))
        .with_access(Access { offset: 20, len: 1 });
    assert_eq!(
        err(s.check(P1, h, Rights::READ, &bad, None)),
        HvError::OutOfWindow
    );
    let good = req()
        .with_nonce(Nonce(9))
        .with_access(Access { offset: 0, len: 1 });
    s.check(P1, h, Rights::READ, &good, None).unwrap();
}

#[test]
fn p1_ignores_policy() {
    let mut s = space();
    let mut p = params(ProofTier::P1);
    p.expiry = Timestamp(1);
    p.quota = Quota { calls: 0, bytes: 0 };
    let h = s.install(P1, &p).unwrap();
    let r = req().with_nonce(Nonce(0)).with_access(Access {
        offset: u64::MAX,
        len: 9,
    });
    assert_eq!(
        s.check(P1, h, Rights::READ, &r, None).unwrap().tier,
        ProofTier::P1
    );
}

// ---------------------------------------------------------------- P3

fn signed(
    op: Hypercall,
    seed: &[u8; 32],
    p: PartitionId,
    nonce: u64,
    args: &ArgsDigest,
) -> Signature {
    sign_operation(
        seed,
        &approval_message(op, REGION, p, ROOT, Nonce(nonce), BOOT_ID, args),
    )
}

#[test]
fn p3_needs_a_valid_signature_by_the_bound_key() {
    let mut s = space();
    let h = s.install(P1, &params(ProofTier::P3)).unwrap();
    let args = ArgsDigest::of(&[0, 4], b"data");
    let r = |n| req().with_nonce(Nonce(n));
    let good = signed(Hypercall::RegionWrite, &SEED, P1, 1, &args);
    let proof = |sig| Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: sig,
    };

    // Missing proof, missing nonce.
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(1), None)),
        HvError::BadProof
    );
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &req(), Some(&proof(&good)))),
        HvError::BadProof
    );
    // Wrong key, wrong nonce, wrong operation, wrong arguments, corrupted.
    let wrong_key = signed(Hypercall::RegionWrite, &OTHER_SEED, P1, 1, &args);
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(1), Some(&proof(&wrong_key)))),
        HvError::BadProof
    );
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(2), Some(&proof(&good)))),
        HvError::BadProof
    );
    let other_op = Proof {
        op: Hypercall::RegionRead,
        args,
        signature: &good,
    };
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(1), Some(&other_op))),
        HvError::BadProof
    );
    let other_args = Proof {
        op: Hypercall::RegionWrite,
        args: ArgsDigest::of(&[0, 4], b"DATA"),
        signature: &good,
    };
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(1), Some(&other_args))),
        HvError::BadProof
    );
    let mut flipped = good;
    flipped.0[10] ^= 1;
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(1), Some(&proof(&flipped)))),
        HvError::BadProof
    );
    // Signed for another partition.
    let s2 = s.install(P2, &params(ProofTier::P3)).unwrap();
    assert_eq!(
        err(s.check(P2, s2, Rights::WRITE, &r(1), Some(&proof(&good)))),
        HvError::BadProof
    );

    // The good one passes once, and its replay is refused.
    let g = s
        .check(P1, h, Rights::WRITE, &r(1), Some(&proof(&good)))
        .unwrap();
    assert_eq!(g.tier, ProofTier::P3);
    assert_eq!(
        err(s.check(P1, h, Rights::WRITE, &r(1), Some(&proof(&good)))),
        HvError::Replay
    );
}

#[test]
fn p3_rights_need_an_authority_key_and_keys_must_be_sound() {
    let mut s = space();
    let mut p = params(ProofTier::P3);
    p.authority = None;
    assert_eq!(s.install(P1, &p), Err(HvError::InvalidArgument));
    let mut identity = [0u8; 32];
    identity[0] = 1;
    p.authority = Some(AuthorityKey(identity));
    assert_eq!(s.install(P1, &p), Err(HvError::InvalidArgument));
    // At P2 no key is needed.
    let mut p2 = params(ProofTier::P2);
    p2.authority = None;
    assert!(s.install(P1, &p2).is_ok());
}

#[test]
fn p3_rechecks_the_chain_fenced_ancestor_is_suspended() {
    let mut s = space();
    let root = s.install(P1, &params(ProofTier::P3)).unwrap();
    let d = DeriveParams::rights(Rights::READ | Rights::WRITE | Rights::GRANT);
    let sig = signed(Hypercall::CapDerive, &SEED, P1, 1, &d.args_digest(P2));
    let child = s
        .derive(P1, root, P2, &d, &req().with_nonce(Nonce(1)), Some(&sig))
        .unwrap()
        .handle;
    assert_eq!(s.verify_chain(P2, child, Timestamp(0)), Ok(()));
    s.suspend_partition(P1).unwrap();
    let d = s.verify_chain(P2, child, Timestamp(0)).unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::Suspended, ProofTier::P3));
    let args = ArgsDigest::of(&[], &[]);
    // Nonce 1 was the derive's: the tree's floor is shared.
    let sig = signed(Hypercall::RegionWrite, &SEED, P2, 2, &args);
    let proof = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig,
    };
    assert_eq!(
        err(s.check(
            P2,
            child,
            Rights::WRITE,
            &req().with_nonce(Nonce(2)),
            Some(&proof)
        )),
        HvError::Suspended
    );
    s.resume_partition(P1).unwrap();
    assert!(s
        .check(
            P2,
            child,
            Rights::WRITE,
            &req().with_nonce(Nonce(2)),
            Some(&proof)
        )
        .is_ok());
}

#[test]
fn p3_derive_and_revoke_need_their_own_signed_arguments() {
    let mut s = space();
    let root = s.install(P1, &params(ProofTier::P3)).unwrap();
    let d = DeriveParams::rights(Rights::READ);
    let wide = DeriveParams::rights(Rights::READ | Rights::WRITE);
    // An approval of a narrower derive does not authorise a wider one.
    let sig = signed(Hypercall::CapDerive, &SEED, P1, 1, &d.args_digest(P2));
    let r = req().with_nonce(Nonce(1));
    assert_eq!(
        err(s.derive(P1, root, P2, &wide, &r, Some(&sig))),
        HvError::BadProof
    );
    // Nor one into another partition.
    assert_eq!(
        err(s.derive(P1, root, P3, &d, &r, Some(&sig))),
        HvError::BadProof
    );
    let child = s.derive(P1, root, P2, &d, &r, Some(&sig)).unwrap();
    assert_eq!(child.granted.tier, ProofTier::P3);
    // A derive approval is not a revoke approval.
    let r2 = req().with_nonce(Nonce(2));
    let sig2 = signed(Hypercall::CapDerive, &SEED, P1, 2, &revoke_args_digest());
    assert_eq!(err(s.revoke(P1, root, &r2, Some(&sig2))), HvError::BadProof);
    let sig2 = signed(Hypercall::CapRevoke, &SEED, P1, 2, &revoke_args_digest());
    assert_eq!(s.revoke(P1, root, &r2, Some(&sig2)).unwrap().removed, 1);
    assert_eq!(
        err(check(&mut s, P2, child.handle, Rights::READ)),
        HvError::Revoked
    );
}

// ---------------------------------------------------------------- derive

#[test]
fn derive_never_amplifies() {
    let mut s = space();
    let mut p = params(ProofTier::P1);
    p.rights = Rights::READ | Rights::GRANT;
    p.tiers = TierMap::ALL_P1.to_table(p.rights);
    p.expiry = Timestamp(10_000);
    p.window = ByteWindow::new(100, 100).unwrap();
    p.quota = Quota {
        calls: 10,
        bytes: 1_000,
    };
    let root = s.install(P1, &p).unwrap();
    let base = DeriveParams::rights(Rights::READ);
    let derive =
        |s: &mut CapabilitySpace, d: DeriveParams| err(s.derive(P1, root, P2, &d, &req(), None));
    assert_eq!(
        derive(&mut s, DeriveParams::rights(Rights::READ | Rights::WRITE)),
        HvError::NoRights
    );
    assert_eq!(
        derive(&mut s, DeriveParams::rights(Rights::empty())),
        HvError::InvalidArgument
    );
    assert_eq!(
        derive(
            &mut s,
            DeriveParams {
                window: ByteWindow::new(99, 10),
                ..base
            }
        ),
        HvError::OutOfWindow
    );
    assert_eq!(
        derive(
            &mut s,
            DeriveParams {
                window: ByteWindow::new(150, 51),
                ..base
            }
        ),
        HvError::OutOfWindow
    );
    assert_eq!(
        derive(
            &mut s,
            DeriveParams {
                expiry: Some(Timestamp(10_001)),
                ..base
            }
        ),
        HvError::InvalidArgument
    );
    assert_eq!(
        derive(
            &mut s,
            DeriveParams {
                expiry: Some(Timestamp::NEVER),
                ..base
            }
        ),
        HvError::InvalidArgument
    );
    let more_calls = Quota {
        calls: 11,
        bytes: 1_000,
    };
    assert_eq!(
        derive(
            &mut s,
            DeriveParams {
                quota: Some(more_calls),
                ..base
            }
        ),
        HvError::InvalidArgument
    );
    let more_bytes = Quota {
        calls: 10,
        bytes: 1_001,
    };
    assert_eq!(
        derive(
            &mut s,
            DeriveParams {
                quota: Some(more_bytes),
                ..base
            }
        ),
        HvError::InvalidArgument
    );
    assert_eq!(s.live_count(P2), Some(0));

    // Within bounds it works, and inherited values are the parent's.
    let ok = DeriveParams {
        window: ByteWindow::new(150, 50),
        ..base
    };
    let child = s.derive(P1, root, P2, &ok, &req(), None).unwrap();
    assert_eq!(child.used, Rights::GRANT);
    let info = s.query(P2, child.handle).unwrap();
    assert_eq!(info.rights, Rights::READ);
    assert_eq!(info.window, ByteWindow::new(150, 50).unwrap());
    assert_eq!(info.expiry, Timestamp(10_000));
    assert_eq!(
        info.quota,
        Quota {
            calls: 10,
            bytes: 1_000
        }
    );
    assert_eq!(info.depth, 1);
    assert_eq!(info.object, REGION);
    // The child cannot grant: it did not get GRANT.
    assert_eq!(
        err(s.derive(P2, child.handle, P3, &base, &req(), None)),
        HvError::NoRights
    );
}

#[test]
fn depth_nine_is_refused() {
    let mut s = space();
    let mut h = s.install(P1, &params(ProofTier::P1)).unwrap();
    let mut at = P1;
    let d = DeriveParams::rights(Rights::READ | Rights::GRANT);
    for depth in 1..=MAX_DERIVATION_DEPTH {
        let next = if at == P1 { P2 } else { P1 };
        h = s.derive(at, h, next, &d, &req(), None).unwrap().handle;
        at = next;
        assert_eq!(s.query(at, h).unwrap().depth, depth);
    }
    assert_eq!(s.verify_chain(at, h, Timestamp(0)), Ok(()));
    let denied = s.derive(at, h, P3, &d, &req(), None).unwrap_err();
    assert_eq!(denied.error, HvError::DepthExceeded);
    assert_eq!(s.live_count(P3), Some(0));
}

#[test]
fn grant_once_derives_exactly_once() {
    let mut s = space();
    let mut p = params(ProofTier::P1);
    p.rights = Rights::READ | Rights::GRANT_ONCE;
    p.tiers = TierMap::ALL_P1.to_table(p.rights);
    let h = s.install(P1, &p).unwrap();
    // A failed derive does not consume it.
    let bad = DeriveParams::rights(Rights::READ | Rights::WRITE);
    assert_eq!(
        err(s.derive(P1, h, P2, &bad, &req(), None)),
        HvError::NoRights
    );
    let ok = DeriveParams::rights(Rights::READ);
    let first = s.derive(P1, h, P2, &ok, &req(), None).unwrap();
    assert_eq!(first.used, Rights::GRANT_ONCE);
    let d = s.derive(P1, h, P3, &ok, &req(), None).unwrap_err();
    assert_eq!(d.error, HvError::GrantConsumed);
    let info = s.query(P1, h).unwrap();
    assert!(info.grant_once_consumed);
    assert_eq!(info.rights, Rights::READ);
    assert_eq!(
        err(check(&mut s, P1, h, Rights::GRANT_ONCE)),
        HvError::GrantConsumed
    );
    // Without REVOKE the holder cannot revoke its child; evicting the child's
    // partition removes it, and that does not restore GRANT_ONCE.
    assert_eq!(err(s.revoke(P1, h, &req(), None)), HvError::NoRights);
    assert_eq!(s.revoke_partition(P2), Ok(1));
    assert_eq!(
        err(s.derive(P1, h, P3, &ok, &req(), None)),
        HvError::GrantConsumed
    );
}

#[test]
fn derive_target_must_exist_and_be_open() {
    let mut s = space();
    let h = s.install(P1, &params(ProofTier::P1)).unwrap();
    let d = DeriveParams::rights(Rights::READ);
    assert_eq!(
        err(s.derive(P1, h, PartitionId(77), &d, &req(), None)),
        HvError::InvalidArgument
    );
    s.revoke_partition(P3).unwrap();
    assert_eq!(
        err(s.derive(P1, h, P3, &d, &req(), None)),
        HvError::InvalidArgument
    );
}

// ---------------------------------------------------------------- revoke

#[test]
fn revoke_removes_the_subtree_across_partitions_and_keeps_the_revoker() {
    let mut s = space();
    let root = s.install(P1, &params(ProofTier::P1)).unwrap();
    let d = DeriveParams::rights(Rights::READ | Rights::GRANT | Rights::REVOKE);
    let a = s.derive(P1, root, P2, &d, &req(), None).unwrap().handle;
    let b = s.derive(P2, a, P3, &d, &req(), None).unwrap().handle;
    let c = s.derive(P2, a, P1, &d, &req(), None).unwrap().handle;
    let e = s.derive(P3, b, P3, &d, &req(), None).unwrap().handle;
    let sibling = s.derive(P1, root, P3, &d, &req(), None).unwrap().handle;

    // Revoking `a`'s subtree removes b, c, e but not a, root or a's sibling.
    let report = s.revoke(P2, a, &req(), None).unwrap();
    assert_eq!(report.removed, 3);
    assert_eq!(report.granted.cap, a.witness_id());
    for (p, h) in [(P3, b), (P1, c), (P3, e)] {
        assert_eq!(err(check(&mut s, p, h, Rights::READ)), HvError::Revoked);
    }
    for (p, h) in [(P1, root), (P2, a), (P3, sibling)] {
        assert!(check(&mut s, p, h, Rights::READ).is_ok());
    }
    // `a` can derive again, and the new child is independent.
    let b2 = s.derive(P2, a, P3, &d, &req(), None).unwrap().handle;
    assert_eq!(s.revoke(P1, root, &req(), None).unwrap().removed, 3);
    for (p, h) in [(P2, a), (P3, b2), (P3, sibling)] {
        assert_eq!(err(check(&mut s, p, h, Rights::READ)), HvError::Revoked);
    }
    assert_eq!(s.live_count(P1), Some(1));
    assert_eq!(s.live_count(P2), Some(0));
    assert_eq!(s.live_count(P3), Some(0));
}

#[test]
fn evicting_a_partition_revokes_its_capabilities_and_their_subtrees() {
    let mut s = space();
    let root = s.install(P1, &params(ProofTier::P1)).unwrap();
    let d = DeriveParams::rights(Rights::READ | Rights::GRANT);
    let in_p2 = s.derive(P1, root, P2, &d, &req(), None).unwrap().handle;
    let in_p3 = s.derive(P2, in_p2, P3, &d, &req(), None).unwrap().handle;
    let own = s.install(P2, &params(ProofTier::P1)).unwrap();
    assert_eq!(s.revoke_partition(P2), Ok(3));
    assert_eq!(s.partition_state(P2), Some(PartitionCapState::Evicted));
    assert_eq!(
        err(check(&mut s, P2, in_p2, Rights::READ)),
        HvError::Revoked
    );
    assert_eq!(err(check(&mut s, P2, own, Rights::READ)), HvError::Revoked);
    assert_eq!(
        err(check(&mut s, P3, in_p3, Rights::READ)),
        HvError::Revoked
    );
    assert!(check(&mut s, P1, root, Rights::READ).is_ok());
    assert_eq!(
        s.install(P2, &params(ProofTier::P1)),
        Err(HvError::InvalidArgument)
    );
    assert_eq!(s.suspend_partition(P2), Err(HvError::InvalidArgument));
    assert_eq!(
        s.revoke_partition(PartitionId(50)),
        Err(HvError::InvalidArgument)
    );
}

#[test]
fn revoking_a_thousand_descendants_leaves_no_trace() {
    let mut s = CapabilitySpace::new(SpacePolicy {
        slots_per_partition: 1024,
        ..SpacePolicy::DEFAULT
    });
    s.add_partition(P1).unwrap();
    s.add_partition(P2).unwrap();
    let root = s.install(P1, &params(ProofTier::P1)).unwrap();
    let d = DeriveParams::rights(Rights::READ | Rights::GRANT);
    // A mix of a wide fan-out and a deep chain.
    let mut handles = std::vec::Vec::new();
    let mut chain = (P1, root);
    for i in 0..1000 {
        let parent = if i % 3 == 0 && handles.len() < 900 {
            (P1, root)
        } else {
            chain
        };
        let h = s
            .derive(parent.0, parent.1, P2, &d, &req(), None)
            .unwrap()
            .handle;
        handles.push(h);
        if s.query(P2, h).unwrap().depth < MAX_DERIVATION_DEPTH {
            chain = (P2, h);
        } else {
            chain = (P1, root);
        }
    }
    assert_eq!(s.live_count(P2), Some(1000));
    assert_eq!(s.revoke(P1, root, &req(), None).unwrap().removed, 1000);
    assert_eq!(s.live_count(P2), Some(0));
    for h in handles {
        assert_eq!(err(check(&mut s, P2, h, Rights::READ)), HvError::Revoked);
    }
}

// ---------------------------------------------------------------- install / query

#[test]
fn install_validates_its_parameters() {
    let mut s = space();
    let mut p = params(ProofTier::P1);
    p.rights = Rights::empty();
    p.tiers = [0; 7];
    assert_eq!(s.install(P1, &p), Err(HvError::InvalidArgument));
    let mut p = params(ProofTier::P1);
    p.tiers[0] = 0;
    assert_eq!(s.install(P1, &p), Err(HvError::InvalidArgument));
    assert_eq!(
        s.install(PartitionId(9), &params(ProofTier::P1)),
        Err(HvError::InvalidArgument)
    );
    assert_eq!(s.add_partition(P1), Err(HvError::InvalidArgument));
    assert_eq!(
        s.add_partition(PartitionId(u32::MAX)),
        Err(HvError::InvalidArgument)
    );
}

#[test]
fn from_desc_converts_the_table_form() {
    use rvm_abi::bundle::CapDesc;
    let desc = CapDesc {
        kind: ObjectKind::Channel,
        rights: Rights::READ | Rights::WRITE,
        tiers: [1, 2, 0, 0, 0, 0, 0],
        object: 3,
        quota: 0,
        expires_at: 1_700_000_010,
        window_start: 0,
        window_len: 0,
        resource_digest: [9; 16],
    };
    let p = CapParams::from_desc(&desc, None, 1_700_000_000).unwrap();
    assert_eq!(p.object, ObjectRef::new(ObjectKind::Channel, 3));
    assert_eq!(p.expiry, Timestamp(10 * Timestamp::NANOS_PER_SEC));
    assert_eq!(p.window, ByteWindow::WHOLE);
    assert_eq!(p.quota, Quota::UNLIMITED);
    let mut s = space();
    let h = s.install(P1, &p).unwrap();
    let info = s.query(P1, h).unwrap();
    assert_eq!(info.tiers, [1, 2, 0, 0, 0, 0, 0]);
    assert_eq!(info.resource, [9; 16]);
    assert!(!info.has_authority);
    assert_eq!(info.tier_for(Rights::READ | Rights::WRITE), ProofTier::P2);
    let bad = CapDesc {
        window_start: u64::MAX,
        window_len: 2,
        ..desc
    };
    assert_eq!(
        CapParams::from_desc(&bad, None, 0),
        Err(HvError::InvalidArgument)
    );
    let listed: std::vec::Vec<_> = s.capabilities(P1).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, h);
}

#[test]
fn a_handle_of_another_kind_is_bad_and_charges_nothing() {
    let mut s = space();
    let mut p = params(ProofTier::P2);
    p.quota = Quota {
        calls: 1,
        bytes: u64::MAX,
    };
    let h = s.install(P1, &p).unwrap();
    let r = req().with_nonce(Nonce(3));
    let d = s
        .check_kind(P1, h, ObjectKind::Channel, Rights::READ, &r, None)
        .unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::BadHandle, ProofTier::P1));
    // Neither the nonce nor the single call of the quota was used.
    let g = s
        .check_kind(P1, h, ObjectKind::Region, Rights::READ, &r, None)
        .unwrap();
    assert_eq!((g.object, g.tier), (REGION, ProofTier::P2));
}

// ---------------------------------------------------------------- transplant

#[test]
fn a_transplant_keeps_the_raw_handle_and_revocation_reaches_it() {
    let mut s = space();
    // P1's table: three roots and a child of the first.
    let a = s.install(P1, &params(ProofTier::P1)).unwrap();
    let b = s.install(P1, &params(ProofTier::P1)).unwrap();
    let c = s.install(P1, &params(ProofTier::P1)).unwrap();
    assert_eq!((a.index, b.index, c.index), (0, 1, 2));
    let child = s
        .derive(P1, a, P1, &DeriveParams::rights(Rights::READ), &req(), None)
        .unwrap()
        .handle;
    assert_eq!(child.index, 3);
    // Moving the derived child to P2 keeps (index, generation).
    let moved = s.transplant(P1, child, P2).unwrap();
    assert_eq!(moved, child);
    assert!(check(&mut s, P2, moved, Rights::READ).is_ok());
    assert_eq!(
        err(check(&mut s, P2, moved, Rights::WRITE)),
        HvError::NoRights
    );
    // The same slot again, and a handle that does not resolve, are refused.
    assert_eq!(s.transplant(P1, child, P2), Err(HvError::InvalidArgument));
    assert_eq!(
        s.transplant(P1, CapHandle::new(9, 0), P2),
        Err(HvError::BadHandle)
    );
    // The slots skipped in P2 stay never-issued, and are taken by ordinary
    // installs once the fresh slots run out.
    assert_eq!(
        err(check(&mut s, P2, CapHandle::new(0, 0), Rights::READ)),
        HvError::BadHandle
    );
    let next = s.install(P2, &params(ProofTier::P1)).unwrap();
    assert_eq!(next.index, 4);
    let mut indexes = std::vec::Vec::new();
    while let Ok(h) = s.install(P2, &params(ProofTier::P1)) {
        indexes.push(h.index);
    }
    assert_eq!(
        indexes.len(),
        16 - 2,
        "every slot but the two taken: {indexes:?}"
    );
    assert!(indexes.contains(&0) && indexes.contains(&2));
    // Revoking the root in P1 reaches the copy in P2.
    s.revoke(P1, a, &req(), None).unwrap();
    assert_eq!(
        err(check(&mut s, P2, moved, Rights::READ)),
        HvError::Revoked
    );
    assert!(check(&mut s, P1, c, Rights::READ).is_ok());
}

#[test]
fn install_at_places_a_root_at_a_fresh_slot_and_can_transplant_predicts_the_move() {
    let mut s = space();
    // P1's roots at slots 0 and 5, P2's at 5: slot 5 meets, slot 0 does not.
    let a = s.install_at(P1, &params(ProofTier::P1), 0).unwrap();
    let b = s.install_at(P1, &params(ProofTier::P1), 5).unwrap();
    assert_eq!((a.index, b.index), (0, 5));
    assert!(check(&mut s, P1, b, Rights::READ).is_ok());
    assert_eq!(
        s.install_at(P1, &params(ProofTier::P1), 5),
        Err(HvError::InvalidArgument),
        "a slot in use"
    );
    s.install_at(P2, &params(ProofTier::P1), 5).unwrap();
    // The check changes nothing and answers what the transplant would.
    assert_eq!(s.can_transplant(P1, a, P2), Ok(()));
    assert_eq!(s.can_transplant(P1, b, P2), Err(HvError::InvalidArgument));
    assert_eq!(
        s.can_transplant(P1, CapHandle::new(9, 0), P2),
        Err(HvError::BadHandle)
    );
    assert_eq!(s.transplant(P1, b, P2), Err(HvError::InvalidArgument));
    assert_eq!(s.transplant(P1, a, P2), Ok(a));
    assert_eq!(
        s.can_transplant(P1, a, P2),
        Err(HvError::InvalidArgument),
        "now taken"
    );
}
