//! What a write request shows of itself: never the value (a native write's
//! value is the plaintext).

use sidekey_store::{ParamType, PutRequest};

#[test]
fn a_put_requests_debug_never_shows_its_value() {
    const VALUE: &str = "pl41ntext-native-value";
    for param_type in [ParamType::String, ParamType::SecureString] {
        let request = PutRequest {
            name: "/sidekey/prod/api/DB_PASSWORD",
            value: VALUE.as_bytes(),
            param_type,
            kms_key: Some("alias/sidekey"),
            overwrite: true,
        };
        for shown in [format!("{request:?}"), format!("{request:#?}")] {
            assert!(!shown.contains(VALUE), "{shown}");
            assert!(shown.contains("/sidekey/prod/api/DB_PASSWORD"), "{shown}");
            assert!(shown.contains("22 bytes redacted"), "{shown}");
        }
    }
}
