//! Command-line interface (`rvm-loader` and `rvm` are the same program).

use crate::approval::{self, ApprovalRequest, ArgsSpec};
use crate::board;
use crate::commands::{self, BootOptions, Ctx};
use crate::error::Error;
use crate::home::{self, Home};
use crate::model::KeyFingerprint;
use crate::qemu;
use crate::witness_cli::{self, ExportFormat, ProofKey, VerifyArgs};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "Deploy @metaharness/host-rvm adapter files on the RVM hypervisor";

const LONG_ABOUT: &str = "\
Deploy @metaharness/host-rvm adapter files on the RVM hypervisor.

State lives under $RVM_HOME (default ~/.rvm). Bad input gets one message per
problem (file: field or line: reason) and exit code 2, and leaves RVM_HOME
exactly as it was. Exit code 1 is a failure of the machine or of the run
(I/O, QEMU missing, timeout, the hypervisor's nonzero exit, a witness log of
the run that does not verify). `witness verify` and `witness verify-proof`
exit 2 when what they check does not verify.

Every boot files the witness logs under $RVM_HOME/witness/<partition>.log
(the hypervisor's own log is hypervisor.log) with .checkpoints and .pub
beside them, and verifies them at the end of the run. The hypervisor sends
them on its control channel, a virtio console QEMU connects to the
loader's socket $RVM_HOME/run/channel-<pid>.sock (open while the run
lasts); the serial console carries the partitions' text.

Guest modules are found in this order: --wasm FILE; a module registered with
`guest add <package>@<version> FILE`; the package's files under a local
node_modules (the folder of wasm-guest.json or any folder above it).

Booting needs rvm.bin and guest-runtime.elf from --image-dir DIR, else
$RVM_IMAGE_DIR, else <folder of this program>/../rvm/ (where `make` puts
target/rvm/). QEMU is $RVM_QEMU or qemu-system-aarch64.";

#[derive(Parser, Debug)]
#[command(name = "rvm-loader", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Register, list and remove partitions.
    #[command(subcommand)]
    Partition(PartitionCmd),
    /// Install and show capability tables.
    #[command(subcommand)]
    Caps(CapsCmd),
    /// Register guest modules and boot a partition's guest.
    #[command(subcommand)]
    Guest(GuestCmd),
    /// Deploy the folder of a partition manifest and boot it (`rvm launch`),
    /// or admit it into this RVM_HOME's running instance.
    Launch {
        /// The partition manifest (rvm-partition.toml or rvm.manifest.toml);
        /// capability-table.json and wasm-guest.json are taken from its folder.
        #[arg(long = "partition", value_name = "MANIFEST")]
        manifest: PathBuf,
        /// Boot this WebAssembly module instead of resolving the guest.
        #[arg(long, value_name = "FILE")]
        wasm: Option<PathBuf>,
        /// Replace a partition already registered with different settings.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Register, install capabilities and boot a folder of adapter files in
    /// one step, without running its install-rvm.sh (while this RVM_HOME's
    /// instance runs, admit it into that instance instead of booting).
    Deploy {
        /// Folder holding rvm-partition.toml (or rvm.manifest.toml),
        /// capability-table.json and wasm-guest.json.
        folder: PathBuf,
        /// Boot this WebAssembly module instead of resolving the guest.
        #[arg(long, value_name = "FILE")]
        wasm: Option<PathBuf>,
        /// Replace a partition already registered with different settings.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Lint a folder of adapter files: parse and cross-check every file and
    /// compare install-rvm.sh with the commands it should contain (exit 2 on
    /// any problem). Changes nothing.
    Check {
        /// The folder to check.
        folder: PathBuf,
    },
    /// Show what is registered, its tiers, capabilities, guest, keys and
    /// last run.
    Status,
    /// Boot several registered partitions together in one hypervisor (all
    /// that have a guest when none is named). They share no channel unless
    /// linked with --link A:B.
    Up {
        /// Partitions to boot, in boot order.
        names: Vec<String>,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Show, verify, export and prove the witness logs filed under
    /// $RVM_HOME/witness/.
    #[command(subcommand, long_about = WITNESS_LONG)]
    Witness(WitnessCmd),
    /// Show the committed state kept for partitions under $RVM_HOME/state/,
    /// checked against their witness logs.
    #[command(subcommand, long_about = STATE_LONG)]
    State(StateCmd),
    /// Show (or create) this RVM_HOME's witness key and the partitions'
    /// authority keys.
    Keys {
        /// Create the keys if they do not exist yet.
        #[arg(long)]
        create: bool,
    },
    /// The boards RVM knows.
    #[command(subcommand)]
    Board(BoardCmd),
    /// A long-lived RVM instance of this RVM_HOME: start it in the
    /// background, see it, stop it.
    #[command(subcommand, long_about = INSTANCE_LONG)]
    Instance(InstanceCmd),
    /// The tools agents may call: each partition's MCP servers and Bash
    /// policy, under $RVM_HOME/tools/.
    #[command(subcommand, long_about = crate::tools::cli::TOOL_LONG)]
    Tool(crate::tools::cli::ToolCmd),
}

const INSTANCE_LONG: &str = "\
A long-lived RVM instance of this RVM_HOME.

`instance start` boots the named partitions (all that have a guest when
none is named; none at all when no partition has a guest yet) in the
background, as `up` would, but the hypervisor keeps
running when they have finished or all wait: there is no timeout and no run
budget. One instance per RVM_HOME ($RVM_HOME/instance/instance.json is its
lock). `instance status` shows its partitions' states as the witness
records report them, live. `instance stop` sends the hypervisor the
operator's signed shutdown order: it checkpoints and signs every log and
powers off, and the logs are filed and verified as after `up`. The
instance's console and the loader's report are in
$RVM_HOME/instance/console.log.

While an instance runs, `deploy`, `launch` and `guest boot` admit their
partition into it instead of booting a hypervisor of their own: the
admission, signed with the operator key, goes through the instance's control
socket and channel, and the hypervisor's answer is printed (exit 2 with its
reason when it refuses). Admitted partitions are listed by `instance
status`, their witness logs are filed under their names and verified at
`instance stop`, and `partition unfence|evict` reach them as the others.
`up` is refused while an instance runs (both would file the same witness
logs); `partition remove` evicts a partition of the instance before it
unregisters it.

`instance start` after an instance of this RVM_HOME ended continues it
($RVM_HOME/instance/roster.json): the partitions that stayed (not evicted)
boot again under their ids, the names given join them, and every witness
log goes on from its last signed checkpoint in the same file, after the
whole file verifies; a log that does not verify refuses the start (exit 2,
the file named). `--fresh` starts anew: every log from its first record
(the earlier files go to the archive), only the named partitions (default:
all with a guest).

An instance keeps every partition's committed state on the host, in
$RVM_HOME/state/<partition>/committed.json: after each commit the
hypervisor witnesses the new set (`CommittedSet`, under a checkpoint signed
at once) and sends it on the control channel; the loader writes it
(atomically, synced) and only then lets the partition run on. A restarted
instance gives each partition that stays the state kept for it; the
hypervisor takes it only if the partition's log vouches for it, and refuses
the partition (witnessed) otherwise. `rvm-loader state show PARTITION`
prints the kept state, checked against the log.";

#[derive(Subcommand, Debug)]
enum InstanceCmd {
    /// Boot partitions as this RVM_HOME's instance, in the background.
    Start {
        /// Partitions to boot, in boot order (default: all with a guest;
        /// none if no partition has one yet). After an earlier instance of
        /// this RVM_HOME: its partitions that stayed, and these.
        names: Vec<String>,
        #[command(flatten)]
        run: InstanceArgs,
    },
    /// Show the running instance: its partitions, their states and the
    /// witness records filed so far.
    Status {
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Stop the instance: every log checkpointed, signed, filed and
    /// verified; QEMU powers off.
    Stop,
    /// Run the instance in the foreground (what `instance start` runs in
    /// the background).
    #[command(hide = true)]
    Serve {
        names: Vec<String>,
        #[command(flatten)]
        run: InstanceArgs,
    },
}

#[derive(Args, Clone, Debug)]
struct InstanceArgs {
    /// Folder with rvm.bin and guest-runtime.elf.
    #[arg(long, value_name = "DIR")]
    image_dir: Option<PathBuf>,
    /// QEMU binary (default: $RVM_QEMU, else qemu-system-aarch64).
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// Journal what enters each partition beside its witness log.
    #[arg(long)]
    journal: bool,
    /// Give partitions A and B a channel between them (repeatable).
    #[arg(long = "link", value_name = "A:B", value_parser = parse_link)]
    links: Vec<commands::Link>,
    /// Coherence domains: split and merge agents between partitions by
    /// their real traffic, every decision witnessed (see `up --help`).
    #[arg(long)]
    coherence: bool,
    /// Do not continue the last instance of this RVM_HOME: every log
    /// starts anew (the earlier files go to the archive) and only the
    /// named partitions (default: all with a guest) boot.
    #[arg(long)]
    fresh: bool,
}

impl InstanceArgs {
    /// The same arguments on a command line.
    fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(d) = &self.image_dir {
            a.extend(["--image-dir".to_string(), d.display().to_string()]);
        }
        if let Some(q) = &self.qemu {
            a.extend(["--qemu".to_string(), q.display().to_string()]);
        }
        if self.journal {
            a.push("--journal".into());
        }
        for l in &self.links {
            a.extend(["--link".to_string(), l.to_string()]);
        }
        if self.fresh {
            a.push("--fresh".into());
        }
        if self.coherence {
            a.push("--coherence".into());
        }
        a
    }

    fn options(&self, instance_dir: PathBuf) -> BootOptions {
        let opts = BootOptions {
            image_dir: self.image_dir.clone(),
            qemu: self.qemu.clone(),
            timeout: crate::instance::INSTANCE_TIMEOUT,
            bundle_out: None,
            no_boot: false,
            live_witness: false,
            journal: self.journal,
            coherence: self.coherence,
            links: self.links.clone(),
            include_witness_seed: false,
            instance: None,
            continuation: None,
        };
        crate::instance::serve_options(opts, instance_dir)
    }
}

#[derive(Subcommand, Debug)]
enum BoardCmd {
    /// List the boards RVM knows: which it runs on, their hardware, and
    /// what was tested on each and how.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum PartitionCmd {
    /// Register a partition manifest (rvm-partition.toml or rvm.manifest.toml).
    Register {
        /// The manifest file.
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// Replace a partition already registered with different settings.
        #[arg(long)]
        replace: bool,
    },
    /// List registered partitions with tier, capabilities, guest and state.
    List,
    /// Forget a registered partition.
    Remove {
        /// The partition's name.
        name: String,
    },
    /// Operator order to a running instance: clear the partition's fence
    /// (F3). It resumes from its last snapshot.
    #[command(long_about = ORDER_LONG)]
    Unfence {
        /// The partition's name.
        name: String,
    },
    /// Operator order to a running instance: evict the partition (F4):
    /// its capabilities revoked, its memory scrubbed and returned.
    #[command(long_about = ORDER_LONG)]
    Evict {
        /// The partition's name.
        name: String,
    },
}

const ORDER_LONG: &str = "\
An operator's order to the hypervisor running the partition.

The order goes to the control socket of the loader that booted it, or of
the instance it was admitted into ($RVM_HOME/run/loader-<pid>.sock, open
while `up`, `guest boot` or the instance runs),
signed with this RVM_HOME's operator key ($RVM_HOME/keys/operator.seed,
whose public half is in every bundle booted from here) over the digest of
the bundle that instance booted, with a fresh nonce. The hypervisor verifies
it, witnesses it in the partition's log, applies it, and answers; the answer
is printed.

Exit codes: 0 done; 2 refused (unknown name, or the hypervisor refused the
order: not fenced, already evicted, bad signature, replayed nonce);
1 not delivered (the partition is not running, the socket cannot be reached,
no answer within 30 s).";

#[derive(Subcommand, Debug)]
enum CapsCmd {
    /// Install a capability table for a registered partition.
    Install {
        /// capability-table.json. It does not name its partition: it belongs
        /// to the manifest beside it (rvm-partition.toml or rvm.manifest.toml).
        #[arg(long, value_name = "FILE")]
        table: PathBuf,
        /// The partition, when no manifest is beside the table.
        #[arg(long, value_name = "NAME")]
        partition: Option<String>,
    },
    /// Show a partition's installed capabilities.
    Show {
        /// The partition's name.
        name: String,
    },
    /// Sign an operator's approval of one P3 operation with the partition's
    /// authority key (made by `caps install` for a table with P3 rights).
    #[command(long_about = PROVE_LONG)]
    Prove {
        /// The partition that will perform the operation.
        #[arg(long, value_name = "NAME")]
        partition: String,
        /// Its partition id in the boot it will run in (default: its
        /// position in its last run, counting from 1).
        #[arg(long, value_name = "N")]
        partition_id: Option<u32>,
        /// The hypercall, e.g. CapRevoke, cap-derive, ChannelSend, Prove.
        #[arg(long, value_name = "OPERATION")]
        op: String,
        /// The object the capability names: KIND:ID, e.g. channel:0,
        /// state-store:1, witness-log:1.
        #[arg(long, value_name = "KIND:ID")]
        object: String,
        /// The root of the capability's derivation tree: its handle in its
        /// partition's table (register form, generation << 16 | index, as
        /// boot info and witness records name it). For a capability
        /// installed from the table, its own handle; for a derived one, its
        /// root's.
        #[arg(long, value_name = "HANDLE", value_parser = parse_word)]
        root: u64,
        /// The partition id whose table holds the root (default:
        /// --partition-id).
        #[arg(long, value_name = "N")]
        root_partition_id: Option<u32>,
        /// The boot the approval is for: the bundle's boot id, 64 hex
        /// digits (default: the one of the partition's last run).
        #[arg(long, value_name = "HEX")]
        boot_id: Option<String>,
        /// Replay nonce: must exceed the nonce floor of the capability's
        /// derivation tree, shared by every copy of it (decimal or 0x hex).
        #[arg(long, value_parser = parse_word)]
        nonce: u64,
        /// The call's register arguments, comma-separated (decimal or 0x hex).
        #[arg(long, value_name = "W,W,...", value_delimiter = ',', value_parser = parse_word)]
        words: Vec<u64>,
        /// The bytes of the buffer it acts on, as hex.
        #[arg(long, value_name = "HEX", conflicts_with = "data_file")]
        data_hex: Option<String>,
        /// The bytes of the buffer it acts on, from a file.
        #[arg(long, value_name = "FILE")]
        data_file: Option<PathBuf>,
        /// An arguments digest computed elsewhere (64 hex digits), instead
        /// of --words/--data-*.
        #[arg(long, value_name = "HEX", conflicts_with_all = ["words", "data_hex", "data_file"])]
        args_digest: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

const PROVE_LONG: &str = "\
Sign an operator's approval of one P3 operation.

The signed message is the kernel's own (rvm_abi::approval::ApprovalMessage):
operation, object (kind and id), partition id, the root of the capability's
derivation tree (--root, --root-partition-id), nonce, the boot id of the bundle
it is for (--boot-id, default the last run's: an approval is good for one
boot) and the SHA-256 digest of the call's arguments, ArgsDigest::of(words,
data). What each call binds:
  CapRevoke, Prove: no words, no data
  StateValidate, StateCommit: --data-* = the staged set, count u64 then
             (key length u32, key, value length u32, value) per item in
             staging order, little-endian
  ChannelSend: no words, --data-* = the message
  CapDerive: the ten words target, rights, has_expiry, expiry, has_window,
             first, last, has_quota, calls, bytes (absent values 0)
The key is $RVM_HOME/keys/authority/<partition>.seed, created by `caps install`
(or deploy) when the table has P3 rights and bound to the partition's
capabilities in every bundle. The approval is checked before it is printed.
Prints: partition, partition id, operation, object, nonce, args digest, the
signed message, the authority public key and the 64-byte signature (hex).";

fn parse_word(s: &str) -> Result<u64, String> {
    approval::parse_u64(s).ok_or_else(|| format!("{s:?} is not a number (decimal or 0x hex)"))
}

fn parse_fingerprint(s: &str) -> Result<KeyFingerprint, String> {
    KeyFingerprint::parse(s).ok_or_else(|| {
        format!("{s:?} is not a SHA-256 fingerprint (64 hex digits, optionally sha256:)")
    })
}

#[derive(Subcommand, Debug)]
enum WitnessCmd {
    /// Print a log's records decoded: seq, time since boot, partition,
    /// operation, proof tier, outcome, capability. Every log when none is
    /// named.
    Show {
        /// A partition name (or `hypervisor`) for $RVM_HOME/witness/<name>.log,
        /// or the path of a .log file.
        #[arg(value_name = "PARTITION|FILE")]
        log: Option<String>,
    },
    /// Check a log's chain, links, checkpoint signatures and Merkle roots;
    /// name the first bad record. Every log when none is named. Exit 2 if
    /// any does not verify.
    #[command(long_about = VERIFY_LONG)]
    Verify {
        /// A partition name (or `hypervisor`), or the path of a .log file.
        #[arg(value_name = "PARTITION|FILE")]
        log: Option<String>,
        /// The key must have this fingerprint.
        #[arg(long, value_name = "SHA256", value_parser = parse_fingerprint)]
        key_fingerprint: Option<KeyFingerprint>,
        /// Verify with the key in this .pub file instead of the one beside the log.
        #[arg(long = "pub", value_name = "FILE")]
        pub_file: Option<PathBuf>,
        /// Accept records after the newest checkpoint (a live log whose run
        /// has not ended). Without it, every record must be signed.
        #[arg(long, visible_alias = "live")]
        allow_unsigned_tail: bool,
        /// The default since every record must be signed; still accepted so
        /// that scripts which pass it keep working. Does nothing.
        #[arg(long, conflicts_with = "allow_unsigned_tail")]
        require_signed: bool,
    },
    /// Re-execute a partition's agent on the host from its log and journal
    /// and reproduce every snapshot's state hash.
    #[command(long_about = REPLAY_LONG)]
    Replay {
        /// The partition (its log, journal and registered guest module).
        #[arg(value_name = "PARTITION")]
        partition: String,
        /// Replay this module instead of the partition's registered guest.
        #[arg(long, value_name = "FILE")]
        wasm: Option<PathBuf>,
        /// Print nothing while replaying, only the result.
        #[arg(long)]
        quiet: bool,
    },
    /// Write a log's records as JSON lines (one object per record).
    Export {
        /// A partition name (or `hypervisor`), or the path of a .log file.
        #[arg(value_name = "PARTITION|FILE")]
        log: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print an RFC 6962 inclusion proof of record N against the newest
    /// signed checkpoint that covers it.
    Prove {
        /// The record's sequence number.
        #[arg(long, value_name = "N")]
        seq: u64,
        /// A partition name (or `hypervisor`), or the path of a .log file.
        #[arg(value_name = "PARTITION|FILE")]
        log: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Write here instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof (text or JSON, `-` for standard input)
    /// against the signed checkpoint it carries. Exit 2 if it does not
    /// verify. The key: --pub FILE, --log NAME (the .pub beside that log),
    /// else this RVM_HOME's witness key.
    VerifyProof {
        /// The proof file.
        #[arg(value_name = "FILE")]
        proof: PathBuf,
        /// The verifier key file (<name>.pub).
        #[arg(long = "pub", value_name = "FILE", conflicts_with = "log")]
        pub_file: Option<PathBuf>,
        /// Use the key filed beside this log (a partition name or a .log path).
        #[arg(long, value_name = "PARTITION|FILE")]
        log: Option<String>,
    },
}

const WITNESS_LONG: &str = "\
Show, verify, export and prove the witness logs filed under $RVM_HOME/witness/.

Every boot files each partition's log as <partition>.log (the hypervisor's own
as hypervisor.log), its signed checkpoints as <partition>.checkpoints and the
announced key as <partition>.pub; the previous run's files of the same name
move to witness/archive/. A log is named by its partition (or `hypervisor`), or
by the path of a .log file. A run booted with --journal also files
<partition>.journal, the inputs `witness replay` re-executes the agent from.";

const REPLAY_LONG: &str = "\
Re-execute a partition's agent on the host from its filed witness log and
input journal (boot with --journal), in the same engine the guest runtime
runs, and reproduce every snapshot's state hash.

Every journal entry is first checked against its record (the record's args
digest is recomputed from it); then each hypercall the agent makes must be
the log's next record, with the same handle, lengths and outgoing bytes, and
gets the journaled status and input bytes. The committed state store is
modelled from the agent's own stage/validate/commit calls; F1 restarts and
F2 rollbacks in the log are followed. The module is the partition's
registered guest (or --wasm FILE).

Output: turns replayed, snapshots matched, and \"all N state hashes
reproduced\", or the first record and turn that differ, expected vs got.

Exit codes: 0 reproduced; 1 the replay differs, or the journal or log was
changed; 2 no such partition, log, journal or module, or the log holds calls
replay does not re-execute (capability derivation, revocation, Prove).";

const VERIFY_LONG: &str = "\
Check a witness log: every record's version, seq and link to the previous
chain head; every checkpoint's Ed25519 signature, log id, size, chain head and
Merkle root; nothing truncated after a checkpoint; and every record covered
by a signed checkpoint (a finished run's log ends with its final record
signed, so records after the newest checkpoint, or a log without checkpoints,
fail and the report names the first unsigned record). The report names the
first bad record. --allow-unsigned-tail (alias --live) accepts records after
the newest checkpoint, for a log whose run is still going. --require-signed
is the default and accepted for old scripts (it does nothing).

The key is read from the .pub file beside the log (or --pub FILE) and, for a
log of this RVM_HOME, must be the one the manifest's witness_key_fingerprint
pins, else this RVM_HOME's witness key (--key-fingerprint overrides both). A
log given by path is compared with --key-fingerprint only.

Exit codes: 0 every log verifies; 2 a log does not verify, or no such log;
1 a file cannot be read.";

const STATE_LONG: &str = "\
The committed state kept for partitions under $RVM_HOME/state/.

A partition's committed set is kept as $RVM_HOME/state/<partition>/committed.json
(schema, partition, log, seq, digest, items as hex keys and values, keys
strictly ascending): the set as the CommittedSet record <seq> of its log
says it is (its args are the first 16 bytes of the set's digest).

The file is trusted only as far as the log vouches for it: the partition's
log ($RVM_HOME/witness/<partition>.log) must verify under this RVM_HOME's
witness key (chain, signatures, Merkle roots; records after its last signed
checkpoint count for nothing), and the last CommittedSet among its signed
records must carry the file's digest — or the one before it, while the
instance's signed roster says the host never acknowledged the last (the
loader went down between filing that record and keeping its set, so the
partition never saw that change).

Exit codes: 0 the state was shown; 2 the file was changed, is stale or was
put back (an older set than the log's last), is missing while the log sets
state, no record vouches for it, the log does not verify or was cut back
below what the host kept, the roster does not verify, or nothing is kept;
1 a file cannot be read.";

#[derive(Subcommand, Debug)]
enum StateCmd {
    /// Print a partition's kept committed set, checked against its witness
    /// log: one line per item, key and value as text when printable, else
    /// 0x<hex>.
    Show {
        /// The partition's name.
        #[arg(value_name = "PARTITION")]
        partition: String,
        /// One JSON object instead of lines (key and value null when not
        /// printable; key_hex and value_hex always).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GuestCmd {
    /// Register a WebAssembly module as the guest of an npm package version.
    Add {
        /// `<package>@<version>`, e.g. @metaharness/kernel@0.1.0.
        #[arg(value_name = "PACKAGE@VERSION")]
        package: String,
        /// The module (imports only what RVM provides in module `rvm`).
        file: PathBuf,
    },
    /// List registered guest modules.
    List,
    /// Bind a partition's guest from wasm-guest.json and boot it (or admit
    /// it into this RVM_HOME's running instance).
    Boot {
        /// The registered partition.
        #[arg(long, value_name = "NAME")]
        partition: String,
        /// wasm-guest.json.
        #[arg(long = "wasm-ref", value_name = "FILE")]
        wasm_ref: PathBuf,
        /// Boot this WebAssembly module instead of resolving the package.
        #[arg(long, value_name = "FILE")]
        wasm: Option<PathBuf>,
        #[command(flatten)]
        boot: BootArgs,
    },
}

#[derive(Args, Debug)]
struct BootArgs {
    /// Folder with rvm.bin and guest-runtime.elf.
    #[arg(long, value_name = "DIR")]
    image_dir: Option<PathBuf>,
    /// QEMU binary (default: $RVM_QEMU, else qemu-system-aarch64).
    #[arg(long, value_name = "PATH")]
    qemu: Option<PathBuf>,
    /// Seconds before QEMU is killed.
    #[arg(long, value_name = "SECS", default_value_t = qemu::DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
    /// Also write the bundle (the hypervisor's initrd) to this file.
    #[arg(long, value_name = "FILE")]
    bundle_out: Option<PathBuf>,
    /// Build the bundle but do not start QEMU.
    #[arg(long)]
    no_boot: bool,
    /// Print every witness record and checkpoint as it arrives (one
    /// compact line each), between the console lines.
    #[arg(long)]
    show_witness: bool,
    /// Journal what enters each partition (messages received, state read,
    /// clock values, every call's status) beside its witness log, so that
    /// `witness replay` can re-execute it on the host.
    #[arg(long)]
    journal: bool,
    /// Give partitions A and B a channel between them (repeatable). Both
    /// must boot in this run. Partitions booted together share nothing
    /// unless linked.
    #[arg(long = "link", value_name = "A:B", value_parser = parse_link)]
    links: Vec<commands::Link>,
    /// Coherence domains: the hypervisor weighs the real traffic between
    /// agents, cuts the graph, and splits or merges agents between
    /// partitions at their turn boundaries, witnessing every decision
    /// (`SplitDecided`, `MergeDecided`, `Split`, `Merge`) with its cut.
    #[arg(long)]
    coherence: bool,
    /// With --bundle-out: also write the witness key's seed into that file
    /// (mode 0600). Without it the written bundle leaves the seed out.
    #[arg(long, requires = "bundle_out")]
    include_witness_seed: bool,
}

fn parse_link(s: &str) -> Result<commands::Link, String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected A:B, two partition names"))?;
    let a =
        crate::model::PartitionName::new(a).map_err(|e| format!("{s:?}: partition name {e}"))?;
    let b =
        crate::model::PartitionName::new(b).map_err(|e| format!("{s:?}: partition name {e}"))?;
    Ok(commands::Link { a, b })
}

impl BootArgs {
    fn options(&self) -> BootOptions {
        BootOptions {
            image_dir: self.image_dir.clone(),
            qemu: self.qemu.clone(),
            timeout: Duration::from_secs(self.timeout),
            bundle_out: self.bundle_out.clone(),
            no_boot: self.no_boot,
            live_witness: self.show_witness,
            journal: self.journal,
            coherence: self.coherence,
            links: self.links.clone(),
            include_witness_seed: self.include_witness_seed,
            instance: None,
            continuation: None,
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let ctx = Ctx {
        home: Home::from_env()?,
        now: home::now_unix(),
    };
    match cli.command {
        Command::Partition(PartitionCmd::Register { manifest, replace }) => {
            commands::partition_register(&ctx, &manifest, replace)
        }
        Command::Partition(PartitionCmd::List) => commands::partition_list(&ctx),
        Command::Partition(PartitionCmd::Remove { name }) => {
            commands::partition_remove(&ctx, &name)
        }
        Command::Partition(PartitionCmd::Unfence { name }) => {
            commands::partition_order(&ctx, rvm_abi::frame::OrderKind::Unfence, &name)
        }
        Command::Partition(PartitionCmd::Evict { name }) => {
            commands::partition_order(&ctx, rvm_abi::frame::OrderKind::Evict, &name)
        }
        Command::Caps(CapsCmd::Install { table, partition }) => {
            commands::caps_install(&ctx, &table, partition.as_deref())
        }
        Command::Caps(CapsCmd::Show { name }) => commands::caps_show(&ctx, &name),
        Command::Caps(CapsCmd::Prove {
            partition,
            partition_id,
            op,
            object,
            root,
            root_partition_id,
            boot_id,
            nonce,
            words,
            data_hex,
            data_file,
            args_digest,
            json,
        }) => approval::caps_prove(
            &ctx,
            &ApprovalRequest {
                partition,
                partition_id,
                op,
                object,
                root,
                root_partition_id,
                boot_id,
                nonce,
                args: ArgsSpec {
                    words,
                    data_hex,
                    data_file,
                    digest_hex: args_digest,
                },
                json,
            },
        ),
        Command::Witness(WitnessCmd::Show { log }) => witness_cli::show(&ctx, log.as_deref()),
        Command::Witness(WitnessCmd::Verify {
            log,
            key_fingerprint,
            pub_file,
            allow_unsigned_tail,
            require_signed: _,
        }) => witness_cli::verify(
            &ctx,
            log.as_deref(),
            &VerifyArgs {
                key_fingerprint,
                pub_file,
                allow_unsigned_tail,
            },
        ),
        Command::Witness(WitnessCmd::Replay {
            partition,
            wasm,
            quiet,
        }) => witness_cli::replay(&ctx, &partition, wasm.as_deref(), quiet),
        Command::Witness(WitnessCmd::Export { log, format, out }) => {
            witness_cli::export(&ctx, &log, format, out.as_deref())
        }
        Command::Witness(WitnessCmd::Prove {
            seq,
            log,
            json,
            out,
        }) => witness_cli::prove(&ctx, &log, seq, json, out.as_deref()),
        Command::Witness(WitnessCmd::VerifyProof {
            proof,
            pub_file,
            log,
        }) => {
            let key = match (pub_file, log) {
                (Some(p), _) => ProofKey::PubFile(p),
                (None, Some(l)) => ProofKey::Log(l),
                (None, None) => ProofKey::Home,
            };
            witness_cli::verify_proof(&ctx, &proof, &key)
        }
        Command::State(StateCmd::Show { partition, json }) => {
            crate::state::show(&ctx, &partition, json)
        }
        Command::Guest(GuestCmd::Add { package, file }) => {
            commands::guest_add(&ctx, &package, &file)
        }
        Command::Guest(GuestCmd::List) => commands::guest_list(&ctx),
        Command::Guest(GuestCmd::Boot {
            partition,
            wasm_ref,
            wasm,
            boot,
        }) => commands::guest_boot(
            &ctx,
            &partition,
            &wasm_ref,
            wasm.as_deref(),
            &boot.options(),
        ),
        Command::Launch {
            manifest,
            wasm,
            replace,
            boot,
        } => commands::launch(&ctx, &manifest, wasm.as_deref(), replace, &boot.options()),
        Command::Deploy {
            folder,
            wasm,
            replace,
            boot,
        } => commands::deploy(
            &ctx,
            &folder,
            None,
            wasm.as_deref(),
            replace,
            &boot.options(),
        ),
        Command::Check { folder } => commands::check(&ctx, &folder),
        Command::Status => commands::status(&ctx),
        Command::Up { names, boot } => commands::up(&ctx, &names, &boot.options()),
        Command::Keys { create } => commands::keys(&ctx, create),
        Command::Board(BoardCmd::List { json }) => {
            board::list(json);
            Ok(())
        }
        Command::Instance(InstanceCmd::Start { names, run }) => {
            // Refused here, before anything starts, if the last instance's
            // logs cannot continue.
            if !run.fresh && crate::instance::running(ctx.home.root()).is_none() {
                let extra = partition_names(&names)?;
                if let Some(c) = crate::roster::continuation(&ctx.home, &extra)? {
                    println!(
                        "continuing the last instance: {} ({} logs go on)",
                        if c.names.is_empty() { "no partition".to_string() } else { c.names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ") },
                        c.resumes.len()
                    );
                }
            }
            let mut args = vec!["instance".to_string(), "serve".to_string()];
            args.extend(names.iter().cloned());
            args.extend(run.to_args());
            crate::instance::start(&ctx.home, &args)
        }
        Command::Instance(InstanceCmd::Serve { names, run }) => {
            let dir = ctx.home.root().join(crate::instance::INSTANCE_DIR);
            let mut opts = run.options(dir);
            if run.fresh {
                crate::roster::Roster::forget(ctx.home.root());
                if let Some(to) = crate::state::set_aside(&ctx.home)? {
                    eprintln!("rvm-loader: the last instance's kept committed state was moved to {}", to.display());
                }
                return commands::up(&ctx, &names, &opts);
            }
            let extra = partition_names(&names)?;
            match crate::roster::continuation(&ctx.home, &extra)? {
                Some(c) => {
                    // Exactly these (none, if every partition left).
                    let names = c.names.clone();
                    opts.continuation = Some(c);
                    crate::boot::boot(&ctx, &names, &opts)
                }
                None => commands::up(&ctx, &names, &opts),
            }
        }
        Command::Instance(InstanceCmd::Status { json }) => crate::instance::status(&ctx.home, json),
        Command::Instance(InstanceCmd::Stop) => crate::instance::stop(&ctx.home),
        Command::Tool(cmd) => crate::tools::cli::run(&ctx.home, cmd),
    }
}

/// Partition names from the command line, checked.
fn partition_names(names: &[String]) -> crate::error::Result<Vec<crate::model::PartitionName>> {
    names
        .iter()
        .map(|n| crate::model::PartitionName::new(n).map_err(|e| Error::refused(format!("partition name {n}"), e.to_string())))
        .collect()
}

/// Entry point of both binaries.
pub fn main() -> ExitCode {
    let bin = std::env::args_os()
        .next()
        .and_then(|a| {
            PathBuf::from(a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "rvm-loader".into());
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd = cmd.bin_name(bin);
    let matches = cmd.get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
