//! `FaultProxy` in front of the real moto server, driven by the real SDK.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::timeout::TimeoutConfig;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ssm::types::ParameterType;
use sidekey_test_support::{
    create_kms_key, kms_client, sdk_config, Fault, FaultProxy, FaultRule, Moto,
};

/// An SSM client on `endpoint` with retries disabled, so each call is one request.
async fn ssm_once(endpoint: &str) -> aws_sdk_ssm::Client {
    let config = aws_sdk_ssm::config::Builder::from(&sdk_config(endpoint).await)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

/// A parameter name no other test in this process uses (they share one moto).
fn unique_name(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "/test-support/{test}/{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Puts `name` = "value" straight into moto, not through any proxy.
async fn put_direct(name: &str) {
    ssm_once(Moto::shared().endpoint())
        .await
        .put_parameter()
        .name(name)
        .value("value")
        .r#type(ParameterType::String)
        .send()
        .await
        .unwrap();
}

fn proxy() -> FaultProxy {
    FaultProxy::start(Moto::shared().endpoint()).unwrap()
}

/// `GET path` through a plain socket; the status code.
fn http_get(endpoint: &str, path: &str) -> std::io::Result<u16> {
    let authority = endpoint.trim_start_matches("http://");
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad answer {answer:?}")))
}

#[tokio::test]
async fn forwards_put_and_get_and_counts_each_once() {
    let proxy = proxy();
    let ssm = ssm_once(&proxy.endpoint()).await;
    let name = unique_name("forward");
    ssm.put_parameter()
        .name(&name)
        .value("through the proxy")
        .r#type(ParameterType::String)
        .send()
        .await
        .unwrap();
    let got = ssm.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(
        got.parameter().and_then(|p| p.value()),
        Some("through the proxy")
    );
    assert_eq!(proxy.count("PutParameter"), 1);
    assert_eq!(proxy.count("GetParameter"), 1);
    assert_eq!(
        proxy.counts().into_iter().collect::<Vec<_>>(),
        [
            ("GetParameter".to_owned(), 1),
            ("PutParameter".to_owned(), 1)
        ]
    );
    assert_eq!(proxy.total_for_service("AmazonSSM"), 2);
    assert_eq!(proxy.total_for_service("TrentService"), 0);

    proxy.reset_counts();
    assert!(proxy.counts().is_empty());
    assert_eq!(proxy.count("GetParameter"), 0);
}

#[tokio::test]
async fn throttle_twice_then_success() {
    let proxy = proxy();
    let name = unique_name("throttle");
    put_direct(&name).await;
    proxy.inject(FaultRule {
        operation: Some("GetParameter".to_owned()),
        fault: Fault::Throttle,
        times: Some(2),
    });
    let ssm = ssm_once(&proxy.endpoint()).await;
    for attempt in 1..=2 {
        let err = ssm.get_parameter().name(&name).send().await.unwrap_err();
        assert_eq!(err.code(), Some("ThrottlingException"), "attempt {attempt}");
        assert_eq!(err.message(), Some("Rate exceeded"));
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    }
    let got = ssm.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(got.parameter().and_then(|p| p.value()), Some("value"));
    assert_eq!(proxy.count("GetParameter"), 3);
}

#[tokio::test]
async fn sdk_retries_show_in_the_counts() {
    let proxy = proxy();
    let name = unique_name("retry");
    put_direct(&name).await;
    proxy.inject(FaultRule::on("GetParameter", Fault::Throttle).times(1));
    // Standard retries, as sdk_config sets them up.
    let ssm = aws_sdk_ssm::Client::new(&sdk_config(&proxy.endpoint()).await);
    ssm.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.count("GetParameter"), 2);
}

#[tokio::test]
async fn server_error_answers_500() {
    let proxy = proxy();
    let name = unique_name("server-error");
    put_direct(&name).await;
    proxy.inject(FaultRule::on("GetParameter", Fault::ServerError).times(1));
    let ssm = ssm_once(&proxy.endpoint()).await;
    let err = ssm.get_parameter().name(&name).send().await.unwrap_err();
    assert_eq!(err.code(), Some("InternalServerError"));
    assert_eq!(err.message(), Some("injected"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    ssm.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.count("GetParameter"), 2);
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let proxy = proxy();
    let name = unique_name("drop");
    put_direct(&name).await;
    proxy.inject(FaultRule::on("GetParameter", Fault::Drop).times(1));
    let ssm = ssm_once(&proxy.endpoint()).await;
    let err = ssm.get_parameter().name(&name).send().await.unwrap_err();
    assert!(
        matches!(err, SdkError::DispatchFailure(_)),
        "expected a dispatch failure, got {err:?}"
    );
    assert!(err.raw_response().is_none());
    ssm.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(proxy.count("GetParameter"), 2);
}

#[tokio::test]
async fn delay_forwards_late_and_trips_client_timeouts() {
    let proxy = proxy();
    let name = unique_name("delay");
    put_direct(&name).await;
    let ssm = ssm_once(&proxy.endpoint()).await;

    proxy.inject(FaultRule::on("GetParameter", Fault::Delay(Duration::from_millis(100))).times(1));
    let got = ssm.get_parameter().name(&name).send().await.unwrap();
    assert_eq!(got.parameter().and_then(|p| p.value()), Some("value"));

    // A delay far beyond the client's attempt timeout: the call times out.
    proxy.inject(FaultRule::on("GetParameter", Fault::Delay(Duration::from_secs(30))).times(1));
    let impatient = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&sdk_config(&proxy.endpoint()).await)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(300))
                    .build(),
            )
            .build(),
    );
    let err = impatient
        .get_parameter()
        .name(&name)
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, SdkError::TimeoutError(_)),
        "expected a timeout, got {err:?}"
    );
    assert_eq!(proxy.count("GetParameter"), 2);
}

#[tokio::test]
async fn any_json_error_rules_in_order_and_clear() {
    let proxy = proxy();
    let name = unique_name("rules");
    put_direct(&name).await;
    proxy.inject(
        FaultRule::on(
            "AmazonSSM.GetParameter",
            Fault::Error {
                status: 400,
                type_name: "AccessDeniedException".to_owned(),
                message: "no".to_owned(),
            },
        )
        .times(1),
    );
    proxy.inject(FaultRule::any(Fault::Throttle).times(1));
    proxy.inject(FaultRule::on("PutParameter", Fault::ServerError));
    let ssm = ssm_once(&proxy.endpoint()).await;

    let first = ssm.get_parameter().name(&name).send().await.unwrap_err();
    assert_eq!(first.code(), Some("AccessDeniedException"));
    assert_eq!(first.message(), Some("no"));
    let second = ssm.get_parameter().name(&name).send().await.unwrap_err();
    assert_eq!(second.code(), Some("ThrottlingException"));
    ssm.get_parameter().name(&name).send().await.unwrap();

    // The PutParameter rule has no limit ...
    for _ in 0..2 {
        let err = ssm
            .put_parameter()
            .name(&name)
            .value("x")
            .overwrite(true)
            .send()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("InternalServerError"));
    }
    // ... until the faults are cleared.
    proxy.clear_faults();
    ssm.put_parameter()
        .name(&name)
        .value("x")
        .overwrite(true)
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("GetParameter"), 3);
    assert_eq!(proxy.count("PutParameter"), 3);
}

#[tokio::test]
async fn counts_kms_calls_by_service() {
    let proxy = proxy();
    let key = create_kms_key(&proxy.endpoint()).await.unwrap();
    assert!(key.starts_with("arn:aws:kms:us-east-1:"), "{key}");
    let kms = kms_client(&proxy.endpoint()).await;
    let sealed = kms
        .encrypt()
        .key_id(&key)
        .plaintext(Blob::new(b"hello".to_vec()))
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    let opened = kms
        .decrypt()
        .ciphertext_blob(sealed.ciphertext_blob().unwrap().clone())
        .encryption_context("purpose", "test")
        .send()
        .await
        .unwrap();
    assert_eq!(opened.plaintext().unwrap().as_ref(), b"hello");
    assert_eq!(proxy.total_for_service("TrentService"), 3);
    assert_eq!(proxy.total_for_service("AmazonSSM"), 0);
    assert_eq!(proxy.count("CreateKey"), 1);
    assert_eq!(proxy.count("Encrypt"), 1);
    assert_eq!(proxy.count("Decrypt"), 1);

    proxy.inject(FaultRule::on("TrentService.Decrypt", Fault::Throttle).times(1));
    let err = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&sdk_config(&proxy.endpoint()).await)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
    .decrypt()
    .ciphertext_blob(sealed.ciphertext_blob().unwrap().clone())
    .encryption_context("purpose", "test")
    .send()
    .await
    .unwrap_err();
    assert_eq!(
        aws_sdk_kms::error::ProvideErrorMetadata::code(&err),
        Some("ThrottlingException")
    );
    assert_eq!(proxy.count("Decrypt"), 2);
}

/// No runtime in the test: the proxy brings its own. Requests without `X-Amz-Target` count as
/// "other", and a dropped proxy stops answering.
#[test]
fn works_from_sync_code_and_stops_on_drop() {
    let proxy = proxy();
    assert_eq!(http_get(&proxy.endpoint(), "/moto-api/").unwrap(), 200);
    assert_eq!(proxy.count("other"), 1);
    proxy.inject(FaultRule::any(Fault::ServerError).times(1));
    assert_eq!(http_get(&proxy.endpoint(), "/moto-api/").unwrap(), 500);
    assert_eq!(proxy.count("other"), 2);

    let endpoint = proxy.endpoint();
    drop(proxy);
    assert!(http_get(&endpoint, "/moto-api/").is_err());
}

#[test]
fn rejects_an_upstream_that_is_not_plain_http() {
    assert!(FaultProxy::start("https://127.0.0.1:1").is_err());
    assert!(FaultProxy::start("127.0.0.1:1").is_err());
}
