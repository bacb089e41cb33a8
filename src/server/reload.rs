//! Reloading the TLS files, the access file and the secrets file while serving: when a file
//! changes (checked every [`POLL`]) or on demand ([`ReloadTrigger`], which
//! the binary pulls on SIGHUP). A file that does not load keeps the one in
//! force and logs why; it is tried again when it changes again.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::tls::{self, TlsConfig};
use crate::{
    access::{AccessFile, AccessHandle},
    config::TlsFiles,
    secrets::NamedSecrets,
};

/// How often the files' modification time and size are looked at.
const POLL: Duration = Duration::from_secs(1);

/// Asks a running server to reload its TLS and access files now, whether
/// or not they look changed.
#[derive(Debug, Clone)]
pub struct ReloadTrigger {
    /// Wakes the watcher.
    asked: Arc<Notify>,
    /// Reloads done on request so far, so a caller can wait for its own.
    done: Arc<watch::Sender<u64>>,
}

impl Default for ReloadTrigger {
    fn default() -> Self {
        ReloadTrigger {
            asked: Arc::new(Notify::new()),
            done: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl ReloadTrigger {
    /// Reloads at once (the binary calls it on SIGHUP).
    pub fn reload(&self) {
        self.asked.notify_one();
    }

    /// Reloads at once and waits until the files were read (and, when one
    /// is broken, kept in force): for tests and embedders that must know
    /// the new files apply. Waits forever when the server is not running.
    pub async fn reload_now(&self) {
        let mut done = self.done.subscribe();
        let before = *done.borrow_and_update();
        self.reload();
        let _ = done.wait_for(|n| *n > before).await;
    }
}

/// What is watched.
pub(super) struct Watched {
    /// The TLS files and the config they feed.
    pub tls: Option<(TlsFiles, Arc<TlsConfig>)>,
    /// The access file and the handle it feeds.
    pub access: Option<(PathBuf, AccessHandle)>,
    /// The secrets file and the secrets it feeds.
    pub secrets: Option<(PathBuf, NamedSecrets)>,
}

/// What a file looked like when last loaded: a change of either means a
/// new file (editors and cert-manager replace files by rename).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn stamps(files: &TlsFiles) -> [Stamp; 3] {
    [
        stamp(&files.cert),
        stamp(&files.key),
        files.client_ca.as_deref().and_then(stamp),
    ]
}

/// Watches until `stop` is cancelled.
pub(super) async fn watch(watched: Watched, trigger: ReloadTrigger, stop: CancellationToken) {
    let mut tls_seen = watched.tls.as_ref().map(|(files, _)| stamps(files));
    let mut access_seen = watched.access.as_ref().map(|(path, _)| stamp(path));
    let mut secrets_seen = watched.secrets.as_ref().map(|(path, _)| stamp(path));
    loop {
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => false,
            _ = trigger.asked.notified() => true,
        };
        if let (Some((files, config)), Some(seen)) = (&watched.tls, &mut tls_seen) {
            let now = stamps(files);
            if forced || now != *seen {
                *seen = now;
                match tls::load(files) {
                    Ok(loaded) => {
                        config.replace(loaded);
                        info!(cert = %files.cert.display(), "tls files reloaded");
                    }
                    Err(e) => warn!(error = %e, "tls files not reloaded, the ones in force stay"),
                }
            }
        }
        if let (Some((path, handle)), Some(seen)) = (&watched.access, &mut access_seen) {
            let now = stamp(path);
            if forced || now != *seen {
                *seen = now;
                match AccessFile::load(path) {
                    Ok(file) => {
                        let (tokens, subjects) = file.counts();
                        handle.replace(file);
                        info!(path = %path.display(), tokens, subjects, "access file reloaded");
                    }
                    Err(e) => warn!(error = %e, "access file not reloaded, the one in force stays"),
                }
            }
        }
        if let (Some((path, secrets)), Some(seen)) = (&watched.secrets, &mut secrets_seen) {
            let now = stamp(path);
            if forced || now != *seen {
                *seen = now;
                match NamedSecrets::load(path) {
                    Ok(values) => {
                        let count = values.len();
                        secrets.replace(values);
                        info!(path = %path.display(), secrets = count, "secrets file reloaded");
                    }
                    Err(e) => {
                        warn!(error = %e, "secrets file not reloaded, the one in force stays")
                    }
                }
            }
        }
        if forced {
            trigger.done.send_modify(|n| *n += 1);
        }
    }
}
