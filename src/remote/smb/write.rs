//! How a file is written on the share: a small new file whole, in one compound request
//! ([`write_small`]); anything else through a [`Pipe`] of WRITEs on an open handle, whose
//! checkpoint FLUSH runs while the WRITEs go on.

use std::collections::VecDeque;
use std::sync::Arc;

use smb2::client::Connection;
use smb2::msg::close::{CloseRequest, CloseResponse, SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB};
use smb2::msg::create::{
    CreateDisposition, CreateRequest, CreateResponse, ImpersonationLevel, ShareAccess,
};
use smb2::msg::flush::FlushRequest;
use smb2::msg::set_info::{InfoType, SetInfoRequest};
use smb2::msg::write::{WriteRequest, WriteResponse};
use smb2::pack::{FileTime, Pack, ReadCursor, Unpack};
use smb2::types::flags::{FileAccessMask, FileAttributes};
use smb2::types::status::NtStatus;
use smb2::types::{Command, CreditCharge, FileId, OplockLevel};
use smb2::{CompoundOp, Frame, Tree};
use tokio::task::JoinHandle;

type SmbResult<T> = std::result::Result<T, smb2::Error>;

/// Up to this size a new file is kept in memory and sent whole in one round trip; about
/// Samba's default `aio write size` worth of credits (16) per file in flight.
pub(super) const SMALL_FILE: usize = 1 << 20;
/// Bytes per WRITE of a [`Pipe`]: 16 credits, well under Samba's 8 MiB MaxWriteSize.
const WRITE_BLOCK: usize = 1 << 20;
/// Bytes a [`Pipe`] keeps unanswered on the wire: 256 credits of the 8192 Samba grants. On
/// this 2-core loopback, 4 to 32 MiB measured within the noise of a shared machine (2.3–3.6 s
/// per GiB); 16 MiB leaves room for a slower server's disk.
const WRITE_WINDOW: u64 = 16 << 20;
/// Answered WRITE buffers a [`Pipe`] keeps for reuse: in a full window each new WRITE follows
/// an answer, so one or two are always at hand.
const SPARE_BUFFERS: usize = 2;
/// MS-FSCC 2.4.7 FileBasicInformation (the info class SET_INFO takes for times).
const FILE_BASIC_INFORMATION: u8 = 4;
/// MS-FSCC 2.4.14 FileEndOfFileInformation (a file's length).
const FILE_END_OF_FILE_INFORMATION: u8 = 20;
/// MS-SMB2 2.2.13 CreateOptions: the name must not be a directory.
const FILE_NON_DIRECTORY_FILE: u32 = 0x40;

/// One credit per 64 KiB started (MS-SMB2 3.1.5.2).
fn charge(len: usize) -> CreditCharge {
    CreditCharge(len.div_ceil(65536).max(1) as u16)
}

/// `Ok` for a SUCCESS answer, the server's status as an error otherwise.
fn success(f: &Frame, command: Command) -> SmbResult<()> {
    if f.header.status == NtStatus::SUCCESS {
        Ok(())
    } else {
        Err(smb2::Error::Protocol {
            status: f.header.status,
            command,
        })
    }
}

/// SET_INFO(FileBasicInformation) setting only the modification time (a zero leaves a field
/// as it is): creation, access, write, change time, attributes, reserved.
fn set_mtime_request(file_id: FileId, mtime: FileTime) -> SetInfoRequest {
    let mut basic = vec![0u8; 40];
    basic[16..24].copy_from_slice(&mtime.0.to_le_bytes());
    SetInfoRequest {
        info_type: InfoType::File,
        file_info_class: FILE_BASIC_INFORMATION,
        additional_information: 0,
        file_id,
        buffer: basic,
    }
}

/// Read the answers to a compound of `ops` on one open file that ends in a CLOSE with
/// POSTQUERY_ATTRIB, and close the handle (`file_id`) if the CLOSE did not. Returns the size
/// and mtime the CLOSE reported (`None`: the server did not post-query), or the first failure.
async fn settle(
    conn: &Connection,
    tree: &Tree,
    file_id: FileId,
    ops: &[CompoundOp<'_>],
    frames: impl IntoIterator<Item = SmbResult<Frame>>,
) -> SmbResult<Option<(u64, FileTime)>> {
    let mut failed = None;
    let mut post = None;
    let mut closed = false;
    for (frame, op) in frames.into_iter().zip(ops) {
        let answer = frame.and_then(|f| success(&f, op.command).map(|()| f));
        match answer {
            Ok(f) if op.command == Command::Close => {
                closed = true;
                match CloseResponse::unpack(&mut ReadCursor::new(&f.body)) {
                    Ok(r) if r.flags & SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB != 0 => {
                        post = Some((r.end_of_file, r.last_write_time));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if !closed {
        let _ = tree.close_handle(&mut conn.clone(), file_id).await;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(post),
    }
}

/// Write `data` as the whole content of `full` (created or truncated), optionally set its
/// modification time, and close it, in ONE compound request: CREATE, WRITE, SET_INFO(basic),
/// and CLOSE with POSTQUERY_ATTRIB, whose answer carries the size and times as the server now
/// has them. Safe to repeat (it rewrites the same bytes). Samba runs a WRITE inside a compound
/// synchronously, so nothing goes async before the end of the chain (MS-SMB2 3.3.5.2.7).
/// Returns the file's size and mtime, or `None` when the server did not post-query.
pub(super) async fn write_small(
    conn: Connection,
    tree: Arc<Tree>,
    full: String,
    data: Arc<Vec<u8>>,
    mtime: Option<FileTime>,
) -> SmbResult<Option<(u64, FileTime)>> {
    let create = CreateRequest {
        requested_oplock_level: OplockLevel::None,
        impersonation_level: ImpersonationLevel::Impersonation,
        desired_access: FileAccessMask::new(
            FileAccessMask::FILE_WRITE_DATA
                | FileAccessMask::FILE_READ_ATTRIBUTES
                | FileAccessMask::FILE_WRITE_ATTRIBUTES
                | FileAccessMask::SYNCHRONIZE,
        ),
        file_attributes: FileAttributes::NORMAL,
        share_access: ShareAccess(0),
        create_disposition: CreateDisposition::FileOverwriteIf,
        create_options: FILE_NON_DIRECTORY_FILE,
        name: full.replace('/', "\\"),
        create_contexts: vec![],
    };
    let write = WriteRequest {
        // The data follows the 64-byte header and the 48-byte WRITE body.
        data_offset: 0x70,
        offset: 0,
        file_id: FileId::SENTINEL,
        channel: 0,
        remaining_bytes: 0,
        write_channel_info_offset: 0,
        write_channel_info_length: 0,
        flags: 0,
        data: data.to_vec(),
    };
    let set_times = mtime.map(|t| set_mtime_request(FileId::SENTINEL, t));
    let close = CloseRequest {
        flags: SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB,
        file_id: FileId::SENTINEL,
    };
    let tid = Some(tree.tree_id);
    let op = |command, body, credit_charge| CompoundOp {
        command,
        body,
        tree_id: tid,
        credit_charge,
    };
    let mut ops = vec![op(Command::Create, &create as &dyn Pack, charge(0))];
    if !data.is_empty() {
        ops.push(op(Command::Write, &write, charge(data.len())));
    }
    if let Some(s) = &set_times {
        ops.push(op(Command::SetInfo, s, charge(0)));
    }
    ops.push(op(Command::Close, &close, charge(0)));
    let mut frames = conn.execute_compound(&ops).await?.into_iter();
    let create_frame = frames
        .next()
        .ok_or_else(|| smb2::Error::invalid_data("no CREATE answer"))??;
    success(&create_frame, Command::Create)?;
    let file_id = CreateResponse::unpack(&mut ReadCursor::new(&create_frame.body))?.file_id;
    settle(&conn, &tree, file_id, &ops[1..], frames).await
}

/// One WRITE on the wire: its answer, and its buffer back.
type WriteTask = JoinHandle<(Vec<u8>, SmbResult<()>)>;

/// A checkpoint's FLUSH, from [`Pipe::sync_begin`] to [`Pipe::sync_done`].
enum Flush {
    Idle,
    /// Begun: the FLUSH goes out once the first `.0` WRITEs of the pipe are answered (a
    /// FLUSH makes durable what is in the file, and a WRITE is in it once answered).
    Waiting(u64),
    /// On the wire, while the WRITEs after it go on.
    Sent(JoinHandle<SmbResult<()>>),
}

/// A file open on the share for writing, with its WRITEs pipelined: each goes out as a task of
/// its own, at most [`WRITE_WINDOW`] bytes of them unanswered, and their answers are taken in
/// the order they were sent.
///
/// Ours rather than smb2's `FileWriter`, because a checkpoint wants to know when the WRITEs
/// sent before it are answered without stopping the ones after it, and `FileWriter` tells that
/// only by draining its pipeline (and waits for its FLUSH too). Here the checkpoint's FLUSH
/// goes out on the same handle once those WRITEs are answered, and writing goes on while the
/// server's disk catches up (Samba runs the fsync in its thread pool: the WRITEs behind it are
/// served meanwhile).
pub(super) struct Pipe {
    rth: tokio::runtime::Handle,
    conn: Connection,
    tree: Arc<Tree>,
    file_id: FileId,
    /// Where the next WRITE lands.
    offset: u64,
    /// WRITEs whose answer has not been taken, oldest first, with their lengths. Each hands
    /// its buffer back for the next WRITE to fill.
    in_flight: VecDeque<(u64, WriteTask)>,
    /// Buffers of answered WRITEs (at most [`SPARE_BUFFERS`]): refilling one costs a copy, a
    /// fresh 1 MiB allocation also faults in and zeroes new pages, ~8% of a 1 GiB upload's
    /// CPU (the client's minor faults per GiB went from 207k–286k to 75k–192k with reuse).
    spare: Vec<Vec<u8>>,
    in_flight_bytes: u64,
    /// WRITEs sent, and WRITEs answered (each of the first `answered` succeeded).
    sent: u64,
    answered: u64,
    flush: Flush,
    /// Closed by `finish`, or given up by `Drop`.
    closed: bool,
}

/// A task's result, a panicked or cancelled task as an error.
fn joined<T>(r: std::result::Result<SmbResult<T>, tokio::task::JoinError>) -> SmbResult<T> {
    r.unwrap_or_else(|e| Err(smb2::Error::invalid_data(format!("SMB task failed: {e}"))))
}

impl Pipe {
    /// Open `full` for writing its bytes from `offset` on: created when absent, and cut to
    /// `offset` bytes when longer (the trait's "keeps the first `offset` bytes and drops
    /// anything after them"). A file shorter than `offset` is refused: resuming into it would
    /// leave a hole.
    pub(super) async fn open(
        rth: tokio::runtime::Handle,
        conn: Connection,
        tree: Arc<Tree>,
        full: String,
        offset: u64,
    ) -> SmbResult<Pipe> {
        let (file_id, len) = tree.open_file_readwrite(&mut conn.clone(), &full).await?;
        let cut = async {
            if len < offset {
                return Err(smb2::Error::invalid_data(format!(
                    "the partial file holds {len} bytes, fewer than the {offset} to resume from"
                )));
            }
            if len > offset {
                let eof = SetInfoRequest {
                    info_type: InfoType::File,
                    file_info_class: FILE_END_OF_FILE_INFORMATION,
                    additional_information: 0,
                    file_id,
                    buffer: offset.to_le_bytes().to_vec(),
                };
                let f = conn
                    .execute(Command::SetInfo, &eof, Some(tree.tree_id))
                    .await?;
                success(&f, Command::SetInfo)?;
            }
            Ok(())
        };
        if let Err(e) = cut.await {
            let _ = tree.close_handle(&mut conn.clone(), file_id).await;
            return Err(e);
        }
        Ok(Pipe {
            rth,
            conn,
            tree,
            file_id,
            offset,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
            in_flight_bytes: 0,
            sent: 0,
            answered: 0,
            flush: Flush::Idle,
            closed: false,
        })
    }

    /// Send `data` at the current offset, waiting only for room in the window.
    pub(super) fn write(&mut self, data: &[u8]) -> SmbResult<()> {
        for piece in data.chunks(WRITE_BLOCK) {
            let len = piece.len() as u64;
            while !self.in_flight.is_empty() && self.in_flight_bytes + len > WRITE_WINDOW {
                self.take_oldest()?;
            }
            let mut data = self.spare.pop().unwrap_or_default();
            data.clear();
            data.extend_from_slice(piece);
            let req = WriteRequest {
                // The data follows the 64-byte header and the 48-byte WRITE body.
                data_offset: 0x70,
                offset: self.offset,
                file_id: self.file_id,
                channel: 0,
                remaining_bytes: 0,
                write_channel_info_offset: 0,
                write_channel_info_length: 0,
                flags: 0,
                data,
            };
            let (conn, tid) = (self.conn.clone(), self.tree.tree_id);
            let task = self.rth.spawn(async move {
                let len = req.data.len();
                let sent = conn
                    .execute_with_credits(Command::Write, &req, Some(tid), charge(len))
                    .await;
                let answer = sent.and_then(|f| {
                    success(&f, Command::Write)?;
                    let count = WriteResponse::unpack(&mut ReadCursor::new(&f.body))?.count;
                    if count as usize != len {
                        return Err(smb2::Error::invalid_data(format!(
                            "the server wrote {count} of {len} bytes at offset {}",
                            req.offset
                        )));
                    }
                    Ok(())
                });
                (req.data, answer)
            });
            self.in_flight.push_back((len, task));
            self.in_flight_bytes += len;
            self.offset += len;
            self.sent += 1;
        }
        self.take_answered()?;
        self.send_flush_when_due();
        Ok(())
    }

    /// Wait for the oldest WRITE's answer.
    fn take_oldest(&mut self) -> SmbResult<()> {
        let Some((len, task)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.in_flight_bytes -= len;
        let (buf, answer) = match self.rth.block_on(task) {
            Ok(done) => done,
            Err(e) => (
                Vec::new(),
                Err(smb2::Error::invalid_data(format!("SMB task failed: {e}"))),
            ),
        };
        if buf.capacity() > 0 && self.spare.len() < SPARE_BUFFERS {
            self.spare.push(buf);
        }
        answer?;
        self.answered += 1;
        Ok(())
    }

    /// Take the answers that have arrived, oldest first, without waiting.
    fn take_answered(&mut self) -> SmbResult<()> {
        while self.in_flight.front().is_some_and(|(_, t)| t.is_finished()) {
            self.take_oldest()?;
        }
        Ok(())
    }

    /// Send the FLUSH a checkpoint waits for, once the WRITEs before it are answered.
    fn send_flush_when_due(&mut self) {
        let Flush::Waiting(after) = self.flush else {
            return;
        };
        if self.answered < after {
            return;
        }
        let (conn, tid, file_id) = (self.conn.clone(), self.tree.tree_id, self.file_id);
        self.flush = Flush::Sent(self.rth.spawn(async move {
            let f = conn
                .execute(Command::Flush, &FlushRequest { file_id }, Some(tid))
                .await?;
            success(&f, Command::Flush)
        }));
    }

    /// Begin making durable every byte written so far; [`Pipe::sync_done`] says when it is.
    pub(super) fn sync_begin(&mut self) -> SmbResult<()> {
        if let Flush::Sent(task) = std::mem::replace(&mut self.flush, Flush::Idle) {
            // One checkpoint at a time: the one before ends first (its error is this one's).
            joined(self.rth.block_on(task))?;
        }
        self.flush = Flush::Waiting(self.sent);
        self.take_answered()?;
        self.send_flush_when_due();
        Ok(())
    }

    /// Has the FLUSH begun last finished? Never waits; `true` once per FLUSH. A WRITE or
    /// FLUSH that failed is an error here.
    pub(super) fn sync_done(&mut self) -> SmbResult<bool> {
        self.take_answered()?;
        self.send_flush_when_due();
        match &self.flush {
            Flush::Sent(task) if task.is_finished() => {
                let Flush::Sent(task) = std::mem::replace(&mut self.flush, Flush::Idle) else {
                    unreachable!()
                };
                joined(self.rth.block_on(task)).map(|()| true)
            }
            _ => Ok(false),
        }
    }

    /// Wait for every WRITE and a FLUSH on the wire; the first failure, if any, once all are
    /// answered.
    fn drain(&mut self) -> SmbResult<()> {
        let mut failed = None;
        while !self.in_flight.is_empty() {
            if let Err(e) = self.take_oldest() {
                failed.get_or_insert(e);
            }
        }
        if let Flush::Sent(task) = std::mem::replace(&mut self.flush, Flush::Idle) {
            if let Err(e) = joined(self.rth.block_on(task)) {
                failed.get_or_insert(e);
            }
        }
        self.flush = Flush::Idle;
        failed.map_or(Ok(()), Err)
    }

    /// Make every byte written so far durable, and wait for it.
    pub(super) fn sync(&mut self) -> SmbResult<()> {
        self.drain()?;
        let (conn, tid, file_id) = (self.conn.clone(), self.tree.tree_id, self.file_id);
        self.rth.block_on(async move {
            let f = conn
                .execute(Command::Flush, &FlushRequest { file_id }, Some(tid))
                .await?;
            success(&f, Command::Flush)
        })
    }

    /// Wait for every WRITE's answer, set the modification time if asked, and close, the last
    /// two in one compound whose CLOSE reports the file's size and mtime (`None` when the
    /// server did not say). No FLUSH: like the other backends, closing promises no durability
    /// (a checkpoint's sync does), and an fsync per file made small files 3x slower.
    pub(super) fn finish(&mut self, mtime: Option<FileTime>) -> SmbResult<Option<(u64, FileTime)>> {
        if self.closed {
            return Err(smb2::Error::invalid_data("the file is closed already"));
        }
        let drained = self.drain();
        self.closed = true;
        let (conn, tree, file_id) = (self.conn.clone(), self.tree.clone(), self.file_id);
        self.rth.block_on(async move {
            if let Err(e) = drained {
                let _ = tree.close_handle(&mut conn.clone(), file_id).await;
                return Err(e);
            }
            let set = mtime.map(|t| set_mtime_request(file_id, t));
            let mut close = CloseRequest {
                flags: SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB,
                file_id,
            };
            let tid = Some(tree.tree_id);
            let mut ops = Vec::new();
            if let Some(s) = &set {
                ops.push(CompoundOp {
                    command: Command::SetInfo,
                    body: s,
                    tree_id: tid,
                    credit_charge: charge(0),
                });
                // Related to the SET_INFO before it: the same handle.
                close.file_id = FileId::SENTINEL;
            }
            ops.push(CompoundOp {
                command: Command::Close,
                body: &close,
                tree_id: tid,
                credit_charge: charge(0),
            });
            let frames = match conn.execute_compound(&ops).await {
                Ok(f) => f,
                Err(e) => {
                    let _ = tree.close_handle(&mut conn.clone(), file_id).await;
                    return Err(e);
                }
            };
            settle(&conn, &tree, file_id, &ops, frames).await
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // Given up (an error, or a transfer stopped): close once the requests on the wire are
        // answered, in the background.
        let in_flight = std::mem::take(&mut self.in_flight);
        let flush = std::mem::replace(&mut self.flush, Flush::Idle);
        let (conn, tree, file_id) = (self.conn.clone(), self.tree.clone(), self.file_id);
        self.rth.spawn(async move {
            for (_, t) in in_flight {
                let _ = t.await;
            }
            if let Flush::Sent(t) = flush {
                let _ = t.await;
            }
            let _ = tree.close_handle(&mut conn.clone(), file_id).await;
        });
    }
}
