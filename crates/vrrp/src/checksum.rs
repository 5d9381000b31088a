//! The Internet checksum (RFC 1071), shared by VRRP, IPv4 and ICMPv6.

/// Accumulates the one's-complement sum of 16-bit big-endian words.
///
/// Pieces may have odd lengths: a pseudo-header and a message are summed as if they
/// were one contiguous buffer, so an odd byte is carried over to the next piece instead
/// of being padded in the middle.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Checksum {
    sum: u64,
    pending: Option<u8>,
}

impl Checksum {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn add(&mut self, mut data: &[u8]) -> &mut Self {
        if let Some(high) = self.pending.take() {
            match data.split_first() {
                Some((&low, rest)) => {
                    self.sum += u64::from(u16::from_be_bytes([high, low]));
                    data = rest;
                }
                None => {
                    self.pending = Some(high);
                    return self;
                }
            }
        }
        let mut words = data.chunks_exact(2);
        for word in &mut words {
            self.sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            self.pending = Some(*last);
        }
        self
    }

    /// The checksum to put into a header whose checksum field was summed as zero.
    ///
    /// Summing a buffer that already holds a correct checksum yields 0, which is how
    /// receivers verify.
    pub(crate) fn finish(&self) -> u16 {
        let mut sum = self.sum;
        if let Some(high) = self.pending {
            sum += u64::from(u16::from_be_bytes([high, 0]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        // The loop leaves at most 16 bits, so the cast is exact.
        !(sum as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (folded), so the
        // checksum is its complement.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Checksum::new().add(&data).finish(), !0xddf2);
    }

    #[test]
    fn split_at_odd_offset_equals_contiguous() {
        let data = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde];
        let whole = Checksum::new().add(&data).finish();
        for cut in 0..=data.len() {
            let (a, b) = data.split_at(cut);
            assert_eq!(
                Checksum::new().add(a).add(b).finish(),
                whole,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn verifying_a_correct_buffer_gives_zero() {
        let mut data = vec![0x45, 0x00, 0x00, 0x1c, 0xab, 0xcd, 0x00, 0x00];
        let ck = Checksum::new().add(&data).finish();
        data.extend_from_slice(&ck.to_be_bytes());
        assert_eq!(Checksum::new().add(&data).finish(), 0);
    }
}
