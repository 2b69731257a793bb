//! The store against moto (SSM and KMS), through the fault proxy where a
//! test needs a lost answer: PutParameter retried after a lost answer makes
//! no second version.
//!
//! Every test uses the shared moto server with names of its own (an
//! environment per test), so they run in parallel.

use std::time::Duration;

use aws_smithy_types::retry::RetryConfig;
use sidekey_envelope::Secret;
use sidekey_model::{Environment, Key, Prefix, Selector, Service};
use sidekey_store::{Keys, Params, PutOptions, SsmParams, Store};
use sidekey_test_support::{create_kms_key, sdk_config, Fault, FaultProxy, FaultRule, Moto};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// SSM and KMS clients on `endpoint` with the SDK's retries off, as
/// `Store::open` builds them (the store's own loop retries).
async fn clients(endpoint: &str) -> (aws_sdk_ssm::Client, aws_sdk_kms::Client) {
    let sdk = sdk_config(endpoint).await;
    let ssm = aws_sdk_ssm::config::Builder::from(&sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    let kms = aws_sdk_kms::config::Builder::from(&sdk)
        .retry_config(RetryConfig::disabled())
        .build();
    (
        aws_sdk_ssm::Client::from_conf(ssm),
        aws_sdk_kms::Client::from_conf(kms),
    )
}

/// A store on `endpoint` (moto, or the proxy in front of it) with `kms_key`.
async fn store(endpoint: &str, kms_key: &str) -> Store {
    let (ssm, kms) = clients(endpoint).await;
    Store::from_parts(
        Params::Ssm(SsmParams::new(ssm)),
        Keys::Kms {
            client: kms,
            key: kms_key.to_owned(),
        },
        Prefix::default(),
        Duration::from_secs(60),
    )
}

/// The versions SSM holds for `name`, read directly from moto.
async fn versions(moto: &Moto, name: &str) -> Vec<i64> {
    let (ssm, _) = clients(moto.endpoint()).await;
    let mut all = Vec::new();
    let mut token = None;
    loop {
        let out = ssm
            .get_parameter_history()
            .name(name)
            .set_next_token(token)
            .send()
            .await
            .unwrap();
        all.extend(out.parameters().iter().map(|p| p.version()));
        match out.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    all.sort_unstable();
    all
}

fn names(env: &str) -> (Environment, Service) {
    (
        Environment::parse(env).unwrap(),
        Service::parse("api").unwrap(),
    )
}

#[test]
fn a_put_whose_answer_is_lost_is_not_written_twice() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let s = store(&proxy.endpoint(), &kms_key).await;
        let (env, svc) = names("lostanswer");
        let key = Key::parse("DB_PASSWORD").unwrap();
        let name = "/sidekey/lostanswer/api/DB_PASSWORD";

        for (round, value) in [b"first-value".as_slice(), b"second-value"]
            .into_iter()
            .enumerate()
        {
            let expected = round as u64 + 1;
            // The write reaches SSM; its answer never comes back.
            proxy.inject(FaultRule::on("PutParameter", Fault::DropAnswer).times(1));
            proxy.reset_counts();
            let written = s
                .put(
                    &env,
                    &svc,
                    &key,
                    &Secret::from_slice(value),
                    &PutOptions::default(),
                )
                .await
                .unwrap();
            assert_eq!(written.version, expected);
            // Not sent again: the current version was the envelope sent.
            assert_eq!(proxy.count("PutParameter"), 1, "{:?}", proxy.counts());
            assert_eq!(proxy.count("GetParameter"), 1, "{:?}", proxy.counts());
            assert_eq!(
                versions(moto, name).await,
                (1..=expected as i64).collect::<Vec<_>>()
            );
            let read = s.get(&env, &svc, &key, &Selector::Latest).await.unwrap();
            assert_eq!((read.value.expose(), read.version), (value, expected));
        }

        // A native SecureString likewise.
        let native = Key::parse("API_TOKEN").unwrap();
        proxy.inject(FaultRule::on("PutParameter", Fault::DropAnswer).times(1));
        proxy.reset_counts();
        let written = s
            .put(
                &env,
                &svc,
                &native,
                &Secret::from_slice(b"native-value"),
                &PutOptions {
                    native: true,
                    label: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(written.version, 1);
        assert_eq!(proxy.count("PutParameter"), 1, "{:?}", proxy.counts());
        assert_eq!(
            versions(moto, "/sidekey/lostanswer/api/API_TOKEN").await,
            [1]
        );
        let read = s.get(&env, &svc, &native, &Selector::Latest).await.unwrap();
        assert_eq!(read.value.expose(), b"native-value");
    });
}

#[test]
fn a_put_that_failed_before_the_write_is_sent_again_once() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let s = store(&proxy.endpoint(), &kms_key).await;
        let (env, svc) = names("failedput");
        let key = Key::parse("DB_PASSWORD").unwrap();
        let name = "/sidekey/failedput/api/DB_PASSWORD";

        // A 500 from the proxy itself: nothing reached SSM. The check finds
        // no such parameter, and the write is sent again: one version.
        proxy.inject(FaultRule::on("PutParameter", Fault::ServerError).times(1));
        proxy.reset_counts();
        let written = s
            .put(
                &env,
                &svc,
                &key,
                &Secret::from_slice(b"value-one"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(written.version, 1);
        assert_eq!(proxy.count("PutParameter"), 2, "{:?}", proxy.counts());
        assert_eq!(proxy.count("GetParameter"), 1, "{:?}", proxy.counts());
        assert_eq!(versions(moto, name).await, [1]);

        // Again over an existing version: the check finds another value.
        proxy.inject(FaultRule::on("PutParameter", Fault::ServerError).times(1));
        proxy.reset_counts();
        let written = s
            .put(
                &env,
                &svc,
                &key,
                &Secret::from_slice(b"value-two"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(written.version, 2);
        assert_eq!(proxy.count("PutParameter"), 2, "{:?}", proxy.counts());
        assert_eq!(versions(moto, name).await, [1, 2]);
        let read = s.get(&env, &svc, &key, &Selector::Latest).await.unwrap();
        assert_eq!(read.value.expose(), b"value-two");

        // Throttling is a refusal before any write: sent again without a
        // check.
        proxy.inject(FaultRule::on("PutParameter", Fault::Throttle).times(1));
        proxy.reset_counts();
        let written = s
            .put(
                &env,
                &svc,
                &key,
                &Secret::from_slice(b"value-three"),
                &PutOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(written.version, 3);
        assert_eq!(proxy.count("PutParameter"), 2, "{:?}", proxy.counts());
        assert_eq!(proxy.count("GetParameter"), 0, "{:?}", proxy.counts());
        assert_eq!(versions(moto, name).await, [1, 2, 3]);
    });
}

#[test]
fn info_reads_metadata_only() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let s = store(&proxy.endpoint(), &kms_key).await;
        let (env, svc) = names("infoonly");
        let key = Key::parse("TOKEN").unwrap();
        for value in [b"native-one".as_slice(), b"native-two"] {
            s.put(
                &env,
                &svc,
                &key,
                &Secret::from_slice(value),
                &PutOptions {
                    native: true,
                    label: None,
                },
            )
            .await
            .unwrap();
        }
        proxy.reset_counts();
        let name = "/sidekey/infoonly/api/TOKEN";
        let info = s.params().info(name, s.retry()).await.unwrap();
        assert_eq!((info.name.as_str(), info.version), (name, 2));
        assert_eq!(info.param_type, sidekey_store::ParamType::SecureString);
        // A name that only starts like it is not it.
        let missing = s
            .params()
            .info("/sidekey/infoonly/api/TOK", s.retry())
            .await
            .unwrap_err();
        assert!(
            matches!(missing, sidekey_store::StoreError::NotFound { ref name } if name == "/sidekey/infoonly/api/TOK"),
            "{missing:?}"
        );
        let counts = proxy.counts();
        assert_eq!(counts.get("GetParameter"), None, "{counts:?}");
        assert_eq!(counts.get("GetParameters"), None, "{counts:?}");
        assert!(counts.contains_key("DescribeParameters"), "{counts:?}");
    });
}
