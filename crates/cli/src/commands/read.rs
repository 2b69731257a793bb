//! `get`, `list` and `history`: reading metadata, and a value only with
//! `--reveal` (audited before it is printed).

use std::io::Write;

use serde_json::json;
use sidekey_model::{Environment, Key, Label, Selector, Service};
use sidekey_wire::rfc3339::seconds_text as format_time;

use super::table::print_table;
use super::{store_failure, usage, Ctx};
use crate::args::Output;
use crate::Failure;

impl Ctx {
    pub(super) async fn get(
        &mut self,
        env: &Environment,
        service: &Service,
        key: &Key,
        selector: &Selector,
        reveal: bool,
    ) -> Result<(), Failure> {
        if !reveal {
            let name =
                sidekey_model::ParamPath::new(self.store.prefix(), env, service, key).to_string();
            let suffix = selector.ssm_suffix();
            let stored = self
                .store
                .params()
                .get(&name, suffix.as_deref(), self.store.retry())
                .await
                .map_err(store_failure)?;
            let kind = match stored.param_type {
                sidekey_store::ParamType::SecureString => "native",
                sidekey_store::ParamType::String
                    if stored
                        .value
                        .expose()
                        .starts_with(sidekey_envelope::PREFIX_SK2.as_bytes()) =>
                {
                    "envelope"
                }
                sidekey_store::ParamType::String
                    if stored
                        .value
                        .expose()
                        .starts_with(sidekey_envelope::PREFIX.as_bytes()) =>
                {
                    "sk1"
                }
                sidekey_store::ParamType::String => "plain",
            };
            let modified = stored
                .last_modified
                .map(format_time)
                .unwrap_or_else(|| "-".to_owned());
            match self.output {
                Output::Text => println!(
                    "{env}/{service}/{key} version {} ({kind}), modified {modified}; add --reveal to print the value",
                    stored.version
                ),
                Output::Json => println!(
                    "{}",
                    json!({"environment": env.as_str(), "service": service.as_str(), "key": key.as_str(),
                           "version": stored.version, "format": kind, "modified": modified, "parameter": name})
                ),
            }
            return Ok(());
        }
        let mut pending = self.pending("reveal", env);
        let revealed = match self.store.get(env, service, key, selector).await {
            Ok(revealed) => revealed,
            Err(e) => {
                pending.secret(service.as_str(), key.as_str(), None);
                return self.close(pending, Err(store_failure(e)));
            }
        };
        pending.secret(service.as_str(), key.as_str(), Some(revealed.version));
        // The record first: a value is shown only once its reveal is on the
        // audit trail; if the record cannot be written, nothing is printed.
        self.close(pending, Ok(()))?;
        let mut out = std::io::stdout().lock();
        out.write_all(revealed.value.expose())
            .and_then(|()| out.flush())
            .map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
    }

    pub(super) async fn list(
        &mut self,
        env: &Environment,
        service: Option<&Service>,
    ) -> Result<(), Failure> {
        let keys = self.store.list(env, service).await.map_err(store_failure)?;
        match self.output {
            Output::Json => {
                let rows: Vec<_> = keys
                    .iter()
                    .map(|k| {
                        json!({"service": k.path.service().as_str(), "key": k.path.key().as_str(), "version": k.version,
                               "modified": k.last_modified.map(format_time), "modified_by": k.last_modified_user})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
            Output::Text => {
                let rows: Vec<Vec<String>> = keys
                    .iter()
                    .map(|k| {
                        vec![
                            format!("{}/{}", k.path.service(), k.path.key()),
                            k.version.to_string(),
                            k.last_modified
                                .map(format_time)
                                .unwrap_or_else(|| "-".into()),
                            k.last_modified_user.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print_table(&["KEY", "VERSION", "MODIFIED", "BY"], &rows);
            }
        }
        Ok(())
    }

    pub(super) async fn history(
        &mut self,
        env: &Environment,
        service: &Service,
        key: &Key,
    ) -> Result<(), Failure> {
        let entries = self
            .store
            .history(env, service, key)
            .await
            .map_err(store_failure)?;
        match self.output {
            Output::Json => {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|h| {
                        json!({"version": h.version, "modified": h.last_modified.map(format_time),
                               "modified_by": h.last_modified_user, "labels": h.labels, "type": h.param_type.as_str()})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
            Output::Text => {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|h| {
                        vec![
                            h.version.to_string(),
                            h.last_modified
                                .map(format_time)
                                .unwrap_or_else(|| "-".into()),
                            h.last_modified_user.clone().unwrap_or_else(|| "-".into()),
                            if h.labels.is_empty() {
                                "-".into()
                            } else {
                                h.labels.join(",")
                            },
                        ]
                    })
                    .collect();
                print_table(&["VERSION", "MODIFIED", "BY", "LABELS"], &rows);
            }
        }
        Ok(())
    }
}

pub(super) fn selector(version: Option<&str>, label: Option<&str>) -> Result<Selector, Failure> {
    match (version, label) {
        (Some(v), _) => match v.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Selector::Version(n)),
            _ => Err(Failure::usage(format!(
                "--version {v:?}: a version is a whole number from 1"
            ))),
        },
        (None, Some(l)) => Label::parse(l).map(Selector::Label).map_err(usage),
        (None, None) => Ok(Selector::Latest),
    }
}
