using Colo.Link;
using Colo.Proxy;
using Microsoft.Extensions.Logging;

namespace Colo.Node.Primary;

/// <summary>
/// The primary's network path: client frames from the TAP go to the PVM and (while protected)
/// over the link to the secondary; PVM output goes through the compare engine, which releases it
/// to the TAP per the output-commit rule. All compare-engine calls are serialised by one lock.
/// </summary>
internal sealed class PrimaryProxy : ICompareSink, IDisposable
{
    private readonly object _lock = new();
    private readonly CompareEngine _engine;
    private readonly TapDevice _tap;
    private readonly NetdevStreamConnection _pvm;
    private readonly Action<CheckpointReason> _requestCheckpoint;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private volatile LinkConnection? _link;
    private long _epoch;
    private Thread? _tapThread;
    private Task? _pvmTask;
    private Task? _tickTask;

    public PrimaryProxy(CompareOptions options, TapDevice tap, NetdevStreamConnection pvm, Action<CheckpointReason> requestCheckpoint, ILogger log)
    {
        _tap = tap;
        _pvm = pvm;
        _requestCheckpoint = requestCheckpoint;
        _log = log;
        _engine = new CompareEngine(options, this, TimeProvider.System) { PassThrough = true };
    }

    /// <summary>Completes when the PVM's network socket closes (QEMU gone).</summary>
    public Task PvmClosed => _pvmTask ?? Task.CompletedTask;

    /// <summary>Current epoch; SVM frames of other epochs are stale.</summary>
    public ulong Epoch
    {
        get => (ulong)Interlocked.Read(ref _epoch);
        set => Interlocked.Exchange(ref _epoch, (long)value);
    }

    public void Start()
    {
        _tapThread = TapPump.Start(_tap, _stop.Token, _log, OnClientFrame);
        _pvmTask = Task.Run(PvmLoopAsync);
        _tickTask = Task.Run(TickLoopAsync);
    }

    /// <summary>Starts mirroring client frames to the secondary over <paramref name="link"/>; null stops it.</summary>
    public void MirrorTo(LinkConnection? link) => _link = link;

    public void OnSvmFrame(ReadOnlySpan<byte> frame)
    {
        lock (_lock)
            _engine.OnSvmFrame(frame);
    }

    /// <summary>The secondary loaded a checkpoint captured after everything held: release it all and compare from the new state.</summary>
    public void CheckpointCommitted(ulong epoch)
    {
        lock (_lock)
        {
            _engine.OnCheckpointCommitted();
            _engine.PassThrough = false;
            Epoch = epoch;
        }
    }

    /// <summary>Unprotected mode (no secondary): release everything held and pass output straight through.</summary>
    public void Unprotect()
    {
        _link = null;
        lock (_lock)
            _engine.PassThrough = true;
    }

    /// <summary>Why the compare engine last asked for a checkpoint (for logs).</summary>
    public string? LastCause
    {
        get
        {
            lock (_lock)
                return _engine.LastCause;
        }
    }

    public Dictionary<string, long> Counters()
    {
        lock (_lock)
            return CounterSnapshot.Of(_engine.Counters);
    }

    void ICompareSink.Release(ReadOnlySpan<byte> frame)
    {
        try
        {
            _tap.Write(frame);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _log.LogDebug("tap write failed: {Error}", e.Message);
        }
    }

    void ICompareSink.RequestCheckpoint(CheckpointReason reason) => _requestCheckpoint(reason);

    private void OnClientFrame(Memory<byte> frame)
    {
        try
        {
            _pvm.WriteFrame(frame.Span);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            _log.LogDebug("PVM write failed: {Error}", e.Message);
        }
        var link = _link;
        if (link != null)
        {
            try
            {
                var send = link.SendAsync(MessageType.ClientFrame, Epoch, frame);
                if (!send.IsCompletedSuccessfully)
                    send.AsTask().GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                _log.LogDebug("mirroring a client frame failed: {Error}", e.Message);
            }
        }
    }

    private async Task PvmLoopAsync()
    {
        var buffer = new byte[65536];
        while (!_stop.IsCancellationRequested)
        {
            int n;
            try
            {
                n = await _pvm.ReadFrameAsync(buffer, _stop.Token);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                if (!_stop.IsCancellationRequested)
                    _log.LogWarning("PVM network socket closed: {Error}", e.Message);
                return;
            }
            if (n == 0)
            {
                _log.LogWarning("PVM network socket closed (EOF)");
                return;
            }
            lock (_lock)
                _engine.OnPvmFrame(buffer.AsSpan(0, n));
        }
    }

    private async Task TickLoopAsync()
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token))
            {
                lock (_lock)
                    _engine.OnTick();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _tap.Dispose();
        _pvm.Dispose();
    }
}
