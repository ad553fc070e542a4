//! A TCP stream whose reads say when their bytes arrived in the socket.
//!
//! The latency a subscriber measures when it reads a message includes the load generator's own
//! queueing: on two shared cores the server's fan-out and the subscribers' reads take turns,
//! and a message may sit in its socket until the subscriber's thread gets a core. The kernel
//! stamps each segment as it enters the socket (`SO_TIMESTAMPNS`, real-time clock); on loopback
//! that is the moment the server's `send` returned. Publish → arrival is the server's latency,
//! arrival → read is the load generator's.
use std::io::{self, IoSliceMut, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, UnixAddr};
use nix::sys::time::TimeSpec;
use tokio::io::unix::AsyncFd;

/// Microseconds since the Unix epoch, the clock both stamps use (publisher and kernel).
pub fn now_us() -> u64 {
    since_epoch_us(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn since_epoch_us(d: Duration) -> u64 {
    d.as_micros() as u64
}

/// A stream on the tokio runtime whose reads carry the stamp (the long-pollers'; the WebSocket
/// subscribers' loop calls [`recv_stamped`] itself).
pub struct StampedStream {
    socket: AsyncFd<std::net::TcpStream>,
    control: Vec<u8>,
}

// === impl StampedStream ===

impl StampedStream {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?.into_std()?;
        stream.set_nodelay(true)?;
        enable(&stream)?;
        // SAFETY: the std stream owns its descriptor and keeps it open, unchanged, for as long
        // as the AsyncFd holds the stream.
        let socket = unsafe { AsyncFd::register(stream)? };
        Ok(StampedStream {
            socket,
            control: control_buffer(),
        })
    }

    /// Read what is there into `buf`: the byte count (0 at end of stream) and when the last
    /// of those bytes arrived, in µs since the Unix epoch (if the kernel said).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
        loop {
            let mut ready = self.socket.readable().await?;
            let control = &mut self.control;
            match ready.try_io(|socket| recv_stamped(socket.get_ref(), buf, control)) {
                Ok(Ok((n, arrived))) => {
                    // A short read drained the socket: wait for the next edge rather than
                    // paying a system call to hear "would block" (as tokio's own reads do).
                    if n < buf.len() {
                        ready.clear_ready();
                    }
                    return Ok((n, arrived));
                }
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut ready = self.socket.writable().await?;
            match ready.try_io(|socket| socket.get_ref().write(bytes)) {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// Enable the kernel's receive stamps on a socket.
pub fn enable(socket: &impl AsFd) -> io::Result<()> {
    Ok(setsockopt(socket, sockopt::ReceiveTimestampns, &true)?)
}

/// Room for a receive stamp, for [`recv_stamped`].
pub fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(TimeSpec)
}

/// One `recvmsg` into `buf` on a socket with stamps enabled: the byte count and when the last
/// of those bytes arrived (µs since the Unix epoch), if the kernel said.
pub fn recv_stamped(
    socket: &impl AsRawFd,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<u64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let arrived = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(ts) => Some(stamp_us(ts)),
        _ => None,
    });
    Ok((msg.bytes, arrived))
}

fn stamp_us(ts: TimeSpec) -> u64 {
    since_epoch_us(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
}
