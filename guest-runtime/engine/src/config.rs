//! What the partition's policy says about the agent it runs.

use alloc::vec::Vec;
use core::num::NonZeroU64;

use rvm_abi::bootinfo::{BootInfo, HandleInfo};
use rvm_abi::{CapHandle, ObjectKind};

/// Fuel metering: how much the agent may execute before it yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FuelPolicy {
    /// No metering; only the hypervisor's timer preempts the agent.
    Unmetered,
    /// Yield the time slice after this much fuel, then refuel.
    PerSlice(NonZeroU64),
}

impl FuelPolicy {
    /// The policy for the boot-info field (0 = none).
    pub fn from_boot_info(fuel_per_slice: u64) -> Self {
        NonZeroU64::new(fuel_per_slice).map_or(Self::Unmetered, Self::PerSlice)
    }
}

/// The handles the partition started with, in boot-info order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandleList(Vec<HandleInfo>);

impl HandleList {
    /// A list from entries.
    pub fn new(entries: Vec<HandleInfo>) -> Self {
        Self(entries)
    }

    /// Read the `info.handle_count` entries listed on a boot-info `page`
    /// (capped at what the page can hold).
    pub fn from_boot_page(info: &BootInfo, page: &[u8]) -> Self {
        let count = usize::try_from(info.handle_count).unwrap_or(usize::MAX);
        Self(
            (0..count)
                .map_while(|n| BootInfo::read_handle(page, n))
                .collect(),
        )
    }

    /// The `n`-th (from 0) handle naming an object of `kind`.
    pub fn nth(&self, kind: ObjectKind, n: usize) -> Option<CapHandle> {
        self.0
            .iter()
            .filter(|h| h.kind == kind as u8)
            .nth(n)
            .and_then(|h| CapHandle::from_raw(h.raw))
    }

    /// Every entry.
    pub fn entries(&self) -> &[HandleInfo] {
        &self.0
    }
}

/// The partition policy the engine enforces on its agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Most linear memory the agent may have, in 64 KiB WASM pages.
    pub wasm_pages: u32,
    /// Fuel metering.
    pub fuel: FuelPolicy,
    /// Handles the `handle` import hands out.
    pub handles: HandleList,
    /// What a WASI program finds around it.
    pub wasi: crate::wasi::WasiEnv,
}

impl AgentConfig {
    /// The policy a boot-info page states.
    pub fn from_boot_info(info: &BootInfo, page: &[u8]) -> Self {
        Self {
            wasm_pages: info.wasm_pages,
            fuel: FuelPolicy::from_boot_info(info.fuel_per_slice),
            handles: HandleList::from_boot_page(info, page),
            wasi: crate::wasi::WasiEnv::for_partition(info.name()),
        }
    }
}
