//! The dotenv reader and writer (`sidekey_wire::dotenv`: `sidekey import`
//! reads with `parse`, `export` and the agent write with `write_line`).
//! Checked besides no panic:
//!
//! - the input as a document: an error names the line (within the
//!   document) and the rule in one line; the entries it reads, written
//!   back with `write_line` (those it does not refuse), read back as the
//!   same keys and values in the same order;
//! - the input as one value: when `write_line` does not refuse it, the
//!   line reads back as exactly that value, and a refusal leaves the
//!   output untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekey_fuzz::one_line;
use sidekey_model::Key;
use sidekey_wire::dotenv::{line_len, parse, write_line};

fn read(text: &str) -> Result<Vec<(Key, String)>, sidekey_wire::dotenv::DotenvError> {
    parse(text, Key::parse).map(|entries| {
        entries
            .into_iter()
            .map(|(k, v)| (k, v.as_str().to_owned()))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    match read(text) {
        Ok(entries) => {
            let mut out = Vec::new();
            let mut kept = Vec::new();
            for (key, value) in entries {
                if write_line(&mut out, key.as_str(), &value).is_ok() {
                    kept.push((key, value));
                }
            }
            let written = String::from_utf8(out).expect("write_line writes UTF-8");
            match read(&written) {
                Ok(again) => assert_eq!(again, kept, "read back differently: {written:?}"),
                Err(e) => panic!("what write_line wrote does not read back ({e}): {written:?}"),
            }
        }
        Err(e) => {
            one_line(&e);
            let lines = text.split('\n').count();
            assert!(
                (1..=lines).contains(&e.line),
                "error on line {} of a {lines}-line document",
                e.line
            );
        }
    }

    let mut out = b"# kept\n".to_vec();
    match write_line(&mut out, "VALUE", text) {
        Ok(()) => {
            assert_eq!(out.len(), 7 + line_len("VALUE", text), "line_len");
            let written = String::from_utf8(out).expect("write_line writes UTF-8");
            match read(&written) {
                Ok(entries) => {
                    assert_eq!(entries.len(), 1, "{written:?}");
                    assert_eq!(entries[0].0.as_str(), "VALUE");
                    assert_eq!(entries[0].1, text, "the value changed: {written:?}");
                }
                Err(e) => panic!("a written value does not read back ({e}): {written:?}"),
            }
        }
        Err(refusal) => {
            one_line(&refusal);
            assert_eq!(out, b"# kept\n", "a refused value left bytes behind");
        }
    }
});
