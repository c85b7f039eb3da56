//! One instance across restarts: who was in it, under which id, and where
//! each witness log goes on.
//!
//! The serving loader keeps `RVM_HOME/instance/roster.json`: every
//! partition of the instance (booted or admitted) with the id the
//! hypervisor gave it, and whether it left (evicted or refused). It is
//! written at boot, when a partition is admitted, and when the instance
//! ends.
//!
//! `instance start` after an instance of this home ended continues it
//! ([`continuation`]): the partitions that had not left boot again under
//! their ids (the ids of those that left stay vacant, `PartitionIds`), the
//! names given on the command line join after them, and every log that was
//! filed — each partition's and the hypervisor's — continues from its last
//! signed checkpoint (`LogResume`, [`rvm_witness_host::resume_point`]): one
//! chain, one Merkle tree and one file per log across boots. A log that
//! does not verify under this home's witness key refuses the start (exit 2)
//! and names the file; `instance start --fresh` starts every log anew (the
//! earlier files go to the archive, as after `up`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::home::{Home, RunState};
use crate::keys::KeyRole;
use crate::model::PartitionName;
use rvm_witness_host::ResumePoint;

/// A partition of the instance.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub id: u32,
    pub name: String,
    /// It left the instance (evicted, refused): its id stays vacant.
    #[serde(default)]
    pub left: bool,
}

/// Every partition of an instance, by id.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Roster {
    pub members: Vec<Member>,
}

fn path(home: &Path) -> PathBuf {
    home.join(crate::instance::INSTANCE_DIR).join("roster.json")
}

impl Roster {
    /// The roster of `home`'s last instance, if one ran.
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

    /// Write it (atomically) into the instance folder `dir`.
    pub fn save(&self, dir: &Path) {
        if let Ok(text) = serde_json::to_string_pretty(self) {
            let _ = rvm_witness_host::files::write_atomic(&dir.join("roster.json"), text.as_bytes(), 0o600);
        }
    }

    /// Forget the last instance (`instance start --fresh`).
    pub fn forget(home: &Path) {
        let _ = std::fs::remove_file(path(home));
    }

    /// The roster of a running instance: its partitions (id, name) and
    /// their states as its witness records report them.
    pub fn of_run(names: &[(u32, PartitionName)], states: &std::collections::BTreeMap<u32, RunState>) -> Self {
        let mut members: Vec<Member> = names
            .iter()
            .map(|(id, n)| Member {
                id: *id,
                name: n.to_string(),
                left: matches!(states.get(id), Some(RunState::Evicted | RunState::Refused)),
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Self { members }
    }
}

/// How a restarted instance goes on from the last one.
#[derive(Clone, Debug, Default)]
pub struct Continuation {
    /// The partitions to boot, in id order.
    pub names: Vec<PartitionName>,
    /// Their ids.
    pub ids: Vec<u32>,
    /// Logs that continue: (log id, the name it is filed under, where).
    pub resumes: Vec<(u32, String, ResumePoint)>,
}

/// What `instance start [NAMES]` boots when an instance of `home` ran
/// before (and `--fresh` was not given): `None` when there is nothing to
/// continue. Refuses a partition that can no longer boot (no guest) only
/// if named; one that left the registry or its guest is skipped with a
/// note.
pub fn continuation(home: &Home, extra: &[PartitionName]) -> Result<Option<Continuation>> {
    let Some(roster) = Roster::load(home.root())? else { return Ok(None) };
    let reg = home.load()?;
    let mut c = Continuation::default();
    for m in roster.members.iter().filter(|m| !m.left) {
        let Ok(name) = PartitionName::new(&m.name) else { continue };
        if reg.partitions.get(&name).is_none_or(|r| r.guest.is_none()) {
            eprintln!("rvm-loader: {name} was in the last instance but has no guest any more: its id {} stays vacant", m.id);
            continue;
        }
        c.names.push(name);
        c.ids.push(m.id);
    }
    // Only the partitions that stay continue their logs; those named anew
    // start theirs (an earlier file of the name goes to the archive).
    let staying = c.names.len();
    let mut next = roster.members.iter().map(|m| m.id).max().unwrap_or(0);
    for n in extra {
        if !c.names.contains(n) {
            next += 1;
            c.names.push(n.clone());
            c.ids.push(next);
        }
    }
    let key = home
        .key(&KeyRole::Witness)?
        .ok_or_else(|| Error::refused("instance start", "the last instance's logs cannot continue: this RVM_HOME has no witness key (`--fresh` starts anew)"))?;
    let public = rvm_witness::PublicKey(key.public);
    let hypervisor = rvm_witness_host::log_folder::HYPERVISOR_NAME.to_string();
    let logs = std::iter::once((0u32, hypervisor))
        .chain(c.ids.iter().copied().zip(c.names.iter().map(ToString::to_string)).take(staying))
        .collect::<Vec<_>>();
    for (id, name) in logs {
        let file = home.witness_dir().join(format!("{name}.log"));
        if !file.exists() {
            continue;
        }
        let point = rvm_witness_host::resume_point(&file, id, &public).map_err(|e| {
            Error::refused(
                file.display().to_string(),
                format!("cannot continue in this instance: {e}; `rvm-loader instance start --fresh` starts every log anew (the earlier files go to the archive)"),
            )
        })?;
        c.resumes.push((id, name, point));
    }
    Ok(Some(c))
}
