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
    private readonly long _maxHeldBytes;
    private volatile LinkConnection? _link;
    private long _tapWriteFailures;
    private long _clientFrames, _framesToPvm, _pvmWriteFailures, _framesMirrored, _mirrorFailures, _backpressureEpisodes, _backpressureMs;
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
        _maxHeldBytes = options.MaxHeldBytes;
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
        Dictionary<string, long> d;
        lock (_lock)
            d = CounterSnapshot.Of(_engine.Counters);
        d["client_frames_in"] = Interlocked.Read(ref _clientFrames);
        d["tap_write_failures"] = Interlocked.Read(ref _tapWriteFailures);
        d["frames_to_pvm"] = Interlocked.Read(ref _framesToPvm);
        d["pvm_write_failures"] = Interlocked.Read(ref _pvmWriteFailures);
        d["frames_mirrored"] = Interlocked.Read(ref _framesMirrored);
        d["mirror_failures"] = Interlocked.Read(ref _mirrorFailures);
        d["pvm_backpressure_episodes"] = Interlocked.Read(ref _backpressureEpisodes);
        d["pvm_backpressure_ms"] = Interlocked.Read(ref _backpressureMs);
        return d;
    }

    void ICompareSink.Release(ReadOnlySpan<byte> frame)
    {
        try
        {
            _tap.Write(frame);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            Interlocked.Increment(ref _tapWriteFailures);
            _log.LogDebug("tap write failed: {Error}", e.Message);
        }
    }

    void ICompareSink.RequestCheckpoint(CheckpointReason reason) => _requestCheckpoint(reason);

    private void OnClientFrame(Memory<byte> frame)
    {
        Interlocked.Increment(ref _clientFrames);
        try
        {
            _pvm.WriteFrame(frame.Span);
            Interlocked.Increment(ref _framesToPvm);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Net.Sockets.SocketException)
        {
            Interlocked.Increment(ref _pvmWriteFailures);
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
                Interlocked.Increment(ref _framesMirrored);
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref _mirrorFailures);
                _log.LogDebug("mirroring a client frame failed: {Error}", e.Message);
            }
        }
    }

    private async Task PvmLoopAsync()
    {
        var buffer = new byte[65536];
        while (!_stop.IsCancellationRequested)
        {
            if (OverHeldLimit())
            {
                try
                {
                    await WaitUntilDrainedAsync();
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
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

    private bool OverHeldLimit()
    {
        lock (_lock)
            return !_engine.PassThrough && _engine.Counters.HeldBytes > _maxHeldBytes;
    }

    /// <summary>
    /// Backpressure: while the engine holds more than its bound (a QueueFull checkpoint is already requested), the PVM's
    /// socket is not read, so QEMU stops taking frames from the guest's transmit ring instead of our memory growing.
    /// Ends when a checkpoint commit releases the held output, or the secondary is lost (pass-through).
    /// </summary>
    private async Task WaitUntilDrainedAsync()
    {
        Interlocked.Increment(ref _backpressureEpisodes);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            while (OverHeldLimit())
                await Task.Delay(5, _stop.Token);
        }
        finally
        {
            Interlocked.Add(ref _backpressureMs, watch.ElapsedMilliseconds);
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
