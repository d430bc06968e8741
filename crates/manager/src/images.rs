//! Image roots for the daemon's sandboxes: `template` on create and
//! `filesystem.rootfs = "image:REF"` resolved in the image store of the daemon's data dir
//! (the store `safehouse image` and `safehouse template build` write), and the templates
//! listing (`GET/DELETE /v1/templates`).
//!
//! One lease per image in use, shared by every sandbox on it: the layers stay locked
//! against garbage collection while any of them lives, and the descriptors the lease holds
//! (one per layer) are paid once, not once per sandbox. A sandbox holds its image's
//! [`Rooted`] in its `Live`; the last one to go releases the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use safehouse_images::store::Lease;
use safehouse_images::{ImageError, ImageRecord, Store};
use safehouse_policy::plan::ImageRoot;
use serde::Serialize;

use crate::types::ManagerError;
use crate::Manager;

/// The images in use, by manifest digest.
#[derive(Default)]
pub(crate) struct ImageRoots {
    in_use: Mutex<HashMap<String, Weak<ImageInUse>>>,
}

/// A template (or image) of the store, as `GET /v1/templates` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TemplateInfo {
    pub name: String,
    /// `template` (built from a Dockerfile) or `image` (pulled or imported).
    pub kind: String,
    pub digest: String,
    /// Bytes of its layers' content.
    pub size: u64,
    pub layers: usize,
    /// Sandboxes running on it now.
    pub sandboxes: usize,
    /// When the name was written (RFC 3339).
    pub created_at: String,
    /// Where it came from: `pull REF`, `import PATH`, `build DIR`.
    pub source: String,
}

/// A store error as the API shows it: a missing image names what to do.
fn image_error(name: &str, e: ImageError) -> ManagerError {
    match e {
        ImageError::NotFound(_) => ManagerError::Invalid(format!(
            "template {name:?} is not in this daemon's image store: build it with `safehouse template build --tag \
             {name} DIR`, pull it with `safehouse image pull`, or list what there is with GET /v1/templates \
             (`safehouse image ls`), using the daemon's --data-dir"
        )),
        ImageError::Reference { .. } => ManagerError::Invalid(format!("template {name:?}: {e}")),
        other => ManagerError::Invalid(format!("template {name:?} cannot be a sandbox's root: {other}")),
    }
}

impl Manager {
    /// The image store of the data dir (created on first use; cheap to open).
    fn image_store(&self) -> Result<Store, ManagerError> {
        Store::open(&self.inner.cfg.data_dir).map_err(|e| ManagerError::Refused {
            layer: "filesystem.rootfs".into(),
            reason: format!("the image store cannot be used: {e}"),
        })
    }

    /// `name` resolved to its leased layers, shared with every sandbox already on the same
    /// image (blocking: call off the async threads).
    pub(crate) fn image_root(&self, name: &str) -> Result<Arc<ImageInUse>, ManagerError> {
        let store = self.image_store()?;
        let record = store.get(name).map_err(|e| image_error(name, e))?;
        let key = record.digest.to_string();
        let roots = &self.inner.images;
        if let Some(r) = roots.in_use.lock().unwrap_or_else(|e| e.into_inner()).get(&key).and_then(Weak::upgrade) {
            return Ok(r);
        }
        // Leased outside the map's lock (it takes the store's writer lock); two creates
        // racing here both lease, and the second one's lease is the one the map keeps.
        let rooted = store.root_for(&record).map_err(|e| image_error(name, e))?;
        let rooted = Arc::new(ImageInUse { digest: key.clone(), root: rooted.root, _lease: rooted.lease });
        let mut in_use = roots.in_use.lock().unwrap_or_else(|e| e.into_inner());
        in_use.retain(|_, w| w.strong_count() > 0);
        in_use.insert(key, Arc::downgrade(&rooted));
        Ok(rooted)
    }

    /// Whether the store has an image or template `name` (the E2B front asks before it
    /// falls back to its own names).
    pub async fn template_exists(&self, name: &str) -> bool {
        let (mgr, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || mgr.image_store().is_ok_and(|s| s.get(&name).is_ok()))
            .await
            .unwrap_or(false)
    }

    /// The store's images and templates, with how many live sandboxes use each.
    pub async fn templates(&self) -> Result<Vec<TemplateInfo>, ManagerError> {
        let mgr = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = mgr.image_store()?;
            let records = store.list().map_err(|e| ManagerError::Internal(e.to_string()))?;
            Ok(records.iter().map(|r| mgr.template_info(r)).collect())
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))?
    }

    /// One template of the store, by any name `image ls` shows for it.
    pub async fn template(&self, name: &str) -> Result<TemplateInfo, ManagerError> {
        let (mgr, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            let (_, record) = mgr.named_template(&name)?;
            Ok(mgr.template_info(&record))
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))?
    }

    /// The store and the record of `name`; an unknown name is a 404 that says where to look.
    fn named_template(&self, name: &str) -> Result<(Store, ImageRecord), ManagerError> {
        let store = self.image_store()?;
        let record = store.get(name).map_err(|e| match e {
            ImageError::NotFound(_) => {
                ManagerError::Missing(format!("no template named {name:?}; GET /v1/templates lists them"))
            }
            e => image_error(name, e),
        })?;
        Ok((store, record))
    }

    fn template_info(&self, r: &ImageRecord) -> TemplateInfo {
        TemplateInfo {
            name: r.name.clone(),
            kind: match r.kind {
                safehouse_images::Kind::Template => "template",
                safehouse_images::Kind::Image => "image",
            }
            .into(),
            digest: r.digest.to_string(),
            size: r.size,
            layers: r.layers.len(),
            sandboxes: self.sandboxes_on(&r.digest.to_string()),
            created_at: r.created.clone(),
            source: r.source.clone(),
        }
    }

    /// Live sandboxes whose root is the image of manifest digest `digest`.
    fn sandboxes_on(&self, digest: &str) -> usize {
        let live = self.inner.live.lock().unwrap_or_else(|e| e.into_inner());
        live.values()
            .filter(|l| l.image.lock().unwrap_or_else(|e| e.into_inner()).as_ref().is_some_and(|i| i.digest == digest))
            .count()
    }

    /// Removes the name `name` from the store; refused (409) while a sandbox runs on it.
    /// Its layers go at the next garbage collection (`safehouse image gc`), once no other
    /// name uses them.
    pub async fn remove_template(&self, name: &str) -> Result<TemplateInfo, ManagerError> {
        let (mgr, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || {
            let (store, record) = mgr.named_template(&name)?;
            let info = mgr.template_info(&record);
            if info.sandboxes > 0 {
                return Err(ManagerError::Conflict(format!(
                    "template {name:?} is the root of {} running sandbox(es); kill them first",
                    info.sandboxes
                )));
            }
            store.remove_record(&record.name).map_err(|e| ManagerError::Internal(e.to_string()))?;
            Ok(info)
        })
        .await
        .map_err(|e| ManagerError::Internal(e.to_string()))?
    }
}

/// An image some sandboxes run on: what the planner needs of it and the lease on its
/// layers (released when the last of them goes).
pub(crate) struct ImageInUse {
    /// Its manifest digest (`sha256:...`), which the recorded policy names.
    pub digest: String,
    pub root: ImageRoot,
    _lease: Lease,
}
