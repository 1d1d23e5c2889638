//! The daemon's D-Bus errors: one stable name per failure kind (machined's vocabulary),
//! mapped from the supervisor's errors in this one place.

use crate::profile::ProfileError;
use crate::runtime::NotRun;
use crate::supervisor::Error;

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.sandboxd.Sandboxd1.Error")]
pub enum BusError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchProfile(String),
    InvalidProfile(String),
    NoSuchSandbox(String),
    AlreadyRunning(String),
    NotRunning(String),
    RuntimeFailed(String),
    PermissionDenied(String),
    InvalidArgs(String),
    /// An exec's program does not exist in the sandbox (a shell's 127).
    CommandNotFound(String),
    /// An exec's program exists but cannot be executed (a shell's 126).
    CommandNotExecutable(String),
}

/// True for a profile file the daemon may not read.
fn unreadable(e: &Error) -> bool {
    matches!(
        e,
        Error::NoSuchProfile(ProfileError::Read { source, .. })
            | Error::InvalidProfile(ProfileError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied
    )
}

impl From<Error> for BusError {
    fn from(e: Error) -> Self {
        let msg = crate::error_chain(&e);
        if unreadable(&e) {
            return Self::PermissionDenied(msg);
        }
        if e.is_profile_problem() {
            return Self::InvalidProfile(msg);
        }
        match e {
            Error::NoSuchProfile(_) => Self::NoSuchProfile(msg),
            Error::InvalidProfile(_) | Error::Unsupported { .. } => Self::InvalidProfile(msg),
            Error::Spec { .. }
            | Error::Runtime { .. }
            | Error::Network { .. }
            | Error::Bus { .. }
            | Error::Layer { .. } => Self::RuntimeFailed(msg),
            Error::NoSuchSandbox(_) => Self::NoSuchSandbox(msg),
            Error::AlreadyRunning(_) => Self::AlreadyRunning(msg),
            Error::NotRunning(_) => Self::NotRunning(msg),
            Error::RuntimeFailed { .. } | Error::Cleanup { .. } => Self::RuntimeFailed(msg),
            Error::InvalidArgument(_) => Self::InvalidArgs(msg),
            Error::CannotRun { why, .. } => match why {
                NotRun::NotFound => Self::CommandNotFound(msg),
                NotRun::NotExecutable(_) => Self::CommandNotExecutable(msg),
                NotRun::Cwd { .. } | NotRun::Other(_) => Self::InvalidArgs(msg),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_profile_is_permission_denied() {
        let e = Error::from(ProfileError::Read {
            path: "/home/u/.config/sandboxd/profiles/x.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert!(matches!(BusError::from(e), BusError::PermissionDenied(m) if m.contains("x.toml")));
        let e = Error::from(ProfileError::Read {
            path: "/x.toml".into(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        });
        assert!(matches!(BusError::from(e), BusError::InvalidProfile(_)));
    }

    #[test]
    fn a_failed_cleanup_is_runtime_failed_with_every_cause() {
        let e = Error::Cleanup {
            name: "web".into(),
            errors: vec![
                crate::supervisor::CleanupError::StillRunning(std::time::Duration::from_secs(10)),
                crate::supervisor::CleanupError::Layer(crate::runtime::LayerError::Command {
                    what: "removing the layer".into(),
                    message: "busy".into(),
                }),
            ],
        };
        let BusError::RuntimeFailed(m) = BusError::from(e) else {
            panic!("not RuntimeFailed");
        };
        assert!(
            m.contains("\"web\"")
                && m.contains("after SIGKILL")
                && m.contains("layer: removing the layer failed: busy"),
            "{m}"
        );
    }
}
