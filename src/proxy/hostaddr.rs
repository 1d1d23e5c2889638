//! The host's own addresses, as the address policy needs them for every new flow.
//!
//! Listing them (a netlink dump) per connection costs more than the rest of the decision,
//! so the list is cached and kept live by rtnetlink's address notifications: before each
//! use, a non-blocking read of the notification socket tells whether any address came or
//! went since, and only then is the list read again. A new host address is therefore
//! covered from the next flow on, as with a fresh lookup every time.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

pub struct HostAddresses {
    /// Subscribed to address changes; `None` if netlink is unavailable (then every call
    /// looks the addresses up afresh).
    events: Option<OwnedFd>,
    cache: Mutex<Arc<Vec<IpAddr>>>,
}

fn subscribe() -> Option<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is fresh and valid.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    // SAFETY: sa is a valid sockaddr_nl of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    (r == 0).then_some(fd)
}

/// Drains pending notifications; true if there were any (or some were lost).
fn changed(fd: &OwnedFd) -> bool {
    let mut buf = [0u8; 8192];
    let mut any = false;
    loop {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            any = true;
            continue;
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        // ENOBUFS: notifications were dropped, so assume a change.
        return any || (n < 0 && err == Some(libc::ENOBUFS));
    }
}

/// The host's addresses now, in the daemon's (the host's) network namespace.
pub fn lookup() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            if let Some(v4) = s.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Address changes as they happen, for the verdict rules that name the host's addresses.
pub struct Changes(tokio::io::unix::AsyncFd<OwnedFd>);

impl Changes {
    /// `None` where netlink is unavailable (the rules then keep the addresses the host
    /// had when they were made; the proxy still judges every flow with fresh ones).
    pub fn subscribe() -> Option<Self> {
        // SAFETY: an OwnedFd always reports the same, open fd; it lives inside the AsyncFd.
        unsafe { tokio::io::unix::AsyncFd::register(subscribe()?) }
            .ok()
            .map(Self)
    }

    /// Waits for the next change (any address added or removed); `None` on failure.
    pub async fn next(&self) -> Option<()> {
        loop {
            let mut guard = self.0.readable().await.ok()?;
            let any = changed(guard.get_inner());
            guard.clear_ready();
            if any {
                return Some(());
            }
        }
    }
}

impl HostAddresses {
    pub fn new() -> Self {
        // Subscribe before the first lookup, so no change can fall between the two.
        let events = subscribe();
        Self {
            events,
            cache: Mutex::new(Arc::new(lookup())),
        }
    }

    pub fn current(&self) -> Arc<Vec<IpAddr>> {
        let Some(fd) = &self.events else {
            return Arc::new(lookup());
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if changed(fd) {
            *cache = Arc::new(lookup());
        }
        cache.clone()
    }
}

impl Default for HostAddresses {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_address_is_the_hosts() {
        let h = HostAddresses::new();
        assert!(h.current().iter().any(|a| a.is_loopback()));
        assert_eq!(*h.current(), lookup());
    }
}
