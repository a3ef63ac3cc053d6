//! Where the bundles of a placement group go: gang scheduling a group's bundles onto nodes.
//!
//! A group is placed atomically, all bundles or none, because a half-placed group holds
//! resources its tasks can never use. The strategy constrains the choice: STRICT_PACK puts
//! every bundle on one node and STRICT_SPREAD every bundle on its own node, and neither is
//! ever relaxed; PACK and SPREAD are preferences that give way to whatever placement exists.
//! Ray's GCS placement-group scheduler is the model. This is a pure decision; reserving the
//! chosen resources on the nodes (two-phase) happens elsewhere.

use ray_proto::fits;
use std::collections::BTreeMap;

/// Resources by name (`CPU`, `GPU`, custom).
pub type Resources = BTreeMap<String, f64>;

/// How the bundles of a group may share nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// As few nodes as it can, more if it must.
    Pack,
    /// As many nodes as it can, sharing if it must.
    Spread,
    /// All bundles on one node, or no placement.
    StrictPack,
    /// Every bundle on a node of its own, or no placement.
    StrictSpread,
}

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// What it can give the group (free now, or its totals when judging feasibility).
    pub free: Resources,
    /// Bundles of this group that already sit on it (when some bundles are placed again after a node died).
    pub hosting: usize,
}

/// What to do with a group.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Reserve bundle i on candidate `nodes[i]`.
    Place(Vec<usize>),
    /// It fits the cluster's totals but not what is free now: wait.
    Wait,
    /// No placement exists even on empty nodes: Ray's "infeasible".
    Infeasible,
}

/// Steps the complete search for PACK and SPREAD may take. The search is exponential in the
/// number of bundles and the head must not stall on one large group, so past this it gives up
/// and the group waits for another try.
const SEARCH_BUDGET: usize = 50_000;

/// The resource best fit economises first.
const CPU: &str = "CPU";

/// The complete search spent its budget without an answer either way.
struct GaveUp;

/// Where each bundle goes (index into `nodes` per bundle), or None if the strategy cannot place them all in `nodes[..].free`.
#[cfg(test)]
pub fn place(bundles: &[Resources], strategy: Strategy, nodes: &[Candidate]) -> Option<Vec<usize>> {
    search(bundles, strategy, nodes).ok().flatten()
}

/// `place` on what is free; if that fails, `place` on the totals decides between Wait and Infeasible.
/// `free` and `total` describe the same nodes in the same order (same length; hosting is the same).
pub fn decide(bundles: &[Resources], strategy: Strategy, free: &[Candidate], total: &[Candidate]) -> Decision {
    if let Ok(Some(assign)) = search(bundles, strategy, free) {
        return Decision::Place(assign);
    }
    match search(bundles, strategy, total) {
        Ok(None) => Decision::Infeasible,
        // Only a proven impossibility is infeasible; a search that gave up may succeed next time.
        Ok(Some(_)) | Err(GaveUp) => Decision::Wait,
    }
}

/// `place`, telling "no placement exists" apart from "the search gave up".
fn search(bundles: &[Resources], strategy: Strategy, nodes: &[Candidate]) -> Result<Option<Vec<usize>>, GaveUp> {
    if nodes.is_empty() {
        return Ok(None);
    }
    if bundles.is_empty() {
        return Ok(Some(Vec::new()));
    }
    match strategy {
        Strategy::StrictPack => Ok(one_node(bundles, nodes, true)),
        Strategy::StrictSpread => Ok(matching(bundles, nodes)),
        Strategy::Pack => match one_node(bundles, nodes, false) {
            Some(assign) => Ok(Some(assign)),
            None => Backtrack::new(bundles, Strategy::Pack, nodes).run(),
        },
        Strategy::Spread => match matching(bundles, nodes) {
            Some(assign) => Ok(Some(assign)),
            None => Backtrack::new(bundles, Strategy::Spread, nodes).run(),
        },
    }
}

/// All bundles on the best-fitting node that holds their sum. `strict` makes a node already
/// hosting bundles of the group the only choice; otherwise such a node is merely preferred.
fn one_node(bundles: &[Resources], nodes: &[Candidate], strict: bool) -> Option<Vec<usize>> {
    let mut sum = Resources::new();
    bundles.iter().for_each(|b| add_into(&mut sum, b));
    let hosts: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].hosting > 0).collect();
    let (load, count) = (vec![Resources::new(); nodes.len()], vec![0; nodes.len()]);
    // Pack's ranking puts hosting nodes first, then the best fit, keeping big nodes for big groups;
    // a strict group already on a node may only join it.
    let node = ranked(Strategy::Pack, &sum, nodes, &load, &count)
        .into_iter()
        .find(|&i| !strict || hosts.is_empty() || hosts == [i])?;
    Some(vec![node; bundles.len()])
}

/// Every bundle on its own node that hosts none of the group, if any such assignment exists.
/// Kuhn's augmenting paths are exact here because each node takes at most one bundle;
/// each bundle's nodes are tried best fit first.
fn matching(bundles: &[Resources], nodes: &[Candidate]) -> Option<Vec<usize>> {
    let (load, count) = (vec![Resources::new(); nodes.len()], vec![0; nodes.len()]);
    let edges: Vec<Vec<usize>> = bundles
        .iter()
        .map(|b| {
            ranked(Strategy::Pack, b, nodes, &load, &count).into_iter().filter(|&i| nodes[i].hosting == 0).collect()
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; nodes.len()];
    for b in largest_first(bundles) {
        if !augment(b, &edges, &mut owner, &mut vec![false; nodes.len()]) {
            return None;
        }
    }
    let mut assign = vec![None; bundles.len()];
    for (node, bundle) in owner.iter().enumerate() {
        if let Some(b) = bundle {
            assign[*b] = Some(node);
        }
    }
    assign.into_iter().collect()
}

/// Finds bundle `b` a node, moving earlier bundles along an augmenting path only when no
/// node it prefers is still unowned (so bundles don't shuffle needlessly).
fn augment(b: usize, edges: &[Vec<usize>], owner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    if let Some(&node) = edges[b].iter().find(|&&n| owner[n].is_none()) {
        owner[node] = Some(b);
        return true;
    }
    for &node in &edges[b] {
        if seen[node] {
            continue;
        }
        seen[node] = true;
        if let Some(other) = owner[node]
            && augment(other, edges, owner, seen)
        {
            owner[node] = Some(b);
            return true;
        }
    }
    false
}

/// Bundle indices by decreasing total amount (ties by index): big bundles are the hard ones to fit.
fn largest_first(bundles: &[Resources]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..bundles.len()).collect();
    order.sort_by(|&a, &b| amount(&bundles[b]).total_cmp(&amount(&bundles[a])));
    order
}

/// Nodes that can take `bundle` on top of `load`, most preferred first. PACK prefers nodes the
/// group already uses, then the best fit; SPREAD prefers nodes with the fewest of the group's
/// bundles, then the most CPU left. Ties go to the lowest index, so the result is deterministic.
fn ranked(
    strategy: Strategy,
    bundle: &Resources,
    nodes: &[Candidate],
    load: &[Resources],
    count: &[usize],
) -> Vec<usize> {
    let mut keyed: Vec<(usize, f64, f64, usize)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut after = load[i].clone();
        add_into(&mut after, bundle);
        if !fits(&node.free, &after) {
            continue;
        }
        let cpu_left = get(&node.free, CPU) - get(&after, CPU);
        let shared = node.hosting + count[i];
        keyed.push(match strategy {
            Strategy::Spread | Strategy::StrictSpread => (shared, -cpu_left, 0.0, i),
            Strategy::Pack | Strategy::StrictPack => {
                (usize::from(shared == 0), cpu_left, amount(&node.free) - amount(&after), i)
            }
        });
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.total_cmp(&b.2)).then(a.3.cmp(&b.3)));
    keyed.into_iter().map(|k| k.3).collect()
}

/// Complete depth-first search for PACK and SPREAD: bundles largest first, each trying nodes in
/// `ranked` order. Its first descent is the greedy pass; backtracking only starts where greedy fails.
struct Backtrack<'a> {
    /// The group's bundles.
    bundles: &'a [Resources],
    /// Which preference orders the nodes.
    strategy: Strategy,
    /// The candidates.
    nodes: &'a [Candidate],
    /// Bundle indices in the order they are placed.
    order: Vec<usize>,
    /// Sum of the bundles assigned to each node so far.
    load: Vec<Resources>,
    /// Number of bundles assigned to each node so far.
    count: Vec<usize>,
    /// Node per bundle (meaningful for bundles placed so far).
    assign: Vec<usize>,
    /// Nodes tried so far, against `SEARCH_BUDGET`.
    steps: usize,
}

impl<'a> Backtrack<'a> {
    /// A search with nothing placed yet.
    fn new(bundles: &'a [Resources], strategy: Strategy, nodes: &'a [Candidate]) -> Self {
        let n = nodes.len();
        let (order, load, count) = (largest_first(bundles), vec![Resources::new(); n], vec![0; n]);
        Backtrack { bundles, strategy, nodes, order, load, count, assign: vec![0; bundles.len()], steps: 0 }
    }

    /// The first complete assignment found, None if there is none, or `GaveUp`.
    fn run(mut self) -> Result<Option<Vec<usize>>, GaveUp> {
        Ok(self.extend(0)?.then_some(self.assign))
    }

    /// Places the bundles from position `depth` of `order` on; true once all are placed.
    fn extend(&mut self, depth: usize) -> Result<bool, GaveUp> {
        let Some(&b) = self.order.get(depth) else { return Ok(true) };
        let mut tried: Vec<usize> = Vec::new();
        for node in ranked(self.strategy, &self.bundles[b], self.nodes, &self.load, &self.count) {
            // Identical nodes in identical states lead to identical subtrees; try one of them.
            if tried.iter().any(|&t| self.interchangeable(t, node)) {
                continue;
            }
            tried.push(node);
            self.steps += 1;
            if self.steps > SEARCH_BUDGET {
                return Err(GaveUp);
            }
            // Restoring a copy rather than subtracting keeps float rounding out of the loads.
            let before = self.load[node].clone();
            add_into(&mut self.load[node], &self.bundles[b]);
            self.count[node] += 1;
            self.assign[b] = node;
            if self.extend(depth + 1)? {
                return Ok(true);
            }
            self.load[node] = before;
            self.count[node] -= 1;
        }
        Ok(false)
    }

    /// Whether nodes `a` and `b` are the same in every way the search can see.
    fn interchangeable(&self, a: usize, b: usize) -> bool {
        self.nodes[a] == self.nodes[b] && self.load[a] == self.load[b] && self.count[a] == self.count[b]
    }
}

/// Adds `r` into `acc`, resource by resource.
fn add_into(acc: &mut Resources, r: &Resources) {
    for (k, v) in r {
        *acc.entry(k.clone()).or_insert(0.0) += v;
    }
}

/// Amount of resource `k` in `r`; missing counts as zero.
fn get(r: &Resources, k: &str) -> f64 {
    r.get(k).copied().unwrap_or(0.0)
}

/// All amounts in `r` added up, a rough size for ordering.
fn amount(r: &Resources) -> f64 {
    r.values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Just, ProptestConfig, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as Gen;

    /// A resource map from pairs.
    fn res(pairs: &[(&str, f64)]) -> Resources {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// One CPU-only bundle per amount.
    fn cpus(amounts: &[f64]) -> Vec<Resources> {
        amounts.iter().map(|&c| res(&[(CPU, c)])).collect()
    }

    /// One CPU-only node per amount, hosting nothing of the group.
    fn nodes(amounts: &[f64]) -> Vec<Candidate> {
        cpus(amounts).into_iter().map(|free| Candidate { free, hosting: 0 }).collect()
    }

    /// Oracle: capacity (summed per node) plus the strategy's hard constraints.
    fn valid(bundles: &[Resources], strategy: Strategy, nodes: &[Candidate], assign: &[usize]) -> bool {
        if assign.len() != bundles.len() || assign.iter().any(|&i| i >= nodes.len()) {
            return false;
        }
        let mut load = vec![Resources::new(); nodes.len()];
        for (b, &i) in bundles.iter().zip(assign) {
            for (k, v) in b {
                *load[i].entry(k.clone()).or_default() += v;
            }
        }
        if !nodes.iter().zip(&load).all(|(n, l)| fits(&n.free, l)) {
            return false;
        }
        let hosting = |i: usize| nodes[i].hosting > 0;
        match strategy {
            Strategy::StrictPack => {
                let first = assign.first().copied();
                assign.iter().all(|&i| Some(i) == first) && (0..nodes.len()).all(|i| !hosting(i) || Some(i) == first)
            }
            Strategy::StrictSpread => {
                let mut seen = assign.to_vec();
                seen.sort_unstable();
                seen.dedup();
                seen.len() == assign.len() && assign.iter().all(|&i| !hosting(i))
            }
            Strategy::Pack | Strategy::Spread => true,
        }
    }

    /// Oracle: whether any assignment at all is valid, by trying every one.
    fn exists(bundles: &[Resources], strategy: Strategy, nodes: &[Candidate]) -> bool {
        let (n, m) = (bundles.len(), nodes.len());
        (0..m.pow(n as u32)).any(|mut code| {
            let assign: Vec<usize> = (0..n).map(|_| (code % m, code /= m).0).collect();
            valid(bundles, strategy, nodes, &assign)
        })
    }

    /// 0 to `max` in steps of a half, so sums are exact.
    fn halves(max: u32) -> impl Gen<Value = f64> {
        (0..=max * 2).prop_map(|h| f64::from(h) / 2.0)
    }

    /// CPU, GPU and custom `a`, each only if present.
    fn build(cpu: Option<f64>, gpu: Option<f64>, a: Option<f64>) -> Resources {
        [(CPU, cpu), ("GPU", gpu), ("a", a)].into_iter().filter_map(|(k, v)| Some((k.to_string(), v?))).collect()
    }

    /// A bundle, possibly empty.
    fn bundle() -> impl Gen<Value = Resources> {
        let opt = |max| prop::option::of(halves(max));
        (opt(4), opt(2), opt(2)).prop_map(|(c, g, a)| build(c, g, a))
    }

    /// Mostly 0, sometimes a node already holds some of the group.
    fn hosting() -> impl Gen<Value = usize> {
        prop_oneof![3 => Just(0usize), 1 => 1..3usize]
    }

    /// A node with CPU and maybe GPU and `a`.
    fn node() -> impl Gen<Value = Candidate> {
        let opt = |max| prop::option::of(halves(max));
        (halves(8), opt(2), opt(2), hosting())
            .prop_map(|(c, g, a, hosting)| Candidate { free: build(Some(c), g, a), hosting })
    }

    /// The same node twice, once with what is free and once with its totals (free ≤ total).
    fn free_and_total() -> impl Gen<Value = (Candidate, Candidate)> {
        let pair = |max| (halves(max), halves(max)).prop_map(|(x, y)| (x.min(y), x.max(y)));
        let opt = move |max| prop::option::of(pair(max));
        (pair(8), opt(2), opt(2), hosting()).prop_map(|(c, g, a, hosting)| {
            let free = build(Some(c.0), g.map(|p| p.0), a.map(|p| p.0));
            let total = build(Some(c.1), g.map(|p| p.1), a.map(|p| p.1));
            (Candidate { free, hosting }, Candidate { free: total, hosting })
        })
    }

    /// Any of the four strategies.
    fn strategy() -> impl Gen<Value = Strategy> {
        prop::sample::select(vec![Strategy::Pack, Strategy::Spread, Strategy::StrictPack, Strategy::StrictSpread])
    }

    #[test]
    fn strict_pack_puts_everything_on_one_node() {
        // Node 2 holds the 3 CPUs exactly: best fit leaves the 8-CPU node for a bigger group.
        assert_eq!(place(&cpus(&[1.5, 1.5]), Strategy::StrictPack, &nodes(&[4.0, 8.0, 3.0])), Some(vec![2, 2]));
        assert_eq!(place(&cpus(&[3.0, 3.0]), Strategy::StrictPack, &nodes(&[4.0, 4.0])), None);
    }

    #[test]
    fn strict_spread_needs_a_node_per_bundle() {
        assert_eq!(place(&cpus(&[1.0; 3]), Strategy::StrictSpread, &nodes(&[8.0, 8.0])), None);
        assert_eq!(place(&cpus(&[1.0; 3]), Strategy::StrictSpread, &nodes(&[8.0, 8.0, 8.0])), Some(vec![0, 1, 2]));
    }

    #[test]
    fn strict_spread_moves_a_bundle_aside_to_make_room() {
        // The CPU bundle fits node 0 best, but only node 0 has the GPU the other bundle needs.
        let bundles = vec![res(&[(CPU, 2.0)]), res(&[("GPU", 1.0)])];
        let nodes = vec![
            Candidate { free: res(&[(CPU, 2.0), ("GPU", 1.0)]), hosting: 0 },
            Candidate { free: res(&[(CPU, 3.0)]), hosting: 0 },
        ];
        assert_eq!(place(&bundles, Strategy::StrictSpread, &nodes), Some(vec![1, 0]));
    }

    #[test]
    fn pack_keeps_a_group_on_one_node_when_it_can() {
        assert_eq!(place(&cpus(&[2.0, 2.0]), Strategy::Pack, &nodes(&[8.0, 4.0])), Some(vec![1, 1]));
    }

    #[test]
    fn pack_overflows_onto_another_node_when_one_is_too_small() {
        assert_eq!(place(&cpus(&[2.0; 3]), Strategy::Pack, &nodes(&[4.0, 2.0])), Some(vec![1, 0, 0]));
    }

    #[test]
    fn pack_backtracks_when_best_fit_leads_nowhere() {
        // Best fit puts the CPU bundle on node 0, leaving the GPU bundle no node.
        let bundles = vec![res(&[(CPU, 2.0)]), res(&[(CPU, 1.0), ("GPU", 1.0)])];
        let nodes = vec![
            Candidate { free: res(&[(CPU, 2.0), ("GPU", 1.0)]), hosting: 0 },
            Candidate { free: res(&[(CPU, 2.5)]), hosting: 0 },
        ];
        assert_eq!(place(&bundles, Strategy::Pack, &nodes), Some(vec![1, 0]));
    }

    #[test]
    fn spread_shares_nodes_only_when_it_must() {
        assert_eq!(place(&cpus(&[1.0; 3]), Strategy::Spread, &nodes(&[8.0, 8.0, 8.0])), Some(vec![0, 1, 2]));
        let shared = place(&cpus(&[1.0; 4]), Strategy::Spread, &nodes(&[8.0, 8.0])).map(|mut a| {
            a.sort_unstable();
            a
        });
        assert_eq!(shared, Some(vec![0, 0, 1, 1]));
    }

    #[test]
    fn empty_bundles_fit_anywhere() {
        let bundles = vec![Resources::new(); 2];
        assert_eq!(place(&bundles, Strategy::StrictPack, &nodes(&[0.0])), Some(vec![0, 0]));
        assert_eq!(place(&bundles, Strategy::StrictSpread, &nodes(&[0.0, 0.0])), Some(vec![0, 1]));
        assert_eq!(place(&bundles, Strategy::Pack, &[]), None);
        assert_eq!(place(&[], Strategy::Spread, &nodes(&[1.0])), Some(vec![]));
    }

    #[test]
    fn a_bundle_larger_than_any_node_is_infeasible_not_waiting() {
        let (free, total) = (nodes(&[0.0, 0.0]), nodes(&[8.0, 8.0]));
        assert_eq!(decide(&cpus(&[16.0]), Strategy::Pack, &free, &total), Decision::Infeasible);
        assert_eq!(decide(&cpus(&[6.0, 6.0]), Strategy::StrictPack, &free, &total), Decision::Infeasible);
    }

    #[test]
    fn busy_nodes_make_a_group_wait() {
        let (free, total) = (nodes(&[1.0, 0.0]), nodes(&[8.0, 8.0]));
        assert_eq!(decide(&cpus(&[4.0, 4.0]), Strategy::StrictSpread, &free, &total), Decision::Wait);
        assert_eq!(decide(&cpus(&[1.0]), Strategy::StrictSpread, &free, &total), Decision::Place(vec![0]));
    }

    #[test]
    fn a_search_out_of_budget_waits_instead_of_calling_the_group_infeasible() {
        // 31 CPUs on three distinct nodes of just over 10: infeasible, but only an exhaustive search can tell.
        let free: Vec<Candidate> =
            (0..3).map(|i| Candidate { free: res(&[(CPU, 10.0 + 0.01 * f64::from(i))]), hosting: 0 }).collect();
        let bundles = cpus(&[1.0; 31]);
        assert_eq!(place(&bundles, Strategy::Pack, &free), None);
        assert_eq!(decide(&bundles, Strategy::Pack, &nodes(&[0.0; 3]), &free), Decision::Wait);
    }

    #[test]
    fn rescheduled_bundles_avoid_nodes_of_their_strict_spread_siblings() {
        let mut cluster = nodes(&[8.0, 8.0, 8.0]);
        cluster[0].hosting = 1;
        assert_eq!(place(&cpus(&[1.0, 1.0]), Strategy::StrictSpread, &cluster), Some(vec![1, 2]));
        assert_eq!(place(&cpus(&[1.0, 1.0]), Strategy::StrictSpread, &cluster[..2]), None);
    }

    #[test]
    fn rescheduled_strict_pack_goes_to_the_node_holding_the_others() {
        // Node 0 fits best, but node 1 already holds the group's other bundles.
        let mut cluster = nodes(&[2.0, 8.0]);
        cluster[1].hosting = 2;
        assert_eq!(place(&cpus(&[1.0, 1.0]), Strategy::StrictPack, &cluster), Some(vec![1, 1]));
        cluster[1].free = res(&[(CPU, 1.0)]);
        assert_eq!(place(&cpus(&[1.0, 1.0]), Strategy::StrictPack, &cluster), None);
        assert_eq!(place(&cpus(&[1.0, 1.0]), Strategy::Pack, &cluster), Some(vec![0, 0]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_placement_respects_capacity_and_strategy(
            bundles in prop::collection::vec(bundle(), 1..=6),
            nodes in prop::collection::vec(node(), 1..=6),
            strategy in strategy(),
        ) {
            if let Some(assign) = place(&bundles, strategy, &nodes) {
                prop_assert!(valid(&bundles, strategy, &nodes, &assign), "invalid {assign:?}");
            }
        }

        #[test]
        fn small_groups_are_placed_exactly_when_some_placement_exists(
            bundles in prop::collection::vec(bundle(), 1..=4),
            nodes in prop::collection::vec(node(), 1..=4),
            strategy in strategy(),
        ) {
            prop_assert_eq!(place(&bundles, strategy, &nodes).is_some(), exists(&bundles, strategy, &nodes));
        }

        #[test]
        fn decide_waits_only_for_what_could_fit_and_rejects_only_what_never_can(
            bundles in prop::collection::vec(bundle(), 1..=4),
            pairs in prop::collection::vec(free_and_total(), 1..=4),
            strategy in strategy(),
        ) {
            let (free, total): (Vec<Candidate>, Vec<Candidate>) = pairs.into_iter().unzip();
            match decide(&bundles, strategy, &free, &total) {
                Decision::Place(assign) => prop_assert!(valid(&bundles, strategy, &free, &assign)),
                Decision::Wait => {
                    prop_assert!(exists(&bundles, strategy, &total) && !exists(&bundles, strategy, &free))
                }
                Decision::Infeasible => prop_assert!(!exists(&bundles, strategy, &total)),
            }
        }

        #[test]
        fn spread_uses_distinct_nodes_whenever_it_can(
            bundles in prop::collection::vec(bundle(), 1..=4),
            nodes in prop::collection::vec(node(), 1..=4),
        ) {
            if exists(&bundles, Strategy::StrictSpread, &nodes) {
                let assign = place(&bundles, Strategy::Spread, &nodes);
                prop_assert!(assign.is_some_and(|a| valid(&bundles, Strategy::StrictSpread, &nodes, &a)));
            }
        }

        #[test]
        fn the_same_input_gets_the_same_answer(
            bundles in prop::collection::vec(bundle(), 1..=6),
            pairs in prop::collection::vec(free_and_total(), 1..=6),
            strategy in strategy(),
            order in any::<bool>(),
        ) {
            let (free, total): (Vec<Candidate>, Vec<Candidate>) = pairs.into_iter().unzip();
            let nodes = if order { &free } else { &total };
            prop_assert_eq!(place(&bundles, strategy, nodes), place(&bundles, strategy, nodes));
            prop_assert_eq!(decide(&bundles, strategy, &free, &total), decide(&bundles, strategy, &free, &total));
        }
    }
}
