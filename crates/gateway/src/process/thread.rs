//! The gateway process for a synchronous program (`safehouse run`): a thread with its own
//! current-thread runtime hosts the daemon side ([`GatewayHost`]) for one sandbox.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::confine::Confinement;
use super::host::{GatewayHost, HostConfig, HostError};
use crate::gateway::Config;
use crate::hostaddrs::HostWatch;
use crate::stats::Stats;

/// One sandbox's gateway in its own process. Dropping it stops the gateway.
pub struct ProcessGateway {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Stats>>,
}

impl std::fmt::Debug for ProcessGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGateway").finish_non_exhaustive()
    }
}

impl ProcessGateway {
    /// Starts the gateway process and has it serve `listener` under `config` (its policy,
    /// resolver and limits; `on_event` is called on the runtime thread).
    pub fn start(
        config: Config,
        listener: std::net::TcpListener,
        host_addrs: Arc<HostWatch>,
    ) -> Result<ProcessGateway, HostError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), HostError>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("safehouse-gateway".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(HostError::Spawn(format!("a runtime: {e}"))));
                        return Stats::default();
                    }
                };
                runtime.block_on(async move {
                    let host = HostConfig {
                        program: super::own_binary(),
                        resolver: config.resolver.clone(),
                        host_addrs,
                        confinement: Confinement::default(),
                        on_crash: None,
                    };
                    let host = match GatewayHost::start(host).await {
                        Ok(h) => h,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return Stats::default();
                        }
                    };
                    let hook = config.on_event.clone().unwrap_or_else(|| Arc::new(|_: &crate::Event| {}));
                    let handle =
                        match host.serve("run", &config.policy, &config, OwnedFd::from(listener), hook, None).await {
                            Ok(h) => h,
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                                return Stats::default();
                            }
                        };
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.await;
                    handle.stop().await
                })
            })
            .map_err(|e| HostError::Spawn(format!("a thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ProcessGateway { stop: Some(stop_tx), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(HostError::Gone),
        }
    }

    /// Stops the gateway; its final counters.
    pub fn stop(mut self) -> Stats {
        self.halt()
    }

    fn halt(&mut self) -> Stats {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for ProcessGateway {
    fn drop(&mut self) {
        self.halt();
    }
}
