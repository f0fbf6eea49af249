//! What every AWS SDK client of the state shares (DynamoDB, Cloud Map): how it is
//! configured, and how what a service said is told in one line.

/// What an AWS service (`service`, or the way to it) said, in one line: the service's
/// code and message, or the innermost cause when it could not be reached.
pub(crate) fn said<E>(
    // The SDK's crates share these types (DynamoDB's re-exports name them).
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    service: &str,
) -> String
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_dynamodb::error::SdkError;
    match e {
        SdkError::ServiceError(s) => {
            let meta = s.err().meta();
            match (meta.code(), meta.message()) {
                (Some(code), message) => format!("{code}: {}", message.unwrap_or("(no message)")),
                // An answer the SDK could not read as an error: its status and body.
                (None, _) => {
                    let body = s.raw().body().bytes().unwrap_or_default();
                    let text = String::from_utf8_lossy(body);
                    format!(
                        "HTTP {}: {}",
                        s.raw().status().as_u16(),
                        text.chars().take(300).collect::<String>()
                    )
                }
            }
        }
        SdkError::TimeoutError(_) => format!("{service} did not answer in time"),
        _ => {
            let mut cause: &dyn std::error::Error = e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            format!("cannot reach {service}: {cause}")
        }
    }
}

/// The HTTP client of every AWS SDK client here: HTTPS over rustls.
pub(crate) fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// How every AWS SDK client here is configured: from the environment (region,
/// credentials from the environment, a profile or the task role; `AWS_ENDPOINT_URL`), over
/// rustls, with short timeouts (a control plane waits for no one long).
pub(crate) async fn sdk_config() -> aws_config::SdkConfig {
    let http = https_client();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(3))
        .operation_timeout(std::time::Duration::from_secs(8))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .load()
        .await
}
