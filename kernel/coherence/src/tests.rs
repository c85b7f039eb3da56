//! Whole-evaluator tests: traffic in, decisions out, over simulated time.

use alloc::vec::Vec;

use proptest::prelude::*;

use crate::decay::{DecayPolicy, Retention};
use crate::decision::{Decision, DecisionId};
use crate::evaluator::{ApplyError, Coherence, CutResult, Evaluation};
use crate::graph::{CommGraph, GraphLimits};
use crate::ids::{AgentId, DomainId};
use crate::mincut::WorkBudget;
use crate::policy::{CoherencePolicy, MergePolicy, Permille, SplitPolicy};
use crate::weight::{TrafficPolicy, Weight};

const MS: u64 = 1_000_000;
const EPOCH: u64 = 100 * MS;

/// An evaluator and a clock, with agents placed in domains.
struct Sim {
    evaluator: Coherence,
    now: u64,
}

impl Sim {
    fn new(decay: DecayPolicy, policy: CoherencePolicy, agents: &[(u32, u32)]) -> Self {
        let graph = CommGraph::new(GraphLimits::DEFAULT, TrafficPolicy::DEFAULT, decay);
        let mut evaluator = Coherence::new(graph, policy).unwrap();
        for &(a, d) in agents {
            evaluator
                .graph_mut()
                .add_agent(AgentId(a), DomainId(d))
                .unwrap();
        }
        Sim { evaluator, now: 0 }
    }

    fn chat(&mut self, x: u32, y: u32, messages: u32, bytes: u32) {
        for i in 0..messages {
            let (from, to) = if i % 2 == 0 { (x, y) } else { (y, x) };
            self.evaluator
                .record(AgentId(from), AgentId(to), bytes, self.now)
                .unwrap();
        }
    }

    /// Evaluate at the end of the current epoch, then move to the next.
    fn end_epoch(&mut self) -> Evaluation {
        let eval = self.evaluator.evaluate(self.now + EPOCH - 1);
        self.now += EPOCH;
        eval
    }

    fn domain(&self, agent: u32) -> DomainId {
        self.evaluator.graph().domain_of(AgentId(agent)).unwrap()
    }

    fn agents(&self, d: u32) -> Vec<u32> {
        self.evaluator
            .graph()
            .agents_in(DomainId(d))
            .map(|a| a.0)
            .collect()
    }
}

fn no_hold_policy() -> CoherencePolicy {
    CoherencePolicy {
        split: Some(SplitPolicy {
            hold_ns: 0,
            min_internal: Weight::from_units(1),
            ..SplitPolicy::DEFAULT
        }),
        merge: Some(MergePolicy {
            hold_ns: 0,
            min_cross: Weight::from_units(1),
            ..MergePolicy::DEFAULT
        }),
        cooldown_ns: 0,
        ..CoherencePolicy::DEFAULT
    }
}

/// Forget everything each epoch: every evaluation sees only its epoch.
fn memoryless() -> DecayPolicy {
    DecayPolicy::new(EPOCH, Retention::new(0).unwrap()).unwrap()
}

/// The split-then-merge scenario of docs/DESIGN.md section 8, with the
/// default policy and decay: three agents share partition 1; agents 1 and 2
/// chat heavily, agent 3 barely speaks → agent 3 is split out. Later agent 3 and agent 4 (alone in
/// partition 3) chat heavily → their partitions merge. Then nothing flaps.
#[test]
fn quiet_agent_splits_out_then_chatty_partitions_merge_and_nothing_flaps() {
    let policy = CoherencePolicy::DEFAULT;
    let mut sim = Sim::new(
        DecayPolicy::DEFAULT,
        policy,
        &[(1, 1), (2, 1), (3, 1), (4, 3)],
    );
    let split = policy.split.unwrap();
    let merge = policy.merge.unwrap();

    // Phase 1: 1 and 2 exchange 10 messages of 256 bytes per epoch; 3 sends
    // agent 1 one message every 20 epochs.
    let mut first_eligible = None;
    let mut split_decision = None;
    for epoch in 0..40 {
        sim.chat(1, 2, 10, 256);
        if epoch % 20 == 0 {
            sim.chat(3, 1, 1, 64);
        }
        let at = sim.now + EPOCH - 1;
        let eval = sim.end_epoch();
        let report = sim.evaluator.domain_report(DomainId(1)).unwrap();
        if first_eligible.is_none() && report.internal >= split.min_internal {
            first_eligible = Some(at);
        }
        if let Some(d) = eval.decisions.first() {
            assert_eq!(eval.decisions.len(), 1, "{:?}", eval.decisions);
            split_decision = Some(d.clone());
            break;
        }
    }
    let Some(Decision::Split(s)) = split_decision else {
        panic!("no split: {split_decision:?}")
    };
    assert_eq!(s.domain, DomainId(1));
    assert_eq!(s.movers.as_slice(), &[AgentId(3)]);
    assert_eq!(s.stayers, 2);
    // The cut is agent 3's trickle: 1 message of 64 bytes, decayed a little.
    assert!(
        s.cut > Weight::ZERO && s.cut <= TrafficPolicy::DEFAULT.cost(64),
        "{}",
        s.cut
    );
    assert!(s.cut.raw() * 10 < s.internal.raw());
    // Not before the condition had held for the hold time.
    assert!(
        s.at_ns >= first_eligible.unwrap() + split.hold_ns,
        "{} vs {first_eligible:?}",
        s.at_ns
    );
    let args = Decision::Split(s.clone()).witness_args();
    assert_eq!(Decision::parse_witness_args(&args), (s.cut, s.internal));

    // The kernel moves agent 3 into the new partition 2 at its turn boundary.
    let applied_at = sim.now;
    sim.evaluator
        .apply_split(&s, DomainId(2), applied_at)
        .unwrap();
    assert_eq!(sim.domain(3), DomainId(2));
    assert_eq!(sim.agents(1), [1, 2]);

    // Phase 2: 3 (partition 2) and 4 (partition 3) chat heavily.
    let mut merge_decision = None;
    for _ in 0..80 {
        sim.chat(1, 2, 10, 256);
        sim.chat(3, 4, 10, 256);
        let eval = sim.end_epoch();
        if let Some(d) = eval.decisions.first() {
            assert_eq!(eval.decisions.len(), 1, "{:?}", eval.decisions);
            merge_decision = Some(d.clone());
            break;
        }
    }
    let Some(Decision::Merge(m)) = merge_decision else {
        panic!("no merge: {merge_decision:?}")
    };
    // One agent each: the lower id stays.
    assert_eq!((m.into, m.from), (DomainId(2), DomainId(3)));
    assert_eq!(m.internal, Weight::ZERO);
    assert!(m.cross >= merge.min_cross);
    // Partition 2 was cooling down after its split; the hold starts after.
    assert!(
        m.at_ns >= applied_at + policy.cooldown_ns + merge.hold_ns,
        "{}",
        m.at_ns
    );
    sim.evaluator.apply_merge(&m, sim.now).unwrap();
    assert_eq!(sim.agents(2), [3, 4]);
    assert!(sim.agents(3).is_empty());
    assert!(sim.evaluator.domain_report(DomainId(3)).is_none());

    // Phase 3: the same traffic for a minute of simulated time: stable.
    for _ in 0..600 {
        sim.chat(1, 2, 10, 256);
        sim.chat(3, 4, 10, 256);
        let eval = sim.end_epoch();
        assert!(eval.decisions.is_empty(), "flapped: {:?}", eval.decisions);
    }
    // Both domains are cut every epoch and their cut is their only edge.
    for d in [1, 2] {
        let report = sim.evaluator.domain_report(DomainId(d)).unwrap();
        let Some(cut) = report.last_cut else {
            panic!("domain {d} not cut")
        };
        let CutResult::Cut {
            value,
            internal,
            lighter,
            ..
        } = cut.result
        else {
            panic!("{cut:?}")
        };
        assert_eq!((value, lighter), (internal, 1));
        assert_eq!(report.agents, 2);
    }
}

/// A condition that holds only every other evaluation never becomes a
/// decision; once it holds without a break for the hold time, it does.
#[test]
fn a_flickering_split_condition_is_held_back() {
    let policy = CoherencePolicy {
        split: Some(SplitPolicy {
            hold_ns: 3 * EPOCH,
            min_internal: Weight::from_units(1),
            ..SplitPolicy::DEFAULT
        }),
        ..no_hold_policy()
    };
    let mut sim = Sim::new(memoryless(), policy, &[(1, 1), (2, 1), (3, 1)]);
    for epoch in 0..30 {
        sim.chat(1, 2, 10, 0);
        if epoch % 2 == 1 {
            // Agent 3 joins the conversation: no weak cut this epoch.
            sim.chat(3, 1, 10, 0);
            sim.chat(3, 2, 10, 0);
        }
        let eval = sim.end_epoch();
        assert!(
            eval.decisions.is_empty(),
            "epoch {epoch}: {:?}",
            eval.decisions
        );
        assert_eq!(eval.cuts, 1);
    }
    // Now agent 3 stays quiet: the condition holds at the evaluations of 4
    // epochs (0, 1, 2, 3 epochs after the first): decided at the fourth.
    let mut decided = None;
    for epoch in 0..4 {
        sim.chat(1, 2, 10, 0);
        let eval = sim.end_epoch();
        if !eval.decisions.is_empty() {
            decided = Some(epoch);
        }
    }
    assert_eq!(decided, Some(3));
}

/// A split domain's halves cannot merge back during the cooldown, even if
/// they start chatting at once; after cooldown and hold, they can.
#[test]
fn cooldown_holds_back_a_merge_after_a_split() {
    let policy = CoherencePolicy {
        cooldown_ns: 10 * EPOCH,
        ..no_hold_policy()
    };
    let mut sim = Sim::new(memoryless(), policy, &[(1, 1), (2, 1), (3, 1)]);
    sim.chat(1, 2, 10, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_eq!(s.movers.as_slice(), &[AgentId(3)]);
    assert_eq!(s.cut, Weight::ZERO);
    let applied = sim.now;
    sim.evaluator.apply_split(s, DomainId(7), applied).unwrap();
    let mut merged_at = None;
    for _ in 0..20 {
        sim.chat(1, 2, 10, 0);
        sim.chat(1, 3, 40, 0);
        let eval = sim.end_epoch();
        if let Some(Decision::Merge(m)) = eval.decisions.first() {
            merged_at = Some(m.at_ns);
            assert_eq!((m.into, m.from), (DomainId(1), DomainId(7)));
            break;
        }
        assert!(eval.decisions.is_empty(), "{eval:?}");
    }
    let merged_at = merged_at.expect("merge after the cooldown");
    assert!(
        merged_at >= applied + 10 * EPOCH && merged_at < applied + 12 * EPOCH,
        "{merged_at}"
    );
}

/// A pending decision keeps its domains out of evaluation until applied or
/// cancelled; applying needs the right id and fresh agents.
#[test]
fn pending_decisions_are_applied_or_cancelled_exactly_once() {
    let mut sim = Sim::new(memoryless(), no_hold_policy(), &[(1, 1), (2, 1), (3, 1)]);
    sim.chat(1, 2, 10, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first().cloned() else {
        panic!("{eval:?}")
    };
    let report = sim.evaluator.domain_report(DomainId(1)).unwrap();
    assert_eq!(report.pending, Some(s.id));
    // Pending: not cut again, no second decision.
    sim.chat(1, 2, 10, 0);
    let eval = sim.end_epoch();
    assert!(eval.decisions.is_empty());
    assert_eq!(eval.cuts, 0);
    // Wrong id, used domain, then a stale agent.
    let mut wrong = s.clone();
    wrong.id = DecisionId(999);
    assert_eq!(
        sim.evaluator.apply_split(&wrong, DomainId(2), sim.now),
        Err(ApplyError::NotPending(DecisionId(999)))
    );
    assert_eq!(
        sim.evaluator.apply_split(&s, DomainId(1), sim.now),
        Err(ApplyError::DomainInUse(DomainId(1)))
    );
    sim.evaluator
        .graph_mut()
        .move_agent(AgentId(3), DomainId(5))
        .unwrap();
    assert_eq!(
        sim.evaluator.apply_split(&s, DomainId(2), sim.now),
        Err(ApplyError::Stale(AgentId(3)))
    );
    sim.evaluator
        .graph_mut()
        .move_agent(AgentId(3), DomainId(1))
        .unwrap();
    // Cancelled: evaluated again, and decided again under a new id.
    assert!(sim.evaluator.cancel(s.id));
    assert!(!sim.evaluator.cancel(s.id));
    assert_eq!(
        sim.evaluator.apply_split(&s, DomainId(2), sim.now),
        Err(ApplyError::NotPending(s.id))
    );
    sim.chat(1, 2, 10, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(again)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_ne!(again.id, s.id);
    assert_eq!(again.movers, s.movers);
}

/// A domain whose cut would exceed the work budget gets no decision.
#[test]
fn over_budget_means_no_decision() {
    let policy = CoherencePolicy {
        cut_budget: WorkBudget::new(20),
        ..no_hold_policy()
    };
    let mut sim = Sim::new(memoryless(), policy, &[(1, 1), (2, 1), (3, 1)]);
    for _ in 0..5 {
        sim.chat(1, 2, 10, 0);
        // Agent 3 speaks a little: no zero cut to find while loading.
        sim.chat(3, 1, 1, 0);
        let eval = sim.end_epoch();
        assert!(eval.decisions.is_empty(), "{eval:?}");
        assert_eq!((eval.cuts, eval.undecided), (0, 1));
    }
    let cut = sim
        .evaluator
        .domain_report(DomainId(1))
        .unwrap()
        .last_cut
        .unwrap();
    assert!(
        matches!(cut.result, CutResult::OverBudget { .. }),
        "{cut:?}"
    );
    // The same traffic with the default budget splits agent 3 off.
    let mut sim = Sim::new(memoryless(), no_hold_policy(), &[(1, 1), (2, 1), (3, 1)]);
    sim.chat(1, 2, 10, 0);
    sim.chat(3, 1, 1, 0);
    let eval = sim.end_epoch();
    assert_eq!(eval.decisions.len(), 1, "{eval:?}");
}

/// A domain with more agents than the solver takes is left undecided.
#[test]
fn a_domain_too_large_to_cut_is_left_undecided() {
    let agents: Vec<(u32, u32)> = (0..65).map(|a| (a, 1)).collect();
    let mut sim = Sim::new(memoryless(), no_hold_policy(), &agents);
    sim.chat(0, 1, 50, 0);
    let eval = sim.end_epoch();
    assert!(eval.decisions.is_empty());
    assert_eq!((eval.cuts, eval.undecided), (0, 1));
    let cut = sim
        .evaluator
        .domain_report(DomainId(1))
        .unwrap()
        .last_cut
        .unwrap();
    assert_eq!(cut.result, CutResult::TooLarge { agents: 65 });
    // One agent fewer (64) is cut, and the 62 silent agents split off
    // together, in one decision.
    sim.evaluator.graph_mut().remove_agent(AgentId(64)).unwrap();
    sim.chat(0, 1, 50, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_eq!(s.cut, Weight::ZERO);
    assert_eq!(s.stayers, 2);
    assert_eq!(
        s.movers.iter().map(|a| a.0).collect::<Vec<_>>(),
        (2..64).collect::<Vec<_>>()
    );
}

/// A domain in disconnected groups: the busiest group stays, all the
/// others leave together.
#[test]
fn a_disconnected_domain_keeps_its_busiest_group() {
    let agents: Vec<(u32, u32)> = (1..=7).map(|a| (a, 1)).collect();
    let mut sim = Sim::new(memoryless(), no_hold_policy(), &agents);
    sim.chat(1, 2, 5, 0);
    sim.chat(3, 4, 20, 0);
    sim.chat(4, 5, 20, 0);
    sim.chat(6, 7, 5, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_eq!(s.cut, Weight::ZERO);
    assert_eq!(
        s.movers.iter().map(|a| a.0).collect::<Vec<_>>(),
        [1, 2, 6, 7]
    );
    // Two equally busy groups: the one with the lowest agent stays.
    let mut sim = Sim::new(
        memoryless(),
        no_hold_policy(),
        &[(5, 1), (6, 1), (7, 1), (8, 1)],
    );
    sim.chat(7, 8, 5, 0);
    sim.chat(5, 6, 5, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_eq!(s.movers.iter().map(|a| a.0).collect::<Vec<_>>(), [7, 8]);
}

/// Which side moves: the one with less traffic touching it; between equals,
/// the one without the domain's lowest agent.
#[test]
fn the_lighter_side_moves() {
    // Two pairs joined by a thin link; pair (3, 4) chats less.
    let mut sim = Sim::new(
        memoryless(),
        no_hold_policy(),
        &[(1, 1), (2, 1), (3, 1), (4, 1)],
    );
    sim.chat(1, 2, 40, 0);
    sim.chat(3, 4, 30, 0);
    sim.chat(2, 3, 1, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_eq!(s.movers.as_slice(), &[AgentId(3), AgentId(4)]);
    assert_eq!(s.cut, Weight::UNIT);
    assert_eq!(s.internal, Weight::from_units(71));

    // Equal pairs: the pair with agent 1 stays.
    let mut sim = Sim::new(
        memoryless(),
        no_hold_policy(),
        &[(4, 1), (3, 1), (2, 1), (1, 1)],
    );
    sim.chat(1, 4, 30, 0);
    sim.chat(2, 3, 30, 0);
    sim.chat(4, 3, 1, 0);
    let eval = sim.end_epoch();
    let Some(Decision::Split(s)) = eval.decisions.first() else {
        panic!("{eval:?}")
    };
    assert_eq!(s.movers.as_slice(), &[AgentId(2), AgentId(3)]);
}

/// Several decisions in one round never share a domain, and the strongest
/// attraction merges first.
#[test]
fn one_round_decides_each_domain_once() {
    // Domain 1 is attracted by 2 and by 3, more by 3.
    let mut sim = Sim::new(
        memoryless(),
        no_hold_policy(),
        &[(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)],
    );
    sim.chat(1, 2, 10, 0);
    sim.chat(1, 3, 20, 0);
    sim.chat(4, 5, 10, 0);
    let eval = sim.end_epoch();
    let merges: Vec<(u32, u32)> = eval
        .decisions
        .iter()
        .map(|d| match d {
            Decision::Merge(m) => (m.into.0, m.from.0),
            Decision::Split(s) => panic!("split {s:?}"),
        })
        .collect();
    assert_eq!(merges, [(1, 3), (4, 5)]);
}

fn traffic_strategy(
    agents: u32,
) -> impl proptest::strategy::Strategy<Value = Vec<(u32, u32, u32)>> {
    proptest::collection::vec((0..agents, 0..agents, 1u32..30), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The disjoint bands at work: right after a split, the halves never
    /// meet the merge condition.
    #[test]
    fn a_split_is_never_undone_at_once(n in 2u32..=8, traffic in traffic_strategy(8), s in 1u32..400) {
        let m = (s * 1000 / (1000 - s)) + 1; // smallest m with s < m / (1 + m)
        let policy = CoherencePolicy {
            split: Some(SplitPolicy { max_cut_share: Permille(s), ..no_hold_policy().split.unwrap() }),
            merge: Some(MergePolicy { min_cross_share: Permille(m), max_agents: 64, ..no_hold_policy().merge.unwrap() }),
            ..no_hold_policy()
        };
        prop_assume!(policy.validate().is_ok());
        let agents: Vec<(u32, u32)> = (0..n).map(|a| (a, 1)).collect();
        let mut sim = Sim::new(memoryless(), policy, &agents);
        for &(x, y, k) in &traffic {
            if x != y && x < n && y < n {
                sim.chat(x, y, k, 0);
            }
        }
        let at = sim.now + EPOCH - 1;
        let eval = sim.evaluator.evaluate(at);
        if let Some(Decision::Split(d)) = eval.decisions.first() {
            sim.evaluator.apply_split(d, DomainId(2), at).unwrap();
            let again = sim.evaluator.evaluate(at);
            for d in &again.decisions {
                prop_assert!(!matches!(d, Decision::Merge(_)), "merged back: {:?}", d);
            }
        }
    }

    /// And right after a merge, the merged domain never splits along the
    /// line it merged on.
    #[test]
    fn a_merge_is_never_undone_at_once(traffic in traffic_strategy(6), s in 1u32..400) {
        let m = (s * 1000 / (1000 - s)) + 1;
        let policy = CoherencePolicy {
            split: Some(SplitPolicy { max_cut_share: Permille(s), ..no_hold_policy().split.unwrap() }),
            merge: Some(MergePolicy { min_cross_share: Permille(m), max_agents: 64, ..no_hold_policy().merge.unwrap() }),
            ..no_hold_policy()
        };
        prop_assume!(policy.validate().is_ok());
        // Agents 0-2 in domain 1, 3-5 in domain 2, each domain held together
        // by a ring so that neither splits on its own.
        let agents = [(0, 1), (1, 1), (2, 1), (3, 2), (4, 2), (5, 2)];
        let mut sim = Sim::new(memoryless(), policy, &agents);
        for ring in [[0, 1, 2], [3, 4, 5]] {
            for i in 0..3 {
                sim.chat(ring[i], ring[(i + 1) % 3], 100, 0);
            }
        }
        for &(x, y, k) in &traffic {
            if x != y {
                sim.chat(x, y, k, 0);
            }
        }
        let at = sim.now + EPOCH - 1;
        let eval = sim.evaluator.evaluate(at);
        let merge = eval.decisions.iter().find_map(|d| match d {
            Decision::Merge(m) => Some(*m),
            Decision::Split(_) => None,
        });
        if let Some(mg) = merge {
            let from: Vec<AgentId> = sim.evaluator.graph().agents_in(mg.from).collect();
            let into: Vec<AgentId> = sim.evaluator.graph().agents_in(mg.into).collect();
            sim.evaluator.apply_merge(&mg, at).unwrap();
            let again = sim.evaluator.evaluate(at);
            for d in &again.decisions {
                if let Decision::Split(sp) = d {
                    prop_assert!(sp.movers.as_slice() != from.as_slice() && sp.movers.as_slice() != into.as_slice(),
                        "split back along the merge line: {:?}", sp);
                }
            }
        }
    }
}

/// The evaluator's memory is allocated once, and its size is what the
/// defaults document.
#[test]
fn footprint_of_the_default_engine() {
    let graph = CommGraph::new(
        GraphLimits::DEFAULT,
        TrafficPolicy::DEFAULT,
        DecayPolicy::DEFAULT,
    );
    assert_eq!(graph.footprint_bytes(), 256 * 8 + 2048 * 32);
    let mut evaluator = Coherence::new(graph, CoherencePolicy::DEFAULT).unwrap();
    let bytes = evaluator.footprint_bytes();
    assert!((300 << 10..400 << 10).contains(&bytes), "{bytes}");
    // A busy evaluation allocates nothing new.
    for a in 0..256 {
        evaluator
            .graph_mut()
            .add_agent(AgentId(a), DomainId(a / 4))
            .unwrap();
    }
    for a in 0..256u32 {
        for k in 1..=8 {
            evaluator
                .record(AgentId(a), AgentId((a + k) % 256), 64, 0)
                .unwrap();
        }
    }
    evaluator.evaluate(EPOCH);
    assert_eq!(evaluator.footprint_bytes(), bytes);
}
