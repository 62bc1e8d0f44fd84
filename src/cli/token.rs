//! `tcphub token`: mints the HS256 JWT that a device's `sync` carries under
//! `--client-auth jwt` (see [`crate::client_auth`] for what the hub checks).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use clap::builder::NonEmptyStringValueParser;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;
use serde_json::json;

/// Arguments of `tcphub token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The client name the token is for (its `sub` claim).
    pub name: String,
    /// Key of the HS256 signature: the hub's --client-secret.
    #[arg(long, env = "TCPHUB_CLIENT_SECRET", hide_env_values = true, value_parser = NonEmptyStringValueParser::new())]
    pub client_secret: String,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    pub ttl: u64,
    /// Groups the client may join: names, or prefixes ending in `*`,
    /// comma-separated (a `groups` claim; without it, any group).
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Print `{"token","sub","exp"}` instead of the bare token.
    #[arg(long)]
    pub json: bool,
}

/// The claims of a client token.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    groups: &'a [String],
}

pub(super) fn run(args: &TokenArgs) -> anyhow::Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let claims = Claims {
        sub: &args.name,
        iat: now,
        exp: now.saturating_add(args.ttl),
        groups: &args.groups,
    };
    let token = mint(&claims, args.client_secret.as_bytes())?;
    if args.json {
        super::output::line(json!({"token": token, "sub": claims.sub, "exp": claims.exp}))
    } else {
        super::output::line(token)
    }
}

fn mint(claims: &Claims<'_>, secret: &[u8]) -> anyhow::Result<String> {
    let key = EncodingKey::from_secret(secret);
    jsonwebtoken::encode(&Header::default(), claims, &key).context("cannot sign the token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_auth::ClientAuth;

    #[test]
    fn the_hub_accepts_a_minted_token_for_its_name_only() {
        let groups = vec!["lights".to_owned()];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: "dev-1",
            iat: now,
            exp: now + 60,
            groups: &groups,
        };
        let token = mint(&claims, b"secret").unwrap();
        let auth = ClientAuth::hs256(b"secret");
        assert_eq!(
            auth.check(Some(&token), "dev-1"),
            Ok(Some(crate::groups::GroupClaim::new(groups.clone())))
        );
        assert!(auth.check(Some(&token), "dev-2").is_err());
        assert!(
            ClientAuth::hs256(b"other")
                .check(Some(&token), "dev-1")
                .is_err()
        );
    }
}
