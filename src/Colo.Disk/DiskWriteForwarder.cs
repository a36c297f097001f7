using System.Buffers;

namespace Colo.Disk;

/// <summary>Settings of a <see cref="DiskWriteForwarder"/>.</summary>
public sealed class DiskWriteForwarderOptions
{
    /// <summary>
    /// Most encoded bytes held (queued plus taken and not yet disposed); a write that would go beyond is refused
    /// (<c>Try</c> methods return false, <c>Async</c> methods wait). Default 64 MiB; at least <see cref="PayloadBytes"/>.
    /// Barriers are always accepted and may exceed it by their 20 bytes each.
    /// </summary>
    public long CapacityBytes { get; init; } = 64L * 1024 * 1024;

    /// <summary>
    /// Largest payload handed out, in bytes (1 KiB to 16 MiB; default 1 MiB). Writes with more data than fits one
    /// payload are split into several records.
    /// </summary>
    public int PayloadBytes { get; init; } = 1024 * 1024;
}

/// <summary>
/// Primary side of disk replication: turns the PVM's writes, in the order they were applied to the local image,
/// into the record stream of <see cref="DiskRecordCodec"/>, cut into payloads for link messages, with an epoch
/// barrier at each checkpoint (<see cref="MarkBarrier"/>). Memory is bounded by
/// <see cref="DiskWriteForwarderOptions.CapacityBytes"/>: when full, <c>TryForward*</c> return false and the node
/// decides (wait with <see cref="WaitForSpaceAsync"/> — backpressure on the guest's I/O — or give up on the
/// secondary and <see cref="Clear"/>).
/// <para>
/// Thread-safety: all members are thread-safe; records enter the stream in the order the calls take the internal
/// lock, so a caller that applies overlapping writes concurrently must forward them in the order it applied them
/// (e.g. forward while still holding its own per-range lock). Payloads must be taken by a single consumer (the
/// link sender), which sends them in the order taken and disposes each after sending.
/// </para>
/// </summary>
public sealed class DiskWriteForwarder : IDisposable
{
    private readonly object _sync = new();
    private readonly Queue<DiskPayload> _sealed = new();
    private readonly int _payloadBytes;
    private readonly int _maxDataPerRecord;
    private DiskPayload? _current;
    private long _heldBytes;
    private long _peakBytes;
    private ulong _lastBarrier;
    private long _refused;
    private TaskCompletionSource? _spaceWaiter;
    private TaskCompletionSource? _dataWaiter;
    private bool _disposed;

    /// <summary>Creates an empty forwarder.</summary>
    /// <param name="options">Capacity and payload size; null for the defaults.</param>
    /// <exception cref="ArgumentOutOfRangeException">Payload size outside 1 KiB..16 MiB, or capacity below it.</exception>
    public DiskWriteForwarder(DiskWriteForwarderOptions? options = null)
    {
        options ??= new DiskWriteForwarderOptions();
        if (options.PayloadBytes is < 1024 or > 16 * 1024 * 1024)
            throw new ArgumentOutOfRangeException(nameof(options), options.PayloadBytes, "PayloadBytes must be 1024..16777216");
        if (options.CapacityBytes < options.PayloadBytes)
            throw new ArgumentOutOfRangeException(nameof(options), options.CapacityBytes, "CapacityBytes must be at least PayloadBytes");
        _payloadBytes = options.PayloadBytes;
        Capacity = options.CapacityBytes;
        _maxDataPerRecord = Math.Min(DiskRecordCodec.MaxDataLength, _payloadBytes - DiskRecordCodec.Overhead);
    }

    /// <summary>Most encoded bytes held before writes are refused.</summary>
    public long Capacity { get; }

    /// <summary>Encoded bytes held now: queued payloads plus payloads taken and not yet disposed.</summary>
    public long QueuedBytes => Volatile.Read(ref _heldBytes);

    /// <summary>Largest <see cref="QueuedBytes"/> seen.</summary>
    public long PeakQueuedBytes => Volatile.Read(ref _peakBytes);

    /// <summary>The epoch of the last <see cref="MarkBarrier"/>, 0 before the first.</summary>
    public ulong LastBarrierEpoch => Volatile.Read(ref _lastBarrier);

    /// <summary>Writes refused because the queue was full (a count of calls).</summary>
    public long RefusedWrites => Volatile.Read(ref _refused);

    /// <summary>Whether a payload is waiting to be taken.</summary>
    public bool HasPayload
    {
        get
        {
            lock (_sync)
                return _sealed.Count > 0 || _current is { Length: > 0 };
        }
    }

    /// <summary>Encoded bytes a write of <paramref name="dataLength"/> bytes takes in the stream (its records and their overheads).</summary>
    /// <param name="dataLength">Data bytes, 0 or more.</param>
    /// <returns>The byte count; 0 for 0.</returns>
    public long GetEncodedWriteSize(long dataLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(dataLength);
        long records = (dataLength + _maxDataPerRecord - 1) / _maxDataPerRecord;
        return dataLength + records * DiskRecordCodec.Overhead;
    }

    /// <summary>Appends a write already applied to the local image, split into records of at most one payload each.</summary>
    /// <param name="offset">Byte offset on the disk, 0 or more.</param>
    /// <param name="data">The written bytes (copied); empty does nothing.</param>
    /// <param name="fua">Whether the guest asked for force-unit-access.</param>
    /// <returns><c>false</c> if the queue lacks room for all of it (nothing appended; <see cref="RefusedWrites"/> counts it).</returns>
    /// <exception cref="ArgumentOutOfRangeException">Offset negative, the range overflows, or the write's encoded size exceeds <see cref="Capacity"/> (it could never fit).</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is disposed.</exception>
    public bool TryForwardWrite(long offset, ReadOnlySpan<byte> data, bool fua)
    {
        if (data.IsEmpty)
            return true;
        CheckRange(offset, data.Length);
        long total = GetEncodedWriteSize(data.Length);
        CheckFits(total);
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_heldBytes + total > Capacity)
            {
                _refused++;
                return false;
            }
            while (!data.IsEmpty)
            {
                int n = Math.Min(data.Length, _maxDataPerRecord);
                DiskPayload chunk = ChunkFor(DiskRecordCodec.Overhead + n);
                int pos = chunk.Length;
                DiskRecordCodec.TryWriteWrite(chunk.Buffer, ref pos, offset, data[..n], fua);
                chunk.Appended(pos, 0);
                offset += n;
                data = data[n..];
            }
            Added(total);
        }
        return true;
    }

    /// <summary>Appends a write-zeroes already applied locally (NBD WRITE_ZEROES).</summary>
    /// <param name="offset">Byte offset, 0 or more.</param>
    /// <param name="length">Bytes; 0 does nothing. Ranges over 1 GiB become several records.</param>
    /// <param name="fua">Whether the guest asked for force-unit-access.</param>
    /// <param name="noHole">Whether the guest asked to keep the range allocated.</param>
    /// <returns><c>false</c> if the queue lacks room (nothing appended).</returns>
    /// <exception cref="ArgumentOutOfRangeException">Negative offset or length, or the range overflows.</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is disposed.</exception>
    public bool TryForwardWriteZeroes(long offset, long length, bool fua, bool noHole) =>
        TryForwardRange(offset, length, DiskWriteFlags.Zero | (fua ? DiskWriteFlags.Fua : 0) | (noHole ? DiskWriteFlags.NoHole : 0));

    /// <summary>Appends a trim already applied locally (NBD TRIM). The secondary makes the range read as zeroes, so the local image must too.</summary>
    /// <param name="offset">Byte offset, 0 or more.</param>
    /// <param name="length">Bytes; 0 does nothing. Ranges over 1 GiB become several records.</param>
    /// <returns><c>false</c> if the queue lacks room (nothing appended).</returns>
    /// <exception cref="ArgumentOutOfRangeException">Negative offset or length, or the range overflows.</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is disposed.</exception>
    public bool TryForwardTrim(long offset, long length) => TryForwardRange(offset, length, DiskWriteFlags.Trim);

    /// <summary>Appends a write, waiting while the queue is full (backpressure).</summary>
    /// <param name="offset">Byte offset, 0 or more.</param>
    /// <param name="data">The written bytes (copied before the task completes; keep them unchanged until then).</param>
    /// <param name="fua">Whether the guest asked for force-unit-access.</param>
    /// <param name="cancellationToken">Stops the wait (nothing appended).</param>
    /// <exception cref="ArgumentOutOfRangeException">See <see cref="TryForwardWrite"/>.</exception>
    /// <exception cref="OperationCanceledException">Cancelled while waiting.</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is or gets disposed.</exception>
    public async ValueTask ForwardWriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua, CancellationToken cancellationToken = default)
    {
        while (!TryForwardWrite(offset, data.Span, fua))
            await WaitForSpaceAsync(GetEncodedWriteSize(data.Length), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Completes when at least <paramref name="bytes"/> of room are free (at once if they are).</summary>
    /// <param name="bytes">Encoded bytes needed, 0 to <see cref="Capacity"/>.</param>
    /// <param name="cancellationToken">Stops the wait.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="bytes"/> is negative or above <see cref="Capacity"/>.</exception>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is or gets disposed.</exception>
    public async ValueTask WaitForSpaceAsync(long bytes, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        CheckFits(bytes);
        while (true)
        {
            Task wait;
            lock (_sync)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (_heldBytes + bytes <= Capacity)
                    return;
                wait = (_spaceWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Appends the barrier of checkpoint <paramref name="epoch"/>: every record before it belongs to that checkpoint.
    /// Call with the PVM stopped, after its last write of the epoch was forwarded. Always accepted, even when full.
    /// </summary>
    /// <param name="epoch">The checkpoint's epoch, above every earlier barrier's.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="epoch"/> does not increase.</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is disposed.</exception>
    public void MarkBarrier(ulong epoch)
    {
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (epoch <= _lastBarrier)
                throw new ArgumentOutOfRangeException(nameof(epoch), epoch, $"barrier epoch must exceed the last one ({_lastBarrier})");
            DiskPayload chunk = ChunkFor(DiskRecordCodec.BarrierSize);
            int pos = chunk.Length;
            DiskRecordCodec.TryWriteBarrier(chunk.Buffer, ref pos, epoch);
            chunk.Appended(pos, epoch);
            Volatile.Write(ref _lastBarrier, epoch);
            Added(DiskRecordCodec.BarrierSize);
        }
    }

    /// <summary>Takes the oldest payload (whole records, in stream order), if any.</summary>
    /// <param name="payload">The payload; send it, then dispose it to free its room. Null when <c>false</c>.</param>
    /// <returns><c>false</c> if nothing is queued.</returns>
    /// <exception cref="ObjectDisposedException">The forwarder is disposed.</exception>
    public bool TryTakePayload(out DiskPayload? payload)
    {
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_sealed.Count > 0)
            {
                payload = _sealed.Dequeue();
            }
            else if (_current is { Length: > 0 })
            {
                payload = _current;
                _current = null;
            }
            else
            {
                payload = null;
                return false;
            }
            return true;
        }
    }

    /// <summary>Waits for and takes the oldest payload.</summary>
    /// <param name="cancellationToken">Stops the wait.</param>
    /// <returns>The payload; send it, then dispose it.</returns>
    /// <exception cref="OperationCanceledException">Cancelled.</exception>
    /// <exception cref="ObjectDisposedException">The forwarder is or gets disposed.</exception>
    public async ValueTask<DiskPayload> TakePayloadAsync(CancellationToken cancellationToken = default)
    {
        while (true)
        {
            Task wait;
            lock (_sync)
            {
                if (TryTakePayload(out DiskPayload? payload))
                    return payload!;
                wait = (_dataWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
            }
            await wait.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Drops every queued payload not yet taken (the secondary is lost; re-protection starts with a full sync).
    /// Payloads already taken stay valid and count until disposed. Barrier epochs keep increasing.
    /// </summary>
    /// <returns>Encoded bytes dropped.</returns>
    public long Clear()
    {
        long dropped = 0;
        lock (_sync)
        {
            if (_disposed)
                return 0;
            while (_sealed.TryDequeue(out DiskPayload? p))
                dropped += p.Drop();
            if (_current != null)
            {
                dropped += _current.Drop();
                _current = null;
            }
            _heldBytes -= dropped;
            WakeSpace();
        }
        return dropped;
    }

    /// <summary>Drops everything queued and fails pending waits with <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose()
    {
        TaskCompletionSource? space, data;
        lock (_sync)
        {
            if (_disposed)
                return;
            Clear();
            _disposed = true;
            space = _spaceWaiter;
            data = _dataWaiter;
            _spaceWaiter = _dataWaiter = null;
        }
        space?.TrySetException(new ObjectDisposedException(nameof(DiskWriteForwarder)));
        data?.TrySetException(new ObjectDisposedException(nameof(DiskWriteForwarder)));
    }

    internal void Release(int bytes)
    {
        lock (_sync)
        {
            _heldBytes -= bytes;
            WakeSpace();
        }
    }

    private bool TryForwardRange(long offset, long length, DiskWriteFlags flags)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (length == 0)
            return true;
        CheckRange(offset, length);
        long records = (length + DiskRecordCodec.MaxRangeLength - 1) / DiskRecordCodec.MaxRangeLength;
        long total = records * DiskRecordCodec.RangeRecordSize;
        CheckFits(total);
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_heldBytes + total > Capacity)
            {
                _refused++;
                return false;
            }
            while (length > 0)
            {
                int n = (int)Math.Min(length, DiskRecordCodec.MaxRangeLength);
                DiskPayload chunk = ChunkFor(DiskRecordCodec.RangeRecordSize);
                int pos = chunk.Length;
                DiskRecordCodec.TryWriteRange(chunk.Buffer, ref pos, offset, n, flags);
                chunk.Appended(pos, 0);
                offset += n;
                length -= n;
            }
            Added(total);
        }
        return true;
    }

    private DiskPayload ChunkFor(int recordBytes)
    {
        if (_current != null && _current.Buffer.Length - _current.Length >= recordBytes)
            return _current;
        if (_current != null)
            _sealed.Enqueue(_current);
        _current = new DiskPayload(this, ArrayPool<byte>.Shared.Rent(_payloadBytes), _payloadBytes);
        return _current;
    }

    private void Added(long bytes)
    {
        _heldBytes += bytes;
        if (_heldBytes > _peakBytes)
            Volatile.Write(ref _peakBytes, _heldBytes);
        TaskCompletionSource? data = _dataWaiter;
        _dataWaiter = null;
        data?.TrySetResult();
    }

    private void WakeSpace()
    {
        TaskCompletionSource? space = _spaceWaiter;
        _spaceWaiter = null;
        space?.TrySetResult();
    }

    private static void CheckRange(long offset, long length)
    {
        if (offset < 0 || offset > long.MaxValue - length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, "offset is negative or the range overflows");
    }

    private void CheckFits(long bytes)
    {
        if (bytes > Capacity)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"{bytes} encoded bytes can never fit the forwarder's capacity of {Capacity}");
    }
}

/// <summary>
/// One payload of the disk write stream: whole records in stream order, to be sent as one link message.
/// Dispose it after sending (or on giving up) to return its pooled buffer and free its room in the forwarder.
/// </summary>
public sealed class DiskPayload : IDisposable
{
    private readonly DiskWriteForwarder _owner;
    private byte[]? _buffer;
    private int _accounted;
    private int _disposed;

    internal DiskPayload(DiskWriteForwarder owner, byte[] buffer, int capacity)
    {
        _owner = owner;
        _buffer = buffer;
        Capacity = capacity;
    }

    /// <summary>The encoded records (valid until <see cref="Dispose"/>).</summary>
    /// <exception cref="ObjectDisposedException">The payload is disposed.</exception>
    public ReadOnlyMemory<byte> Memory
    {
        get
        {
            ObjectDisposedException.ThrowIf(_buffer == null, this);
            return _buffer.AsMemory(0, Length);
        }
    }

    /// <summary>Bytes in the payload.</summary>
    public int Length { get; private set; }

    /// <summary>Records in the payload.</summary>
    public int RecordCount { get; private set; }

    /// <summary>The epoch of the last barrier in the payload, or 0 if it has none.</summary>
    public ulong BarrierEpoch { get; private set; }

    internal int Capacity { get; }

    internal Span<byte> Buffer => _buffer.AsSpan(0, Capacity);

    internal void Appended(int newLength, ulong barrier)
    {
        _accounted += newLength - Length;
        Length = newLength;
        RecordCount++;
        if (barrier != 0)
            BarrierEpoch = barrier;
    }

    /// <summary>Returns the buffer without touching the owner's accounting; returns the bytes it accounted for.</summary>
    internal int Drop()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return 0;
        ReturnBuffer();
        return _accounted;
    }

    /// <summary>Returns the pooled buffer and frees the payload's room in the forwarder. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        ReturnBuffer();
        _owner.Release(_accounted);
    }

    private void ReturnBuffer()
    {
        byte[]? b = Interlocked.Exchange(ref _buffer, null);
        if (b != null)
            ArrayPool<byte>.Shared.Return(b);
    }
}
