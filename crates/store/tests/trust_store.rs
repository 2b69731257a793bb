//! The rollback rule on the embedded local store, which carries versions
//! and modification times as SSM does: a value copied over a later version
//! is refused. (Concurrent writers are tested through the CLI against moto,
//! where the proxy can hold one writer's PutParameter: `trust_cli.rs`.)

use std::time::Duration;

use sidekey_envelope::Secret;
use sidekey_model::{Environment, Key, Prefix, Selector, Service};
use sidekey_store::{
    load_master_key, Keys, LocalParams, ParamType, Params, PutOptions, PutRequest, Store,
    StoreError,
};

fn store(dir: &std::path::Path) -> Store {
    let master = load_master_key(dir, true).expect("key").expect("created");
    Store::from_parts(
        Params::Local(LocalParams::new(dir, "tester")),
        Keys::Local(master),
        Prefix::default(),
        Duration::from_secs(20),
    )
}

fn names() -> (Environment, Service, Key) {
    (
        Environment::parse("prod").unwrap(),
        Service::parse("api").unwrap(),
        Key::parse("DB_PASSWORD").unwrap(),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn local_rollback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir.path().join("store"));
    let (env, svc, key) = names();
    rt().block_on(async {
        s.put(
            &env,
            &svc,
            &key,
            &Secret::from_slice(b"first-value"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        let name = "/sidekey/prod/api/DB_PASSWORD";
        let old = s.params().get(name, None, s.retry()).await.unwrap();
        s.put(
            &env,
            &svc,
            &key,
            &Secret::from_slice(b"second-value"),
            &PutOptions::default(),
        )
        .await
        .unwrap();
        let retry = s.retry();
        let v = s
            .params()
            .put(
                &PutRequest {
                    name,
                    value: old.value.expose(),
                    param_type: ParamType::String,
                    kms_key: None,
                    overwrite: true,
                },
                retry,
            )
            .await
            .unwrap();
        assert_eq!(v, 3);
        match s.get(&env, &svc, &key, &Selector::Latest).await {
            Err(StoreError::Refused { name: n, rule }) => {
                assert_eq!(n, name);
                assert!(
                    rule.starts_with("envelope sealed for version 1 but stored as version 3"),
                    "{rule}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Version 1 itself is still what it was.
        let v1 = s
            .get(&env, &svc, &key, &Selector::Version(1))
            .await
            .unwrap();
        assert_eq!(v1.value.expose(), b"first-value");
    });
}
