//! Every way a request can be refused, each mapped to one audit code, one HTTP status and
//! one RFC 6750 error.

use std::fmt;

/// RFC 6750 §3.1 error codes (plus "no error" for requests without credentials).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No credentials were presented: the challenge carries no `error` (RFC 6750 §3.1).
    None,
    /// 400: the request itself is malformed (e.g. two Authorization headers).
    InvalidRequest,
    /// 401: the token is missing parts, malformed, expired, untrusted, or fails verification.
    InvalidToken,
    /// 403: the token is valid but does not grant what this route requires.
    InsufficientScope,
    /// 401: the authentication behind the token is too weak or too old for this route
    /// (RFC 9470): the client can re-authenticate and try again.
    InsufficientUserAuthentication,
}

impl BearerError {
    /// The RFC 6750 `error` value, if any.
    pub fn code(self) -> Option<&'static str> {
        match self {
            BearerError::None => None,
            BearerError::InvalidRequest => Some("invalid_request"),
            BearerError::InvalidToken => Some("invalid_token"),
            BearerError::InsufficientScope => Some("insufficient_scope"),
            BearerError::InsufficientUserAuthentication => Some("insufficient_user_authentication"),
        }
    }
}

/// Declares the reasons once: variant, audit code, client-safe description.
macro_rules! deny_reasons {
    ($( $(#[$doc:meta])* $variant:ident => $code:literal, $description:literal; )*) => {
        /// Why a request was denied. `#[non_exhaustive]`: later policy (revocation, step-up)
        /// adds more.
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DenyReason {
            $( $(#[$doc])* $variant, )*
        }

        impl DenyReason {
            /// Every reason, in declaration order (for documentation checks and tests).
            pub const ALL: &'static [DenyReason] = &[ $( DenyReason::$variant, )* ];

            /// The stable code written to the audit log and used in tests.
            pub fn code(self) -> &'static str {
                match self { $( DenyReason::$variant => $code, )* }
            }

            /// A fixed, client-safe description (never echoes request or token content).
            /// Only characters RFC 6750 allows in `error_description` (checked by a test).
            pub fn description(self) -> &'static str {
                match self { $( DenyReason::$variant => $description, )* }
            }
        }
    };
}

deny_reasons! {
    // --- the request ---
    /// No rule matched and policy says `unmatched: deny`.
    NoMatchingRule => "no_matching_rule", "no policy rule allows this request";
    /// No Authorization header, or one with a scheme other than Bearer.
    MissingToken => "missing_token", "a bearer token is required";
    /// More than one Authorization header, or several folded into one with commas.
    DuplicateAuthorization => "duplicate_authorization", "more than one Authorization header";
    /// `Bearer` with no token, extra parameters, or characters outside RFC 6750 b64token.
    MalformedAuthorization => "malformed_authorization", "malformed Authorization header";
    /// An `access_token` query parameter (RFC 6750 §2.3): it would reach the upstream as is.
    TokenInQuery => "token_in_query", "access tokens are not accepted in the query string";
    /// A header on the `strip_headers` list arrived and `strip_headers_action` is `refuse`.
    IdentityHeaderPresent => "identity_header_present", "identity headers are not accepted from clients";
    /// The path contains dot-segments or encoded separators that make rule matching ambiguous.
    AmbiguousPath => "ambiguous_path", "ambiguous request path";
    // --- limits, enforced before parsing or cryptography ---
    /// Longer than `max_token_bytes`.
    TokenTooLarge => "token_too_large", "token too large";
    /// JOSE header segment longer than `limits.max_header_bytes`.
    HeaderTooLarge => "header_too_large", "token header too large";
    /// JSON nested deeper than `limits.max_json_depth`.
    JsonTooDeep => "json_too_deep", "token JSON nested too deeply";
    /// More claims than `limits.max_claims`.
    TooManyClaims => "too_many_claims", "token has too many claims";
    /// More scopes than `limits.max_scopes`.
    TooManyScopes => "too_many_scopes", "token has too many scopes";
    // --- structure ---
    /// Not three base64url segments of a JWS, or undecodable header/payload.
    MalformedToken => "malformed_token", "malformed token";
    /// Five segments: an encrypted JWT (JWE), which this filter does not accept.
    EncryptedToken => "encrypted_token", "encrypted tokens are not accepted";
    /// `cty: JWT`: a nested token, refused rather than unwrapped.
    NestedToken => "nested_token", "nested tokens are not accepted";
    /// `typ` is present and is neither `JWT` nor `*+jwt`.
    UnsupportedTokenType => "unsupported_token_type", "unsupported token type";
    /// `crit` lists extensions; none are understood, so the token must be refused (RFC 7515 §4.1.11).
    UnsupportedCriticalHeader => "unsupported_critical_header", "unsupported critical header parameter";
    /// Header or payload JSON has the same member twice.
    DuplicateClaim => "duplicate_claim", "duplicate member in token";
    // --- trust ---
    /// `alg` is not one of the issuer's pinned algorithms (`none` never is).
    AlgorithmNotAllowed => "algorithm_not_allowed", "signing algorithm not allowed";
    /// No `iss`, or `iss` is not on the trusted list.
    UntrustedIssuer => "untrusted_issuer", "untrusted issuer";
    /// `iss` is this gateway: its own tokens are not accepted at the edge.
    GatewayTokenReplay => "gateway_token_replay", "gateway-issued tokens are not accepted here";
    /// No key with this `kid` for the issuer, or no `kid` where the issuer has several keys.
    UnknownKey => "unknown_key", "unknown signing key";
    /// The issuer's keys are fetched and none are usable: never fetched yet, or older than
    /// `jwks_max_stale_seconds`. A server-side failure, not the token's (503).
    IssuerKeysUnavailable => "issuer_keys_unavailable", "the issuer's signing keys are temporarily unavailable";
    /// The signature does not verify.
    InvalidSignature => "invalid_signature", "invalid signature";
    // --- the issuer's lifecycle and revocation (checked on verified tokens) ---
    /// The trusted issuer's `expires` date has passed.
    IssuerExpired => "issuer_expired", "issuer no longer trusted";
    /// The token's `jti` (or the original's, for a gateway token) is in `revoked.jti`.
    TokenRevoked => "token_revoked", "token revoked";
    /// The token's `sub` is in `revoked.sub`.
    SubjectRevoked => "subject_revoked", "subject revoked";
    /// The (original) token was issued before its issuer's `revoked_before`, or has no `iat`.
    IssuedBeforeRevocation => "issued_before_revocation", "token issued before a revocation";
    // --- claims ---
    /// A claim has the wrong type or an invalid value (e.g. `exp` as a string).
    InvalidClaim => "invalid_claim", "invalid claim";
    /// A required claim (`exp`, `sub`) is absent.
    MissingClaim => "missing_claim", "required claim missing";
    /// `exp` (plus skew) has passed, or too little lifetime remains to mint.
    TokenExpired => "token_expired", "token expired";
    /// `nbf` (minus skew) is in the future.
    TokenNotYetValid => "token_not_yet_valid", "token not yet valid";
    /// `iat` (minus skew) is in the future.
    IssuedInFuture => "issued_in_future", "token issued in the future";
    /// `aud` does not contain one of the issuer's audiences.
    AudienceMismatch => "audience_mismatch", "token audience not accepted";
    // --- the rule's requirements (403) ---
    /// A scope the rule requires is missing.
    InsufficientScope => "insufficient_scope", "token lacks a required scope";
    /// `acr` is not one of the rule's values: step up (RFC 9470, 401 with `acr_values`).
    AcrNotSatisfied => "acr_not_satisfied", "a different authentication level is required";
    /// `auth_time` is missing or older than `require.max_age_seconds`: step up (RFC 9470, 401
    /// with `max_age`).
    AuthenticationTooOld => "authentication_too_old", "more recent authentication is required";
    /// `amr` lacks a method the rule requires.
    AmrNotSatisfied => "amr_not_satisfied", "authentication methods not sufficient";
    /// The caller (`azp`/`client_id`) is not allowed by the rule.
    CallerNotAllowed => "caller_not_allowed", "client not allowed";
    /// The issuer is trusted but not allowed by this rule.
    IssuerNotAllowed => "issuer_not_allowed", "issuer not allowed for this route";
    /// The token's scopes and the rule's grant do not intersect.
    NoGrantableScope => "no_grantable_scope", "no scope of the token can be granted here";
    // --- partner ceilings ---
    /// What the rule requires or would grant lies outside the issuer's `max_scopes`.
    IssuerScopeCeiling => "issuer_scope_ceiling", "scope beyond what this issuer may grant";
    /// The rule mints an audience outside the issuer's `allowed_audiences`.
    IssuerAudienceNotAllowed => "issuer_audience_not_allowed", "this issuer's tokens cannot be exchanged for this audience";
    // --- delegation chains ---
    /// The token's `may_act` does not name the caller.
    ActorNotAllowed => "actor_not_allowed", "the caller may not act for this subject";
    /// The token to mint would record more exchanges than the rule's `max_chain_depth`.
    ChainTooDeep => "chain_too_deep", "delegation chain too long";
    /// The rule's audience already appears in the token's chain.
    ChainCycle => "chain_cycle", "delegation chain would loop";
    // --- the gateway ---
    /// Signing, randomness or a host call failed: fail closed.
    InternalError => "internal_error", "internal error";
}

impl DenyReason {
    /// The RFC 6750 error class of this reason.
    pub fn bearer_error(self) -> BearerError {
        use DenyReason::*;
        match self {
            MissingToken => BearerError::None,
            DuplicateAuthorization | MalformedAuthorization | AmbiguousPath | TokenInQuery => {
                BearerError::InvalidRequest
            }
            NoMatchingRule | InternalError | IssuerKeysUnavailable => BearerError::None,
            IdentityHeaderPresent => BearerError::InvalidRequest,
            InsufficientScope
            | AmrNotSatisfied
            | CallerNotAllowed
            | IssuerNotAllowed
            | NoGrantableScope
            | IssuerScopeCeiling
            | IssuerAudienceNotAllowed
            | ActorNotAllowed
            | ChainTooDeep
            | ChainCycle => BearerError::InsufficientScope,
            AcrNotSatisfied | AuthenticationTooOld => BearerError::InsufficientUserAuthentication,
            _ => BearerError::InvalidToken,
        }
    }

    /// The HTTP status sent to the client.
    pub fn status(self) -> u16 {
        match (self, self.bearer_error()) {
            (DenyReason::InternalError, _) => 500,
            (DenyReason::IssuerKeysUnavailable, _) => 503,
            (DenyReason::NoMatchingRule, _) => 403,
            (_, BearerError::InvalidRequest) => 400,
            (_, BearerError::InsufficientScope) => 403,
            _ => 401,
        }
    }
}

/// A refusal and what its challenge names besides the reason (RFC 6750 `scope`, RFC 9470
/// `acr_values` and `max_age`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: DenyReason,
    /// `scope`: what an `insufficient_scope` route needs.
    pub scope: Option<String>,
    /// `acr_values`: the authentication contexts a step-up should reach, space-separated.
    pub acr_values: Option<String>,
    /// `max_age`: how recent (seconds) the authentication must be after a step-up.
    pub max_age: Option<u64>,
}

impl From<DenyReason> for Refusal {
    fn from(reason: DenyReason) -> Refusal {
        Refusal {
            reason,
            scope: None,
            acr_values: None,
            max_age: None,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_rfc6750_safe() {
        // error-description chars: %x20-21 / %x23-5B / %x5D-7E
        for r in DenyReason::ALL {
            for c in r.description().chars() {
                let ok = matches!(c as u32, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E);
                assert!(ok, "{r}: bad char {c:?}");
            }
        }
    }

    #[test]
    fn statuses_follow_rfc6750() {
        assert_eq!(DenyReason::MissingToken.status(), 401);
        assert_eq!(DenyReason::MissingToken.bearer_error().code(), None);
        assert_eq!(DenyReason::TokenExpired.status(), 401);
        assert_eq!(DenyReason::DuplicateAuthorization.status(), 400);
        assert_eq!(DenyReason::InsufficientScope.status(), 403);
        assert_eq!(
            DenyReason::NoGrantableScope.bearer_error().code(),
            Some("insufficient_scope")
        );
        assert_eq!(DenyReason::InternalError.status(), 500);
        assert_eq!(DenyReason::AcrNotSatisfied.status(), 401);
        assert_eq!(
            DenyReason::AuthenticationTooOld.bearer_error().code(),
            Some("insufficient_user_authentication")
        );
        assert_eq!(DenyReason::IdentityHeaderPresent.status(), 400);
        assert_eq!(DenyReason::TokenRevoked.status(), 401);
        assert_eq!(DenyReason::ChainCycle.status(), 403);
        assert_eq!(DenyReason::IssuerKeysUnavailable.status(), 503);
        assert_eq!(
            DenyReason::IssuerKeysUnavailable.bearer_error().code(),
            None
        );
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in DenyReason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
        }
    }
}
