//! Guest stdout/stderr: kept for the result, streamed as chunks while the
//! program runs, and capped by one output budget shared by both streams.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc::UnboundedSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use crate::result::{OutputChunk, Stream, Utf8Chunker};

/// Largest write permit handed to the guest at once.
const PERMIT: usize = 64 * 1024;

/// Bytes stdout and stderr may still keep, together.
#[derive(Debug)]
pub(crate) struct Budget {
    left: Mutex<u64>,
    truncated: AtomicBool,
}

impl Budget {
    pub(crate) fn new(bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            left: Mutex::new(bytes),
            truncated: AtomicBool::new(false),
        })
    }

    fn take(&self, n: usize) -> usize {
        let mut left = self.left.lock().expect("budget lock");
        let keep = (n as u64).min(*left);
        *left -= keep;
        if keep < n as u64 {
            self.truncated.store(true, Ordering::Release);
        }
        keep as usize
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated.load(Ordering::Acquire)
    }
}

struct Shared {
    stream: Stream,
    budget: Arc<Budget>,
    kept: Mutex<(Vec<u8>, Utf8Chunker)>,
    chunks: Option<UnboundedSender<OutputChunk>>,
}

/// One output stream of one execution (cheap to clone).
#[derive(Clone)]
pub(crate) struct OutputSink(Arc<Shared>);

impl OutputSink {
    pub(crate) fn new(
        stream: Stream,
        budget: Arc<Budget>,
        chunks: Option<UnboundedSender<OutputChunk>>,
    ) -> Self {
        Self(Arc::new(Shared {
            stream,
            budget,
            kept: Mutex::new((Vec::new(), Utf8Chunker::default())),
            chunks,
        }))
    }

    /// Keeps what the budget allows; false when something was dropped.
    fn accept(&self, bytes: &[u8]) -> bool {
        let keep = self.0.budget.take(bytes.len());
        let mut kept = self.0.kept.lock().expect("output lock");
        kept.0.extend_from_slice(&bytes[..keep]);
        let text = kept.1.push(&bytes[..keep]);
        if !text.is_empty()
            && let Some(tx) = &self.0.chunks
        {
            let _ = tx.send(OutputChunk {
                stream: self.0.stream,
                data: text,
            });
        }
        keep == bytes.len()
    }

    /// Everything kept, as text.
    pub(crate) fn text(&self) -> String {
        let mut kept = self.0.kept.lock().expect("output lock");
        let rest = kept.1.finish();
        if !rest.is_empty()
            && let Some(tx) = &self.0.chunks
        {
            let _ = tx.send(OutputChunk {
                stream: self.0.stream,
                data: rest,
            });
        }
        String::from_utf8_lossy(&kept.0).into_owned()
    }
}

impl IsTerminal for OutputSink {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputSink {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputSink {
    async fn ready(&mut self) {}
}

impl OutputStream for OutputSink {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if self.accept(&bytes) {
            Ok(())
        } else {
            // Past the limit the program is stopped, as in Python.
            Err(StreamError::Trap(wasmtime::format_err!(
                "output limit exceeded"
            )))
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(PERMIT)
    }
}

impl AsyncWrite for OutputSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.accept(buf) {
            Poll::Ready(Ok(buf.len()))
        } else {
            Poll::Ready(Err(io::Error::other("output limit exceeded")))
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
