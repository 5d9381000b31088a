//! The hash functions IPVS schedulers use, reimplemented so that keeplb chooses exactly
//! the buckets a kernel director would.
//!
//! Nothing here may depend on per-process randomness (`RandomState`): every director of
//! a cluster and every restart must map a client to the same server.

use std::net::IpAddr;

/// The kernel's 32-bit golden-ratio multiplier (`GOLDEN_RATIO_32` in
/// include/linux/hash.h).
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// `hash_32(val, bits)`: multiplicative hashing, keeping the top `bits` bits, which are
/// the best mixed ones. Used by sh, dh and the lblc/lblcr tables.
pub(crate) fn hash_32(val: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits));
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// Folds an address to 32 bits the way IPVS does before hashing: an IPv4 address in host
/// order, an IPv6 address as the XOR of its four 32-bit words.
///
/// An IPv4-mapped IPv6 address (what a dual-stack socket reports for an IPv4 client) is
/// folded as the IPv4 address it stands for, so both listener kinds agree.
pub(crate) fn fold_addr(ip: IpAddr) -> u32 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            word(0) ^ word(4) ^ word(8) ^ word(12)
        }
    }
}

/// A 128-bit SipHash key, as two little-endian 64-bit halves (`hsiphash_key_t` on a
/// 64-bit kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SipKey(pub u64, pub u64);

struct SipState([u64; 4]);

impl SipState {
    fn new(key: SipKey) -> Self {
        Self([
            key.0 ^ 0x736f_6d65_7073_6575,
            key.1 ^ 0x646f_7261_6e64_6f6d,
            key.0 ^ 0x6c79_6765_6e65_7261,
            key.1 ^ 0x7465_6462_7974_6573,
        ])
    }

    fn round(&mut self) {
        let [v0, v1, v2, v3] = &mut self.0;
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    }

    fn compress(&mut self, word: u64, rounds: usize) {
        self.0[3] ^= word;
        for _ in 0..rounds {
            self.round();
        }
        self.0[0] ^= word;
    }

    fn finish(mut self, rounds: usize) -> u64 {
        self.0[2] ^= 0xff;
        for _ in 0..rounds {
            self.round();
        }
        let [v0, v1, v2, v3] = self.0;
        v0 ^ v1 ^ v2 ^ v3
    }
}

/// SipHash-c-d of `data` (Aumasson and Bernstein's specification): the general form,
/// kept as the reference the fast path below is checked against.
#[cfg(test)]
pub(crate) fn siphash(key: SipKey, data: &[u8], c: usize, d: usize) -> u64 {
    let mut state = SipState::new(key);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        state.compress(u64::from_le_bytes(word), c);
    }
    let mut last = [0u8; 8];
    let tail = chunks.remainder();
    last[..tail.len()].copy_from_slice(tail);
    // The length is taken modulo 256, by specification.
    let last = u64::from_le_bytes(last) | ((data.len() as u64) << 56);
    state.compress(last, c);
    state.finish(d)
}

/// The kernel's `hsiphash(&v, sizeof(u32), key)` on a 64-bit machine: there
/// "HalfSipHash-1-3" is implemented as SipHash-1-3 and truncated to 32 bits. `v` is
/// hashed as its in-memory (little-endian) bytes. A fast path of [`siphash`] for the one
/// input size Maglev hashes.
pub(crate) fn hsiphash_u32(key: SipKey, v: u32) -> u32 {
    let mut state = SipState::new(key);
    state.compress(u64::from(v) | (4 << 56), 1);
    state.finish(3) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn hash_32_matches_the_kernel_definition() {
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(1, 32), GOLDEN_RATIO_32);
        assert_eq!(hash_32(1, 8), 0x61);
        let v = u32::from(Ipv4Addr::new(10, 0, 0, 1));
        // 0x0a000001 * 0x61c88647 = 0x27c88647 (mod 2^32); its top byte is 0x27.
        assert_eq!(hash_32(v, 8), 0x27);
    }

    #[test]
    fn fold_treats_mapped_ipv4_as_ipv4_and_xors_ipv6_words() {
        let v4 = Ipv4Addr::new(192, 0, 2, 7);
        assert_eq!(fold_addr(v4.into()), 0xc000_0207);
        assert_eq!(fold_addr(v4.to_ipv6_mapped().into()), 0xc000_0207);
        let v6: Ipv6Addr = "2001:db8::1:2".parse().unwrap();
        assert_eq!(fold_addr(v6.into()), 0x2001_0db8 ^ 0x0001_0002);
    }

    #[test]
    fn siphash_2_4_reference_vector() {
        // The SipHash paper, appendix A: key 00..0f, message 00..0e.
        let key = SipKey(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        let msg: Vec<u8> = (0..15).collect();
        assert_eq!(siphash(key, &msg, 2, 4), 0xa129_ca61_49be_45e5);
    }

    #[test]
    #[allow(deprecated)] // std's SipHasher is deprecated, but still SipHash-2-4.
    fn siphash_2_4_agrees_with_std_for_every_length() {
        use std::hash::Hasher;
        let key = SipKey(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        let data: Vec<u8> = (0u8..40).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..data.len() {
            let mut std = std::hash::SipHasher::new_with_keys(key.0, key.1);
            std.write(&data[..len]);
            assert_eq!(siphash(key, &data[..len], 2, 4), std.finish(), "len {len}");
        }
    }

    #[test]
    fn hsiphash_fast_path_equals_generic_siphash_1_3() {
        let key = SipKey(2_654_435_761, 2_654_435_761);
        for v in [0u32, 1, 80, 0x0a00_0001, u32::MAX] {
            let generic = siphash(key, &v.to_le_bytes(), 1, 3) as u32;
            assert_eq!(hsiphash_u32(key, v), generic);
        }
    }

    #[test]
    fn hsiphash_golden_values() {
        // Pinned outputs: a change here changes every Maglev table (see maglev.rs).
        let key = SipKey(2_654_435_761, 2_654_435_761);
        assert_eq!(hsiphash_u32(key, 0), GOLDEN[0]);
        assert_eq!(hsiphash_u32(key, 0x0a00_0001), GOLDEN[1]);
    }

    // Computed by this implementation after checking it against std's SipHash-1-3
    // (`DefaultHasher`, zero keys) for every input length up to 40 bytes.
    const GOLDEN: [u32; 2] = [0x1d5a_77c2, 0x0308_0ce4];
}
