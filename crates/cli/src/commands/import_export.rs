//! `import` (a dotenv file into one service) and `export` (one service as
//! dotenv or JSON on standard output, audited before it is printed; every
//! buffer that held values is wiped).

use std::io::Write;
use std::path::Path;

use sidekey_envelope::Secret;
use sidekey_model::{Environment, Key, Service};
use sidekey_store::PutOptions;

use super::input::{read_text_input, zeroize_string, zeroize_vec};
use super::{store_failure, Ctx};
use crate::args::ExportFormat;
use crate::audit::Pending;
use crate::{dotenv, Failure};

impl Ctx {
    pub(super) async fn import(
        &mut self,
        env: &Environment,
        service: &Service,
        file: &Path,
    ) -> Result<(), Failure> {
        let text = read_text_input(file)?;
        let items =
            dotenv::parse(&text).map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
        if items.is_empty() {
            return Err(Failure::usage(format!(
                "{}: no KEY=value lines",
                file.display()
            )));
        }
        let mut pending = self.pending("import", env);
        let refs: Vec<(Key, &Secret)> = items.iter().map(|(k, v)| (k.clone(), v)).collect();
        let result = self
            .store
            .put_many(env, service, &refs, &PutOptions::default())
            .await
            .map(|written| {
                for w in &written {
                    pending.secret(service.as_str(), w.path.key().as_str(), Some(w.version));
                }
                println!("{env}/{service}: {} secrets imported", written.len());
            });
        self.close(pending, result.map_err(store_failure))
    }

    pub(super) async fn export(
        &mut self,
        env: &Environment,
        service: &Service,
        format: ExportFormat,
    ) -> Result<(), Failure> {
        let mut pending = self.pending("export", env);
        let rendered = self.render_export(env, service, format, &mut pending).await;
        let mut out = match rendered {
            Ok(out) => out,
            Err(e) => return self.close(pending, Err(e)),
        };
        // The record first: values are printed only once the export is on
        // the audit trail; if the record cannot be written, nothing is.
        if let Err(e) = self.close(pending, Ok(())) {
            zeroize_vec(&mut out);
            return Err(e);
        }
        let mut stdout = std::io::stdout().lock();
        let written = stdout.write_all(&out).and_then(|()| stdout.flush());
        // The buffer held values: wipe it.
        zeroize_vec(&mut out);
        written.map_err(|e| Failure::failed(format!("cannot write to standard output: {e}")))
    }

    /// The export's bytes, or why there are none (nothing half-rendered
    /// is kept: a buffer given up is wiped).
    async fn render_export(
        &mut self,
        env: &Environment,
        service: &Service,
        format: ExportFormat,
        pending: &mut Pending,
    ) -> Result<Vec<u8>, Failure> {
        let values = self
            .store
            .read_service(env, service)
            .await
            .map_err(store_failure)?;
        // Room for every line up front: a growing buffer would leave copies
        // of values in freed memory.
        let mut out: Vec<u8> = Vec::with_capacity(
            values
                .iter()
                .map(|r| sidekey_wire::dotenv::line_len(r.path.key().as_str(), "") + r.value.len())
                .sum(),
        );
        let mut object = serde_json::Map::new();
        let mut failure = None;
        for r in &values {
            pending.secret(service.as_str(), r.path.key().as_str(), Some(r.version));
            let Some(text) = r.value.expose_str() else {
                failure = Some(Failure::failed(format!(
                    "{} is not UTF-8 text and cannot be exported as {}: read it with `sidekey get --reveal`",
                    r.path,
                    match format {
                        ExportFormat::Dotenv => "dotenv",
                        ExportFormat::Json => "JSON",
                    }
                )));
                break;
            };
            match format {
                ExportFormat::Dotenv => {
                    if let Err(refusal) = dotenv::write_line(&mut out, r.path.key().as_str(), text)
                    {
                        failure = Some(Failure::failed(format!(
                            "{}: {refusal} (--format json)",
                            r.path
                        )));
                        break;
                    }
                }
                ExportFormat::Json => {
                    object.insert(
                        r.path.key().to_string(),
                        serde_json::Value::String(text.to_owned()),
                    );
                }
            }
        }
        if failure.is_none() && format == ExportFormat::Json {
            match serde_json::to_vec_pretty(&object) {
                Ok(mut json) => {
                    json.push(b'\n');
                    zeroize_vec(&mut out);
                    out = json;
                }
                Err(e) => failure = Some(Failure::failed(e.to_string())),
            }
        }
        for v in object.values_mut() {
            if let serde_json::Value::String(s) = v {
                zeroize_string(s);
            }
        }
        match failure {
            Some(f) => {
                zeroize_vec(&mut out);
                Err(f)
            }
            None => Ok(out),
        }
    }
}
