//! sidekey ops CLI.
