//! An approval is good once and a quota is a quota, for a whole derivation
//! tree: a copy of a capability (a derive to oneself or to a partner, a
//! transplant) shares its root's nonce floor and is charged to its root's
//! quota (and every ancestor's).

use rvm_abi::{HvError, Hypercall, ObjectKind, ProofTier, Rights};

use crate::proof::{approval_message, authority_key, sign_operation, RootRef};
use crate::*;

const SEED: [u8; 32] = [0x11; 32];
const P1: PartitionId = PartitionId(1);
const P2: PartitionId = PartitionId(2);
const REGION: ObjectRef = ObjectRef::new(ObjectKind::Region, 7);

fn space() -> CapabilitySpace {
    let mut s = CapabilitySpace::new(SpacePolicy {
        slots_per_partition: 32,
        ..SpacePolicy::DEFAULT
    });
    for p in [P1, P2] {
        s.add_partition(p).unwrap();
    }
    s.set_boot_id(BOOT_A);
    s
}

const BOOT_A: [u8; 32] = [0xa0; 32];
const BOOT_B: [u8; 32] = [0xb0; 32];

/// An approval of `RegionWrite` of `args` by `p` through the tree rooted
/// at `root`, with `nonce`, in boot `boot`.
fn approve(
    p: PartitionId,
    root: RootRef,
    nonce: u64,
    boot: [u8; 32],
    args: &ArgsDigest,
) -> Signature {
    sign_operation(
        &SEED,
        &approval_message(
            Hypercall::RegionWrite,
            REGION,
            p,
            root,
            Nonce(nonce),
            boot,
            args,
        ),
    )
}

/// READ, WRITE, GRANT; GRANT at P1 (derives are free), WRITE at `write`.
fn params(write: ProofTier, quota: Quota) -> CapParams {
    let rights = Rights::READ | Rights::WRITE | Rights::GRANT;
    let mut tiers = [0u8; 7];
    tiers[0] = ProofTier::P2 as u8;
    tiers[1] = write as u8;
    tiers[2] = ProofTier::P1 as u8;
    CapParams {
        object: REGION,
        rights,
        tiers,
        expiry: Timestamp::NEVER,
        window: ByteWindow::WHOLE,
        quota,
        authority: Some(authority_key(&SEED)),
        resource: [0; 16],
    }
}

fn req() -> Request {
    Request::at(Timestamp(1_000), Epoch(0))
}

#[test]
fn a_derive_to_self_does_not_reset_the_nonce_floor() {
    let mut s = space();
    let root = s
        .install(P1, &params(ProofTier::P3, Quota::UNLIMITED))
        .unwrap();
    let args = ArgsDigest::of(&[0, 4], b"data");
    let sig = approve(P1, s.root(P1, root).unwrap(), 1, BOOT_A, &args);
    let proof = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig,
    };
    let r = req().with_nonce(Nonce(1));
    s.check(P1, root, Rights::WRITE, &r, Some(&proof)).unwrap();
    let d = s
        .check(P1, root, Rights::WRITE, &r, Some(&proof))
        .unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::Replay, ProofTier::P3));
    // Six copies of the root in the same partition: each presents the
    // same nonce-1 approval, and each is refused as a replay.
    for _ in 0..6 {
        let child = s
            .derive(
                P1,
                root,
                P1,
                &DeriveParams::rights(Rights::WRITE),
                &req(),
                None,
            )
            .unwrap()
            .handle;
        let d = s
            .check(P1, child, Rights::WRITE, &r, Some(&proof))
            .unwrap_err();
        assert_eq!((d.error, d.tier), (HvError::Replay, ProofTier::P3));
    }
}

#[test]
fn a_quota_split_over_many_children_is_still_one_quota() {
    let mut s = space();
    let one = Quota {
        calls: 1,
        bytes: u64::MAX,
    };
    let root = s.install(P1, &params(ProofTier::P2, one)).unwrap();
    let mut children = Vec::new();
    for _ in 0..6 {
        let d = s
            .derive(
                P1,
                root,
                P1,
                &DeriveParams::rights(Rights::WRITE),
                &req(),
                None,
            )
            .unwrap();
        children.push(d.handle);
    }
    let mut allowed = 0;
    for c in &children {
        match s.check(P1, *c, Rights::WRITE, &req(), None) {
            Ok(_) => allowed += 1,
            Err(d) => assert_eq!((d.error, d.tier), (HvError::QuotaExceeded, ProofTier::P2)),
        }
    }
    assert_eq!(allowed, 1, "quota 1 per epoch, split over 6 children");
    // The root's own call is refused too: the epoch's one call is spent.
    let d = s.check(P1, root, Rights::WRITE, &req(), None).unwrap_err();
    assert_eq!(d.error, HvError::QuotaExceeded);
    // A grandchild under an intermediate with quota 1 is charged to the
    // intermediate as well: the intermediate's quota holds for its subtree.
    let mut s = space();
    let root = s
        .install(P1, &params(ProofTier::P2, Quota::UNLIMITED))
        .unwrap();
    let mid = s
        .derive(
            P1,
            root,
            P2,
            &DeriveParams {
                quota: Some(one),
                ..DeriveParams::rights(Rights::WRITE | Rights::GRANT)
            },
            &req(),
            None,
        )
        .unwrap()
        .handle;
    let mut allowed = 0;
    for _ in 0..6 {
        let g = s
            .derive(
                P2,
                mid,
                P2,
                &DeriveParams::rights(Rights::WRITE),
                &req(),
                None,
            )
            .unwrap()
            .handle;
        allowed += usize::from(s.check(P2, g, Rights::WRITE, &req(), None).is_ok());
    }
    assert_eq!(allowed, 1);
    // A later epoch refills the tree.
    let later = Request::at(Timestamp(1_000), Epoch(1));
    s.check(P2, mid, Rights::WRITE, &later, None).unwrap();
}

#[test]
fn a_p2_nonce_is_shared_by_the_tree_too() {
    let mut s = space();
    let root = s
        .install(P1, &params(ProofTier::P2, Quota::UNLIMITED))
        .unwrap();
    let child = s
        .derive(
            P1,
            root,
            P2,
            &DeriveParams::rights(Rights::WRITE),
            &req(),
            None,
        )
        .unwrap()
        .handle;
    s.check(P1, root, Rights::WRITE, &req().with_nonce(Nonce(5)), None)
        .unwrap();
    let d = s
        .check(P2, child, Rights::WRITE, &req().with_nonce(Nonce(5)), None)
        .unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::Replay, ProofTier::P2));
    s.check(P2, child, Rights::WRITE, &req().with_nonce(Nonce(6)), None)
        .unwrap();
    let d = s
        .check(P1, root, Rights::WRITE, &req().with_nonce(Nonce(6)), None)
        .unwrap_err();
    assert_eq!(d.error, HvError::Replay);
}

#[test]
fn a_transplanted_copy_keeps_the_nonce_floor() {
    let mut s = space();
    let root = s
        .install(P1, &params(ProofTier::P2, Quota::UNLIMITED))
        .unwrap();
    s.check(P1, root, Rights::WRITE, &req().with_nonce(Nonce(9)), None)
        .unwrap();
    let moved = s.transplant(P1, root, P2).unwrap();
    let d = s
        .check(P2, moved, Rights::WRITE, &req().with_nonce(Nonce(9)), None)
        .unwrap_err();
    assert_eq!(d.error, HvError::Replay);
}

#[test]
fn an_approval_from_an_earlier_boot_is_refused() {
    let args = ArgsDigest::of(&[0, 4], b"data");
    let r = req().with_nonce(Nonce(1));
    // Boot A: the approval is accepted.
    let mut a = space();
    let h = a
        .install(P1, &params(ProofTier::P3, Quota::UNLIMITED))
        .unwrap();
    let root = a.root(P1, h).unwrap();
    let sig = approve(P1, root, 1, BOOT_A, &args);
    let proof = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig,
    };
    a.check(P1, h, Rights::WRITE, &r, Some(&proof)).unwrap();
    // Boot B of the same deployment (same tables, same handles, nonce floor
    // back at 0): the same approval is refused.
    let mut b = space();
    b.set_boot_id(BOOT_B);
    let h = b
        .install(P1, &params(ProofTier::P3, Quota::UNLIMITED))
        .unwrap();
    assert_eq!(b.root(P1, h).unwrap(), root);
    let d = b.check(P1, h, Rights::WRITE, &r, Some(&proof)).unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::BadProof, ProofTier::P3));
    // And the one signed for boot B passes.
    let sig_b = approve(P1, root, 1, BOOT_B, &args);
    let proof_b = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig_b,
    };
    b.check(P1, h, Rights::WRITE, &r, Some(&proof_b)).unwrap();
    // A space bound to no boot accepts no approval at all.
    let mut none = CapabilitySpace::new(SpacePolicy::DEFAULT);
    none.add_partition(P1).unwrap();
    let h = none
        .install(P1, &params(ProofTier::P3, Quota::UNLIMITED))
        .unwrap();
    let d = none
        .check(P1, h, Rights::WRITE, &r, Some(&proof))
        .unwrap_err();
    assert_eq!(d.error, HvError::BadProof);
}

#[test]
fn an_approval_names_its_tree_and_does_not_serve_another() {
    let mut s = space();
    let first = s
        .install(P1, &params(ProofTier::P3, Quota::UNLIMITED))
        .unwrap();
    let second = s
        .install(P1, &params(ProofTier::P3, Quota::UNLIMITED))
        .unwrap();
    let args = ArgsDigest::of(&[0, 4], b"data");
    let r = req().with_nonce(Nonce(1));
    let sig = approve(P1, s.root(P1, first).unwrap(), 1, BOOT_A, &args);
    let proof = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig,
    };
    s.check(P1, first, Rights::WRITE, &r, Some(&proof)).unwrap();
    // Same object, same partition, same key, a fresh tree: still refused.
    let d = s
        .check(P1, second, Rights::WRITE, &r, Some(&proof))
        .unwrap_err();
    assert_eq!((d.error, d.tier), (HvError::BadProof, ProofTier::P3));
    // A child names its root, not itself.
    let child = s
        .derive(
            P1,
            first,
            P2,
            &DeriveParams::rights(Rights::WRITE),
            &req(),
            None,
        )
        .unwrap()
        .handle;
    assert_eq!(s.root(P2, child).unwrap(), s.root(P1, first).unwrap());
    let own = RootRef {
        partition: P2.0,
        index: child.index,
        generation: child.generation,
    };
    let sig = approve(P2, own, 2, BOOT_A, &args);
    let proof = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig,
    };
    let r2 = req().with_nonce(Nonce(2));
    assert_eq!(
        s.check(P2, child, Rights::WRITE, &r2, Some(&proof))
            .unwrap_err()
            .error,
        HvError::BadProof
    );
    let sig = approve(P2, s.root(P1, first).unwrap(), 2, BOOT_A, &args);
    let proof = Proof {
        op: Hypercall::RegionWrite,
        args,
        signature: &sig,
    };
    s.check(P2, child, Rights::WRITE, &r2, Some(&proof))
        .unwrap();
}
