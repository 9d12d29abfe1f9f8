//! Keyspace `credentials`: the newest Salesforce refresh token. With
//! rotation on, every refresh answers a new refresh token and revokes the
//! old one, so the newest must outlive the process; it is kept with the
//! fingerprint of the `refresh_token_file` content it descends from, so an
//! operator's new file wins over it.

use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::codec;
use super::{Store, StoreError};
use crate::salesforce::{KeptRefreshToken, RefreshTokenKeeper};

/// Keyspace: credentials that change at run time, by name.
const CREDENTIALS_TREE: &str = "credentials";
const REFRESH_TOKEN_KEY: &[u8] = b"salesforce_refresh_token";

/// The stored form; never logged (no `Debug`).
#[derive(Serialize, Deserialize)]
struct StoredRefreshToken {
    token: String,
    file_fingerprint: String,
}

impl Store {
    fn credentials(&self) -> Result<sled::Tree, StoreError> {
        self.inner
            .db
            .open_tree(CREDENTIALS_TREE)
            .map_err(StoreError::database("open the credentials"))
    }

    /// The newest refresh token kept, if any.
    pub fn refresh_token(&self) -> Result<Option<KeptRefreshToken>, StoreError> {
        self.credentials()?
            .get(REFRESH_TOKEN_KEY)
            .map_err(StoreError::database("read the refresh token"))?
            .map(|bytes| {
                codec::decode_value::<StoredRefreshToken>(
                    CREDENTIALS_TREE,
                    REFRESH_TOKEN_KEY,
                    &bytes,
                )
            })
            .transpose()
            .map(|stored| {
                stored.map(|stored| KeptRefreshToken {
                    token: SecretString::from(stored.token),
                    file_fingerprint: stored.file_fingerprint,
                })
            })
    }

    /// Keeps `kept` as the newest refresh token, on disk when it returns.
    pub async fn keep_refresh_token(&self, kept: &KeptRefreshToken) -> Result<(), StoreError> {
        let value = codec::encode_value(
            CREDENTIALS_TREE,
            &StoredRefreshToken {
                token: kept.token.expose_secret().to_owned(),
                file_fingerprint: kept.file_fingerprint.clone(),
            },
        )?;
        self.credentials()?
            .insert(REFRESH_TOKEN_KEY, value)
            .map_err(StoreError::database("keep the refresh token"))?;
        self.flush().await
    }
}

impl RefreshTokenKeeper for Store {
    fn load(&self) -> Result<Option<KeptRefreshToken>, String> {
        self.refresh_token().map_err(|error| error.to_string())
    }

    fn keep<'a>(&'a self, kept: &'a KeptRefreshToken) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.keep_refresh_token(kept)
                .await
                .map_err(|error| error.to_string())
        })
    }
}
