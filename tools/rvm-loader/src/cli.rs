//! Command-line interface (`rvm-loader` and `rvm` are the same program).

use crate::commands::{self, BootOptions, Ctx};
use crate::error::Error;
use crate::qemu;
use crate::store::{self, Home};
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
(I/O, QEMU missing, timeout, the hypervisor's nonzero exit).

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
    /// Deploy the folder of a partition manifest and boot it (`rvm launch`).
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
    /// one step, without running its install-rvm.sh.
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
    /// that have a guest when none is named); consecutive ones share a channel.
    Up {
        /// Partitions to boot, in boot order.
        names: Vec<String>,
        #[command(flatten)]
        boot: BootArgs,
    },
    /// Show (or create) this RVM_HOME's witness and authority keys.
    Keys {
        /// Create the keys if they do not exist yet.
        #[arg(long)]
        create: bool,
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
}

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
    /// Bind a partition's guest from wasm-guest.json and boot it.
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
}

impl BootArgs {
    fn options(&self) -> BootOptions {
        BootOptions {
            image_dir: self.image_dir.clone(),
            qemu: self.qemu.clone(),
            timeout: Duration::from_secs(self.timeout),
            bundle_out: self.bundle_out.clone(),
            no_boot: self.no_boot,
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let ctx = Ctx {
        home: Home::from_env()?,
        now: store::now_unix(),
    };
    match cli.command {
        Command::Partition(PartitionCmd::Register { manifest, replace }) => {
            commands::partition_register(&ctx, &manifest, replace)
        }
        Command::Partition(PartitionCmd::List) => commands::partition_list(&ctx),
        Command::Partition(PartitionCmd::Remove { name }) => {
            commands::partition_remove(&ctx, &name)
        }
        Command::Caps(CapsCmd::Install { table, partition }) => {
            commands::caps_install(&ctx, &table, partition.as_deref())
        }
        Command::Caps(CapsCmd::Show { name }) => commands::caps_show(&ctx, &name),
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
    }
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
