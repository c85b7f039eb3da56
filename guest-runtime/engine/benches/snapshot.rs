//! Host time of the snapshot path for 1 MiB and 16 MiB linear memories:
//! the engine capturing an image (header and globals; the memory is handed
//! over in place), the state hash the kernel computes over it (SHA-256 of
//! the canonical encoding, with the witness crate's SHA-256), and the
//! engine restoring a freshly loaded agent from it (grow, copy, globals).
//! The QEMU instruction counts are in `tests-qemu/tests/recovery.rs`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rvm_abi::imports::PROVE_BUFFER_LEN;
use rvm_abi::recovery::StateEncoder;
use rvm_abi::{CapHandle, HvError};
use rvm_agent_engine::snapshot;
use rvm_agent_engine::{
    Agent, AgentConfig, SnapshotReceipt, DeriveRequest, FuelPolicy, HandleList, HostCalls,
};

/// The tests' module builder.
#[path = "../tests/support/forge.rs"]
#[allow(dead_code)]
mod forge;

/// A host that keeps the last image and refuses everything else.
#[derive(Default)]
struct Keeper {
    image: Vec<u8>,
}

impl HostCalls for Keeper {
    fn console_write(&mut self, _: &[u8]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn channel_send(&mut self, _: CapHandle, _: &[u8]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn channel_recv(&mut self, _: CapHandle, _: &mut [u8]) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn channel_wait(&mut self, _: CapHandle, _: &mut [u8], _: u64) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn wait_any(&mut self, _: &[CapHandle], _: u64) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn state_stage(&mut self, _: CapHandle, _: &[u8], _: &[u8]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn state_validate(&mut self, _: CapHandle) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn state_commit(&mut self, _: CapHandle) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn state_get(&mut self, _: CapHandle, _: &[u8], _: &mut [u8]) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn clock_read(&mut self) -> Result<u64, HvError> {
        Err(HvError::NotSupported)
    }
    fn yield_now(&mut self) -> Result<(), HvError> {
        Ok(())
    }
    fn cap_derive(&mut self, _: &DeriveRequest<'_>) -> Result<CapHandle, HvError> {
        Err(HvError::NotSupported)
    }
    fn cap_revoke(&mut self, _: CapHandle, _: Option<&[u8]>, _: u64) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn prove(&mut self, _: CapHandle, _: &mut [u8; PROVE_BUFFER_LEN]) -> Result<(), HvError> {
        Err(HvError::NotSupported)
    }
    fn tool_call(&mut self, _: &[u8], _: &[u8], _: &mut [u8]) -> Result<usize, HvError> {
        Err(HvError::NotSupported)
    }
    fn snapshot(
        &mut self,
        header: &[u8],
        memory: &[u8],
    ) -> Result<SnapshotReceipt, HvError> {
        // What crosses to EL2 is the two parts; keep them as one image.
        self.image.clear();
        self.image.extend_from_slice(header);
        self.image.extend_from_slice(memory);
        Ok(SnapshotReceipt::default())
    }
}

/// A turn agent with a memory of `pages` pages (exported), one exported
/// mutable i32 global, and `turn` returning DONE.
fn module(pages: u32) -> Vec<u8> {
    let mut m = forge::Module::new();
    let turn = m.func(&[], &[forge::I32], &[forge::op::I32_CONST, 1]);
    m.global_i32(0, Some("g"));
    m.memory(pages).export("turn", turn);
    m.encode()
}

fn load(wasm: &[u8], pages: u32) -> Agent<Keeper> {
    let cfg = AgentConfig {
        wasm_pages: pages,
        fuel: FuelPolicy::Unmetered,
        handles: HandleList::default(),
        wasi: rvm_agent_engine::WasiEnv::default(),
    };
    Agent::load(wasm, cfg, Keeper::default()).expect("the bench module loads")
}

fn state_hash(image: &[u8]) -> [u8; 32] {
    let mut h = rvm_witness::sha256::Sha256::new();
    {
        let mut e = StateEncoder::new(|b: &[u8]| h.update(b), image.len() as u64);
        e.image(image);
        e.items(0);
    }
    h.finalize().0
}

fn bench(c: &mut Criterion) {
    for mib in [1u32, 16] {
        let pages = mib * 16;
        let wasm = module(pages);
        let mut agent = load(&wasm, pages);
        agent.snapshot().expect("snapshot");
        let image = std::mem::take(&mut agent.host_mut().image);
        assert_eq!(
            snapshot::decode(&image).unwrap().memory.len(),
            (mib as usize) << 20
        );
        let mut g = c.benchmark_group(format!("snapshot_{mib}MiB"));
        g.throughput(Throughput::Bytes(image.len() as u64));
        g.sample_size(10);
        g.bench_function("engine_capture", |b| {
            b.iter(|| agent.snapshot().expect("snapshot"))
        });
        g.bench_function("state_hash", |b| b.iter(|| state_hash(&image)));
        g.bench_function("engine_restore", |b| {
            b.iter_batched(
                || load(&wasm, pages),
                |mut fresh| fresh.restore(&image).expect("restore"),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
