//! The query-string rule of the API: every endpoint reads its query through
//! [`Params`], which refuses a malformed value and any parameter the endpoint
//! does not take with 400 `invalid_query` naming it, just as JSON bodies refuse
//! unknown members. A typo (`?limt=5`) fails instead of being ignored.

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::ApiError;

/// The query parameters `T` of a request; `T` must deny unknown fields.
#[derive(Debug)]
pub struct Params<T>(pub T);

/// The parameters of an endpoint that takes none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, ApiError> {
        // The rejection's text names the offending parameter: "unknown field `limt`, ...".
        let Query(params) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|err| ApiError::InvalidQuery(err.body_text()))?;
        Ok(Params(params))
    }
}
