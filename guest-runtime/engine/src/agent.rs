//! Loading an agent and running its entry.

use alloc::format;
use alloc::string::ToString;

use rvm_abi::imports::turn;
use wasmi::{
    CompilationMode, Config, Engine, Error, ExternType, Linker, Module, Store, TypedFunc,
    TypedResumableCall, Val,
};

use crate::budget::{budget_bytes, store_limits};
use crate::snapshot::{self, GlobalValue};
use crate::config::{AgentConfig, FuelPolicy};
use crate::error::{LoadError, RestoreError, RunOutcome, RunReport, Trap};
use crate::glue::{self, SnapshotMode, Ctx};
use crate::host::HostCalls;
use crate::screen;

/// The exports tried as a one-call entry point, in order; the first that
/// exists with type `[] -> []` is used — unless the agent is a turn agent
/// (it exports [`turn::EXPORT`] of type `[] -> [i32]`), which is driven one
/// turn at a time instead.
pub const ENTRY_NAMES: [&str; 2] = ["run", "_start"];

/// How the agent is driven.
enum Entry {
    /// Called once.
    Run(TypedFunc<(), ()>),
    /// Called once per turn until it returns `turn::DONE`.
    Turn(TypedFunc<(), i32>),
}

/// A loaded, instantiated agent, ready to run.
pub struct Agent<H: HostCalls + 'static> {
    store: Store<Ctx<H>>,
    entry: Entry,
    entry_name: &'static str,
    fuel: FuelPolicy,
    /// The memory budget, in WASM pages.
    wasm_pages: u32,
    /// Turns completed (carried over by a restore).
    turns: u64,
    /// Whether an idle turn may put the partition to sleep ([`Agent::allow_dormancy`]).
    dormancy: bool,
}

/// How one call into the agent ended.
enum CallEnd<R> {
    Returned(R),
    Ended(RunOutcome),
}

fn engine_config(fuel: FuelPolicy) -> Config {
    let mut config = Config::default();
    config
        // Validate and translate everything up front: a module is refused
        // before it runs, and translation never costs fuel mid-run.
        .compilation_mode(CompilationMode::Eager)
        .consume_fuel(matches!(fuel, FuelPolicy::PerSlice(_)))
        .allow_start_fn(false)
        .wasm_multi_memory(false);
    config
}

/// Whether `wasm` is a valid module for the engine: WebAssembly validation
/// under the feature set [`Agent::load`] compiles with. Host tools call it
/// so that a module they accept is one the guest runtime accepts as valid.
pub fn validate(wasm: &[u8]) -> Result<(), LoadError> {
    // Fuel metering changes translation, not which modules are valid.
    let engine = Engine::new(&engine_config(FuelPolicy::Unmetered));
    Module::validate(&engine, wasm).map_err(|e| LoadError::Invalid {
        detail: e.to_string(),
    })
}

impl<H: HostCalls + 'static> Agent<H> {
    /// Screen, validate, compile and instantiate `wasm` under `config`.
    pub fn load(wasm: &[u8], config: AgentConfig, host: H) -> Result<Self, LoadError> {
        let facts = screen::prescan(wasm, config.wasm_pages)?;
        let engine = Engine::new(&engine_config(config.fuel));
        let module = Module::new(&engine, wasm).map_err(|e| LoadError::Invalid {
            detail: e.to_string(),
        })?;
        screen::check_import_signatures(&module)?;
        let is_turn_agent = matches!(module.get_export(turn::EXPORT),
            Some(ExternType::Func(ty)) if ty.params().is_empty() && ty.results() == [wasmi::ValType::I32]);
        let entry_name = if is_turn_agent {
            turn::EXPORT
        } else {
            ENTRY_NAMES
                .into_iter()
                .find(|name| {
                    matches!(module.get_export(name),
                        Some(ExternType::Func(ty)) if ty.params().is_empty() && ty.results().is_empty())
                })
                .ok_or(LoadError::NoEntry)?
        };
        let unfaithful = facts.hidden_mutable_global || facts.table_writer;
        let snapshot_mode = match (unfaithful, is_turn_agent) {
            (true, _) => SnapshotMode::Unsupported,
            (false, true) => SnapshotMode::AtTurnEnd,
            (false, false) => SnapshotMode::Immediate,
        };

        let ctx = Ctx {
            host,
            limits: store_limits(config.wasm_pages),
            handles: config.handles,
            instance: None,
            memory: None,
            host_calls: 0,
            snapshot_mode,
            snapshot_requested: false,
            inbox: glue::InboxSignal::default(),
            wasi_random: crate::wasi::Random::new(config.wasi.seed),
            wasi: config.wasi,
        };
        let mut store = Store::new(&engine, ctx);
        store.limiter(|ctx| &mut ctx.limits);
        let instantiation = |e: Error| LoadError::Instantiation {
            detail: e.to_string(),
        };
        let mut linker = Linker::new(&engine);
        glue::define(&mut linker).map_err(instantiation)?;
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .map_err(instantiation)?;
        let memory = instance
            .exports(&store)
            .find_map(|export| export.into_memory());
        store.data_mut().instance = Some(instance);
        store.data_mut().memory = memory;
        let entry = if is_turn_agent {
            Entry::Turn(
                instance
                    .get_typed_func::<(), i32>(&store, entry_name)
                    .map_err(instantiation)?,
            )
        } else {
            Entry::Run(
                instance
                    .get_typed_func::<(), ()>(&store, entry_name)
                    .map_err(instantiation)?,
            )
        };
        Ok(Self {
            store,
            entry,
            entry_name,
            fuel: config.fuel,
            wasm_pages: config.wasm_pages,
            turns: 0,
            dormancy: false,
        })
    }

    /// Whether the agent is driven turn by turn.
    pub fn is_turn_agent(&self) -> bool {
        matches!(self.entry, Entry::Turn(_))
    }

    /// Turns completed so far (including those before a restored snapshot).
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// The name of the export used as the entry.
    pub fn entry_name(&self) -> &'static str {
        self.entry_name
    }

    /// The host.
    pub fn host(&self) -> &H {
        &self.store.data().host
    }

    /// The host, mutably.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.store.data_mut().host
    }

    /// Give the host back.
    pub fn into_host(self) -> H {
        self.store.into_data().host
    }

    /// Size of the agent's linear memory in bytes (0 without one).
    pub fn memory_len(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// Fill the tank for a new slice: the slice's fuel, or what the next
    /// step needs if that is more (wasmi charges a basic block up front; a
    /// block dearer than a whole slice must still be able to run, or the
    /// agent would yield forever without progress).
    fn refuel(&mut self, required: u64) -> Result<(), Error> {
        match self.fuel {
            FuelPolicy::Unmetered => Ok(()),
            FuelPolicy::PerSlice(fuel) => self.store.set_fuel(fuel.get().max(required)),
        }
    }

    /// Run one call of `f` to its end, yielding and refuelling as the fuel
    /// policy says. A `turn` call gets one slice's fuel: running out of it
    /// ends the run with [`Trap::TurnOverBudget`] (the runtime reports an
    /// agent trap, F1).
    fn call<R: wasmi::WasmResults>(
        &mut self,
        f: TypedFunc<(), R>,
        slices: &mut u64,
        turn: bool,
    ) -> CallEnd<R> {
        let mut call = f.call_resumable(&mut self.store, ());
        loop {
            match call {
                Ok(TypedResumableCall::Finished(r)) => return CallEnd::Returned(r),
                Ok(TypedResumableCall::HostTrap(trap)) => {
                    return CallEnd::Ended(classify(trap.host_error()))
                }
                Ok(TypedResumableCall::OutOfFuel(_)) if turn => {
                    let fuel = match self.fuel {
                        FuelPolicy::PerSlice(f) => f.get(),
                        FuelPolicy::Unmetered => 0,
                    };
                    return CallEnd::Ended(RunOutcome::Trapped(Trap::TurnOverBudget { fuel }));
                }
                Ok(TypedResumableCall::OutOfFuel(pending)) => {
                    if let Err(e) = self.store.data_mut().host.yield_now() {
                        return CallEnd::Ended(RunOutcome::Stopped(e));
                    }
                    *slices += 1;
                    if let Err(e) = self.refuel(pending.required_fuel()) {
                        return CallEnd::Ended(classify(&e));
                    }
                    call = pending.resume(&mut self.store);
                }
                Err(e) => return CallEnd::Ended(classify(&e)),
            }
        }
    }

    /// Run the agent to its end: a `run` entry once; a turn agent turn after
    /// turn until it is done. Returns when it finishes, calls `exit`, traps,
    /// or (with fuel) the host refuses a yield. A snapshot a turn agent asked
    /// for during a turn is taken when that turn ends.
    pub fn run(&mut self) -> RunReport {
        match self.drive(None) {
            Some(report) => report,
            // Without a turn limit the drive only returns when the agent ends.
            None => RunReport {
                outcome: RunOutcome::Trapped(Trap::Other(
                    "turn loop paused without a limit".to_string(),
                )),
                slices: 0,
                host_calls: 0,
                turns: 0,
                snapshots: 0,
                snapshots_refused: 0,
            },
        }
    }

    /// Run at most `max_turns` turns (at least one), then pause: `None`
    /// while the agent has more turns to run, its report once it has ended
    /// (finished, exited, trapped or stopped). A `run`-entry agent runs to
    /// its end in one call. A runtime with several agents drives each this
    /// way, one after the other, at turn boundaries.
    pub fn run_turns(&mut self, max_turns: u64) -> Option<RunReport> {
        self.drive(Some(max_turns.max(1)))
    }

    /// [`Agent::run`] with an optional limit on the turns run before pausing.
    fn drive(&mut self, limit: Option<u64>) -> Option<RunReport> {
        let calls_before = self.store.data().host_calls;
        let turns_before = self.turns;
        let mut slices = u64::from(matches!(self.fuel, FuelPolicy::PerSlice(_)));
        let (mut snapshots, mut refused) = (0, 0);
        let outcome = 'run: {
            if let Err(e) = self.refuel(0) {
                break 'run classify(&e);
            }
            match self.entry {
                Entry::Run(f) => match self.call(f, &mut slices, false) {
                    CallEnd::Returned(()) => RunOutcome::Finished { code: 0 },
                    CallEnd::Ended(outcome) => outcome,
                },
                Entry::Turn(f) => loop {
                    // Each turn starts with a full tank: its CPU budget.
                    if let Err(e) = self.refuel(0) {
                        break 'run classify(&e);
                    }
                    let result = match self.call(f, &mut slices, true) {
                        CallEnd::Returned(r) => r,
                        CallEnd::Ended(outcome) => break 'run outcome,
                    };
                    if result != turn::CONTINUE && result != turn::DONE {
                        break 'run RunOutcome::Trapped(Trap::Other(format!(
                            "`{}` returned {result} (want {} or {})",
                            turn::EXPORT,
                            turn::CONTINUE,
                            turn::DONE
                        )));
                    }
                    self.turns += 1;
                    if core::mem::take(&mut self.store.data_mut().snapshot_requested) {
                        match self.snapshot() {
                            Ok(_) => snapshots += 1,
                            Err(_) => refused += 1,
                        }
                    }
                    if result == turn::DONE {
                        break 'run RunOutcome::Finished { code: 0 };
                    }
                    if core::mem::take(&mut self.store.data_mut().inbox).idle() && self.dormancy {
                        snapshots += self.idle_boundary();
                    }
                    if limit.is_some_and(|l| self.turns - turns_before >= l) {
                        return None;
                    }
                },
            }
        };
        Some(RunReport {
            outcome,
            slices,
            host_calls: self.store.data().host_calls - calls_before,
            turns: self.turns - turns_before,
            snapshots,
            snapshots_refused: refused,
        })
    }

    /// Let an idle turn put the partition to sleep (the `Dormant` memory
    /// tier): only for a runtime whose partition runs this one agent — the
    /// agent's snapshot is then the partition's whole state.
    pub fn allow_dormancy(&mut self, allow: bool) {
        self.dormancy = allow;
    }

    /// After a turn that found the inbox empty and received nothing: if the
    /// host says the partition may sleep, snapshot and tell it so. On a
    /// real machine the second `idle` returns only if a message arrived in
    /// between; the turns go on either way. Returns the snapshots taken.
    fn idle_boundary(&mut self) -> u64 {
        if !matches!(self.store.data_mut().host.idle(0), Ok(true)) {
            return 0;
        }
        match self.snapshot() {
            Ok(receipt) => {
                let _ = self.store.data_mut().host.idle(receipt.id);
                1
            }
            Err(_) => 0,
        }
    }

    /// Hand the agent's state to the host now (between turns).
    pub fn snapshot(&mut self) -> Result<crate::SnapshotReceipt, rvm_abi::HvError> {
        let meta = glue::capture_meta(&self.store, self.turns);
        match self.store.data().memory {
            Some(mem) => {
                let (data, ctx) = mem.data_and_store_mut(&mut self.store);
                let header = snapshot::encode_header(&meta, data.len());
                ctx.host.snapshot(&header, data)
            }
            None => {
                let header = snapshot::encode_header(&meta, 0);
                self.store.data_mut().host.snapshot(&header, &[])
            }
        }
    }

    /// Put a freshly loaded turn agent into the state `image` records (see
    /// [`snapshot`]): memory grown and overwritten, mutable globals set,
    /// the turn count carried over. The next [`Agent::run`] resumes at the
    /// turn after the snapshot. Nothing is changed unless the image fits.
    pub fn restore(&mut self, image: &[u8]) -> Result<(), RestoreError> {
        if !self.is_turn_agent() {
            return Err(RestoreError::NotTurnAgent);
        }
        let image = snapshot::decode(image).map_err(RestoreError::Image)?;
        let globals = glue::mutable_globals(&self.store);
        if globals.len() != image.meta.globals.len() {
            return Err(RestoreError::GlobalCount {
                image: image.meta.globals.len(),
                agent: globals.len(),
            });
        }
        for (index, (g, want)) in globals.iter().zip(&image.meta.globals).enumerate() {
            let have = glue::global_value(g.get(&self.store));
            if !have.is_some_and(|h| h.same_type(*want)) {
                return Err(RestoreError::GlobalType { index });
            }
        }
        let agent_table = glue::capture_meta(&self.store, 0).table_len;
        if agent_table != image.meta.table_len {
            return Err(RestoreError::TableLength {
                image: image.meta.table_len,
                agent: agent_table,
            });
        }
        let memory = self.store.data().memory;
        let agent_bytes = self.memory_len();
        let image_bytes = image.memory.len();
        let page = usize::try_from(rvm_abi::bootinfo::layout::WASM_PAGE).unwrap_or(usize::MAX);
        let limit = budget_bytes(self.wasm_pages);
        let size_ok = image_bytes % page == 0 && image_bytes >= agent_bytes && image_bytes <= limit;
        let size_error = RestoreError::MemorySize {
            image_bytes,
            agent_bytes,
        };
        match memory {
            None if image_bytes == 0 => {}
            None => return Err(size_error),
            Some(_) if !size_ok => return Err(size_error),
            Some(mem) => {
                let grow = u64::try_from((image_bytes - agent_bytes) / page)
                    .map_err(|_| size_error.clone())?;
                if grow > 0 {
                    mem.grow(&mut self.store, grow)
                        .map_err(|_| size_error.clone())?;
                }
                mem.data_mut(&mut self.store)[..image_bytes].copy_from_slice(image.memory);
            }
        }
        for (g, value) in globals.iter().zip(&image.meta.globals) {
            let v = match *value {
                GlobalValue::I32(v) => Val::I32(v),
                GlobalValue::I64(v) => Val::I64(v),
                GlobalValue::F32(v) => Val::F32(wasmi::F32::from_bits(v)),
                GlobalValue::F64(v) => Val::F64(wasmi::F64::from_bits(v)),
            };
            // Types were checked above; a mutable global takes any value of its type.
            let _ = g.set(&mut self.store, v);
        }
        self.turns = image.meta.turn;
        Ok(())
    }
}

fn classify(error: &Error) -> RunOutcome {
    if let Some(code) = error.i32_exit_status() {
        RunOutcome::Finished { code }
    } else if let Some(code) = error.as_trap_code() {
        RunOutcome::Trapped(Trap::Wasm(code))
    } else {
        RunOutcome::Trapped(Trap::Other(error.to_string()))
    }
}
