using System.Buffers;
using System.Diagnostics;
using System.Net;
using Colo.Link;
using Colo.Node;
using Colo.Node.Primary;
using Colo.Node.Secondary;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Disk.Bench;

/// <summary>What one checkpoint (barrier, then commit on the replica) took.</summary>
internal readonly record struct CheckpointResult(ulong Epoch, double DrainMs, double CommitMs, long BufferBytes, long BufferSpilledBytes, int BufferedRecords);

/// <summary>
/// The primary's and the secondary's disk managers joined by a real replication link on loopback TCP, as in
/// tests/Colo.Node.Tests/DiskReplicationTests.cs: <see cref="PrimaryDisk"/> serves the image over NBD and forwards
/// writes; the secondary's receive loop feeds a <see cref="ReplicaDisk"/> whose base is a file in the work directory.
/// </summary>
internal sealed class ReplicationPair : IAsyncDisposable
{
    /// <summary>Forward queue of the primary: the node's default (disk_forward_queue_mib = 64).</summary>
    public const long QueueBytes = 64L << 20;

    private readonly TaskCompletionSource _synced = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly SemaphoreSlim _barrierSeen = new(0);
    private readonly SemaphoreSlim _checkpointLock = new(1, 1);
    private Task _receive = Task.CompletedTask;
    private ulong _epoch;
    private ulong _lastBarrierSeen;
    private volatile string? _error;
    private int _disposed;

    private ReplicationPair(PrimaryDisk primary, ReplicaDisk replica, LinkConnection primaryLink, LinkConnection secondaryLink, string primarySocket, string replicaImage)
    {
        Primary = primary;
        Replica = replica;
        PrimaryLink = primaryLink;
        SecondaryLink = secondaryLink;
        PrimarySocket = primarySocket;
        ReplicaImage = replicaImage;
    }

    public PrimaryDisk Primary { get; }

    public ReplicaDisk Replica { get; }

    public LinkConnection PrimaryLink { get; }

    public LinkConnection SecondaryLink { get; }

    /// <summary>Unix socket on which <see cref="Primary"/> serves the PVM's disk (export <see cref="PrimaryDisk.ExportName"/>).</summary>
    public string PrimarySocket { get; }

    /// <summary>The replica's base image file.</summary>
    public string ReplicaImage { get; }

    /// <summary>Checkpoints committed by <see cref="CheckpointAsync"/> so far.</summary>
    public ulong Epoch => Volatile.Read(ref _epoch);

    public static async Task<ReplicationPair> StartAsync(string primaryImage, string work, string tag, CancellationToken ct)
    {
        string replicaImage = Path.Combine(work, tag + "-replica.raw");
        // The secondary's defaults: 64 MiB of buffer and overlay in memory, spill files in the run directory.
        var cfg = new NodeConfig
        {
            VmName = "bench",
            RunDirectory = work,
            KernelPath = "/unused",
            InitrdPath = "/unused",
            KernelCmdline = "unused",
            GuestMac = "52:54:00:00:00:01",
            GuestIp = "10.0.0.1",
            LinkAddress = "127.0.0.1",
            DiskImage = replicaImage,
        };
        LinkConnection primaryLink;
        LinkConnection secondaryLink;
        using (var listener = new LinkListener(new IPEndPoint(IPAddress.Loopback, 0), NullLogger.Instance))
        {
            Task<LinkConnection> accept = listener.AcceptAsync(TimeSpan.FromSeconds(10), ct);
            primaryLink = await LinkConnection.ConnectAsync(listener.LocalEndPoint, TimeSpan.FromSeconds(10), NullLogger.Instance, ct);
            secondaryLink = await accept;
        }

        string primarySocket = Path.Combine(work, tag + "-p.sock");
        PrimaryDisk primary = PrimaryDisk.Start(primaryImage, primarySocket, QueueBytes, NullLoggerFactory.Instance);
        var replica = new ReplicaDisk(cfg, Path.Combine(work, tag + "-s.sock"), NullLoggerFactory.Instance);
        var pair = new ReplicationPair(primary, replica, primaryLink, secondaryLink, primarySocket, replicaImage);
        pair._receive = Task.Run(() => secondaryLink.RunReceiveLoopAsync(pair.OnMessage), CancellationToken.None);
        return pair;
    }

    private ValueTask OnMessage(MessageType type, ulong epoch, ReadOnlySequence<byte> payload)
    {
        try
        {
            switch (type)
            {
                case MessageType.DiskSyncBegin:
                    Replica.BeginSync(payload);
                    break;
                case MessageType.DiskSyncData:
                    Replica.SyncData(payload);
                    break;
                case MessageType.DiskSyncEnd:
                    Replica.EndSync(payload);
                    _synced.TrySetResult();
                    break;
                case MessageType.DiskWrites:
                    Replica.Receive(payload);
                    ulong seen = Replica.Device!.LastBarrierEpoch;
                    if (seen > _lastBarrierSeen)
                    {
                        _lastBarrierSeen = seen;
                        _barrierSeen.Release();
                    }

                    break;
            }
        }
        catch (Exception e)
        {
            _error = $"{type}: {e.GetType().Name}: {e.Message}";
            _synced.TrySetException(e);
            _barrierSeen.Release();
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Runs the initial sync and waits until the replica has it all (base fsynced, <see cref="ReplicaDisk.Synced"/>).</summary>
    /// <returns>Bytes sent and seconds from the start of the sync to the replica's end of sync.</returns>
    public async Task<(long SentBytes, double Seconds)> SyncAsync(CancellationToken ct)
    {
        var status = new DiskStatus();
        var sw = Stopwatch.StartNew();
        long sent = await Primary.InitialSyncAsync(PrimaryLink, status, ct);
        await _synced.Task.WaitAsync(TimeSpan.FromMinutes(5), ct);
        double seconds = sw.Elapsed.TotalSeconds;
        ThrowIfFailed();
        if (!Replica.Synced)
        {
            throw new InvalidOperationException("replica not synced after its end of sync");
        }

        return (sent, seconds);
    }

    /// <summary>
    /// One checkpoint's disk part: barrier on the primary, wait until the sender has put it on the link and the replica has
    /// received it (drain), then <see cref="ReplicaDisk.Commit"/> (timed on its own).
    /// </summary>
    public async Task<CheckpointResult> CheckpointAsync(CancellationToken ct)
    {
        await _checkpointLock.WaitAsync(ct);
        try
        {
            ulong epoch = _epoch + 1;
            var sw = Stopwatch.StartNew();
            Primary.MarkBarrier(epoch);
            await Primary.WaitBarrierSentAsync(epoch, TimeSpan.FromMinutes(2), ct);
            while (Replica.Device!.LastBarrierEpoch < epoch)
            {
                ThrowIfFailed();
                if (sw.Elapsed > TimeSpan.FromMinutes(2))
                {
                    throw new TimeoutException($"barrier {epoch} not received by the replica");
                }

                await _barrierSeen.WaitAsync(TimeSpan.FromMilliseconds(100), ct);
            }

            double drainMs = sw.Elapsed.TotalMilliseconds;
            var d = Replica.Device;
            long buffered = d.BufferBytes;
            long spilled = d.BufferSpilledBytes;
            int records = d.BufferedRecords;
            sw.Restart();
            Replica.Commit(epoch);
            double commitMs = sw.Elapsed.TotalMilliseconds;
            Volatile.Write(ref _epoch, epoch);
            return new CheckpointResult(epoch, drainMs, commitMs, buffered, spilled, records);
        }
        finally
        {
            _checkpointLock.Release();
        }
    }

    /// <summary>Checkpoints every <paramref name="intervalMs"/> until <paramref name="stop"/> is cancelled (periodic commits during a run).</summary>
    public async Task<List<CheckpointResult>> RunCommitterAsync(int intervalMs, CancellationToken stop)
    {
        var results = new List<CheckpointResult>();
        while (true)
        {
            try
            {
                await Task.Delay(intervalMs, stop);
            }
            catch (OperationCanceledException)
            {
                return results;
            }

            results.Add(await CheckpointAsync(CancellationToken.None));
        }
    }

    public void ThrowIfFailed()
    {
        if (_error is { } e)
        {
            throw new InvalidOperationException("replica failed: " + e);
        }

        if (PrimaryLink.CloseReason is { } reason)
        {
            throw new InvalidOperationException("replication link closed: " + reason);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await Primary.DisposeAsync();
        PrimaryLink.Close("bench end");
        SecondaryLink.Close("bench end");
        await _receive.WaitAsync(TimeSpan.FromSeconds(10)).ContinueWith(_ => { }, TaskScheduler.Default);
        await Replica.DisposeAsync();
        await PrimaryLink.DisposeAsync();
        await SecondaryLink.DisposeAsync();
        _barrierSeen.Dispose();
        _checkpointLock.Dispose();
    }
}
