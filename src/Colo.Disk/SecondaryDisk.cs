using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using Colo.Disk.Internal;
using Colo.Nbd;

namespace Colo.Disk;

/// <summary>
/// The secondary's disk in COLO (docs/DISK.md). Three layers:
/// <list type="bullet">
/// <item><b>base</b> — an <see cref="IBaseImage"/> equal to the PVM's disk as of the last committed checkpoint;</item>
/// <item><b>buffer</b> — PVM write records received since then (<see cref="Receive"/>), in order, with the epoch
/// barriers between them; invisible to the SVM;</item>
/// <item><b>overlay</b> — the SVM's own writes since the last checkpoint, in blocks of <see cref="BlockSize"/>.</item>
/// </list>
/// The SVM sees overlay over base (this class is its <see cref="IBlockDevice"/>). <see cref="Commit"/> applies the
/// buffer up to a barrier to the base and drops the overlay; <see cref="Failover"/> drops the buffer and merges the
/// overlay into the base, after which the SVM writes straight to the base. Overlay and buffer data live in memory up
/// to their limits (<see cref="SecondaryDiskOptions"/>) and spill to temporary files beyond.
/// <para>
/// Thread-safety: every member may be called from any thread. SVM reads run concurrently with each other; SVM
/// writes, trims and flushes are serialised with reads and with each other (one reader/writer lock). Replication
/// records (<see cref="Receive"/>, <see cref="ReceivePayload(ReadOnlySpan{byte})"/>) take a separate lock, so
/// they never wait for SVM I/O. <see cref="Commit"/> and <see cref="Failover"/> take both; SVM I/O and incoming
/// records wait at most for the duration of that commit or failover. All I/O is synchronous: the async
/// <see cref="IBlockDevice"/> methods complete before returning. Do not call anything concurrently with
/// <see cref="Dispose"/>.
/// </para>
/// </summary>
public sealed class SecondaryDisk : IBlockDevice, IDisposable
{
    private const int ZeroSlot = -1;

    private readonly IBaseImage _base;
    private readonly bool _ownsBase;
    private readonly int _blockShift;
    private readonly string _spillDirectory;
    private readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    private readonly object _bufferLock = new();

    // Overlay (guarded by _lock): block index -> slot in _overlayStore, or ZeroSlot for a block that reads as zeroes.
    private readonly Dictionary<long, int> _overlay = new();
    private readonly Stack<int> _freeSlots = new();
    private readonly SpillStore _overlayStore;
    private readonly byte[] _scratch;
    private int _slotCount;

    // Buffer (guarded by _bufferLock): PVM records since the last commit, in order; barriers point between them.
    private readonly List<BufferedWrite> _entries = new();
    private readonly List<BufferedBarrier> _barriers = new();
    private readonly long _bufferMemoryLimit;
    private SpillStore _bufferStore;
    private long _bufferDataEnd;

    private volatile bool _failedOver;
    private ulong _pendingCommit;
    private ulong _committedEpoch;
    private long _overlayBytesMax;
    private long _bufferBytesMax;
    private bool _disposed;

    /// <summary>Creates the secondary disk over <paramref name="baseImage"/> (the PVM's disk as of the last checkpoint).</summary>
    /// <param name="baseImage">The base image; must not be written by anyone else while this object lives.</param>
    /// <param name="options">Block size, memory limits and spill folder; null for the defaults.</param>
    /// <param name="ownsBaseImage">Whether <see cref="Dispose"/> disposes <paramref name="baseImage"/> (if it is <see cref="IDisposable"/>).</param>
    /// <exception cref="ArgumentOutOfRangeException">Block size not a power of two in 512..1 MiB, or a negative memory limit.</exception>
    public SecondaryDisk(IBaseImage baseImage, SecondaryDiskOptions? options = null, bool ownsBaseImage = false)
    {
        ArgumentNullException.ThrowIfNull(baseImage);
        options ??= new SecondaryDiskOptions();
        int bs = options.BlockSize;
        if (bs < 512 || bs > 1024 * 1024 || (bs & (bs - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(options), bs, "BlockSize must be a power of two from 512 to 1048576 bytes");
        ArgumentOutOfRangeException.ThrowIfNegative(options.OverlayMemoryLimit, nameof(options.OverlayMemoryLimit));
        ArgumentOutOfRangeException.ThrowIfNegative(options.BufferMemoryLimit, nameof(options.BufferMemoryLimit));
        _base = baseImage;
        _ownsBase = ownsBaseImage;
        BlockSize = bs;
        _blockShift = System.Numerics.BitOperations.Log2((uint)bs);
        Size = baseImage.Size;
        _spillDirectory = options.SpillDirectory ?? Path.GetTempPath();
        _overlayStore = new SpillStore(options.OverlayMemoryLimit, _spillDirectory, "colo-overlay");
        _bufferMemoryLimit = options.BufferMemoryLimit;
        _bufferStore = new SpillStore(_bufferMemoryLimit, _spillDirectory, "colo-buffer");
        _scratch = new byte[bs];
    }

    /// <summary>Opens the raw image at <paramref name="path"/> as the base (closed by <see cref="Dispose"/>).</summary>
    /// <param name="path">The raw base image file.</param>
    /// <param name="options">Block size, memory limits and spill folder; null for the defaults.</param>
    /// <returns>The secondary disk.</returns>
    /// <exception cref="IOException">The image cannot be opened.</exception>
    public static SecondaryDisk Open(string path, SecondaryDiskOptions? options = null)
    {
        RawFileImage image = RawFileImage.Open(path);
        try
        {
            return new SecondaryDisk(image, options, ownsBaseImage: true);
        }
        catch
        {
            image.Dispose();
            throw;
        }
    }

    /// <summary>Always false: the SVM writes into the overlay.</summary>
    public bool IsReadOnly => false;

    /// <summary>Size of the disk in bytes (the base image's).</summary>
    public long Size { get; }

    /// <summary>Overlay granularity in bytes.</summary>
    public int BlockSize { get; }

    /// <summary>The epoch of the last successful <see cref="Commit"/>; 0 before the first.</summary>
    public ulong CommittedEpoch => Volatile.Read(ref _committedEpoch);

    /// <summary>Whether <see cref="Failover"/> completed: the SVM now writes straight to the base and records are refused.</summary>
    public bool IsFailedOver => _failedOver;

    /// <summary>The epoch of a commit that failed and must be retried (see <see cref="DiskCommitException"/>); 0 if none.</summary>
    public ulong PendingCommitEpoch => Volatile.Read(ref _pendingCommit);

    /// <summary>Bytes of SVM overlay data held now (blocks × <see cref="BlockSize"/>; zeroed blocks hold none).</summary>
    public long OverlayBytes => Volatile.Read(ref _overlayBytes);

    /// <summary>Largest <see cref="OverlayBytes"/> seen since creation or <see cref="ResetPeaks"/>.</summary>
    public long OverlayBytesMax => Volatile.Read(ref _overlayBytesMax);

    /// <summary>Of <see cref="OverlayBytes"/>, the bytes written to the overlay's spill file (its high-water mark since the last commit).</summary>
    public long OverlaySpilledBytes => Volatile.Read(ref _overlaySpilled);

    /// <summary>Data bytes of buffered PVM writes held now (zero and trim records hold none).</summary>
    public long BufferBytes => Volatile.Read(ref _bufferBytes);

    /// <summary>Largest <see cref="BufferBytes"/> seen since creation or <see cref="ResetPeaks"/>.</summary>
    public long BufferBytesMax => Volatile.Read(ref _bufferBytesMax);

    /// <summary>Of <see cref="BufferBytes"/>, the bytes held in the buffer's spill file.</summary>
    public long BufferSpilledBytes => Volatile.Read(ref _bufferSpilled);

    /// <summary>PVM write records buffered now.</summary>
    public int BufferedRecords => Volatile.Read(ref _bufferedRecords);

    /// <summary>The epoch of the last barrier received and not yet committed, or 0.</summary>
    public ulong LastBarrierEpoch => Volatile.Read(ref _lastBarrier);

    private long _overlayBytes;
    private long _overlaySpilled;
    private long _bufferBytes;
    private long _bufferSpilled;
    private int _bufferedRecords;
    private ulong _lastBarrier;

    /// <summary>Sets <see cref="OverlayBytesMax"/> and <see cref="BufferBytesMax"/> to the current sizes.</summary>
    public void ResetPeaks()
    {
        Volatile.Write(ref _overlayBytesMax, OverlayBytes);
        Volatile.Write(ref _bufferBytesMax, BufferBytes);
    }

    // ---------------------------------------------------------------- SVM side

    /// <summary>Reads the SVM's view (overlay over base; the base alone after failover) into <paramref name="destination"/>.</summary>
    /// <param name="offset">Byte offset, with the range inside [0, <see cref="Size"/>).</param>
    /// <param name="destination">Receives the bytes.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the disk.</exception>
    /// <exception cref="InvalidOperationException">A commit failed and has not been retried (<see cref="PendingCommitEpoch"/>).</exception>
    /// <exception cref="IOException">The base image or the spill file failed.</exception>
    /// <exception cref="ObjectDisposedException">The disk is disposed.</exception>
    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        _lock.EnterReadLock();
        try
        {
            ThrowIfUnusable();
            if (_overlay.Count == 0)
            {
                _base.Read(offset, destination);
                return;
            }
            long runStart = offset;
            int runDest = 0;
            int done = 0;
            while (done < destination.Length)
            {
                long pos = offset + done;
                long block = pos >> _blockShift;
                int within = (int)(pos & (BlockSize - 1));
                int n = Math.Min(BlockLength(block) - within, destination.Length - done);
                if (_overlay.TryGetValue(block, out int slot))
                {
                    if (done > runDest)
                        _base.Read(runStart, destination[runDest..done]);
                    Span<byte> part = destination.Slice(done, n);
                    if (slot == ZeroSlot)
                        part.Clear();
                    else
                        _overlayStore.Read(SlotPosition(slot) + within, part);
                    runDest = done + n;
                    runStart = pos + n;
                }
                done += n;
            }
            if (done > runDest)
                _base.Read(runStart, destination[runDest..done]);
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>
    /// Writes for the SVM: into the overlay before failover (speculative, dropped at the next commit), straight
    /// to the base after it.
    /// </summary>
    /// <param name="offset">Byte offset, with the range inside [0, <see cref="Size"/>).</param>
    /// <param name="source">The bytes.</param>
    /// <param name="fua">After failover: flush the base before returning. Before failover ignored (overlay data is never durable).</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the disk.</exception>
    /// <exception cref="InvalidOperationException">A commit failed and has not been retried.</exception>
    /// <exception cref="IOException">The base image or the spill file failed (part of the range may be written).</exception>
    /// <exception cref="ObjectDisposedException">The disk is disposed.</exception>
    public void Write(long offset, ReadOnlySpan<byte> source, bool fua = false)
    {
        CheckRange(offset, source.Length);
        _lock.EnterWriteLock();
        try
        {
            ThrowIfUnusable();
            if (_failedOver)
            {
                _base.Write(offset, source);
                if (fua)
                    _base.Flush();
                return;
            }
            WriteOverlay(offset, source, zero: false);
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>Makes a range read as zeroes for the SVM (overlay before failover, base after).</summary>
    /// <param name="offset">Byte offset, with the range inside [0, <see cref="Size"/>).</param>
    /// <param name="length">Bytes, 0 or more.</param>
    /// <exception cref="ArgumentOutOfRangeException">The range is outside the disk.</exception>
    /// <exception cref="InvalidOperationException">A commit failed and has not been retried.</exception>
    /// <exception cref="IOException">The base image or the spill file failed.</exception>
    /// <exception cref="ObjectDisposedException">The disk is disposed.</exception>
    public void WriteZeroes(long offset, long length)
    {
        CheckRange(offset, length);
        _lock.EnterWriteLock();
        try
        {
            ThrowIfUnusable();
            if (_failedOver)
            {
                _base.WriteZeroes(offset, length);
                return;
            }
            while (length > 0)
            {
                long block = offset >> _blockShift;
                int within = (int)(offset & (BlockSize - 1));
                int blockLen = BlockLength(block);
                int n = (int)Math.Min(blockLen - within, length);
                if (within == 0 && n == blockLen)
                {
                    if (_overlay.TryGetValue(block, out int slot) && slot != ZeroSlot)
                        FreeSlot(slot);
                    _overlay[block] = ZeroSlot;
                }
                else
                {
                    WriteOverlay(offset, default, zero: true, zeroLength: n);
                }
                offset += n;
                length -= n;
            }
            UpdateOverlayStats();
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Makes everything the SVM wrote durable: a no-op before failover (the overlay is speculative and dropped or
    /// merged later), an fsync of the base after it.
    /// </summary>
    /// <exception cref="IOException">The flush failed.</exception>
    /// <exception cref="ObjectDisposedException">The disk is disposed.</exception>
    public void Flush()
    {
        _lock.EnterWriteLock();
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_failedOver)
                _base.Flush();
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <inheritdoc/>
    public ValueTask ReadAsync(long offset, Memory<byte> destination)
    {
        try
        {
            Read(offset, destination.Span);
            return default;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, bool fua)
    {
        try
        {
            Write(offset, source.Span, fua);
            return default;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <inheritdoc/>
    public ValueTask FlushAsync()
    {
        try
        {
            Flush();
            return default;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <summary>Trims a range for the SVM; it reads as zeroes afterwards (same as <see cref="WriteZeroes"/>).</summary>
    /// <inheritdoc cref="IBlockDevice.TrimAsync"/>
    public ValueTask TrimAsync(long offset, long length)
    {
        try
        {
            WriteZeroes(offset, length);
            return default;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    /// <inheritdoc/>
    public ValueTask WriteZeroesAsync(long offset, long length, bool noHole)
    {
        try
        {
            WriteZeroes(offset, length);
            return default;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    // ---------------------------------------------------------------- replication side

    /// <summary>Buffers every record of one link payload (a sequence of whole records), in order.</summary>
    /// <param name="payload">The payload.</param>
    /// <returns>Records buffered.</returns>
    /// <exception cref="InvalidDataException">A record is malformed, truncated at the end of the payload, outside the
    /// disk, or a barrier's epoch does not increase. Records before it are buffered; the stream cannot continue.</exception>
    /// <exception cref="InvalidOperationException">The disk has failed over.</exception>
    /// <exception cref="IOException">The buffer's spill file failed.</exception>
    public int ReceivePayload(ReadOnlySpan<byte> payload)
    {
        int position = 0;
        int count = 0;
        while (position < payload.Length)
        {
            if (!DiskRecordCodec.TryRead(payload, ref position, out DiskRecord record))
                throw new InvalidDataException($"disk record truncated at the end of the payload ({payload.Length - position} bytes left)");
            Receive(record);
            count++;
        }
        return count;
    }

    /// <inheritdoc cref="ReceivePayload(ReadOnlySpan{byte})"/>
    public int ReceivePayload(ReadOnlySequence<byte> payload)
    {
        if (payload.IsSingleSegment)
            return ReceivePayload(payload.FirstSpan);
        if (payload.Length > int.MaxValue)
            throw new InvalidDataException("disk payload longer than 2 GiB");
        int length = (int)payload.Length;
        byte[] rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            payload.CopyTo(rented);
            return ReceivePayload(rented.AsSpan(0, length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>Buffers one PVM record: a write (invisible to the SVM until its epoch commits) or an epoch barrier.</summary>
    /// <param name="record">The record (its data is copied).</param>
    /// <exception cref="InvalidDataException">A write outside the disk, or a barrier whose epoch is not above every earlier barrier and the committed epoch.</exception>
    /// <exception cref="InvalidOperationException">The disk has failed over.</exception>
    /// <exception cref="IOException">The buffer's spill file failed (the record is not buffered).</exception>
    public void Receive(in DiskRecord record)
    {
        lock (_bufferLock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_failedOver)
                throw new InvalidOperationException("the disk has failed over; replication records are refused");
            if (record.Kind == DiskRecordKind.Barrier)
            {
                ulong floor = Math.Max(_committedEpoch, _lastBarrier);
                if (record.Epoch <= floor)
                    throw new InvalidDataException($"disk barrier epoch {record.Epoch} does not increase (last {floor})");
                _barriers.Add(new BufferedBarrier(record.Epoch, _entries.Count));
                Volatile.Write(ref _lastBarrier, record.Epoch);
                return;
            }
            if (record.Kind != DiskRecordKind.Write)
                throw new InvalidDataException($"unknown disk record kind {(byte)record.Kind}");
            if (record.Offset < 0 || record.Length <= 0 || record.Offset > Size - record.Length)
                throw new InvalidDataException($"disk write {record.Offset}+{record.Length} is outside the {Size}-byte disk");
            long dataPos = -1;
            if (!record.IsZeroRange)
            {
                if (record.Data.Length != record.Length)
                    throw new InvalidDataException($"disk write of {record.Length} bytes carries {record.Data.Length}");
                dataPos = _bufferDataEnd;
                _bufferStore.Write(dataPos, record.Data);
                _bufferDataEnd += record.Length;
            }
            _entries.Add(new BufferedWrite(record.Offset, record.Length, record.Flags, dataPos));
            UpdateBufferStats();
        }
    }

    /// <summary>
    /// Commits checkpoint <paramref name="epoch"/> (the SVM must be stopped): applies every buffered PVM write
    /// before that epoch's barrier to the base, in order, flushes the base, and drops the SVM's overlay. Writes
    /// after the barrier stay buffered for the next epoch; earlier barriers (checkpoints never committed) are
    /// passed over.
    /// </summary>
    /// <param name="epoch">An epoch whose barrier has been received and not yet committed.</param>
    /// <exception cref="InvalidOperationException">No barrier of that epoch is buffered; the disk has failed over; or an
    /// earlier failed commit of a later epoch is pending.</exception>
    /// <exception cref="DiskCommitException">Applying, flushing or re-buffering failed. The base may hold part of the epoch's
    /// writes; retry <see cref="Commit"/> (with this or a later epoch) or call <see cref="Failover"/>. SVM I/O throws until then.</exception>
    /// <exception cref="ObjectDisposedException">The disk is disposed.</exception>
    public void Commit(ulong epoch)
    {
        _lock.EnterWriteLock();
        try
        {
            lock (_bufferLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_failedOver)
                    throw new InvalidOperationException("the disk has failed over; there is nothing to commit");
                CommitCore(epoch);
            }
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Makes the SVM's disk the primary's (the PVM is gone): completes a failed commit first if one is pending,
    /// drops every buffered PVM write and barrier (all are after the last committed checkpoint — a partial checkpoint
    /// is discarded whole), writes the overlay into the base, flushes it and empties the overlay. From then on SVM
    /// writes go straight to the base and replication records are refused. Calling it again does nothing.
    /// </summary>
    /// <returns>What was dropped and merged.</returns>
    /// <exception cref="DiskCommitException">A pending commit could not be completed; nothing was dropped; call again.</exception>
    /// <exception cref="DiskFailoverException">Writing the overlay or flushing the base failed; the buffer is dropped, the overlay
    /// kept (reads still correct); call again to finish.</exception>
    /// <exception cref="ObjectDisposedException">The disk is disposed.</exception>
    public DiskFailoverResult Failover()
    {
        _lock.EnterWriteLock();
        try
        {
            lock (_bufferLock)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_failedOver)
                    return default;
                ulong completed = 0;
                if (_pendingCommit != 0)
                {
                    completed = _pendingCommit;
                    CommitCore(completed);
                }

                int droppedRecords = _entries.Count;
                long droppedBytes = _bufferDataEnd;
                int droppedBarriers = _barriers.Count;
                ClearBuffer();

                long merged = 0;
                string step = "merge";
                try
                {
                    foreach (KeyValuePair<long, int> kv in _overlay)
                    {
                        long start = kv.Key << _blockShift;
                        int len = BlockLength(kv.Key);
                        if (kv.Value == ZeroSlot)
                        {
                            _base.WriteZeroes(start, len);
                        }
                        else
                        {
                            Span<byte> block = _scratch.AsSpan(0, len);
                            _overlayStore.Read(SlotPosition(kv.Value), block);
                            _base.Write(start, block);
                            merged += len;
                        }
                    }
                    step = "flush";
                    _base.Flush();
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    throw new DiskFailoverException(step, e);
                }
                ClearOverlay();
                _failedOver = true;
                return new DiskFailoverResult(droppedRecords, droppedBytes, droppedBarriers, merged, completed);
            }
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>Deletes the spill files, releases pooled memory and, if owned, closes the base image. Call with no other call in flight.</summary>
    public void Dispose()
    {
        lock (_bufferLock)
        {
            if (_disposed)
                return;
            _disposed = true;
            _overlayStore.Dispose();
            _bufferStore.Dispose();
        }
        if (_ownsBase && _base is IDisposable d)
            d.Dispose();
        _lock.Dispose();
    }

    // ---------------------------------------------------------------- internals

    /// <summary>Test and diagnostics view: the spill file paths (null before a spill).</summary>
    internal (string? Overlay, string? Buffer) SpillPaths => (_overlayStore.SpillPath, _bufferStore.SpillPath);

    private void CommitCore(ulong epoch)
    {
        if (_pendingCommit != 0 && epoch < _pendingCommit)
            throw new InvalidOperationException($"the commit of epoch {_pendingCommit} failed and must be completed first (commit it or a later epoch)");
        int barrierIndex = _barriers.FindIndex(b => b.Epoch == epoch);
        if (barrierIndex < 0)
            throw new InvalidOperationException($"no disk barrier of epoch {epoch} is buffered (last received {_lastBarrier}, committed {_committedEpoch})");
        int count = _barriers[barrierIndex].EntryCount;
        _pendingCommit = epoch;

        string step = "apply";
        int index = 0;
        SpillStore? tail = null;
        try
        {
            byte[]? rented = null;
            try
            {
                for (; index < count; index++)
                {
                    BufferedWrite w = _entries[index];
                    if (w.DataPosition < 0)
                    {
                        _base.WriteZeroes(w.Offset, w.Length);
                    }
                    else if (_bufferStore.TryGetMemory(w.DataPosition, w.Length, out ReadOnlySpan<byte> data))
                    {
                        _base.Write(w.Offset, data);
                    }
                    else
                    {
                        rented ??= ArrayPool<byte>.Shared.Rent(DiskRecordCodec.MaxDataLength);
                        Span<byte> buf = rented.AsSpan(0, w.Length);
                        _bufferStore.Read(w.DataPosition, buf);
                        _base.Write(w.Offset, buf);
                    }
                }
                index = -1;
                step = "flush";
                _base.Flush();

                // Writes after the barrier move to a fresh store; the old one is untouched until this succeeds,
                // so a failure here can be retried from the start.
                step = "buffer";
                if (count < _entries.Count)
                {
                    tail = new SpillStore(_bufferMemoryLimit, _spillDirectory, "colo-buffer");
                    long pos = 0;
                    for (int i = count; i < _entries.Count; i++)
                    {
                        BufferedWrite w = _entries[i];
                        if (w.DataPosition < 0)
                            continue;
                        rented ??= ArrayPool<byte>.Shared.Rent(DiskRecordCodec.MaxDataLength);
                        Span<byte> buf = rented.AsSpan(0, w.Length);
                        _bufferStore.Read(w.DataPosition, buf);
                        tail.Write(pos, buf);
                        pos += w.Length;
                    }
                }
            }
            finally
            {
                if (rented != null)
                    ArrayPool<byte>.Shared.Return(rented);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            tail?.Dispose();
            throw new DiskCommitException(epoch, step, index, e);
        }

        // Success: nothing below can fail.
        if (tail == null)
        {
            _entries.Clear();
            _bufferStore.Clear();
            _bufferDataEnd = 0;
        }
        else
        {
            _entries.RemoveRange(0, count);
            long pos = 0;
            for (int i = 0; i < _entries.Count; i++)
            {
                BufferedWrite w = _entries[i];
                if (w.DataPosition >= 0)
                {
                    _entries[i] = w with { DataPosition = pos };
                    pos += w.Length;
                }
            }
            _bufferStore.Dispose();
            _bufferStore = tail;
            _bufferDataEnd = pos;
        }
        _barriers.RemoveRange(0, barrierIndex + 1);
        for (int i = 0; i < _barriers.Count; i++)
            _barriers[i] = _barriers[i] with { EntryCount = _barriers[i].EntryCount - count };
        if (_barriers.Count == 0)
            Volatile.Write(ref _lastBarrier, 0);
        ClearOverlay();
        Volatile.Write(ref _committedEpoch, epoch);
        _pendingCommit = 0;
        UpdateBufferStats();
    }

    private void WriteOverlay(long offset, ReadOnlySpan<byte> source, bool zero, int zeroLength = 0)
    {
        int remaining = zero ? zeroLength : source.Length;
        while (remaining > 0)
        {
            long block = offset >> _blockShift;
            int within = (int)(offset & (BlockSize - 1));
            int blockLen = BlockLength(block);
            int n = Math.Min(blockLen - within, remaining);
            bool found = _overlay.TryGetValue(block, out int slot);
            if (found && slot != ZeroSlot)
            {
                WritePart(SlotPosition(slot) + within, source, n, zero);
            }
            else if (!zero && within == 0 && n == blockLen)
            {
                slot = AllocateSlot();
                try
                {
                    _overlayStore.Write(SlotPosition(slot), source[..n]);
                }
                catch
                {
                    FreeSlot(slot);
                    throw;
                }
                _overlay[block] = slot;
            }
            else
            {
                Span<byte> tmp = _scratch.AsSpan(0, blockLen);
                if (within != 0 || n != blockLen)
                {
                    if (found)
                        tmp.Clear();
                    else
                        _base.Read(block << _blockShift, tmp);
                }
                if (zero)
                    tmp.Slice(within, n).Clear();
                else
                    source[..n].CopyTo(tmp[within..]);
                slot = AllocateSlot();
                try
                {
                    _overlayStore.Write(SlotPosition(slot), tmp);
                }
                catch
                {
                    FreeSlot(slot);
                    throw;
                }
                _overlay[block] = slot;
            }
            if (!zero)
                source = source[n..];
            offset += n;
            remaining -= n;
        }
        UpdateOverlayStats();
    }

    private void WritePart(long position, ReadOnlySpan<byte> source, int n, bool zero)
    {
        if (!zero)
        {
            _overlayStore.Write(position, source[..n]);
            return;
        }
        Span<byte> tmp = _scratch.AsSpan(0, n);
        tmp.Clear();
        _overlayStore.Write(position, tmp);
    }

    private int AllocateSlot()
    {
        if (_freeSlots.TryPop(out int slot))
            return slot;
        return _slotCount++;
    }

    private void FreeSlot(int slot) => _freeSlots.Push(slot);

    private long SlotPosition(int slot) => (long)slot << _blockShift;

    private int BlockLength(long block) => (int)Math.Min(BlockSize, Size - (block << _blockShift));

    private void ClearOverlay()
    {
        _overlay.Clear();
        _freeSlots.Clear();
        _slotCount = 0;
        _overlayStore.Clear();
        UpdateOverlayStats();
    }

    private void ClearBuffer()
    {
        _entries.Clear();
        _barriers.Clear();
        _bufferStore.Clear();
        _bufferDataEnd = 0;
        Volatile.Write(ref _lastBarrier, 0);
        UpdateBufferStats();
    }

    private void UpdateOverlayStats()
    {
        long bytes = (long)(_slotCount - _freeSlots.Count) << _blockShift;
        Volatile.Write(ref _overlayBytes, bytes);
        Volatile.Write(ref _overlaySpilled, _overlayStore.SpilledBytes);
        if (bytes > _overlayBytesMax)
            Volatile.Write(ref _overlayBytesMax, bytes);
    }

    private void UpdateBufferStats()
    {
        long bytes = _bufferDataEnd;
        Volatile.Write(ref _bufferBytes, bytes);
        Volatile.Write(ref _bufferSpilled, _bufferStore.SpilledBytes);
        Volatile.Write(ref _bufferedRecords, _entries.Count);
        if (bytes > _bufferBytesMax)
            Volatile.Write(ref _bufferBytesMax, bytes);
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset > Size - length)
            ThrowRange(offset, length);
    }

    [DoesNotReturn]
    private void ThrowRange(long offset, long length) =>
        throw new ArgumentOutOfRangeException(nameof(offset), $"range {offset}+{length} is outside the {Size}-byte disk");

    private void ThrowIfUnusable()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ulong pending = Volatile.Read(ref _pendingCommit);
        if (pending != 0)
            throw new InvalidOperationException($"the disk commit of epoch {pending} failed; retry Commit or call Failover first");
    }

    private readonly record struct BufferedWrite(long Offset, int Length, DiskWriteFlags Flags, long DataPosition);

    private readonly record struct BufferedBarrier(ulong Epoch, int EntryCount);
}
