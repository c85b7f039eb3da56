//! The `rvm` imports, exactly as the table declares them. This block is the
//! only `unsafe` in the SDK: calling an import is a hypercall stub.

#[link(wasm_import_module = "rvm")]
unsafe extern "C" {
    pub fn console_write(ptr: *const u8, len: i32) -> i32;
    pub fn channel_send(handle: i64, ptr: *const u8, len: i32) -> i32;
    pub fn channel_recv(handle: i64, ptr: *mut u8, cap: i32) -> i32;
    pub fn channel_wait(handle: i64, ptr: *mut u8, cap: i32, timeout_ns: i64) -> i32;
    pub fn wait_any(ptr: *const i64, count: i32, timeout_ns: i64) -> i32;
    pub fn state_stage(handle: i64, kptr: *const u8, klen: i32, vptr: *const u8, vlen: i32) -> i32;
    pub fn state_validate(handle: i64) -> i32;
    pub fn state_commit(handle: i64) -> i32;
    pub fn state_get(handle: i64, kptr: *const u8, klen: i32, vptr: *mut u8, cap: i32) -> i32;
    pub fn handle(kind: i32, n: i32) -> i64;
    pub fn clock() -> i64;
    #[link_name = "yield"]
    pub fn yield_now() -> i32;
    pub fn cap_derive(
        parent: i64,
        target: i32,
        rights: i32,
        expiry: i64,
        proof: *const u8,
        nonce: i64,
    ) -> i64;
    pub fn cap_revoke(handle: i64) -> i32;
    pub fn prove(handle: i64, out: *mut u8) -> i32;
    pub fn snapshot() -> i32;
    pub fn tool_call(
        name: *const u8,
        name_len: i32,
        request: *const u8,
        request_len: i32,
        response: *mut u8,
        response_cap: i32,
    ) -> i32;
    pub fn exit(code: i32) -> !;
}
