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
internal sealed class SecondaryProxy : IDisposable
{
    private const int MaxQueuedFrames = 8192;
    private readonly object _lock = new();
    private readonly SequenceRewriter _rewriter = new();
    private readonly Queue<(byte[] Buffer, int Length)> _queued = new();
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private NetdevStreamConnection? _active;
    private LinkConnection? _link;
    private TapDevice? _tap;
    private bool _deliver;
    private ulong _epoch;
    private long _droppedQueued;
    private long _svmFrames;
    private long _clientFrames;
    private long _rarpDropped;

    /// <summary>True for a RARP frame (ethertype 0x8035), which QEMU sends to announce a NIC after an incoming migration.</summary>
    internal static bool IsRarp(ReadOnlySpan<byte> frame) => frame.Length >= 14 && frame[12] == 0x80 && frame[13] == 0x35;

    public SecondaryProxy(ILogger log) => _log = log;

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
                _rewriter.RewriteFromSvm(buffer.AsSpan(0, n));
                if (FailedOver)
                {
                    WriteTap(buffer.AsSpan(0, n));
                    continue;
                }
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

    /// <summary>Failover: the TAP becomes the client-facing port; queued frames go to the SVM.</summary>
    public void Failover(TapDevice tap, ReadOnlySpan<byte> announcement)
    {
        lock (_lock)
        {
            _tap = tap;
            FailedOver = true;
            _link = null;
            _rewriter.LearnOffsets = false;
            Flush();
            _deliver = true;
            for (int i = 0; i < 3; i++)
                WriteTap(announcement);
        }
        TapPump.Start(tap, _stop.Token, _log, OnTapFrame);
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
    }
}
