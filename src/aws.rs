//! AWS plumbing shared by the queue dispatcher and the persistence actor: the SDK
//! configuration, and how a failed call is classified (retry it, or report it).
//!
//! The SDK reads the usual environment: `AWS_REGION` (our setting wins), credentials from the
//! ECS task role, and `AWS_ENDPOINT_URL` for a local emulator.

use std::time::Duration;

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region, SdkConfig};
use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_sqs::{
    config::http::HttpResponse,
    error::{ProvideErrorMetadata, SdkError},
};

/// Connect timeout: an unreachable endpoint is a fault to retry, found quickly.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt's limit; our own retry loop (bounded by the forward deadline) takes it from there.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// How much longer than its wait a long poll may take before it is abandoned: the answer of a
/// poll that waited its whole time still has to travel back.
const LONG_POLL_MARGIN: Duration = Duration::from_secs(10);

/// Loads the SDK configuration for `region`, against `endpoint_url` when given (an emulator).
pub async fn sdk_config(region: &str, endpoint_url: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(endpoint_url) = endpoint_url {
        loader = loader.endpoint_url(endpoint_url);
    }
    loader
        .region(Region::new(region.to_owned()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .build(),
        )
        // Retries are ours: they respect each forward's deadline and show in our metrics.
        .retry_config(RetryConfig::disabled())
        .load()
        .await
}

/// Timeouts for a long poll that waits up to `wait` on the server (SQS ReceiveMessage). The
/// default attempt timeout is shorter than such a wait: an attempt abandoned while SQS still
/// holds it open lets SQS hand a message to a request nobody reads any more, and that message
/// stays invisible for the queue's visibility timeout. So the attempt outlives the wait.
pub(crate) fn long_poll_timeouts(wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).operation_attempt_timeout(wait + LONG_POLL_MARGIN).build()
}

/// Whether a failed call is worth retrying.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Throttling, a 5xx, a timeout or a network failure: not the sender's fault, retry.
    Transient(String),
    /// The request itself is wrong (missing queue, access denied, bad input): report it.
    Permanent(String),
}

/// Error codes the SDK's own retry classifier does not list but that are throttling all the
/// same: SQS refusing a message because KMS throttled the queue's key.
const MORE_THROTTLING_CODES: &[&str] = &["KmsThrottled"];

/// Whether an AWS error code says "not now" rather than "never": the codes the SDK's retry
/// classifier retries (its throttling and transient lists: `TransactionInProgressException`,
/// `RequestTimeout`, `SlowDown`, ...), and ours. The SDK's retries are off (ours respect each
/// forward's deadline), so its lists are read here rather than kept as a copy that falls behind.
fn is_retryable_code(code: &str) -> bool {
    [THROTTLING_ERRORS, TRANSIENT_ERRORS, MORE_THROTTLING_CODES].iter().any(|codes| codes.contains(&code))
}

/// Classifies an SDK error of any AWS operation: a retryable code or a 5xx is transient, as are
/// timeouts and network failures; any other answer of the service is permanent.
pub(crate) fn classify<E>(error: &SdkError<E, HttpResponse>) -> Fault
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            let code = service_error.code().unwrap_or("Unknown");
            let message = format!("{code}: {}", service_error.message().unwrap_or("no message"));
            if is_retryable_code(code) || context.raw().status().is_server_error() {
                Fault::Transient(message)
            } else {
                Fault::Permanent(message)
            }
        }
        SdkError::ConstructionFailure(_) => Fault::Permanent(describe(error)),
        _ => Fault::Transient(describe(error)),
    }
}

/// The error and its sources on one line (the SDK's Display alone says only "dispatch failure").
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Exponential backoff with full jitter: a random wait in [0, min(cap, base * 2^attempt)].
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service error answered with `code` and HTTP `status`, as the SDK hands it over.
    fn service_error(
        code: &str,
        status: u16,
    ) -> SdkError<aws_sdk_sqs::operation::send_message::SendMessageError, HttpResponse> {
        let metadata = aws_sdk_sqs::error::ErrorMetadata::builder().code(code).message("from the test").build();
        let error = aws_sdk_sqs::operation::send_message::SendMessageError::generic(metadata);
        let response = HttpResponse::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).expect("a valid status"),
            aws_smithy_types::body::SdkBody::empty(),
        );
        SdkError::service_error(error, response)
    }

    #[test]
    fn throttling_and_transient_codes_are_retried_and_the_rest_reported() {
        for code in [
            "ThrottlingException",
            "TransactionInProgressException",
            "RequestTimeout",
            "RequestTimeoutException",
            "ProvisionedThroughputExceededException",
            "SlowDown",
            "KmsThrottled",
        ] {
            assert!(matches!(classify(&service_error(code, 400)), Fault::Transient(_)), "{code}");
        }
        for code in ["AccessDeniedException", "ValidationException", "AWS.SimpleQueueService.NonExistentQueue"] {
            assert_eq!(classify(&service_error(code, 400)), Fault::Permanent(format!("{code}: from the test")));
        }
        assert!(matches!(classify(&service_error("InternalFailure", 500)), Fault::Transient(_)));
    }

    #[test]
    fn backoff_stays_under_the_cap() {
        for attempt in 0..40 {
            let wait = backoff(attempt, Duration::from_millis(50), Duration::from_secs(2));
            assert!(wait <= Duration::from_secs(2));
        }
        assert!(backoff(0, Duration::from_millis(50), Duration::from_secs(2)) <= Duration::from_millis(50));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_ceiling() {
        // Attempt 3 of a 50 ms base: a ceiling of 400 ms, each wait drawn evenly under it. A
        // thousand draws all in one half has a chance of 2^-999.
        let waits: Vec<Duration> =
            (0..1000).map(|_| backoff(3, Duration::from_millis(50), Duration::from_secs(2))).collect();
        assert!(waits.iter().all(|wait| *wait <= Duration::from_millis(400)));
        assert!(waits.iter().any(|wait| *wait > Duration::from_millis(200)), "never in the upper half");
        assert!(waits.iter().any(|wait| *wait < Duration::from_millis(200)), "never in the lower half");
        let capped = (0..1000).map(|_| backoff(30, Duration::from_millis(50), Duration::from_secs(2)));
        assert!(capped.clone().any(|wait| wait > Duration::from_secs(1)), "the cap is reached");
    }
}
