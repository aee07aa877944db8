//! The DynamoDB client the state store is made with: the SDK's own, with
//! one more error it retries.
//!
//! DynamoDB refuses a single write (PutItem, UpdateItem, DeleteItem) to an
//! item a transaction is writing at that moment with
//! TransactionConflictException: nothing was written, and the same request
//! passes once the transaction is done, milliseconds later. The SDK does
//! not retry it (it is neither a throttling nor a transient error to it).
//! A successor claiming a hand-off, or a plan recording a cursor's topic
//! ids, while the holder checkpoints, would fail for it and give up its
//! turn. Here the SDK retries it as it retries throttling (as it does
//! DynamoDB's TransactionInProgressException), within the same timeouts
//! (`crate::aws`): a throttling retry keeps the connection (a transient
//! one closes it) and costs half the retry tokens of the process's shared
//! budget (5 of 500, which only successes refill), so a burst of
//! conflicts neither reconnects every call nor empties the budget the
//! other calls' retries draw on as fast.

use aws_sdk_dynamodb::config::interceptors::InterceptorContext;
use aws_sdk_dynamodb::config::retry::{ClassifyRetry, RetryAction};
use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
use aws_smithy_types::retry::ErrorKind;

/// DynamoDB's error code for a write that met a transaction on its item.
const TRANSACTION_CONFLICT: &str = "TransactionConflictException";

/// A DynamoDB client on `aws` that also retries TransactionConflictException.
pub fn dynamodb_client(aws: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::config::Builder::from(aws)
        .retry_classifier(TransactionConflicts)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// Classifies TransactionConflictException as throttling. DynamoDB's JSON
/// protocol names the error in the body (`"__type": "...#<code>"`), which
/// the SDK has read whole by the time classifiers run.
#[derive(Debug)]
struct TransactionConflicts;

impl ClassifyRetry for TransactionConflicts {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let conflict = ctx
            .response()
            .filter(|r| r.status().as_u16() == 400)
            .and_then(|r| r.body().bytes())
            .is_some_and(is_transaction_conflict);
        if conflict {
            RetryAction::retryable_error(ErrorKind::ThrottlingError)
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "DynamoDB TransactionConflictException"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_before(RetryClassifierPriority::modeled_as_retryable_classifier())
    }
}

/// Whether an error body is DynamoDB's TransactionConflictException (and
/// not, say, a TransactionCanceledException whose reasons mention a
/// conflict: a cancelled transaction is sent again by the state store
/// itself, which knows whether a condition failed too).
fn is_transaction_conflict(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|b| {
            b.get("__type")?
                .as_str()
                .map(|k| k.rsplit('#').next() == Some(TRANSACTION_CONFLICT))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dynamodbs_transaction_conflict_is_one() {
        let conflict = br#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionConflictException","message":"Transaction is ongoing for the item"}"#;
        assert!(is_transaction_conflict(conflict));
        let cancelled = br#"{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException","CancellationReasons":[{"Code":"TransactionConflict"}]}"#;
        assert!(!is_transaction_conflict(cancelled));
        let condition =
            br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"TransactionConflictException"}"#;
        assert!(!is_transaction_conflict(condition));
        assert!(!is_transaction_conflict(b"not json"));
    }
}
