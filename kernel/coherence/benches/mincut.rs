//! Criterion benches of the coherence evaluator.
//!
//! Targets (issue 7): exact minimum cut of a 16-node weighted graph ≤ 2 µs,
//! of a 64-node graph ≤ 50 µs. Each figure includes copying the input into
//! the solver's buffers. Graphs:
//!
//! * `dense` — complete graph, every weight uniform in 1..=1000 units: the
//!   hardest case for the contraction rules (no weak spot to find early);
//! * `clustered` — groups of four agents chatting heavily inside, lightly
//!   across: the shape the kernel meets when a domain should split.
//!
//! Also measured: accounting one message (`graph/record`) and one whole
//! evaluation of 128 agents in 32 partitions (`evaluator/evaluate`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use rvm_coherence::*;

/// A small deterministic generator (64-bit LCG, high bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn dense(n: usize, seed: u64) -> CutGraph {
    let mut rng = Lcg(seed);
    let mut g = CutGraph::new();
    g.reset(n).unwrap();
    for i in 0..n {
        for j in i + 1..n {
            g.add_edge(i, j, Weight::from_units(1 + rng.below(1000) as u32).raw())
                .unwrap();
        }
    }
    g
}

fn clustered(n: usize, seed: u64) -> CutGraph {
    let mut rng = Lcg(seed);
    let mut g = CutGraph::new();
    g.reset(n).unwrap();
    for i in 0..n {
        for j in i + 1..n {
            let units = if i / 4 == j / 4 {
                500 + rng.below(500)
            } else {
                rng.below(20)
            };
            if units > 0 {
                g.add_edge(i, j, Weight::from_units(units as u32).raw())
                    .unwrap();
            }
        }
    }
    g
}

fn mincut(c: &mut Criterion) {
    let mut group = c.benchmark_group("mincut");
    for n in [16usize, 64] {
        for (shape, g) in [("dense", dense(n, 7)), ("clustered", clustered(n, 7))] {
            for (name, strategy) in [
                ("contracting", Strategy::Contracting),
                ("stoer-wagner", Strategy::PairOnly),
            ] {
                let mut solver = MinCutSolver::with_strategy(strategy);
                let expected = solver.solve(&g, WorkBudget::UNLIMITED).unwrap();
                let CutOutcome::Cut(cut) = expected else {
                    panic!("over budget")
                };
                println!(
                    "{shape} {n} {name}: cut {} (side {} nodes), {} work units",
                    cut.value,
                    cut.side.len(),
                    cut.work
                );
                group.bench_with_input(
                    BenchmarkId::new(format!("{shape}/{name}"), n),
                    &g,
                    |b, g| {
                        b.iter(|| {
                            let out = solver.solve(black_box(g), WorkBudget::UNLIMITED).unwrap();
                            debug_assert_eq!(out, expected);
                            out
                        })
                    },
                );
            }
        }
    }
    group.finish();
}

fn evaluator(c: &mut Criterion) {
    const PARTITIONS: u32 = 32;
    const PER: u32 = 4;
    let mut group = c.benchmark_group("evaluator");

    let build = || {
        let graph = CommGraph::new(
            GraphLimits::DEFAULT,
            TrafficPolicy::DEFAULT,
            DecayPolicy::DEFAULT,
        );
        let mut e = Coherence::new(graph, CoherencePolicy::DEFAULT).unwrap();
        for p in 0..PARTITIONS {
            for k in 0..PER {
                e.graph_mut()
                    .add_agent(AgentId(p * PER + k), DomainId(p + 1))
                    .unwrap();
            }
        }
        let mut rng = Lcg(3);
        for _ in 0..4000 {
            let p = rng.below(u64::from(PARTITIONS)) as u32;
            let (x, y) = (
                rng.below(u64::from(PER)) as u32,
                rng.below(u64::from(PER)) as u32,
            );
            // Mostly inside a partition, sometimes to a neighbour.
            let q = if rng.below(10) == 0 {
                (p + 1) % PARTITIONS
            } else {
                p
            };
            let (a, b) = (AgentId(p * PER + x), AgentId(q * PER + y));
            if a != b {
                e.record(a, b, 256, 0).unwrap();
            }
        }
        e
    };

    let mut e = build();
    let (a, b) = (AgentId(0), AgentId(1));
    e.record(a, b, 0, 0).unwrap();
    group.bench_function("graph/record", |bench| {
        bench.iter(|| e.record(black_box(a), black_box(b), 256, 1))
    });

    let e = build();
    println!(
        "evaluator: {} agents, {} edges",
        e.graph().agents().count(),
        e.graph().edges().len()
    );
    group.bench_function("evaluator/evaluate-128-agents", |bench| {
        bench.iter_batched_ref(
            || e.clone(),
            |e| e.evaluate(black_box(1)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, mincut, evaluator);
criterion_main!(benches);
