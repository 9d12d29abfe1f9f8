//! Single-flight renewal: concurrent calls refused with the same dead token
//! cost one token request, and a rotated refresh token is kept before use.

use std::sync::Arc;

use oauth2::TokenResponse;
use secrecy::SecretString;

use super::{Authenticator, Flow, KeptRefreshToken, LoginRefusal, RefreshState, Session};
use crate::salesforce::error::{SalesforceError, excerpt};

impl Authenticator {
    /// A session other than `failed`: the one another caller already got
    /// while we waited for the lock, or a new token.
    ///
    /// `failed` is the session a call was refused with (`None`: no session
    /// was seen yet). Comparing by identity is what makes concurrent 401s
    /// cost one token request.
    pub(crate) async fn renew(
        &self,
        failed: Option<&Arc<Session>>,
    ) -> Result<Arc<Session>, SalesforceError> {
        let mut refresh = self.renewal.lock().await;
        if let Some(current) = self.current() {
            let still_failing = failed.is_some_and(|failed| Arc::ptr_eq(failed, &current));
            if !still_failing {
                return Ok(current);
            }
        }
        self.consult_keeper(&mut refresh)?;
        let answer = self.request_token(&refresh.token).await;
        if let Err(error @ SalesforceError::Auth { .. }) = &answer {
            let mut refused = self.lock_refused();
            let since = refused
                .as_ref()
                .map_or_else(chrono::Utc::now, |refusal| refusal.since);
            *refused = Some(LoginRefusal {
                since,
                message: error.to_string(),
            });
        }
        let answer = answer?;
        let instance_url = answer.extra_fields().instance_url.trim_end_matches('/');
        if !instance_url.starts_with("https://") && !instance_url.starts_with("http://") {
            return Err(SalesforceError::Decode {
                what: format!("instance_url in the token answer from {}", self.token_url),
                excerpt: excerpt(instance_url.as_bytes()),
            });
        }
        let session = Arc::new(Session {
            access_token: SecretString::from(answer.access_token().secret().to_owned()),
            instance_url: instance_url.to_owned(),
        });
        if let Some(rotated) = answer.refresh_token() {
            // With rotation on, the old refresh token is dead from now on:
            // the new one is kept on disk before its access token is used.
            let rotated = SecretString::from(rotated.secret().to_owned());
            refresh.token = Some(rotated.clone());
            if let (
                Some(keeper),
                Flow::RefreshToken {
                    file_fingerprint, ..
                },
            ) = (self.keeper.get(), &self.flow)
            {
                let kept = KeptRefreshToken {
                    token: rotated,
                    file_fingerprint: file_fingerprint.clone(),
                };
                keeper
                    .keep(&kept)
                    .await
                    .map_err(|reason| SalesforceError::TokenNotKept { reason })?;
            }
            tracing::info!(
                flow = self.flow.name(),
                kept = self.keeper.get().is_some(),
                "salesforce rotated the refresh token"
            );
        }
        tracing::info!(
            flow = self.flow.name(),
            instance_url = %session.instance_url,
            user = answer.extra_fields().id.as_deref().unwrap_or(""),
            "salesforce access token obtained"
        );
        *self.lock_refused() = None;
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(session.clone());
        Ok(session)
    }

    fn lock_refused(&self) -> std::sync::MutexGuard<'_, Option<LoginRefusal>> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Since when logins are refused, while no login succeeded since.
    pub(crate) fn refusal(&self) -> Option<LoginRefusal> {
        self.lock_refused().clone()
    }

    /// Once, before the first refresh with a keeper: takes the kept token
    /// when it descends from the configured file (the file's own token was
    /// rotated away), else keeps to the file (an operator put a new one).
    fn consult_keeper(&self, refresh: &mut RefreshState) -> Result<(), SalesforceError> {
        let (
            Some(keeper),
            Flow::RefreshToken {
                file_fingerprint, ..
            },
        ) = (self.keeper.get(), &self.flow)
        else {
            return Ok(());
        };
        if refresh.keeper_consulted {
            return Ok(());
        }
        let kept = keeper
            .load()
            .map_err(|reason| SalesforceError::TokenNotKept { reason })?;
        refresh.keeper_consulted = true;
        match kept {
            Some(kept) if kept.file_fingerprint == *file_fingerprint => {
                tracing::info!("using the newest salesforce refresh token, kept in the store");
                refresh.token = Some(kept.token);
            }
            Some(_) => tracing::info!(
                "salesforce.refresh_token_file changed since the kept refresh token was issued: the file's token is used"
            ),
            None => {}
        }
        Ok(())
    }
}
