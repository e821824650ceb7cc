//! Synthetic page scans: a greyscale A4 page at 150 dpi, Seyès-ruled like a
//! French exam sheet, covered with cursive-looking handwriting, with paper
//! shading and scanner grain, encoded as JPEG.
//!
//! Everything is drawn from ChaCha8 streams seeded from (seed, copy, page),
//! so a page is byte-identical from one run to the next. The writer's
//! style (size, slant, pen, ink) depends on the copy only, so the pages of
//! one copy look written by the same hand.
//!
//! The JPEG encoding is `jpeg-encoder`'s baseline encoder (integer DCT,
//! standard tables), used without its `simd` feature: the AVX2 path it
//! enables is picked at run time, and a page must be the same bytes on every
//! machine, not only from one run to the next.

use jpeg_encoder::{ColorType, Encoder, PixelDensity};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Page width in pixels (A4 at 150 dpi).
pub const WIDTH: usize = 1240;
/// Page height in pixels (A4 at 150 dpi).
pub const HEIGHT: usize = 1754;
/// The resolution written in the JFIF header.
pub const DPI: u16 = 150;

/// The JPEG size window a page aims for, in bytes (inside the 150–250 KB
/// the demo promises). The quality is predicted from the amount of ink so
/// that a page lands here at the first attempt; it is adjusted and the page
/// encoded again (up to three more times) when it does not.
const SIZE_MIN: usize = 155_000;
const SIZE_MAX: usize = 245_000;

/// Length of the straight pieces a pen stroke is drawn with, in pixels.
const STROKE_STEP: f32 = 3.5;

/// Millimetres to pixels at 150 dpi.
const MM: f32 = 150.0 / 25.4;

/// Stream tags, so that the style and page streams never coincide.
const TAG_STYLE: u32 = 0x5354_594C;
const TAG_PAGE: u32 = 0x5041_4745;

/// A ChaCha8 generator for one (seed, copy, page, purpose).
fn rng_for(seed: u64, copy_index: u64, page: u32, tag: u32) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[0..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&copy_index.to_le_bytes());
    key[16..20].copy_from_slice(&page.to_le_bytes());
    key[20..24].copy_from_slice(&tag.to_le_bytes());
    key[24..32].copy_from_slice(b"copiste1");
    ChaCha8Rng::from_seed(key)
}

/// One page scan as JPEG bytes.
pub fn scan_jpeg(seed: u64, copy_index: u64, page: u32) -> Vec<u8> {
    let mut pixels = Vec::new();
    let mut out = Vec::new();
    render_jpeg(seed, copy_index, page, &mut pixels, &mut out);
    out
}

/// Renders one page into `out` (cleared first), reusing `pixels` as the
/// page buffer so that a worker allocates once for many pages.
pub fn render_jpeg(seed: u64, copy_index: u64, page: u32, pixels: &mut Vec<u8>, out: &mut Vec<u8>) {
    let style = Style::new(&mut rng_for(seed, copy_index, 0, TAG_STYLE));
    let mut rng = rng_for(seed, copy_index, page, TAG_PAGE);
    let grain = rng.random_range(GRAIN.0..GRAIN.1);

    let mut canvas = Canvas::new(std::mem::take(pixels), &mut rng);
    canvas.draw_page(&style, page, &mut rng);
    canvas.finish(grain, &mut rng);

    // The size depends mostly on how much is written: start from a quality
    // predicted from the ink laid down, and correct it in the rare case the
    // page falls outside the size window.
    let mut quality = predicted_quality(canvas.ink_length);
    for _ in 0..4 {
        encode_page(&canvas.px, quality, out);
        if out.len() < SIZE_MIN && quality < 90 {
            quality += if out.len() < SIZE_MIN * 4 / 5 { 8 } else { 4 };
        } else if out.len() > SIZE_MAX && quality > 20 {
            quality -= if out.len() > SIZE_MAX * 6 / 5 { 8 } else { 4 };
        } else {
            break;
        }
    }
    *pixels = canvas.px;
}

/// The page sides as the JPEG header stores them (checked at compile time).
const WIDTH_U16: u16 = {
    assert!(WIDTH > 0 && WIDTH <= u16::MAX as usize);
    WIDTH as u16
};
const HEIGHT_U16: u16 = {
    assert!(HEIGHT > 0 && HEIGHT <= u16::MAX as usize);
    HEIGHT as u16
};

/// Encodes a whole page (`WIDTH × HEIGHT` grey levels, row-major) as a
/// baseline JFIF JPEG of the given quality (1–100) with the density of
/// [`DPI`] dots per inch, into `out` (cleared first).
///
/// # Panics
///
/// When `px` is shorter than a page: the encoder fails only on a short
/// buffer or a zero side, and writing into a `Vec` cannot fail.
fn encode_page(px: &[u8], quality: u8, out: &mut Vec<u8>) {
    out.clear();
    let mut encoder = Encoder::new(&mut *out, quality);
    encoder.set_density(PixelDensity::dpi(DPI));
    encoder
        .encode(px, WIDTH_U16, HEIGHT_U16, ColorType::Luma)
        .expect("a whole greyscale page always encodes");
}

/// The range of the grain's standard deviation, in grey levels.
const GRAIN: (f32, f32) = (2.0, 3.5);

/// Expected JPEG size in kilobytes at a few qualities, as `a + b × ink`
/// with the pen stroke length in thousands of pixels (least-squares fit on
/// 120 generated pages; mean error 5 %, worst 15 %).
const SIZE_MODEL: [(f32, f32, f32); 5] = [
    (30.0, 63.6, 1.01),
    (40.0, 77.6, 1.19),
    (50.0, 95.6, 1.33),
    (60.0, 117.6, 1.48),
    (70.0, 154.4, 1.68),
];

/// The JPEG quality expected to bring a page with `ink_length` pixels of
/// pen stroke to the middle of the size window, interpolated (or
/// extrapolated) linearly in [`SIZE_MODEL`].
fn predicted_quality(ink_length: f32) -> u8 {
    let target = (SIZE_MIN + SIZE_MAX) as f32 / 2000.0;
    let ink = ink_length / 1000.0;
    let size = |(q, a, b): (f32, f32, f32)| (q, a + b * ink);
    let n = SIZE_MODEL.len();
    // The pair of fitted qualities that brackets the target, or the
    // nearest pair at either end.
    let mut i = 0;
    while i + 2 < n && size(SIZE_MODEL[i + 1]).1 < target {
        i += 1;
    }
    let (q0, s0) = size(SIZE_MODEL[i]);
    let (q1, s1) = size(SIZE_MODEL[i + 1]);
    let q = q0 + (target - s0) * (q1 - q0) / (s1 - s0);
    q.round().clamp(20.0, 90.0) as u8
}

/// How one candidate writes: the same for every page of a copy.
struct Style {
    /// Height of a lower-case letter body, in pixels.
    x_height: f32,
    /// Horizontal shear of the letters (positive leans right).
    slant: f32,
    /// Letter width factor.
    width: f32,
    /// Pen radius at nominal pressure, in pixels.
    pen: f32,
    /// Grey level of the ink at full pressure.
    ink: f32,
    /// Space between words, in x-heights.
    word_gap: f32,
    /// Random displacement of the letter key points, in x-heights.
    jitter: f32,
    /// Amplitude of the baseline's slow wave, in pixels.
    wobble: f32,
    /// Left indent from the margin line, in pixels.
    indent: f32,
}

impl Style {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        Self {
            x_height: rng.random_range(12.5..18.5),
            slant: rng.random_range(0.05..0.4),
            width: rng.random_range(0.85..1.25),
            pen: rng.random_range(1.0..1.7),
            ink: rng.random_range(70.0..125.0),
            word_gap: rng.random_range(0.6..1.1),
            jitter: rng.random_range(0.03..0.09),
            wobble: rng.random_range(0.0..3.0),
            indent: rng.random_range(8.0..30.0),
        }
    }
}

/// A glyph template: key points in x-height units (x right, y up from the
/// baseline), the advance width, and an optional detached mark (i dot, t
/// bar, accent) drawn after the word.
struct Glyph {
    points: &'static [(f32, f32)],
    width: f32,
    mark: Mark,
}

#[derive(Clone, Copy)]
enum Mark {
    None,
    Dot(f32, f32),
    Bar(f32, f32, f32, f32),
}

const fn g(points: &'static [(f32, f32)], width: f32) -> Glyph {
    Glyph {
        points,
        width,
        mark: Mark::None,
    }
}

/// The looped stroke shared by the plain and the barred letter below.
const LOOP: &[(f32, f32)] = &[
    (0.3, 0.4),
    (0.55, 0.7),
    (0.4, 0.95),
    (0.15, 0.7),
    (0.15, 0.15),
    (0.4, 0.0),
    (0.65, 0.15),
];

/// Lower-case cursive letters with a French frequency weight each (per
/// mille, roughly).
const LETTERS: &[(u32, Glyph)] = &[
    (120, g(LOOP, 0.65)),
    (
        25,
        Glyph {
            points: LOOP,
            width: 0.65,
            mark: Mark::Bar(0.3, 1.25, 0.6, 1.6),
        },
    ),
    (
        80,
        g(
            &[
                (0.35, 0.95),
                (0.5, 0.4),
                (0.4, 0.05),
                (0.15, 0.05),
                (0.25, 0.2),
                (0.5, 0.05),
                (0.65, 0.12),
            ],
            0.65,
        ),
    ),
    (
        76,
        g(
            &[
                (0.62, 0.78),
                (0.35, 0.95),
                (0.08, 0.6),
                (0.15, 0.1),
                (0.45, 0.15),
                (0.62, 0.8),
                (0.58, 0.2),
                (0.7, 0.0),
                (0.85, 0.12),
            ],
            0.85,
        ),
    ),
    (
        75,
        Glyph {
            points: &[(0.25, 0.9), (0.2, 0.15), (0.3, 0.0), (0.45, 0.12)],
            width: 0.45,
            mark: Mark::Dot(0.3, 1.45),
        },
    ),
    (
        72,
        Glyph {
            points: &[(0.3, 1.7), (0.22, 0.2), (0.35, 0.0), (0.6, 0.12)],
            width: 0.6,
            mark: Mark::Bar(0.02, 1.0, 0.6, 1.05),
        },
    ),
    (
        71,
        g(
            &[
                (0.15, 0.9),
                (0.15, 0.0),
                (0.3, 0.7),
                (0.5, 0.9),
                (0.62, 0.65),
                (0.62, 0.1),
                (0.72, 0.0),
                (0.9, 0.12),
            ],
            0.9,
        ),
    ),
    (
        66,
        g(
            &[
                (0.15, 0.85),
                (0.3, 0.95),
                (0.35, 0.8),
                (0.5, 0.85),
                (0.5, 0.3),
                (0.55, 0.0),
                (0.7, 0.12),
            ],
            0.7,
        ),
    ),
    (
        63,
        g(
            &[
                (0.15, 0.9),
                (0.12, 0.2),
                (0.3, 0.0),
                (0.55, 0.35),
                (0.6, 0.9),
                (0.58, 0.15),
                (0.7, 0.0),
                (0.85, 0.12),
            ],
            0.85,
        ),
    ),
    (
        55,
        g(
            &[
                (0.35, 1.3),
                (0.5, 2.15),
                (0.3, 2.3),
                (0.15, 1.9),
                (0.2, 0.3),
                (0.35, 0.0),
                (0.6, 0.12),
            ],
            0.6,
        ),
    ),
    (
        54,
        g(
            &[
                (0.45, 0.95),
                (0.15, 0.75),
                (0.1, 0.25),
                (0.35, 0.0),
                (0.58, 0.35),
                (0.45, 0.95),
                (0.65, 0.85),
                (0.8, 0.8),
            ],
            0.8,
        ),
    ),
    (
        37,
        g(
            &[
                (0.62, 0.78),
                (0.35, 0.95),
                (0.08, 0.6),
                (0.15, 0.1),
                (0.45, 0.15),
                (0.68, 2.1),
                (0.58, 0.2),
                (0.7, 0.0),
                (0.85, 0.12),
            ],
            0.85,
        ),
    ),
    (
        33,
        g(
            &[
                (0.55, 0.85),
                (0.35, 0.95),
                (0.1, 0.6),
                (0.15, 0.1),
                (0.45, 0.0),
                (0.7, 0.15),
            ],
            0.7,
        ),
    ),
    (
        30,
        g(
            &[
                (0.2, 0.9),
                (0.15, -1.1),
                (0.2, 0.5),
                (0.45, 0.95),
                (0.68, 0.55),
                (0.45, 0.05),
                (0.22, 0.25),
                (0.6, 0.1),
                (0.85, 0.15),
            ],
            0.85,
        ),
    ),
    (
        30,
        g(
            &[
                (0.15, 0.9),
                (0.15, 0.0),
                (0.25, 0.7),
                (0.42, 0.9),
                (0.55, 0.7),
                (0.55, 0.0),
                (0.65, 0.7),
                (0.85, 0.9),
                (0.95, 0.65),
                (0.95, 0.1),
                (1.05, 0.0),
                (1.25, 0.12),
            ],
            1.25,
        ),
    ),
    (
        16,
        g(
            &[
                (0.2, 0.9),
                (0.35, 0.0),
                (0.55, 0.9),
                (0.6, 0.8),
                (0.75, 0.85),
            ],
            0.75,
        ),
    ),
    (
        14,
        g(
            &[
                (0.62, 0.78),
                (0.35, 0.95),
                (0.08, 0.6),
                (0.15, 0.1),
                (0.45, 0.15),
                (0.62, 0.85),
                (0.58, -1.1),
                (0.62, -0.2),
                (0.85, 0.1),
            ],
            0.85,
        ),
    ),
    (
        11,
        g(
            &[
                (0.3, 1.3),
                (0.45, 2.1),
                (0.25, 2.25),
                (0.15, 1.8),
                (0.2, -1.0),
                (0.35, -1.1),
                (0.35, -0.2),
                (0.2, 0.2),
                (0.6, 0.15),
            ],
            0.6,
        ),
    ),
    (
        9,
        g(
            &[
                (0.3, 1.3),
                (0.45, 2.15),
                (0.25, 2.3),
                (0.12, 1.9),
                (0.15, 0.2),
                (0.35, 0.0),
                (0.6, 0.3),
                (0.55, 0.85),
                (0.35, 0.75),
                (0.6, 0.7),
                (0.8, 0.8),
            ],
            0.8,
        ),
    ),
    (
        9,
        g(
            &[
                (0.62, 0.78),
                (0.35, 0.95),
                (0.08, 0.6),
                (0.15, 0.1),
                (0.45, 0.15),
                (0.62, 0.85),
                (0.55, -1.0),
                (0.3, -1.35),
                (0.1, -1.1),
                (0.45, -0.3),
                (0.85, 0.1),
            ],
            0.85,
        ),
    ),
    (
        7,
        g(
            &[
                (0.3, 1.3),
                (0.45, 2.15),
                (0.25, 2.3),
                (0.12, 1.9),
                (0.12, 0.0),
                (0.25, 0.65),
                (0.5, 0.9),
                (0.65, 0.6),
                (0.65, 0.1),
                (0.75, 0.0),
                (0.95, 0.12),
            ],
            0.95,
        ),
    ),
    (
        5,
        Glyph {
            points: &[
                (0.25, 0.9),
                (0.22, -1.0),
                (0.05, -1.3),
                (0.0, -1.0),
                (0.3, -0.2),
                (0.5, 0.12),
            ],
            width: 0.5,
            mark: Mark::Dot(0.3, 1.45),
        },
    ),
];

/// Cursive capitals for the start of a sentence.
const CAPITALS: &[Glyph] = &[
    g(
        &[
            (0.5, 1.9),
            (0.7, 2.3),
            (0.45, 2.35),
            (0.35, 1.6),
            (0.2, 0.3),
            (0.0, 0.05),
            (0.2, -0.05),
            (0.5, 0.1),
            (0.8, 0.05),
            (1.0, 0.12),
        ],
        1.0,
    ),
    g(
        &[
            (0.9, 2.0),
            (0.6, 2.3),
            (0.15, 1.7),
            (0.05, 0.6),
            (0.4, 0.0),
            (0.85, 0.15),
        ],
        0.9,
    ),
    g(
        &[
            (0.7, 2.0),
            (0.4, 2.3),
            (0.15, 1.9),
            (0.45, 1.2),
            (0.1, 0.9),
            (0.1, 0.2),
            (0.45, 0.0),
            (0.8, 0.15),
        ],
        0.85,
    ),
    g(
        &[
            (0.3, 2.2),
            (0.35, 0.0),
            (0.3, 1.9),
            (0.8, 2.2),
            (0.95, 1.6),
            (0.4, 1.1),
            (0.9, 0.12),
        ],
        0.95,
    ),
];

/// Handwritten digits, in units of the digit height (y up).
const DIGITS: [&[(f32, f32)]; 10] = [
    &[
        (0.35, 1.0),
        (0.08, 0.75),
        (0.05, 0.25),
        (0.3, 0.0),
        (0.55, 0.3),
        (0.55, 0.75),
        (0.35, 1.0),
        (0.25, 0.95),
    ],
    &[(0.1, 0.75), (0.4, 1.0), (0.38, 0.0)],
    &[
        (0.05, 0.75),
        (0.3, 1.0),
        (0.55, 0.85),
        (0.5, 0.6),
        (0.05, 0.02),
        (0.6, 0.0),
    ],
    &[
        (0.05, 0.9),
        (0.45, 0.98),
        (0.25, 0.55),
        (0.55, 0.35),
        (0.4, 0.03),
        (0.02, 0.1),
    ],
    &[(0.45, 0.0), (0.45, 1.0), (0.02, 0.35), (0.6, 0.35)],
    &[
        (0.55, 1.0),
        (0.12, 1.0),
        (0.08, 0.55),
        (0.45, 0.55),
        (0.55, 0.25),
        (0.3, 0.0),
        (0.02, 0.1),
    ],
    &[
        (0.5, 1.0),
        (0.12, 0.55),
        (0.08, 0.15),
        (0.3, 0.0),
        (0.55, 0.2),
        (0.35, 0.45),
        (0.07, 0.3),
    ],
    &[(0.02, 1.0), (0.6, 1.0), (0.2, 0.0)],
    &[
        (0.5, 0.9),
        (0.3, 1.0),
        (0.08, 0.8),
        (0.5, 0.3),
        (0.3, 0.0),
        (0.08, 0.25),
        (0.5, 0.75),
        (0.3, 1.0),
    ],
    &[
        (0.55, 0.7),
        (0.3, 0.5),
        (0.05, 0.7),
        (0.3, 1.0),
        (0.55, 0.8),
        (0.45, 0.0),
    ],
];

/// The page being drawn, with the skew of the scan.
///
/// Lines and ink are drawn over white (255); [`Canvas::finish`] then
/// multiplies by the paper's tone and adds the scanner grain, in one pass.
struct Canvas {
    px: Vec<u8>,
    /// Tangent of the page's rotation on the scanner glass.
    skew: f32,
    /// Length of pen stroke drawn so far, in pixels.
    ink_length: f32,
}

/// A point of a pen trajectory, in image pixels.
#[derive(Clone, Copy)]
struct Pt {
    x: f32,
    y: f32,
}

impl Canvas {
    fn new(mut px: Vec<u8>, rng: &mut ChaCha8Rng) -> Self {
        px.clear();
        px.resize(WIDTH * HEIGHT, 255);
        Self {
            px,
            skew: rng.random_range(-0.006..0.006),
            ink_length: 0.0,
        }
    }

    /// Maps page coordinates to image coordinates (small rotation).
    fn map(&self, x: f32, y: f32) -> (f32, f32) {
        let cx = WIDTH as f32 / 2.0;
        let cy = HEIGHT as f32 / 2.0;
        (x - (y - cy) * self.skew, y + (x - cx) * self.skew)
    }

    fn draw_page(&mut self, style: &Style, page: u32, rng: &mut ChaCha8Rng) {
        let first_page = page == 1;
        let top: f32 = if first_page { 330.0 } else { 95.0 };
        let grid_top = top - 3.0 * 47.244;
        let margin = 40.0 * MM + rng.random_range(-3.0..3.0);
        self.seyes(grid_top.max(20.0), margin);
        if first_page {
            self.header(rng);
        }
        self.page_number(style, page, rng);
        self.handwriting(style, top, margin, first_page, rng);
    }

    /// A printed line, nearly horizontal, at page ordinate `y` from `x0` to
    /// `x1`, `half` pixels thick on each side of its centre, multiplying
    /// what lies under it by `1 - strength` at full coverage.
    fn hline(&mut self, y: f32, x0: f32, x1: f32, half: f32, strength: f32) {
        let (xa, _) = self.map(x0, y);
        let (xb, _) = self.map(x1, y);
        let xa = xa.max(0.0) as usize;
        let xb = (xb.min(WIDTH as f32 - 1.0)) as usize;
        let cx = WIDTH as f32 / 2.0;
        let mut profile = LineProfile::default();
        for x in xa..=xb {
            let yc = y + (x as f32 - cx) * self.skew;
            profile.update(yc, half, strength, HEIGHT);
            for (k, &m) in profile.factors.iter().enumerate().take(profile.len) {
                let p = &mut self.px[(profile.first + k) * WIDTH + x];
                *p = ((u32::from(*p) * m) >> 8) as u8;
            }
        }
    }

    /// A printed line, nearly vertical, at page abscissa `x` from `y0` to
    /// `y1`.
    fn vline(&mut self, x: f32, y0: f32, y1: f32, half: f32, strength: f32) {
        let cy = HEIGHT as f32 / 2.0;
        let ya = y0.max(0.0) as usize;
        let yb = y1.min(HEIGHT as f32 - 1.0) as usize;
        let mut profile = LineProfile::default();
        for y in ya..=yb {
            let xc = x - (y as f32 - cy) * self.skew;
            profile.update(xc, half, strength, WIDTH);
            let row = &mut self.px[y * WIDTH..(y + 1) * WIDTH];
            let span = &mut row[profile.first..profile.first + profile.len];
            for (p, &m) in span.iter_mut().zip(profile.factors.iter()) {
                *p = ((u32::from(*p) * m) >> 8) as u8;
            }
        }
    }

    /// Seyès ruling: a bold line every 8 mm, three fine ones between, a
    /// vertical line every 8 mm, and the margin.
    fn seyes(&mut self, top: f32, margin: f32) {
        let step = 2.0 * MM;
        let bottom = HEIGHT as f32 - 45.0;
        let mut k = 0;
        loop {
            let y = top + k as f32 * step;
            if y > bottom {
                break;
            }
            if k % 4 == 0 {
                self.hline(y, 30.0, WIDTH as f32 - 30.0, 0.7, 0.13);
            } else {
                self.hline(y, 30.0, WIDTH as f32 - 30.0, 0.4, 0.04);
            }
            k += 1;
        }
        let mut x = margin + 8.0 * MM;
        while x < WIDTH as f32 - 30.0 {
            self.vline(x, top, bottom, 0.4, 0.05);
            x += 8.0 * MM;
        }
        self.vline(margin, 15.0, HEIGHT as f32 - 15.0, 1.1, 0.3);
    }

    /// The printed header of the first sheet: a frame with label bars and
    /// the (anonymised, hence empty) candidate boxes.
    fn header(&mut self, rng: &mut ChaCha8Rng) {
        let (x0, y0, x1, y1) = (60.0, 40.0, WIDTH as f32 - 60.0, 215.0);
        self.hline(y0, x0, x1, 1.0, 0.55);
        self.hline(y1, x0, x1, 1.0, 0.55);
        self.vline(x0, y0, y1, 1.0, 0.55);
        self.vline(x1, y0, y1, 1.0, 0.55);
        // Printed labels, as short thick bars.
        for (i, w) in [240.0, 180.0, 320.0].into_iter().enumerate() {
            let y = y0 + 35.0 + i as f32 * 45.0;
            let mut x = x0 + 25.0;
            while x < x0 + 25.0 + w {
                let word = rng.random_range(20.0..60.0);
                for dy in 0..3 {
                    self.hline(y + dy as f32 * 2.0, x, x + word, 1.0, 0.6);
                }
                x += word + 9.0;
            }
        }
        // Candidate number boxes.
        for i in 0..12 {
            let bx = x0 + 470.0 + i as f32 * 42.0;
            self.hline(y0 + 120.0, bx, bx + 34.0, 0.6, 0.45);
            self.hline(y0 + 160.0, bx, bx + 34.0, 0.6, 0.45);
            self.vline(bx, y0 + 120.0, y0 + 160.0, 0.6, 0.45);
            self.vline(bx + 34.0, y0 + 120.0, y0 + 160.0, 0.6, 0.45);
        }
    }

    /// The page number, handwritten and circled in the top right corner.
    fn page_number(&mut self, style: &Style, page: u32, rng: &mut ChaCha8Rng) {
        let h = style.x_height * 1.5;
        let text = page.to_string();
        let mut x = WIDTH as f32 - 140.0 + rng.random_range(-10.0..10.0);
        let base = if page == 1 { 290.0 } else { 75.0 } + rng.random_range(-4.0..4.0);
        let start = x;
        for ch in text.bytes() {
            let digit = DIGITS[usize::from(ch - b'0')];
            let pts: Vec<Pt> = digit
                .iter()
                .map(|&(dx, dy)| {
                    self.jittered(x + dx * h, base - dy * h, style.x_height * 0.05, rng)
                })
                .collect();
            self.stroke(&pts, style, rng);
            x += 0.8 * h;
        }
        // A loose circle around the number.
        let (cx, cy) = ((start + x) / 2.0 - 0.1 * h, base - 0.5 * h);
        let r = (x - start).max(h) * 0.9;
        let pts: Vec<Pt> = (0..=14)
            .map(|i| {
                let a = -1.2 + i as f32 * 0.48;
                let rr = r * (1.0 + 0.06 * (i as f32 * 1.3).sin());
                self.jittered(cx + rr * a.cos(), cy + rr * 0.75 * a.sin(), 0.0, rng)
            })
            .collect();
        self.stroke(&pts, style, rng);
    }

    /// A point with the writer's jitter, mapped onto the skewed page.
    fn jittered(&self, x: f32, y: f32, amount: f32, rng: &mut ChaCha8Rng) -> Pt {
        let (jx, jy) = if amount > 0.0 {
            (
                rng.random_range(-amount..amount),
                rng.random_range(-amount..amount),
            )
        } else {
            (0.0, 0.0)
        };
        let (mx, my) = self.map(x + jx, y + jy);
        Pt { x: mx, y: my }
    }

    /// Lines of handwriting on the bold Seyès lines from `top` down.
    fn handwriting(
        &mut self,
        style: &Style,
        top: f32,
        margin: f32,
        first_page: bool,
        rng: &mut ChaCha8Rng,
    ) {
        let line_step = 8.0 * MM;
        let bottom = HEIGHT as f32 - 60.0;
        // Most pages are full; some stop early (end of an answer).
        let last = if rng.random_bool(0.25) {
            top + rng.random_range(0.3..0.85) * (bottom - top)
        } else {
            bottom
        };
        let right = WIDTH as f32 - 50.0;
        let mut question = 1u32;
        let mut new_paragraph = true;
        let mut baseline = top;
        let mut line_no = 0;
        while baseline <= last {
            let skip = rng.random_bool(0.08);
            if !skip {
                if new_paragraph && rng.random_bool(0.3) {
                    self.question_label(style, margin, baseline, question, rng);
                    question += 1;
                }
                let indent = if new_paragraph { 45.0 } else { 0.0 };
                let start = margin + style.indent + indent + rng.random_range(-3.0..3.0);
                let end = if rng.random_bool(0.18) {
                    new_paragraph = true;
                    start + rng.random_range(0.2..0.8) * (right - start)
                } else {
                    new_paragraph = false;
                    right - rng.random_range(0.0..40.0)
                };
                let underline = first_page && line_no == 0;
                self.line_of_words(
                    style,
                    start,
                    end,
                    baseline,
                    new_paragraph || indent > 0.0,
                    underline,
                    rng,
                );
            } else {
                new_paragraph = true;
            }
            baseline += line_step;
            line_no += 1;
        }
    }

    /// A question number in the margin, like "3)".
    fn question_label(
        &mut self,
        style: &Style,
        margin: f32,
        baseline: f32,
        n: u32,
        rng: &mut ChaCha8Rng,
    ) {
        let h = style.x_height * 1.4;
        let mut x = margin - 2.5 * h - rng.random_range(0.0..10.0);
        for ch in n.to_string().bytes() {
            let digit = DIGITS[usize::from(ch - b'0')];
            let pts: Vec<Pt> = digit
                .iter()
                .map(|&(dx, dy)| {
                    self.jittered(x + dx * h, baseline - dy * h, style.x_height * 0.05, rng)
                })
                .collect();
            self.stroke(&pts, style, rng);
            x += 0.75 * h;
        }
        let paren = [(0.05, 1.1), (0.3, 0.5), (0.05, -0.15)];
        let pts: Vec<Pt> = paren
            .iter()
            .map(|&(dx, dy)| self.jittered(x + dx * h, baseline - dy * h, 0.0, rng))
            .collect();
        self.stroke(&pts, style, rng);
    }

    /// Words from `start` to about `end` on one baseline.
    #[allow(clippy::too_many_arguments)]
    fn line_of_words(
        &mut self,
        style: &Style,
        start: f32,
        end: f32,
        baseline: f32,
        capital_first: bool,
        underline: bool,
        rng: &mut ChaCha8Rng,
    ) {
        let xh = style.x_height;
        let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let mut x = start;
        let mut capital = capital_first;
        let mut points: Vec<Pt> = Vec::with_capacity(128);
        let mut marks: Vec<(Mark, f32)> = Vec::with_capacity(8);
        while x < end - 2.0 * xh {
            let letters = word_length(rng);
            let word_start = x;
            points.clear();
            marks.clear();
            // Lead-in from slightly below the x-height middle.
            let wobble = |x: f32| baseline + style.wobble * (x * 0.004 + phase).sin();
            points.push(self.jittered(x - 0.15 * xh, wobble(x) - 0.1 * xh, 0.0, rng));
            for i in 0..letters {
                let glyph = if i == 0 && capital {
                    &CAPITALS[rng.random_range(0..CAPITALS.len())]
                } else {
                    pick_letter(rng)
                };
                let w = glyph.width * style.width * xh * rng.random_range(0.92..1.08);
                let scale_x = w / glyph.width;
                let base = wobble(x);
                for &(gx, gy) in glyph.points {
                    let px = x + gx * scale_x + style.slant * gy * xh;
                    let py = base - gy * xh;
                    points.push(self.jittered(px, py, style.jitter * xh, rng));
                }
                if !matches!(glyph.mark, Mark::None) {
                    marks.push((glyph.mark, x));
                }
                x += w;
                if x > end + 2.0 * xh {
                    break;
                }
            }
            capital = false;
            self.stroke(&points, style, rng);
            self.marks(&marks, &wobble, style, rng);
            if let Some(next_capital) = self.word_end(word_start, x, &wobble, style, rng) {
                capital = next_capital;
            }
            x += style.word_gap * xh * rng.random_range(0.8..1.3);
        }
        if underline {
            let y = baseline + 0.45 * xh;
            let a = self.jittered(start, y, 0.0, rng);
            let m = self.jittered((start + x) / 2.0, y + 1.0, 1.5, rng);
            let b = self.jittered(x, y - 1.0, 0.0, rng);
            self.stroke(&[a, m, b], style, rng);
        }
    }

    /// The dots and bars of a word's letters (`marks`: each with its
    /// letter's left edge), over the line that `wobble` gives.
    fn marks(
        &mut self,
        marks: &[(Mark, f32)],
        wobble: &dyn Fn(f32) -> f32,
        style: &Style,
        rng: &mut ChaCha8Rng,
    ) {
        let xh = style.x_height;
        for &(mark, mx) in marks {
            let base = wobble(mx);
            let sx = style.width * xh;
            match mark {
                Mark::Dot(dx, dy) => {
                    let p = self.jittered(
                        mx + dx * sx + style.slant * dy * xh,
                        base - dy * xh,
                        0.1 * xh,
                        rng,
                    );
                    let q = Pt {
                        x: p.x + 1.5,
                        y: p.y + 0.8,
                    };
                    self.stroke(&[p, q], style, rng);
                }
                Mark::Bar(ax, ay, bx, by) => {
                    let p = self.jittered(
                        mx + ax * sx + style.slant * ay * xh,
                        base - ay * xh,
                        0.08 * xh,
                        rng,
                    );
                    let q = self.jittered(
                        mx + bx * sx + style.slant * by * xh,
                        base - by * xh,
                        0.08 * xh,
                        rng,
                    );
                    self.stroke(&[p, q], style, rng);
                }
                Mark::None => {}
            }
        }
    }

    /// Now and then, the end of a word from `word_start` to `x`: crossed
    /// out, a full stop (then `Some` of whether the next word starts with a
    /// capital), or a comma.
    fn word_end(
        &mut self,
        word_start: f32,
        x: f32,
        wobble: &dyn Fn(f32) -> f32,
        style: &Style,
        rng: &mut ChaCha8Rng,
    ) -> Option<bool> {
        let xh = style.x_height;
        let roll: f32 = rng.random();
        if roll < 0.025 {
            let y = wobble(word_start) - 0.45 * xh;
            let a = self.jittered(word_start - 3.0, y, 0.0, rng);
            let m = self.jittered((word_start + x) / 2.0, y - 0.08 * xh, 0.1 * xh, rng);
            let b = self.jittered(x + 3.0, y + 0.05 * xh, 0.0, rng);
            self.stroke(&[a, m, b], style, rng);
        } else if roll < 0.12 {
            let p = self.jittered(x + 0.15 * xh, wobble(x) - 0.02 * xh, 0.0, rng);
            let q = Pt {
                x: p.x + 1.2,
                y: p.y + 0.6,
            };
            self.stroke(&[p, q], style, rng);
            return Some(rng.random_bool(0.7));
        } else if roll < 0.2 {
            let p = self.jittered(x + 0.1 * xh, wobble(x) - 0.05 * xh, 0.0, rng);
            let q = self.jittered(x - 0.05 * xh, wobble(x) + 0.45 * xh, 0.0, rng);
            self.stroke(&[p, q], style, rng);
        }
        None
    }

    /// Draws a pen stroke through `pts` (a Catmull-Rom spline), as round
    /// capsules whose width follows the pen pressure: heavier on down
    /// strokes, tapered at both ends, with a slow random swell.
    fn stroke(&mut self, pts: &[Pt], style: &Style, rng: &mut ChaCha8Rng) {
        if pts.is_empty() {
            return;
        }
        let swell_phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let swell_freq: f32 = rng.random_range(0.02..0.06);
        let paper = 255.0;
        let mut prev = pts[0];
        let mut travelled = 0.0f32;
        let mut prev_r = style.pen * 0.6;
        let n = pts.len();
        // Total length estimate for the end taper.
        let total: f32 = pts.windows(2).map(|w| dist(w[0], w[1])).sum::<f32>() * 1.15;
        for i in 0..n.saturating_sub(1) {
            let p0 = pts[i.saturating_sub(1)];
            let p1 = pts[i];
            let p2 = pts[i + 1];
            let p3 = pts[(i + 2).min(n - 1)];
            let chord = dist(p1, p2);
            let steps = ((chord / STROKE_STEP).ceil() as usize).max(1);
            for s in 1..=steps {
                let t = s as f32 / steps as f32;
                let cur = catmull_rom(p0, p1, p2, p3, t);
                let len = dist(prev, cur);
                travelled += len;
                let down = if len > 0.0 {
                    (cur.y - prev.y) / len
                } else {
                    0.0
                };
                let taper = (travelled / 6.0)
                    .min(1.0)
                    .min(((total - travelled) / 6.0).clamp(0.35, 1.0));
                let pressure = (1.0 + 0.22 * down)
                    * (0.9 + 0.12 * (travelled * swell_freq + swell_phase).sin())
                    * (0.6 + 0.4 * taper);
                let r = style.pen * pressure;
                let level = paper - (paper - style.ink) * (0.7 + 0.3 * pressure.min(1.0));
                self.capsule(prev, cur, prev_r, r, level);
                self.ink_length += len;
                prev = cur;
                prev_r = r;
            }
        }
        if n == 1 {
            self.capsule(prev, prev, prev_r, prev_r, style.ink);
        }
    }

    /// Inks the round-ended segment from `a` (radius `ra`) to `b` (radius
    /// `rb`) with anti-aliased edges, darkening towards `level`.
    fn capsule(&mut self, a: Pt, b: Pt, ra: f32, rb: f32, level: f32) {
        let reach = ra.max(rb) + 0.5;
        let x0 = ((a.x.min(b.x) - reach).floor().max(0.0)) as usize;
        let x1 = ((a.x.max(b.x) + reach).ceil().min(WIDTH as f32 - 1.0)) as usize;
        let y0 = ((a.y.min(b.y) - reach).floor().max(0.0)) as usize;
        let y1 = ((a.y.max(b.y) + reach).ceil().min(HEIGHT as f32 - 1.0)) as usize;
        if x0 > x1 || y0 > y1 {
            return;
        }
        let (dx, dy) = (b.x - a.x, b.y - a.y);
        let len2 = dx * dx + dy * dy;
        let inv = if len2 > 1e-6 { 1.0 / len2 } else { 0.0 };
        let (xa, ya) = (x0 as f32 - a.x, a.y);
        for y in y0..=y1 {
            let py = y as f32 - ya;
            let row = &mut self.px[y * WIDTH + x0..=y * WIDTH + x1];
            let mut px = xa;
            for p in row.iter_mut() {
                let t = ((px * dx + py * dy) * inv).clamp(0.0, 1.0);
                let ex = px - t * dx;
                let ey = py - t * dy;
                let outer = ra + (rb - ra) * t + 0.5;
                let d2 = ex * ex + ey * ey;
                px += 1.0;
                if d2 >= outer * outer {
                    continue;
                }
                let cov = (outer - d2.sqrt()).min(1.0);
                let cur = f32::from(*p);
                let v = cur + (level - cur) * cov;
                if v < cur {
                    *p = v as u8;
                }
            }
        }
    }

    /// Turns the drawing into a scan: multiplies by the paper's tone (a
    /// base level with a slow illumination gradient) and adds scanner
    /// grain, Gaussian-like noise of standard deviation `sigma` grey
    /// levels taken from a lookup table indexed by random bytes.
    fn finish(&mut self, sigma: f32, rng: &mut ChaCha8Rng) {
        let base: f32 = rng.random_range(232.0..244.0);
        let tilt: f32 = rng.random_range(-5.0..5.0);
        let wave: f32 = rng.random_range(0.0..3.0);
        let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let mut lut = [0i32; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            let p = (i as f32 + 0.5) / 256.0;
            *v = (sigma * probit(p)).round() as i32;
        }
        // Paper tone as a multiplier of the white drawing, in 1/65536.
        let to_fixed = 65_536.0 / 255.0;
        let mut cols = [0i32; WIDTH];
        for (x, c) in cols.iter_mut().enumerate() {
            let u = x as f32 / WIDTH as f32 - 0.5;
            *c = ((tilt * u - 6.0 * u * u) * to_fixed) as i32;
        }
        // The grain comes from a fast generator keyed by the page stream:
        // ChaCha for two million bytes per page would double the cost.
        let mut noise = WyRand(rng.next_u64());
        for (y, row) in self.px.chunks_exact_mut(WIDTH).enumerate() {
            let v = y as f32 / HEIGHT as f32;
            let level = ((base + wave * (v * 5.0 + phase).sin()) * to_fixed) as i32;
            for (px8, c8) in row
                .as_chunks_mut::<8>()
                .0
                .iter_mut()
                .zip(cols.as_chunks::<8>().0)
            {
                let bytes = noise.next().to_le_bytes();
                for ((p, &c), &b) in px8.iter_mut().zip(c8.iter()).zip(bytes.iter()) {
                    let v = ((i32::from(*p) * (level + c)) >> 16) + lut[usize::from(b)];
                    *p = v.clamp(0, 255) as u8;
                }
            }
        }
    }
}

/// The per-row (or per-column) coverage of a thin anti-aliased line,
/// recomputed only when its centre moves by a sixteenth of a pixel.
#[derive(Default)]
struct LineProfile {
    /// Centre position in sixteenths of a pixel, for the cache.
    key: i32,
    valid: bool,
    first: usize,
    len: usize,
    /// Multipliers (0–256) for the covered pixels.
    factors: [u32; 8],
}

impl LineProfile {
    fn update(&mut self, centre: f32, half: f32, strength: f32, limit: usize) {
        let key = (centre * 16.0).round() as i32;
        if self.valid && key == self.key {
            return;
        }
        self.key = key;
        self.valid = true;
        let c = key as f32 / 16.0;
        let lo = ((c - half - 0.5).floor().max(0.0)) as usize;
        let hi = ((c + half + 0.5).ceil().max(0.0) as usize).min(limit - 1);
        self.first = lo;
        self.len = 0;
        for pos in lo..=hi {
            if self.len == self.factors.len() {
                break;
            }
            let cov = (half + 0.5 - (pos as f32 - c).abs()).clamp(0.0, 1.0);
            self.factors[self.len] = (256.0 * (1.0 - strength * cov)).round() as u32;
            self.len += 1;
        }
    }
}

/// The wyrand generator: tiny and fast, for the grain only.
struct WyRand(u64);

impl WyRand {
    #[inline(always)]
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) as u64) ^ (t as u64)
    }
}

fn dist(a: Pt, b: Pt) -> f32 {
    ((b.x - a.x).powi(2) + (b.y - a.y).powi(2)).sqrt()
}

/// The uniform Catmull-Rom spline between `p1` and `p2` at `t` in 0–1.
fn catmull_rom(p0: Pt, p1: Pt, p2: Pt, p3: Pt, t: f32) -> Pt {
    let t2 = t * t;
    let t3 = t2 * t;
    let f = |a: f32, b: f32, c: f32, d: f32| {
        0.5 * (2.0 * b
            + (c - a) * t
            + (2.0 * a - 5.0 * b + 4.0 * c - d) * t2
            + (3.0 * b - a - 3.0 * c + d) * t3)
    };
    Pt {
        x: f(p0.x, p1.x, p2.x, p3.x),
        y: f(p0.y, p1.y, p2.y, p3.y),
    }
}

/// The inverse of the standard normal distribution function (Acklam's
/// rational approximation, plenty for a noise table).
fn probit(p: f32) -> f32 {
    let p = f64::from(p);
    const A: [f64; 6] = [
        -39.696_830_286_653_76,
        220.946_098_424_520_5,
        -275.928_510_446_968_7,
        138.357_751_867_269,
        -30.664_798_066_147_16,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -54.476_098_798_224_06,
        161.585_836_858_040_9,
        -155.698_979_859_886_6,
        66.801_311_887_719_72,
        -13.280_681_552_885_72,
    ];
    const C: [f64; 6] = [
        -0.007_784_894_002_430_293,
        -0.322_396_458_041_136_5,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        0.007_784_695_709_041_462,
        0.322_467_129_070_039_8,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let low = 0.024_25;
    let r = if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    r as f32
}

/// A word length with a French-like distribution.
fn word_length(rng: &mut ChaCha8Rng) -> usize {
    const WEIGHTS: [u32; 11] = [0, 5, 20, 13, 12, 12, 11, 10, 8, 5, 4];
    let total: u32 = WEIGHTS.iter().sum();
    let mut roll = rng.random_range(0..total);
    for (len, &w) in WEIGHTS.iter().enumerate() {
        if roll < w {
            return len;
        }
        roll -= w;
    }
    5
}

/// A lower-case letter drawn by frequency.
fn pick_letter(rng: &mut ChaCha8Rng) -> &'static Glyph {
    let total: u32 = LETTERS.iter().map(|(w, _)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (w, glyph) in LETTERS {
        if roll < *w {
            return glyph;
        }
        roll -= w;
    }
    &LETTERS[0].1
}
