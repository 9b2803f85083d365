//! The SQS queues: the four agent queues forwards go to, and the queue of agent updates.

use super::{
    values::{check_http_url, non_empty},
    ConfigError,
};

/// The queue URLs, all in one place: the dispatcher's four ([`crate::dispatcher`]) and the
/// updates consumer's ([`crate::updates`]).
#[derive(Clone, Debug, clap::Args)]
pub struct QueueSettings {
    /// SQS queue URL of the PM agent (all four agent queue URLs or none).
    #[arg(long, env = "SQS_QUEUE_URL_PM")]
    pub sqs_queue_url_pm: Option<String>,

    /// SQS queue URL of the Dev agent.
    #[arg(long, env = "SQS_QUEUE_URL_DEV")]
    pub sqs_queue_url_dev: Option<String>,

    /// SQS queue URL of the QA agent.
    #[arg(long, env = "SQS_QUEUE_URL_QA")]
    pub sqs_queue_url_qa: Option<String>,

    /// SQS queue URL of the Ops agent.
    #[arg(long, env = "SQS_QUEUE_URL_OPS")]
    pub sqs_queue_url_ops: Option<String>,

    /// Queue of agent updates to publish to their projects (long-polled by every task); unset =
    /// no updates consumer.
    #[arg(long, env = "SQS_QUEUE_URL_UPDATES")]
    pub sqs_queue_url_updates: Option<String>,
}

/// The four agent queues, when all are configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentQueueUrls {
    pub pm: String,
    pub dev: String,
    pub qa: String,
    pub ops: String,
}

impl QueueSettings {
    /// All four agent queues or none, and every URL set is an http(s) URL. The all-or-none rule
    /// is not clap's `requires_all`: an empty variable counts as unset, which clap's `requires`
    /// cannot say, and a configuration built in code never meets clap.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.agent_queue_urls()?;
        for (variable, url) in
            self.agent_queues().into_iter().chain([("SQS_QUEUE_URL_UPDATES", &self.sqs_queue_url_updates)])
        {
            if let Some(url) = non_empty(url) {
                check_http_url(url).map_err(|reason| ConfigError::Invalid { variable, reason })?;
            }
        }
        Ok(())
    }

    fn agent_queues(&self) -> [(&'static str, &Option<String>); 4] {
        [
            ("SQS_QUEUE_URL_PM", &self.sqs_queue_url_pm),
            ("SQS_QUEUE_URL_DEV", &self.sqs_queue_url_dev),
            ("SQS_QUEUE_URL_QA", &self.sqs_queue_url_qa),
            ("SQS_QUEUE_URL_OPS", &self.sqs_queue_url_ops),
        ]
    }

    /// The agent queues: `Ok(None)` when none is set (local spool), an error naming the missing
    /// ones when only some are.
    pub fn agent_queue_urls(&self) -> Result<Option<AgentQueueUrls>, ConfigError> {
        let missing: Vec<&'static str> =
            self.agent_queues().into_iter().filter(|(_, url)| non_empty(url).is_none()).map(|(name, _)| name).collect();
        match missing.len() {
            4 => Ok(None),
            0 => Ok(Some(AgentQueueUrls {
                pm: self.sqs_queue_url_pm.clone().unwrap_or_default(),
                dev: self.sqs_queue_url_dev.clone().unwrap_or_default(),
                qa: self.sqs_queue_url_qa.clone().unwrap_or_default(),
                ops: self.sqs_queue_url_ops.clone().unwrap_or_default(),
            })),
            _ => Err(ConfigError::PartialQueues { missing }),
        }
    }

    pub fn updates_queue_url(&self) -> Option<&str> {
        non_empty(&self.sqs_queue_url_updates)
    }
}
