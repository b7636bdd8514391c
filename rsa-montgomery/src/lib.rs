//! Variable-time Montgomery arithmetic for RSA public-key operations: x^65537 mod n for odd
//! moduli of up to 4096 bits, on 32-bit limbs with 64-bit accumulators.
//!
//! Written for Envoy's V8 (the filter runs as `wasm32`): 32×32→64-bit products are native
//! there while 128-bit arithmetic is emulated, and plain loops over slices of fixed stack
//! arrays compile to tight code with no allocation and no bounds-check panics. Verification
//! handles no secret, so nothing here is constant time: the final subtraction and the
//! comparisons branch on the values. Multiplication is separated operand scanning (the full
//! product, then a Montgomery reduction), so squarings compute each cross product once.
//! Measured in `bench/README.md` ("The cold path"). Its own crate so that the release
//! profile can build it at opt-level 3 while the filter is size-optimised: at opt-level "z"
//! the iterator adapters stay out of line and it ran slower than crypto-bigint in V8.
#![forbid(unsafe_code)]

use std::cmp::Ordering;

/// The most 32-bit limbs a modulus may have (4096 bits).
pub const MAX_LIMBS: usize = 128;
/// Room for a double-width product and its carry limb.
const WIDE: usize = 2 * MAX_LIMBS + 1;

/// An odd modulus with its Montgomery constants, computed once per key.
#[derive(Clone)]
pub struct Modulus {
    /// n, little-endian limbs, no zero limb on top.
    n: Vec<u32>,
    /// R² mod n, R = 2^(32·limbs): turns a value into Montgomery form.
    r2: Vec<u32>,
    /// −n⁻¹ mod 2^32.
    n0inv: u32,
    /// The length of n in bytes (its big-endian encoding, no leading zero byte).
    byte_len: usize,
}

impl std::fmt::Debug for Modulus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Modulus")
            .field("byte_len", &self.byte_len)
            .finish_non_exhaustive()
    }
}

/// Big-endian bytes into little-endian limbs; false when they do not fit in `out`.
fn limbs_from_be(bytes: &[u8], out: &mut [u32]) -> bool {
    out.fill(0);
    let mut chunks = bytes.rchunks(4);
    for limb in out.iter_mut() {
        let Some(chunk) = chunks.next() else {
            return true;
        };
        *limb = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    }
    chunks.all(|c| c.iter().all(|b| *b == 0))
}

/// Compares two little-endian numbers of the same number of limbs.
fn cmp_limbs(a: &[u32], b: &[u32]) -> Ordering {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        match x.cmp(y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// a −= b (same length); returns the borrow out.
fn sub_in_place(a: &mut [u32], b: &[u32]) -> bool {
    let mut borrow = 0u64;
    for (x, y) in a.iter_mut().zip(b) {
        let d = u64::from(*x)
            .wrapping_sub(u64::from(*y))
            .wrapping_sub(borrow);
        *x = d as u32;
        borrow = (d >> 63) & 1;
    }
    borrow != 0
}

/// t += a·b over equal-length limb slices, returning the carry out; unrolled by four, since the
/// filter's release profile optimises for size (no automatic unrolling) and this loop is
/// nearly all of an RSA verification.
#[inline(always)]
fn mul_add_row(t: &mut [u32], a: &[u32], b: u64) -> u64 {
    let mut c = 0u64;
    let mut t4 = t.chunks_exact_mut(4);
    let mut a4 = a.chunks_exact(4);
    for (tq, aq) in (&mut t4).zip(&mut a4) {
        if let ([t0, t1, t2, t3], [a0, a1, a2, a3]) = (tq, aq) {
            let v = u64::from(*t0) + u64::from(*a0) * b + c;
            *t0 = v as u32;
            let v = u64::from(*t1) + u64::from(*a1) * b + (v >> 32);
            *t1 = v as u32;
            let v = u64::from(*t2) + u64::from(*a2) * b + (v >> 32);
            *t2 = v as u32;
            let v = u64::from(*t3) + u64::from(*a3) * b + (v >> 32);
            *t3 = v as u32;
            c = v >> 32;
        }
    }
    for (tj, aj) in t4.into_remainder().iter_mut().zip(a4.remainder()) {
        let v = u64::from(*tj) + u64::from(*aj) * b + c;
        *tj = v as u32;
        c = v >> 32;
    }
    c
}

impl Modulus {
    /// Prepares the big-endian modulus `n`: None unless it is odd, above 1, at most 4096
    /// bits, and written without leading zero bytes.
    pub fn new(n_be: &[u8]) -> Option<Modulus> {
        if n_be.first().is_none_or(|b| *b == 0)
            || n_be.last().is_none_or(|b| b & 1 == 0)
            || n_be == [1]
        {
            return None;
        }
        let limbs = n_be.len().div_ceil(4);
        if limbs > MAX_LIMBS {
            return None;
        }
        let mut n = vec![0u32; limbs];
        if !limbs_from_be(n_be, &mut n) {
            return None;
        }
        // Newton's iteration doubles the correct low bits of n0⁻¹ each step: 1 → 32 in 5.
        let n0 = n.first().copied().unwrap_or(1);
        let mut inv = 1u32;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let mut m = Modulus {
            n,
            r2: Vec::new(),
            n0inv: inv.wrapping_neg(),
            byte_len: n_be.len(),
        };
        m.r2 = m.compute_r2()?;
        Some(m)
    }

    /// The number of limbs.
    fn limbs(&self) -> usize {
        self.n.len()
    }

    /// R² mod n: R mod n by doubling 2^(bits−1) (which is below n), then Montgomery forms of
    /// powers of two: doubling Mont(2^j) gives Mont(2^(j+1)), squaring gives Mont(2^(2j)),
    /// until Mont(R) = R² mod n. About `limbs` doublings and a few squarings: cheap at load.
    fn compute_r2(&self) -> Option<Vec<u32>> {
        let s = self.limbs();
        let top = self.n.last().copied()?;
        let bits = 32 * s - top.leading_zeros() as usize;
        let mut x = vec![0u32; s];
        let top_bit = bits - 1;
        *x.get_mut(top_bit / 32)? = 1 << (top_bit % 32);
        for _ in top_bit..32 * s {
            self.double_mod(&mut x);
        }
        // x = R mod n = Mont(1). The target exponent 32·s = odd · 2^q.
        let target = 32 * s;
        let q = target.trailing_zeros();
        let odd = target >> q;
        for _ in 0..odd {
            self.double_mod(&mut x);
        }
        let mut y = vec![0u32; s];
        for _ in 0..q {
            self.mont_sqr(&x, &mut y);
            std::mem::swap(&mut x, &mut y);
        }
        Some(x)
    }

    /// x = 2x mod n, for x < n.
    fn double_mod(&self, x: &mut [u32]) {
        let mut carry = 0u32;
        for limb in x.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | carry;
            carry = next;
        }
        if carry != 0 || cmp_limbs(x, &self.n) != Ordering::Less {
            sub_in_place(x, &self.n);
        }
    }

    /// Montgomery reduction of the double-width `t` (2·s + 1 limbs, value below n·R + … <
    /// 2n·R): out = t·R⁻¹ mod n.
    fn reduce(&self, t: &mut [u32], out: &mut [u32]) {
        let s = self.limbs();
        for i in 0..s {
            let Some(window) = t.get_mut(i..) else {
                return;
            };
            let Some((low, high)) = window.split_at_mut_checked(s) else {
                return;
            };
            let m = low.first().copied().unwrap_or(0).wrapping_mul(self.n0inv);
            let m = u64::from(m);
            let mut c = mul_add_row(low, &self.n, m);
            for h in high.iter_mut() {
                if c == 0 {
                    break;
                }
                let v = u64::from(*h) + c;
                *h = v as u32;
                c = v >> 32;
            }
        }
        // The result, below 2n, is t[s..=2s]; one subtraction brings it below n.
        let Some(res) = t.get_mut(s..=2 * s) else {
            return;
        };
        let Some((top, res)) = res.split_last_mut() else {
            return;
        };
        if *top != 0 || cmp_limbs(res, &self.n) != Ordering::Less {
            sub_in_place(res, &self.n);
        }
        for (o, r) in out.iter_mut().zip(res.iter()) {
            *o = *r;
        }
    }

    /// out = a·b·R⁻¹ mod n (a, b < n; s limbs each).
    fn mont_mul(&self, a: &[u32], b: &[u32], out: &mut [u32]) {
        let s = self.limbs();
        let mut wide = [0u32; WIDE];
        let Some(t) = wide.get_mut(..=2 * s) else {
            return;
        };
        for (i, bi) in b.iter().enumerate() {
            let bi = u64::from(*bi);
            let Some((top, row)) = t.get_mut(i..=i + s).and_then(|r| r.split_last_mut()) else {
                return;
            };
            *top = mul_add_row(row, a, bi) as u32;
        }
        self.reduce(t, out);
    }

    /// out = a²·R⁻¹ mod n (a < n): each cross product once, doubled, plus the squares.
    fn mont_sqr(&self, a: &[u32], out: &mut [u32]) {
        let s = self.limbs();
        let mut wide = [0u32; WIDE];
        let Some(t) = wide.get_mut(..=2 * s) else {
            return;
        };
        // Cross products a_i·a_j, i < j, at limb i + j; row i ends with its carry at i + s.
        for (i, ai) in a.iter().enumerate() {
            let ai = u64::from(*ai);
            let (Some(rest), Some((top, row))) = (
                a.get(i + 1..),
                t.get_mut(2 * i + 1..=i + s)
                    .and_then(|r| r.split_last_mut()),
            ) else {
                continue;
            };
            *top = mul_add_row(row, rest, ai) as u32;
        }
        // Double (the cross sum is below 2^(64s−1), so no bit leaves 2s limbs), then add the
        // squares a_i² at limb 2i.
        let mut bit = 0u32;
        for limb in t.iter_mut() {
            let next = *limb >> 31;
            *limb = (*limb << 1) | bit;
            bit = next;
        }
        let mut c = 0u64;
        for (pair, ai) in t.chunks_exact_mut(2).zip(a) {
            let ai = u64::from(*ai);
            let [lo, hi] = pair else {
                continue;
            };
            let v = u64::from(*lo) + ai * ai + c;
            *lo = v as u32;
            let w = u64::from(*hi) + (v >> 32);
            *hi = w as u32;
            c = w >> 32;
        }
        self.reduce(t, out);
    }

    /// x^65537 mod n written big-endian into `out` (exactly as long as n in bytes), for the
    /// big-endian `base`; false, and `out` untouched, unless `base` is below n.
    pub fn pow65537(&self, base: &[u8], out: &mut [u8]) -> bool {
        let s = self.limbs();
        if out.len() != self.byte_len {
            return false;
        }
        let mut buf = [[0u32; MAX_LIMBS]; 3];
        let [x, acc, tmp] = &mut buf;
        let (Some(x), Some(acc), Some(tmp)) = (x.get_mut(..s), acc.get_mut(..s), tmp.get_mut(..s))
        else {
            return false;
        };
        if !limbs_from_be(base, x) || cmp_limbs(x, &self.n) != Ordering::Less {
            return false;
        }
        // x·R² · R⁻¹ = Mont(x); sixteen squarings give Mont(x^65536); a last product with x
        // (not in Montgomery form) gives x^65537 directly.
        self.mont_mul(x, &self.r2, acc);
        for _ in 0..8 {
            self.mont_sqr(acc, tmp);
            self.mont_sqr(tmp, acc);
        }
        self.mont_mul(acc, x, tmp);
        for (chunk, limb) in out.rchunks_mut(4).zip(tmp.iter()) {
            let bytes = limb.to_be_bytes();
            for (o, b) in chunk.iter_mut().rev().zip(bytes.iter().rev()) {
                *o = *b;
            }
        }
        true
    }

    /// The length of n in bytes.
    pub fn byte_len(&self) -> usize {
        self.byte_len
    }
}
