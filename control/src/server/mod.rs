//! The management plane of `tiergate run`: the daemon state ([`daemon`]), the control
//! socket's protocol ([`proto`]) and listener ([`listen`]), the live flow records
//! ([`flows`]), a blocking client for the CLI verbs ([`client`]), and the one tokio
//! runtime every management task shares ([`ControlThread`]).
//!
//! ```text
//! tiergate apply/get/flows ──unix socket (NDJSON)──► listen ──► Daemon ──publish──► ClassifierSlot ──► workers
//!                                                                   ▲                                      │
//!                                                        flow records (run's loop) ◄───────────────────────┘
//! ```

pub mod client;
pub mod daemon;
pub mod docs;
pub mod engine;
pub mod flows;
pub mod listen;
pub mod proto;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};

pub use daemon::{Daemon, DataplaneInfo};
pub use engine::{Engine, Identity, Trees};

/// How often the control thread frees classifiers no worker runs any more.
const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(100);

/// The management plane's runtime: a small multi-thread tokio runtime (two threads
/// named `tiergate-control`) shared by the control socket, the periodic housekeeping
/// and any later endpoint (metrics, a web console) through [`ControlThread::handle`].
/// Dropping it stops every task on it.
#[derive(Debug)]
pub struct ControlThread {
    rt: Runtime,
}

impl ControlThread {
    /// Starts the runtime.
    pub fn start() -> Result<ControlThread, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4)
            .thread_name("tiergate-control")
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the control thread: {e}"))?;
        Ok(ControlThread { rt })
    }

    /// A handle to spawn tasks on the runtime.
    pub fn handle(&self) -> Handle {
        self.rt.handle().clone()
    }

    /// Runs the daemon's housekeeping (freeing retired classifiers) on the runtime.
    pub fn housekeeping<E: Engine>(&self, daemon: &Arc<Daemon<E>>) {
        let d = Arc::clone(daemon);
        self.handle().spawn(async move {
            let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
            loop {
                tick.tick().await;
                d.housekeeping();
            }
        });
    }

    /// Binds the control socket at `path` (permission bits `mode`) and serves `daemon`
    /// on it. The socket file is removed when the runtime stops.
    pub fn serve<E: Engine>(
        &self,
        path: &Path,
        mode: u32,
        daemon: &Arc<Daemon<E>>,
    ) -> Result<(), String> {
        let h = self.handle();
        let bound = {
            let _guard = h.enter();
            listen::bind(path, mode)?
        };
        h.spawn(listen::serve(bound, Arc::clone(daemon)));
        Ok(())
    }
}
