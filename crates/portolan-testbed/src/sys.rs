//! The only `unsafe` in the crate: the TUNSETIFF ioctl, the signal mask / `sigwait`
//! that the CLI uses to clean up on Ctrl-C and SIGTERM, and IP(V6)_TRANSPARENT for the
//! tarpit listeners.
//!
//! rustix wraps none of them safely (its `ioctl` module is `unsafe` to call and it has no
//! `sigwait`), and the `tun` crate would bring `nix` and a dozen more crates into the
//! workspace's lock file for one ioctl. Each call below is a plain FFI call on values that
//! live on the stack for the duration of the call.
#![expect(
    unsafe_code,
    reason = "TUNSETIFF ioctl, pthread_sigmask/sigwait and IP_TRANSPARENT have no safe wrapper in rustix"
)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Opens `/dev/net/tun` and attaches a new layer-3 TUN device called `name` (no packet
/// information header: each read and write is exactly one IP packet) in the network
/// namespace of the calling thread. The device lives as long as the returned descriptor.
pub fn open_tun(name: &str) -> io::Result<OwnedFd> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let fd = rustix::fs::open(
        "/dev/net/tun",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )?;
    // struct ifreq { char ifr_name[IFNAMSIZ]; union { short ifr_flags; ... } } is 40 bytes.
    let mut ifreq = [0u8; 40];
    ifreq[..bytes.len()].copy_from_slice(bytes);
    let flags = i16::try_from(libc::IFF_TUN | libc::IFF_NO_PI)
        .map_err(|_| io::Error::other("TUN flags do not fit in ifr_flags"))?;
    ifreq[libc::IFNAMSIZ..libc::IFNAMSIZ + 2].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: `fd` is an open /dev/net/tun descriptor and `ifreq` is a 40-byte buffer laid out
    // as `struct ifreq`, which TUNSETIFF reads and writes (the kernel copies back the name).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, ifreq.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Sets IP_TRANSPARENT (IPv4) or IPV6_TRANSPARENT (IPv6) on the socket `fd`, so that
/// nftables' `tproxy` may hand it connections for ports it is not bound to. Needs
/// CAP_NET_ADMIN.
pub fn set_transparent(fd: &OwnedFd, v6: bool) -> io::Result<()> {
    let (level, name) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_TRANSPARENT)
    } else {
        (libc::SOL_IP, libc::IP_TRANSPARENT)
    };
    let one: libc::c_int = 1;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("c_int size does not fit socklen_t"))?;
    // SAFETY: `fd` is an open socket; the option value is a c_int on the stack whose size is
    // passed along, which is what both options read.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const one).cast::<libc::c_void>(),
            len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The termination signals the CLI turns into a clean shutdown.
const TERMINATION: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn termination_set() -> io::Result<libc::sigset_t> {
    // SAFETY: sigemptyset/sigaddset only write into the local `set`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if libc::sigemptyset(&raw mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        for sig in TERMINATION {
            if libc::sigaddset(&raw mut set, sig) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(set)
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread, and so in every thread it spawns
/// afterwards. Call it first thing in `main`, then `wait_termination_signal` on one thread.
/// Children started through `std::process::Command` get an empty mask again (std resets it).
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set()?;
    // SAFETY: `set` is an initialised sigset_t; the old mask is not wanted (null).
    let rc =
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until one of the blocked termination signals arrives and returns its number.
pub fn wait_termination_signal() -> io::Result<i32> {
    let set = termination_set()?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised and `sig` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::sigwait(&raw const set, &raw mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}
