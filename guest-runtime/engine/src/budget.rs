//! The memory budget, enforced through wasmi's store limits.

use wasmi::{StoreLimits, StoreLimitsBuilder};

use rvm_abi::bootinfo::layout::WASM_PAGE;

/// Most elements any table may grow to (a policy bound on heap use).
pub const MAX_TABLE_ELEMENTS: usize = 10_000;

/// Store limits for an agent: one instance, at most one memory of at most
/// `wasm_pages` pages, at most one table of [`MAX_TABLE_ELEMENTS`].
pub(crate) fn store_limits(wasm_pages: u32) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(budget_bytes(wasm_pages))
        .table_elements(MAX_TABLE_ELEMENTS)
        .instances(1)
        .memories(1)
        .tables(1)
        .build()
}

/// The budget in bytes, saturating where `usize` is narrower than the product.
pub(crate) fn budget_bytes(wasm_pages: u32) -> usize {
    let bytes = u64::from(wasm_pages).saturating_mul(WASM_PAGE);
    usize::try_from(bytes).unwrap_or(usize::MAX)
}
