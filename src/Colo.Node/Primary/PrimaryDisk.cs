using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Colo.Disk;
using Colo.Link;
using Colo.Nbd;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Primary;

/// <summary>
/// The primary's disk manager: serves the PVM's raw image over our NBD server (unix socket), copies the image to the
/// secondary when protection starts (initial sync) and then forwards every guest write in order over the replication
/// link, with an epoch barrier per checkpoint (docs/DISK.md).
/// </summary>
internal sealed class PrimaryDisk : IAsyncDisposable
{
    /// <summary>Initial-sync chunk, bytes. All-zero chunks are not sent (the secondary's new base reads as zeroes).</summary>
    public const int SyncChunkBytes = 1024 * 1024;

    private readonly RawFileBlockDevice _image;
    private readonly DiskWriteForwarder _forwarder;
    private readonly ForwardingBlockDevice _device;
    private readonly NbdServer _server;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private int _disposed;
    private readonly CancellationTokenSource _senderStop = new();
    private readonly SemaphoreSlim _barrierSent = new(0);
    private Task _serving = Task.CompletedTask;
    private Task _sender = Task.CompletedTask;
    private ulong _sentBarrier;
    private volatile string? _senderError;

    private PrimaryDisk(RawFileBlockDevice image, long queueBytes, ILogger log, ILogger nbdLog)
    {
        _image = image;
        _forwarder = new DiskWriteForwarder(new DiskWriteForwarderOptions { CapacityBytes = queueBytes });
        _device = new ForwardingBlockDevice(image, _forwarder);
        _server = new NbdServer(_device, "disk", nbdLog);
        _log = log;
    }

    /// <summary>The device the NBD server serves (tests write through it directly).</summary>
    internal IBlockDevice Device => _device;

    /// <summary>NBD export name QEMU must ask for.</summary>
    public string ExportName => _server.ExportName;

    /// <summary>Size of the disk in bytes.</summary>
    public long Size => _image.Size;

    /// <summary>Opens <paramref name="imagePath"/> (must exist) and starts serving it on <paramref name="socketPath"/>.</summary>
    /// <exception cref="IOException">The image cannot be opened or the socket bound.</exception>
    public static PrimaryDisk Start(string imagePath, string socketPath, long queueBytes, ILoggerFactory loggers)
    {
        if (!File.Exists(imagePath))
            throw new IOException($"disk_image {imagePath} does not exist");
        RawFileBlockDevice image;
        try
        {
            image = RawFileBlockDevice.Open(imagePath, exclusive: true);
        }
        catch (IOException e)
        {
            throw new IOException($"disk_image {imagePath} cannot be opened exclusively (is another daemon using it?): {e.Message}", e);
        }
        var disk = new PrimaryDisk(image, queueBytes, loggers.CreateLogger("disk"), loggers.CreateLogger("nbd"));
        try
        {
            disk._serving = disk._server.ServeUnixAsync(socketPath, disk._stop.Token);
        }
        catch
        {
            image.Dispose();
            throw;
        }
        return disk;
    }

    /// <summary>
    /// Starts forwarding and copies the image to the secondary while the PVM runs: forwarding starts before the copy,
    /// the writes it forwards are applied after the copy (at the first checkpoint), and replaying them is idempotent,
    /// so the result equals the PVM's disk at that checkpoint. Then starts the sender that drains the forward queue.
    /// </summary>
    /// <returns>Bytes of data sent (non-zero chunks).</returns>
    public async Task<long> InitialSyncAsync(LinkConnection link, DiskStatus status, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        await _device.StartForwardingAsync(ct);
        byte[] head = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(head, (ulong)Size);
        await link.SendAsync(MessageType.DiskSyncBegin, 0, head, ct);
        // Writes forwarded since forwarding started wait in the queue; the sender starts only after DiskSyncBegin is on
        // the link, so the secondary never sees writes before the sync has begun.
        _sender = Task.Run(() => SendLoopAsync(link, _senderStop.Token), CancellationToken.None);
        byte[] chunk = ArrayPool<byte>.Shared.Rent(SyncChunkBytes);
        long sent = 0;
        try
        {
            for (long off = 0; off < Size; off += SyncChunkBytes)
            {
                int len = (int)Math.Min(SyncChunkBytes, Size - off);
                await _image.ReadAsync(off, chunk.AsMemory(0, len));
                if (!chunk.AsSpan(0, len).ContainsAnyExcept((byte)0))
                    continue;
                BinaryPrimitives.WriteUInt64BigEndian(head, (ulong)off);
                await link.SendAsync(MessageType.DiskSyncData, 0, head, chunk.AsMemory(0, len), ct);
                sent += len;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
        BinaryPrimitives.WriteUInt64BigEndian(head, (ulong)sent);
        await link.SendAsync(MessageType.DiskSyncEnd, 0, head, ct);
        status.SyncBytes = sent;
        status.SyncMs = Math.Round(sw.Elapsed.TotalMilliseconds, 1);
        _log.LogInformation("disk initial sync: {MiB:F1} MiB of {Size} MiB sent in {Ms:F0} ms",
            sent / 1048576.0, Size / 1048576, sw.Elapsed.TotalMilliseconds);
        return sent;
    }

    /// <summary>
    /// Marks checkpoint <paramref name="epoch"/>'s barrier in the write stream. Call with the PVM stopped: QEMU has then
    /// drained its disk I/O and every write of the epoch is in the stream before the barrier.
    /// </summary>
    public void MarkBarrier(ulong epoch) => _forwarder.MarkBarrier(epoch);

    /// <summary>Waits until the sender has put checkpoint <paramref name="epoch"/>'s barrier (and so every write before it) on the link.</summary>
    /// <exception cref="TimeoutException">The barrier was not sent within <paramref name="timeout"/>.</exception>
    /// <exception cref="IOException">The sender stopped (link failure).</exception>
    public async Task WaitBarrierSentAsync(ulong epoch, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (Volatile.Read(ref _sentBarrier) < epoch)
        {
            if (_senderError is { } err)
                throw new IOException("disk write stream stopped: " + err);
            var left = timeout - deadline.Elapsed;
            if (left <= TimeSpan.Zero)
                throw new TimeoutException($"disk writes up to checkpoint {epoch} not sent within {timeout.TotalMilliseconds:F0} ms ({_forwarder.QueuedBytes} bytes queued)");
            await _barrierSent.WaitAsync(left < TimeSpan.FromMilliseconds(100) ? left : TimeSpan.FromMilliseconds(100), ct);
        }
    }

    /// <summary>The secondary is gone: stop forwarding and drop the queue; guest writes go on locally.</summary>
    public void StopReplication()
    {
        if (Volatile.Read(ref _disposed) != 0)
            return;
        _device.StopForwarding();
        _senderStop.Cancel();
    }

    /// <summary>Copies the forwarding figures into <paramref name="status"/>.</summary>
    public void Report(DiskStatus status)
    {
        status.SizeBytes = Size;
        status.ForwardedWrites = _device.ForwardedWrites;
        status.ForwardedBytes = _device.ForwardedBytes;
        status.QueueBytesMax = _forwarder.PeakQueuedBytes;
    }

    private async Task SendLoopAsync(LinkConnection link, CancellationToken ct)
    {
        try
        {
            while (true)
            {
                using var payload = await _forwarder.TakePayloadAsync(ct);
                await link.SendAsync(MessageType.DiskWrites, 0, payload.Memory, ct);
                if (payload.BarrierEpoch > 0)
                {
                    Volatile.Write(ref _sentBarrier, Math.Max(Volatile.Read(ref _sentBarrier), payload.BarrierEpoch));
                    _barrierSent.Release();
                }
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException or LinkClosedException or InvalidOperationException)
        {
            _senderError = e.Message;
            _barrierSent.Release();
            if (!ct.IsCancellationRequested)
                _log.LogWarning("disk write stream stopped: {Error}", e.Message);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _device.StopForwarding();
        _senderStop.Cancel();
        _stop.Cancel();
        await _sender.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
        await _serving.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
        _forwarder.Dispose();
        _image.Dispose();
        _stop.Dispose();
        _senderStop.Dispose();
    }
}
