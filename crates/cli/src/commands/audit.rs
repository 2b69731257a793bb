//! `audit`: reviewing audit records (filters, table, JSON, `--html`) and
//! `audit verify` (the hash chain).

use std::time::SystemTime;

use sidekey_audit::{Filter, Outcome};

use super::usage;
use crate::args::{AuditArgs, AuditCommand, Global, Output};
use crate::Failure;

pub(super) fn audit_command(global: &Global, args: AuditArgs) -> Result<(), Failure> {
    if let Some(AuditCommand::Verify { files }) = args.verify {
        let mut failed = 0;
        for file in &files {
            let reader = std::fs::File::open(file)
                .map(std::io::BufReader::new)
                .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?;
            match sidekey_audit::verify(reader) {
                Ok(summary) => println!(
                    "{}: {} records, chain intact, last hash {} (keep it elsewhere: removing or editing the last line is only caught against it)",
                    file.display(),
                    summary.records,
                    summary.last_hash
                ),
                Err(e) => {
                    failed += 1;
                    eprintln!("sidekey: {}: {e}", file.display());
                }
            }
        }
        if failed > 0 {
            return Err(Failure::failed(format!(
                "audit verification failed for {failed} of {} files",
                files.len()
            )));
        }
        return Ok(());
    }
    // `retried` is not an outcome of its own: it keeps the starts that AWS
    // slowed down (retries or throttled calls in the agent's `aws` counts),
    // whatever their outcome.
    let retried = args.outcome.as_deref() == Some("retried");
    let outcome = args
        .outcome
        .as_deref()
        .filter(|_| !retried)
        .map(|o| {
            o.parse::<Outcome>().map_err(|_| {
                Failure::usage(format!(
                    "--outcome {o:?}: use success, denied, failure, skipped or retried"
                ))
            })
        })
        .transpose()?;
    let since = args
        .since
        .as_deref()
        .map(|s| sidekey_audit::parse_since(s, SystemTime::now()).map_err(usage))
        .transpose()?;
    let filter = Filter {
        environment: args.environment,
        service: args.service,
        key: args.key,
        pod: args.pod,
        outcome,
        retried,
        since,
    };
    let mut records = Vec::new();
    if args.files.is_empty() {
        let stdin = std::io::stdin();
        records.extend(
            sidekey_audit::read_records(stdin.lock())
                .map_err(|e| Failure::failed(format!("standard input: {e}")))?,
        );
    }
    for file in &args.files {
        let reader = std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| Failure::failed(format!("cannot read {}: {e}", file.display())))?;
        records.extend(
            sidekey_audit::read_records(reader)
                .map_err(|e| Failure::failed(format!("{}: {e}", file.display())))?,
        );
    }
    let mut selected: Vec<_> = records.into_iter().filter(|r| filter.matches(r)).collect();
    selected.sort_by(|a, b| a.ts.cmp(&b.ts));
    if let Some(out) = &args.html {
        return crate::audit::write_html(out, &args.files, &filter, &selected);
    }
    match global.output {
        Output::Text => print!("{}", sidekey_audit::render_table(&selected)),
        Output::Json => print!("{}", sidekey_audit::render_json(&selected)),
    }
    Ok(())
}
