//! `rvm-loader board list` through the built binary.

mod common;

use common::*;
use rvm_loader::board::BOARDS;

#[test]
fn board_list_names_every_board_and_leaves_the_home_alone() {
    let env = Env::new();
    let o = env.ok(&["board", "list"]);
    assert_eq!(o.stdout, rvm_loader::board::list_text());
    for b in BOARDS {
        assert!(o.stdout.contains(b.name) && o.stdout.contains(b.qemu_machine), "{}: {}", b.name, o.stdout);
    }
    assert!(o.stdout.contains("qemu-virt (QEMU's virtual AArch64 machine): supported\n"));
    assert!(o.stdout.contains("rpi4 (Raspberry Pi 4 Model B, BCM2711): not yet supported\n"));
    assert!(o.stdout.contains("imx8mp (NXP i.MX 8M Plus EVK): not yet supported\n"));
    assert!(!env.home().exists(), "board list created RVM_HOME");
}

#[test]
fn board_list_json_is_one_object_per_board() {
    let env = Env::new();
    let o = env.ok(&["board", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("board list --json prints JSON");
    let boards = v.as_array().expect("an array");
    assert_eq!(boards.len(), BOARDS.len());
    for (j, b) in boards.iter().zip(BOARDS) {
        assert_eq!(j["name"], b.name);
        assert_eq!(j["qemu_machine"], b.qemu_machine);
        assert_eq!(j["support"], b.support.as_str());
        assert_eq!(j["missing"].is_null(), b.missing.is_empty(), "{}", b.name);
    }
}
