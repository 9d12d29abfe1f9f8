//! [`QueryPages`]: a SOQL query read page by page, following
//! `nextRecordsUrl` on the org's `instance_url`.

use crate::salesforce::Id;
use crate::salesforce::error::SalesforceError;
use crate::salesforce::model::{QueryAnswer, Record};

use super::answer::decode;
use super::{Endpoint, MAX_SOQL_LENGTH, QUERY_BATCH_HINT, QUERY_OPTIONS_HEADER, SalesforceClient};

/// A query being read page by page; nothing is sent before the first
/// [`QueryPages::next_page`].
///
/// After an error the position is kept: calling `next_page` again retries
/// the same page, except after [`SalesforceError::InvalidQueryLocator`],
/// where the query has to be restarted from the caller's own cursor.
pub struct QueryPages {
    client: SalesforceClient,
    next: NextPage,
    total_size: Option<u64>,
}

enum NextPage {
    First {
        soql: String,
        /// `query` or `queryAll`.
        resource: &'static str,
    },
    /// The `nextRecordsUrl` path of the page to read next.
    Locator(String),
    Done,
}

impl std::fmt::Debug for QueryPages {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let next = match &self.next {
            NextPage::First { resource, .. } => format!("first page of {resource}"),
            NextPage::Locator(path) => path.clone(),
            NextPage::Done => "done".to_owned(),
        };
        formatter
            .debug_struct("QueryPages")
            .field("next", &next)
            .field("total_size", &self.total_size)
            .finish()
    }
}

impl QueryPages {
    pub(super) fn new(
        client: SalesforceClient,
        soql: String,
        resource: &'static str,
    ) -> QueryPages {
        QueryPages {
            client,
            next: NextPage::First { soql, resource },
            total_size: None,
        }
    }

    /// The next page of rows, or `None` once the query is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>, SalesforceError> {
        let client = &self.client;
        let http = &client.inner.http;
        let (endpoint, body) = match &self.next {
            NextPage::Done => return Ok(None),
            NextPage::First { soql, resource } => {
                if soql.chars().count() > MAX_SOQL_LENGTH {
                    return Err(SalesforceError::InvalidArgument {
                        what: "soql statement (too long)",
                        value: format!(
                            "{} characters, at most {MAX_SOQL_LENGTH}",
                            soql.chars().count()
                        ),
                    });
                }
                let path = format!("{}/{resource}", client.data_path());
                let endpoint = format!("GET {path}");
                let body = client
                    .execute(Endpoint::Query, &endpoint, |instance_url| {
                        http.get(format!("{instance_url}{path}"))
                            .query(&[("q", soql)])
                            .header(QUERY_OPTIONS_HEADER, QUERY_BATCH_HINT)
                    })
                    .await?;
                (endpoint, body)
            }
            NextPage::Locator(path) => {
                let endpoint = format!("GET {path}");
                let body = client
                    .execute(Endpoint::QueryMore, &endpoint, |instance_url| {
                        http.get(format!("{instance_url}{path}"))
                            .header(QUERY_OPTIONS_HEADER, QUERY_BATCH_HINT)
                    })
                    .await?;
                (endpoint, body)
            }
        };
        let mut answer: QueryAnswer = decode(&endpoint, &body)?;
        answer.records.iter_mut().for_each(Id::normalise_record);
        self.next = match (answer.done, answer.next_records_url) {
            (true, _) => NextPage::Done,
            // A path on instance_url: an absolute URL would send our token
            // to a host the token answer did not name.
            (false, Some(path)) if path.starts_with('/') => NextPage::Locator(path),
            (false, other) => {
                return Err(SalesforceError::Decode {
                    what: format!(
                        "{endpoint}: a page that is not done needs a nextRecordsUrl path"
                    ),
                    excerpt: format!("nextRecordsUrl = {other:?}"),
                });
            }
        };
        self.total_size = Some(answer.total_size);
        tracing::debug!(
            endpoint,
            rows = answer.records.len(),
            total_size = answer.total_size,
            done = answer.done,
            "salesforce query page"
        );
        Ok(Some(answer.records))
    }

    /// True once the last page was read: `next_page` makes no call any more.
    pub fn is_done(&self) -> bool {
        matches!(self.next, NextPage::Done)
    }

    /// Rows matching the whole query, known after the first page.
    pub fn total_size(&self) -> Option<u64> {
        self.total_size
    }
}
