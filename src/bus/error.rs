//! The daemon's D-Bus errors: one stable name per failure kind (machined's vocabulary),
//! mapped from the supervisor's errors in this one place.

use crate::profile::ProfileError;
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
}

impl From<Error> for BusError {
    fn from(e: Error) -> Self {
        let msg = crate::error_chain(&e);
        if e.is_profile_problem() {
            return Self::InvalidProfile(msg);
        }
        match e {
            Error::NoSuchProfile(ProfileError::Read { ref source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Self::PermissionDenied(msg)
            }
            Error::InvalidProfile(ProfileError::Read { ref source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Self::PermissionDenied(msg)
            }
            Error::NoSuchProfile(_) => Self::NoSuchProfile(msg),
            Error::InvalidProfile(_) | Error::Unsupported { .. } => Self::InvalidProfile(msg),
            Error::Spec { .. } | Error::Runtime { .. } | Error::Network { .. } => {
                Self::RuntimeFailed(msg)
            }
            Error::NoSuchSandbox(_) => Self::NoSuchSandbox(msg),
            Error::AlreadyRunning(_) => Self::AlreadyRunning(msg),
            Error::NotRunning(_) => Self::NotRunning(msg),
            Error::RuntimeFailed { .. } => Self::RuntimeFailed(msg),
            Error::InvalidArgument(_) => Self::InvalidArgs(msg),
        }
    }
}
