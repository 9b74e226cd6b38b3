//! Process-wide settings of the operating system.

use tracing::{info, warn};

/// Raises the soft open-file limit to the hard limit, and past it to `need`
/// when the process may (root with CAP_SYS_RESOURCE): every client holds a
/// socket or two, and 10,000 clients pass any usual soft limit. Returns the
/// limit in force (`u64::MAX` where it cannot be read).
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn raise_open_file_limit(need: u64) -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return u64::MAX;
        }
        let old = lim.rlim_cur;
        if (lim.rlim_max as u64) < need {
            let want =
                libc::rlimit { rlim_cur: need as libc::rlim_t, rlim_max: need as libc::rlim_t };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
                info!(from = old, to = need, "raised the open-file limit");
                return need;
            }
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
                info!(from = old, to = lim.rlim_max, "raised the open-file limit");
            } else {
                warn!(limit = old, "cannot raise the open-file limit");
                lim.rlim_cur = old;
            }
        }
        lim.rlim_cur as u64
    }
    #[cfg(not(unix))]
    u64::MAX
}

/// The soft open-file limit in force (`u64::MAX` where it cannot be read).
#[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
pub fn open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return u64::MAX;
        }
        lim.rlim_cur as u64
    }
    #[cfg(not(unix))]
    u64::MAX
}

/// Asks for a kernel send buffer of `bytes` on `socket` (Linux doubles it
/// for bookkeeping). A fixed size also stops the kernel from growing it to
/// megabytes for a fast reader, which a dying connection would swallow.
pub fn set_send_buffer(socket: &tokio::net::TcpStream, bytes: usize) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads `size` for the length we pass; the fd is
        // open for as long as `socket` is borrowed.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            tracing::debug!("SO_SNDBUF: {}", std::io::Error::last_os_error());
        }
    }
}

/// Makes a read of the terminal from a background job fail (EIO) instead
/// of stopping the whole process (SIGTTIN): for a reader of stdin that is
/// not essential, such as `serve --echo`'s, run as `ssechan serve --echo &`.
pub fn never_stop_on_terminal_read() {
    #[cfg(unix)]
    // SAFETY: sets a signal's disposition to "ignore"; no handler runs.
    unsafe {
        libc::signal(libc::SIGTTIN, libc::SIG_IGN);
    }
}
