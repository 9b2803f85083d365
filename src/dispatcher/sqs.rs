//! Sends a batch of queue messages with one `SendMessageBatch` call and says, entry by entry,
//! what became of it.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use super::{message::QueueMessage, routing::AgentRole, EntryOutcome};
use crate::{
    aws::{classify, Fault},
    config::AgentQueueUrls,
};

/// The four agent queues on SQS.
pub(crate) struct SqsQueues {
    client: aws_sdk_sqs::Client,
    urls: [String; 4],
}

impl SqsQueues {
    pub(crate) fn new(client: aws_sdk_sqs::Client, urls: AgentQueueUrls) -> Self {
        SqsQueues { client, urls: [urls.pm, urls.dev, urls.qa, urls.ops] }
    }

    pub(crate) fn url(&self, role: AgentRole) -> &str {
        &self.urls[role.index()]
    }

    /// FIFO queues keep order per project and deduplicate by message id.
    pub(crate) fn is_fifo(&self, role: AgentRole) -> bool {
        self.url(role).ends_with(".fifo")
    }

    /// One SendMessageBatch call; the outcome of each entry, in order.
    pub(crate) async fn send_batch(&self, role: AgentRole, messages: &[&QueueMessage]) -> Vec<EntryOutcome> {
        let fifo = self.is_fifo(role);
        let mut entries = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            match entry(index, message, fifo) {
                Ok(entry) => entries.push(entry),
                Err(error) => {
                    return vec![EntryOutcome::Failed(format!("cannot build the SQS request: {error}")); messages.len()]
                }
            }
        }
        let response =
            self.client.send_message_batch().queue_url(self.url(role)).set_entries(Some(entries)).send().await;
        let output = match response {
            Ok(output) => output,
            Err(error) => {
                let outcome = match classify(&error) {
                    Fault::Transient(reason) => EntryOutcome::Retry(reason),
                    Fault::Permanent(reason) => EntryOutcome::Failed(reason),
                };
                return vec![outcome; messages.len()];
            }
        };
        let mut outcomes = vec![EntryOutcome::Retry("SQS did not report this entry".into()); messages.len()];
        for sent in output.successful() {
            if let Some(slot) = sent.id().parse::<usize>().ok().and_then(|i| outcomes.get_mut(i)) {
                *slot = EntryOutcome::Sent(sent.message_id().to_owned());
            }
        }
        for failed in output.failed() {
            if let Some(slot) = failed.id().parse::<usize>().ok().and_then(|i| outcomes.get_mut(i)) {
                let reason = format!("{}: {}", failed.code(), failed.message().unwrap_or("no message"));
                *slot = if failed.sender_fault() { EntryOutcome::Failed(reason) } else { EntryOutcome::Retry(reason) };
            }
        }
        outcomes
    }
}

fn entry(
    index: usize,
    message: &QueueMessage,
    fifo: bool,
) -> Result<SendMessageBatchRequestEntry, aws_sdk_sqs::error::BuildError> {
    let mut builder = SendMessageBatchRequestEntry::builder().id(index.to_string()).message_body(&message.body);
    for (name, value) in message.attributes() {
        builder = builder.message_attributes(
            name,
            MessageAttributeValue::builder().data_type("String").string_value(value).build()?,
        );
    }
    if fifo {
        builder = builder.message_group_id(&message.project_id).message_deduplication_id(&message.message_id);
    }
    builder.build()
}
