using Colo.Disk;
using Colo.Nbd;

namespace Colo.Node.Primary;

/// <summary>
/// The PVM's disk as our NBD server serves it: every write, write-zeroes and trim is applied to the local image and,
/// while forwarding is on, appended to the replication stream in the same order (COLO disk manager, primary side;
/// docs/DISK.md). Local application and forwarding happen under one lock, so the stream's order is the order the
/// writes hit the image, even for overlapping writes the guest issued concurrently. When the forward queue is full
/// the write waits (backpressure on guest I/O) until the link drains it or forwarding is switched off.
/// </summary>
internal sealed class ForwardingBlockDevice : IBlockDevice
{
    private readonly RawFileBlockDevice _local;
    private readonly DiskWriteForwarder _forwarder;
    private readonly SemaphoreSlim _order = new(1, 1);
    private volatile bool _forwarding;
    private long _forwardedWrites;
    private long _forwardedBytes;

    public ForwardingBlockDevice(RawFileBlockDevice local, DiskWriteForwarder forwarder)
    {
        _local = local;
        _forwarder = forwarder;
    }

    public long Size => _local.Size;

    public bool IsReadOnly => false;

    /// <summary>Write records forwarded since forwarding started.</summary>
    public long ForwardedWrites => Volatile.Read(ref _forwardedWrites);

    /// <summary>Bytes of write data (and zeroed/trimmed ranges) forwarded.</summary>
    public long ForwardedBytes => Volatile.Read(ref _forwardedBytes);

    /// <summary>
    /// Starts forwarding. Every write that completes locally after this returns is forwarded; one that completed before
    /// is not (so a copy of the image read after this call, plus the forwarded writes, equals the image).
    /// </summary>
    public async Task StartForwardingAsync(CancellationToken ct)
    {
        await _order.WaitAsync(ct);
        try
        {
            _forwarder.Clear();
            _forwarding = true;
        }
        finally
        {
            _order.Release();
        }
    }

    /// <summary>Stops forwarding and drops what is queued; writes waiting for queue space go on (nothing is forwarded any more). Never blocks.</summary>
    public void StopForwarding()
    {
        _forwarding = false;
        _forwarder.Clear();
    }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer) => _local.ReadAsync(offset, buffer);

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, bool fua)
    {
        await _order.WaitAsync();
        try
        {
            await _local.WriteAsync(offset, data, fua: false);
            if (_forwarding)
            {
                while (_forwarding && !_forwarder.TryForwardWrite(offset, data.Span, fua))
                    await WaitForSpaceAsync(_forwarder.GetEncodedWriteSize(data.Length));
                Counted(data.Length);
            }
        }
        finally
        {
            _order.Release();
        }
        if (fua)
            await _local.FlushAsync();
    }

    public ValueTask FlushAsync() => _local.FlushAsync();

    public async ValueTask TrimAsync(long offset, long length)
    {
        await _order.WaitAsync();
        try
        {
            await _local.TrimAsync(offset, length);
            if (_forwarding)
            {
                while (_forwarding && !_forwarder.TryForwardTrim(offset, length))
                    await WaitForSpaceAsync(RangeRecords(length));
                Counted(length);
            }
        }
        finally
        {
            _order.Release();
        }
    }

    public async ValueTask WriteZeroesAsync(long offset, long length, bool noHole)
    {
        await _order.WaitAsync();
        try
        {
            await _local.WriteZeroesAsync(offset, length, noHole);
            if (_forwarding)
            {
                while (_forwarding && !_forwarder.TryForwardWriteZeroes(offset, length, fua: false, noHole))
                    await WaitForSpaceAsync(RangeRecords(length));
                Counted(length);
            }
        }
        finally
        {
            _order.Release();
        }
    }

    private void Counted(long bytes)
    {
        Interlocked.Increment(ref _forwardedWrites);
        Interlocked.Add(ref _forwardedBytes, bytes);
    }

    private static long RangeRecords(long length) =>
        DiskRecordCodec.RangeRecordSize * (1 + length / DiskRecordCodec.MaxRangeLength);

    /// <summary>Waits for queue space, in slices of 100 ms so that switching forwarding off releases the writer.</summary>
    private async Task WaitForSpaceAsync(long bytes)
    {
        using var slice = new CancellationTokenSource(TimeSpan.FromMilliseconds(100));
        try
        {
            await _forwarder.WaitForSpaceAsync(bytes, slice.Token);
        }
        catch (OperationCanceledException)
        {
        }
    }
}
