//! The answer to one AdmissionReview: the injector's own small type, every
//! field of it written, serialised once ([`Response::encode`]).
//!
//! Written by hand rather than through `kube_core`'s types: those write the
//! patch as a JSON array of numbers, while the API server's Go types read
//! `[]byte` from base64 text (a third of the size, and no escaping), so
//! the patch is encoded straight into the answer. kube-core stays the
//! independent reader in the tests (`injector/tests/response.rs`).
//!
//! `admission.k8s.io/v1` fields written: `uid`, `allowed`, `status` (only
//! on a refusal: the API server does not read it otherwise), `patchType`
//! and `patch` (only with a patch), `warnings` (only when there are some).
//! `auditAnnotations` is not used.

use crate::review::{API_VERSION, KIND};

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's uid, copied.
    pub uid: String,
    /// Allowed (perhaps with a patch) or refused.
    pub verdict: Verdict,
    /// Notes for the user who made the request (may be empty).
    pub warnings: Vec<String>,
}

/// Whether the request is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `allowed: true`, with a JSON Patch (RFC 6902) text or without.
    Allowed { patch: Option<Vec<u8>> },
    /// `allowed: false` with a `Failure` status.
    Refused(Refusal),
}

/// The status of a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP code the API server reports (400, 403).
    pub code: u16,
    /// A machine-readable reason (`BadRequest`, `Forbidden`).
    pub reason: String,
    /// One line for the user.
    pub message: String,
}

impl Response {
    /// Allowed untouched.
    pub fn allowed(uid: &str) -> Response {
        Response {
            uid: uid.to_owned(),
            verdict: Verdict::Allowed { patch: None },
            warnings: Vec::new(),
        }
    }

    /// Allowed with `patch` (JSON Patch text) and `warnings`.
    pub fn patched(uid: &str, patch: Vec<u8>, warnings: Vec<String>) -> Response {
        Response {
            uid: uid.to_owned(),
            verdict: Verdict::Allowed { patch: Some(patch) },
            warnings,
        }
    }

    /// Refused with `code`, `reason` and `message`.
    pub fn refused(uid: &str, code: u16, reason: &str, message: String) -> Response {
        Response {
            uid: uid.to_owned(),
            verdict: Verdict::Refused(Refusal {
                code,
                reason: reason.to_owned(),
                message,
            }),
            warnings: Vec::new(),
        }
    }

    /// Whether the request is admitted.
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allowed { .. })
    }

    /// The AdmissionReview JSON of this answer. The status object writes
    /// `status`, `code`, `message`, `reason` in that order, leaving out an
    /// empty message or reason and a zero code (the bytes kube-core's
    /// `Status` writes).
    pub fn encode(&self) -> Vec<u8> {
        let (patch, extra) = match &self.verdict {
            Verdict::Allowed { patch } => (patch.as_deref(), 0),
            Verdict::Refused(r) => (None, r.message.len() + r.reason.len() + 64),
        };
        let patch_len = patch.map_or(0, |p| p.len() * 4 / 3 + 4);
        let warnings_len: usize = self.warnings.iter().map(|w| w.len() + 3).sum();
        let mut out =
            String::with_capacity(160 + self.uid.len() + patch_len + extra + warnings_len);
        out.push_str("{\"apiVersion\":\"");
        out.push_str(API_VERSION);
        out.push_str("\",\"kind\":\"");
        out.push_str(KIND);
        out.push_str("\",\"response\":{\"uid\":");
        sidekey_wire::json::write_str(&mut out, &self.uid);
        match &self.verdict {
            Verdict::Allowed { patch } => {
                out.push_str(",\"allowed\":true");
                if let Some(patch) = patch {
                    out.push_str(",\"patchType\":\"JSONPatch\",\"patch\":\"");
                    base64_simd::STANDARD.encode_append(patch, &mut out);
                    out.push('"');
                }
            }
            Verdict::Refused(r) => {
                out.push_str(",\"allowed\":false,\"status\":{\"status\":\"Failure\"");
                if r.code != 0 {
                    out.push_str(",\"code\":");
                    out.push_str(&r.code.to_string());
                }
                if !r.message.is_empty() {
                    out.push_str(",\"message\":");
                    sidekey_wire::json::write_str(&mut out, &r.message);
                }
                if !r.reason.is_empty() {
                    out.push_str(",\"reason\":");
                    sidekey_wire::json::write_str(&mut out, &r.reason);
                }
                out.push('}');
            }
        }
        if !self.warnings.is_empty() {
            out.push_str(",\"warnings\":[");
            for (i, w) in self.warnings.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                sidekey_wire::json::write_str(&mut out, w);
            }
            out.push(']');
        }
        out.push_str("}}");
        out.into_bytes()
    }
}
