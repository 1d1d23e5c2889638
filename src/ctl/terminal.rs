//! The host terminal on sandboxctl's side: raw mode that is always restored, window sizes
//! (tty_ioctl(4) TIOCGWINSZ / TIOCSWINSZ), and byte relays between fds.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, libc::winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, libc::winsize);

pub fn is_tty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the fd number.
    unsafe { libc::isatty(fd) == 1 }
}

/// Puts a terminal in raw mode until dropped, then restores exactly what it was.
pub struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd<'_>) -> nix::Result<Self> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSADRAIN, &raw)?;
        Ok(Self {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the fd is one of our stdio fds, open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = tcsetattr(fd, SetArg::TCSADRAIN, &self.saved);
    }
}

/// Copies the window size of terminal `from` onto pty `to`.
pub fn copy_window_size(from: RawFd, to: RawFd) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize; TIOCSWINSZ reads one; both pointers are valid.
    unsafe {
        if get_winsize(from, &mut ws).is_ok() && ws.ws_row > 0 {
            let _ = set_winsize(to, &ws);
        }
    }
}

/// Copies `from` to `to` on a thread until end of file or an error (a pty master reports
/// EIO once every process on its slave side has closed it).
pub fn relay(from: OwnedFd, to: OwnedFd) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut src = std::fs::File::from(from);
        let mut dst = std::fs::File::from(to);
        let mut buf = [0u8; 16 * 1024];
        loop {
            match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if dst.write_all(&buf[..n]).and_then(|_| dst.flush()).is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// A duplicate of a borrowed fd, as an owned one (close-on-exec).
pub fn dup(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}
