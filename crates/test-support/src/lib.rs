//! Dev-only helpers for sidekey's tests and benchmarks: real parts on loopback, no fakes.
//!
//! - [`Moto`]: a moto server (the AWS emulator) on `127.0.0.1`, one per test or one shared
//!   per test process.
//! - [`FaultProxy`]: an HTTP/1.1 proxy in front of moto that counts calls per AWS operation
//!   (`X-Amz-Target`) and injects throttling, 5xx, delays, dropped connections or any JSON error.
//! - [`sdk_config`], [`ssm_client`], [`kms_client`], [`create_kms_key`], [`create_kms_alias`]:
//!   SDK clients that can only talk to the endpoint they are given (explicit endpoint, region
//!   `us-east-1`, static credentials `testing`/`testing`, never the instance-metadata service).
//! - [`aws_env`], [`run()`], [`assert_no_secret`]: run the project's binaries with a clean
//!   environment and check their output does not leak secret values.
//!
//! This crate is a `[dev-dependencies]` entry only. It must not depend on any other sidekey
//! crate (so every crate can use it in its tests) and must never reach anything but loopback.

mod aws;
mod http1;
mod moto;
mod proxy;
pub mod registry;
mod run;

pub use aws::{
    aws_env, create_kms_alias, create_kms_key, kms_client, sdk_config, ssm_client, REGION,
    TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY,
};
pub use moto::Moto;
pub use proxy::{Fault, FaultProxy, FaultRule};
pub use run::{assert_no_secret, run, run_with_timeout, Output, RUN_TIMEOUT};

/// A test that cannot run here (not root, no tmpfs): on a developer's
/// machine it says why and the caller returns; in CI (`CI` set, as
/// `.ci/run` runs) it fails, so a test never passes there without running.
pub fn skip(reason: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("cannot run in CI: {reason}");
    }
    eprintln!("skipped: {reason}");
}
