//! What durable state remembers between changes: each store's set digest
//! as last witnessed (state only, no behaviour: [`super`] acts on it).

use alloc::vec::Vec;

/// The digest of each store's set as last witnessed (by position), so a
/// "change" that leaves a set as it was (an empty commit, a dormant
/// partition woken from the snapshot it slept in) costs nothing.
#[derive(Default)]
pub struct SetDigests {
    digests: Vec<Option<[u8; 32]>>,
}

impl SetDigests {
    /// Note store `s`'s digest; whether it differs from the one noted before.
    pub(crate) fn note(&mut self, s: usize, digest: [u8; 32]) -> bool {
        if self.digests.len() <= s {
            self.digests.resize(s + 1, None);
        }
        self.digests[s].replace(digest) != Some(digest)
    }
}

