//! Client authentication on the TCP side. With `--client-auth jwt`, a `sync` must
//! carry `token`: a JWT signed with HS256 under `--client-secret`, whose `sub` is
//! the name claimed and whose `exp` is still in the future. A backend that knows
//! the secret mints one token per device name; the hub checks it and keeps only
//! its optional `groups` claim (names, or prefixes ending in `*`), which limits
//! the groups the client may join.

use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::groups::GroupClaim;
use crate::protocol::{ErrorCode, FrameError};

/// Checks the tokens of `sync` frames.
pub struct ClientAuth {
    key: DecodingKey,
    validation: Validation,
}

/// The claims the hub reads; `exp` is checked by the validation itself.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

impl ClientAuth {
    /// Tokens signed with HS256 under `secret`, expiring on the second (no leeway).
    pub fn hs256(secret: &[u8]) -> ClientAuth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        ClientAuth {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Whether `token` lets its bearer use `name`; if so, its `groups` claim.
    pub fn check(&self, token: Option<&str>, name: &str) -> Result<Option<GroupClaim>, FrameError> {
        let token = token.ok_or_else(|| unauthorized("a sync must carry a token"))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| unauthorized(format!("the token is not valid: {err}")))?
            .claims;
        if claims.sub != name {
            return Err(unauthorized("the token was issued for another name"));
        }
        Ok(claims.groups.map(GroupClaim::new))
    }
}

impl fmt::Debug for ClientAuth {
    // The key stays out of every log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth").finish_non_exhaustive()
    }
}

fn unauthorized(detail: impl Into<String>) -> FrameError {
    FrameError::new(ErrorCode::Unauthorized, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn token(claims: serde_json::Value, secret: &[u8], algorithm: Algorithm) -> String {
        let key = EncodingKey::from_secret(secret);
        jsonwebtoken::encode(&Header::new(algorithm), &claims, &key).unwrap()
    }

    #[test]
    fn a_token_for_the_name_signed_with_the_secret_passes() {
        let auth = ClientAuth::hs256(b"secret");
        let good = token(
            json!({"sub": "Client-1", "exp": now() + 60}),
            b"secret",
            Algorithm::HS256,
        );
        assert_eq!(auth.check(Some(&good), "Client-1"), Ok(None));
        let with_groups = token(
            json!({"sub": "Client-1", "exp": now() + 60, "groups": ["kiosks", "floor-*"]}),
            b"secret",
            Algorithm::HS256,
        );
        assert_eq!(
            auth.check(Some(&with_groups), "Client-1"),
            Ok(Some(GroupClaim::new(vec![
                "kiosks".into(),
                "floor-*".into()
            ])))
        );
    }

    #[test]
    fn everything_else_is_unauthorized() {
        let auth = ClientAuth::hs256(b"secret");
        let code = |token: Option<&str>| auth.check(token, "Client-1").map_err(|e| e.code);
        let cases = [
            token(
                json!({"sub": "Client-2", "exp": now() + 60}),
                b"secret",
                Algorithm::HS256,
            ),
            token(
                json!({"sub": "Client-1", "exp": now() - 1}),
                b"secret",
                Algorithm::HS256,
            ),
            token(json!({"sub": "Client-1"}), b"secret", Algorithm::HS256),
            token(json!({"exp": now() + 60}), b"secret", Algorithm::HS256),
            token(
                json!({"sub": "Client-1", "exp": now() + 60}),
                b"other",
                Algorithm::HS256,
            ),
            token(
                json!({"sub": "Client-1", "exp": now() + 60}),
                b"secret",
                Algorithm::HS512,
            ),
            token(
                json!({"sub": "Client-1", "exp": now() + 120, "nbf": now() + 60}),
                b"secret",
                Algorithm::HS256,
            ),
            "not.a.token".to_owned(),
        ];
        for bad in &cases {
            assert_eq!(code(Some(bad)), Err(ErrorCode::Unauthorized), "{bad}");
        }
        assert_eq!(code(None), Err(ErrorCode::Unauthorized));
    }
}
