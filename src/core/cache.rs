//! The verified-and-minted cache: per VM, it remembers what the token-dependent work of an
//! exchange produced (parse, signature, claims, the rule's requirements, the minted token)
//! for one exact token under one rule, so a client that presents the same token again gets
//! the same minted token back without any cryptography.
//!
//! # What a hit reuses and what it never skips
//!
//! Reused: everything that depends only on the token bytes and the rule: the parse, the
//! signature verification, the claim checks (`exp`, `nbf`, `iat`, `aud`, types), the rule's
//! `require` checks and the minted token (so its `jti` is presented more than once
//! downstream; the `cache.enabled: false` policy option gives one fresh `jti` per request).
//!
//! Never skipped, on every request, before the cache is consulted (`decide`): the path
//! checks (`ambiguous_path`), the rule match (path, method, host, route name) and with it
//! the rule's mode (a shadow rule's hit is audited as enforcing and forwarded unchanged,
//! exactly as a miss), the identity headers (`strip_headers`, and `identity_header_present`
//! with `strip_headers_action: refuse`), the query check (`token_in_query`) and the
//! Authorization header syntax. A token is only looked up under the rule this request
//! matched: an entry made under another rule is never used.
//!
//! Re-checked on a hit (`Policy::still_stands` in `decide`), because the same token under
//! the same rule can get another answer without the token changing:
//! - the key that verified it is still the one in force: the entry keeps the trusted
//!   issuer, the key's `kid`, its fingerprint and the issuer's fetched key-set version; an
//!   issuer with fetched keys selects the key again from the keys in force now
//!   (`KeySnapshot::select`), so a rotation that removes it, a key re-published under the
//!   same `kid` with other material, or keys gone stale beyond `jwks_max_stale_seconds` end
//!   the entry (a gateway token's key: the same, among the gateway's own keys);
//! - the gateway key that would sign now is the one that signed the cached token (`kid`
//!   and fingerprint): a signing-key change (a reconfiguration, a state change, a generated
//!   key) never serves a token minted with another key;
//! - the token still stands (`lifecycle::standing_of`): its issuer has not expired, neither
//!   its `jti`, the original token's id nor its subject is revoked, nothing predates the
//!   issuer's `revoked_before`;
//! - step-up: `auth_time` is still within the rule's `require.max_age_seconds` now;
//! - the issuer's `review_by` is evaluated now for the audit record.
//!
//! Everything else a miss checks depends only on the token, the rule and the policy (the
//! claims, audiences, ceilings, the `act` chain and its depth, `may_act`, the other
//! requirements), and a cache never outlives its policy (below). An entry that fails a
//! re-check is removed and the request decided afresh, so it gets exactly the uncached
//! answer. A request paused waiting for keys is a miss (no key, no entry) and takes the
//! normal path; [`ExchangeCache::forget_issuer_key`] and [`ExchangeCache::forget_token`]
//! free entries eagerly where the glue knows of a change.
//!
//! # Lifetime
//!
//! An entry is served while `issued_at <= now < reuse_until`, where `issued_at` is the
//! minted token's `iat` and `reuse_until = iat + reuse_fraction × (exp - iat)` of the
//! minted token (default one half), never later than the minted `exp` nor the original's
//! `exp`. A clock that goes back before `iat` misses (a token is never served before its
//! own `iat`). A new policy (and so a new signing key) means a new cache: the glue creates
//! one with every policy it loads, and `Policy::decide_cached` binds a cache to its policy
//! ([`ExchangeCache::bind`]), emptying one that was filled under another.
//!
//! # Keys and collisions
//!
//! Entries are found by a 64-bit SipHash-2-4 of the token bytes under this cache's own random
//! key (drawn from the host's randomness by [`ExchangeCache::rekey`] when the glue makes the
//! cache; a cache made natively and not rekeyed uses a fixed key) and the rule's index, and
//! then the stored token is compared byte for byte with the presented one: even a digest
//! collision can never serve another token's identity (it is a miss, and the new entry
//! replaces the old). The key is secret, so nobody can aim collisions at an entry to evict
//! it. SipHash rather than SHA-256: a hit hashes every request's token, and in Envoy's V8
//! SHA-256 of a 600-byte token costs several µs (bench/README.md, "The warm path").
//!
//! # Bounds and eviction
//!
//! Bounded in entries and in bytes (each entry is charged its token, its minted token, its
//! strings and a fixed overhead). Eviction is a segmented LRU: new entries enter a
//! probationary segment; only an entry hit again moves to the protected segment (at most
//! 80% of either bound; its least recently used entries are demoted back to probation when
//! it is full), and eviction takes the probationary segment's least recently used entry
//! first. Only tokens that verified and were exchanged are admitted (denials are never
//! cached), so filling the cache costs an attacker a valid token from a trusted issuer per
//! entry, and a flood of tokens used once churns only the probationary segment: the tokens
//! clients actually reuse stay in the protected one. An entry larger than 1/8 of the byte
//! bound is not admitted, so no single token can flush the cache.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use super::entropy::{Entropy, EntropyError};
use super::mint::MintedToken;
use super::validate::{FetchedKeyUse, VerifiedBy};

/// How the cache is configured (`cache` in the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Whether exchanges are reused at all (`false`: a fresh token per request).
    pub enabled: bool,
    /// Most entries per VM.
    pub max_entries: usize,
    /// Most bytes per VM (tokens, minted tokens, strings and a fixed overhead per entry).
    pub max_bytes: usize,
    /// The fraction of the minted token's lifetime it is reused for, in thousandths.
    pub reuse_permille: u32,
}

impl CacheSettings {
    /// Default `max_entries`.
    pub const DEFAULT_MAX_ENTRIES: usize = 4096;
    /// Default `max_bytes` (4 MiB per VM).
    pub const DEFAULT_MAX_BYTES: usize = 4 << 20;
    /// Default reuse fraction: one half.
    pub const DEFAULT_REUSE_PERMILLE: u32 = 500;
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            reuse_permille: Self::DEFAULT_REUSE_PERMILLE,
        }
    }
}

/// What the audit says of the presented token, shared by every hit (no copy per request).
/// Text is already bounded for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedFacts {
    /// `iss`.
    pub issuer: Arc<str>,
    /// `sub`.
    pub subject: Arc<str>,
    /// The caller, through the issuer's claim mapping.
    pub caller: Option<Arc<str>>,
    /// The token's id (`jti` or a hash of its signature).
    pub token_id: Arc<str>,
    /// For a gateway token: the issuer of the token the chain started from.
    pub origin_issuer: Option<Arc<str>>,
    /// For a gateway token: the id of the token the chain started from.
    pub origin_token_id: Option<Arc<str>>,
    /// Exchanges the minted token records.
    pub chain_depth: Option<usize>,
    /// `acr`.
    pub acr: Option<Arc<str>>,
    /// `auth_time` (also re-checked on a hit against the rule's `max_age_seconds`).
    pub auth_time: Option<u64>,
    /// Scopes the issuer's ceiling removed.
    pub ceiling_removed_scopes: Option<Arc<str>>,
}

/// What the audit says of the minted token, shared by every hit (no copy per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintedFacts {
    /// Its `jti`.
    pub jti: Arc<str>,
    /// Its `aud`.
    pub audience: Arc<str>,
    /// Its `scope`.
    pub scope: Arc<str>,
    /// The signing key's `kid`.
    pub kid: Arc<str>,
}

impl MintedFacts {
    /// The audit's view of `minted`.
    pub fn of(minted: &MintedToken) -> MintedFacts {
        MintedFacts {
            jti: minted.jti.as_str().into(),
            audience: minted.audience.as_str().into(),
            scope: minted.scope.as_str().into(),
            kid: minted.kid.as_str().into(),
        }
    }
}

/// The presented token's provenance, whole (not bounded for the log): what a hit re-checks
/// revocation and the issuer's lifecycle against (`lifecycle::standing_of`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandingFacts {
    /// Its raw `jti`.
    pub jti: Option<Box<str>>,
    /// Its `sub`.
    pub subject: Box<str>,
    /// The id of the token the chain started from (the token itself at the edge).
    pub origin_token_id: Box<str>,
    /// That token's `iat`.
    pub origin_issued_at: Option<u64>,
}

/// The outcome of an exchange: what is forwarded and audited, for a miss and every hit,
/// and what a hit must find unchanged to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// `Bearer <minted token>`, the forwarded Authorization value.
    pub authorization: Arc<str>,
    /// What was minted.
    pub minted: Arc<MintedToken>,
    /// The presented token's audit facts.
    pub facts: VerifiedFacts,
    /// The minted token's audit facts.
    pub minted_facts: MintedFacts,
    /// The position of the (original) trusted issuer in the policy.
    pub issuer_index: usize,
    /// The key that verified the presented token.
    pub verified_by: VerifiedBy,
    /// The fingerprint of the gateway key that signed the minted one (None for HS256).
    pub signer_fingerprint: Option<[u8; 32]>,
    /// Revocation and lifecycle inputs.
    pub standing: StandingFacts,
    /// The issuer's fetched keys that were consulted (for the glue, as on a miss).
    pub fetched_keys: Option<FetchedKeyUse>,
    /// The presented token's `exp`.
    pub original_expires_at: u64,
}

impl Exchange {
    /// Bytes an entry holding this exchange for `token` is charged.
    fn charge(&self, token: &str) -> usize {
        let m = &self.minted;
        let f = &self.facts;
        let s = &self.standing;
        let opt = |o: &Option<Arc<str>>| o.as_ref().map_or(0, |t| t.len());
        let kid = match &self.verified_by {
            VerifiedBy::Issuer { kid, .. } => kid.as_ref().map_or(0, |k| k.len()),
            VerifiedBy::Gateway { kid, .. } => kid.len(),
            VerifiedBy::Introspection => 0,
        };
        // The minted token's short strings are held twice (the token and the audit's facts).
        ENTRY_OVERHEAD
            + token.len()
            + self.authorization.len()
            + m.token.len()
            + 2 * (m.jti.len() + m.audience.len() + m.scope.len() + m.kid.len())
            + f.issuer.len()
            + f.subject.len()
            + opt(&f.caller)
            + f.token_id.len()
            + opt(&f.origin_issuer)
            + opt(&f.origin_token_id)
            + opt(&f.acr)
            + opt(&f.ceiling_removed_scopes)
            + s.jti.as_ref().map_or(0, |j| j.len())
            + s.subject.len()
            + s.origin_token_id.len()
            + self.fetched_keys.as_ref().map_or(0, |k| k.issuer.len())
            + kid
    }
}

/// Fixed bytes charged per entry besides its strings: the slot, the map entry, the Arcs'
/// headers and allocator rounding (measured order of magnitude, on the safe side).
const ENTRY_OVERHEAD: usize = 400;

/// Counters of one cache (for tests and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that found nothing usable.
    pub misses: u64,
    /// Entries evicted to stay within the bounds.
    pub evictions: u64,
    /// Entries dropped because their reuse window had passed.
    pub expired: u64,
    /// Entries not admitted (too large).
    pub refused: u64,
}

/// Map key: the token's keyed digest and the rule's index.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    digest: u64,
    rule: u32,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniformly distributed: it is the hash.
        state.write_u64(self.digest ^ u64::from(self.rule).rotate_left(32));
    }
}

/// Passes the value `Key::hash` wrote through.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Key`; a plain FNV-1a keeps it correct for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Probation,
    Protected,
}

const NIL: usize = usize::MAX;

struct Entry {
    key: Key,
    token: Box<str>,
    exchange: Arc<Exchange>,
    issued_at: u64,
    reuse_until: u64,
    bytes: usize,
    segment: Segment,
    prev: usize,
    next: usize,
}

/// One LRU list threaded through the slots: head is the most recently used.
#[derive(Debug, Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
    len: usize,
    bytes: usize,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
        bytes: 0,
    };
}

/// The verified-and-minted cache of one VM.
pub struct ExchangeCache {
    settings: CacheSettings,
    /// Which policy the entries were made under (see [`ExchangeCache::bind`]).
    owner: u64,
    /// The secret key of the token digests (see [`ExchangeCache::rekey`]).
    key: (u64, u64),
    map: HashMap<Key, usize, BuildHasherDefault<DigestHasher>>,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    probation: List,
    protected: List,
    stats: CacheStats,
}

impl std::fmt::Debug for ExchangeCache {
    // Never print tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeCache")
            .field("settings", &self.settings)
            .field("entries", &self.len())
            .field("bytes", &self.bytes())
            .field("stats", &self.stats)
            .finish()
    }
}

impl ExchangeCache {
    /// The token's digest under this cache's key.
    fn digest(&self, token: &str) -> u64 {
        // SipHash-2-4 with an explicit key: std's `RandomState` would draw its key from the
        // host inside std and panic (killing the VM) if the host refused.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(self.key.0, self.key.1);
        h.write(token.as_bytes());
        h.finish()
    }

    /// Draws a new secret digest key from `entropy` and empties the cache (entries are
    /// filed under the old key). On failure the cache keeps its key and its entries: the
    /// byte-for-byte comparison keeps it correct, only collisions become predictable.
    pub fn rekey(&mut self, entropy: &mut dyn Entropy) -> Result<(), EntropyError> {
        let (mut k0, mut k1) = ([0u8; 8], [0u8; 8]);
        entropy.fill(&mut k0)?;
        entropy.fill(&mut k1)?;
        self.clear();
        self.key = (u64::from_le_bytes(k0), u64::from_le_bytes(k1));
        Ok(())
    }

    /// An empty cache with these bounds (disabled settings give a cache that stores nothing).
    pub fn new(settings: CacheSettings) -> ExchangeCache {
        ExchangeCache {
            settings,
            owner: 0,
            key: (0, 0),
            map: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            probation: List::EMPTY,
            protected: List::EMPTY,
            stats: CacheStats::default(),
        }
    }

    /// Binds the cache to the policy `owner` (an id the policy gives itself at load): if it
    /// held entries of another policy, they are all dropped first. Entries name rules by
    /// position and carry tokens signed by that policy's key, so they must never outlive it.
    pub fn bind(&mut self, owner: u64) {
        if self.owner != owner {
            self.clear();
            self.owner = owner;
        }
    }

    /// Drops every entry (the counters stay).
    pub fn clear(&mut self) {
        self.map.clear();
        self.slots.clear();
        self.free.clear();
        self.probation = List::EMPTY;
        self.protected = List::EMPTY;
    }

    /// Whether this cache stores anything.
    pub fn enabled(&self) -> bool {
        self.settings.enabled && self.settings.max_entries > 0
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.probation.len + self.protected.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged for the entries held.
    pub fn bytes(&self) -> usize {
        self.probation.bytes + self.protected.bytes
    }

    /// Hit, miss and eviction counts so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// The exchange stored for exactly `token` under rule `rule`, if it may be reused at
    /// `now` (seconds). A hit moves the entry up (to the protected segment on its second use).
    pub fn lookup(&mut self, token: &str, rule: usize, now: u64) -> Option<Arc<Exchange>> {
        self.lookup_digest(self.digest(token), token, rule, now)
    }

    fn lookup_digest(
        &mut self,
        digest: u64,
        token: &str,
        rule: usize,
        now: u64,
    ) -> Option<Arc<Exchange>> {
        if !self.enabled() {
            return None;
        }
        let key = key(digest, rule)?;
        let Some(&slot) = self.map.get(&key) else {
            self.stats.misses += 1;
            return None;
        };
        let (usable, same_token) = match self.entry(slot) {
            Some(e) => (
                e.issued_at <= now && now < e.reuse_until,
                *e.token == *token,
            ),
            None => (false, false),
        };
        if !same_token {
            // A digest collision: never another token's exchange.
            self.stats.misses += 1;
            return None;
        }
        if !usable {
            self.remove_slot(slot);
            self.stats.expired += 1;
            self.stats.misses += 1;
            return None;
        }
        self.touch(slot);
        self.stats.hits += 1;
        self.entry(slot).map(|e| Arc::clone(&e.exchange))
    }

    /// Stores the exchange made for `token` under `rule` at `now`. Replaces an entry with the
    /// same digest and rule (the same token re-exchanged, or a colliding one).
    pub fn insert(&mut self, token: &str, rule: usize, exchange: Arc<Exchange>) {
        self.insert_digest(self.digest(token), token, rule, exchange);
    }

    fn insert_digest(&mut self, digest: u64, token: &str, rule: usize, exchange: Arc<Exchange>) {
        if !self.enabled() {
            return;
        }
        let Some(key) = key(digest, rule) else {
            return;
        };
        let bytes = exchange.charge(token);
        if bytes > self.settings.max_bytes / 8 {
            self.stats.refused += 1;
            return;
        }
        let (issued_at, reuse_until) = reuse_window(&exchange, self.settings.reuse_permille);
        if reuse_until <= issued_at {
            // Nothing to reuse (a lifetime of a second or less at this fraction).
            return;
        }
        if let Some(&old) = self.map.get(&key) {
            self.remove_slot(old);
        }
        let entry = Entry {
            key,
            token: token.into(),
            exchange,
            issued_at,
            reuse_until,
            bytes,
            segment: Segment::Probation,
            prev: NIL,
            next: NIL,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(place) = self.slots.get_mut(s) {
                    *place = Some(entry);
                }
                s
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        };
        self.map.insert(key, slot);
        self.push_front(slot, Segment::Probation);
        self.enforce_bounds();
    }

    /// Ends every entry whose presented token was verified by this trusted issuer's key
    /// (`kid` None: any key of the issuer). Returns how many ended. A hit checks the key
    /// itself (see the module documentation); this frees the entries at once.
    pub fn forget_issuer_key(&mut self, issuer_index: usize, kid: Option<&str>) -> usize {
        self.forget_where(|e| match &e.exchange.verified_by {
            VerifiedBy::Issuer { kid: k, .. } => {
                e.exchange.issuer_index == issuer_index && (kid.is_none() || k.as_deref() == kid)
            }
            // No key verified it: its introspection answer ends it (checked on a hit).
            VerifiedBy::Gateway { .. } | VerifiedBy::Introspection => false,
        })
    }

    /// Ends every entry of the original token `token_id` of `issuer` (e.g. revoked).
    /// Returns how many ended.
    pub fn forget_token(&mut self, issuer: &str, token_id: &str) -> usize {
        self.forget_where(|e| {
            let f = &e.exchange.facts;
            &*f.issuer == issuer && &*f.token_id == token_id
        })
    }

    /// Ends the entry of `token` under `rule` (a hit that failed a re-check).
    pub fn remove(&mut self, token: &str, rule: usize) {
        let Some(key) = key(self.digest(token), rule) else {
            return;
        };
        if let Some(&slot) = self.map.get(&key) {
            if self.entry(slot).is_some_and(|e| *e.token == *token) {
                self.remove_slot(slot);
            }
        }
    }

    fn forget_where(&mut self, doomed: impl Fn(&Entry) -> bool) -> usize {
        let slots: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().filter(|e| doomed(e)).map(|_| i))
            .collect();
        for s in &slots {
            self.remove_slot(*s);
        }
        slots.len()
    }

    fn entry(&self, slot: usize) -> Option<&Entry> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    fn entry_mut(&mut self, slot: usize) -> Option<&mut Entry> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    fn list_mut(&mut self, segment: Segment) -> &mut List {
        match segment {
            Segment::Probation => &mut self.probation,
            Segment::Protected => &mut self.protected,
        }
    }

    /// Most entries and bytes of the protected segment: 80% of each bound.
    fn protected_caps(&self) -> (usize, usize) {
        (
            self.settings.max_entries.saturating_mul(4) / 5,
            self.settings.max_bytes / 5 * 4,
        )
    }

    fn set_links(&mut self, slot: usize, prev: usize, next: usize) {
        if let Some(e) = self.entry_mut(slot) {
            e.prev = prev;
            e.next = next;
        }
    }

    fn set_prev(&mut self, slot: usize, prev: usize) {
        if let Some(e) = self.entry_mut(slot) {
            e.prev = prev;
        }
    }

    fn set_next(&mut self, slot: usize, next: usize) {
        if let Some(e) = self.entry_mut(slot) {
            e.next = next;
        }
    }

    /// Links `slot` (not in any list) at the front of `segment`.
    fn push_front(&mut self, slot: usize, segment: Segment) {
        let Some(bytes) = self.entry(slot).map(|e| e.bytes) else {
            return;
        };
        let head = self.list_mut(segment).head;
        self.set_links(slot, NIL, head);
        if let Some(e) = self.entry_mut(slot) {
            e.segment = segment;
        }
        if head != NIL {
            self.set_prev(head, slot);
        }
        let list = self.list_mut(segment);
        list.head = slot;
        if list.tail == NIL {
            list.tail = slot;
        }
        list.len += 1;
        list.bytes += bytes;
    }

    /// Unlinks `slot` from its list.
    fn unlink(&mut self, slot: usize) {
        let Some((prev, next, segment, bytes)) = self
            .entry(slot)
            .map(|e| (e.prev, e.next, e.segment, e.bytes))
        else {
            return;
        };
        if prev != NIL {
            self.set_next(prev, next);
        }
        if next != NIL {
            self.set_prev(next, prev);
        }
        let list = self.list_mut(segment);
        if list.head == slot {
            list.head = next;
        }
        if list.tail == slot {
            list.tail = prev;
        }
        list.len = list.len.saturating_sub(1);
        list.bytes = list.bytes.saturating_sub(bytes);
        self.set_links(slot, NIL, NIL);
    }

    fn remove_slot(&mut self, slot: usize) {
        self.unlink(slot);
        if let Some(e) = self.slots.get_mut(slot).and_then(Option::take) {
            self.map.remove(&e.key);
            self.free.push(slot);
        }
    }

    /// A hit: probation → protected front; protected → its front. Demotes the protected
    /// segment's least recently used entries to probation while it is over its share.
    fn touch(&mut self, slot: usize) {
        self.unlink(slot);
        self.push_front(slot, Segment::Protected);
        let (max_entries, max_bytes) = self.protected_caps();
        while self.protected.len > 1
            && (self.protected.len > max_entries || self.protected.bytes > max_bytes)
        {
            let tail = self.protected.tail;
            self.unlink(tail);
            self.push_front(tail, Segment::Probation);
        }
        self.enforce_bounds();
    }

    /// Evicts least recently used entries, probation first, until both bounds hold.
    fn enforce_bounds(&mut self) {
        while self.len() > self.settings.max_entries || self.bytes() > self.settings.max_bytes {
            let victim = if self.probation.tail != NIL {
                self.probation.tail
            } else {
                self.protected.tail
            };
            if victim == NIL {
                return;
            }
            self.remove_slot(victim);
            self.stats.evictions += 1;
        }
    }
}

fn key(digest: u64, rule: usize) -> Option<Key> {
    Some(Key {
        digest,
        rule: u32::try_from(rule).ok()?,
    })
}

/// `(iat, reuse_until)` of an exchange: the fraction of the minted lifetime, never past the
/// minted or the original `exp`.
fn reuse_window(exchange: &Exchange, reuse_permille: u32) -> (u64, u64) {
    let m = &exchange.minted;
    let issued_at = m.issued_at;
    let life = m.expires_at.saturating_sub(issued_at);
    let reuse = u64::try_from(u128::from(life) * u128::from(reuse_permille.min(1000)) / 1000)
        .unwrap_or(life);
    let until = issued_at
        .saturating_add(reuse)
        .min(m.expires_at)
        .min(exchange.original_expires_at);
    (issued_at, until)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    const NOW: u64 = 1_767_225_600;

    fn exchange(name: &str, iat: u64, exp: u64, original_exp: u64) -> Arc<Exchange> {
        let minted = MintedToken {
            token: format!("minted-{name}"),
            jti: format!("jti-{name}"),
            audience: "orders-service".into(),
            scope: "orders:read".into(),
            issued_at: iat,
            expires_at: exp,
            kid: "gw-1".into(),
        };
        Arc::new(Exchange {
            authorization: format!("Bearer minted-{name}").into(),
            minted_facts: MintedFacts::of(&minted),
            minted: Arc::new(minted),
            facts: VerifiedFacts {
                issuer: "https://idp.test".into(),
                subject: "alice".into(),
                caller: Some("web-app".into()),
                token_id: format!("orig-{name}").into(),
                ..VerifiedFacts::default()
            },
            issuer_index: 0,
            verified_by: VerifiedBy::Issuer {
                kid: Some("k1".into()),
                fingerprint: [1; 32],
                key_set_version: 0,
            },
            signer_fingerprint: Some([2; 32]),
            standing: StandingFacts {
                subject: "alice".into(),
                origin_token_id: format!("orig-{name}").into(),
                ..StandingFacts::default()
            },
            fetched_keys: None,
            original_expires_at: original_exp,
        })
    }

    fn cache(max_entries: usize) -> ExchangeCache {
        ExchangeCache::new(CacheSettings {
            max_entries,
            ..CacheSettings::default()
        })
    }

    fn jti(hit: Option<Arc<Exchange>>) -> Option<String> {
        hit.map(|e| e.minted.jti.clone())
    }

    #[test]
    fn hits_the_same_token_under_the_same_rule_only() {
        let mut c = cache(16);
        c.insert("tok-a", 0, exchange("a", NOW, NOW + 60, NOW + 600));
        assert_eq!(jti(c.lookup("tok-a", 0, NOW)).as_deref(), Some("jti-a"));
        assert_eq!(
            jti(c.lookup("tok-a", 0, NOW + 29)).as_deref(),
            Some("jti-a")
        );
        // Another rule, another token (even a prefix or an extension of it): misses.
        assert!(c.lookup("tok-a", 1, NOW).is_none());
        assert!(c.lookup("tok-", 0, NOW).is_none());
        assert!(c.lookup("tok-ab", 0, NOW).is_none());
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 2,
                misses: 3,
                ..CacheStats::default()
            }
        );
    }

    #[test]
    fn rekeying_changes_the_digests_and_starts_empty() {
        struct Counting(u8);
        impl Entropy for Counting {
            fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
                for b in buf.iter_mut() {
                    self.0 = self.0.wrapping_add(1);
                    *b = self.0;
                }
                Ok(())
            }
        }
        struct Refusing;
        impl Entropy for Refusing {
            fn fill(&mut self, _: &mut [u8]) -> Result<(), EntropyError> {
                Err(EntropyError)
            }
        }
        let mut c = cache(16);
        let fixed = c.digest("tok-a");
        c.insert("tok-a", 0, exchange("a", NOW, NOW + 60, NOW + 600));
        assert!(c.rekey(&mut Counting(0)).is_ok());
        assert_ne!(c.digest("tok-a"), fixed, "a new key, other digests");
        assert!(c.is_empty(), "entries filed under the old key are gone");
        let keyed = c.digest("tok-a");
        c.insert("tok-a", 0, exchange("a", NOW, NOW + 60, NOW + 600));
        assert!(c.lookup("tok-a", 0, NOW).is_some());
        // A host without randomness: key and entries stay.
        assert!(c.rekey(&mut Refusing).is_err());
        assert_eq!(c.digest("tok-a"), keyed);
        assert!(c.lookup("tok-a", 0, NOW).is_some());
    }

    #[test]
    fn reused_until_the_fraction_of_its_lifetime() {
        // Default one half of 60 s: served for [iat, iat + 30).
        let mut c = cache(16);
        c.insert("t", 0, exchange("t", NOW, NOW + 60, NOW + 600));
        assert!(c.lookup("t", 0, NOW + 29).is_some());
        assert!(c.lookup("t", 0, NOW + 30).is_none(), "at the fraction");
        assert!(c.is_empty(), "an expired entry is dropped");
        assert_eq!(c.stats().expired, 1);

        // A quarter.
        let mut c = ExchangeCache::new(CacheSettings {
            reuse_permille: 250,
            ..CacheSettings::default()
        });
        c.insert("t", 0, exchange("t", NOW, NOW + 100, NOW + 600));
        assert!(c.lookup("t", 0, NOW + 24).is_some());
        assert!(c.lookup("t", 0, NOW + 25).is_none());

        // The whole lifetime: still never at or past the minted exp.
        let mut c = ExchangeCache::new(CacheSettings {
            reuse_permille: 1000,
            ..CacheSettings::default()
        });
        c.insert("t", 0, exchange("t", NOW, NOW + 100, NOW + 600));
        assert!(c.lookup("t", 0, NOW + 99).is_some());
        assert!(c.lookup("t", 0, NOW + 100).is_none());
    }

    #[test]
    fn never_past_the_original_exp_nor_before_iat() {
        let mut c = ExchangeCache::new(CacheSettings {
            reuse_permille: 1000,
            ..CacheSettings::default()
        });
        // A minted exp that (wrongly) outlived the original: the original still bounds it.
        c.insert("t", 0, exchange("t", NOW, NOW + 300, NOW + 10));
        assert!(c.lookup("t", 0, NOW + 9).is_some());
        assert!(c.lookup("t", 0, NOW + 10).is_none());
        // A clock that went back before the minted iat misses.
        c.insert("u", 0, exchange("u", NOW, NOW + 300, NOW + 600));
        assert!(c.lookup("u", 0, NOW - 1).is_none());
        // Nothing to reuse: a one-second token at one half is not admitted.
        let mut c = cache(16);
        c.insert("v", 0, exchange("v", NOW, NOW + 1, NOW + 1));
        assert!(c.is_empty());
        assert!(c.lookup("v", 0, NOW).is_none());
    }

    #[test]
    fn a_digest_collision_never_serves_another_token() {
        let mut c = cache(16);
        let forged = c.digest("victim-token");
        c.insert_digest(
            forged,
            "victim-token",
            0,
            exchange("victim", NOW, NOW + 60, NOW + 600),
        );
        // Another token with the same digest (forced): a miss, not the victim's identity.
        assert!(c.lookup_digest(forged, "attacker-token", 0, NOW).is_none());
        assert_eq!(
            jti(c.lookup_digest(forged, "victim-token", 0, NOW)).as_deref(),
            Some("jti-victim")
        );
        // The colliding token's own exchange replaces the entry, and is only its own.
        c.insert_digest(
            forged,
            "attacker-token",
            0,
            exchange("attacker", NOW, NOW + 60, NOW + 600),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(
            jti(c.lookup_digest(forged, "attacker-token", 0, NOW)).as_deref(),
            Some("jti-attacker")
        );
        assert!(c.lookup_digest(forged, "victim-token", 0, NOW).is_none());
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let mut c = cache(10);
        for i in 0..100 {
            c.insert(
                &format!("t{i}"),
                0,
                exchange(&i.to_string(), NOW, NOW + 60, NOW + 600),
            );
            assert!(c.len() <= 10);
        }
        assert_eq!(c.len(), 10);
        assert_eq!(c.stats().evictions, 90);
        // The most recent ones remain.
        assert!(c.lookup("t99", 0, NOW).is_some());
        assert!(c.lookup("t0", 0, NOW).is_none());

        let one = exchange("x", NOW, NOW + 60, NOW + 600).charge("t00");
        let mut c = ExchangeCache::new(CacheSettings {
            max_entries: 1000,
            max_bytes: one * 8,
            ..CacheSettings::default()
        });
        for i in 10..60 {
            c.insert(&format!("t{i}"), 0, exchange("x", NOW, NOW + 60, NOW + 600));
            assert!(c.bytes() <= one * 8, "{} > {}", c.bytes(), one * 8);
        }
        assert_eq!(c.len(), 8);
        // An entry larger than an eighth of the byte bound is not admitted.
        let huge = "h".repeat(one * 2);
        c.insert(&huge, 0, exchange("h", NOW, NOW + 60, NOW + 600));
        assert!(c.lookup(&huge, 0, NOW).is_none());
        assert_eq!(c.stats().refused, 1);
        assert_eq!(c.len(), 8);
    }

    #[test]
    fn a_flood_of_one_time_tokens_does_not_flush_reused_ones() {
        let mut c = cache(100);
        // 50 tokens clients reuse: each seen twice, so protected.
        for i in 0..50 {
            let t = format!("good-{i}");
            c.insert(&t, 0, exchange(&t, NOW, NOW + 600, NOW + 600));
            assert!(c.lookup(&t, 0, NOW).is_some());
        }
        // An attacker with valid tokens sends 10,000 distinct ones, once each.
        for i in 0..10_000 {
            let t = format!("flood-{i}");
            c.insert(&t, 0, exchange(&t, NOW, NOW + 600, NOW + 600));
        }
        assert_eq!(c.len(), 100);
        for i in 0..50 {
            assert!(
                c.lookup(&format!("good-{i}"), 0, NOW + 1).is_some(),
                "good-{i} flushed by the flood"
            );
        }
        // A plain LRU would have lost them all: the flood went through probation only.
        assert!(c.stats().evictions >= 9_950);
    }

    #[test]
    fn the_protected_segment_keeps_to_its_share() {
        let mut c = cache(10);
        for i in 0..20 {
            let t = format!("t{i}");
            c.insert(&t, 0, exchange(&t, NOW, NOW + 600, NOW + 600));
            assert!(c.lookup(&t, 0, NOW).is_some());
            assert!(c.protected.len <= 8, "protected {}", c.protected.len);
            assert!(c.len() <= 10);
        }
        // New entries still get in (and can be hit) when protected is full.
        c.insert("new", 0, exchange("new", NOW, NOW + 600, NOW + 600));
        assert!(c.lookup("new", 0, NOW).is_some());
    }

    #[test]
    fn binding_to_another_policy_drops_every_entry() {
        let mut c = cache(16);
        c.bind(1);
        c.insert("t", 0, exchange("t", NOW, NOW + 60, NOW + 600));
        c.bind(1);
        assert!(c.lookup("t", 0, NOW).is_some());
        c.bind(2);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        assert!(c.lookup("t", 0, NOW).is_none());
        c.insert("t", 0, exchange("t", NOW, NOW + 60, NOW + 600));
        assert!(c.lookup("t", 0, NOW).is_some());
    }

    #[test]
    fn off_switch_stores_nothing() {
        let mut c = ExchangeCache::new(CacheSettings {
            enabled: false,
            ..CacheSettings::default()
        });
        c.insert("t", 0, exchange("t", NOW, NOW + 60, NOW + 600));
        assert!(c.lookup("t", 0, NOW).is_none());
        assert!(c.is_empty());
        assert!(!c.enabled());
    }

    #[test]
    fn entries_end_with_their_issuer_key_or_token() {
        let mut c = cache(16);
        let mut other_key = (*exchange("b", NOW, NOW + 60, NOW + 600)).clone();
        other_key.verified_by = VerifiedBy::Issuer {
            kid: Some("k2".into()),
            fingerprint: [3; 32],
            key_set_version: 1,
        };
        c.insert("a", 0, exchange("a", NOW, NOW + 60, NOW + 600));
        c.insert("a", 1, exchange("a", NOW, NOW + 60, NOW + 600));
        c.insert("b", 0, Arc::new(other_key));
        assert_eq!(c.forget_issuer_key(0, Some("k1")), 2);
        assert!(c.lookup("a", 0, NOW).is_none());
        assert!(c.lookup("b", 0, NOW).is_some());
        assert_eq!(c.forget_token("https://idp.test", "orig-b"), 1);
        assert!(c.is_empty());
        c.insert("a", 0, exchange("a", NOW, NOW + 60, NOW + 600));
        assert_eq!(c.forget_issuer_key(0, None), 1);
        c.insert("a", 0, exchange("a", NOW, NOW + 60, NOW + 600));
        c.remove("a", 1);
        assert_eq!(c.len(), 1);
        c.remove("a", 0);
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn slots_are_reused_and_lists_stay_consistent() {
        let mut c = cache(5);
        for round in 0..50u64 {
            for i in 0..7 {
                let t = format!("t{i}");
                if c.lookup(&t, 0, NOW).is_none() {
                    c.insert(&t, 0, exchange(&t, NOW, NOW + 600, NOW + 600));
                }
            }
            c.remove(&format!("t{}", round % 7), 0);
        }
        assert!(c.slots.len() <= 6, "slots {}", c.slots.len());
        // Walk both lists: counts and bytes agree with the entries.
        for list in [c.probation, c.protected] {
            let (mut n, mut bytes, mut at, mut prev) = (0, 0, list.head, NIL);
            while at != NIL {
                let e = c.entry(at).unwrap();
                assert_eq!(e.prev, prev);
                n += 1;
                bytes += e.bytes;
                prev = at;
                at = e.next;
            }
            assert_eq!(prev, list.tail);
            assert_eq!((n, bytes), (list.len, list.bytes));
        }
        assert_eq!(c.map.len(), c.len());
    }
}
