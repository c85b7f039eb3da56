//! Loading an agent and running its entry.

use alloc::string::ToString;

use wasmi::{
    CompilationMode, Config, Engine, Error, ExternType, Linker, Module, Store, TypedFunc,
    TypedResumableCall,
};

use crate::budget::store_limits;
use crate::config::{AgentConfig, FuelPolicy};
use crate::error::{LoadError, RunOutcome, RunReport, Trap};
use crate::glue::{self, Ctx};
use crate::host::HostCalls;
use crate::screen;

/// The exports tried as the entry point, in order; the first that exists with
/// type `[] -> []` is used.
pub const ENTRY_NAMES: [&str; 2] = ["run", "_start"];

/// A loaded, instantiated agent, ready to run.
pub struct Agent<H: HostCalls + 'static> {
    store: Store<Ctx<H>>,
    entry: TypedFunc<(), ()>,
    entry_name: &'static str,
    fuel: FuelPolicy,
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

impl<H: HostCalls + 'static> Agent<H> {
    /// Screen, validate, compile and instantiate `wasm` under `config`.
    pub fn load(wasm: &[u8], config: AgentConfig, host: H) -> Result<Self, LoadError> {
        screen::prescan(wasm, config.wasm_pages)?;
        let engine = Engine::new(&engine_config(config.fuel));
        let module = Module::new(&engine, wasm).map_err(|e| LoadError::Invalid {
            detail: e.to_string(),
        })?;
        screen::check_import_signatures(&module)?;
        let entry_name = ENTRY_NAMES
            .into_iter()
            .find(|name| {
                matches!(module.get_export(name),
                    Some(ExternType::Func(ty)) if ty.params().is_empty() && ty.results().is_empty())
            })
            .ok_or(LoadError::NoEntry)?;

        let ctx = Ctx {
            host,
            limits: store_limits(config.wasm_pages),
            handles: config.handles,
            instance: None,
            memory: None,
            host_calls: 0,
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
        let entry = instance
            .get_typed_func::<(), ()>(&store, entry_name)
            .map_err(instantiation)?;
        Ok(Self {
            store,
            entry,
            entry_name,
            fuel: config.fuel,
        })
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

    /// Run the entry to its end: returns when it returns, calls `exit`, traps,
    /// or (with fuel) the host refuses a yield.
    pub fn run(&mut self) -> RunReport {
        let calls_before = self.store.data().host_calls;
        let mut slices = u64::from(matches!(self.fuel, FuelPolicy::PerSlice(_)));
        let outcome = 'run: {
            if let Err(e) = self.refuel(0) {
                break 'run classify(&e);
            }
            let mut call = self.entry.call_resumable(&mut self.store, ());
            loop {
                match call {
                    Ok(TypedResumableCall::Finished(())) => {
                        break 'run RunOutcome::Finished { code: 0 }
                    }
                    Ok(TypedResumableCall::HostTrap(trap)) => {
                        break 'run classify(trap.host_error())
                    }
                    Ok(TypedResumableCall::OutOfFuel(pending)) => {
                        if let Err(e) = self.store.data_mut().host.yield_now() {
                            break 'run RunOutcome::Stopped(e);
                        }
                        slices += 1;
                        if let Err(e) = self.refuel(pending.required_fuel()) {
                            break 'run classify(&e);
                        }
                        call = pending.resume(&mut self.store);
                    }
                    Err(e) => break 'run classify(&e),
                }
            }
        };
        RunReport {
            outcome,
            slices,
            host_calls: self.store.data().host_calls - calls_before,
        }
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
