//! Running a gateway from a synchronous program (`safehouse run`): its own thread, its own
//! current-thread runtime.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::gateway::{Config, Gateway};
use crate::stats::Stats;

/// A gateway serving on its own thread. Dropping it stops the gateway and joins the thread.
#[derive(Debug)]
pub struct GatewayThread {
    gateway: Arc<Gateway>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a gateway on `listener` (for example the sandbox's `127.0.0.1:3128`, passed out of
/// its network namespace) on a new thread.
pub fn spawn_thread(config: Config, listener: std::net::TcpListener) -> std::io::Result<GatewayThread> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listener = {
        let _ctx = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let gateway = Gateway::new(config);
    let gw = gateway.clone();
    let thread = std::thread::Builder::new()
        .name("safehouse-gateway".into())
        .spawn(move || runtime.block_on(gw.serve(listener)))?;
    Ok(GatewayThread { gateway, thread: Some(thread) })
}

impl GatewayThread {
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    pub fn stats(&self) -> Stats {
        self.gateway.stats()
    }

    /// Stops the gateway, closes its connections, joins the thread; the final counters.
    pub fn stop(mut self) -> Stats {
        self.halt();
        self.gateway.stats()
    }

    fn halt(&mut self) {
        self.gateway.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GatewayThread {
    fn drop(&mut self) {
        self.halt();
    }
}
