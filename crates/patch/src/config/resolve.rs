//! Which environment a namespace maps to: the injector's own and excluded
//! namespaces first, then the first matching `environments` rule, else the
//! namespace name itself.

use sidekey_model::Environment;

use super::glob::glob;
use super::{AgentPolicy, Config, EnvironmentRule, Resolution};
use crate::quote::Q;

impl Config {
    /// The first `environments` rule matching `namespace`, if any.
    pub fn rule_for(&self, namespace: &str) -> Option<&EnvironmentRule> {
        self.rules.iter().find(|r| glob(&r.namespaces, namespace))
    }

    /// What the agent of `namespace`'s pods may accept (its rule's
    /// `allowLegacyValues` and `allowLoaderEnv`; nothing without a rule).
    pub fn agent_policy(&self, namespace: &str) -> AgentPolicy<'_> {
        self.rule_for(namespace)
            .map(|r| AgentPolicy {
                allow_legacy_values: r.allow_legacy_values,
                allow_loader_env: &r.allow_loader_env,
            })
            .unwrap_or_default()
    }

    /// Which environment `namespace` maps to: excluded namespaces first,
    /// then the first matching rule, else the namespace name itself.
    pub fn resolve(&self, namespace: &str) -> Resolution {
        if self.own_namespace.as_deref() == Some(namespace) {
            return Resolution::Excluded {
                reason: format!(
                    "namespace {} is the injector's own namespace, which is never mutated",
                    Q(namespace)
                ),
            };
        }
        if let Some(p) = self.excluded.iter().find(|p| glob(p, namespace)) {
            return Resolution::Excluded {
                reason: format!(
                    "namespace {} is excluded by the injector's configuration \
                     (excludedNamespaces: {})",
                    Q(namespace),
                    Q(p)
                ),
            };
        }
        let Some((i, rule)) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, r)| glob(&r.namespaces, namespace))
        else {
            return match Environment::parse(namespace) {
                Ok(environment) => Resolution::Environment {
                    environment,
                    inherit: Vec::new(),
                },
                Err(e) => Resolution::Invalid {
                    reason: format!(
                        "namespace {} is not a valid environment name ({e}); an operator can \
                         map it with an environments rule of the injector configuration",
                        Q(namespace)
                    ),
                },
            };
        };
        let name = match &rule.environment {
            Some(t) => t.replace("{namespace}", namespace),
            None => namespace.to_owned(),
        };
        match Environment::parse(&name) {
            Ok(environment) => {
                let mut inherit: Vec<Environment> = Vec::with_capacity(rule.inherit.len());
                for base in &rule.inherit {
                    if *base != environment && !inherit.contains(base) {
                        inherit.push(base.clone());
                    }
                }
                Resolution::Environment {
                    environment,
                    inherit,
                }
            }
            Err(e) => Resolution::Invalid {
                reason: format!(
                    "namespace {} maps to environment {} through environments[{i}] (namespaces \
                     {}) of the injector configuration, and that is not a valid environment: \
                     {e}",
                    Q(namespace),
                    Q(&name),
                    Q(&rule.namespaces)
                ),
            },
        }
    }
}
