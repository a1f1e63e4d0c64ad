//! The agent registry: agent id -> agent, and the plan validator's catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use baton_plan::{ActionProblem, Catalog};
use serde_json::Value;

use crate::{learning::LearningAgent, system::SystemAgent, Agent};

/// The agents a process can run, by id.
#[derive(Clone, Default)]
pub struct Registry {
    agents: BTreeMap<String, Arc<dyn Agent>>,
    queue_names: BTreeMap<String, Arc<str>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry holding the built-in agents.
    pub fn with_builtins() -> Self {
        let mut r = Self::new();
        r.register(Arc::new(SystemAgent));
        r.register(Arc::new(LearningAgent));
        r
    }

    /// Adds (or replaces) an agent under its id.
    pub fn register(&mut self, agent: Arc<dyn Agent>) {
        self.queue_names
            .insert(agent.id().to_string(), Arc::from(agent.queue()));
        self.agents.insert(agent.id().to_string(), agent);
    }

    pub fn get(&self, id: &str) -> Option<&Arc<dyn Agent>> {
        self.agents.get(id)
    }

    /// The queue serving steps of this agent, as a shared string (every
    /// step of every plan names its queue without a copy).
    pub fn queue_of(&self, id: &str) -> Option<Arc<str>> {
        self.queue_names.get(id).cloned()
    }

    /// Every queue some registered agent routes to.
    pub fn queues(&self) -> Vec<String> {
        let mut q: Vec<String> = self
            .agents
            .values()
            .map(|a| a.queue().to_string())
            .collect();
        q.sort();
        q.dedup();
        q
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.agents.keys().map(String::as_str)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.agents.iter().map(|(id, a)| (id, a.actions())))
            .finish()
    }
}

impl Catalog for Registry {
    fn check(&self, agent_id: &str, action: &str, input: &Value) -> Result<(), ActionProblem> {
        let agent = self
            .agents
            .get(agent_id)
            .ok_or_else(|| ActionProblem::UnknownAgent {
                known: self.agents.keys().cloned().collect(),
            })?;
        if !agent.actions().contains(&action) {
            return Err(ActionProblem::UnknownAction {
                known: agent.actions().iter().map(|a| a.to_string()).collect(),
            });
        }
        agent
            .check_input(action, input)
            .map_err(ActionProblem::BadInput)
    }
}
