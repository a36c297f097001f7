using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using Colo.Disk;
using Colo.Nbd;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Secondary;

/// <summary>
/// The secondary's disk manager: receives the initial sync into a fresh base image, buffers the PVM's forwarded
/// writes, serves the SVM's view (overlay over base, a <see cref="SecondaryDisk"/>) over our NBD server, commits at
/// each checkpoint and merges the overlay at failover (docs/DISK.md). Messages arrive on the link's receive loop, one
/// at a time; protocol violations throw <see cref="InvalidDataException"/> (the node closes the link).
/// </summary>
internal sealed class ReplicaDisk : IAsyncDisposable
{
    private readonly NodeConfig _cfg;
    private readonly string _socketPath;
    private readonly ILogger _log;
    private readonly ILogger _nbdLog;
    private readonly CancellationTokenSource _stop = new();
    private int _disposed;
    private readonly Stopwatch _syncClock = new();
    private RawFileImage? _base;
    private SecondaryDisk? _disk;
    private Task _serving = Task.CompletedTask;
    private long _syncBytes;
    private double _syncMs;
    private DiskFailoverResult? _failover;

    public ReplicaDisk(NodeConfig cfg, string socketPath, ILoggerFactory loggers)
    {
        _cfg = cfg;
        _socketPath = socketPath;
        _log = loggers.CreateLogger("disk");
        _nbdLog = loggers.CreateLogger("nbd");
    }

    /// <summary>The SVM's view served over NBD (null before the sync begins); tests use it directly.</summary>
    internal SecondaryDisk? Device => _disk;

    /// <summary>True once the initial sync has ended: checkpoints may be committed.</summary>
    public bool Synced { get; private set; }

    /// <summary>True once the base exists and the SVM's NBD export is served (an SVM may start).</summary>
    public bool Serving => _disk != null;

    /// <summary>Sync start: (re)creates the base image of the announced size, all zeroes, and starts serving it.</summary>
    public void BeginSync(ReadOnlySequence<byte> payload)
    {
        if (_disk != null)
            throw new InvalidDataException("disk sync started twice");
        long size = (long)ReadU64(payload, "disk sync begin");
        if (size <= 0 || size > (1L << 50))
            throw new InvalidDataException($"disk size {size} is out of range");
        _syncClock.Start();
        _base = RawFileImage.CreateExclusive(_cfg.DiskImage!, size);
        _disk = new SecondaryDisk(_base, new SecondaryDiskOptions
        {
            BufferMemoryLimit = (long)_cfg.DiskBufferMemoryMib << 20,
            OverlayMemoryLimit = (long)_cfg.DiskOverlayMemoryMib << 20,
            SpillDirectory = _cfg.RunDirectory,
        }, ownsBaseImage: true);
        _serving = new NbdServer(_disk, "disk", _nbdLog).ServeUnixAsync(_socketPath, _stop.Token);
        _log.LogInformation("disk sync started: base image {Path}, {MiB} MiB", _cfg.DiskImage, size >> 20);
    }

    /// <summary>Sync data: written straight into the base (no SVM runs yet and nothing has been committed).</summary>
    public void SyncData(ReadOnlySequence<byte> payload)
    {
        if (_base == null || Synced)
            throw new InvalidDataException("disk sync data outside a sync");
        if (payload.Length < 9)
            throw new InvalidDataException("disk sync data without data");
        long offset = (long)ReadU64(payload, "disk sync data");
        var data = payload.Slice(8);
        if (offset < 0 || offset > _base.Size - data.Length)
            throw new InvalidDataException($"disk sync data at {offset}+{data.Length} is outside the {_base.Size}-byte disk");
        foreach (var seg in data)
        {
            _base.Write(offset, seg.Span);
            offset += seg.Length;
        }
        _syncBytes += data.Length;
    }

    /// <summary>Sync end: checks the byte count and flushes the base.</summary>
    public void EndSync(ReadOnlySequence<byte> payload)
    {
        if (_base == null || Synced)
            throw new InvalidDataException("disk sync end outside a sync");
        long announced = (long)ReadU64(payload, "disk sync end");
        if (announced != _syncBytes)
            throw new InvalidDataException($"disk sync sent {announced} bytes but {_syncBytes} arrived");
        _base.Flush();
        Synced = true;
        _syncMs = _syncClock.Elapsed.TotalMilliseconds;
        _log.LogInformation("disk sync done: {MiB:F1} MiB in {Ms:F0} ms", _syncBytes / 1048576.0, _syncMs);
    }

    /// <summary>PVM writes (records with barriers) into the buffer.</summary>
    public void Receive(ReadOnlySequence<byte> payload)
    {
        var disk = _disk ?? throw new InvalidDataException("disk writes before the disk sync started");
        disk.ReceivePayload(payload);
    }

    /// <summary>Commits checkpoint <paramref name="epoch"/>: PVM writes up to its barrier into the base, overlay dropped. The SVM must be stopped.</summary>
    /// <exception cref="DiskCommitException">Applying failed (the commit may be retried).</exception>
    public void Commit(ulong epoch)
    {
        if (!Synced || _disk == null)
            throw new InvalidDataException($"checkpoint {epoch} ended before the disk sync did");
        _disk.Commit(epoch);
    }

    /// <summary>Failover: PVM writes after the last checkpoint dropped, the SVM's overlay merged into the base.</summary>
    public void Failover()
    {
        if (_disk == null)
            return;
        var r = _disk.Failover();
        _failover = r;
        _log.LogWarning("disk failover: overlay of {Merged} bytes merged into the base, {Dropped} bytes of PVM writes after checkpoint {Epoch} dropped",
            r.MergedOverlayBytes, r.DroppedBytes, _disk.CommittedEpoch);
    }

    /// <summary>Copies the disk figures into <paramref name="status"/>.</summary>
    public void Report(DiskStatus status)
    {
        status.SyncBytes = _syncBytes;
        status.SyncMs = Math.Round(_syncMs, 1);
        var d = _disk;
        if (d == null)
            return;
        status.SizeBytes = d.Size;
        status.OverlayBytes = d.OverlayBytes;
        status.OverlayBytesMax = d.OverlayBytesMax;
        status.BufferBytes = d.BufferBytes;
        status.BufferBytesMax = d.BufferBytesMax;
        status.CommittedEpoch = d.CommittedEpoch;
        if (_failover is { } f)
        {
            status.FailoverMergedBytes = f.MergedOverlayBytes;
            status.FailoverDroppedBytes = f.DroppedBytes;
        }
    }

    private static ulong ReadU64(ReadOnlySequence<byte> payload, string what)
    {
        if (payload.Length < 8)
            throw new InvalidDataException(what + ": payload shorter than 8 bytes");
        Span<byte> b = stackalloc byte[8];
        payload.Slice(0, 8).CopyTo(b);
        return BinaryPrimitives.ReadUInt64BigEndian(b);
    }

    /// <summary>Stops serving (the SVMs must be gone) and closes the images. The base holds what was committed or merged.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        _stop.Cancel();
        await _serving.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
        try
        {
            _base?.Flush();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _log.LogWarning("disk flush at stop failed: {Error}", e.Message);
        }
        _disk?.Dispose();
        _stop.Dispose();
    }
}
