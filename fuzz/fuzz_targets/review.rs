//! The injector's review of one `/mutate` body: the input is the body
//! (an AdmissionReview, or anything else). Checked: no panic (a panic in
//! the planner is caught by the review and would answer 500: the fuzz
//! harness aborts on any panic, caught or not), never an internal error
//! (HTTP 500) for any body, a JSON answer is JSON, and the registry lookups
//! asked for (`image_needs`) do not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidekey_fuzz::config;
use sidekey_injector::review::{image_needs, review};

fuzz_target!(|data: &[u8]| {
    let config = config();
    let _ = image_needs(data, config);
    let answer = review(data, config);
    assert_ne!(
        answer.status.as_u16(),
        500,
        "internal error: {}",
        answer.reason()
    );
    if answer.json {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&answer.body) {
            panic!(
                "the answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    let _ = (
        answer.uid(),
        answer.namespace(),
        answer.name(),
        answer.operation(),
    );
});
