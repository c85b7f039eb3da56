//! Admitting tenants into a running instance: what `deploy` and `guest
//! boot` do instead of booting a hypervisor of their own while this
//! `RVM_HOME`'s instance runs (`instance start`, [`crate::instance`]).
//!
//! [`admit`], in order:
//!
//! 1. The partitions are checked as for a boot ([`crate::boot::planned_partitions`]:
//!    registered, with a guest whose module still passes the import check,
//!    a witness key pin equal to this home's key), and none may be in the
//!    instance already (its log there has that name). Any problem is a
//!    refusal (exit 2) before anything is written or sent.
//! 2. Authority keys are created for partitions with P3 rights, and the
//!    admission is laid out ([`crate::bundler::build_admission`]: each
//!    partition's entries as in a boot bundle, no global entry).
//! 3. It is signed with the operator key over
//!    [`admission_message`](rvm_abi::control::admission_message) (the
//!    nonce, the admission's SHA-256 and the digest of the bundle the
//!    instance booted, which the control socket's greeting names) and sent
//!    through the instance's control socket ([`crate::control`]) as
//!    `@A <nonce> <signature> <len>` and its bytes; the serving loader
//!    writes it to the hypervisor's control channel as an `Admission`
//!    frame. An instance without a control channel cannot take it (refused).
//! 4. The hypervisor answers with one console line,
//!    `rvm: admission <nonce> done: admitted <name> as partition <id>, ...`
//!    or `rvm: admission <nonce> refused: <reason>`, which comes back
//!    through the socket. Done: the line is printed and each partition's
//!    last run becomes the instance's (its loader pid, boot id, state
//!    running, its partition id), so `partition evict|unfence NAME` reach
//!    it there. Refused: exit 2 with the hypervisor's reason; the registry
//!    keeps no run for it.
//!
//! The serving loader files the admitted partitions' witness logs under
//! their names (the hypervisor names each log, `@N`, before its first
//! record), follows their states in the instance's live status, and
//! verifies their logs with the others' when the instance stops.

use std::time::Duration;

use ed25519_dalek::Signer;

use crate::boot::{self, listed};
use crate::bundler;
use crate::commands::Ctx;
use crate::control::{self, Answer, Client};
use crate::error::{Error, Result};
use crate::home::{RunRecord, RunState};
use crate::instance::{self, InstanceRecord, InstanceStatus};
use crate::model::PartitionName;

/// How long an admission waits for the hypervisor's answer (it loads and
/// checks every module first).
pub const ADMISSION_TIMEOUT: Duration = Duration::from_secs(120);

/// Admit `names` into the instance that loader `instance_pid` runs, and
/// print the hypervisor's answer.
pub fn admit(ctx: &Ctx, names: &[PartitionName], instance_pid: u32) -> Result<()> {
    let what = format!("admission of {}", listed(names));
    let instance = instance::running(ctx.home.root())
        .filter(|r| r.pid == instance_pid)
        .ok_or_else(|| Error::failed(format!("{what}: the instance of loader {instance_pid} is not running any more")))?;
    boot::check_names("admit", names)?;
    refuse_present(&instance, &instance::live_status(ctx.home.root()), names)?;
    let mut parts = boot::planned_partitions(ctx, names)?;
    // Everything is checked: create what is missing.
    boot::bind_authority_keys(ctx, &mut parts)?;
    let bundle = bundler::build_admission(&parts)?;
    let key = control::operator_key(&ctx.home)?;
    let mut client = Client::connect(ctx.home.root(), instance_pid, "the instance", ADMISSION_TIMEOUT)?;
    let nonce = control::clock_nonce();
    let message = rvm_abi::control::admission_message(nonce, &bundler::digest(&bundle), &client.digest);
    let signature = key.sign(&message).to_bytes();
    let mut request = control::admission_line(nonce, &signature, bundle.len()).into_bytes();
    request.extend_from_slice(&bundle);
    eprintln!(
        "rvm-loader: admitting {} into the running instance (loader pid {instance_pid}, {} bytes)",
        listed(names),
        bundle.len()
    );
    client.send(&request)?;
    match client.answer("admission")? {
        Answer::Done(text) => {
            println!("{text}");
            record_admitted(ctx, &instance, names, &admitted_ids(&text))
        }
        Answer::Refused(text) => Err(Error::refused(what, format!("the hypervisor refused it: {}", refusal_reason(&text)))),
        Answer::NotCarried(why) => Err(Error::refused(what, why)),
    }
}

/// Refuse a partition that is in the instance already (booted or
/// admitted): its witness log there has that name, so a second partition
/// of the name could not be filed beside it.
fn refuse_present(instance: &InstanceRecord, live: &InstanceStatus, names: &[PartitionName]) -> Result<()> {
    for n in names {
        let booted = instance.partitions.iter().any(|p| p == n.as_str());
        let state = live.partitions.iter().find(|(p, _)| p == n.as_str()).map(|(_, s)| s.as_str());
        if booted || state.is_some() {
            return Err(Error::refused(
                format!("partition {n}"),
                format!(
                    "is in the running instance already ({}; loader pid {}): its witness log there has that name; stop the instance (`rvm-loader instance stop`) to run it anew",
                    state.unwrap_or("booting"),
                    instance.pid
                ),
            ));
        }
    }
    Ok(())
}

/// The partition id each admitted partition got, from the hypervisor's
/// answer `rvm: admission <nonce> done: admitted <name> as partition <id>,
/// ...` (pairs that do not read are left out).
pub fn admitted_ids(answer: &str) -> Vec<(String, u32)> {
    let Some((_, list)) = answer.split_once(" done: admitted ") else {
        return Vec::new();
    };
    list.split(", ")
        .filter_map(|item| {
            let (name, id) = item.split_once(" as partition ")?;
            Some((name.to_string(), id.trim().parse().ok()?))
        })
        .collect()
}

/// The reason in `rvm: admission <nonce> refused: <reason>` (the whole
/// line if it has none).
pub fn refusal_reason(answer: &str) -> &str {
    answer.split_once(" refused: ").map_or(answer, |(_, reason)| reason)
}

/// The admitted partitions now run in the instance: their last run is
/// its run, so orders (`partition evict|unfence`) and approvals (`caps
/// prove`) reach them there.
fn record_admitted(ctx: &Ctx, instance: &InstanceRecord, names: &[PartitionName], ids: &[(String, u32)]) -> Result<()> {
    let started = crate::home::now_unix();
    let with: Vec<PartitionName> = instance
        .partitions
        .iter()
        .filter_map(|p| PartitionName::new(p).ok())
        .chain(names.iter().cloned())
        .collect();
    for n in names.iter().filter(|n| !ids.iter().any(|(i, _)| i == n.as_str())) {
        eprintln!("rvm-loader: warning: the hypervisor's answer does not say which partition id {n} got");
    }
    boot::set_runs(ctx, names, &|n, _| {
        Some(RunRecord {
            started_unix: started,
            ended_unix: None,
            loader_pid: Some(instance.pid),
            state: RunState::Running,
            with: with.clone(),
            outcome: None,
            boot_id: instance.boot_id.clone(),
            partition_id: ids.iter().find(|(i, _)| i == n.as_str()).map(|(_, id)| *id),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hypervisor_s_answers_read() {
        let done = "rvm: admission 17 done: admitted tenant-a as partition 3, tenant-b as partition 4";
        assert_eq!(admitted_ids(done), [("tenant-a".to_string(), 3), ("tenant-b".to_string(), 4)]);
        assert_eq!(admitted_ids("rvm: admission 17 done: admitted x as partition ?"), []);
        let refused = "rvm: admission 17 refused: bad signature";
        assert_eq!(refusal_reason(refused), "bad signature");
        assert_eq!(admitted_ids(refused), []);
        assert_eq!(refusal_reason("rvm: admission 17 what"), "rvm: admission 17 what");
    }

    #[test]
    fn a_partition_already_in_the_instance_is_refused() {
        let n = |s: &str| PartitionName::new(s).unwrap();
        let record = InstanceRecord {
            pid: 1,
            started_unix: 0,
            partitions: vec!["a".into()],
            running: true,
            boot_id: None,
            pid_started: None,
        };
        let live = InstanceStatus { updated_unix: 0, partitions: vec![("a".into(), "exited".into()), ("b".into(), "running".into())] };
        for taken in ["a", "b"] {
            let e = refuse_present(&record, &live, &[n("c"), n(taken)]).unwrap_err();
            assert!(matches!(e, Error::Refused(_)), "{e}");
            assert!(e.to_string().contains("is in the running instance already"), "{e}");
        }
        refuse_present(&record, &live, &[n("c")]).unwrap();
    }
}
