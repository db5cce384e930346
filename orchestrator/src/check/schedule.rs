//! Which pairs of nodes are tested, and in which rounds: the pairs of a round run at once, and
//! no node is in two pairs of the same round, so that no node's figures are shared with
//! another test.

/// Which pairs `check` tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PairMode {
    /// Each node with the next (and the last with the first): n pairs in two or three rounds.
    Ring,
    /// Every node with every other: n(n-1)/2 pairs in n-1 rounds (n when n is odd).
    All,
}

impl PairMode {
    /// The word on the command line.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PairMode::Ring => "ring",
            PairMode::All => "all",
        }
    }
}

/// One pair: `from` pings, `to` listens; both are indices into the node list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pair {
    /// The pinging node.
    pub(crate) from: usize,
    /// The listening node.
    pub(crate) to: usize,
}

/// The rounds that test `mode`'s pairs of `nodes` nodes; empty below two nodes.
pub(crate) fn rounds(nodes: usize, mode: PairMode) -> Vec<Vec<Pair>> {
    match mode {
        PairMode::Ring => ring(nodes),
        PairMode::All => round_robin(nodes),
    }
}

/// Edge k joins node k and node k+1 (mod n). Even edges form one round and odd edges another;
/// with n odd, the closing edge (n-1, 0) meets both and gets a third round of its own. Two
/// nodes make one pair, not the same pair twice.
fn ring(nodes: usize) -> Vec<Vec<Pair>> {
    match nodes {
        0 | 1 => Vec::new(),
        2 => vec![vec![Pair { from: 0, to: 1 }]],
        n => {
            let mut rounds = vec![Vec::new(), Vec::new()];
            for k in 0..n {
                let pair = Pair {
                    from: k,
                    to: (k + 1) % n,
                };
                if n % 2 == 1 && k == n - 1 {
                    rounds.push(vec![pair]);
                } else {
                    rounds[k % 2].push(pair);
                }
            }
            rounds
        }
    }
}

/// The circle method of round-robin tournaments: node 0 stays put, the others turn one place
/// each round, and round r pairs the two ends of each chord. With n odd, a stand-in node makes
/// the count even and whoever meets it sits the round out.
fn round_robin(nodes: usize) -> Vec<Vec<Pair>> {
    if nodes < 2 {
        return Vec::new();
    }
    let seats = nodes + nodes % 2;
    let mut ring: Vec<usize> = (1..seats).collect();
    let mut rounds = Vec::with_capacity(seats - 1);
    for _ in 0..seats - 1 {
        let mut order = Vec::with_capacity(seats);
        order.push(0);
        order.extend(&ring);
        let round: Vec<Pair> = (0..seats / 2)
            .map(|i| {
                (
                    order[i].min(order[seats - 1 - i]),
                    order[i].max(order[seats - 1 - i]),
                )
            })
            .filter(|&(_, b)| b < nodes)
            // The lower pings the higher when their sum is even: from three nodes on, every
            // node then both pings (x+2 or x-1) and listens (x-2 or x+1).
            .map(|(a, b)| {
                if (a + b) % 2 == 0 {
                    Pair { from: a, to: b }
                } else {
                    Pair { from: b, to: a }
                }
            })
            .collect();
        rounds.push(round);
        ring.rotate_right(1);
    }
    rounds
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn unordered(pair: &Pair) -> (usize, usize) {
        (pair.from.min(pair.to), pair.from.max(pair.to))
    }

    /// No node in two pairs of a round, and no node paired with itself.
    fn assert_disjoint(rounds: &[Vec<Pair>], nodes: usize) {
        for (r, round) in rounds.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for pair in round {
                assert_ne!(pair.from, pair.to, "n={nodes} round {r}: {pair:?}");
                assert!(pair.from < nodes && pair.to < nodes);
                assert!(seen.insert(pair.from), "n={nodes} round {r}: {round:?}");
                assert!(seen.insert(pair.to), "n={nodes} round {r}: {round:?}");
            }
        }
    }

    #[test]
    fn all_pairs_meet_exactly_once_in_n_minus_one_or_n_rounds() {
        for nodes in 0..=33 {
            let rounds = rounds(nodes, PairMode::All);
            assert_disjoint(&rounds, nodes);
            let mut met = BTreeSet::new();
            for pair in rounds.iter().flatten() {
                assert!(met.insert(unordered(pair)), "n={nodes}: {pair:?} twice");
            }
            assert_eq!(met.len(), nodes * nodes.saturating_sub(1) / 2, "n={nodes}");
            let expected = match nodes {
                0 | 1 => 0,
                n if n % 2 == 0 => n - 1,
                n => n,
            };
            assert_eq!(rounds.len(), expected, "n={nodes}");
            if nodes >= 2 && nodes % 2 == 0 {
                assert!(rounds.iter().all(|r| r.len() == nodes / 2), "full rounds");
            }
        }
    }

    #[test]
    fn every_node_both_pings_and_listens_in_all_pairs() {
        for nodes in 3..=12 {
            let rounds = rounds(nodes, PairMode::All);
            let pairs: Vec<&Pair> = rounds.iter().flatten().collect();
            for node in 0..nodes {
                assert!(
                    pairs.iter().any(|p| p.from == node),
                    "n={nodes}: {node} never pings"
                );
                assert!(
                    pairs.iter().any(|p| p.to == node),
                    "n={nodes}: {node} never listens"
                );
            }
        }
    }

    #[test]
    fn a_ring_joins_each_node_to_the_next_in_two_or_three_rounds() {
        for nodes in 3..=33 {
            let rounds = rounds(nodes, PairMode::Ring);
            assert_disjoint(&rounds, nodes);
            let met: BTreeSet<(usize, usize)> = rounds.iter().flatten().map(unordered).collect();
            let expected: BTreeSet<(usize, usize)> = (0..nodes)
                .map(|k| {
                    unordered(&Pair {
                        from: k,
                        to: (k + 1) % nodes,
                    })
                })
                .collect();
            assert_eq!(met, expected, "n={nodes}");
            assert_eq!(rounds.iter().flatten().count(), nodes, "each edge once");
            assert_eq!(
                rounds.len(),
                if nodes % 2 == 0 { 2 } else { 3 },
                "n={nodes}"
            );
        }
        assert_eq!(
            rounds(2, PairMode::Ring),
            vec![vec![Pair { from: 0, to: 1 }]]
        );
        assert!(rounds(1, PairMode::Ring).is_empty());
        assert!(rounds(0, PairMode::All).is_empty());
    }
}
