//! `policy`: the IAM policy document for a workload's role (printed, never
//! applied).

use sidekey_model::Prefix;

use super::{env_name, usage};
use crate::args::{Global, PolicyArgs};
use crate::{policy, Failure};

pub(super) fn policy_command(global: &Global, args: PolicyArgs) -> Result<(), Failure> {
    let prefix = Prefix::parse(&global.prefix).map_err(usage)?;
    let environment = match (&args.env, args.pod_identity) {
        (Some(_), true) => {
            return Err(Failure::usage(
                "--pod-identity takes the environment from the pod's namespace tag: drop ENV",
            ))
        }
        (Some(e), false) => Some(env_name(e)?),
        (None, _) => None,
    };
    let inherit = args
        .inherit
        .iter()
        .map(|b| env_name(b))
        .collect::<Result<Vec<_>, _>>()?;
    policy::check_account(&args.account).map_err(Failure::usage)?;
    policy::check_kms_key_arn(&args.kms_key_arn).map_err(Failure::usage)?;
    // The parameters' region: --policy-region, else --region, else the
    // key's own region (never a wildcard).
    let (flag, region) = match (&args.policy_region, &global.region) {
        (Some(r), _) => ("--policy-region", r.as_str()),
        (None, Some(r)) => ("--region", r.as_str()),
        (None, None) => ("--kms-key-arn", policy::arn_region(&args.kms_key_arn)),
    };
    policy::check_region(flag, region).map_err(Failure::usage)?;
    let doc = policy::build(&policy::PolicyRequest {
        prefix: &prefix,
        environment: environment.as_ref(),
        inherit: &inherit,
        account: &args.account,
        region,
        kms_key_arn: &args.kms_key_arn,
        native: args.native,
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Failure::failed(e.to_string()))?;
    println!("{text}");
    Ok(())
}
