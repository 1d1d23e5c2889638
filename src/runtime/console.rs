//! runc's console socket (runc(8) `--console-socket`): for a process with a terminal, runc
//! allocates the pty inside the container and sends us its master over a unix socket with
//! SCM_RIGHTS (unix(7)). The pty is born inside the sandbox's devpts, never the host's.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixListener;

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        Ok(Self {
            listener: UnixListener::bind(path)?,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts runc's connection and takes the one fd it sends.
    pub async fn receive(&self) -> std::io::Result<OwnedFd> {
        let (stream, _) = self.listener.accept().await?;
        loop {
            stream.readable().await?;
            let got = stream.try_io(Interest::READABLE, || {
                let mut name = [0u8; 4096];
                let mut iov = [IoSliceMut::new(&mut name)];
                let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
                let msg = recvmsg::<()>(
                    stream.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                let mut fds = Vec::new();
                for c in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(rights) = c {
                        fds.extend(rights);
                    }
                }
                Ok(fds)
            });
            match got {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
                Ok(fds) => {
                    // SAFETY: each fd was just received with SCM_RIGHTS and is ours alone.
                    let mut owned: Vec<OwnedFd> = fds
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
                        .collect();
                    return owned
                        .pop()
                        .ok_or_else(|| std::io::Error::other("runc sent no terminal"));
                }
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
