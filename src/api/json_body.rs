//! JSON request bodies that are not send bodies (`PUT /clients/{name}/groups`,
//! `POST /send`): read up to a limit, then parsed by the endpoint.

use axum::body::Bytes;
use axum::extract::Request;

use super::ApiError;
use super::problem::BodyKind;

/// The raw bytes of a JSON object body of at most `limit` bytes.
pub async fn read(request: Request, limit: usize) -> Result<Bytes, ApiError> {
    if !matches!(BodyKind::of(&request)?, BodyKind::Json) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|err| {
            let cause = err.into_inner();
            if cause.is::<http_body_util::LengthLimitError>() {
                ApiError::BodyTooLarge(limit)
            } else {
                ApiError::InvalidBody(format!("the body could not be read: {cause}"))
            }
        })?;
    // serde reads a struct from an array too; only the object form is documented.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::InvalidBody(
            "the body is not a JSON object".into(),
        ));
    }
    Ok(body)
}
