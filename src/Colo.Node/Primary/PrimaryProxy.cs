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
    private readonly IClientPort _tap;
    private readonly NetdevStreamConnection _pvm;
    private readonly Action<CheckpointReason> _requestCheckpoint;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly long _maxHeldBytes;
    private volatile LinkConnection? _link;
    private long _tapWriteFailures;
    private volatile bool _pvmStopped; // stopped for a checkpoint: read past the bound (see PvmStoppedForCheckpoint)
    private bool _unprotected; // the secondary is lost for good: a commit completing after that must not protect again (under _lock)
    private readonly Lock _backpressureGate = new(); // the episode counters change together, so the status never sees them half-updated
    private long _backpressureSince; // Stopwatch timestamp of the episode under way, 0 when none
    private long _backpressureTicks; // Stopwatch ticks of the ended episodes
    private long _backpressureEpisodes;
    private long _clientFrames, _framesToPvm, _pvmWriteFailures, _framesMirrored, _mirrorFailures;
    private long _epoch;
    private Thread? _tapThread;
    private Task? _pvmTask;
    private Task? _tickTask;

    public PrimaryProxy(CompareOptions options, TapDevice tap, NetdevStreamConnection pvm, Action<CheckpointReason> requestCheckpoint, ILogger log)
        : this(options, new TapPort(tap), pvm, requestCheckpoint, log)
    {
    }

    /// <summary>Same, with the client side given as a port instead of a TAP device (tests pass an in-memory one).</summary>
    internal PrimaryProxy(CompareOptions options, IClientPort clientSide, NetdevStreamConnection pvm, Action<CheckpointReason> requestCheckpoint, ILogger log)
    {
        _tap = clientSide;
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
        _tapThread = _tap.Start(_stop.Token, _log, OnClientFrame);
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

    /// <summary>
    /// The secondary loaded a checkpoint captured after everything held: release it all and compare from the new state.
    /// After <see cref="Unprotect"/> (the secondary lost while this checkpoint completed) output stays passed through.
    /// </summary>
    public void CheckpointCommitted(ulong epoch)
    {
        lock (_lock)
        {
            _engine.OnCheckpointCommitted();
            _engine.PassThrough = _unprotected;
            Epoch = epoch;
        }
    }

    /// <summary>
    /// The PVM is stopped for a checkpoint. Whatever is still in its socket (or queued in QEMU) was sent before the stop,
    /// so the checkpoint covers it: it is read even past the held-bytes bound (finite — the guest cannot add to it while
    /// stopped) and released by the commit, instead of being read only after the commit and held into the next epoch,
    /// where the SVM (already past it) never sends it again and a further checkpoint would be needed.
    /// </summary>
    public void PvmStoppedForCheckpoint() => _pvmStopped = true;

    /// <summary>The checkpoint is over (committed or failed) and the PVM is about to run: the bound applies again.</summary>
    public void PvmResuming() => _pvmStopped = false;

    /// <summary>Unprotected mode (no secondary), for good: release everything held and pass output straight through.</summary>
    public void Unprotect()
    {
        _link = null;
        lock (_lock)
        {
            _unprotected = true;
            _engine.PassThrough = true;
        }
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
        lock (_backpressureGate)
        {
            // Ended episodes plus the one under way (so a long stall shows); never decreases.
            long ticks = _backpressureTicks + (_backpressureSince == 0 ? 0 : System.Diagnostics.Stopwatch.GetTimestamp() - _backpressureSince);
            d["pvm_backpressure_episodes"] = _backpressureEpisodes;
            d["pvm_backpressure_ms"] = (long)(ticks * 1000.0 / System.Diagnostics.Stopwatch.Frequency);
        }
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
            return !_pvmStopped && !_engine.PassThrough && _engine.Counters.HeldBytes > _maxHeldBytes;
    }

    /// <summary>
    /// Backpressure: while the engine holds more than its bound (a QueueFull checkpoint is already requested), the PVM's
    /// socket is not read, so QEMU stops taking frames from the guest's transmit ring instead of our memory growing.
    /// Ends when a checkpoint commit releases the held output, or the secondary is lost (pass-through).
    /// </summary>
    private async Task WaitUntilDrainedAsync()
    {
        lock (_backpressureGate)
        {
            _backpressureEpisodes++;
            _backpressureSince = System.Diagnostics.Stopwatch.GetTimestamp();
        }
        try
        {
            while (OverHeldLimit())
                await Task.Delay(5, _stop.Token);
        }
        finally
        {
            lock (_backpressureGate)
            {
                _backpressureTicks += System.Diagnostics.Stopwatch.GetTimestamp() - _backpressureSince;
                _backpressureSince = 0;
            }
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

    /// <summary>The production client side: the TAP device, read by a <see cref="TapPump"/> thread.</summary>
    private sealed class TapPort(TapDevice tap) : IClientPort
    {
        public void Write(ReadOnlySpan<byte> frame) => tap.Write(frame);

        public Thread? Start(CancellationToken stop, ILogger log, TapFrameHandler onFrame) => TapPump.Start(tap, stop, log, onFrame);

        public void Dispose() => tap.Dispose();
    }
}

/// <summary>
/// The client side of a <see cref="PrimaryProxy"/>: where released PVM output goes and where client frames come from
/// (the TAP device bridged to the client LAN in production).
/// </summary>
internal interface IClientPort : IDisposable
{
    /// <summary>Sends one released PVM frame to the clients; throws <see cref="IOException"/> or <see cref="ObjectDisposedException"/> on failure (counted, the frame is lost as on a wire).</summary>
    void Write(ReadOnlySpan<byte> frame);

    /// <summary>Starts handing client frames to <paramref name="onFrame"/> until <paramref name="stop"/> is cancelled or the port is disposed.</summary>
    /// <returns>The reading thread, if the port uses one.</returns>
    Thread? Start(CancellationToken stop, ILogger log, TapFrameHandler onFrame);
}
