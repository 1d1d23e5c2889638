//! What can go wrong when asking the supervisor for something. The bus maps each variant
//! to one stable D-Bus error name.

use thiserror::Error;

use crate::profile::ProfileError;
use crate::proxy::ProxyError;
use crate::runtime::RuntimeError;
use crate::spec::SpecError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    NoSuchProfile(ProfileError),
    #[error(transparent)]
    InvalidProfile(ProfileError),
    #[error("profile {name:?} asks for what this version of sandboxd does not provide yet: {}", features.join(", "))]
    Unsupported { name: String, features: Vec<String> },
    #[error("no sandbox named {0:?} (and no such profile: `sandboxctl profiles` lists them)")]
    NoSuchSandbox(String),
    #[error("sandbox {0:?} is already running; stop it first")]
    AlreadyRunning(String),
    #[error("sandbox {0:?} is not running (start it with `sandboxctl start {0}`)")]
    NotRunning(String),
    #[error("sandbox {name:?}: {message}")]
    RuntimeFailed { name: String, message: String },
    /// The profile cannot become a spec here (a user missing from the root's passwd, a
    /// keep-id mapping the imported root does not fit, a missing socket or device) or the
    /// spec cannot be built.
    #[error("sandbox {name:?}")]
    Spec {
        name: String,
        /// Boxed: the largest variant, and rare.
        #[source]
        source: Box<SpecError>,
    },
    /// runc failed (its own message is in the source).
    #[error("sandbox {name:?}")]
    Runtime {
        name: String,
        #[source]
        source: RuntimeError,
    },
    /// The copy-on-write layer of `rootfs.overlay` could not be made or read.
    #[error("sandbox {name:?}")]
    Layer {
        name: String,
        #[source]
        source: crate::runtime::LayerError,
    },
    /// The sandbox's network could not be set up.
    #[error("sandbox {name:?}: network")]
    Network {
        name: String,
        #[source]
        source: ProxyError,
    },
    /// The filtered session bus of `[dbus]` could not be started.
    #[error("sandbox {name:?}: session bus")]
    Bus {
        name: String,
        #[source]
        source: crate::busproxy::SpawnError,
    },
    /// The sandbox is gone from the daemon, but removing what it left failed.
    #[error("sandbox {name:?}: cleanup failed: {}", errors.iter().map(|e| crate::error_chain(e)).collect::<Vec<_>>().join("; "))]
    Cleanup {
        name: String,
        errors: Vec<CleanupError>,
    },
    #[error("{0}")]
    InvalidArgument(String),
    /// An exec's program or working directory could not be used inside the sandbox.
    #[error("sandbox {name:?}: {program}: {why}")]
    CannotRun {
        name: String,
        program: String,
        why: crate::runtime::NotRun,
    },
}

impl Error {
    /// True for problems of the profile itself, as opposed to the machine or runc.
    pub fn is_profile_problem(&self) -> bool {
        match self {
            Self::InvalidProfile(_) | Self::Unsupported { .. } => true,
            Self::Layer { source, .. } => matches!(
                source,
                crate::runtime::LayerError::NoNamespace | crate::runtime::LayerError::Path(_)
            ),
            Self::Spec { source, .. } => {
                !matches!(**source, SpecError::Build(_) | SpecError::HomeDir { .. })
            }
            _ => false,
        }
    }
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

/// One part of removing a sandbox that failed; the others were still tried.
#[derive(Debug, Error)]
pub enum CleanupError {
    #[error("pid 1 still runs {0:?} after SIGKILL")]
    StillRunning(std::time::Duration),
    #[error("removing runc's state")]
    Runtime(#[source] RuntimeError),
    #[error("removing the bundle")]
    Bundle(#[source] crate::spec::BundleError),
    #[error("removing the copy-on-write layer")]
    Layer(#[source] crate::runtime::LayerError),
}
