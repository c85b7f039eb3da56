//! The WASI (`wasm32-wasip1`) subset ([`rvm_abi::imports::wasi`]), built on
//! the `rvm` calls: an ordinary WASI program runs unmodified, and the
//! hypervisor sees only the calls it already knows (console writes, the
//! clock, yields), each witnessed and journaled as usual. What is answered
//! here without a call (arguments, environment, random bytes, reads of
//! stdin) is a pure function of the partition, so a replay on the host —
//! the same engine — answers the same.

use alloc::vec::Vec;

use rvm_abi::imports::wasi::{errno, WasiImport, MODULE};
use rvm_abi::HvError;
use wasmi::{Caller, Error, Linker};

use crate::glue::Ctx;
use crate::host::HostCalls;

/// Most bytes one `ConsoleWrite` carries (the kernel's limit).
const CONSOLE_CHUNK: usize = 4096;

/// What a WASI program finds around it: its arguments, its environment,
/// and the seed of its random bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WasiEnv {
    /// `argv`, each without its NUL.
    pub args: Vec<Vec<u8>>,
    /// `NAME=value` strings, each without its NUL.
    pub env: Vec<Vec<u8>>,
    /// Seed of `random_get`'s generator.
    pub seed: u64,
}

impl WasiEnv {
    /// A partition's: one argument, its name; no variables; a seed drawn
    /// from its name (so its restarts and its replay draw the same bytes).
    pub fn for_partition(name: &str) -> Self {
        let mut seed = 0xcbf2_9ce4_8422_2325u64;
        for b in b"RVM-WASI-RANDOM1".iter().chain(name.as_bytes()) {
            seed = (seed ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self { args: alloc::vec![Vec::from(name.as_bytes())], env: Vec::new(), seed }
    }
}

/// The generator's state in the store: SplitMix64 (a well-known 64-bit
/// mixer, a few lines: deterministic and replayable, which is what
/// `random_get` promises here — it is not a source of secrets, so a
/// cryptographic generator would add code and no guarantee).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Random(u64);

impl Random {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

type C<'a, H> = Caller<'a, Ctx<H>>;

fn unsigned(x: i32) -> usize {
    u32::from_ne_bytes(x.to_ne_bytes()) as usize
}

/// `len` bytes at `ptr` of a memory of `size` bytes.
fn span(size: usize, ptr: usize, len: usize) -> Result<core::ops::Range<usize>, i32> {
    let end = ptr.checked_add(len).ok_or(errno::FAULT)?;
    if end > size {
        return Err(errno::FAULT);
    }
    Ok(ptr..end)
}

fn put_u32(mem: &mut [u8], at: usize, v: u32) -> Result<(), i32> {
    let r = span(mem.len(), at, 4)?;
    mem[r].copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_u64(mem: &mut [u8], at: usize, v: u64) -> Result<(), i32> {
    let r = span(mem.len(), at, 8)?;
    mem[r].copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn get_u32(mem: &[u8], at: usize) -> Result<usize, i32> {
    let r = span(mem.len(), at, 4)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b) as usize)
}

/// The bytes an iovec list names, gathered (each `{buf u32, len u32}`).
fn gather(mem: &[u8], iovs: usize, count: usize) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    for i in 0..count {
        let at = iovs.checked_add(i.checked_mul(8).ok_or(errno::FAULT)?).ok_or(errno::FAULT)?;
        let buf = get_u32(mem, at)?;
        let len = get_u32(mem, at + 4)?;
        let r = span(mem.len(), buf, len)?;
        // The agent names the sizes: grown fallibly, never past its memory.
        out.try_reserve(len).map_err(|_| errno::IO)?;
        out.extend_from_slice(&mem[r]);
    }
    Ok(out)
}

/// A list of strings laid out as `argv`/`environ`: pointers at `list`,
/// the NUL-terminated strings from `buf`.
fn lay_out(mem: &mut [u8], strings: &[Vec<u8>], list: usize, buf: usize) -> Result<(), i32> {
    let mut at = buf;
    for (i, s) in strings.iter().enumerate() {
        put_u32(mem, list + 4 * i, u32::try_from(at).map_err(|_| errno::FAULT)?)?;
        let r = span(mem.len(), at, s.len() + 1)?;
        mem[r.start..r.end - 1].copy_from_slice(s);
        mem[r.end - 1] = 0;
        at = r.end;
    }
    Ok(())
}

/// `(count, bytes with their NULs)` of a list of strings.
fn sizes(strings: &[Vec<u8>]) -> (u32, u32) {
    let bytes: usize = strings.iter().map(|s| s.len() + 1).sum();
    (strings.len() as u32, u32::try_from(bytes).unwrap_or(u32::MAX))
}

fn with_mem<H>(c: &mut C<'_, H>, f: impl FnOnce(&mut [u8], &mut Ctx<H>) -> Result<(), i32>) -> i32 {
    c.data_mut().host_calls += 1;
    let Some(memory) = c.data().memory else { return errno::FAULT };
    let (mem, ctx) = memory.data_and_store_mut(c);
    match f(mem, ctx) {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    }
}

/// A hypercall's error as the nearest WASI errno.
fn errno_of(e: HvError) -> i32 {
    match e {
        HvError::BadAddress => errno::FAULT,
        HvError::InvalidArgument => errno::INVAL,
        _ => errno::IO,
    }
}

/// Define the WASI subset in `linker`.
pub(crate) fn define<H: HostCalls + 'static>(linker: &mut Linker<Ctx<H>>) -> Result<(), Error> {
    for &import in WasiImport::ALL {
        let name = import.name();
        match import {
            WasiImport::FdWrite => {
                linker.func_wrap(MODULE, name, |mut c: C<'_, H>, fd: i32, iovs: i32, count: i32, written: i32| -> i32 {
                    with_mem(&mut c, |mem, ctx| {
                        if fd != 1 && fd != 2 {
                            return Err(errno::BADF);
                        }
                        let bytes = gather(mem, unsigned(iovs), unsigned(count))?;
                        for chunk in bytes.chunks(CONSOLE_CHUNK) {
                            ctx.host.console_write(chunk).map_err(errno_of)?;
                        }
                        put_u32(mem, unsigned(written), u32::try_from(bytes.len()).map_err(|_| errno::INVAL)?)
                    })
                })?;
            }
            WasiImport::FdRead => {
                linker.func_wrap(MODULE, name, |mut c: C<'_, H>, fd: i32, _iovs: i32, _count: i32, read: i32| -> i32 {
                    with_mem(&mut c, |mem, _| {
                        if fd != 0 {
                            return Err(errno::BADF);
                        }
                        // Standard input is empty: end of input at once.
                        put_u32(mem, unsigned(read), 0)
                    })
                })?;
            }
            WasiImport::ClockTimeGet => {
                linker.func_wrap(MODULE, name, |mut c: C<'_, H>, _id: i32, _precision: i64, at: i32| -> i32 {
                    with_mem(&mut c, |mem, ctx| {
                        let now = ctx.host.clock_read().map_err(errno_of)?;
                        put_u64(mem, unsigned(at), now)
                    })
                })?;
            }
            WasiImport::RandomGet => {
                linker.func_wrap(MODULE, name, |mut c: C<'_, H>, buf: i32, len: i32| -> i32 {
                    with_mem(&mut c, |mem, ctx| {
                        let r = span(mem.len(), unsigned(buf), unsigned(len))?;
                        ctx.wasi_random.fill(&mut mem[r]);
                        Ok(())
                    })
                })?;
            }
            WasiImport::ArgsSizesGet | WasiImport::EnvironSizesGet => {
                let args = import == WasiImport::ArgsSizesGet;
                linker.func_wrap(MODULE, name, move |mut c: C<'_, H>, count_at: i32, size_at: i32| -> i32 {
                    with_mem(&mut c, |mem, ctx| {
                        let (n, bytes) = sizes(if args { &ctx.wasi.args } else { &ctx.wasi.env });
                        put_u32(mem, unsigned(count_at), n)?;
                        put_u32(mem, unsigned(size_at), bytes)
                    })
                })?;
            }
            WasiImport::ArgsGet | WasiImport::EnvironGet => {
                let args = import == WasiImport::ArgsGet;
                linker.func_wrap(MODULE, name, move |mut c: C<'_, H>, list: i32, buf: i32| -> i32 {
                    with_mem(&mut c, |mem, ctx| {
                        let strings = if args { &ctx.wasi.args } else { &ctx.wasi.env };
                        lay_out(mem, strings, unsigned(list), unsigned(buf))
                    })
                })?;
            }
            WasiImport::ProcExit => {
                linker.func_wrap(MODULE, name, |mut c: C<'_, H>, code: i32| -> Result<(), Error> {
                    c.data_mut().host_calls += 1;
                    Err(Error::i32_exit(code))
                })?;
            }
            WasiImport::SchedYield => {
                linker.func_wrap(MODULE, name, |mut c: C<'_, H>| -> i32 {
                    c.data_mut().host_calls += 1;
                    match c.data_mut().host.yield_now() {
                        Ok(()) => errno::SUCCESS,
                        Err(e) => errno_of(e),
                    }
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_a_function_of_the_partition() {
        let (a, b) = (WasiEnv::for_partition("alpha"), WasiEnv::for_partition("beta"));
        assert_ne!(a.seed, b.seed);
        assert_eq!(a, WasiEnv::for_partition("alpha"));
        let mut x = [0u8; 13];
        let mut y = [0u8; 13];
        Random::new(a.seed).fill(&mut x);
        Random::new(a.seed).fill(&mut y);
        assert_eq!(x, y);
        Random::new(b.seed).fill(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn argv_is_laid_out_with_its_nuls_and_out_of_memory_is_a_fault() {
        let mut mem = [0xffu8; 64];
        let strings = [b"tenant".to_vec(), b"x".to_vec()];
        assert_eq!(sizes(&strings), (2, 9));
        lay_out(&mut mem, &strings, 0, 16).unwrap();
        assert_eq!(get_u32(&mem, 0), Ok(16));
        assert_eq!(get_u32(&mem, 4), Ok(23));
        assert_eq!(&mem[16..25], b"tenant\0x\0");
        assert_eq!(lay_out(&mut mem, &strings, 0, 60), Err(errno::FAULT));
        assert_eq!(gather(&mem, 60, 1), Err(errno::FAULT));
    }
}
