//! Descriptors a child must not inherit. Descriptors passed by D-Bus peers arrive without
//! O_CLOEXEC (zbus receives them without MSG_CMSG_CLOEXEC), and a helper spawned on
//! another thread meanwhile would carry a caller's pipe into its life: a `sandboxctl` then
//! never sees end of file, and one sandbox's stdio would sit in another's helper.

use std::io;
use std::os::fd::RawFd;

/// Between fork and exec: marks every descriptor above `keep` close-on-exec, so the child
/// gets stdio and the descriptors up to `keep` it was given, nothing else.
pub fn cloexec_above(keep: RawFd) -> io::Result<()> {
    let first = u32::try_from(keep + 1).unwrap_or(3);
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC changes only descriptor flags; it is
    // a plain syscall, safe between fork and exec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks `fd` close-on-exec (a descriptor a peer passed, as soon as it is ours).
pub fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl(2) on a descriptor the caller owns changes only its flags.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_child_gets_nothing_above_what_it_keeps() {
        let (r, _w) = std::io::pipe().unwrap();
        let raw = r.as_raw_fd();
        // SAFETY: fcntl on our own descriptor: it loses O_CLOEXEC, as a passed one has.
        unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
        let seen = |guard: bool| {
            let mut cmd = std::process::Command::new("sh");
            cmd.args([
                "-c",
                &format!("test -e /proc/self/fd/{raw} && echo open || echo closed"),
            ]);
            if guard {
                // SAFETY: cloexec_above makes one syscall.
                unsafe { cmd.pre_exec(|| cloexec_above(2)) };
            }
            String::from_utf8(cmd.output().unwrap().stdout).unwrap()
        };
        assert_eq!(seen(false), "open\n");
        assert_eq!(seen(true), "closed\n");
    }
}
