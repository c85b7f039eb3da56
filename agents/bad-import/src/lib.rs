//! Hostile agent: imports `rvm.open_socket`, which the host-function table
//! does not have, so the runtime must refuse the module before it runs.
#![no_std]

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "rvm")]
unsafe extern "C" {
    fn open_socket(port: i32) -> i32;
}

#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn run() {
    rvm_guest::println!("bad-import: this line must never print");
    // SAFETY: a fixture: the call exists only so the import is kept; the
    // module is refused before it can run.
    let status = unsafe { open_socket(80) };
    rvm_guest::exit(status)
}

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    rvm_guest::exit(101)
}
