//! Where witness frames from the console go.
//!
//! The loader demultiplexes the serial stream ([`crate::stream`]) and hands
//! every witness frame to a [`WitnessSink`]. Filing logs under
//! `RVM_HOME/witness/<partition>.log`, chain checking and verification belong
//! to `rvm-witness-host`; until its API is connected here, [`open`] returns
//! [`NotFiled`], which counts what arrived and says plainly that nothing was
//! written.

use crate::model::PartitionName;
use crate::store::Home;
use rvm_abi::frame::Frame;

/// Which partition each log id belongs to (log 0 is the hypervisor's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogNames(pub Vec<(u32, PartitionName)>);

impl LogNames {
    pub fn name(&self, log: u32) -> Option<&PartitionName> {
        self.0.iter().find(|(id, _)| *id == log).map(|(_, n)| n)
    }
}

/// What a sink did with a run's frames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SinkSummary {
    pub records: u64,
    pub checkpoints: u64,
    pub keys: u64,
    pub damaged: u64,
    /// Whether the frames were written under `RVM_HOME/witness/`.
    pub filed: bool,
    /// One line for the operator.
    pub note: String,
}

/// Receives a run's witness frames, in arrival order.
pub trait WitnessSink {
    /// A frame that decoded.
    fn frame(&mut self, frame: &Frame) -> Result<(), String>;
    /// A line that starts like a frame but does not decode (damaged in transit).
    fn damaged(&mut self, line: &str);
    /// The run is over.
    fn finish(&mut self) -> Result<SinkSummary, String>;
}

/// The sink used until `rvm-witness-host` is connected: counts, files nothing.
#[derive(Debug, Default)]
pub struct NotFiled {
    summary: SinkSummary,
}

impl WitnessSink for NotFiled {
    fn frame(&mut self, frame: &Frame) -> Result<(), String> {
        match frame {
            Frame::Record { .. } => self.summary.records += 1,
            Frame::Checkpoint { .. } => self.summary.checkpoints += 1,
            Frame::Key { .. } => self.summary.keys += 1,
        }
        Ok(())
    }

    fn damaged(&mut self, _line: &str) {
        self.summary.damaged += 1;
    }

    fn finish(&mut self) -> Result<SinkSummary, String> {
        let mut s = self.summary.clone();
        s.filed = false;
        s.note = format!(
            "witness filing is not connected yet: {} records, {} checkpoints received and NOT written to RVM_HOME/witness",
            s.records, s.checkpoints
        );
        Ok(s)
    }
}

/// The sink for a run. Connect `rvm-witness-host` here.
pub fn open(_home: &Home, _names: &LogNames) -> Box<dyn WitnessSink> {
    Box::new(NotFiled::default())
}
