//! What can go wrong when asking the supervisor for something. The bus maps each variant
//! to one stable D-Bus error name.

use thiserror::Error;

use crate::profile::ProfileError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    NoSuchProfile(ProfileError),
    #[error(transparent)]
    InvalidProfile(ProfileError),
    #[error("profile {name:?} asks for what this version of sandboxd does not provide yet: {}", features.join(", "))]
    Unsupported { name: String, features: Vec<String> },
    #[error("no sandbox named {0:?}")]
    NoSuchSandbox(String),
    #[error("sandbox {0:?} is already running; stop it first")]
    AlreadyRunning(String),
    #[error("sandbox {0:?} is not running")]
    NotRunning(String),
    #[error("sandbox {name:?}: {message}")]
    RuntimeFailed { name: String, message: String },
    #[error("{0}")]
    InvalidArgument(String),
}

impl From<ProfileError> for Error {
    fn from(e: ProfileError) -> Self {
        if e.is_invalid() {
            Self::InvalidProfile(e)
        } else {
            Self::NoSuchProfile(e)
        }
    }
}
