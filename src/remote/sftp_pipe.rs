//! The byte stream russh-sftp speaks over: an SSH session channel whose outgoing SFTP
//! requests are gathered into as few CHANNEL_DATA messages as possible.
//!
//! russh-sftp writes each request to its stream on its own, and russh's channel writer makes
//! each write one SSH packet. A small file is six requests (OPEN, WRITE, FSETSTAT, FSTAT,
//! CLOSE, RENAME), so with dozens of files in flight the server's sshd decrypted, relayed to
//! its sftp process and answered one packet per request: about two syscalls and a wake-up
//! each, on a 2-core machine shared with the client. Here the requests go into a buffer, and
//! one pump task sends whatever has gathered as one message (split into packets by russh),
//! handing the buffer over without a copy. The server's sftp process then reads several
//! requests at once and its replies come back together too. Measured on the 10,000 × 4 KiB
//! upload over loopback (tmpfs): 1.47–1.56 s → 1.26–1.28 s.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes gathered before a write waits for the pump: a bound on memory, not a batch size
/// (requests are sent as soon as the pump runs).
const GATHER_MAX: usize = 4 << 20;
/// The least room a new gather buffer starts with.
const GATHER_MIN: usize = 16 << 10;

/// What the request writer and the pump share.
#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    /// Shut down by the SFTP client, dropped, or the channel failed: no more writes.
    closed: bool,
    pump: Option<Waker>,
    writer: Option<Waker>,
}

type Next = Pin<Box<dyn Future<Output = (ChannelReadHalf, Option<ChannelMsg>)> + Send>>;

/// The stream handed to `RawSftpSession`: reads come straight from the channel, writes go
/// to the pump.
pub struct SftpStream {
    half: Option<ChannelReadHalf>,
    next: Option<Next>,
    /// A data message partly read: the message and how far.
    pending: Option<(ChannelMsg, usize)>,
    out: Arc<Mutex<Out>>,
}

/// The stream for an SFTP client on `channel` (its subsystem already started), with its pump
/// running on the current tokio runtime.
pub fn sftp_stream(channel: Channel<Msg>) -> SftpStream {
    let (half, write) = channel.split();
    let out = Arc::new(Mutex::new(Out::default()));
    tokio::spawn(pump(write, out.clone()));
    SftpStream {
        half: Some(half),
        next: None,
        pending: None,
        out,
    }
}

/// Send what the writer gathered, one message per wake-up, until the stream is shut down
/// (then EOF and CLOSE go out) or the channel fails.
async fn pump(write: ChannelWriteHalf<Msg>, out: Arc<Mutex<Out>>) {
    loop {
        std::future::poll_fn(|cx| {
            let mut o = out.lock().unwrap();
            if o.buf.is_empty() && !o.closed {
                o.pump = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        // Let the writer put down the rest of a burst (a file's requests are queued together).
        tokio::task::yield_now().await;
        let (data, closed) = {
            let mut o = out.lock().unwrap();
            if let Some(w) = o.writer.take() {
                w.wake();
            }
            // The next buffer starts as large as this one: grown from empty, a burst of
            // 255 KiB WRITEs was copied again by every doubling (3% of a large upload's CPU).
            let cap = o.buf.len().clamp(GATHER_MIN, GATHER_MAX);
            (
                std::mem::replace(&mut o.buf, Vec::with_capacity(cap)),
                o.closed,
            )
        };
        if !data.is_empty() && write.data_bytes(data).await.is_err() {
            break;
        }
        if closed {
            let _ = write.eof().await;
            let _ = write.close().await;
            return;
        }
    }
    let mut o = out.lock().unwrap();
    o.closed = true;
    o.buf = Vec::new();
    if let Some(w) = o.writer.take() {
        w.wake();
    }
}

impl AsyncRead for SftpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some((ChannelMsg::Data { data }, at)) = self.pending.as_mut() {
                let n = buf.remaining().min(data.len() - *at);
                buf.put_slice(&data[*at..*at + n]);
                *at += n;
                if *at == data.len() {
                    self.pending = None;
                }
                return Poll::Ready(Ok(()));
            }
            if self.next.is_none() {
                let Some(mut half) = self.half.take() else {
                    return Poll::Ready(Ok(())); // end of the channel
                };
                self.next = Some(Box::pin(async move {
                    let msg = half.wait().await;
                    (half, msg)
                }));
            }
            let next = self.next.as_mut().expect("set above");
            let (half, msg) = ready!(next.as_mut().poll(cx));
            self.next = None;
            match msg {
                Some(m @ ChannelMsg::Data { .. }) => {
                    self.half = Some(half);
                    self.pending = Some((m, 0));
                }
                None | Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) => {
                    return Poll::Ready(Ok(()));
                }
                Some(_) => self.half = Some(half),
            }
        }
    }
}

impl AsyncWrite for SftpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut o = self.out.lock().unwrap();
        if o.closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if o.buf.len() >= GATHER_MAX {
            o.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        o.buf.extend_from_slice(buf);
        if let Some(p) = o.pump.take() {
            p.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    /// The pump sends everything written, in order, as soon as it runs.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close_out();
        Poll::Ready(Ok(()))
    }
}

impl SftpStream {
    fn close_out(&self) {
        let mut o = self.out.lock().unwrap();
        o.closed = true;
        if let Some(p) = o.pump.take() {
            p.wake();
        }
    }
}

impl Drop for SftpStream {
    /// The SFTP client is gone: the pump sends what is left, then EOF and CLOSE.
    fn drop(&mut self) {
        self.close_out();
    }
}
