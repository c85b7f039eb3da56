//! Kinds of kernel object a capability can name.

/// The kind of object behind a capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ObjectKind {
    Partition = 1,
    Region = 2,
    Channel = 3,
    StateStore = 4,
    WitnessLog = 5,
    Device = 6,
    /// A named external resource from a capability table (a tool, an MCP
    /// server): the kernel checks and witnesses its use on the agent's behalf.
    Resource = 7,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Partition,
        ObjectKind::Region,
        ObjectKind::Channel,
        ObjectKind::StateStore,
        ObjectKind::WitnessLog,
        ObjectKind::Device,
        ObjectKind::Resource,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            ObjectKind::Partition => "partition",
            ObjectKind::Region => "region",
            ObjectKind::Channel => "channel",
            ObjectKind::StateStore => "state-store",
            ObjectKind::WitnessLog => "witness-log",
            ObjectKind::Device => "device",
            ObjectKind::Resource => "resource",
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u8 == v)
    }
}
