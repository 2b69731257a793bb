//! `sidekey policy`: the least IAM policy an agent needs to read one
//! environment (and the bases it inherits), or with Pod Identity one role
//! for every namespace.

use serde_json::{json, Value};
use sidekey_envelope::CONTEXT_ENVIRONMENT;
use sidekey_model::{Environment, Prefix};

/// The namespace tag EKS Pod Identity puts on the session.
pub const POD_IDENTITY_NAMESPACE: &str = "${aws:PrincipalTag/kubernetes-namespace}";

/// What the policy is for.
#[derive(Debug)]
pub struct PolicyRequest<'a> {
    pub prefix: &'a Prefix,
    /// The environment; None with Pod Identity (the namespace tag instead).
    pub environment: Option<&'a Environment>,
    pub inherit: &'a [Environment],
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    pub kms_key_arn: Option<&'a str>,
    pub native: bool,
}

/// Builds the policy document.
pub fn build(req: &PolicyRequest<'_>) -> Value {
    let region = req.region.unwrap_or("*");
    let account = req.account.unwrap_or("*");
    let mut environments: Vec<String> = Vec::new();
    match req.environment {
        Some(env) => environments.push(env.to_string()),
        None => environments.push(POD_IDENTITY_NAMESPACE.to_owned()),
    }
    for base in req.inherit {
        let base = base.to_string();
        if !environments.contains(&base) {
            environments.push(base);
        }
    }
    let parameter_arns: Vec<String> = environments
        .iter()
        .map(|env| {
            format!(
                "arn:aws:ssm:{region}:{account}:parameter/{}/{env}/*",
                req.prefix
            )
        })
        .collect();
    let kms_resource = req
        .kms_key_arn
        .map(str::to_owned)
        .unwrap_or_else(|| format!("arn:aws:kms:{region}:{account}:key/*"));

    let mut statements = vec![
        json!({
            "Sid": "ReadEnvironmentParameters",
            "Effect": "Allow",
            "Action": ["ssm:GetParametersByPath", "ssm:GetParameters", "ssm:GetParameter"],
            "Resource": parameter_arns,
        }),
        json!({
            "Sid": "DecryptEnvironmentDataKeys",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": kms_resource,
            "Condition": {
                "StringEquals": {
                    format!("kms:EncryptionContext:{CONTEXT_ENVIRONMENT}"): environments,
                }
            }
        }),
    ];
    if req.native {
        // SSM decrypts native SecureStrings itself, with the parameter's ARN
        // as encryption context.
        statements.push(json!({
            "Sid": "DecryptNativeSecureStrings",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": kms_resource,
            "Condition": {
                "StringLike": {
                    "kms:EncryptionContext:PARAMETER_ARN": parameter_arns,
                },
                "StringEquals": {
                    "kms:ViaService": format!("ssm.{}.amazonaws.com", if region == "*" { "*" } else { region }),
                }
            }
        }));
    }
    json!({
        "Version": "2012-10-17",
        "Statement": statements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(s: &str) -> Environment {
        Environment::parse(s).expect("valid")
    }

    #[test]
    fn names_only_the_environment_and_its_bases() {
        let prefix = Prefix::default();
        let e = env("pr-7");
        let bases = [env("staging")];
        let doc = build(&PolicyRequest {
            prefix: &prefix,
            environment: Some(&e),
            inherit: &bases,
            account: Some("123456789012"),
            region: Some("eu-west-1"),
            kms_key_arn: None,
            native: false,
        });
        let resources = &doc["Statement"][0]["Resource"];
        assert_eq!(
            resources,
            &json!([
                "arn:aws:ssm:eu-west-1:123456789012:parameter/sidekey/pr-7/*",
                "arn:aws:ssm:eu-west-1:123456789012:parameter/sidekey/staging/*"
            ])
        );
        assert_eq!(
            doc["Statement"][1]["Condition"]["StringEquals"]
                ["kms:EncryptionContext:sidekey:environment"],
            json!(["pr-7", "staging"])
        );
    }

    #[test]
    fn pod_identity_uses_the_namespace_tag() {
        let prefix = Prefix::default();
        let doc = build(&PolicyRequest {
            prefix: &prefix,
            environment: None,
            inherit: &[],
            account: None,
            region: None,
            kms_key_arn: None,
            native: true,
        });
        let text = doc.to_string();
        assert!(text.contains("parameter/sidekey/${aws:PrincipalTag/kubernetes-namespace}/*"));
        assert_eq!(doc["Statement"].as_array().map(Vec::len), Some(3));
    }
}
