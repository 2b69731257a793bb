//! `sidekey policy`: the least IAM policy an agent needs to read one
//! environment (and the bases it inherits), or with Pod Identity one role
//! for every namespace.
//!
//! Least privilege by default: the account, the KMS key's ARN and the
//! region are concrete (the command requires `--account` and
//! `--kms-key-arn`, takes the region from `--policy-region`, `--region` or
//! the key's ARN, and refuses wildcards in any of them), so the policy
//! never names `arn:aws:ssm:*:*:...` or `arn:aws:kms:*:*:key/*`.

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
    /// The AWS account id (12 digits, see [`check_account`]).
    pub account: &'a str,
    /// The parameters' region (see [`check_region`]).
    pub region: &'a str,
    /// The KMS key's ARN (see [`check_kms_key_arn`]).
    pub kms_key_arn: &'a str,
    pub native: bool,
}

/// An AWS account id: exactly 12 digits (so never a wildcard).
pub fn check_account(account: &str) -> Result<(), String> {
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "--account {account:?}: an AWS account id is exactly 12 digits (no wildcards)"
        ));
    }
    Ok(())
}

/// A region name: lowercase letters, digits and '-', like `eu-west-1`
/// (so never a wildcard).
pub fn check_region(flag: &str, region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.contains('-')
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if !ok {
        return Err(format!(
            "{flag} {region:?}: a region is lowercase letters, digits and '-', like eu-west-1 (no wildcards)"
        ));
    }
    Ok(())
}

/// The region of a KMS key ARN that passed [`check_kms_key_arn`].
pub fn arn_region(arn: &str) -> &str {
    arn.split(':').nth(3).unwrap_or("")
}

/// A KMS key ARN: `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`, with a
/// concrete region, a 12-digit account and a key id of letters, digits and
/// '-' (a key id or an `mrk-` multi-Region key id; an alias cannot be named
/// in an IAM policy, and no wildcard is accepted).
pub fn check_kms_key_arn(arn: &str) -> Result<(), String> {
    let fail = |why: &str| {
        Err(format!(
            "--kms-key-arn {arn:?}: {why}; give the key's ARN, arn:aws:kms:REGION:ACCOUNT:key/ID \
             (IAM policies cannot name aliases, and wildcards are refused)"
        ))
    };
    if arn.contains(['*', '?']) {
        return fail("it contains a wildcard");
    }
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [scheme, partition, service, region, account, resource] = parts.as_slice() else {
        return fail("it does not have the six ':'-separated parts of an ARN");
    };
    if *scheme != "arn" || !matches!(*partition, "aws" | "aws-cn" | "aws-us-gov") {
        return fail("it does not start with arn:aws:, arn:aws-cn: or arn:aws-us-gov:");
    }
    if *service != "kms" {
        return fail("it is not a KMS ARN");
    }
    if check_region("--kms-key-arn", region).is_err() {
        return fail("its region is not a region name");
    }
    if check_account(account).is_err() {
        return fail("its account is not 12 digits");
    }
    let Some(id) = resource.strip_prefix("key/") else {
        return fail("its resource is not key/ID");
    };
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return fail("its key id is not letters, digits and '-'");
    }
    Ok(())
}

/// Builds the policy document.
pub fn build(req: &PolicyRequest<'_>) -> Value {
    let region = req.region;
    let account = req.account;
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
    let kms_resource = req.kms_key_arn.to_owned();

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
                    "kms:ViaService": format!("ssm.{region}.amazonaws.com"),
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

    const KEY: &str = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn arns_accounts_and_regions_are_checked() {
        assert!(check_kms_key_arn(KEY).is_ok());
        assert!(check_kms_key_arn("arn:aws:kms:eu-west-1:123456789012:key/mrk-1234abcd").is_ok());
        for bad in [
            "arn:aws:kms:*:*:key/*",
            "arn:aws:kms:eu-west-1:123456789012:key/*",
            "arn:aws:kms:eu-west-1:*:key/1234",
            "arn:aws:kms:*:123456789012:key/1234",
            "arn:aws:kms:eu-west-1:123456789012:alias/sidekey",
            "arn:aws:s3:eu-west-1:123456789012:key/1234",
            "arn:aws:kms:eu-west-1:123456789012:key/",
            "alias/sidekey",
            "arn:aws:kms:eu-west-1:12345678901?:key/1234",
        ] {
            let e = check_kms_key_arn(bad).expect_err(bad);
            assert!(e.starts_with("--kms-key-arn"), "{e}");
        }
        assert!(check_account("123456789012").is_ok());
        assert!(check_account("*").is_err());
        assert!(check_account("12345678901*").is_err());
        assert!(check_region("--policy-region", "eu-west-1").is_ok());
        assert!(check_region("--policy-region", "*").is_err());
        assert!(check_region("--policy-region", "eu-*").is_err());
        assert_eq!(arn_region(KEY), "eu-west-1");
    }

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
            account: "123456789012",
            region: "eu-west-1",
            kms_key_arn: KEY,
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
            account: "123456789012",
            region: "eu-west-1",
            kms_key_arn: KEY,
            native: true,
        });
        let text = doc.to_string();
        assert!(!text.contains(":*:") && !text.contains("key/*"), "{text}");
        assert!(text.contains("parameter/sidekey/${aws:PrincipalTag/kubernetes-namespace}/*"));
        assert_eq!(doc["Statement"].as_array().map(Vec::len), Some(3));
    }
}
