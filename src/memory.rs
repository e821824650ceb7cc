//! Process-wide allocator settings, applied once at start-up.

/// Makes every allocation of 128 KiB or more (scans, PDFs, zip chunks) a
/// mapping of its own, returned to the system as soon as it is freed.
///
/// glibc's malloc starts that way but raises its threshold each time such
/// a mapping is freed; large buffers then come from its per-thread arenas,
/// whose fragments stay resident. A worker building zip after zip grew by
/// tens of MiB per zip that way (`copiste bench render` at 1500 × 8).
/// A fixed threshold turns the adjustment off. Other platforms and
/// allocators are left as they are.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a parameter of glibc's malloc; it is
    // called from `main` before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
