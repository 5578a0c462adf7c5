//! A TCP proxy on 127.0.0.1 that can stop forwarding without closing its
//! connections: a network partition, as a replica cut off from its
//! database would see it (no RST, no FIN, just silence).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

pub struct Proxy {
    pub addr: SocketAddr,
    forwarding: Arc<AtomicBool>,
    /// Bumped to close every open connection.
    generation: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Forwards connections on a fresh loopback port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forwarding = Arc::new(AtomicBool::new(true));
        let flag = forwarding.clone();
        let generation = Arc::new(AtomicU64::new(0));
        let current = generation.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let born = current.load(Ordering::SeqCst);
                tokio::spawn(pipe(cr, sw, flag.clone(), current.clone(), born));
                tokio::spawn(pipe(sr, cw, flag.clone(), current.clone(), born));
            }
        });
        Proxy { addr, forwarding, generation, task }
    }

    /// Stops (false) or resumes (true) forwarding, on every connection.
    pub fn forward(&self, on: bool) {
        self.forwarding.store(on, Ordering::SeqCst);
    }

    /// Closes every connection open now (within ~20 ms); new ones are
    /// forwarded as before.
    pub fn sever(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    forwarding: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
    born: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if generation.load(Ordering::SeqCst) != born {
            return;
        }
        if !forwarding.load(Ordering::SeqCst) {
            // Neither read nor close: bytes wait in the kernel's buffers.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        // Bounded, so a pause takes effect while a read is pending.
        match tokio::time::timeout(Duration::from_millis(20), from.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => {
                // Bytes read just before a pause wait for the resume, and
                // die with a severed connection.
                while !forwarding.load(Ordering::SeqCst) && generation.load(Ordering::SeqCst) == born {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                if generation.load(Ordering::SeqCst) != born || to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
