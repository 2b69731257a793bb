//! The store against moto (SSM and KMS), through the fault proxy (which
//! counts calls per operation, and loses answers where a test asks):
//! PutParameter retried after a lost answer makes no second version;
//! metadata reads without values; a key keeps its last 100 versions; data
//! keys are generated and unwrapped once per store; native SecureStrings
//! round trip; paged reads follow a token to an empty last page.
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

fn opts(native: bool) -> PutOptions {
    PutOptions {
        native,
        label: None,
    }
}

#[test]
fn a_key_keeps_its_last_100_versions() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let s = store(&proxy.endpoint(), &kms_key).await;
        let (env, svc) = names("retain");
        let key = Key::parse("DB_PASSWORD").unwrap();
        let name = "/sidekey/retain/api/DB_PASSWORD";
        for i in 1..=101u64 {
            let value = format!("value-number-{i}");
            let w = s
                .put(
                    &env,
                    &svc,
                    &key,
                    &Secret::from_slice(value.as_bytes()),
                    &opts(false),
                )
                .await
                .unwrap();
            assert_eq!(w.version, i);
        }
        // SSM keeps 100: the oldest went.
        assert_eq!(versions(moto, name).await, (2..=101).collect::<Vec<_>>());
        let history = s.history(&env, &svc, &key).await.unwrap();
        assert_eq!(
            history.iter().map(|h| h.version).collect::<Vec<_>>(),
            (2..=101).collect::<Vec<_>>()
        );
        let latest = s.get(&env, &svc, &key, &Selector::Latest).await.unwrap();
        assert_eq!(
            (latest.value.expose(), latest.version),
            (&b"value-number-101"[..], 101)
        );
        let oldest = s
            .get(&env, &svc, &key, &Selector::Version(2))
            .await
            .unwrap();
        assert_eq!(oldest.value.expose(), b"value-number-2");
        match s.get(&env, &svc, &key, &Selector::Version(1)).await {
            Err(sidekey_store::StoreError::VersionNotFound { name: n, selector }) => {
                assert_eq!((n.as_str(), selector.as_str()), (name, "1"));
            }
            other => panic!("{other:?}"),
        }

        // With a label on the oldest version, SSM refuses a 101st: a clear,
        // permanent error, sent once, that never quotes the value.
        s.params()
            .label(name, 2, "pinned", s.retry())
            .await
            .unwrap();
        proxy.reset_counts();
        let e = s
            .put(
                &env,
                &svc,
                &key,
                &Secret::from_slice(b"value-refused-102"),
                &opts(false),
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.aws_code(),
            Some("ParameterMaxVersionLimitExceeded"),
            "{e}"
        );
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(text.contains(name), "{text}");
        assert!(!text.contains("value-refused-102"), "{text}");
        assert_eq!(proxy.count("PutParameter"), 1, "{:?}", proxy.counts());
        assert_eq!(versions(moto, name).await.len(), 100);
    });
}

#[test]
fn data_keys_are_generated_and_unwrapped_once_per_store_and_service() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let (env, svc) = names("keycache");
        let other = Service::parse("worker").unwrap();
        let keys: Vec<Key> = ["A_KEY", "B_KEY", "C_KEY"]
            .iter()
            .map(|k| Key::parse(k).unwrap())
            .collect();
        let values: Vec<Secret> = (0..3)
            .map(|i| Secret::from_slice(format!("cached-key-value-{i}").as_bytes()))
            .collect();
        let items: Vec<(Key, &Secret)> = keys.iter().cloned().zip(values.iter()).collect();

        let s = store(&proxy.endpoint(), &kms_key).await;
        proxy.reset_counts();
        s.put_many(&env, &svc, &items, &opts(false)).await.unwrap();
        s.put(&env, &svc, &keys[0], &values[1], &opts(false))
            .await
            .unwrap();
        // One data key for the service, generated once, then cached.
        assert_eq!(proxy.count("GenerateDataKey"), 1, "{:?}", proxy.counts());
        assert_eq!(proxy.count("Decrypt"), 0, "{:?}", proxy.counts());
        for _ in 0..2 {
            let read = s.read_service(&env, &svc).await.unwrap();
            assert_eq!(read.len(), 3);
            assert_eq!(read[0].value.expose(), values[1].expose());
        }
        // Every value shares the key: unwrapped once for all reads.
        assert_eq!(proxy.count("Decrypt"), 1, "{:?}", proxy.counts());

        // Another service: a data key of its own.
        s.put(&env, &other, &keys[0], &values[0], &opts(false))
            .await
            .unwrap();
        assert_eq!(proxy.count("GenerateDataKey"), 2, "{:?}", proxy.counts());

        // A new store reuses the service's key: one Decrypt, no new key,
        // for its writes and its reads together.
        let fresh = store(&proxy.endpoint(), &kms_key).await;
        proxy.reset_counts();
        fresh
            .put(&env, &svc, &keys[1], &values[2], &opts(false))
            .await
            .unwrap();
        let read = fresh.read_service(&env, &svc).await.unwrap();
        assert_eq!(read[1].value.expose(), values[2].expose());
        assert_eq!(proxy.count("GenerateDataKey"), 0, "{:?}", proxy.counts());
        assert_eq!(proxy.count("Decrypt"), 1, "{:?}", proxy.counts());
    });
}

#[test]
fn native_secure_strings_round_trip() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let s = store(&proxy.endpoint(), &kms_key).await;
        let (env, svc) = names("nativert");
        let native = Key::parse("NATIVE").unwrap();
        let sealed = Key::parse("SEALED").unwrap();
        let text = "native ✓ value with = and 'quotes' and\nnewline";
        let w = s
            .put(
                &env,
                &svc,
                &native,
                &Secret::from_slice(text.as_bytes()),
                &opts(true),
            )
            .await
            .unwrap();
        assert_eq!(w.version, 1);
        s.put(
            &env,
            &svc,
            &sealed,
            &Secret::from_slice(b"sealed-value"),
            &opts(false),
        )
        .await
        .unwrap();

        // Stored as a SecureString under the configured key: without
        // decryption SSM does not give the text.
        let (ssm, _) = clients(moto.endpoint()).await;
        let raw = ssm
            .get_parameter()
            .name("/sidekey/nativert/api/NATIVE")
            .with_decryption(false)
            .send()
            .await
            .unwrap();
        let p = raw.parameter().unwrap();
        assert_eq!(
            p.r#type(),
            Some(&aws_sdk_ssm::types::ParameterType::SecureString)
        );
        assert_ne!(p.value(), Some(text));

        let got = s.get(&env, &svc, &native, &Selector::Latest).await.unwrap();
        assert_eq!(got.value.expose(), text.as_bytes());
        assert_eq!(got.kind, sidekey_store::ValueKind::Native);
        let all = s.read_service(&env, &svc).await.unwrap();
        let kinds: Vec<_> = all
            .iter()
            .map(|r| (r.path.key().as_str().to_owned(), r.kind))
            .collect();
        assert_eq!(
            kinds,
            [
                ("NATIVE".to_owned(), sidekey_store::ValueKind::Native),
                ("SEALED".to_owned(), sidekey_store::ValueKind::Envelope)
            ]
        );
        // Not UTF-8: refused before anything is sent, naming the key.
        proxy.reset_counts();
        let e = s
            .put(
                &env,
                &svc,
                &native,
                &Secret::from_slice(&[0xff, 0xfe, 0x41]),
                &opts(true),
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("/sidekey/nativert/api/NATIVE"),
            "{e}"
        );
        assert_eq!(proxy.count("PutParameter"), 0);
    });
}

#[test]
fn paged_reads_follow_a_token_to_an_empty_last_page() {
    let moto = Moto::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    rt().block_on(async {
        let kms_key = create_kms_key(moto.endpoint()).await.unwrap();
        let s = store(&proxy.endpoint(), &kms_key).await;
        let (env, svc) = names("paging");
        // Exactly one page of 10 (GetParametersByPath and, for moto,
        // DescribeParameters): the page comes with a token, and the next
        // page is empty.
        let keys: Vec<Key> = (0..10)
            .map(|i| Key::parse(&format!("KEY_{i:02}")).unwrap())
            .collect();
        let values: Vec<Secret> = (0..10)
            .map(|i| Secret::from_slice(format!("paged-value-{i:02}").as_bytes()))
            .collect();
        let items: Vec<(Key, &Secret)> = keys.iter().cloned().zip(values.iter()).collect();
        s.put_many(&env, &svc, &items, &opts(false)).await.unwrap();

        proxy.reset_counts();
        let read = s.read_service(&env, &svc).await.unwrap();
        assert_eq!(read.len(), 10);
        for (r, v) in read.iter().zip(&values) {
            assert_eq!(r.value.expose(), v.expose());
        }
        assert_eq!(
            proxy.count("GetParametersByPath"),
            2,
            "{:?}",
            proxy.counts()
        );

        proxy.reset_counts();
        let listed = s.list(&env, Some(&svc)).await.unwrap();
        assert_eq!(listed.len(), 10);
        assert_eq!(proxy.count("DescribeParameters"), 2, "{:?}", proxy.counts());

        // 23 keys: pages of 10, 10 and 3; by name, batches of 10.
        let more: Vec<Key> = (10..23)
            .map(|i| Key::parse(&format!("KEY_{i:02}")).unwrap())
            .collect();
        let more_values: Vec<Secret> = (10..23)
            .map(|i| Secret::from_slice(format!("paged-value-{i:02}").as_bytes()))
            .collect();
        let items: Vec<(Key, &Secret)> = more.iter().cloned().zip(more_values.iter()).collect();
        s.put_many(&env, &svc, &items, &opts(false)).await.unwrap();
        proxy.reset_counts();
        assert_eq!(s.read_service(&env, &svc).await.unwrap().len(), 23);
        assert_eq!(
            proxy.count("GetParametersByPath"),
            3,
            "{:?}",
            proxy.counts()
        );
        let names: Vec<String> = (0..23)
            .map(|i| format!("/sidekey/paging/api/KEY_{i:02}"))
            .chain(["/sidekey/paging/api/NOPE".to_owned()])
            .collect();
        proxy.reset_counts();
        let (found, missing) = s.params().get_many(&names, s.retry()).await.unwrap();
        assert_eq!(found.len(), 23);
        assert_eq!(missing, ["/sidekey/paging/api/NOPE"]);
        assert_eq!(proxy.count("GetParameters"), 3, "{:?}", proxy.counts());
    });
}
