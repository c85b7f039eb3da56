//! One instance across restarts: who was in it, under which id, and how
//! far each witness log got.
//!
//! The serving loader keeps `RVM_HOME/instance/roster.json`, signed with
//! the operator key: every partition the instance ever had (booted or
//! admitted) with the id the hypervisor gave it and whether it left
//! (evicted, refused, gone from the registry), and for each log filed the
//! last signed checkpoint it reached (size and Merkle root), and for each
//! partition whose committed state the host keeps, the last `CommittedSet`
//! record whose set it acknowledged ([`KeptMark`]). It is written at boot,
//! when a partition is admitted, before every `StateSaved` answer, and when
//! the instance ends (with the checkpoints then).
//!
//! `instance start` after an instance of this home ended continues it
//! ([`continuation`]): the partitions that stayed boot again under their
//! ids; the ids of those that left stay vacant for good (`PartitionIds`,
//! and `FirstFreeId` above every id ever given, so no later tenant gets a
//! departed tenant's id and log id); the names given on the command line
//! join under new ids; and every log that stayed — each such partition's
//! and the hypervisor's — continues from its last signed checkpoint
//! (`LogResume`, [`rvm_witness_host::resume_point`]): one chain, one Merkle
//! tree and one file per log across boots. Refused (exit 2, the file named),
//! so that someone who can change files under RVM_HOME but has not the
//! operator key cannot roll an instance back: a roster that does not verify
//! or is missing after an instance ran, a staying log that is missing, one
//! that does not verify under this home's witness key, or one that no longer
//! holds the checkpoint the roster recorded; and a kept committed state its
//! log does not vouch for, or an older one than the host acknowledged
//! ([`crate::state::check`]) — that one is sent as it is, so the hypervisor
//! refuses the partition and witnesses it, unless it cannot even be read.
//! `instance start --fresh` starts every log anew (the earlier files go to
//! the archive, the kept state to `archive/state-<time>`).

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::{Home, RunState};
use crate::keys::{Key, KeyRole};
use crate::model::PartitionName;
use rvm_witness_host::ResumePoint;

/// Domain separation of the roster's signature.
const ROSTER_TAG: &[u8] = b"rvm-instance-roster-v1\n";

/// A partition of the instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub id: u32,
    pub name: String,
    /// It left the instance: its id stays vacant.
    #[serde(default)]
    pub left: bool,
}

/// How far a log got: its last signed checkpoint when the roster was
/// written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogMark {
    pub name: String,
    pub log: u32,
    pub size: u64,
    /// The Merkle root at `size`, hex.
    pub root: String,
}

/// The last `CommittedSet` record of a log whose set the host kept and
/// acknowledged (`StateSaved`): written before the acknowledgement, so a
/// restart knows which kept state the partition may have seen
/// ([`crate::state::check`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeptMark {
    pub name: String,
    pub log: u32,
    pub seq: u64,
}

/// Every partition of an instance, by id, and its logs' marks.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Roster {
    pub members: Vec<Member>,
    #[serde(default)]
    pub logs: Vec<LogMark>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<KeptMark>,
    /// Ed25519 by the operator key over the rest (hex).
    #[serde(default)]
    pub signature: String,
}

fn path(home: &Path) -> PathBuf {
    home.join(crate::instance::INSTANCE_DIR).join("roster.json")
}

impl Roster {
    fn message(&self) -> Vec<u8> {
        let mut m = ROSTER_TAG.to_vec();
        if self.kept.is_empty() {
            m.extend(serde_json::to_vec(&(&self.members, &self.logs)).unwrap_or_default());
        } else {
            m.extend(serde_json::to_vec(&(&self.members, &self.logs, &self.kept)).unwrap_or_default());
        }
        m
    }

    /// Sign it with the operator key.
    pub fn signed(mut self, key: &Key) -> Self {
        let sig = SigningKey::from_bytes(&key.seed).sign(&self.message());
        self.signature = rvm_abi::hex::to_string(&sig.to_bytes());
        self
    }

    fn verifies(&self, public: &[u8; 32]) -> bool {
        let mut sig = [0u8; 64];
        rvm_abi::hex::decode(self.signature.as_bytes(), &mut sig).is_some()
            && VerifyingKey::from_bytes(public)
                .is_ok_and(|k| k.verify(&self.message(), &ed25519_dalek::Signature::from_bytes(&sig)).is_ok())
    }

    /// The roster of `home`'s last instance, if one was written.
    pub fn load(home: &Path) -> Result<Option<Self>> {
        let p = path(home);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::refused(p.display().to_string(), format!("does not read: {e} (`instance start --fresh` starts anew)"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::failed(format!("{}: {e}", p.display()))),
        }
    }

    /// Write it (atomically, synced) into the instance folder `dir`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        rvm_witness_host::files::write_atomic(&dir.join("roster.json"), text.as_bytes(), 0o600)
    }

    /// Forget the last instance (`instance start --fresh`).
    pub fn forget(home: &Path) {
        let _ = std::fs::remove_file(path(home));
    }

    /// The highest id any partition of the instance had.
    fn highest(&self) -> u32 {
        self.members.iter().map(|m| m.id).max().unwrap_or(0)
    }
}

/// Writes the roster of a running instance: this run's partitions, the
/// members that left in earlier runs, and the logs' marks.
#[derive(Clone, Debug)]
pub struct RosterWriter {
    dir: PathBuf,
    key: Key,
    /// Members of earlier runs that are not in this one (they left).
    departed: Vec<Member>,
    /// The marks of the last instance's logs (those this run files are
    /// replaced when it ends).
    marks: Vec<LogMark>,
    /// The state records the host acknowledged, per log.
    kept: Vec<KeptMark>,
}

impl RosterWriter {
    pub fn new(dir: PathBuf, key: Key, continued: Option<&Continuation>) -> Self {
        let (departed, marks, kept) =
            continued.map_or_else(Default::default, |c| (c.departed.clone(), c.marks.clone(), c.kept.clone()));
        Self { dir, key, departed, marks, kept }
    }

    /// The roster now: `names` (log id, partition) with their `states`.
    pub fn write(&self, names: &[(u32, PartitionName)], states: &std::collections::BTreeMap<u32, RunState>) {
        let _ = self.roster(names, states, &self.marks).signed(&self.key).save(&self.dir);
    }

    /// The host kept log `log`'s (`name`'s) set of record `seq`: say so in
    /// the roster, written and synced, before the hypervisor is told.
    pub fn keep(
        &mut self,
        log: u32,
        name: &str,
        seq: u64,
        names: &[(u32, PartitionName)],
        states: &std::collections::BTreeMap<u32, RunState>,
    ) -> std::io::Result<()> {
        self.kept.retain(|k| k.name != name);
        self.kept.push(KeptMark { name: name.to_string(), log, seq });
        self.roster(names, states, &self.marks).signed(&self.key).save(&self.dir)
    }

    /// The roster at the end of the run, with the checkpoints each log
    /// filed (`filed`: log id, name, log file).
    pub fn finish(&self, names: &[(u32, PartitionName)], states: &std::collections::BTreeMap<u32, RunState>, filed: &[(u32, String, PathBuf)]) {
        let mut marks: Vec<LogMark> = self.marks.iter().filter(|m| !filed.iter().any(|(_, n, _)| *n == m.name)).cloned().collect();
        for (log, name, file) in filed {
            let cps = rvm_witness_host::read_checkpoints(&file.with_extension("checkpoints")).unwrap_or_default();
            if let Some(c) = cps.last() {
                marks.push(LogMark { name: name.clone(), log: *log, size: c.checkpoint.size, root: rvm_abi::hex::to_string(&c.checkpoint.root.0) });
            }
        }
        let _ = self.roster(names, states, &marks).signed(&self.key).save(&self.dir);
    }

    fn roster(&self, names: &[(u32, PartitionName)], states: &std::collections::BTreeMap<u32, RunState>, marks: &[LogMark]) -> Roster {
        let mut members: Vec<Member> = names
            .iter()
            .map(|(id, n)| Member {
                id: *id,
                name: n.to_string(),
                left: matches!(states.get(id), Some(RunState::Evicted | RunState::Refused)),
            })
            .collect();
        members.extend(self.departed.iter().filter(|d| !names.iter().any(|(id, _)| *id == d.id)).cloned());
        members.sort_by_key(|m| m.id);
        let mut kept = self.kept.clone();
        kept.sort_by_key(|k| k.log);
        Roster { members, logs: marks.to_vec(), kept, signature: String::new() }
    }
}

/// How a restarted instance goes on from the last one.
#[derive(Clone, Debug, Default)]
pub struct Continuation {
    /// The partitions to boot, in id order.
    pub names: Vec<PartitionName>,
    /// Their ids.
    pub ids: Vec<u32>,
    /// The first id a partition admitted during the run may get: above
    /// every id the instance ever gave.
    pub first_free: u32,
    /// Logs that continue: (log id, the name it is filed under, where).
    pub resumes: Vec<(u32, String, ResumePoint)>,
    /// The committed sets kept for continuing partitions: (id, the bundle's
    /// `StateRestore` entry).
    pub restores: Vec<(u32, Vec<u8>)>,
    /// Members that do not boot again (left, or gone from the registry).
    pub departed: Vec<Member>,
    /// The last instance's marks of its logs.
    pub marks: Vec<LogMark>,
    /// The state records the host acknowledged, per log.
    pub kept: Vec<KeptMark>,
}

fn refused(what: impl std::fmt::Display, why: impl std::fmt::Display) -> Error {
    Error::refused(
        what.to_string(),
        format!("{why}; `rvm-loader instance start --fresh` starts every log anew (the earlier files go to the archive)"),
    )
}

/// The seq of the last state record of partition `name`'s log whose set
/// the host acknowledged, from this home's signed roster (`None`: no roster,
/// or it says nothing of that log). A roster that does not verify is an
/// error.
pub fn kept_mark(home: &Home, name: &str) -> Result<Option<u64>> {
    let Some(roster) = Roster::load(home.root())? else { return Ok(None) };
    let Some(operator) = home.key(&KeyRole::Operator)? else { return Ok(None) };
    if !roster.verifies(&operator.public) {
        return Err(Error::refused(path(home.root()).display().to_string(), "does not verify under this RVM_HOME's operator key (it was changed)"));
    }
    Ok(roster.kept.iter().find(|k| k.name == name).map(|k| k.seq))
}

/// The committed set partition `name` (log `file`, resumed at `point`)
/// starts with, as a bundle `StateRestore` entry, if one is kept. A kept
/// set its log does not vouch for is said here, naming its file, and sent
/// as the file holds it: the hypervisor refuses that partition and
/// witnesses the refusal, and the others start.
fn kept_state(
    home: &Home,
    name: &str,
    file: &std::path::Path,
    public: &rvm_witness::PublicKey,
    point: &ResumePoint,
    kept: Option<u64>,
) -> Result<Option<Vec<u8>>> {
    let Ok(partition) = PartitionName::new(name) else { return Ok(None) };
    match crate::state::check(home, &partition, file, public, kept) {
        Ok(Some(checked)) if checked.signed_size == point.size && checked.root == point.root => {
            Ok(Some(crate::state::restore_entry(&checked)))
        }
        Ok(Some(_)) => Err(refused(file.display(), "its last checkpoint moved while it was read; start again")),
        Ok(None) => Ok(None),
        // Sent as it is, for the hypervisor to refuse and witness; one that
        // cannot even be sent refuses the start.
        Err(e) => match crate::state::as_filed(home, &partition, file, public) {
            Some(entry) => {
                eprintln!("rvm-loader: error: {e}; the hypervisor will refuse {name} (and witness it)");
                Ok(Some(entry))
            }
            None => Err(e),
        },
    }
}

/// What `instance start [NAMES]` boots when an instance of `home` ran
/// before (and `--fresh` was not given): `None` when none did.
pub fn continuation(home: &Home, extra: &[PartitionName]) -> Result<Option<Continuation>> {
    let dir = home.root().join(crate::instance::INSTANCE_DIR);
    let Some(roster) = Roster::load(home.root())? else {
        if dir.join("ended.json").exists() {
            return Err(refused(path(home.root()).display(), "is missing, but an instance of this RVM_HOME ran: its logs cannot be continued without it"));
        }
        return Ok(None);
    };
    let operator = home.key(&KeyRole::Operator)?.ok_or_else(|| refused("instance start", "this RVM_HOME has no operator key to check the last instance's roster with"))?;
    if !roster.verifies(&operator.public) {
        return Err(refused(path(home.root()).display(), "does not verify under this RVM_HOME's operator key (it was changed)"));
    }
    let reg = home.load()?;
    let mut c = Continuation { first_free: roster.highest() + 1, ..Continuation::default() };
    for m in &roster.members {
        let stays = !m.left
            && PartitionName::new(&m.name).is_ok_and(|n| reg.partitions.get(&n).is_some_and(|r| r.guest.is_some()));
        if !stays {
            if !m.left {
                eprintln!("rvm-loader: {} was in the last instance but has no guest any more: its id {} stays vacant", m.name, m.id);
            }
            c.departed.push(Member { left: true, ..m.clone() });
            continue;
        }
        if let Ok(name) = PartitionName::new(&m.name) {
            c.names.push(name);
            c.ids.push(m.id);
        }
    }
    let key = home.key(&KeyRole::Witness)?.ok_or_else(|| refused("instance start", "this RVM_HOME has no witness key to continue the logs with"))?;
    let public = rvm_witness::PublicKey(key.public);
    let hypervisor = rvm_witness_host::log_folder::HYPERVISOR_NAME.to_string();
    let staying: Vec<(u32, String)> =
        std::iter::once((0u32, hypervisor)).chain(c.ids.iter().copied().zip(c.names.iter().map(ToString::to_string))).collect();
    // Every mark carries on until this run's filed logs replace theirs (a
    // run that dies keeps the floor its logs had).
    c.marks = roster.logs.clone();
    c.kept = roster.kept.clone();
    for (id, name) in staying {
        let file = home.witness_dir().join(format!("{name}.log"));
        let mark = roster.logs.iter().find(|m| m.name == name);
        let reached = match mark {
            Some(m) => {
                let mut root = [0u8; 32];
                rvm_abi::hex::decode(m.root.as_bytes(), &mut root)
                    .ok_or_else(|| refused(path(home.root()).display(), format!("its mark of {name} does not read")))?;
                Some((m.size, root))
            }
            None => None,
        };
        if !file.exists() {
            if reached.is_some() {
                return Err(refused(file.display(), "is missing: the last instance filed it"));
            }
            continue;
        }
        let point = rvm_witness_host::resume_point(&file, id, &public, reached)
            .map_err(|e| refused(file.display(), format!("cannot continue in this instance: {e}")))?;
        if id != 0 {
            let kept = roster.kept.iter().find(|k| k.name == name && k.log == id).map(|k| k.seq);
            if let Some(entry) = kept_state(home, &name, &file, &public, &point, kept)? {
                c.restores.push((id, entry));
            }
        }
        c.resumes.push((id, name, point));
    }
    // Named anew: under ids no partition of the instance ever had.
    for n in extra {
        if !c.names.contains(n) {
            c.names.push(n.clone());
            c.ids.push(c.first_free);
            c.first_free += 1;
        }
    }
    Ok(Some(c))
}
