//! Exact global minimum cut of a small weighted graph, under a work budget.
//!
//! **Algorithm.** Stoer–Wagner: repeated *maximum-adjacency* (MA) orderings;
//! the last two nodes `s`, `t` of an ordering satisfy
//! `λ(s, t) = w(t, V − t)`, so after recording the singleton cut `{t}` they
//! can be contracted without losing any smaller cut. With
//! [`Strategy::Contracting`] (the default) each ordering does more, after
//! Nagamochi, Ono and Ibaraki, still exactly:
//!
//! * every prefix `{v1..vi}` of the ordering is a cut whose value is kept
//!   up to date in O(1) per step; the smallest seen is the bound `λ̂`;
//! * when `u` joins the ordering and raises the key of a neighbour `v` to
//!   `q = w(v, {v1..u})`, then `λ(u, v) ≥ q`; if `q ≥ λ̂`, no cut lighter
//!   than the one already found separates `u` and `v`, so they are contracted
//!   too. One ordering then usually contracts many pairs instead of one.
//!
//! The answer is exact: the value of a minimum cut and one side achieving it.
//! [`Strategy::PairOnly`] is plain Stoer–Wagner (one contraction per
//! ordering), kept as the reference the benches compare against.
//!
//! **Cost and buffers.** Nodes are at most [`MAX_NODES`] (64), so node sets
//! are `u64` bit masks and every buffer has a fixed size, allocated once in
//! [`MinCutSolver::new`] and [`CutGraph::new`]; [`MinCutSolver::solve`]
//! allocates nothing. The adjacency matrix is dense (`n × n`, stride `n`),
//! and active nodes are kept contiguous, so the inner loop is a linear pass
//! over one row.
//!
//! **Budget.** Work is counted in *units*, one per inner-loop element (one
//! key update, one matrix cell copied). Before each ordering the solver
//! checks that the worst case of that ordering and its contraction
//! (`2·k²` units for `k` active nodes) fits in the [`WorkBudget`]; if it does
//! not, it stops and answers [`CutOutcome::OverBudget`] — no decision, never
//! a wrong answer. Counting work instead of reading a clock keeps the outcome
//! identical on every target and under replay. On the development host (x86-64,
//! 2.6 GHz) one unit costs about 0.8 ns: 64 dense nodes take ≈ 23 000 units
//! (18 µs) with [`Strategy::Contracting`], ≈ 96 000 (74 µs) with
//! [`Strategy::PairOnly`]; [`WorkBudget::worst_case`]`(64)` is ≈ 180 000.

use alloc::boxed::Box;
use alloc::vec;

/// Most nodes a graph may have (node sets are `u64` masks).
pub const MAX_NODES: usize = 64;

/// Key of a node already in the ordering: so negative that adding every
/// weight of the graph ([`CutGraph::MAX_TOTAL`] at most) leaves it below 0,
/// under every key of a node not yet ordered.
const ORDERED: i64 = -(1 << 62);

/// A set of nodes `0..n` of a [`CutGraph`], as a bit mask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeSet(u64);

impl NodeSet {
    /// No node.
    pub const EMPTY: NodeSet = NodeSet(0);

    /// The set whose bit `i` is set for each node `i`.
    pub const fn from_bits(bits: u64) -> NodeSet {
        NodeSet(bits)
    }

    /// The bit mask.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether `node` is in the set.
    pub const fn contains(self, node: usize) -> bool {
        node < MAX_NODES && self.0 & (1 << node) != 0
    }

    /// How many nodes.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The nodes of `0..nodes` not in the set.
    pub const fn complement(self, nodes: usize) -> NodeSet {
        let all = if nodes >= MAX_NODES {
            u64::MAX
        } else {
            (1u64 << nodes) - 1
        };
        NodeSet(!self.0 & all)
    }

    /// The nodes in both sets.
    pub const fn intersect(self, other: NodeSet) -> NodeSet {
        NodeSet(self.0 & other.0)
    }

    /// The nodes, in increasing order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_NODES).filter(move |&i| self.contains(i))
    }
}

/// How much work a solve may do, in units (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WorkBudget(u64);

impl WorkBudget {
    /// No limit.
    pub const UNLIMITED: WorkBudget = WorkBudget(u64::MAX);

    /// A budget of `units`.
    pub const fn new(units: u64) -> WorkBudget {
        WorkBudget(units)
    }

    /// The units.
    pub const fn units(self) -> u64 {
        self.0
    }

    /// Enough for any graph of `nodes` nodes, with either strategy:
    /// `n²` to load plus `2·k²` for each ordering over `k = n..2` nodes
    /// (≈ 180 000 units for 64 nodes).
    pub const fn worst_case(nodes: usize) -> WorkBudget {
        let n = nodes as u64;
        let mut units = n * n;
        let mut k = 2;
        while k <= n {
            units += 2 * k * k;
            k += 1;
        }
        WorkBudget(units)
    }
}

/// Why a graph could not be built or cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutError {
    /// More than [`MAX_NODES`] nodes.
    TooManyNodes { nodes: usize },
    /// A cut needs two nodes at least.
    TooFewNodes { nodes: usize },
    /// An edge names a node outside `0..nodes`.
    NodeOutOfRange { node: usize, nodes: usize },
    /// An edge from a node to itself.
    SelfLoop { node: usize },
    /// The weights would add up to more than [`CutGraph::MAX_TOTAL`].
    TotalTooLarge,
}

/// A dense undirected weighted graph of up to [`MAX_NODES`] nodes: the
/// solver's input. Allocated once at full size and [`reset`](Self::reset)
/// for each use.
#[derive(Clone)]
pub struct CutGraph {
    nodes: usize,
    /// Row-major `nodes × nodes`, symmetric, zero diagonal.
    matrix: Box<[i64]>,
    total: u64,
}

impl CutGraph {
    /// The most all edge weights together may add up to (2^62 − 1), so
    /// that no sum the solver forms can overflow.
    pub const MAX_TOTAL: u64 = (1 << 62) - 1;

    /// An empty graph of no nodes, with room for [`MAX_NODES`].
    pub fn new() -> CutGraph {
        CutGraph {
            nodes: 0,
            matrix: vec![0; MAX_NODES * MAX_NODES].into_boxed_slice(),
            total: 0,
        }
    }

    /// Make the graph `nodes` nodes with no edges.
    pub fn reset(&mut self, nodes: usize) -> Result<(), CutError> {
        if nodes > MAX_NODES {
            return Err(CutError::TooManyNodes { nodes });
        }
        self.nodes = nodes;
        self.total = 0;
        self.matrix[..nodes * nodes].fill(0);
        Ok(())
    }

    /// Bytes allocated for the matrix (32 KiB).
    pub fn footprint_bytes(&self) -> usize {
        self.matrix.len() * core::mem::size_of::<i64>()
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Sum of all edge weights.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn check(&self, node: usize) -> Result<(), CutError> {
        if node < self.nodes {
            Ok(())
        } else {
            Err(CutError::NodeOutOfRange {
                node,
                nodes: self.nodes,
            })
        }
    }

    /// Add `weight` to the edge between `i` and `j`.
    pub fn add_edge(&mut self, i: usize, j: usize, weight: u64) -> Result<(), CutError> {
        self.check(i)?;
        self.check(j)?;
        if i == j {
            return Err(CutError::SelfLoop { node: i });
        }
        let total = self
            .total
            .checked_add(weight)
            .filter(|&t| t <= Self::MAX_TOTAL);
        self.total = total.ok_or(CutError::TotalTooLarge)?;
        // Every weight is at most the total, below 2^62.
        let w = i64::try_from(weight).map_err(|_| CutError::TotalTooLarge)?;
        self.matrix[i * self.nodes + j] += w;
        self.matrix[j * self.nodes + i] += w;
        Ok(())
    }

    /// The weight of the edge between `i` and `j` (0 if none or out of range).
    pub fn weight(&self, i: usize, j: usize) -> u64 {
        if i < self.nodes && j < self.nodes {
            self.matrix[i * self.nodes + j].unsigned_abs()
        } else {
            0
        }
    }

    /// Total weight of the edges with exactly one end in `side`.
    pub fn cut_value(&self, side: NodeSet) -> u64 {
        let mut value = 0u64;
        for i in side.iter().filter(|&i| i < self.nodes) {
            for j in side.complement(self.nodes).iter() {
                value += self.weight(i, j);
            }
        }
        value
    }
}

impl core::fmt::Debug for CutGraph {
    /// Nodes and edges only (not the whole preallocated matrix).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CutGraph {{ nodes: {}, edges: [", self.nodes)?;
        for i in 0..self.nodes {
            for j in i + 1..self.nodes {
                let w = self.weight(i, j);
                if w != 0 {
                    write!(f, "({i}, {j}, {w}), ")?;
                }
            }
        }
        write!(f, "] }}")
    }
}

impl Default for CutGraph {
    fn default() -> Self {
        Self::new()
    }
}

/// A minimum cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MinCut {
    /// Total weight of the edges crossing the cut.
    pub value: u64,
    /// One side (non-empty, not every node); the other is its complement.
    pub side: NodeSet,
    /// Number of nodes of the graph cut.
    pub nodes: usize,
    /// Work units spent.
    pub work: u64,
}

impl MinCut {
    /// The other side.
    pub fn other_side(&self) -> NodeSet {
        self.side.complement(self.nodes)
    }
}

/// What a solve produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutOutcome {
    /// The exact minimum cut.
    Cut(MinCut),
    /// The budget would have been exceeded: no answer.
    OverBudget {
        /// Units spent before stopping.
        work: u64,
    },
}

/// Which contractions an ordering may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strategy {
    /// Plain Stoer–Wagner: contract the last two nodes of each ordering.
    PairOnly,
    /// Also use prefix cuts as bounds and contract every pair whose
    /// connectivity the ordering proves at least the best cut so far
    /// (Nagamochi–Ono–Ibaraki). Exact, and much faster on dense graphs.
    #[default]
    Contracting,
}

/// The solver and its preallocated work buffers.
#[derive(Clone, Debug)]
pub struct MinCutSolver {
    strategy: Strategy,
    matrix: Box<[i64]>,
    spare: Box<[i64]>,
    keys: [i64; MAX_NODES],
    degree: [i64; MAX_NODES],
    members: [u64; MAX_NODES],
    parent: [u8; MAX_NODES],
}

impl Default for MinCutSolver {
    fn default() -> Self {
        Self::new()
    }
}

/// A solve in progress: the best cut so far and the work spent.
struct Progress {
    best: i64,
    side: u64,
    work: u64,
}

impl Progress {
    fn offer(&mut self, value: i64, side: u64) {
        if value < self.best {
            self.best = value;
            self.side = side;
        }
    }
}

impl MinCutSolver {
    /// A solver with [`Strategy::Contracting`].
    pub fn new() -> MinCutSolver {
        Self::with_strategy(Strategy::default())
    }

    /// A solver with the given strategy.
    pub fn with_strategy(strategy: Strategy) -> MinCutSolver {
        MinCutSolver {
            strategy,
            matrix: vec![0; MAX_NODES * MAX_NODES].into_boxed_slice(),
            spare: vec![0; MAX_NODES * MAX_NODES].into_boxed_slice(),
            keys: [0; MAX_NODES],
            degree: [0; MAX_NODES],
            members: [0; MAX_NODES],
            parent: [0; MAX_NODES],
        }
    }

    /// Bytes the solver occupies, its two matrices included (≈ 66 KiB).
    pub fn footprint_bytes(&self) -> usize {
        core::mem::size_of::<Self>()
            + (self.matrix.len() + self.spare.len()) * core::mem::size_of::<i64>()
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The exact minimum cut of `graph`, or [`CutOutcome::OverBudget`].
    pub fn solve(&mut self, graph: &CutGraph, budget: WorkBudget) -> Result<CutOutcome, CutError> {
        let n = graph.nodes;
        if n < 2 {
            return Err(CutError::TooFewNodes { nodes: n });
        }
        let budget = budget.units();
        let mut p = Progress {
            best: i64::MAX,
            side: 0,
            work: (n * n) as u64,
        };
        if p.work > budget {
            return Ok(CutOutcome::OverBudget { work: 0 });
        }
        self.matrix[..n * n].copy_from_slice(&graph.matrix[..n * n]);
        for i in 0..n {
            self.members[i] = 1 << i;
            self.degree[i] = self.matrix[i * n..(i + 1) * n].iter().sum();
            p.offer(self.degree[i], self.members[i]);
        }
        let (mut k, mut stride) = (n, n);
        while k > 1 && p.best > 0 {
            let need = 2 * (k * k) as u64;
            if p.work.saturating_add(need) > budget {
                return Ok(CutOutcome::OverBudget { work: p.work });
            }
            let contraction = self.order(k, stride, &mut p);
            if p.best == 0 {
                break;
            }
            (k, stride) = match contraction {
                Contraction::Pair(a, b) => {
                    self.merge_pair(k, stride, a.min(b), a.max(b), &mut p);
                    (k - 1, stride)
                }
                Contraction::Many => {
                    let k2 = self.rebuild(k, stride, &mut p);
                    (k2, k2)
                }
            };
        }
        Ok(CutOutcome::Cut(MinCut {
            value: p.best.unsigned_abs(),
            side: NodeSet(p.side),
            nodes: n,
            work: p.work,
        }))
    }

    /// One maximum-adjacency ordering of the `k` active nodes; records the
    /// cuts it reveals and returns what to contract.
    fn order(&mut self, k: usize, stride: usize, p: &mut Progress) -> Contraction {
        let contracting = self.strategy == Strategy::Contracting;
        let keys = &mut self.keys[..k];
        keys.fill(0);
        let parent = &mut self.parent[..k];
        for (i, slot) in parent.iter_mut().enumerate() {
            // k <= MAX_NODES = 64.
            *slot = i as u8;
        }
        let mut unions = Unions::default();
        keys[0] = ORDERED;
        let (mut prev, mut last) = (0usize, 0usize);
        let mut prefix_cut = self.degree[0];
        let mut prefix_side = self.members[0];
        for step in 1..k {
            // Add the newest node's edges to every key; pick the largest.
            let row = &self.matrix[last * stride..last * stride + k];
            let (mut best_node, mut best_key) = (0usize, i64::MIN);
            for (j, (key, &w)) in keys.iter_mut().zip(row).enumerate() {
                *key += w;
                if *key > best_key {
                    best_key = *key;
                    best_node = j;
                }
            }
            p.work += k as u64;
            // Every node not yet ordered has key >= 0 > any ordered key, so
            // best_node is not yet ordered. best_key = w(best_node, prefix).
            if contracting && best_key >= p.best {
                // Nagamochi–Ono–Ibaraki: λ(last, j) >= key[j] >= λ̂.
                for (j, (&key, &w)) in keys.iter().zip(row).enumerate() {
                    if w > 0 && key >= p.best {
                        unions.join(parent, last, j);
                    }
                }
            }
            prev = last;
            last = best_node;
            keys[last] = ORDERED;
            if contracting && step + 1 < k {
                prefix_cut += self.degree[last] - 2 * best_key;
                prefix_side |= self.members[last];
                p.offer(prefix_cut, prefix_side);
                if p.best == 0 {
                    return Contraction::Many;
                }
            }
        }
        // Stoer–Wagner: λ(prev, last) = w(last, rest) = degree[last], which
        // was offered when `last` was formed.
        unions.join(parent, prev, last);
        match unions.count {
            1 => Contraction::Pair(unions.first.0, unions.first.1),
            _ => Contraction::Many,
        }
    }

    /// Contract `t` into `s` (`s < t < k`) in place; node `k - 1` takes
    /// `t`'s slot.
    fn merge_pair(&mut self, k: usize, stride: usize, s: usize, t: usize, p: &mut Progress) {
        let m = &mut self.matrix;
        let w_st = m[s * stride + t];
        for j in 0..k {
            let v = m[s * stride + j] + m[t * stride + j];
            m[s * stride + j] = v;
            m[j * stride + s] = v;
        }
        m[s * stride + s] = 0;
        self.degree[s] = self.degree[s] + self.degree[t] - 2 * w_st;
        self.members[s] |= self.members[t];
        // With two nodes left the merged one is everything: not a cut.
        if k > 2 {
            p.offer(self.degree[s], self.members[s]);
        }
        let end = k - 1;
        if t != end {
            for j in 0..k {
                let v = m[end * stride + j];
                m[t * stride + j] = v;
                m[j * stride + t] = v;
            }
            m[t * stride + t] = 0;
            self.degree[t] = self.degree[end];
            self.members[t] = self.members[end];
        }
        p.work += 2 * k as u64;
    }

    /// Contract every union-find class into one node; returns the new
    /// number of nodes (the new matrix has that stride).
    fn rebuild(&mut self, k: usize, stride: usize, p: &mut Progress) -> usize {
        let mut class = [0u8; MAX_NODES];
        let mut new_of_root = [u8::MAX; MAX_NODES];
        let mut k2 = 0u8;
        for (i, c) in class[..k].iter_mut().enumerate() {
            let root = find(&mut self.parent, i);
            if new_of_root[root] == u8::MAX {
                new_of_root[root] = k2;
                k2 += 1;
            }
            *c = new_of_root[root];
        }
        let k2 = usize::from(k2);
        let spare = &mut self.spare[..k2 * k2];
        spare.fill(0);
        for i in 0..k {
            let ci = usize::from(class[i]) * k2;
            let row = &self.matrix[i * stride..i * stride + k];
            for (&w, &cj) in row.iter().zip(&class[..k]) {
                spare[ci + usize::from(cj)] += w;
            }
        }
        let mut members = [0u64; MAX_NODES];
        for i in 0..k {
            members[usize::from(class[i])] |= self.members[i];
        }
        for c in 0..k2 {
            spare[c * k2 + c] = 0;
            self.members[c] = members[c];
            self.degree[c] = spare[c * k2..(c + 1) * k2].iter().sum();
            // A single class is everything: not a cut.
            if k2 > 1 {
                p.offer(self.degree[c], self.members[c]);
            }
        }
        core::mem::swap(&mut self.matrix, &mut self.spare);
        p.work += (k * k) as u64;
        k2
    }
}

/// What an ordering decided to contract.
enum Contraction {
    /// Exactly one pair: merged in place.
    Pair(usize, usize),
    /// Several pairs (or the search is over): the matrix is rebuilt.
    Many,
}

/// Union-find bookkeeping of one ordering.
#[derive(Default)]
struct Unions {
    count: usize,
    first: (usize, usize),
}

impl Unions {
    fn join(&mut self, parent: &mut [u8], a: usize, b: usize) {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            // Indices are below MAX_NODES = 64.
            parent[ra.max(rb)] = ra.min(rb) as u8;
            if self.count == 0 {
                self.first = (a, b);
            }
            self.count += 1;
        }
    }
}

/// Root of `x`'s class, halving paths on the way.
fn find(parent: &mut [u8], mut x: usize) -> usize {
    while usize::from(parent[x]) != x {
        let up = usize::from(parent[usize::from(parent[x])]);
        parent[x] = up as u8;
        x = up;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::Strategy;
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::Strategy as PropStrategy;

    /// Every cut of the graph, by enumeration: the reference answer.
    fn brute_force(g: &CutGraph) -> u64 {
        let n = g.nodes();
        // Node n-1 always on the complement side: each cut once.
        (1u64..(1 << (n - 1)))
            .map(|bits| g.cut_value(NodeSet::from_bits(bits)))
            .min()
            .unwrap()
    }

    fn graph_of(n: usize, edges: &[(usize, usize, u64)]) -> CutGraph {
        let mut g = CutGraph::new();
        g.reset(n).unwrap();
        for &(i, j, w) in edges {
            g.add_edge(i, j, w).unwrap();
        }
        g
    }

    fn solve(g: &CutGraph, strategy: Strategy) -> MinCut {
        match MinCutSolver::with_strategy(strategy)
            .solve(g, WorkBudget::UNLIMITED)
            .unwrap()
        {
            CutOutcome::Cut(c) => c,
            CutOutcome::OverBudget { .. } => panic!("unlimited budget exceeded"),
        }
    }

    fn check_cut(g: &CutGraph, cut: &MinCut) {
        assert!(
            !cut.side.is_empty() && !cut.other_side().is_empty(),
            "{cut:?}"
        );
        assert_eq!(
            cut.side.bits().checked_shr(g.nodes() as u32).unwrap_or(0),
            0,
            "side names nodes beyond the graph"
        );
        assert_eq!(
            g.cut_value(cut.side),
            cut.value,
            "the side does not achieve the value"
        );
    }

    /// The example graph of Stoer and Wagner's paper (nodes renumbered from
    /// 0); its minimum cut is 4, separating {2,3,6,7} from {0,1,4,5}.
    fn paper_graph() -> CutGraph {
        graph_of(
            8,
            &[
                (0, 1, 2),
                (0, 4, 3),
                (1, 2, 3),
                (1, 4, 2),
                (1, 5, 2),
                (2, 3, 4),
                (2, 6, 2),
                (3, 6, 2),
                (3, 7, 2),
                (4, 5, 3),
                (5, 6, 1),
                (6, 7, 3),
            ],
        )
    }

    #[test]
    fn the_papers_example_has_a_cut_of_four() {
        let g = paper_graph();
        for s in [Strategy::PairOnly, Strategy::Contracting] {
            let cut = solve(&g, s);
            assert_eq!(cut.value, 4);
            check_cut(&g, &cut);
            let side = if cut.side.contains(0) {
                cut.side
            } else {
                cut.other_side()
            };
            assert_eq!(side, NodeSet::from_bits(0b0011_0011));
        }
    }

    #[test]
    fn a_disconnected_graph_cuts_for_free_and_stops_early() {
        let g = graph_of(6, &[(0, 1, 5), (1, 2, 5), (3, 4, 5), (4, 5, 5)]);
        let cut = solve(&g, Strategy::Contracting);
        assert_eq!(cut.value, 0);
        check_cut(&g, &cut);
        // Found during the first ordering: load + one ordering.
        assert!(cut.work <= 36 + 36, "{}", cut.work);
        // An isolated node is a zero cut already at load.
        let g = graph_of(3, &[(0, 1, 9)]);
        let cut = solve(&g, Strategy::PairOnly);
        assert_eq!((cut.value, cut.side), (0, NodeSet::from_bits(0b100)));
    }

    #[test]
    fn two_nodes_and_bad_graphs() {
        let g = graph_of(2, &[(0, 1, 7)]);
        assert_eq!(solve(&g, Strategy::Contracting).value, 7);
        let mut one = CutGraph::new();
        one.reset(1).unwrap();
        assert_eq!(
            MinCutSolver::new().solve(&one, WorkBudget::UNLIMITED),
            Err(CutError::TooFewNodes { nodes: 1 })
        );
        let mut g = CutGraph::new();
        assert_eq!(g.reset(65), Err(CutError::TooManyNodes { nodes: 65 }));
        g.reset(3).unwrap();
        assert_eq!(g.add_edge(1, 1, 1), Err(CutError::SelfLoop { node: 1 }));
        assert_eq!(
            g.add_edge(0, 3, 1),
            Err(CutError::NodeOutOfRange { node: 3, nodes: 3 })
        );
        g.add_edge(0, 1, CutGraph::MAX_TOTAL).unwrap();
        assert_eq!(g.add_edge(1, 2, 1), Err(CutError::TotalTooLarge));
        assert_eq!(g.total(), CutGraph::MAX_TOTAL);
        // The heaviest graph accepted still cuts exactly.
        let cut = solve(&g, Strategy::Contracting);
        assert_eq!((cut.value, cut.side), (0, NodeSet::from_bits(0b100)));
        g.reset(3).unwrap();
        g.add_edge(0, 1, CutGraph::MAX_TOTAL - 2).unwrap();
        g.add_edge(1, 2, 1).unwrap();
        g.add_edge(0, 2, 1).unwrap();
        assert_eq!(solve(&g, Strategy::Contracting).value, 2);
        assert_eq!(solve(&g, Strategy::PairOnly).value, 2);
    }

    #[test]
    fn a_budget_too_small_gives_no_answer_and_a_sufficient_one_gives_the_answer() {
        let g = paper_graph();
        let full = solve(&g, Strategy::PairOnly);
        let mut solver = MinCutSolver::with_strategy(Strategy::PairOnly);
        let short = WorkBudget::new(full.work - 1);
        // The work of a run is fixed by its graph, and each ordering is
        // checked against its worst case before it starts: a budget even one
        // unit short of what the run needs never yields an answer.
        assert_eq!(
            solver.solve(&g, WorkBudget::new(63)).unwrap(),
            CutOutcome::OverBudget { work: 0 }
        );
        match solver.solve(&g, short).unwrap() {
            CutOutcome::OverBudget { work } => assert!(work <= short.units()),
            CutOutcome::Cut(c) => panic!("answered {c:?} beyond its budget"),
        }
        let enough = WorkBudget::worst_case(8);
        assert_eq!(solver.solve(&g, enough).unwrap(), CutOutcome::Cut(full));
        assert!(full.work <= enough.units());
    }

    #[test]
    fn worst_case_budget_is_the_documented_sum() {
        assert_eq!(WorkBudget::worst_case(2).units(), 4 + 8);
        assert_eq!(WorkBudget::worst_case(3).units(), 9 + 8 + 18);
        let b64 = WorkBudget::worst_case(64).units();
        assert!((170_000..190_000).contains(&b64), "{b64}");
    }

    #[test]
    fn node_sets() {
        let s = NodeSet::from_bits(0b1010);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().collect::<alloc::vec::Vec<_>>(), [1, 3]);
        assert_eq!(s.complement(5), NodeSet::from_bits(0b10101));
        assert_eq!(NodeSet::EMPTY.complement(64), NodeSet::from_bits(u64::MAX));
        assert!(!s.contains(64));
    }

    fn arb_graph(max_nodes: usize, max_weight: u64) -> impl PropStrategy<Value = CutGraph> {
        (2..=max_nodes)
            .prop_flat_map(move |n| {
                let pairs = n * (n - 1) / 2;
                // Sparse and dense graphs alike: about a third of the pairs
                // have no edge.
                (
                    Just(n),
                    proptest::collection::vec(
                        prop_oneof![Just(0u64), 1..=max_weight, 1..=max_weight],
                        pairs,
                    ),
                )
            })
            .prop_map(|(n, weights)| {
                let mut g = CutGraph::new();
                g.reset(n).unwrap();
                let mut w = weights.into_iter();
                for i in 0..n {
                    for j in i + 1..n {
                        let x = w.next().unwrap();
                        if x > 0 {
                            g.add_edge(i, j, x).unwrap();
                        }
                    }
                }
                g
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn both_strategies_match_brute_force(g in arb_graph(12, 20)) {
            let expected = brute_force(&g);
            for s in [Strategy::PairOnly, Strategy::Contracting] {
                let cut = solve(&g, s);
                prop_assert_eq!(cut.value, expected, "{:?}", s);
                check_cut(&g, &cut);
                prop_assert!(cut.work <= WorkBudget::worst_case(g.nodes()).units());
            }
        }

        /// Beyond brute force's reach: both strategies agree on graphs of
        /// up to 64 nodes made of clusters (so the minimum cut is not just
        /// the lightest node), and each side achieves its value.
        #[test]
        fn strategies_agree_on_large_clustered_graphs(
            n in 13usize..=64,
            cluster in 2usize..=8,
            seed in proptest::collection::vec(0u64..1000, 64 * 63 / 2),
        ) {
            let mut g = CutGraph::new();
            g.reset(n).unwrap();
            let mut w = seed.iter().cycle();
            for i in 0..n {
                for j in i + 1..n {
                    let x = *w.next().unwrap();
                    let weight = if i / cluster == j / cluster { 1000 + x } else { x / 100 };
                    if weight > 0 {
                        g.add_edge(i, j, weight).unwrap();
                    }
                }
            }
            let plain = solve(&g, Strategy::PairOnly);
            let fast = solve(&g, Strategy::Contracting);
            prop_assert_eq!(plain.value, fast.value);
            check_cut(&g, &plain);
            check_cut(&g, &fast);
            prop_assert!(fast.work <= WorkBudget::worst_case(n).units());
        }

        #[test]
        fn heavy_weights_match_brute_force(g in arb_graph(10, 1 << 40)) {
            let expected = brute_force(&g);
            let cut = solve(&g, Strategy::Contracting);
            prop_assert_eq!(cut.value, expected);
            check_cut(&g, &cut);
        }

        #[test]
        fn the_answer_does_not_depend_on_the_budget_when_it_comes(g in arb_graph(12, 9), units in 0u64..3000) {
            let full = solve(&g, Strategy::Contracting);
            match MinCutSolver::new().solve(&g, WorkBudget::new(units)).unwrap() {
                CutOutcome::Cut(c) => { prop_assert_eq!(c, full); prop_assert!(c.work <= units); }
                CutOutcome::OverBudget { work } => prop_assert!(work <= units),
            }
        }
    }
}
