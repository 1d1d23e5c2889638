//! The record an imported root file system keeps beside it (`NAME.json`): which container
//! ids its on-disk owners were shifted for. A profile whose id mapping differs would see
//! wrong owners everywhere, so the spec refuses it.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsRecord {
    /// The uid inside that is you ("keep-id"); `None`: root inside is you.
    pub keep_id: Option<u32>,
    pub keep_gid: Option<u32>,
    pub source: String,
    /// For a root made from an OCI image: which image, and the blobs it uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRecord>,
}

/// The image a root was made from: `rootfs pull` compares the manifest to tell an
/// up-to-date root, `rootfs prune` keeps the blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub manifest: String,
    pub blobs: Vec<String>,
    pub config: crate::image::ImageConfig,
}

impl RootfsRecord {
    /// The record of root file system `root`, if it was imported.
    pub fn of(root: &Path) -> Option<Self> {
        let file = root.with_extension("json");
        serde_json::from_slice(&std::fs::read(file).ok()?).ok()
    }

    pub fn describe(&self) -> String {
        match self.keep_id {
            None => "root inside as you".into(),
            Some(uid) => format!("uid {uid} inside as you"),
        }
    }
}
