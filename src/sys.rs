//! Process-wide settings of the operating system.

use tracing::{info, warn};

/// Raises the soft open-file limit to the hard limit: every client holds two
/// sockets (its stream and its POSTs), and 10,000 clients pass any usual
/// soft limit. Returns the limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
                info!(from = old, to = lim.rlim_max, "raised the open-file limit");
            } else {
                warn!(limit = old, "cannot raise the open-file limit");
                lim.rlim_cur = old;
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}
