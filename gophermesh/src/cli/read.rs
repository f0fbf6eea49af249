//! The flags of the commands that read App Mesh as users wrote it (`apply`, `convert`,
//! `up -f`, `serve --import`): a template's parameters and stack name, the mesh of
//! Kubernetes objects nothing else places, and (for `apply` and `convert`; `up` and
//! `serve` take their own `--api-region` and `--api-account-id`) the region and account
//! the pseudo parameters say.

use clap::Args;

/// How templates and manifests are read.
#[derive(Debug, Clone, Args)]
pub(crate) struct TemplateArgs {
    /// A template parameter's value, KEY=VALUE (repeatable); others take their Default.
    #[arg(long = "parameter", value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub(crate) parameters: Vec<(String, String)>,

    /// `AWS::StackName` for templates; a resource whose name CloudFormation would make
    /// is named STACK-LOGICALID. Default: the file's name without its extension.
    #[arg(long)]
    pub(crate) stack_name: Option<String>,

    /// The mesh of Kubernetes objects that no `meshRef`, and no Mesh's
    /// `namespaceSelector` over the Namespace objects given, places in one.
    #[arg(long)]
    pub(crate) mesh: Option<String>,
}

impl TemplateArgs {
    /// The reading options, with `imports` for `Fn::ImportValue` and the region and
    /// account of `AWS::Region` and `AWS::AccountId`.
    pub(crate) fn options(
        &self,
        imports: &[(String, String)],
        region: &str,
        account: &str,
    ) -> meshmodel::import::Options {
        meshmodel::import::Options {
            cfn: meshmodel::import::cfn::Options {
                parameters: self.parameters.iter().cloned().collect(),
                imports: imports.iter().cloned().collect(),
                region: region.to_owned(),
                account: account.to_owned(),
                stack_name: self.stack_name.clone().unwrap_or_default(),
            },
            mesh: self.mesh.clone(),
        }
    }
}

/// [`TemplateArgs`] with the region and account the ARNs a template makes name (those of
/// the control plane it is applied to, to agree with the ARNs it reports).
#[derive(Debug, Clone, Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    pub(crate) template: TemplateArgs,

    /// `AWS::Region` for templates: the control plane's region (its --api-region).
    #[arg(long, env = "GOPHERMESH_API_REGION", default_value = "us-east-1")]
    pub(crate) region: String,

    /// `AWS::AccountId` for templates: the control plane's account (its --api-account-id).
    #[arg(
        long,
        env = "GOPHERMESH_API_ACCOUNT_ID",
        default_value = "000000000000"
    )]
    pub(crate) account_id: String,
}

impl ReadArgs {
    /// The reading options, with `imports` for `Fn::ImportValue`.
    pub(crate) fn options(&self, imports: &[(String, String)]) -> meshmodel::import::Options {
        self.template
            .options(imports, &self.region, &self.account_id)
    }
}

/// `KEY=VALUE` (the value may hold `=`).
pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}`: write KEY=VALUE")),
    }
}
