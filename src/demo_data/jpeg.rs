//! A small baseline JPEG encoder for 8-bit greyscale images.
//!
//! The demo scans are large (A4 at 150 dpi) and many, so encoding speed
//! matters more than anything else: this encoder does one float AAN DCT per
//! block, quantises with a precomputed reciprocal table and writes the
//! standard Huffman tables of Annex K, with no intermediate allocation
//! beyond the output buffer. It writes a JFIF header carrying the pixel
//! density, which the `image` crate's encoder would also allow, but at
//! roughly three times the cost per page in the dev profile.

/// The standard luminance quantisation table (ITU T.81 table K.1), in
/// natural (row-major) order.
#[rustfmt::skip]
const STD_LUMA_QTABLE: [u16; 64] = [
    16, 11, 10, 16,  24,  40,  51,  61,
    12, 12, 14, 19,  26,  58,  60,  55,
    14, 13, 16, 24,  40,  57,  69,  56,
    14, 17, 22, 29,  51,  87,  80,  62,
    18, 22, 37, 56,  68, 109, 103,  77,
    24, 35, 55, 64,  81, 104, 113,  92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103,  99,
];

/// The natural index of each zig-zag position.
#[rustfmt::skip]
const ZIGZAG: [usize; 64] = [
     0,  1,  8, 16,  9,  2,  3, 10,
    17, 24, 32, 25, 18, 11,  4,  5,
    12, 19, 26, 33, 40, 48, 41, 34,
    27, 20, 13,  6,  7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36,
    29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46,
    53, 60, 61, 54, 47, 55, 62, 63,
];

/// Code counts per length of the luminance DC table (table K.3).
const DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
/// Symbols of the luminance DC table.
const DC_VALUES: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

/// Code counts per length of the luminance AC table (table K.5).
const AC_BITS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7D];
/// Symbols of the luminance AC table.
#[rustfmt::skip]
const AC_VALUES: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2,
    0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8,
    0xF9, 0xFA,
];

/// A Huffman code per symbol: `(length in bits, code)`, length 0 when the
/// symbol has no code.
type HuffLut = [(u8, u16); 256];

/// Derives the canonical Huffman codes of a table given as code counts per
/// length and symbols (ITU T.81 annex C).
const fn build_lut(bits: &[u8; 16], values: &[u8]) -> HuffLut {
    let mut lut = [(0u8, 0u16); 256];
    let mut code: u16 = 0;
    let mut k = 0;
    let mut len = 0;
    while len < 16 {
        let mut n = 0;
        while n < bits[len] {
            lut[values[k] as usize] = ((len + 1) as u8, code);
            code += 1;
            k += 1;
            n += 1;
        }
        code <<= 1;
        len += 1;
    }
    lut
}

const DC_LUT: HuffLut = build_lut(&DC_BITS, &DC_VALUES);
const AC_LUT: HuffLut = build_lut(&AC_BITS, &AC_VALUES);

/// The AAN scale factors of the float DCT, per row or column frequency.
const AAN_SCALE: [f32; 8] = [
    1.0,
    1.387_039_8,
    1.306_563,
    1.175_875_6,
    1.0,
    0.785_694_96,
    0.541_196_1,
    0.275_899_38,
];

/// The quantisation table for an IJG-style quality (1–100), in natural
/// order.
fn quant_table(quality: u8) -> [u16; 64] {
    let q = u32::from(quality.clamp(1, 100));
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let mut table = [0u16; 64];
    for (t, &base) in table.iter_mut().zip(STD_LUMA_QTABLE.iter()) {
        let v = (u32::from(base) * scale + 50) / 100;
        *t = v.clamp(1, 255) as u16;
    }
    table
}

/// Appends bits to the entropy-coded segment, stuffing a zero byte after
/// every 0xFF.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    nbits: u32,
}

impl BitWriter<'_> {
    /// Appends the `len` low bits of `bits` (len ≤ 16).
    #[inline(always)]
    fn put(&mut self, bits: u32, len: u32) {
        self.acc = (self.acc << len) | u64::from(bits & ((1u32 << len) - 1));
        self.nbits += len;
        if self.nbits >= 32 {
            self.flush_bytes();
        }
    }

    #[inline(always)]
    fn flush_bytes(&mut self) {
        while self.nbits >= 8 {
            self.nbits -= 8;
            let byte = (self.acc >> self.nbits) as u8;
            self.out.push(byte);
            if byte == 0xFF {
                self.out.push(0);
            }
        }
        self.acc &= (1u64 << self.nbits) - 1;
    }

    /// Pads the last byte with one bits, as the standard asks.
    fn finish(mut self) {
        let pad = (8 - self.nbits % 8) % 8;
        if pad > 0 {
            self.put((1 << pad) - 1, pad);
        }
        self.flush_bytes();
    }
}

/// The magnitude category of a coefficient and its value bits.
#[inline(always)]
fn category(v: i32) -> (u32, u32) {
    let mag = v.unsigned_abs();
    let cat = 32 - mag.leading_zeros();
    let bits = if v < 0 { v.wrapping_sub(1) as u32 } else { v as u32 };
    (cat, bits)
}

/// Float forward DCT of one 8×8 block (AAN, as in IJG's `jfdctflt.c`),
/// done as a row pass, a transposition and a second row pass: the result is
/// the transposed coefficient matrix, scaled by the AAN factors (which the
/// quantisation divisors undo). Fixed-size rows let the compiler drop the
/// bounds checks even at a low optimisation level.
#[inline(always)]
fn fdct_transposed(d: &mut [f32; 64]) {
    for row in d.as_chunks_mut::<8>().0 {
        dct_1d(row);
    }
    for r in 0..8 {
        for c in (r + 1)..8 {
            d.swap(r * 8 + c, c * 8 + r);
        }
    }
    for row in d.as_chunks_mut::<8>().0 {
        dct_1d(row);
    }
}

#[inline(always)]
fn dct_1d(d: &mut [f32; 8]) {
    let tmp0 = d[0] + d[7];
    let tmp7 = d[0] - d[7];
    let tmp1 = d[1] + d[6];
    let tmp6 = d[1] - d[6];
    let tmp2 = d[2] + d[5];
    let tmp5 = d[2] - d[5];
    let tmp3 = d[3] + d[4];
    let tmp4 = d[3] - d[4];

    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    d[0] = tmp10 + tmp11;
    d[4] = tmp10 - tmp11;
    let z1 = (tmp12 + tmp13) * 0.707_106_77;
    d[2] = tmp13 + z1;
    d[6] = tmp13 - z1;

    let tmp10 = tmp4 + tmp5;
    let tmp11 = tmp5 + tmp6;
    let tmp12 = tmp6 + tmp7;
    let z5 = (tmp10 - tmp12) * 0.382_683_43;
    let z2 = 0.541_196_1 * tmp10 + z5;
    let z4 = 1.306_563 * tmp12 + z5;
    let z3 = tmp11 * 0.707_106_77;
    let z11 = tmp7 + z3;
    let z13 = tmp7 - z3;
    d[5] = z13 + z2;
    d[3] = z13 - z2;
    d[1] = z11 + z4;
    d[7] = z11 - z4;
}

/// Appends a marker segment: marker, big-endian length, payload.
fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    out.extend_from_slice(&[0xFF, marker]);
    let len = (payload.len() + 2) as u16;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends a DHT segment for one table.
fn huffman_segment(out: &mut Vec<u8>, class_and_id: u8, bits: &[u8; 16], values: &[u8]) {
    let mut payload = Vec::with_capacity(17 + values.len());
    payload.push(class_and_id);
    payload.extend_from_slice(bits);
    payload.extend_from_slice(values);
    segment(out, 0xC4, &payload);
}

/// Encodes an 8-bit greyscale image (`pixels` row-major, `width × height`)
/// as a baseline JFIF JPEG with the given quality (1–100) and density in
/// dots per inch, appending to `out`.
///
/// # Panics
///
/// Panics when `pixels` is shorter than `width × height` or when a side is
/// zero or above 65 535; callers pass fixed page sizes.
pub fn encode_grey(
    pixels: &[u8],
    width: usize,
    height: usize,
    quality: u8,
    dpi: u16,
    out: &mut Vec<u8>,
) {
    assert!(width > 0 && height > 0 && width <= 65_535 && height <= 65_535);
    assert!(pixels.len() >= width * height);

    let qtable = quant_table(quality);
    // The DCT leaves the coefficients transposed: position `c * 8 + r`
    // holds natural coefficient `r * 8 + c`. The divisors and the zig-zag
    // walk are transposed to match.
    let mut divisors = [0f32; 64];
    for (i, d) in divisors.iter_mut().enumerate() {
        let (c, r) = (i / 8, i % 8);
        *d = 1.0 / (f32::from(qtable[r * 8 + c]) * AAN_SCALE[r] * AAN_SCALE[c] * 8.0);
    }
    let mut zigzag_t = [0usize; 64];
    let mut zz_divisors = [0f32; 64];
    for ((t, d), &n) in zigzag_t.iter_mut().zip(zz_divisors.iter_mut()).zip(ZIGZAG.iter()) {
        *t = (n % 8) * 8 + n / 8;
        *d = divisors[*t];
    }

    // SOI and JFIF APP0 with the density in dots per inch.
    out.extend_from_slice(&[0xFF, 0xD8]);
    let mut app0 = Vec::with_capacity(14);
    app0.extend_from_slice(b"JFIF\0");
    app0.extend_from_slice(&[1, 1, 1]);
    app0.extend_from_slice(&dpi.to_be_bytes());
    app0.extend_from_slice(&dpi.to_be_bytes());
    app0.extend_from_slice(&[0, 0]);
    segment(out, 0xE0, &app0);

    // DQT, 8-bit precision, table 0, in zig-zag order.
    let mut dqt = Vec::with_capacity(65);
    dqt.push(0);
    dqt.extend(ZIGZAG.iter().map(|&n| qtable[n] as u8));
    segment(out, 0xDB, &dqt);

    // SOF0: 8 bits, height, width, one component (id 1, 1×1, table 0).
    let mut sof = Vec::with_capacity(9);
    sof.push(8);
    sof.extend_from_slice(&(height as u16).to_be_bytes());
    sof.extend_from_slice(&(width as u16).to_be_bytes());
    sof.extend_from_slice(&[1, 1, 0x11, 0]);
    segment(out, 0xC0, &sof);

    huffman_segment(out, 0x00, &DC_BITS, &DC_VALUES);
    huffman_segment(out, 0x10, &AC_BITS, &AC_VALUES);

    // SOS: one component, tables 0/0, full spectral range.
    segment(out, 0xDA, &[1, 1, 0x00, 0, 63, 0]);

    let mut bw = BitWriter {
        out,
        acc: 0,
        nbits: 0,
    };
    let mut block = [0f32; 64];
    let mut coefs = [0i32; 64];
    let mut prev_dc = 0i32;
    for by in (0..height).step_by(8) {
        for bx in (0..width).step_by(8) {
            // Load the block, replicating the last row and column when the
            // image does not fill it.
            for r in 0..8 {
                let y = (by + r).min(height - 1);
                let row = &pixels[y * width..y * width + width];
                let dst = &mut block[r * 8..r * 8 + 8];
                if bx + 8 <= width {
                    for (d, &p) in dst.iter_mut().zip(&row[bx..bx + 8]) {
                        *d = f32::from(p) - 128.0;
                    }
                } else {
                    for (c, d) in dst.iter_mut().enumerate() {
                        *d = f32::from(row[(bx + c).min(width - 1)]) - 128.0;
                    }
                }
            }
            fdct_transposed(&mut block);
            // Quantise straight into zig-zag order. Rounding is half away
            // from zero's cheap cousin: offset into the positive range,
            // truncate, shift back (no libm call, no overflow check).
            for ((c, &n), &div) in coefs.iter_mut().zip(zigzag_t.iter()).zip(zz_divisors.iter()) {
                *c = ((block[n] * div + 16_384.5) as i32).wrapping_sub(16_384);
            }

            let dc = coefs[0];
            let (cat, bits) = category(dc.wrapping_sub(prev_dc));
            prev_dc = dc;
            let (len, code) = DC_LUT[cat as usize];
            bw.put(u32::from(code), u32::from(len));
            if cat > 0 {
                bw.put(bits, cat);
            }

            let last = coefs.iter().rposition(|&v| v != 0).unwrap_or(0);
            let mut run = 0u32;
            for &v in &coefs[1..=last.max(1)] {
                if v == 0 {
                    run += 1;
                    continue;
                }
                while run > 15 {
                    let (len, code) = AC_LUT[0xF0];
                    bw.put(u32::from(code), u32::from(len));
                    run -= 16;
                }
                let (cat, bits) = category(v);
                let (len, code) = AC_LUT[((run << 4) | cat) as usize];
                bw.put(u32::from(code), u32::from(len));
                bw.put(bits, cat);
                run = 0;
            }
            if last < 63 {
                let (len, code) = AC_LUT[0x00];
                bw.put(u32::from(code), u32::from(len));
            }
        }
    }
    bw.finish();
    out.extend_from_slice(&[0xFF, 0xD9]);
}
