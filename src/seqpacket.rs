//! One message on a SOCK_SEQPACKET unix socket, with descriptors passed as SCM_RIGHTS: the
//! framing the netns helper's control socket and the sandbox init's exec channel share.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// Descriptors one message may carry.
pub const MAX_FDS: usize = 8;

/// Sends `bytes` and `fds` as one message.
pub fn send(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> nix::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
}

/// One received message.
pub struct Message {
    /// Bytes of the message in the buffer (0 at end of stream).
    pub len: usize,
    pub fds: Vec<OwnedFd>,
    /// The message was longer than the buffer (the rest is lost).
    pub truncated: bool,
}

/// Receives one message into `buf`; descriptors arrive close-on-exec.
pub fn recv(fd: RawFd, buf: &mut [u8], flags: MsgFlags) -> nix::Result<Message> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds in this process for us.
            fds.extend(raw.into_iter().map(|r| unsafe { OwnedFd::from_raw_fd(r) }));
        }
    }
    Ok(Message {
        len: msg.bytes,
        fds,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
    })
}
