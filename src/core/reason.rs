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
}

impl BearerError {
    /// The RFC 6750 `error` value, if any.
    pub fn code(self) -> Option<&'static str> {
        match self {
            BearerError::None => None,
            BearerError::InvalidRequest => Some("invalid_request"),
            BearerError::InvalidToken => Some("invalid_token"),
            BearerError::InsufficientScope => Some("insufficient_scope"),
        }
    }
}

/// Why a request was denied. `#[non_exhaustive]`: later policy (revocation, step-up) adds more.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    // --- the request ---
    /// No rule matched and policy says `unmatched: deny`.
    NoMatchingRule,
    /// No Authorization header, or one with a scheme other than Bearer.
    MissingToken,
    /// More than one Authorization header.
    DuplicateAuthorization,
    /// `Bearer` with no token, extra parameters, or characters outside RFC 6750 b64token.
    MalformedAuthorization,
    /// The path contains dot-segments or encoded separators that make rule matching ambiguous.
    AmbiguousPath,
    // --- limits, enforced before parsing or cryptography ---
    /// Longer than `max_token_bytes`.
    TokenTooLarge,
    /// JOSE header segment longer than `limits.max_header_bytes`.
    HeaderTooLarge,
    /// JSON nested deeper than `limits.max_json_depth`.
    JsonTooDeep,
    /// More claims than `limits.max_claims`.
    TooManyClaims,
    /// More scopes than `limits.max_scopes`.
    TooManyScopes,
    // --- structure ---
    /// Not three base64url segments of a JWS, or undecodable header/payload.
    MalformedToken,
    /// Five segments: an encrypted JWT (JWE), which this filter does not accept.
    EncryptedToken,
    /// `cty: JWT`: a nested token, refused rather than unwrapped.
    NestedToken,
    /// `typ` is present and is neither `JWT` nor `*+jwt`.
    UnsupportedTokenType,
    /// `crit` lists extensions; none are understood, so the token must be refused (RFC 7515 §4.1.11).
    UnsupportedCriticalHeader,
    /// Header or payload JSON has the same member twice.
    DuplicateClaim,
    // --- trust ---
    /// `alg` is not one of the issuer's pinned algorithms (`none` never is).
    AlgorithmNotAllowed,
    /// No `iss`, or `iss` is not on the trusted list.
    UntrustedIssuer,
    /// `iss` is this gateway: its own tokens are not accepted at the edge.
    GatewayTokenReplay,
    /// No key with this `kid` for the issuer, or no `kid` where the issuer has several keys.
    UnknownKey,
    /// The signature does not verify.
    InvalidSignature,
    // --- claims ---
    /// A claim has the wrong type or an invalid value (e.g. `exp` as a string).
    InvalidClaim,
    /// A required claim (`exp`, `sub`) is absent.
    MissingClaim,
    /// `exp` (plus skew) has passed, or too little lifetime remains to mint.
    TokenExpired,
    /// `nbf` (minus skew) is in the future.
    TokenNotYetValid,
    /// `iat` (minus skew) is in the future.
    IssuedInFuture,
    /// `aud` does not contain one of the issuer's audiences.
    AudienceMismatch,
    // --- the rule's requirements (403) ---
    /// A scope the rule requires is missing.
    InsufficientScope,
    /// `acr` is not one of the rule's values.
    AcrNotSatisfied,
    /// `amr` lacks a method the rule requires.
    AmrNotSatisfied,
    /// The caller (`azp`/`client_id`) is not allowed by the rule.
    CallerNotAllowed,
    /// The issuer is trusted but not allowed by this rule.
    IssuerNotAllowed,
    /// The token's scopes and the rule's grant do not intersect.
    NoGrantableScope,
    // --- the gateway ---
    /// Signing, randomness or a host call failed: fail closed.
    InternalError,
}

impl DenyReason {
    /// The stable code written to the audit log and used in tests.
    pub fn code(self) -> &'static str {
        use DenyReason::*;
        match self {
            NoMatchingRule => "no_matching_rule",
            MissingToken => "missing_token",
            DuplicateAuthorization => "duplicate_authorization",
            MalformedAuthorization => "malformed_authorization",
            AmbiguousPath => "ambiguous_path",
            TokenTooLarge => "token_too_large",
            HeaderTooLarge => "header_too_large",
            JsonTooDeep => "json_too_deep",
            TooManyClaims => "too_many_claims",
            TooManyScopes => "too_many_scopes",
            MalformedToken => "malformed_token",
            EncryptedToken => "encrypted_token",
            NestedToken => "nested_token",
            UnsupportedTokenType => "unsupported_token_type",
            UnsupportedCriticalHeader => "unsupported_critical_header",
            DuplicateClaim => "duplicate_claim",
            AlgorithmNotAllowed => "algorithm_not_allowed",
            UntrustedIssuer => "untrusted_issuer",
            GatewayTokenReplay => "gateway_token_replay",
            UnknownKey => "unknown_key",
            InvalidSignature => "invalid_signature",
            InvalidClaim => "invalid_claim",
            MissingClaim => "missing_claim",
            TokenExpired => "token_expired",
            TokenNotYetValid => "token_not_yet_valid",
            IssuedInFuture => "issued_in_future",
            AudienceMismatch => "audience_mismatch",
            InsufficientScope => "insufficient_scope",
            AcrNotSatisfied => "acr_not_satisfied",
            AmrNotSatisfied => "amr_not_satisfied",
            CallerNotAllowed => "caller_not_allowed",
            IssuerNotAllowed => "issuer_not_allowed",
            NoGrantableScope => "no_grantable_scope",
            InternalError => "internal_error",
        }
    }

    /// The RFC 6750 error class of this reason.
    pub fn bearer_error(self) -> BearerError {
        use DenyReason::*;
        match self {
            MissingToken => BearerError::None,
            DuplicateAuthorization | MalformedAuthorization | AmbiguousPath => {
                BearerError::InvalidRequest
            }
            NoMatchingRule | InternalError => BearerError::None,
            InsufficientScope | AcrNotSatisfied | AmrNotSatisfied | CallerNotAllowed
            | IssuerNotAllowed | NoGrantableScope => BearerError::InsufficientScope,
            _ => BearerError::InvalidToken,
        }
    }

    /// The HTTP status sent to the client.
    pub fn status(self) -> u16 {
        match (self, self.bearer_error()) {
            (DenyReason::InternalError, _) => 500,
            (DenyReason::NoMatchingRule, _) => 403,
            (_, BearerError::InvalidRequest) => 400,
            (_, BearerError::InsufficientScope) => 403,
            _ => 401,
        }
    }

    /// A fixed, client-safe description (never echoes request or token content).
    /// Only characters RFC 6750 allows in `error_description`.
    pub fn description(self) -> &'static str {
        use DenyReason::*;
        match self {
            NoMatchingRule => "no policy rule allows this request",
            MissingToken => "a bearer token is required",
            DuplicateAuthorization => "more than one Authorization header",
            MalformedAuthorization => "malformed Authorization header",
            AmbiguousPath => "ambiguous request path",
            TokenTooLarge => "token too large",
            HeaderTooLarge => "token header too large",
            JsonTooDeep => "token JSON nested too deeply",
            TooManyClaims => "token has too many claims",
            TooManyScopes => "token has too many scopes",
            MalformedToken => "malformed token",
            EncryptedToken => "encrypted tokens are not accepted",
            NestedToken => "nested tokens are not accepted",
            UnsupportedTokenType => "unsupported token type",
            UnsupportedCriticalHeader => "unsupported critical header parameter",
            DuplicateClaim => "duplicate member in token",
            AlgorithmNotAllowed => "signing algorithm not allowed",
            UntrustedIssuer => "untrusted issuer",
            GatewayTokenReplay => "gateway-issued tokens are not accepted here",
            UnknownKey => "unknown signing key",
            InvalidSignature => "invalid signature",
            InvalidClaim => "invalid claim",
            MissingClaim => "required claim missing",
            TokenExpired => "token expired",
            TokenNotYetValid => "token not yet valid",
            IssuedInFuture => "token issued in the future",
            AudienceMismatch => "token audience not accepted",
            InsufficientScope => "token lacks a required scope",
            AcrNotSatisfied => "authentication context not sufficient",
            AmrNotSatisfied => "authentication methods not sufficient",
            CallerNotAllowed => "client not allowed",
            IssuerNotAllowed => "issuer not allowed for this route",
            NoGrantableScope => "no scope of the token can be granted here",
            InternalError => "internal error",
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
        for r in super::tests_support::ALL {
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
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in super::tests_support::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::DenyReason::{self, *};
    /// Every reason, for exhaustive tests.
    pub const ALL: &[DenyReason] = &[
        NoMatchingRule,
        MissingToken,
        DuplicateAuthorization,
        MalformedAuthorization,
        AmbiguousPath,
        TokenTooLarge,
        HeaderTooLarge,
        JsonTooDeep,
        TooManyClaims,
        TooManyScopes,
        MalformedToken,
        EncryptedToken,
        NestedToken,
        UnsupportedTokenType,
        UnsupportedCriticalHeader,
        DuplicateClaim,
        AlgorithmNotAllowed,
        UntrustedIssuer,
        GatewayTokenReplay,
        UnknownKey,
        InvalidSignature,
        InvalidClaim,
        MissingClaim,
        TokenExpired,
        TokenNotYetValid,
        IssuedInFuture,
        AudienceMismatch,
        InsufficientScope,
        AcrNotSatisfied,
        AmrNotSatisfied,
        CallerNotAllowed,
        IssuerNotAllowed,
        NoGrantableScope,
        InternalError,
    ];
}
