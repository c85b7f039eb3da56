//! The boards RVM knows (`rvm-loader board list`): which it runs on, what
//! each one's hardware is, and what was tested on it and how.

use crate::qemu;
use std::fmt::Write as _;

/// Whether RVM runs on a board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// RVM boots and runs its tests on it.
    Supported,
    /// Known, but RVM does not run on it yet.
    NotYet,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Supported => "supported",
            Support::NotYet => "not yet supported",
        }
    }
}

/// A board RVM knows.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The name RVM's tools use for it.
    pub name: &'static str,
    /// The QEMU machine (`-machine`) that models it.
    pub qemu_machine: &'static str,
    pub description: &'static str,
    pub support: Support,
    /// What RVM has to drive on it.
    pub hardware: &'static str,
    /// What was tested on it, and how.
    pub tested: &'static str,
    /// What RVM lacks to run on it (empty when supported).
    pub missing: &'static str,
}

/// Every board RVM knows, the one it runs on first.
pub const BOARDS: &[Board] = &[
    Board {
        name: "qemu-virt",
        qemu_machine: "virt",
        description: "QEMU's virtual AArch64 machine",
        support: Support::Supported,
        hardware: "GICv3, PSCI (SMC), PL011 console, RAM from 1 GiB, \
                   secondaries by PSCI CPU_ON",
        tested: "under QEMU only, never on silicon: the QEMU integration tests \
                 (tests-qemu) with `-machine virt,virtualization=on,gic-version=3 \
                 -cpu cortex-a72`, under QEMU 7.2 and 10.0",
        missing: "",
    },
    Board {
        name: "rpi4",
        qemu_machine: "raspi4b",
        description: "Raspberry Pi 4 Model B, BCM2711",
        support: Support::NotYet,
        hardware: "GIC-400 (GICv2), no PSCI, PL011 and mini-UART (the \
                   device tree's console), RAM from 0, secondaries by spin-table",
        tested: "no test runs on it; tried by hand under QEMU 10 (`-machine \
                 raspi4b`, Linux's bcm2711-rpi-4-b.dtb): the image, loaded at \
                 2 MiB, faults as soon as it turns its MMU on, before any output",
        missing: "an image that runs where it is loaded (RAM at 0), GICv2, \
                  spin-table secondaries, a device tree parser that skips \
                  FDT_NOP, bus-address translation (`ranges`) for the console",
    },
    Board {
        name: "imx8mp",
        qemu_machine: "imx8mp-evk",
        description: "NXP i.MX 8M Plus EVK",
        support: Support::NotYet,
        hardware: "GICv3, PSCI (SMC), i.MX UART console, RAM from 1 GiB, \
                   secondaries by PSCI CPU_ON",
        tested: "no test runs on it; tried by hand under QEMU 10 (`-machine \
                 imx8mp-evk`, Linux's imx8mp-evk.dtb): the image panics while \
                 reading the device tree, before any output",
        missing: "an i.MX UART driver, a device tree parser that skips FDT_NOP",
    },
];

/// The board called `name`.
pub fn find(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

/// What `board list` prints.
pub fn list_text() -> String {
    let mut out = String::new();
    for b in BOARDS {
        let _ = writeln!(out, "{} ({}): {}", b.name, b.description, b.support.as_str());
        let _ = writeln!(out, "  QEMU machine: {}", b.qemu_machine);
        let _ = writeln!(out, "  hardware:     {}", b.hardware);
        let _ = writeln!(out, "  tested:       {}", b.tested);
        if !b.missing.is_empty() {
            let _ = writeln!(out, "  missing:      {}", b.missing);
        }
    }
    let _ = writeln!(
        out,
        "QEMU runs use ${} or {}.",
        qemu::QEMU_ENV,
        qemu::QEMU_DEFAULT
    );
    out
}

/// What `board list --json` prints: an array with one object per board
/// (`name`, `qemu_machine`, `description`, `support` as `board list`
/// words it, `hardware`, `tested`, `missing`: null when supported).
pub fn list_json() -> String {
    let boards: Vec<serde_json::Value> = BOARDS
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "qemu_machine": b.qemu_machine,
                "description": b.description,
                "support": b.support.as_str(),
                "hardware": b.hardware,
                "tested": b.tested,
                "missing": (!b.missing.is_empty()).then_some(b.missing),
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&boards).unwrap_or_default();
    out.push('\n');
    out
}

/// `rvm-loader board list [--json]`.
pub fn list(json: bool) {
    if json {
        print!("{}", list_json());
    } else {
        print!("{}", list_text());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_machines_are_unique() {
        for (i, a) in BOARDS.iter().enumerate() {
            for b in &BOARDS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.qemu_machine, b.qemu_machine);
            }
        }
    }

    #[test]
    fn only_qemu_virt_is_supported_and_the_others_say_what_they_lack() {
        let supported: Vec<_> = BOARDS
            .iter()
            .filter(|b| b.support == Support::Supported)
            .map(|b| b.name)
            .collect();
        assert_eq!(supported, ["qemu-virt"]);
        for b in BOARDS {
            assert_eq!(b.missing.is_empty(), b.support == Support::Supported, "{}", b.name);
        }
    }

    #[test]
    fn the_reference_machine_is_the_one_the_loader_boots() {
        let virt = find("qemu-virt").unwrap();
        let args = qemu::machine_args("rvm.bin".as_ref(), "b.rvm".as_ref(), 512);
        let machine = args[args.iter().position(|a| a == "-machine").unwrap() + 1]
            .to_string_lossy()
            .into_owned();
        assert_eq!(machine.split(',').next(), Some(virt.qemu_machine));
        assert!(virt.tested.contains(&machine), "{machine}");
    }

    #[test]
    fn the_list_names_every_board_and_its_support() {
        let text = list_text();
        for b in BOARDS {
            assert!(text.contains(&format!("{} ({}): {}", b.name, b.description, b.support.as_str())));
        }
        assert!(find("rpi4").is_some() && find("raspi4b").is_none());
    }
}
