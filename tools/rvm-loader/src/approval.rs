//! `rvm-loader caps prove`: an operator's signed approval of one P3
//! operation.
//!
//! The signed message is `rvm_abi::approval::ApprovalMessage` — the one
//! definition the kernel checks against — over (operation, object,
//! partition id, root of the capability's derivation tree, nonce, boot id,
//! arguments digest), signed with the partition's own
//! authority key (`RVM_HOME/keys/authority/<partition>.seed`, created by
//! `caps install` for a table with P3 rights and bound to the partition's
//! capabilities in every bundle). The guest hands the 64-byte signature to
//! the kernel with the call (`x5` = its address, `x6` = the nonce).
//!
//! The partition id is the partition's position in its boot (1 for the
//! first partition of `up a b c`); by default the one of its last run. The
//! boot id is the random id of the bundle the approval is for: by default
//! the one of the partition's last (or running) run, which the loader
//! records when it builds the bundle; an approval is good for that boot
//! only. The root names the capability's derivation tree (its handle in its
//! partition's table): the nonce floor is the tree's, so an approval is
//! accepted once whichever copy of the capability presents it.

use crate::commands::Ctx;
use crate::error::{Error, Result};
use crate::keys::KeyRole;
use crate::model::PartitionName;
use crate::parse::names;
use rvm_abi::{Hypercall, ObjectKind};
use rvm_abi::approval::{ApprovalMessage, RootRef};
use rvm_abi::CapHandle;
use rvm_cap::proof::{approval_message, sign_operation, ArgsDigest};
use rvm_cap::{Nonce, ObjectRef, PartitionId};
use serde::Serialize;
use std::path::PathBuf;

/// First line of the text form of an approval.
pub const APPROVAL_HEADER: &str = "rvm P3 approval v2";

/// The arguments of the approved call, or their digest.
#[derive(Clone, Debug, Default)]
pub struct ArgsSpec {
    /// The call's register arguments, in order (without the proof address
    /// and the nonce).
    pub words: Vec<u64>,
    /// The bytes of the buffer it acts on, as hex.
    pub data_hex: Option<String>,
    /// ... or read from a file.
    pub data_file: Option<PathBuf>,
    /// A digest computed elsewhere (64 hex digits): replaces the above.
    pub digest_hex: Option<String>,
}

/// What `caps prove` is asked to approve.
#[derive(Clone, Debug)]
pub struct ApprovalRequest {
    pub partition: String,
    /// Overrides the id of the partition's last run.
    pub partition_id: Option<u32>,
    pub op: String,
    /// `KIND:ID`, e.g. `channel:0`.
    pub object: String,
    /// The handle (register form) of the root of the capability's
    /// derivation tree, in the root partition's table.
    pub root: u64,
    /// The partition whose table holds the root (default: `partition_id`).
    pub root_partition_id: Option<u32>,
    /// The boot id (64 hex digits); default: the partition's last run's.
    pub boot_id: Option<String>,
    pub nonce: u64,
    pub args: ArgsSpec,
    pub json: bool,
}

/// A signed approval.
#[derive(Clone, Debug, Serialize)]
pub struct Approval {
    pub format: &'static str,
    pub partition: String,
    pub partition_id: u32,
    pub operation: &'static str,
    pub object: String,
    /// The root: `PARTITION:HANDLE` (handle in register form, hex).
    pub root: String,
    pub boot_id: String,
    pub nonce: u64,
    pub args_digest: String,
    /// The signed 112-byte message, hex.
    pub message: String,
    /// The authority's public key, hex.
    pub authority: String,
    pub signature: String,
}

impl Approval {
    pub fn to_text(&self) -> String {
        format!(
            "{APPROVAL_HEADER}\npartition {}\npartition-id {}\noperation {}\nobject {}\nroot {}\nboot-id {}\nnonce {}\nargs-digest {}\nmessage {}\nauthority {}\nsignature {}\n",
            self.partition,
            self.partition_id,
            self.operation,
            self.object,
            self.root,
            self.boot_id,
            self.nonce,
            self.args_digest,
            self.message,
            self.authority,
            self.signature
        )
    }
}

/// Folded for matching: lower case, no `-` or `_` (`cap-revoke` = `CapRevoke`).
fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// A hypercall by name.
pub fn parse_op(s: &str) -> Result<Hypercall> {
    Hypercall::ALL
        .iter()
        .copied()
        .find(|h| fold(h.name()) == fold(s))
        .ok_or_else(|| {
            let all: Vec<&str> = Hypercall::ALL.iter().map(|h| h.name()).collect();
            Error::refused(
                "--op",
                format!("{s:?} is not a hypercall; one of {}", all.join(", ")),
            )
        })
}

/// `KIND:ID`.
pub fn parse_object(s: &str) -> Result<ObjectRef> {
    let kinds = || {
        ObjectKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (kind, id) = s.split_once(':').ok_or_else(|| {
        Error::refused(
            "--object",
            format!("{s:?} is not KIND:ID (KIND one of {})", kinds()),
        )
    })?;
    let kind = ObjectKind::ALL
        .iter()
        .copied()
        .find(|k| fold(k.name()) == fold(kind))
        .ok_or_else(|| {
            Error::refused(
                "--object",
                format!("{kind:?} is not an object kind; one of {}", kinds()),
            )
        })?;
    let id = parse_u64(id)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| Error::refused("--object", format!("{id:?} is not a 32-bit object id")))?;
    Ok(ObjectRef::new(kind, id))
}

/// Decimal or `0x` hex.
pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn decode_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    rvm_abi::hex::decode_vec(s.trim().as_bytes())
        .ok_or_else(|| Error::refused(what, "is not hex (two digits per byte)"))
}

fn args_digest(a: &ArgsSpec) -> Result<ArgsDigest> {
    if let Some(h) = &a.digest_hex {
        let bytes = decode_hex("--args-digest", h)?;
        let d: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::refused("--args-digest", "is not 32 bytes (64 hex digits)"))?;
        return Ok(ArgsDigest(d));
    }
    let data = match (&a.data_hex, &a.data_file) {
        (Some(h), _) => decode_hex("--data-hex", h)?,
        (None, Some(f)) => crate::source::read_bytes(f, crate::limits::TEXT_FILE_MAX)?,
        (None, None) => Vec::new(),
    };
    Ok(ArgsDigest::of(&a.words, &data))
}

/// Make and check the approval.
pub fn make(ctx: &Ctx, req: &ApprovalRequest) -> Result<Approval> {
    let name: PartitionName = names::partition_name("--partition", "value", &req.partition)?;
    let op = parse_op(&req.op)?;
    let object = parse_object(&req.object)?;
    let args = args_digest(&req.args)?;
    let reg = ctx.home.load()?;
    let rec = reg.partition(&name)?;
    let partition_id = match req.partition_id {
        Some(0) => return Err(Error::refused("--partition-id", "partition ids count from 1 (0 is the hypervisor)")),
        Some(id) => id,
        None => rec
            .last_run
            .as_ref()
            .and_then(|r| {
                r.partition_id.or_else(|| {
                    let i = r.with.iter().position(|n| *n == name)?;
                    u32::try_from(i).ok().map(crate::bundler::partition_id)
                })
            })
            .ok_or_else(|| {
                Error::refused(
                    format!("partition {name}"),
                    "has not booted yet, so its partition id is not known: pass --partition-id N (its position in the boot, from 1)",
                )
            })?,
    };
    let key = ctx
        .home
        .key(&KeyRole::Authority(name.clone()))?
        .ok_or_else(|| {
            Error::refused(
                format!("partition {name}"),
                "has no authority key: its capability table has no P3 right, so no operation of it needs an approval",
            )
        })?;
    let root_partition = match req.root_partition_id {
        Some(0) => return Err(Error::refused("--root-partition-id", "partition ids count from 1 (0 is the hypervisor)")),
        Some(id) => id,
        None => partition_id,
    };
    let handle = CapHandle::from_raw(req.root)
        .ok_or_else(|| Error::refused("--root", "is not a capability handle (bits above the 48-bit form are set)"))?;
    let root = RootRef { partition: root_partition, index: handle.index, generation: handle.generation };
    let boot_hex = match &req.boot_id {
        Some(h) => h.clone(),
        None => rec.last_run.as_ref().and_then(|r| r.boot_id.clone()).ok_or_else(|| {
            Error::refused(
                format!("partition {name}"),
                "has no recorded boot id (it has not booted from this RVM_HOME yet): pass --boot-id HEX, the BootId entry of the bundle it will boot",
            )
        })?,
    };
    let boot_id: [u8; rvm_abi::bundle::BOOT_ID_LEN] = decode_hex("--boot-id", &boot_hex)?
        .try_into()
        .map_err(|_| Error::refused("--boot-id", "is not 32 bytes (64 hex digits)"))?;
    let approval: ApprovalMessage =
        approval_message(op, object, PartitionId(partition_id), root, Nonce(req.nonce), boot_id, &args);
    let sig = sign_operation(&key.seed, &approval);
    let message = approval.to_bytes();
    // Check it the way the kernel will.
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.public)
        .map_err(|e| Error::failed(format!("authority key of {name}: {e}")))?;
    vk.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&sig.0))
        .map_err(|e| Error::failed(format!("the approval does not verify: {e}")))?;
    Ok(Approval {
        format: "rvm-p3-approval/2",
        partition: name.to_string(),
        partition_id,
        operation: op.name(),
        object: format!("{}:{}", object.kind.name(), object.id.0),
        root: format!("{root_partition}:{:#x}", req.root),
        boot_id: rvm_abi::hex::to_string(&boot_id),
        nonce: req.nonce,
        args_digest: rvm_abi::hex::to_string(&args.0),
        message: rvm_abi::hex::to_string(&message),
        authority: rvm_abi::hex::to_string(&key.public),
        signature: rvm_abi::hex::to_string(&sig.0),
    })
}

/// `caps prove ...`: print the approval.
pub fn caps_prove(ctx: &Ctx, req: &ApprovalRequest) -> Result<()> {
    let a = make(ctx, req)?;
    if req.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&a).map_err(|e| Error::failed(e.to_string()))?
        );
    } else {
        print!("{}", a.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold() {
        assert_eq!(parse_op("cap-revoke").unwrap(), Hypercall::CapRevoke);
        assert_eq!(parse_op("ChannelSend").unwrap(), Hypercall::ChannelSend);
        assert!(parse_op("fork").is_err());
        let o = parse_object("state-store:0x2").unwrap();
        assert_eq!((o.kind, o.id.0), (ObjectKind::StateStore, 2));
        assert!(parse_object("channel").is_err());
        assert!(parse_object("pipe:1").is_err());
        assert!(parse_object("channel:4294967296").is_err());
    }

    #[test]
    fn args_digest_is_the_kernels() {
        let a = ArgsSpec {
            words: vec![1, 2],
            data_hex: Some("6869".into()),
            ..ArgsSpec::default()
        };
        assert_eq!(args_digest(&a).unwrap(), ArgsDigest::of(&[1, 2], b"hi"));
        let d = ArgsSpec {
            digest_hex: Some("ab".repeat(32)),
            ..ArgsSpec::default()
        };
        assert_eq!(args_digest(&d).unwrap(), ArgsDigest([0xab; 32]));
        let bad = ArgsSpec {
            data_hex: Some("abc".into()),
            ..ArgsSpec::default()
        };
        assert!(args_digest(&bad).is_err());
    }
}
