//! The wire formats sidekey writes and reads by hand, each in one place:
//!
//! - [`json`]: JSON string text, byte for byte as `serde_json` writes it,
//!   and descriptions of `serde_json` errors that never quote the input;
//! - [`rfc3339`]: UTC times as RFC 3339 text, written and read;
//! - [`dotenv`]: `KEY='value'` lines that stay inert in every reader, and
//!   the parser of `sidekey import`.
//!
//! Pure: no I/O, no async, no clock; its only dependencies are
//! `serde_json` (for the error type it describes) and `zeroize` (the
//! dotenv parser's copies of values).

pub mod dotenv;
pub mod json;
pub mod rfc3339;
