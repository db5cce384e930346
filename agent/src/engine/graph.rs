//! The bootstrap as data: steps and the edges between them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::step::Step;

/// A mistake in the shape of the graph, found before anything runs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum GraphError {
    #[error("two steps are called `{0}`")]
    Duplicate(String),
    #[error("step `{step}` depends on `{missing}`, which is not a step")]
    UnknownDependency { step: String, missing: String },
    #[error("the steps {0:?} depend on each other in a cycle")]
    Cycle(Vec<String>),
}

/// Steps in an order where every step comes after its dependencies.
#[derive(Clone)]
pub(crate) struct StepGraph {
    steps: Vec<Arc<dyn Step>>,
}

impl std::fmt::Debug for StepGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| s.name()))
            .finish()
    }
}

impl StepGraph {
    /// Checks the graph and orders it; among steps that could go first, the given order wins.
    pub(crate) fn new(steps: Vec<Arc<dyn Step>>) -> Result<Self, GraphError> {
        let mut names = BTreeSet::new();
        for step in &steps {
            if !names.insert(step.name().to_owned()) {
                return Err(GraphError::Duplicate(step.name().to_owned()));
            }
        }
        for step in &steps {
            if let Some(missing) = step.depends_on().iter().find(|d| !names.contains(**d)) {
                return Err(GraphError::UnknownDependency {
                    step: step.name().to_owned(),
                    missing: (*missing).to_owned(),
                });
            }
        }
        let mut placed: BTreeSet<String> = BTreeSet::new();
        let mut ordered = Vec::with_capacity(steps.len());
        let mut remaining = steps;
        while !remaining.is_empty() {
            let (ready, waiting): (Vec<_>, Vec<_>) = remaining
                .into_iter()
                .partition(|s| s.depends_on().iter().all(|d| placed.contains(*d)));
            if ready.is_empty() {
                return Err(GraphError::Cycle(
                    waiting.iter().map(|s| s.name().to_owned()).collect(),
                ));
            }
            placed.extend(ready.iter().map(|s| s.name().to_owned()));
            ordered.extend(ready);
            remaining = waiting;
        }
        Ok(Self { steps: ordered })
    }

    pub(crate) fn steps(&self) -> &[Arc<dyn Step>] {
        &self.steps
    }

    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name() == name)
    }

    /// Every step that depends on `name`, directly or through others.
    pub(crate) fn dependents_of(&self, name: &str) -> Vec<usize> {
        let mut reached: BTreeSet<&str> = BTreeSet::from([name]);
        let mut found = BTreeMap::new();
        for (index, step) in self.steps.iter().enumerate() {
            if step.depends_on().iter().any(|d| reached.contains(d)) {
                reached.insert(step.name());
                found.insert(index, ());
            }
        }
        found.into_keys().collect()
    }
}
