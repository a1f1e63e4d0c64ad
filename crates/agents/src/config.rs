//! Agent definitions from a TOML file (`baton run --agents FILE`, or
//! `BATON_AGENTS`), checked before anything runs:
//!
//! ```toml
//! [http]
//! allowed_hosts = ["127.0.0.1", "agents.internal"]
//!
//! [[agents]]
//! kind = "http"
//! id = "reading"
//! url = "http://127.0.0.1:8091"
//! actions = ["analyze"]
//! timeout_ms = 5000            # optional, default 30000
//! max_response_bytes = 1048576 # optional, default 1 MiB
//! queue = "reading"            # optional, default the id
//! ```

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::http::{HttpAgent, HttpAgentConfig};
use crate::tutor::{TutorAgent, TutorConfig};
use crate::Registry;

/// The agents file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub agents: Vec<AgentDef>,
    /// The `tutor` agent's chat endpoint; no tutor agent without it.
    #[serde(default)]
    pub tutor: Option<TutorConfig>,
}

/// Settings shared by every HTTP agent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Hosts HTTP agents may call; an agent whose URL names another host is
    /// refused when the file is loaded.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// One agent definition, by kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AgentDef {
    Http(HttpAgentConfig),
}

/// An agents file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl AgentsConfig {
    /// Reads and parses an agents file (not yet checked: see [`Registry::with_config`]).
    pub fn load(path: &Path) -> Result<AgentsConfig, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        toml::from_str(&text).map_err(|e| err(e.to_string().trim_end().to_string()))
    }
}

impl Registry {
    /// The built-in agents plus those of an agents file. Every definition is
    /// checked: unique ids (built-ins included), actions named, URLs that
    /// parse, use http(s) and name an allowed host, sane limits. Errors
    /// name the agent and the field.
    pub fn with_config(cfg: &AgentsConfig, file: &str) -> Result<Registry, ConfigError> {
        let mut registry = Registry::with_builtins();
        let mut problems = Vec::new();
        let mut seen: BTreeSet<String> = registry.ids().map(str::to_string).collect();
        for (i, def) in cfg.agents.iter().enumerate() {
            let AgentDef::Http(http) = def;
            let at = format!("agents[{i}] (id '{}')", http.id);
            if !seen.insert(http.id.clone()) {
                problems.push(format!(
                    "{at}: the id is taken (by a built-in or an earlier entry)"
                ));
                continue;
            }
            let before = problems.len();
            check_http(http, &cfg.http, &at, &mut problems);
            if problems.len() == before {
                match HttpAgent::new(http.clone()) {
                    Ok(agent) => registry.register(Arc::new(agent)),
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            }
        }
        if let Some(tutor) = &cfg.tutor {
            let before = problems.len();
            check_url(&tutor.base_url, &cfg.http, "tutor.base_url", &mut problems);
            if tutor.model.is_empty() {
                problems.push("tutor.model: name the model".into());
            }
            if tutor.timeout_ms == 0 {
                problems.push("tutor.timeout_ms: must be at least 1".into());
            }
            if tutor.max_history < 2 {
                problems.push("tutor.max_history: keep at least 2 messages".into());
            }
            if problems.len() == before {
                match TutorAgent::new(tutor.clone()) {
                    Ok(agent) => registry.register(Arc::new(agent)),
                    Err(e) => problems.push(e),
                }
            }
        }
        if problems.is_empty() {
            Ok(registry)
        } else {
            Err(ConfigError {
                file: file.to_string(),
                message: problems.join("; "),
            })
        }
    }
}

fn check_http(
    http: &HttpAgentConfig,
    settings: &HttpSettings,
    at: &str,
    problems: &mut Vec<String>,
) {
    let valid_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !valid_name(&http.id) {
        problems.push(format!("{at}.id: use letters, digits and _ - . only"));
    }
    if http.actions.is_empty() {
        problems.push(format!("{at}.actions: name at least one action"));
    }
    for a in &http.actions {
        if !valid_name(a) {
            problems.push(format!(
                "{at}.actions: '{a}' is not a valid action name (letters, digits, _ - .)"
            ));
        }
    }
    if http.timeout_ms == 0 {
        problems.push(format!("{at}.timeout_ms: must be at least 1"));
    }
    if http.max_response_bytes == 0 {
        problems.push(format!("{at}.max_response_bytes: must be at least 1"));
    }
    check_url(&http.url, settings, &format!("{at}.url"), problems);
}

/// A URL agents may call: http(s), to a host of the allow-list.
fn check_url(raw: &str, settings: &HttpSettings, at: &str, problems: &mut Vec<String>) {
    match reqwest::Url::parse(raw) {
        Err(e) => problems.push(format!("{at}: '{raw}' is not a URL: {e}")),
        Ok(url) => {
            if !matches!(url.scheme(), "http" | "https") {
                problems.push(format!(
                    "{at}: scheme '{}' is not http or https",
                    url.scheme()
                ));
            }
            match url.host_str() {
                None => problems.push(format!("{at}: names no host")),
                Some(host) if !settings.allowed_hosts.iter().any(|h| h == host) => {
                    problems.push(format!(
                        "{at}: host '{host}' is not in http.allowed_hosts ({})",
                        if settings.allowed_hosts.is_empty() {
                            "empty".to_string()
                        } else {
                            settings.allowed_hosts.join(", ")
                        }
                    ))
                }
                Some(_) => {}
            }
        }
    }
}
