//! Plan templates: named plans with parameters, submitted by name
//! (`baton run --template NAME --param k=v`) or by a rule when an agent
//! reports an insight (a template's `triggers`).
//!
//! A template is a JSON file `NAME.json` in the templates directory:
//!
//! ```json
//! {"description": "notify the tutor",
//!  "parameters": {"learnerId": {"required": true}, "skill": {"default": "any"}},
//!  "triggers": ["struggling_detected"],
//!  "plan": {"steps": [{"id": "help", "agentId": "tutor", "action": "send_message",
//!                      "input": {"learnerId": "${learnerId}", "message": "Help with ${skill}"}}]}}
//! ```
//!
//! A string that is exactly `"${name}"` becomes the parameter's JSON value;
//! `${name}` inside a longer string is replaced by its text.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

/// One parameter of a template.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: Option<String>,
}

/// A named plan with parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Insight types that submit this template, with the insight's data as
    /// its parameters.
    #[serde(default)]
    pub triggers: Vec<String>,
    pub plan: Value,
}

/// The templates of a directory, by name.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    templates: BTreeMap<String, Template>,
}

impl TemplateSet {
    /// Loads every `*.json` of `dir`; errors name the file and the reason.
    pub fn load_dir(dir: &Path) -> Result<TemplateSet, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("templates directory {}: {e}", dir.display()))?;
        let mut set = TemplateSet::default();
        let mut problems = Vec::new();
        let mut paths: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| {
                    serde_json::from_str::<Template>(&text).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(mut t) => {
                    t.name = name.clone();
                    set.templates.insert(name, t);
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        if problems.is_empty() {
            Ok(set)
        } else {
            Err(problems.join("; "))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.templates.values()
    }

    /// Templates a rule submits when an insight of this type arrives.
    pub fn triggered_by<'a>(&'a self, insight: &'a str) -> impl Iterator<Item = &'a Template> {
        self.templates
            .values()
            .filter(move |t| t.triggers.iter().any(|k| k == insight))
    }
}

impl Template {
    /// The plan with `params` filled in (unknown parameters are refused,
    /// missing required ones too, defaults apply).
    pub fn instantiate(&self, params: &Map<String, Value>) -> Result<Value, String> {
        let mut values = Map::new();
        let mut problems = Vec::new();
        for key in params.keys() {
            if !self.parameters.contains_key(key) {
                problems.push(format!("unknown parameter '{key}'"));
            }
        }
        for (name, p) in &self.parameters {
            match params.get(name).cloned().or_else(|| p.default.clone()) {
                Some(v) => {
                    values.insert(name.clone(), v);
                }
                None if p.required => problems.push(format!("parameter '{name}' is required")),
                None => {}
            }
        }
        if !problems.is_empty() {
            return Err(format!("template '{}': {}", self.name, problems.join("; ")));
        }
        Ok(fill(&self.plan, &values))
    }

    /// Parameters for a rule: the insight's data fields this template
    /// declares (others are ignored, so insights may carry more).
    pub fn params_from(&self, data: &Value) -> Map<String, Value> {
        data.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| self.parameters.contains_key(*k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn fill(v: &Value, params: &Map<String, Value>) -> Value {
    match v {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                if let Some(value) = params.get(name) {
                    return value.clone();
                }
            }
            let mut out = s.clone();
            for (name, value) in params {
                let text = match value {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                out = out.replace(&format!("${{{name}}}"), &text);
            }
            Value::String(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, params)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), fill(x, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Template {
        let mut t: Template = serde_json::from_value(json!({
            "parameters": {"learnerId": {"required": true}, "skill": {"default": "any"}, "n": {}},
            "triggers": ["struggling_detected"],
            "plan": {"steps": [{"id": "s", "agentId": "system", "action": "echo",
                      "input": {"who": "${learnerId}", "text": "help with ${skill} x${n}", "n": "${n}"}}]}
        }))
        .unwrap();
        t.name = "help".into();
        t
    }

    #[test]
    fn parameters_fill_whole_values_and_text() {
        let p: Map<String, Value> = json!({"learnerId": "l1", "n": 3})
            .as_object()
            .unwrap()
            .clone();
        let plan = template().instantiate(&p).unwrap();
        assert_eq!(
            plan["steps"][0]["input"],
            json!({"who": "l1", "text": "help with any x3", "n": 3})
        );
    }

    #[test]
    fn missing_and_unknown_parameters_are_refused() {
        let p: Map<String, Value> = json!({"who": 1}).as_object().unwrap().clone();
        let e = template().instantiate(&p).unwrap_err();
        assert!(e.contains("unknown parameter 'who'"), "{e}");
        assert!(e.contains("parameter 'learnerId' is required"), "{e}");
    }

    #[test]
    fn rules_take_the_declared_fields_of_the_insight() {
        let t = template();
        let p = t.params_from(&json!({"learnerId": "l9", "mastery": 0.1}));
        assert_eq!(Value::Object(p), json!({"learnerId": "l9"}));
    }
}
