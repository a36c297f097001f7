using System.Buffers;
using Colo.Link;
using Colo.Proxy;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Secondary;

/// <summary>
/// The secondary's network path. Before failover: client frames mirrored by the primary are
/// rewritten (PVM → SVM sequence space) and fed to the active SVM; SVM output is rewritten
/// (SVM → PVM space) and sent back over the link tagged with the epoch. While a checkpoint is
/// being received and loaded, client frames are queued and delivered to the new SVM once it
/// runs. After failover the TAP replaces the link on both paths and the rewriter keeps
/// translating connections that have an offset. One lock serialises the rewriter.
/// </summary>
/// <remarks>
/// While protected, the active SVM's translated TCP output that the client has not acknowledged
/// yet (as told by the mirrored client frames) is kept in an <see cref="UnackedOutput"/>, emptied
/// at every checkpoint activation; at failover it is written to the TAP right after the
/// gratuitous ARP announcements, under the same lock and before the TAP pump starts, so output
/// the SVM had sent only to the primary (lost with it) reaches the client without waiting for a
/// retransmission timeout. See <see cref="UnackedOutput"/> for why the replay is safe.
/// </remarks>
internal sealed class SecondaryProxy : IDisposable
{
    private const int MaxQueuedFrames = 8192;
    private readonly object _lock = new();
    private readonly SequenceRewriter _rewriter = new();
    private readonly UnackedOutput _unacked;
    private readonly Queue<(byte[] Buffer, int Length)> _queued = new();
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private NetdevStreamConnection? _active;
    private LinkConnection? _link;
    private TapDevice? _tap;
    private Action<ReadOnlySpan<byte>>? _toClients;
    private bool _deliver;
    private ulong _epoch;
    private long _droppedQueued;
    private long _svmFrames;
    private long _clientFrames;
    private long _rarpDropped;

    /// <summary>True for a RARP frame (ethertype 0x8035), which QEMU sends to announce a NIC after an incoming migration.</summary>
    internal static bool IsRarp(ReadOnlySpan<byte> frame) => frame.Length >= 14 && frame[12] == 0x80 && frame[13] == 0x35;

    /// <summary>Creates the proxy; nothing runs until an SVM is activated.</summary>
    /// <param name="log">Logger.</param>
    /// <param name="unacked">Bounds of the SVM output kept for the failover replay; defaults when null.</param>
    public SecondaryProxy(ILogger log, UnackedOutputOptions? unacked = null)
    {
        _log = log;
        _unacked = new UnackedOutput(unacked);
    }

    public bool FailedOver { get; private set; }

    public void AttachLink(LinkConnection link) => _link = link;

    /// <summary>From CheckpointBegin on, client frames wait for the SVM that will load the checkpoint.</summary>
    public void Hold()
    {
        lock (_lock)
            _deliver = false;
    }

    /// <summary>A new SVM generation holds the checkpointed state: reset offsets, deliver what was queued.</summary>
    public void Activate(NetdevStreamConnection svm, ulong epoch)
    {
        lock (_lock)
        {
            _active = svm;
            _epoch = epoch;
            _rewriter.ResetAfterCheckpoint();
            // The new SVM holds the PVM's state: what the old one sent is no longer its output.
            _unacked.Clear();
            Flush();
            _deliver = true;
        }
    }

    /// <summary>A client frame mirrored by the primary.</summary>
    public void OnClientFrame(ReadOnlySequence<byte> payload)
    {
        int len = (int)payload.Length;
        if (len == 0 || len > 65536)
            return;
        byte[] buf = ArrayPool<byte>.Shared.Rent(len);
        payload.CopyTo(buf);
        lock (_lock)
        {
            _clientFrames++;
            // Before the rewrite: the acknowledgement is still in the PVM's space, as the kept SVM output is.
            if (!FailedOver)
                _unacked.OnClientFrame(buf.AsSpan(0, len));
            if (_deliver && _active != null && !FailedOver)
            {
                Deliver(buf.AsSpan(0, len));
                ArrayPool<byte>.Shared.Return(buf);
                return;
            }
            if (_queued.Count >= MaxQueuedFrames)
            {
                var (old, _) = _queued.Dequeue();
                ArrayPool<byte>.Shared.Return(old);
                _droppedQueued++;
            }
            _queued.Enqueue((buf, len));
        }
    }

    /// <summary>Reads one SVM generation's output until it closes or is replaced.</summary>
    public async Task RunSvmOutputAsync(NetdevStreamConnection svm)
    {
        var buffer = new byte[65536];
        while (!_stop.IsCancellationRequested)
        {
            int n;
            try
            {
                n = await svm.ReadFrameAsync(buffer, _stop.Token);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                _log.LogDebug("SVM socket closed: {Error}", e.Message);
                return;
            }
            if (n == 0)
                return;
            LinkConnection? link;
            ulong epoch;
            lock (_lock)
            {
                if (!ReferenceEquals(svm, _active))
                    continue;
                _svmFrames++;
                if (!FailedOver && IsRarp(buffer.AsSpan(0, n)))
                {
                    // QEMU's own self-announce after loading a checkpoint, not guest output: the PVM never sends it.
                    _rarpDropped++;
                    continue;
                }
                bool translated = _rewriter.RewriteFromSvm(buffer.AsSpan(0, n));
                if (FailedOver)
                {
                    _toClients?.Invoke(buffer.AsSpan(0, n));
                    continue;
                }
                // Kept before it goes to the primary, so before the client can acknowledge it.
                _unacked.OnSvmFrame(buffer.AsSpan(0, n), translated);
                link = _link;
                epoch = _epoch;
            }
            if (link == null)
                continue;
            try
            {
                await link.SendAsync(MessageType.SvmFrame, epoch, buffer.AsMemory(0, n));
            }
            catch (Exception e)
            {
                _log.LogDebug("SVM frame not sent: {Error}", e.Message);
            }
        }
    }

    /// <summary>
    /// Failover: the TAP becomes the client-facing port; queued frames go to the SVM; the announcement
    /// goes out three times, then the SVM's unacknowledged output (<see cref="UnackedOutput.DrainTo"/>);
    /// then the TAP pump starts.
    /// </summary>
    public void Failover(TapDevice tap, ReadOnlySpan<byte> announcement)
    {
        _tap = tap;
        TakeOver(announcement, WriteTap);
        TapPump.Start(tap, _stop.Token, _log, OnTapFrame);
    }

    /// <summary>
    /// The failover steps on the frame paths, without the TAP pump: from now on SVM output goes to
    /// <paramref name="toClients"/> (also used directly by tests).
    /// </summary>
    /// <param name="announcement">Gratuitous ARP frame, sent three times before the replay.</param>
    /// <param name="toClients">Writes one frame to the client network; must not throw.</param>
    /// <returns>Segments of unacknowledged SVM output replayed.</returns>
    internal int TakeOver(ReadOnlySpan<byte> announcement, Action<ReadOnlySpan<byte>> toClients)
    {
        int replayed;
        long bytes;
        lock (_lock)
        {
            _toClients = toClients;
            FailedOver = true;
            _link = null;
            _rewriter.LearnOffsets = false;
            Flush();
            _deliver = true;
            for (int i = 0; i < 3; i++)
                toClients(announcement);
            long before = _unacked.ReplayedBytes;
            replayed = _unacked.DrainTo(toClients);
            bytes = _unacked.ReplayedBytes - before;
        }
        _log.LogInformation("failover: replayed {Segments} unacknowledged SVM segments ({Bytes} bytes) to the clients", replayed, bytes);
        return replayed;
    }

    public Dictionary<string, long> Counters()
    {
        lock (_lock)
        {
            return new Dictionary<string, long>
            {
                ["client_frames"] = _clientFrames,
                ["svm_frames"] = _svmFrames,
                ["queued_frames_dropped"] = _droppedQueued,
                ["svm_rarp_dropped"] = _rarpDropped,
                ["rewriter_connections"] = _rewriter.ConnectionCount,
                ["rewriter_rewritten_frames"] = _rewriter.RewrittenFrames,
                ["rewriter_evictions"] = _rewriter.Evictions,
                ["rewriter_offsets_lost"] = _rewriter.OffsetsLost,
                ["unacked_bytes"] = _unacked.RetainedBytes,
                ["unacked_bytes_peak"] = _unacked.PeakRetainedBytes,
                ["unacked_segments"] = _unacked.RetainedSegments,
                ["unacked_connections"] = _unacked.Connections,
                ["unacked_not_retained"] = _unacked.NotRetained,
                ["unacked_untranslated"] = _unacked.Untranslated,
                ["unacked_already_acked"] = _unacked.AlreadyAcked,
                ["unacked_after_close"] = _unacked.AfterClose,
                ["failover_replayed_segments"] = _unacked.ReplayedSegments,
                ["failover_replayed_bytes"] = _unacked.ReplayedBytes,
            };
        }
    }

    private void OnTapFrame(Memory<byte> frame)
    {
        lock (_lock)
        {
            _clientFrames++;
            Deliver(frame.Span);
        }
    }

    // Caller holds _lock.
    private void Flush()
    {
        while (_queued.Count > 0)
        {
            var (buf, len) = _queued.Dequeue();
            if (_active != null)
                Deliver(buf.AsSpan(0, len));
            ArrayPool<byte>.Shared.Return(buf);
        }
    }

    // Caller holds _lock.
    private void Deliver(Span<byte> frame)
    {
        _rewriter.RewriteFromClient(frame);
        try
        {
            _active?.WriteFrame(frame);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            _log.LogDebug("SVM write failed: {Error}", e.Message);
        }
    }

    private void WriteTap(ReadOnlySpan<byte> frame)
    {
        try
        {
            _tap?.Write(frame);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _log.LogDebug("tap write failed: {Error}", e.Message);
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _tap?.Dispose();
        lock (_lock)
            _unacked.Clear();
    }
}
