//! Which AWS the gateway talks to: the region of its queues and table, or an emulator.

use super::{
    values::{check_http_url, non_empty},
    ConfigError,
};

/// The AWS SDK's settings ([`crate::aws::sdk_config`]).
#[derive(Clone, Debug, clap::Args)]
pub struct AwsSettings {
    /// AWS region of the queues and the table.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,

    /// Endpoint of an AWS emulator (moto, fauxqs) for SQS and DynamoDB; unset = real AWS.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
}

impl AwsSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match non_empty(&self.aws_endpoint_url) {
            Some(url) => {
                check_http_url(url).map_err(|reason| ConfigError::Invalid { variable: "AWS_ENDPOINT_URL", reason })
            }
            None => Ok(()),
        }
    }
}
