//! The HTTP plumbing both providers share: the client with its timeout and bearer key, mapping
//! transport failures and status codes to `Error`, and retries with jittered backoff.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::error::{Error, MAX_QUOTED_CHARS, Result, truncate};
use crate::settings::ModelSettings;

const BACKOFF_BASE: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A server asking for a longer pause than this is treated as down rather than waited for.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);

/// A failed attempt, with the server's `Retry-After` when it sent one.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: Error,
    pub retry_after: Option<Duration>,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self { error, retry_after: None }
    }
}

pub(crate) type AttemptResult<T> = std::result::Result<T, Failure>;

pub(crate) struct Transport {
    client: reqwest::Client,
    settings: ModelSettings,
}

impl Transport {
    pub fn new(settings: &ModelSettings) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidSettings { reason };
        let url = reqwest::Url::parse(settings.base_url.trim())
            .map_err(|e| invalid(format!("base_url {:?} is not a url ({e})", settings.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!("base_url {:?} must start with http:// or https://", settings.base_url)));
        }
        if settings.model.trim().is_empty() {
            return Err(invalid("model is empty".to_owned()));
        }
        if settings.request_timeout_s == 0 {
            return Err(invalid("request_timeout_s must be at least 1".to_owned()));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.request_timeout_s))
            .build()
            .map_err(|e| invalid(format!("cannot build the http client ({e})")))?;
        Ok(Self { client, settings: settings.clone() })
    }

    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    /// `base_url` without trailing slashes.
    pub fn base(&self) -> &str {
        self.settings.base_url.trim().trim_end_matches('/')
    }

    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let builder = self.client.request(method, url);
        match self.settings.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// Sends and turns every non-2xx status into an error (401/403 -> `Unauthorized`).
    pub async fn send(&self, builder: RequestBuilder, url: &str) -> AttemptResult<Response> {
        let response = builder.send().await.map_err(|e| self.transport_error(e, url))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(Error::Unauthorized { url: url.to_owned() }.into());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(|secs| Duration::from_secs_f64(secs).min(RETRY_AFTER_CAP));
        // The body explains the failure; if it cannot be read the status alone still does.
        let body = response.text().await.unwrap_or_default();
        Err(Failure {
            error: Error::Http { status: status.as_u16(), body: self.redact(&truncate(body.trim(), MAX_QUOTED_CHARS)) },
            retry_after,
        })
    }

    pub fn transport_error(&self, error: reqwest::Error, url: &str) -> Error {
        if error.is_timeout() {
            return Error::Timeout { url: url.to_owned(), after: Duration::from_secs(self.settings.request_timeout_s) };
        }
        // reqwest's own message is generic ("error sending request"); the cause is at the bottom.
        let mut cause: &dyn std::error::Error = &error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        Error::Unreachable {
            provider: self.settings.provider,
            url: url.to_owned(),
            reason: self.redact(&cause.to_string()),
        }
    }

    /// Servers sometimes echo request headers in error bodies.
    pub fn redact(&self, text: &str) -> String {
        match self.settings.api_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) if text.contains(key) => text.replace(key, "<redacted>"),
            _ => text.to_owned(),
        }
    }

    /// Runs `op` until it succeeds, fails for good, or retries run out. `may_retry` lets a
    /// streaming caller forbid retries once it has handed text on. Returns the attempts made.
    pub async fn retry<T, F, Fut>(
        &self,
        url: &str,
        may_retry: &(dyn Fn() -> bool + Send + Sync),
        mut op: F,
    ) -> Result<(T, u32)>
    where
        F: FnMut() -> Fut + Send,
        Fut: Future<Output = AttemptResult<T>> + Send,
    {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match op().await {
                Ok(value) => return Ok((value, attempt)),
                Err(failure) => failure,
            };
            if !failure.error.is_retryable() || attempt > self.settings.max_retries || !may_retry() {
                return Err(failure.error);
            }
            let delay = backoff_delay(attempt, failure.retry_after);
            tracing::warn!(
                model = %self.settings.model,
                url,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %failure.error,
                "model call failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Exponential from `BACKOFF_BASE` to `BACKOFF_MAX`, jittered into [half, full] so that many
/// agents failing together do not retry in lockstep; never shorter than the server asked for.
fn backoff_delay(attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1))).min(BACKOFF_MAX);
    let jittered = exp.mul_f64(rand::rng().random_range(0.5..=1.0));
    retry_after.map_or(jittered, |asked| asked.max(jittered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        for attempt in 1..=10 {
            let d = backoff_delay(attempt, None);
            let full = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(attempt - 1)).min(BACKOFF_MAX);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff_delay(1, Some(Duration::from_secs(2))) >= Duration::from_secs(2));
    }

    #[test]
    fn invalid_base_url_is_a_settings_error() {
        let s = ModelSettings::new(crate::Provider::Ollama, "localhost:11434", "m");
        assert!(matches!(Transport::new(&s), Err(Error::InvalidSettings { .. })));
    }
}
