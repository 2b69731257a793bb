//! Command-line arguments (clap derive). Every global option can also come
//! from the environment (`SIDEKEY_*`, listed in `sidekey --help`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// sidekey: secrets for Kubernetes pods from AWS SSM Parameter Store,
/// encrypted under AWS KMS, one environment per namespace.
#[derive(Debug, Parser)]
#[command(name = "sidekey", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Where secrets live: `ssm` (AWS SSM + KMS) or `file:DIR` (the embedded local store)
    #[arg(long, env = "SIDEKEY_STORE", default_value = "ssm", global = true)]
    pub store: String,

    /// Parameter name prefix: names are /PREFIX/ENV/SERVICE/KEY
    #[arg(long, env = "SIDEKEY_PREFIX", default_value = "sidekey", global = true)]
    pub prefix: String,

    /// KMS key (id, ARN or alias) that wraps data keys; reads pass it explicitly to KMS
    #[arg(
        long,
        env = "SIDEKEY_KMS_KEY",
        default_value = "alias/sidekey",
        global = true
    )]
    pub kms_key: String,

    /// AWS region (default: the AWS SDK's chain)
    #[arg(long, env = "AWS_REGION", global = true)]
    pub region: Option<String>,

    /// AWS endpoint URL (an emulator, a VPC endpoint)
    #[arg(long, env = "AWS_ENDPOINT_URL", global = true)]
    pub endpoint_url: Option<String>,

    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,

    /// Where audit records of this command go (default: standard error)
    #[arg(long, env = "SIDEKEY_AUDIT_LOG", global = true)]
    pub audit_log: Option<PathBuf>,

    /// Overall deadline of the command, retries included (e.g. 30s, 2m)
    #[arg(long, env = "SIDEKEY_TIMEOUT", default_value = "30s", global = true)]
    pub timeout: String,

    /// Also read plain String parameters and legacy sk1. envelopes, which are refused by
    /// default (anyone with ssm:PutParameter can write a plain String; sk1. binds no version).
    /// For migrations: `sidekey --allow-legacy rekey ENV SERVICE` re-seals a service as sk2.
    #[arg(long, global = true)]
    pub allow_legacy: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Where a new value comes from.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct ValueSource {
    /// Read the value from this file, byte for byte (default: standard input)
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,

    /// Generate a random value of N characters from A-Z, a-z and 0-9
    #[arg(long, value_name = "N")]
    pub generate: Option<usize>,
}

/// The ops commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new version of a secret (value from stdin, --from-file or --generate)
    Put {
        env: String,
        service: String,
        key: String,
        #[command(flatten)]
        source: ValueSource,
        /// Write a native SecureString (readable by aws-cli, chamber, the console) instead of an envelope
        #[arg(long)]
        native: bool,
        /// Move this label to the new version
        #[arg(long)]
        label: Option<String>,
    },
    /// Show a secret's metadata, or with --reveal exactly its value bytes on stdout
    Get {
        env: String,
        service: String,
        key: String,
        /// A version number
        #[arg(long, conflicts_with = "label")]
        version: Option<String>,
        /// A label
        #[arg(long)]
        label: Option<String>,
        /// Print the value (exactly its bytes, no newline added)
        #[arg(long)]
        reveal: bool,
    },
    /// List the keys of an environment (or one service): versions, times, authors; never values
    List {
        env: String,
        service: Option<String>,
    },
    /// Every version of a secret: time, author, labels
    History {
        env: String,
        service: String,
        key: String,
    },
    /// Write a new version of an existing secret (--restart: then roll the workloads using it)
    ///
    /// Without --restart, and when a kubeconfig is there, says on standard error how many
    /// running pods still use the previous version and the command that rolls them.
    Rotate {
        env: String,
        service: String,
        key: String,
        #[command(flatten)]
        source: ValueSource,
        #[command(flatten)]
        restart: RestartAfter,
    },
    /// Running pods of ENV (and of environments inheriting it) and the keys rotated since each started
    ///
    /// Reads pods through the kubeconfig (KUBECONFIG, ~/.kube/config, in-cluster) and the
    /// store's metadata (versions, modification times); never a value. A key counts when the
    /// version the pod would get now was written after the pod's status.startTime (whole
    /// seconds: a version written in the same second counts as newer).
    Status {
        env: String,
        service: Option<String>,
        /// Only pods of this namespace
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Roll the workloads whose pods run versions of ENV (or of its SERVICE) rotated since they started
    ///
    /// Patches the pod template annotation restart.sidekey.io/versions-hash (a hash of the versions
    /// the pods resolve now): restarting twice for the same versions patches nothing.
    /// Deployments, StatefulSets and DaemonSets only; bare pods and Jobs are listed, never
    /// deleted. The global --timeout bounds the wait for rollouts. Exit status 3 when a
    /// rollout does not complete in time (nothing after it is patched).
    Restart {
        env: String,
        service: Option<String>,
        /// List what would roll; patch nothing
        #[arg(long)]
        dry_run: bool,
        /// Follow the rollouts until complete (or --timeout)
        #[arg(long)]
        wait: bool,
        /// Also roll workloads whose pods refresh their files with the sidecar
        #[arg(long)]
        include_refresh: bool,
        /// Workloads rolled at a time; the next ones wait until these complete
        #[arg(long, default_value_t = 5, value_name = "N")]
        max_in_flight: usize,
    },
    /// Delete a secret and all its versions
    Delete {
        env: String,
        service: String,
        key: String,
    },
    /// Environments: list, copy, destroy
    #[command(subcommand)]
    Env(EnvCommand),
    /// Write every KEY=value of a dotenv file as secrets of one service
    Import {
        env: String,
        service: String,
        /// The dotenv file ('-' for standard input)
        #[arg(long, value_name = "FILE")]
        dotenv: PathBuf,
    },
    /// Print every secret of a service as dotenv or JSON (values on stdout, only once audited)
    ///
    /// dotenv lines are KEY='value' (or KEY="value" for a value with a ') and read
    /// literally by a POSIX shell and the common dotenv readers; a value with no
    /// such form (${, a carriage return, ' mixed with $ ` " \) is refused: use
    /// --format json.
    Export {
        env: String,
        service: String,
        #[arg(long, value_enum, default_value_t = ExportFormat::Dotenv)]
        format: ExportFormat,
    },
    /// Roll a service's data key and re-seal every value under it as sk2. (with --allow-legacy
    /// also its plain String and sk1. values: the migration to sk2.)
    Rekey {
        env: String,
        service: String,
        #[command(flatten)]
        restart: RestartAfter,
    },
    /// Run a command with the secrets of services as environment variables (later services win)
    Exec {
        env: String,
        /// Comma-separated services, later ones override earlier ones
        services: String,
        /// The command and its arguments, after --
        #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Print an IAM policy that reads only this environment's secrets (and its bases')
    Policy(PolicyArgs),
    /// Show or verify audit records
    Audit(AuditArgs),
    /// Print manifests as the injector would mutate their pods (offline: no cluster, no AWS)
    ///
    /// Reads YAML as Kubernetes does (YAML 1.1: `0755` is octal, `yes`/`on`/`y` are booleans,
    /// merge keys `<<` applied) and writes YAML every YAML 1.1 or 1.2 reader reads back the same
    /// (ambiguous strings double-quoted), or JSON with `--output json` (one object; a v1 List of
    /// them for several documents). Document order is kept; comments, anchors and flow style are
    /// not (merges and aliases come out expanded) and keys come out sorted within each mapping.
    /// Pod templates of Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
    /// Job, CronJob and the items of a List are injected; other kinds pass through unchanged.
    /// All or nothing: if any document has a problem (a denial, an annotation that is not a
    /// string), every problem of every document is listed on standard error, nothing is printed
    /// on standard output, and the exit status is 1.
    Inject {
        /// Manifest file (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob, List); '-' for stdin
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// The namespace the pods would be created in (default: each manifest's, else "default")
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The injector's configuration file (default: the injector's defaults)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Read the ENTRYPOINT and CMD of target containers without a command from their image's registry (as the injector's --registry-lookup), so the printed manifests carry the command
        #[arg(long)]
        registry_lookup: bool,
        /// With --registry-lookup: registry credentials, a Docker config.json (default: ~/.docker/config.json when it exists)
        #[arg(long, value_name = "FILE", requires = "registry_lookup")]
        registry_auth: Option<PathBuf>,
        /// With --registry-lookup: PEM CA certificates trusted for registries besides the system's
        #[arg(long, value_name = "FILE", requires = "registry_lookup")]
        registry_ca: Option<PathBuf>,
    },
}

/// `--restart` after a write (rotate, rekey, env copy).
#[derive(Debug, Args)]
pub struct RestartAfter {
    /// Then roll exactly the workloads whose pods use what was written (as `sidekey restart`)
    #[arg(long)]
    pub restart: bool,
    /// With --restart: follow the rollouts until complete (or --timeout)
    #[arg(long, requires = "restart")]
    pub wait: bool,
    /// With --restart: also roll workloads whose pods refresh their files
    #[arg(long, requires = "restart")]
    pub include_refresh: bool,
    /// With --restart: workloads rolled at a time
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub max_in_flight: usize,
}

/// `sidekey env ...`
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Environments that hold at least one secret
    List,
    /// Copy every secret of FROM into TO, re-encrypted under TO's context
    Copy {
        from: String,
        to: String,
        /// Allow writing into an environment that already has secrets
        #[arg(long)]
        overwrite: bool,
        #[command(flatten)]
        restart: RestartAfter,
    },
    /// Delete every secret of an environment
    Destroy {
        env: String,
        /// Confirm: without it nothing is deleted
        #[arg(long)]
        yes: bool,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    Dotenv,
    Json,
}

/// `sidekey policy ...`
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// The environment (not needed with --pod-identity)
    #[arg(required_unless_present = "pod_identity")]
    pub env: Option<String>,
    /// A base environment it inherits from (repeatable)
    #[arg(long = "inherit", value_name = "BASE")]
    pub inherit: Vec<String>,
    /// One role for every namespace: the environment is the pod's namespace tag
    #[arg(long)]
    pub pod_identity: bool,
    /// AWS account id of the parameters (12 digits; required, no wildcards)
    #[arg(long, required = true, value_name = "ID")]
    pub account: String,
    /// Region of the parameters (default: the --region option, else the KMS key's region; no wildcards)
    #[arg(long = "policy-region", value_name = "R")]
    pub policy_region: Option<String>,
    /// ARN of the KMS key, arn:aws:kms:REGION:ACCOUNT:key/ID (required, no wildcards)
    #[arg(long, required = true, value_name = "ARN")]
    pub kms_key_arn: String,
    /// Also allow reading native SecureStrings written by other tools
    #[arg(long)]
    pub native: bool,
}

/// `sidekey audit ...`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    pub verify: Option<AuditCommand>,
    /// Audit files (JSON lines); standard input when none
    pub files: Vec<PathBuf>,
    /// Only this environment
    #[arg(long = "env")]
    pub environment: Option<String>,
    /// Only records naming this service
    #[arg(long)]
    pub service: Option<String>,
    /// Only records naming this key
    #[arg(long)]
    pub key: Option<String>,
    /// Only this pod
    #[arg(long)]
    pub pod: Option<String>,
    /// Only this outcome (success, denied, failure, skipped), or `retried`: agent starts that AWS throttled or that retried calls (their `aws` counts), whatever their outcome
    #[arg(long)]
    pub outcome: Option<String>,
    /// Only records since a time (RFC 3339) or for a duration back (15m, 2h, 7d)
    #[arg(long)]
    pub since: Option<String>,
    /// Write a self-contained HTML review page here (chain status, timeline, per key and per environment) instead of the table
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
}

/// `sidekey audit verify FILE...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit files: a removed, edited or reordered line fails
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
