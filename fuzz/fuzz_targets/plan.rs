//! The planner on an arbitrary pod: the input is a pod's JSON text (the
//! `object` of an AdmissionReview). It is read by the borrowed pod view
//! and planned; nothing may panic. The same document, written back as
//! JSON by `serde_json` (one value per key), is planned again and the
//! planner's properties are checked (`sidekey_fuzz::plan_and_check`): a
//! patch applies to the pod, and the patched pod is skipped when it is
//! reviewed again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sidekey_fuzz::{config, namespace_of, plan_and_check};
use sidekey_patch::{plan, PodView, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = config();
    // The text as given: no panic, whatever the decision.
    match PodView::from_json(text) {
        Ok(pod) => {
            let request = Request {
                namespace: namespace_of(&pod),
                user: None,
            };
            let _ = plan(&pod, &request, config);
        }
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    }
    // The same document, one value per key: the properties.
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        panic!("the pod view read text that is not JSON");
    };
    let canonical = serde_json::to_string(&json).expect("a JSON value serialises");
    let pod = match PodView::from_json(&canonical) {
        Ok(pod) => pod,
        Err(e) => panic!("the pod parses, but not once written back by serde_json: {e}"),
    };
    plan_and_check(&pod, &json, namespace_of(&pod), config);
});
