//! The sidekey model: names and their rules, SSM parameter paths, explicit
//! picks, environment layers and merge precedence.
//!
//! This crate is pure logic shared by the injector, the agent and the CLI.
//! It must not depend on tokio, the AWS SDK, HTTP, Kubernetes types or any
//! I/O (files, network, process environment); its one runtime dependency is
//! `thiserror` (the wire formats, JSON text, RFC 3339 and dotenv, are
//! `sidekey-wire`'s). Everything here is deterministic and tested with tables and
//! property tests.
//!
//! Nothing is normalised: a name that breaks its rule is rejected with a
//! one-line message naming the kind, the (escaped) input and the rule.

pub mod annotations;
mod merge;
mod name;
mod path;
mod pick;
mod quote;
pub use quote::Quoted;

pub use merge::{layers, Merge, Rank};
pub use name::{
    parse_environments, parse_services, Environment, Key, Label, NameError, NameKind, Prefix,
    Service,
};
pub use path::{environment_path, prefix_path, service_path, ParamPath, PathError};
pub use pick::{parse_pick, parse_picks, Pick, PickError, Selector};
