//! Precedence: which value a variable gets when several sources offer one.
//!
//! From lowest to highest: inherited base environments in the configured
//! order, then the environment itself; within one environment layer, the
//! services in annotation order (later wins); explicit picks above all.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use crate::name::Environment;

/// Where a candidate value comes from. The derived order is the precedence:
/// every `Pick` outranks every `Service`, and services compare by
/// `(layer, service)` lexicographically, layer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    /// A key loaded from a service: `layer` indexes [`layers`] (0 = the
    /// lowest base), `service` indexes the service list (0 = first).
    Service {
        /// Index of the environment layer.
        layer: usize,
        /// Index of the service within the list.
        service: usize,
    },
    /// An explicit pick, by its index in the pick list.
    Pick {
        /// Index of the pick.
        index: usize,
    },
}

/// Collects candidate values per variable name and keeps, for each, the
/// one with the highest [`Rank`], whatever the order of the offers.
///
/// Two offers with the same rank for the same variable cannot come from
/// distinct parameters; if it happens anyway, the first one is kept.
#[derive(Debug, Clone)]
pub struct Merge<V> {
    entries: BTreeMap<String, (Rank, V)>,
}

impl<V> Merge<V> {
    /// An empty merge.
    pub fn new() -> Self {
        Merge {
            entries: BTreeMap::new(),
        }
    }

    /// Offers `value` for `var` at `rank`; it is kept if it outranks what
    /// is there.
    pub fn offer(&mut self, var: &str, rank: Rank, value: V) {
        match self.entries.entry(var.to_owned()) {
            Entry::Vacant(slot) => {
                slot.insert((rank, value));
            }
            Entry::Occupied(mut slot) => {
                if rank > slot.get().0 {
                    slot.insert((rank, value));
                }
            }
        }
    }

    /// The value currently kept for `var`.
    pub fn get(&self, var: &str) -> Option<&V> {
        self.entries.get(var).map(|(_, v)| v)
    }

    /// The rank of the value currently kept for `var`.
    pub fn rank(&self, var: &str) -> Option<Rank> {
        self.entries.get(var).map(|(r, _)| *r)
    }

    /// The winners, sorted by variable name (byte order).
    pub fn into_sorted(self) -> Vec<(String, V)> {
        self.entries
            .into_iter()
            .map(|(var, (_, value))| (var, value))
            .collect()
    }

    /// Number of distinct variables.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was offered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<V> Default for Merge<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// The environment layers to load, lowest precedence first: the bases in
/// the given order, then `env` itself. `env` is removed from the bases and
/// repeated bases are kept at their first occurrence, so `env` is always
/// last and appears once. The index in the result is [`Rank::Service`]'s
/// `layer`.
pub fn layers(env: &Environment, inherit: &[Environment]) -> Vec<Environment> {
    let mut out: Vec<Environment> = Vec::with_capacity(inherit.len() + 1);
    for base in inherit {
        if base != env && !out.contains(base) {
            out.push(base.clone());
        }
    }
    out.push(env.clone());
    out
}
