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

/// The addresses of this machine's interfaces that are up, for telling a
/// user where a wildcard listener (`--listen :8080`) can be reached.
/// Loopback is left out (the caller names it first), and so are IPv6
/// link-local addresses, which need a zone to be used in a URL.
pub fn interface_addresses() -> Vec<std::net::IpAddr> {
    let mut found = Vec::new();
    #[cfg(unix)]
    {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs allocates a list that freeifaddrs releases
        // below; we only read it in between.
        if unsafe { libc::getifaddrs(&mut list) } != 0 {
            return found;
        }
        let mut next = list;
        while !next.is_null() {
            // SAFETY: `next` is a node of the list getifaddrs returned.
            let ifa = unsafe { &*next };
            next = ifa.ifa_next;
            let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
            if !up || ifa.ifa_addr.is_null() {
                continue;
            }
            // SAFETY: the family says which sockaddr type the address is.
            let ip = unsafe {
                match i32::from((*ifa.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                        IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                        IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                    }
                    _ => continue,
                }
            };
            let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
            if !ip.is_loopback() && !link_local && !found.contains(&ip) {
                found.push(ip);
            }
        }
        // SAFETY: `list` came from getifaddrs and is released once.
        unsafe { libc::freeifaddrs(list) };
    }
    found
}

/// This machine's host name, if it has one other than `localhost`.
pub fn host_name() -> Option<String> {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
        if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).into_owned();
        (!name.is_empty() && name != "localhost").then_some(name)
    }
    #[cfg(not(unix))]
    None
}
