//! Bearer tokens: JWTs carrying the user (`sub`) and their roles, signed either with HS256 by
//! the key in `gateway.jwt_secret` (`turbo-coder token` issues them) or with RS256 by an
//! identity provider whose public keys are in `gateway.jwks_file` or published at
//! `gateway.jwks_url` (a token's `kid` picks the key; the URL is fetched at start, every 10
//! minutes, and again, at most every 5 s, when a token names a key not yet seen: the
//! provider's key rotation). A token is accepted only with the configured algorithm (`none`, and HS256 where RS256
//! is configured, the classic confusion of signing with the public key, are refused: a token
//! cannot pick how it is checked), a valid signature, an `exp` in the future, an `nbf` in the
//! past, and the configured `iss` and `aud`.
//!
//! API keys (`tck_...`, made by `turbo-coder user key NAME`) are the other kind of bearer
//! token: the gateway keeps only their SHA-256 ([`api_key_hash`]) in the store, with the user
//! they belong to; a key carries that user's stored roles. Users registered in the store
//! (`turbo-coder user add`) get their stored roles whichever way they come in, and nothing once
//! disabled; tokens of users the store does not know (an identity provider's) carry their roles.
//!
//! Roles grant permissions: `viewer` reads, `developer` also creates and changes projects and
//! tasks, `admin` also deletes, restores and sees every project. A project is visible to its
//! team members (its creator first) and to admins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Slack allowed on `exp` and `nbf` for clocks that differ a little.
const LEEWAY_S: u64 = 30;

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

/// A role and the permissions it grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Developer,
    Admin,
}

impl Role {
    fn grants(self, permission: Permission) -> bool {
        let most = match self {
            Role::Viewer => Permission::Read,
            Role::Developer => Permission::Write,
            Role::Admin => Permission::Admin,
        };
        permission <= most
    }

    /// The role's name, as `parse` reads it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "developer" => Some(Role::Developer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims of a turbo-coder token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    pub iss: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
}

/// What the gateway reads of a token it checks. exp, nbf, iss and aud are checked by the
/// validation in whatever form an identity provider writes them (aud a string or a list, nbf
/// and iat optional); roles the gateway does not know (an identity provider's own) are ignored.
#[derive(Deserialize)]
struct Presented {
    sub: String,
    #[serde(default)]
    roles: serde_json::Value,
}

impl Presented {
    fn roles(&self) -> Vec<Role> {
        let names = self.roles.as_array().map(Vec::as_slice).unwrap_or_default();
        names.iter().filter_map(|r| r.as_str().and_then(Role::parse)).collect()
    }
}

/// The caller of a request, from its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user: String,
    pub roles: Vec<Role>,
}

impl Principal {
    pub fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| r.grants(permission))
    }

    /// Whether the caller may see a project with these members.
    pub fn sees(&self, team_members: &[String]) -> bool {
        self.may(Permission::Admin) || team_members.contains(&self.user)
    }
}

/// Why a token was refused; the message says what to do, never echoes the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token: send 'Authorization: Bearer <token>' (turbo-coder token --user NAME makes one)")]
    Missing,
    #[error("the Authorization header is not 'Bearer <token>'")]
    Malformed,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("the token has no role: issue it with --role viewer, developer or admin")]
    NoRole,
    #[error(
        "the token is invalid: its key '{0}' is not among the identity provider's keys (gateway.jwks_file or gateway.jwks_url)"
    )]
    UnknownKey(String),
}

/// The token in an `Authorization: Bearer <token>` header value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, TokenError> {
    let value = authorization.ok_or(TokenError::Missing)?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::Malformed)
}

/// How every API key begins, so it is told from a JWT at a glance.
pub const API_KEY_PREFIX: &str = "tck_";

/// A new API key: the prefix and 244 random bits (two v4 UUIDs), as hex.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// What the store keeps of an API key: the SHA-256 of its text, hex.
pub fn api_key_hash(key: &str) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(key.as_bytes()))
}

/// The first characters of a key, shown in lists to recognise it.
pub fn api_key_shown(key: &str) -> String {
    key.chars().take(API_KEY_PREFIX.len() + 8).collect()
}

/// The roles among stored role names (unknown names are skipped).
pub fn roles_of(names: &[String]) -> Vec<Role> {
    names.iter().filter_map(|n| Role::parse(n)).collect()
}

/// Fewest seconds between two fetches of `gateway.jwks_url` for a token with an unknown key,
/// so that tokens with made-up key ids cannot make the gateway hammer the identity provider.
const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// Longest a fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys that check tokens (and, for HS256, sign them).
#[derive(Clone)]
enum Keys {
    Hs256 {
        decoding: DecodingKey,
        encoding: EncodingKey,
    },
    /// An identity provider's RS256 public keys.
    Rs256(Arc<Provider>),
}

/// An identity provider's public keys by `kid`, from a file or fetched from its JWKS URL
/// (again when a token names a key not yet seen, and periodically: [`Tokens::refresh`]).
struct Provider {
    keys: RwLock<HashMap<String, DecodingKey>>,
    url: Option<String>,
    fetched: Mutex<Option<Instant>>,
}

/// The RSA keys of a JWKS document, by `kid`.
fn parse_jwks(jwks: &str) -> Result<HashMap<String, DecodingKey>, String> {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(jwks).map_err(|e| format!("it is not a JWKS document ({e})"))?;
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone().ok_or_else(|| format!("keys[{i}] has no kid"))?;
        if !matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) {
            return Err(format!("key {kid} is not an RSA key: only RS256 is supported"));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        keys.insert(kid, key);
    }
    if keys.is_empty() {
        return Err("it holds no key".into());
    }
    Ok(keys)
}

/// Checks and issues tokens.
#[derive(Clone)]
pub struct Tokens {
    keys: Keys,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("issuer", &self.issuer).field("audience", &self.audience).finish_non_exhaustive()
    }
}

fn validation(algorithm: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = LEEWAY_S;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    // nbf is checked when the token has one; identity providers often leave it out.
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

impl Tokens {
    /// Tokens signed with `secret` (HS256), issued by `issuer` for `audience`.
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Self {
        Self {
            keys: Keys::Hs256 {
                decoding: DecodingKey::from_secret(secret),
                encoding: EncodingKey::from_secret(secret),
            },
            validation: validation(Algorithm::HS256, issuer, audience),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    /// Tokens signed with RS256 by the keys of the JWKS document `jwks` (JSON), by `kid`.
    pub fn rs256(jwks: &str, issuer: &str, audience: &str) -> Result<Self, String> {
        Ok(Self::rs256_from(parse_jwks(jwks)?, None, issuer, audience))
    }

    /// Tokens signed with RS256 by the keys published at `url` (a JWKS document); none are
    /// known until [`Tokens::refresh`] has fetched them.
    pub fn rs256_url(url: &str, issuer: &str, audience: &str) -> Self {
        Self::rs256_from(HashMap::new(), Some(url.to_string()), issuer, audience)
    }

    fn rs256_from(keys: HashMap<String, DecodingKey>, url: Option<String>, issuer: &str, audience: &str) -> Self {
        let provider = Provider { keys: RwLock::new(keys), url, fetched: Mutex::new(None) };
        Self {
            keys: Keys::Rs256(Arc::new(provider)),
            validation: validation(Algorithm::RS256, issuer, audience),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    /// Fetches the identity provider's keys from `gateway.jwks_url` again and uses them from
    /// now on. Ok(false) without a URL, or when `force` is false and the last fetch was less
    /// than [`REFETCH_AFTER`] ago. On an error the keys already held stay.
    pub async fn refresh(&self, force: bool) -> Result<bool, String> {
        let Keys::Rs256(provider) = &self.keys else { return Ok(false) };
        let Some(url) = &provider.url else { return Ok(false) };
        {
            let mut fetched = provider.fetched.lock().unwrap_or_else(|p| p.into_inner());
            if !force && fetched.is_some_and(|at| at.elapsed() < REFETCH_AFTER) {
                return Ok(false);
            }
            *fetched = Some(Instant::now());
        }
        let fail = |e: String| format!("cannot fetch gateway.jwks_url {url}: {e}");
        let response =
            reqwest::Client::new().get(url).timeout(FETCH_TIMEOUT).send().await.map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("it answered {status}")));
        }
        let keys = parse_jwks(&text).map_err(fail)?;
        tracing::info!(url, keys = keys.len(), "fetched the identity provider's keys");
        *provider.keys.write().unwrap_or_else(|p| p.into_inner()) = keys;
        Ok(true)
    }

    /// Whether the keys come from `gateway.jwks_url` (and should be refreshed now and then).
    pub fn fetches_keys(&self) -> bool {
        matches!(&self.keys, Keys::Rs256(p) if p.url.is_some())
    }

    /// The tokens of the `[gateway]` settings, or what is missing.
    pub fn from_config(config: &turbo_config::GatewayConfig) -> Result<Self, String> {
        match config.jwt_algorithm {
            turbo_config::JwtAlgorithm::Hs256 => {
                let secret = config.jwt_secret.as_deref().ok_or_else(|| {
                    "the gateway needs gateway.jwt_secret to check bearer tokens: set TURBO_CODER__GATEWAY__JWT_SECRET \
                     to at least 32 random bytes (e.g. `openssl rand -hex 32`)"
                        .to_string()
                })?;
                Ok(Self::new(secret.as_bytes(), &config.jwt_issuer, &config.jwt_audience))
            }
            turbo_config::JwtAlgorithm::Rs256 => match (&config.jwks_file, &config.jwks_url) {
                (Some(_), Some(_)) => Err("set one of gateway.jwks_file and gateway.jwks_url, not both".to_string()),
                (None, Some(url)) => {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        return Err(format!("gateway.jwks_url '{url}' is not an http(s) URL"));
                    }
                    Ok(Self::rs256_url(url, &config.jwt_issuer, &config.jwt_audience))
                }
                (Some(path), None) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read gateway.jwks_file {}: {e}", path.display()))?;
                    Self::rs256(&text, &config.jwt_issuer, &config.jwt_audience)
                        .map_err(|e| format!("gateway.jwks_file {}: {e}", path.display()))
                }
                (None, None) => Err("gateway.jwt_algorithm is RS256: set gateway.jwks_url to the identity provider's \
                     JWKS URL, or gateway.jwks_file to a copy of it"
                    .to_string()),
            },
        }
    }

    /// A token for `user` with `roles`, valid for `ttl` from now.
    pub fn issue(&self, user: &str, roles: &[Role], ttl: Duration) -> Result<String, TokenError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let claims = Claims {
            sub: user.to_string(),
            roles: roles.to_vec(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: now,
        };
        let Keys::Hs256 { encoding, .. } = &self.keys else {
            return Err(TokenError::Invalid(
                "this gateway checks RS256 tokens from an identity provider; it cannot issue them".into(),
            ));
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The caller of a request with this `Authorization` header value (a JWT), with at least
    /// one role from the token.
    pub fn check(&self, authorization: Option<&str>) -> Result<Principal, TokenError> {
        let who = self.check_jwt(bearer(authorization)?)?;
        if who.roles.is_empty() {
            return Err(TokenError::NoRole);
        }
        Ok(who)
    }

    /// The caller a JWT names, once it is checked, with the roles the token gives (maybe none:
    /// a registered user's stored roles apply instead).
    pub fn check_jwt(&self, token: &str) -> Result<Principal, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(format!("it cannot be read ({e})")))?;
        let key = match &self.keys {
            Keys::Hs256 { decoding, .. } => decoding.clone(),
            Keys::Rs256(provider) => {
                if header.alg != Algorithm::RS256 {
                    return Err(TokenError::Invalid("only RS256 tokens are accepted".into()));
                }
                let kid = header.kid.as_deref().ok_or_else(|| TokenError::Invalid("it names no key (kid)".into()))?;
                let keys = provider.keys.read().unwrap_or_else(|p| p.into_inner());
                keys.get(kid).cloned().ok_or_else(|| TokenError::UnknownKey(kid.to_string()))?
            }
        };
        let data = jsonwebtoken::decode::<Presented>(token, &key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            TokenError::Invalid(match e.kind() {
                K::ExpiredSignature => "it has expired; get a new one".into(),
                K::ImmatureSignature => "it is not valid yet (nbf)".into(),
                K::InvalidIssuer => "it was issued by someone else (iss)".into(),
                K::InvalidAudience => "it is for another audience (aud)".into(),
                K::InvalidAlgorithm => format!("only {:?} tokens are accepted", self.validation.algorithms[0]),
                K::InvalidSignature => "its signature does not match".into(),
                K::MissingRequiredClaim(claim) => format!("it has no '{claim}' claim"),
                _ => format!("it cannot be read ({e})"),
            })
        })?;
        Ok(Principal { roles: data.claims.roles(), user: data.claims.sub })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tokens() -> Tokens {
        Tokens::new(SECRET, "turbo-coder", "turbo-coder")
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn api_keys_are_random_and_kept_as_their_hash() {
        let (a, b) = (new_api_key(), new_api_key());
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == API_KEY_PREFIX.len() + 64, "{a}");
        let hash = api_key_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[API_KEY_PREFIX.len()..]));
        assert_eq!(hash, api_key_hash(&a), "the same key, the same hash");
        assert_eq!(api_key_shown(&a), a[..API_KEY_PREFIX.len() + 8]);
        assert_eq!(roles_of(&["admin".into(), "wizard".into()]), [Role::Admin]);
        assert_eq!(super::bearer(Some("Bearer  tck_x ")).unwrap(), "tck_x");
        assert!(matches!(super::bearer(Some("Basic x")), Err(TokenError::Malformed)));
    }

    #[test]
    fn an_issued_token_names_its_user_and_roles() {
        let t = tokens();
        let token = t.issue("ana", &[Role::Developer], Duration::from_secs(60)).unwrap();
        let who = t.check(Some(&bearer(&token))).unwrap();
        assert_eq!(who, Principal { user: "ana".into(), roles: vec![Role::Developer] });
        assert!(who.may(Permission::Write) && !who.may(Permission::Admin));
        assert!(who.sees(&["bob".into(), "ana".into()]) && !who.sees(&["bob".into()]));
    }

    #[test]
    fn tokens_of_another_key_issuer_or_audience_or_out_of_time_are_refused() {
        let other_key = Tokens::new(b"another-secret-another-secret-12", "turbo-coder", "turbo-coder");
        let other_iss = Tokens::new(SECRET, "someone-else", "turbo-coder");
        let other_aud = Tokens::new(SECRET, "turbo-coder", "another-api");
        for (issuer, expect) in [(other_key, "signature"), (other_iss, "iss"), (other_aud, "aud")] {
            let token = issuer.issue("ana", &[Role::Admin], Duration::from_secs(60)).unwrap();
            let err = tokens().check(Some(&bearer(&token))).unwrap_err().to_string();
            assert!(err.contains(expect), "{err}");
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = |exp: u64, nbf: u64| Claims {
            sub: "ana".into(),
            roles: vec![Role::Admin],
            iss: "turbo-coder".into(),
            aud: "turbo-coder".into(),
            exp,
            nbf,
            iat: now,
        };
        let key = EncodingKey::from_secret(SECRET);
        let expired = jsonwebtoken::encode(&Header::default(), &claims(now - 3600, now - 7200), &key).unwrap();
        assert!(tokens().check(Some(&bearer(&expired))).unwrap_err().to_string().contains("expired"));
        let early = jsonwebtoken::encode(&Header::default(), &claims(now + 7200, now + 3600), &key).unwrap();
        assert!(tokens().check(Some(&bearer(&early))).unwrap_err().to_string().contains("nbf"));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let t = tokens();
        let good = t.issue("ana", &[Role::Admin], Duration::from_secs(60)).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        for header in
            [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"HS512","typ":"JWT"}"#, r#"{"alg":"RS256","typ":"JWT"}"#]
        {
            let forged = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(header));
            assert!(t.check(Some(&bearer(&forged))).is_err(), "{header} accepted");
        }
        // HS512 signed with the right key is still not HS256.
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &jsonwebtoken::decode::<Claims>(&good, &DecodingKey::from_secret(SECRET), &t.validation).unwrap().claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(t.check(Some(&bearer(&hs512))).unwrap_err().to_string().contains("HS256"));
    }

    #[test]
    fn missing_malformed_and_roleless_tokens_say_what_to_send() {
        let t = tokens();
        assert!(matches!(t.check(None), Err(TokenError::Missing)));
        assert!(matches!(t.check(Some("Basic YW5hOnB3")), Err(TokenError::Malformed)));
        assert!(matches!(t.check(Some("Bearer ")), Err(TokenError::Malformed)));
        assert!(matches!(t.check(Some("Bearer not.a.jwt")), Err(TokenError::Invalid(_))));
        let roleless = t.issue("ana", &[], Duration::from_secs(60)).unwrap();
        assert!(matches!(t.check(Some(&bearer(&roleless))), Err(TokenError::NoRole)));
    }

    const IDP_PRIVATE: &str = include_str!("../tests/keys/idp-2026.private.pem");
    const IDP_PUBLIC: &str = include_str!("../tests/keys/idp-2026.public.pem");
    const OTHER_PRIVATE: &str = include_str!("../tests/keys/other.private.pem");
    const JWKS: &str = include_str!("../tests/keys/jwks.json");

    fn rs256_token(private_pem: &str, kid: Option<&str>) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = Claims {
            sub: "ana".into(),
            roles: vec![Role::Developer],
            iss: "turbo-coder".into(),
            aud: "turbo-coder".into(),
            exp: now + 600,
            nbf: now,
            iat: now,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn rs256_tokens_are_checked_with_the_jwks_key_their_kid_names() {
        let t = Tokens::rs256(JWKS, "turbo-coder", "turbo-coder").unwrap();
        let who = t.check(Some(&bearer(&rs256_token(IDP_PRIVATE, Some("idp-2026"))))).unwrap();
        assert_eq!(who.user, "ana");
        let unknown = t.check(Some(&bearer(&rs256_token(IDP_PRIVATE, Some("retired"))))).unwrap_err();
        assert!(unknown.to_string().contains("retired"), "{unknown}");
        let no_kid = t.check(Some(&bearer(&rs256_token(IDP_PRIVATE, None)))).unwrap_err();
        assert!(no_kid.to_string().contains("kid"), "{no_kid}");
        // Signed by another key under the known kid: the signature does not match.
        let forged = t.check(Some(&bearer(&rs256_token(OTHER_PRIVATE, Some("idp-2026"))))).unwrap_err();
        assert!(forged.to_string().contains("signature"), "{forged}");
        assert!(t.issue("ana", &[Role::Admin], Duration::from_secs(60)).is_err(), "RS256 gateways issue nothing");
    }

    #[test]
    fn an_identity_providers_own_token_shape_is_taken() {
        let t = Tokens::rs256(JWKS, "turbo-coder", "turbo-coder").unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let token = |claims: serde_json::Value| {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some("idp-2026".into());
            let key = EncodingKey::from_rsa_pem(IDP_PRIVATE.as_bytes()).unwrap();
            bearer(&jsonwebtoken::encode(&header, &claims, &key).unwrap())
        };
        // No nbf nor iat, aud a list, roles of the provider's own beside one of ours.
        let who = t
            .check(Some(&token(
                serde_json::json!({"sub": "ana", "iss": "turbo-coder", "aud": ["account", "turbo-coder"],
                                            "exp": now + 600, "roles": ["offline_access", "developer"]}),
            )))
            .unwrap();
        assert_eq!((who.user.as_str(), who.roles.as_slice()), ("ana", [Role::Developer].as_slice()));
        // Without a role of ours: no role from the token (a registered user's stored ones apply).
        let plain =
            token(serde_json::json!({"sub": "ana", "iss": "turbo-coder", "aud": "turbo-coder", "exp": now + 600}));
        assert_eq!(t.check_jwt(plain.trim_start_matches("Bearer ")).unwrap().roles, []);
        assert!(matches!(t.check(Some(&plain)), Err(TokenError::NoRole)));
        // The checks still hold: a list without our audience, an nbf in the future, no exp.
        let other =
            token(serde_json::json!({"sub": "ana", "iss": "turbo-coder", "aud": ["account"], "exp": now + 600}));
        assert!(t.check(Some(&other)).unwrap_err().to_string().contains("aud"));
        let early = token(serde_json::json!({"sub": "ana", "iss": "turbo-coder", "aud": "turbo-coder",
                                              "exp": now + 600, "nbf": now + 300, "roles": ["admin"]}));
        assert!(t.check(Some(&early)).unwrap_err().to_string().contains("nbf"));
        let endless =
            token(serde_json::json!({"sub": "ana", "iss": "turbo-coder", "aud": "turbo-coder", "roles": ["admin"]}));
        assert!(t.check(Some(&endless)).unwrap_err().to_string().contains("exp"));
    }

    #[test]
    fn an_hs256_token_signed_with_the_public_key_is_refused_where_rs256_is_configured() {
        let t = Tokens::rs256(JWKS, "turbo-coder", "turbo-coder").unwrap();
        // The algorithm confusion attack: HMAC keyed with the (public) RSA key's PEM.
        let confused = Tokens::new(IDP_PUBLIC.as_bytes(), "turbo-coder", "turbo-coder");
        let mut token = confused.issue("mallory", &[Role::Admin], Duration::from_secs(60)).unwrap();
        assert!(t.check(Some(&bearer(&token))).unwrap_err().to_string().contains("RS256"));
        // Even claiming the right kid.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("idp-2026".into());
        let claims = Claims {
            sub: "mallory".into(),
            roles: vec![Role::Admin],
            iss: "turbo-coder".into(),
            aud: "turbo-coder".into(),
            exp: now + 60,
            nbf: now,
            iat: now,
        };
        token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(IDP_PUBLIC.as_bytes())).unwrap();
        assert!(t.check(Some(&bearer(&token))).is_err());
    }

    #[test]
    fn bad_jwks_documents_say_what_is_wrong() {
        assert!(Tokens::rs256("{}", "i", "a").unwrap_err().contains("JWKS"));
        assert!(Tokens::rs256(r#"{"keys": []}"#, "i", "a").unwrap_err().contains("no key"));
        let no_kid = JWKS.replace("\"kid\": \"idp-2026\",", "");
        assert!(Tokens::rs256(&no_kid, "i", "a").unwrap_err().contains("kid"));
    }
}
