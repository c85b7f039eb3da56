//! Hypercall function identifiers (Arm SMC Calling Convention, DEN0028).
//!
//! A partition issues `hvc #0` with `x0` = function ID, `x1`–`x6` = arguments.
//! On return `x0` holds the status (`0` ok, a negative [`HvError`](crate::HvError)
//! code otherwise) and `x1`–`x3` hold results.
//!
//! RVM's calls live in the *vendor-specific hypervisor service* range
//! (owning entity 6), as SMC64 fast calls, so PSCI (owning entity 4) and other
//! SMCCC services can share the same `hvc` instruction.

/// Bit 31: fast call.
pub const SMCCC_FAST_CALL: u32 = 1 << 31;
/// Bit 30: SMC64/HVC64 calling convention.
pub const SMCCC_64: u32 = 1 << 30;
/// Owning entity number of vendor-specific hypervisor services.
pub const SMCCC_OWNER_VENDOR_HYP: u32 = 6;
/// Owning entity number of standard secure services (PSCI lives here).
pub const SMCCC_OWNER_STANDARD: u32 = 4;
const OWNER_SHIFT: u32 = 24;
const OWNER_MASK: u32 = 0x3f;

/// Base of RVM's function identifiers: `0xC600_0000`.
pub const RVM_CALL_BASE: u32 =
    SMCCC_FAST_CALL | SMCCC_64 | (SMCCC_OWNER_VENDOR_HYP << OWNER_SHIFT);

/// The owning entity field of an SMCCC function ID.
pub const fn smccc_owner(function_id: u32) -> u32 {
    (function_id >> OWNER_SHIFT) & OWNER_MASK
}

macro_rules! hypercalls {
    ($( $(#[$doc:meta])* $name:ident = $num:expr, )*) => {
        /// One RVM hypercall. The discriminant is the function number (the low
        /// 16 bits of the SMCCC function ID) and also the witness operation code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Hypercall {
            $( $(#[$doc])* $name = $num, )*
        }

        /// `AgentSwitch` results (`x1`).
pub mod agent_switch {
    /// Run the agent's turn as usual.
    pub const STAY: u64 = 0;
    /// The agent leaves this partition: snapshot it now (`Snapshot`,
    /// its image alone) and drop its instance; it resumes from that
    /// snapshot in another partition. If the snapshot is refused, the
    /// agent stays and runs its turn. When it was the partition's last
    /// agent (a merge), the kernel retires the partition at that
    /// snapshot: the call does not return.
    pub const DEPART: u64 = 1;
}

impl Hypercall {
            /// Every hypercall, in number order.
            pub const ALL: &'static [Hypercall] = &[$(Hypercall::$name,)*];

            /// The call's stable name, as printed in witness listings.
            pub const fn name(self) -> &'static str {
                match self { $(Hypercall::$name => stringify!($name),)* }
            }

            /// The call for a function number, if there is one.
            pub const fn from_number(n: u16) -> Option<Self> {
                match n { $($num => Some(Hypercall::$name),)* _ => None }
            }
        }
    };
}

hypercalls! {
    /// Does nothing and is not witnessed: the cost floor of a round trip.
    Null = 0x00,
    /// `x1` = IPA, `x2` = length: write UTF-8 text to the partition's
    /// console: `x1` = bytes taken (fewer when the partition's console
    /// credit is spent; the rest is dropped and counted).
    ConsoleWrite = 0x01,
    /// `x1` = handle: `x1` = object kind, `x2` = rights, `x3` = proof tier mask.
    CapQuery = 0x02,
    /// `x1` = parent handle, `x2` = target partition id, `x3` = rights,
    /// `x4` = expiry (absolute, ns on the kernel clock of witness
    /// timestamps; 0 = parent's), `x5` = proof IPA, `x6` = nonce:
    /// `x1` = new handle (in the target's table).
    CapDerive = 0x03,
    /// `x1` = handle whose derived subtree is revoked, `x5` = proof IPA,
    /// `x6` = nonce: `x1` = capabilities removed.
    CapRevoke = 0x04,
    /// Reserved: the kernel answers `NotSupported` (witnessed like any
    /// refusal). Intended: `x1` = region handle, `x2` = offset, `x3` = IPA,
    /// `x4` = length.
    RegionRead = 0x05,
    /// Reserved: the kernel answers `NotSupported` (witnessed like any
    /// refusal). Intended: `x1` = region handle, `x2` = offset, `x3` = IPA,
    /// `x4` = length.
    RegionWrite = 0x06,
    /// Reserved: the kernel answers `NotSupported` (witnessed like any
    /// refusal). Intended: `x1` = region handle, `x2` = IPA to map at.
    RegionMap = 0x07,
    /// `x1` = channel handle, `x2` = IPA, `x3` = length.
    ChannelSend = 0x08,
    /// `x1` = channel handle, `x2` = IPA, `x3` = capacity: `x1` = length
    /// received; `WouldBlock` when the channel is empty.
    ChannelRecv = 0x09,
    /// `x1` = store handle, `x2` = key IPA, `x3` = key length,
    /// `x4` = value IPA, `x5` = value length: stage one item.
    StateStage = 0x0a,
    /// `x1` = store handle: validate what is staged.
    StateValidate = 0x0b,
    /// `x1` = store handle: commit every staged item atomically, or none.
    StateCommit = 0x0c,
    /// `x1` = store handle, `x2` = key IPA, `x3` = key length,
    /// `x4` = value IPA, `x5` = capacity: `x1` = value length.
    StateGet = 0x0d,
    /// `x1` = IPA, `x2` = length of the serialized snapshot; optionally
    /// `x3` = IPA, `x4` = length of a second part appended to it (the agent's
    /// linear memory, passed in place; `x4` = 0 for none): `x1` = snapshot
    /// id, `x2`, `x3` = the first 16 bytes of its state hash (LE words).
    Snapshot = 0x0e,
    /// Reserved: the kernel answers `NotSupported` (witnessed like any
    /// refusal). Intended: `x1` = module handle: start another agent
    /// instance.
    Spawn = 0x0f,
    /// `x1` = handle, `x2` = IPA of a 96-byte buffer, `x5` = proof IPA,
    /// `x6` = nonce: signed attestation (state digest, signature); `x1` =
    /// its timestamp, `x2` = object kind, `x3` = object id.
    Prove = 0x10,
    /// Reserved: the kernel answers `NotSupported` (witnessed like any
    /// refusal). Intended: `x1` = from sequence number, `x2` = IPA,
    /// `x3` = capacity (records).
    WitnessQuery = 0x11,
    /// Give up the rest of the time slice.
    Yield = 0x12,
    /// `x1` = exit code: the agent has finished (runtime-defined codes in
    /// [`bootinfo::exit`](crate::bootinfo::exit)).
    Exit = 0x13,
    /// Read the partition's virtual clock (ns since partition start): `x1`.
    ClockRead = 0x14,
    /// The agent is idle at a turn boundary (its last turn found its inbox
    /// empty and received nothing). `x1` = 0 asks whether the partition may
    /// go dormant now: `x1` = 1 when its memory tier is `Dormant` and no
    /// message is waiting for it, else 0 (not witnessed, changes nothing).
    /// `x1` = the id of the snapshot the runtime just took at this turn
    /// boundary: the partition goes dormant (its memory is reclaimed) and the
    /// call does not return; the next message sent to it restores it from
    /// that snapshot. If a message is already waiting it returns 0 at once
    /// (`x1` = 0). `InvalidArgument` when the id is not the partition's last
    /// snapshot, `NotSupported` when its tier is not `Dormant`.
    Idle = 0x15,
    /// `x1` = agent slot (its index in the partition's agent table): the
    /// calls that follow are this agent's, until the next `AgentSwitch`.
    /// Issued by the guest runtime of a partition with several agents at
    /// every turn boundary; witnessed (`args` digest names the slot). A slot
    /// the partition does not have is `InvalidArgument`. Result `x1`:
    /// [`agent_switch::STAY`], or [`agent_switch::DEPART`] when the kernel
    /// moves this agent to another partition (a coherence-domain split or
    /// merge): the runtime then snapshots it with `Snapshot` and drops
    /// it. Result `x2`: how many slots the agent table lists now; more than
    /// the runtime knows means agents arrived (a merge): the runtime admits
    /// them from the table before the next turn (see
    /// [`crate::bootinfo::AgentTable`]).
    AgentSwitch = 0x16,
    /// `ChannelRecv` that may wait: `x1` = channel handle, `x2` = IPA,
    /// `x3` = capacity, `x4` = how long it may wait, in ns (`u64::MAX`: no
    /// deadline; 0: answered at once, as `ChannelRecv`). On an empty channel
    /// the caller's vCPU is parked at EL2 — it does not run and nothing is
    /// witnessed — until a message for it arrives or the deadline passes;
    /// then the call is answered as a `ChannelRecv` made at that moment,
    /// with one witness record (op `ChannelWait`, timestamp the answer's):
    /// `x1` = length received, `x2` = ns it waited; `WouldBlock` when the
    /// deadline passed with the channel still empty. The capability is
    /// checked when the call is made and again (P1) when it is answered. A
    /// partition that faults, is fenced, evicted or goes dormant while it
    /// waits forgets the call with its vCPU.
    ChannelWait = 0x17,
    /// Wait for the first of several channels: `x1` = IPA of a list of `x2`
    /// channel handles (u64 LE; 0 to 16), `x3` = how long it may wait (ns;
    /// `u64::MAX`: no deadline; 0: just look). With no handle it is a sleep:
    /// it needs a deadline, and the deadline answers it. Each handle needs READ (no
    /// proof). `x1` = the position in the list of the first channel with a
    /// message for the caller (the message stays queued: receive it with
    /// `ChannelRecv`), `x2` = ns it waited. When none has one the caller is
    /// parked as by `ChannelWait`, and answered with one record when a
    /// message arrives on any of them or at the deadline (`WouldBlock`).
    /// The list is read once, when the call is made.
    WaitAny = 0x18,
    /// Call a tool ([`crate::tool`]): `x1` = IPA of its name, `x2` = the
    /// name's length (1 to [`crate::tool::MAX_NAME`]), `x3` = IPA of the
    /// request, `x4` = its length (at most [`crate::tool::MAX_REQUEST`]),
    /// `x5` = IPA of the response buffer, `x6` = its capacity (at most
    /// [`crate::tool::MAX_RESPONSE`] bytes are used). The kernel finds the
    /// first `Resource` capability of the caller whose claim allows the
    /// name and request, checks it needs EXECUTE at its tier, witnesses the
    /// call (`args` over the registers, the name and the request; `cap` =
    /// the token), sends the request to the host and parks the caller (it
    /// does not run; others do) until the host answers or the deadline
    /// passes. The answer is a second record of op `ToolCall` with flag
    /// [`crate::witness::flags::ANSWER`] (`args` over the registers and the
    /// response): `x1` = response length written at `x5`. No claim allows
    /// it: `NoRights`; the host does not serve tools: `NotSupported`; the
    /// deadline passed: `TimedOut`; the host could not run it:
    /// `ToolFailed`. A P3 token is refused (`BadProof`): the approval path
    /// for tool calls is not built.
    ToolCall = 0x19,
}

impl Hypercall {
    /// The SMCCC function ID the guest puts in `x0`.
    pub const fn function_id(self) -> u32 {
        RVM_CALL_BASE | self as u32
    }

    /// Decode a function ID from `x0`; `None` for anything outside RVM's range
    /// or an unknown number.
    pub fn from_function_id(x0: u64) -> Option<Self> {
        let id = u32::try_from(x0).ok()?;
        if id & 0xffff_0000 != RVM_CALL_BASE {
            return None;
        }
        Self::from_number(u16::try_from(id & 0xffff).ok()?)
    }
}

/// PSCI function IDs (DEN0022) that RVM emulates for partitions and calls itself.
pub mod psci {
    pub const VERSION: u32 = 0x8400_0000;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON_64: u32 = 0xC400_0003;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const FEATURES: u32 = 0x8400_000A;
    /// PSCI's own status codes.
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const DENIED: i64 = -3;
    pub const ALREADY_ON: i64 = -4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_ids_round_trip() {
        for &call in Hypercall::ALL {
            let id = call.function_id();
            assert_eq!(id >> 24, 0xC6, "{} outside the vendor hypervisor range", call.name());
            assert_eq!(Hypercall::from_function_id(u64::from(id)), Some(call));
        }
    }

    #[test]
    fn foreign_ids_are_rejected() {
        assert_eq!(Hypercall::from_function_id(u64::from(psci::SYSTEM_OFF)), None);
        assert_eq!(Hypercall::from_function_id(0x1_C600_0001), None);
        assert_eq!(Hypercall::from_function_id(u64::from(RVM_CALL_BASE | 0xfff)), None);
        assert_eq!(smccc_owner(psci::CPU_ON_64), SMCCC_OWNER_STANDARD);
    }
}
