//! The AWS SDK configuration every Ferry client shares (DynamoDB, Secrets
//! Manager, MSK, CloudWatch, Step Functions).
//!
//! The SDK sets no operation or attempt timeout by default, so a call to an
//! endpoint that accepts the connection and then never answers (a black-holed
//! route, a stuck proxy, a dropped NAT entry) waits for ever, and so does the
//! replicator. Every call is bounded here; a timed-out call is an ordinary
//! transient failure that Ferry's own retries and leases already handle.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

/// How long to wait for a TCP/TLS connection to an AWS endpoint.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt (one HTTP request) may take. Ferry's calls are small
/// (one DynamoDB item, a page of at most 1 MB, one secret, one metric batch).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one operation may take, retries by the SDK included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The timeouts above.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The SDK configuration from the standard AWS environment (region,
/// credentials, `AWS_ENDPOINT_URL`), with every call bounded.
pub async fn load() -> aws_config::SdkConfig {
    aws_config::from_env().timeout_config(timeouts()).load().await
}

/// What to check when an AWS endpoint could not be reached at all (the
/// connection failed or no answer came in time), for `service` (its
/// endpoint name, `dynamodb` or `secretsmanager`): in a VPC, the usual
/// cause is a private subnet with neither a VPC endpoint nor a NAT
/// gateway, and the error otherwise reads as if the request were wrong.
/// `None` when the service answered (its error says what is wrong).
/// (`SdkError` is the same type in every AWS SDK crate; DynamoDB's re-export
/// names it.)
pub fn unreachable_hint<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>, service: &str) -> Option<String> {
    use aws_sdk_dynamodb::error::SdkError;
    matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)).then(|| {
        format!(
            "{service} did not answer: functions in private subnets reach it through a VPC endpoint \
             (com.amazonaws.<region>.{service}) or a NAT gateway, and their security group must allow \
             outbound HTTPS (443); see the book's \"Network checklist\" (docs/src/operations/network.md)"
        )
    })
}

/// Crates that write credentials into their debug and trace events:
/// aws-sigv4 logs the canonical request, whose query (a presigned MSK IAM
/// token's) holds `X-Amz-Security-Token`, the session token of temporary
/// credentials.
pub const CREDENTIAL_LOGGING_TARGETS: &[&str] = &["aws_sigv4"];

/// Whether an event may be logged at all, whatever `RUST_LOG` says: not
/// below INFO from the crates of `CREDENTIAL_LOGGING_TARGETS`. Ferry's
/// logging (the CLI's and every function's) filters with it.
pub fn may_log(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO
        || !CREDENTIAL_LOGGING_TARGETS.iter().any(|t| {
            meta.target()
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// An AWS call's failure in words that are safe to show: the service's
/// error code and message and the HTTP status, or what kind of failure it
/// was (no answer, an answer that could not be read). Never the raw HTTP
/// response: `DisplayErrorContext` ends with the error's `Debug` form,
/// which for an answer that did not parse holds the response body, and a
/// Secrets Manager body is the secret.
pub fn describe<E>(e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::SdkError;
    let status = |r: &aws_sdk_dynamodb::config::http::HttpResponse| format!("HTTP {}", r.status().as_u16());
    match e {
        SdkError::ServiceError(s) => {
            let message = s.err().message().map(|m| format!(": {m}")).unwrap_or_default();
            match s.err().code() {
                Some(code) => format!("{code}{message} ({})", status(s.raw())),
                None => format!("{} without an error code{message}", status(s.raw())),
            }
        }
        SdkError::TimeoutError(_) => "no answer in time".to_owned(),
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_timeout() {
                "timed out"
            } else if d.is_io() {
                "an I/O error"
            } else {
                "could not connect"
            };
            format!("the request could not be sent ({kind})")
        }
        SdkError::ResponseError(r) => format!("the answer could not be read ({})", status(r.raw())),
        SdkError::ConstructionFailure(_) => "the request could not be built".to_owned(),
        _ => "an unexpected failure".to_owned(),
    }
}

/// Whether an AWS call may succeed if made again soon: no answer, a
/// broken response, throttling or a server-side error; not a refusal
/// (access denied, not found, bad request).
pub fn is_transient<E, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    use aws_sdk_dynamodb::error::SdkError;
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        // No error code: not a modelled answer of the service (a gateway's
        // 5xx, a body cut short), so not a refusal either.
        SdkError::ServiceError(s) if s.err().code().is_none() => true,
        SdkError::ServiceError(s) => matches!(
            s.err().code(),
            Some(
                "ThrottlingException"
                    | "Throttling"
                    | "TooManyRequestsException"
                    | "RequestLimitExceeded"
                    | "InternalServiceError"
                    | "InternalServiceErrorException"
                    | "InternalServerErrorException"
                    | "ServiceUnavailableException"
                    | "InternalFailure"
                    | "ServiceUnavailable"
            )
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_that_never_answers_points_at_the_network() {
        use aws_sdk_dynamodb::error::SdkError;
        let timeout: SdkError<(), ()> = SdkError::timeout_error("attempt timed out");
        let hint = unreachable_hint(&timeout, "secretsmanager").expect("a hint");
        assert!(
            hint.contains("com.amazonaws.<region>.secretsmanager") && hint.contains("NAT"),
            "{hint}"
        );
        let refused: SdkError<(), ()> = SdkError::construction_failure("bad input");
        assert_eq!(unreachable_hint(&refused, "dynamodb"), None);
    }

    /// An answer that does not parse is described by its status alone: the
    /// raw response (for Secrets Manager, the secret) never shows.
    #[test]
    fn an_unreadable_answer_is_described_without_its_body() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::error::SdkError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let body = r#"{"SecretString":"{\"password\":"hunter2-secret"#;
        let raw = HttpResponse::new(StatusCode::try_from(200).expect("status"), SdkBody::from(body));
        let e: SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError, HttpResponse> =
            SdkError::response_error("unexpected end of input", raw);
        let shown = describe(&e);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("HTTP 200"), "{shown}");
    }

    /// A service error says its code, its message and the HTTP status.
    #[test]
    fn a_service_error_keeps_its_code_message_and_status() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::error::{ErrorMetadata, SdkError};
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let raw = HttpResponse::new(StatusCode::try_from(400).expect("status"), SdkBody::from("body-not-shown"));
        let err = GetItemError::generic(
            ErrorMetadata::builder()
                .code("ThrottlingException")
                .message("Rate exceeded")
                .build(),
        );
        let e: SdkError<GetItemError, HttpResponse> = SdkError::service_error(err, raw);
        let shown = describe(&e);
        assert_eq!(shown, "ThrottlingException: Rate exceeded (HTTP 400)");
    }

    /// An answer without an error code (a body cut short, a gateway's 5xx)
    /// is not the service refusing: it is tried again.
    #[test]
    fn an_answer_without_an_error_code_is_transient() {
        use aws_sdk_dynamodb::config::http::HttpResponse;
        use aws_sdk_dynamodb::error::{ErrorMetadata, SdkError};
        use aws_sdk_dynamodb::operation::get_item::GetItemError;
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let raw = HttpResponse::new(StatusCode::try_from(200).expect("status"), SdkBody::from("{\"cut"));
        let e: SdkError<GetItemError, HttpResponse> = SdkError::service_error(GetItemError::generic(ErrorMetadata::builder().build()), raw);
        assert!(is_transient(&e));
        assert_eq!(describe(&e), "HTTP 200 without an error code");
        let raw = HttpResponse::new(StatusCode::try_from(403).expect("status"), SdkBody::from(""));
        let denied = GetItemError::generic(ErrorMetadata::builder().code("AccessDeniedException").build());
        assert!(!is_transient(&SdkError::<GetItemError, HttpResponse>::service_error(denied, raw)));
    }

    #[tokio::test]
    async fn loaded_config_bounds_every_call() {
        let aws = load().await;
        let t = aws.timeout_config().expect("a timeout config");
        assert_eq!(t.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(t.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(t.operation_timeout(), Some(OPERATION_TIMEOUT));
    }
}
