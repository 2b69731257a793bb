//! `sidekey audit FILE... --html OUT`: one self-contained review page.
//!
//! The page is built from audit records only (they carry no values). Every
//! piece of record text is HTML-escaped: a record file may have been written
//! by an attacker. A Content-Security-Policy meta forbids every network
//! load; the only script is the static one below (filter and sort), which
//! reads no record data except what is already in the escaped table cells.
//!
//! The timeline is inline SVG drawn here, not a JavaScript chart library:
//! it is a few kilobytes, needs nothing at view time (it also prints and
//! shows with scripts off), and a bucketed grid of counts is all it needs.
//!
//! Big inputs are aggregated so the page stays small: the timeline has at
//! most [`BUCKETS`] columns and [`MAX_LANES`] lanes, fetches are grouped per
//! (key, pod, version), and each list keeps its newest [`MAX_ROWS`] rows,
//! saying how many more there were.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use sidekey_audit::{Component, Outcome, Record, VerifyError, VerifySummary};
use sidekey_wire::rfc3339::unix_seconds_text as ts_text;

/// Timeline columns.
pub const BUCKETS: usize = 96;
/// Timeline lanes (environments); the rest go to one "other" lane.
pub const MAX_LANES: usize = 24;
/// Rows kept per list (the newest); the page says how many were left out.
pub const MAX_ROWS: usize = 500;
/// Rows kept per table of one key.
pub const MAX_KEY_ROWS: usize = 50;
/// Keys shown (those with the most records); the page names how many more.
pub const MAX_KEYS: usize = 100;

/// CLI events that write a version of a secret.
const WRITES: [&str; 6] = ["put", "rotate", "rekey", "import", "env-copy", "delete"];

/// The chain status of one input.
pub struct Chain {
    pub name: String,
    pub status: Result<VerifySummary, VerifyError>,
}

/// Verifies each input file (the same check as `sidekey audit verify`).
pub fn chains(files: &[PathBuf]) -> Vec<Chain> {
    files
        .iter()
        .map(|f| Chain {
            name: f.display().to_string(),
            status: sidekey_audit::verify_file(f),
        })
        .collect()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

fn secrets(r: &Record) -> String {
    r.secrets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(r: &Record) -> Option<u64> {
    r.time()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

fn is_bad(o: Outcome) -> bool {
    matches!(o, Outcome::Denied | Outcome::Failure)
}

/// Rows kept: the newest `MAX_ROWS` of `rows` (oldest first in, newest
/// first out) and how many were dropped.
fn newest<T>(rows: Vec<T>) -> (Vec<T>, usize) {
    newest_n(rows, MAX_ROWS)
}

fn newest_n<T>(rows: Vec<T>, max: usize) -> (Vec<T>, usize) {
    let dropped = rows.len().saturating_sub(max);
    let mut kept: Vec<T> = rows.into_iter().skip(dropped).collect();
    kept.reverse();
    (kept, dropped)
}

/// A table: a caption, sortable headers, rows of escaped cells; each row
/// carries its outcome for the outcome filter.
struct Table {
    class: &'static str,
    headers: &'static [&'static str],
    rows: Vec<(Outcome, Vec<String>)>,
    dropped: usize,
}

impl Table {
    fn render(&self, out: &mut String) {
        let _ = write!(out, "<table class=\"t {}\"><thead><tr>", self.class);
        for (i, h) in self.headers.iter().enumerate() {
            let _ = write!(
                out,
                "<th scope=\"col\"><button type=\"button\" class=\"sort\" data-col=\"{i}\">{h}</button></th>"
            );
        }
        out.push_str("</tr></thead><tbody>");
        for (outcome, cells) in &self.rows {
            let _ = write!(out, "<tr data-o=\"{}\"", outcome.as_str());
            if is_bad(*outcome) {
                out.push_str(" class=\"bad\"");
            }
            out.push('>');
            for c in cells {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table>");
        if self.rows.is_empty() {
            out.push_str("<p class=\"none\">None.</p>");
        }
        if self.dropped > 0 {
            let _ = write!(
                out,
                "<p class=\"more\">{} more (older) not shown: narrow with --env, --key, --pod, --outcome or --since.</p>",
                self.dropped
            );
        }
    }
}

/// Per (environment, service/key): versions written and fetches.
#[derive(Default)]
struct KeyView {
    records: u64,
    writes: Vec<(Outcome, Vec<String>)>,
    /// (pod, version) -> (first ts, last ts, count, outcome of last)
    fetched: BTreeMap<(String, String), (String, String, u64, Outcome)>,
}

#[derive(Default)]
struct EnvView {
    /// pod -> (fetches, last ts, versions seen)
    pods: BTreeMap<String, (u64, String, BTreeSet<String>)>,
    decisions: Vec<(Outcome, Vec<String>)>,
    denials: Vec<(Outcome, Vec<String>)>,
}

/// Renders the page. `filters` names the filters applied (shown at the
/// top); `records` are the selected records, oldest first.
pub fn render(chains: &[Chain], filters: &[(&str, String)], records: &[Record]) -> String {
    let mut out = String::with_capacity(256 * 1024);
    out.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; connect-src 'none'; form-action 'none'; base-uri 'none'\">",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        "<title>sidekey audit review</title><style>"
    ));
    out.push_str(include_str!("audit_html/page.css"));
    out.push_str("</style></head><body><header><h1>sidekey audit review</h1>");

    // Inputs and chains.
    out.push_str("<section id=\"chains\" aria-label=\"Chain status\">");
    if chains.is_empty() {
        out.push_str("<p class=\"banner warn\">Records read from standard input: the chain was not verified.</p>");
    }
    for c in chains {
        match &c.status {
            Ok(s) => {
                let _ = write!(
                    out,
                    "<p class=\"banner ok\"><strong>{}</strong>: chain intact, {} records. Last hash to keep elsewhere: <code>{}</code></p>",
                    esc(&c.name),
                    s.records,
                    esc(&s.last_hash)
                );
            }
            Err(e) => {
                let line = e
                    .line()
                    .map(|l| format!("first broken line {l}"))
                    .unwrap_or_else(|| "cannot read".to_owned());
                let _ = write!(
                    out,
                    "<p class=\"banner broken\" role=\"alert\"><strong>{}</strong>: CHAIN BROKEN, {}: {}</p>",
                    esc(&c.name),
                    line,
                    esc(&e.to_string())
                );
            }
        }
    }
    out.push_str("</section>");
    let denied = records
        .iter()
        .filter(|r| r.outcome == Outcome::Denied)
        .count();
    let failed = records
        .iter()
        .filter(|r| r.outcome == Outcome::Failure)
        .count();
    let _ = write!(
        out,
        "<p id=\"summary\">{} records shown ({} denied, {} failed)",
        records.len(),
        denied,
        failed
    );
    if let (Some(a), Some(b)) = (records.first(), records.last()) {
        let _ = write!(out, ", {} to {}", esc(&a.ts), esc(&b.ts));
    }
    if !filters.is_empty() {
        out.push_str(". Filters: ");
        let f: Vec<String> = filters
            .iter()
            .map(|(k, v)| format!("--{k} {}", esc(v)))
            .collect();
        out.push_str(&f.join(" "));
    }
    out.push_str(".</p></header>");

    // Client-side controls.
    out.push_str(concat!(
        "<nav id=\"controls\" aria-label=\"Filter\"><label for=\"q\">Filter rows</label> ",
        "<input id=\"q\" type=\"search\" placeholder=\"pod, key, user, reason...\"> ",
        "<label for=\"o\">Outcome</label> <select id=\"o\"><option value=\"\">any</option>",
        "<option>success</option><option>denied</option><option>failure</option><option>skipped</option></select> ",
        "<span id=\"count\" aria-live=\"polite\"></span></nav><main>"
    ));

    timeline(&mut out, records);

    // Aggregate per key and per environment.
    let mut keys: BTreeMap<(String, String), KeyView> = BTreeMap::new();
    let mut envs: BTreeMap<String, EnvView> = BTreeMap::new();
    let mut events = Vec::new();
    for r in records {
        let env = opt(&r.environment).to_owned();
        let row = vec![
            r.ts.clone(),
            r.component.as_str().to_owned(),
            r.event.clone(),
            env.clone(),
            opt(&r.pod).to_owned(),
            opt(&r.actor).to_owned(),
            secrets(r),
            r.outcome.as_str().to_owned(),
            opt(&r.reason).to_owned(),
        ];
        let write = r.component == Component::Cli && WRITES.contains(&r.event.as_str());
        let fetch = r.event == "fetch";
        for s in &r.secrets {
            let version = s.version.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let k = keys
                .entry((env.clone(), format!("{}/{}", s.service, s.key)))
                .or_default();
            k.records += 1;
            if write {
                k.writes.push((
                    r.outcome,
                    vec![
                        version.clone(),
                        r.event.clone(),
                        opt(&r.actor).to_owned(),
                        r.ts.clone(),
                        r.outcome.as_str().to_owned(),
                    ],
                ));
            } else if fetch || r.component == Component::Cli {
                // Pods' fetches, and the CLI's reads (reveal, export, exec)
                // by their actor.
                let who = if fetch {
                    opt(&r.pod).to_owned()
                } else {
                    format!("{} by {}", r.event, opt(&r.actor))
                };
                let e = k
                    .fetched
                    .entry((who, version))
                    .or_insert_with(|| (r.ts.clone(), r.ts.clone(), 0, r.outcome));
                e.1 = r.ts.clone();
                e.2 += 1;
                e.3 = r.outcome;
            }
        }
        let e = envs.entry(env).or_default();
        if fetch {
            let p = e
                .pods
                .entry(opt(&r.pod).to_owned())
                .or_insert_with(|| (0, String::new(), BTreeSet::new()));
            p.0 += 1;
            p.1 = r.ts.clone();
            for s in &r.secrets {
                p.2.insert(s.to_string());
            }
        }
        if r.component == Component::Injector {
            let ns = opt(&r.namespace);
            e.decisions.push((
                r.outcome,
                vec![
                    r.ts.clone(),
                    format!("{ns}/{}", opt(&r.pod)),
                    opt(&r.actor).to_owned(),
                    r.outcome.as_str().to_owned(),
                    opt(&r.reason).to_owned(),
                ],
            ));
        }
        if is_bad(r.outcome) {
            e.denials.push((r.outcome, row.clone()));
        }
        events.push((r.outcome, row));
    }

    // Per key.
    out.push_str("<section id=\"keys\"><h2>Per key</h2>");
    let mut keys: Vec<_> = keys.into_iter().collect();
    let hidden_keys = keys.len().saturating_sub(MAX_KEYS);
    if hidden_keys > 0 {
        keys.sort_by_key(|(_, k)| std::cmp::Reverse(k.records));
        keys.truncate(MAX_KEYS);
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = write!(
            out,
            "<p class=\"more\">The {MAX_KEYS} keys with the most records are shown; {hidden_keys} more not shown: narrow with --key, --service or --env.</p>"
        );
    }
    for ((env, key), k) in keys {
        let _ = write!(
            out,
            "<details class=\"key\" open><summary>{} in {}</summary><h3>Versions written</h3>",
            esc(&key),
            esc(&env)
        );
        let (rows, dropped) = newest_n(k.writes, MAX_KEY_ROWS);
        Table {
            class: "writes",
            headers: &["VERSION", "EVENT", "BY", "WHEN", "OUTCOME"],
            rows,
            dropped,
        }
        .render(&mut out);
        out.push_str("<h3>Fetched or read, by pod or reader and version</h3>");
        let mut fetched: Vec<_> = k.fetched.into_iter().collect();
        fetched.sort_by(|a, b| (a.1).1.cmp(&(b.1).1));
        let (rows, dropped) = newest_n(
            fetched
                .into_iter()
                .map(|((pod, v), (first, last, n, o))| {
                    (o, vec![pod, v, first, last, n.to_string()])
                })
                .collect(),
            MAX_KEY_ROWS,
        );
        Table {
            class: "fetched",
            headers: &["POD OR READER", "VERSION", "FIRST", "LAST", "COUNT"],
            rows,
            dropped,
        }
        .render(&mut out);
        out.push_str("</details>");
    }
    out.push_str("</section>");

    // Per environment.
    out.push_str("<section id=\"envs\"><h2>Per environment</h2>");
    for (env, e) in envs {
        let _ = write!(
            out,
            "<details class=\"env\" open><summary>{}</summary><h3>Pods that fetched</h3>",
            esc(&env)
        );
        let mut pods: Vec<_> = e.pods.into_iter().collect();
        pods.sort_by(|a, b| (a.1).1.cmp(&(b.1).1));
        let (rows, dropped) = newest(
            pods.into_iter()
                .map(|(pod, (n, last, v))| {
                    (
                        Outcome::Success,
                        vec![
                            pod,
                            n.to_string(),
                            last,
                            v.into_iter().collect::<Vec<_>>().join(", "),
                        ],
                    )
                })
                .collect(),
        );
        Table {
            class: "pods",
            headers: &["POD", "FETCHES", "LAST", "SECRETS"],
            rows,
            dropped,
        }
        .render(&mut out);
        out.push_str("<h3>Injector decisions</h3>");
        let (rows, dropped) = newest(e.decisions);
        Table {
            class: "decisions",
            headers: &["WHEN", "POD", "REQUESTED BY", "OUTCOME", "REASON"],
            rows,
            dropped,
        }
        .render(&mut out);
        out.push_str("<h3>Denials and failures</h3>");
        let (rows, dropped) = newest(e.denials);
        Table {
            class: "denials",
            headers: EVENT_HEADERS,
            rows,
            dropped,
        }
        .render(&mut out);
        out.push_str("</details>");
    }
    out.push_str("</section>");

    out.push_str("<section id=\"events\"><h2>All records</h2>");
    let (rows, dropped) = newest(events);
    Table {
        class: "all",
        headers: EVENT_HEADERS,
        rows,
        dropped,
    }
    .render(&mut out);
    out.push_str("</section></main><script>");
    out.push_str(include_str!("audit_html/page.js"));
    out.push_str("</script></body></html>\n");
    out
}

const EVENT_HEADERS: &[&str] = &[
    "TIME",
    "COMPONENT",
    "EVENT",
    "ENV",
    "POD",
    "ACTOR",
    "SECRETS",
    "OUTCOME",
    "REASON",
];

/// The timeline: lanes are environments, columns are equal time buckets;
/// a cell's shade is its record count, a red mark shows denials or
/// failures in that bucket.
fn timeline(out: &mut String, records: &[Record]) {
    out.push_str("<section id=\"timeline\"><h2>Timeline</h2>");
    let times: Vec<(u64, &Record)> = records
        .iter()
        .filter_map(|r| secs(r).map(|t| (t, r)))
        .collect();
    let (Some(lo), Some(hi)) = (
        times.iter().map(|t| t.0).min(),
        times.iter().map(|t| t.0).max(),
    ) else {
        out.push_str("<p class=\"none\">No records with a time.</p></section>");
        return;
    };
    let span = (hi - lo).max(1) + 1;
    let bucket = span.div_ceil(BUCKETS as u64).max(1);
    let mut by_env: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, r) in &times {
        *by_env.entry(opt(&r.environment)).or_default() += 1;
    }
    let mut lanes: Vec<&str> = by_env.keys().copied().collect();
    lanes.sort_by_key(|l| std::cmp::Reverse(by_env[l]));
    let other = lanes.len() > MAX_LANES;
    lanes.truncate(if other { MAX_LANES - 1 } else { MAX_LANES });
    lanes.sort();
    let n_lanes = lanes.len() + usize::from(other);
    // counts[lane][bucket] = (all, bad)
    let mut counts = vec![vec![(0u64, 0u64); BUCKETS]; n_lanes];
    for (t, r) in &times {
        let lane = lanes
            .binary_search(&opt(&r.environment))
            .unwrap_or(n_lanes - 1);
        let b = (((t - lo) / bucket) as usize).min(BUCKETS - 1);
        counts[lane][b].0 += 1;
        if is_bad(r.outcome) {
            counts[lane][b].1 += 1;
        }
    }
    let max = counts
        .iter()
        .flatten()
        .map(|c| c.0)
        .max()
        .unwrap_or(1)
        .max(1);
    const LABEL: usize = 140;
    const CELL: usize = 8;
    const ROW: usize = 22;
    let width = LABEL + BUCKETS * CELL + 10;
    let height = n_lanes * ROW + 30;
    let _ = write!(
        out,
        "<svg role=\"img\" aria-labelledby=\"tl-desc\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"tl-desc\">Records per environment over time; red marks are denials or failures</title>"
    );
    for (i, row) in counts.iter().enumerate() {
        let y = i * ROW;
        let name = lanes.get(i).copied().unwrap_or("(other environments)");
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{}\" class=\"lane\">{}</text>",
            y + 15,
            esc(name)
        );
        for (b, &(n, bad)) in row.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let x = LABEL + b * CELL;
            let shade = 0.2 + 0.8 * (n as f64 / max as f64);
            let from = ts_text(lo + b as u64 * bucket);
            let _ = write!(
                out,
                "<rect x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#2b6cb0\" fill-opacity=\"{shade:.2}\"><title>{}: {n} records, {bad} denied or failed, from {from}</title></rect>",
                y + 2,
                CELL - 1,
                ROW - 6,
                esc(name)
            );
            if bad > 0 {
                let _ = write!(
                    out,
                    "<rect class=\"badmark\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"5\" fill=\"#c53030\"/>",
                    y + ROW - 5,
                    CELL - 1
                );
            }
        }
    }
    let axis = n_lanes * ROW + 18;
    let _ = write!(
        out,
        "<text x=\"{LABEL}\" y=\"{axis}\" class=\"axis\">{}</text><text x=\"{}\" y=\"{axis}\" class=\"axis\" text-anchor=\"end\">{}</text></svg>",
        ts_text(lo),
        LABEL + BUCKETS * CELL,
        ts_text(hi)
    );
    let _ = write!(
        out,
        "<p class=\"note\">Each column is {}; darker means more records.</p></section>",
        humantime::format_duration(std::time::Duration::from_secs(bucket))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            esc("<script>a&'\"</script>\u{7}"),
            "&lt;script&gt;a&amp;&#39;&quot;&lt;/script&gt;\u{FFFD}"
        );
    }
}
