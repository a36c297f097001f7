using Colo.Failover.Internal;
using Microsoft.Extensions.Logging;

namespace Colo.Failover;

/// <summary>
/// Detects loss of the peer daemon. Sends a heartbeat every <see cref="Interval"/> through a caller-supplied
/// delegate and declares the peer lost when nothing has been heard from it (<see cref="HeartbeatReceived"/>)
/// for <see cref="Timeout"/>, when a heartbeat send fails, or when told so (<see cref="PeerLost"/>). The
/// peer-lost callback fires exactly once; afterwards the monitor stops sending and checking. All timing uses
/// the given <see cref="TimeProvider"/>.
/// </summary>
public sealed class HeartbeatMonitor : IAsyncDisposable
{
    /// <summary>Default heartbeat interval: 100 ms.</summary>
    public static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(100);

    /// <summary>Default silence after which the peer is lost: 500 ms.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMilliseconds(500);

    private readonly Func<CancellationToken, ValueTask> _sendHeartbeat;
    private readonly Action<string> _onPeerLost;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly object _gate = new();

    private ITimer? _sendTimer;
    private ITimer? _checkTimer;
    private long _lastHeardTimestamp;
    private long _timeoutTicks;
    private int _started;
    private int _lost;
    private int _sendInFlight;
    private bool _disposed;
    private Task _currentSend = Task.CompletedTask;
    private string? _peerLostReason;
    private DateTimeOffset? _peerLostAt;

    /// <summary>Creates a stopped monitor; call <see cref="Start"/>.</summary>
    /// <param name="interval">Time between heartbeats sent; positive. Typically <see cref="DefaultInterval"/>.</param>
    /// <param name="timeout">Silence from the peer after which it is lost; greater than <paramref name="interval"/>. Typically <see cref="DefaultTimeout"/>.</param>
    /// <param name="sendHeartbeat">Sends one heartbeat to the peer. Any exception (other than cancellation by <see cref="DisposeAsync"/>) loses the peer. A send still running when the next is due makes that one be skipped.</param>
    /// <param name="onPeerLost">Called once, with the reason, on a timer or caller thread; exceptions are logged and swallowed.</param>
    /// <param name="timeProvider">Clock and timers (<see cref="TimeProvider.System"/> in production).</param>
    /// <param name="logger">Receives start and peer-lost events.</param>
    /// <exception cref="ArgumentNullException">A delegate, the time provider or the logger is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="interval"/> is not positive, or <paramref name="timeout"/> is not greater than it.</exception>
    public HeartbeatMonitor(
        TimeSpan interval,
        TimeSpan timeout,
        Func<CancellationToken, ValueTask> sendHeartbeat,
        Action<string> onPeerLost,
        TimeProvider timeProvider,
        ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(sendHeartbeat);
        ArgumentNullException.ThrowIfNull(onPeerLost);
        ArgumentNullException.ThrowIfNull(timeProvider);
        ArgumentNullException.ThrowIfNull(logger);
        if (interval <= TimeSpan.Zero || interval == System.Threading.Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(interval), interval, "The heartbeat interval must be positive and finite.");
        }

        if (timeout <= interval)
        {
            throw new ArgumentOutOfRangeException(nameof(timeout), timeout, "The heartbeat timeout must be greater than the interval.");
        }

        Interval = interval;
        Timeout = timeout;
        _sendHeartbeat = sendHeartbeat;
        _onPeerLost = onPeerLost;
        _timeProvider = timeProvider;
        _logger = logger;
    }

    /// <summary>Creates a stopped monitor with <see cref="DefaultInterval"/> and <see cref="DefaultTimeout"/>.</summary>
    /// <param name="sendHeartbeat">Sends one heartbeat to the peer.</param>
    /// <param name="onPeerLost">Called once with the reason.</param>
    /// <param name="timeProvider">Clock and timers.</param>
    /// <param name="logger">Receives start and peer-lost events.</param>
    /// <exception cref="ArgumentNullException">An argument is null.</exception>
    public HeartbeatMonitor(Func<CancellationToken, ValueTask> sendHeartbeat, Action<string> onPeerLost, TimeProvider timeProvider, ILogger logger)
        : this(DefaultInterval, DefaultTimeout, sendHeartbeat, onPeerLost, timeProvider, logger)
    {
    }

    /// <summary>Time between heartbeats sent.</summary>
    public TimeSpan Interval { get; }

    /// <summary>
    /// Silence from the peer after which it is declared lost. May be changed while running (e.g. a longer one while a
    /// daemon is still synchronising, when a false loss costs protection and a true one costs nothing); the change
    /// applies from the next check. Must stay greater than <see cref="Interval"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to a value not greater than <see cref="Interval"/>.</exception>
    public TimeSpan Timeout
    {
        get => TimeSpan.FromTicks(Volatile.Read(ref _timeoutTicks));
        set
        {
            if (value <= Interval)
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "The heartbeat timeout must be greater than the interval.");
            }

            Volatile.Write(ref _timeoutTicks, value.Ticks);
        }
    }

    /// <summary>When the peer was declared lost (by the time provider's clock), or <c>null</c>.</summary>
    public DateTimeOffset? PeerLostAt
    {
        get
        {
            lock (_gate)
            {
                return _peerLostAt;
            }
        }
    }

    /// <summary>Why the peer was declared lost, or <c>null</c>.</summary>
    public string? PeerLostReason
    {
        get
        {
            lock (_gate)
            {
                return _peerLostReason;
            }
        }
    }

    /// <summary>Whether the peer has been declared lost.</summary>
    public bool IsPeerLost => Volatile.Read(ref _lost) != 0;

    /// <summary>
    /// Starts sending heartbeats (the first at once) and watching for silence; the peer gets a full
    /// <see cref="Timeout"/> from now to be heard.
    /// </summary>
    /// <exception cref="InvalidOperationException">Already started.</exception>
    /// <exception cref="ObjectDisposedException">Disposed.</exception>
    public void Start()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_started != 0)
            {
                throw new InvalidOperationException("The heartbeat monitor is already started.");
            }

            _started = 1;
            Volatile.Write(ref _lastHeardTimestamp, _timeProvider.GetTimestamp());
            if (IsPeerLost)
            {
                return;
            }

        }

        Log.Started(_logger, Interval.TotalMilliseconds, Timeout.TotalMilliseconds);

        // Timers are created outside the lock: a provider may run a due callback synchronously.
        ITimer check = _timeProvider.CreateTimer(static s => ((HeartbeatMonitor)s!).OnCheck(), this, Timeout, System.Threading.Timeout.InfiniteTimeSpan);
        ITimer send = _timeProvider.CreateTimer(static s => ((HeartbeatMonitor)s!).OnSendDue(), this, TimeSpan.Zero, Interval);
        lock (_gate)
        {
            if (!_disposed && !IsPeerLost)
            {
                _checkTimer = check;
                _sendTimer = send;
                return;
            }
        }

        check.Dispose();
        send.Dispose();
    }

    /// <summary>
    /// Records that the peer was heard from. Call for every message received from it, not only heartbeats.
    /// Cheap (one clock read and store); safe from any thread; ignored once the peer is lost.
    /// </summary>
    public void HeartbeatReceived() => Volatile.Write(ref _lastHeardTimestamp, _timeProvider.GetTimestamp());

    /// <summary>
    /// Reports a loss detected elsewhere (e.g. the link closed). Fires the peer-lost callback if it has not fired
    /// yet and the monitor is not disposed; otherwise does nothing. May be called before <see cref="Start"/>.
    /// </summary>
    /// <param name="reason">Why the peer is lost.</param>
    /// <exception cref="ArgumentNullException"><paramref name="reason"/> is null.</exception>
    public void PeerLost(string reason)
    {
        ArgumentNullException.ThrowIfNull(reason);
        DeclareLost(reason);
    }

    /// <summary>
    /// Stops the timers, cancels a heartbeat send in progress and waits for it. Never fires the callback, and
    /// later <see cref="PeerLost"/> calls are ignored.
    /// </summary>
    /// <returns>Completes when no send is running any more.</returns>
    public async ValueTask DisposeAsync()
    {
        Task send;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            StopTimers();
            send = _currentSend;
        }

        _stopping.Cancel();
        try
        {
            await send.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Cancelled by us.
        }

        _stopping.Dispose();
    }

    private void OnCheck()
    {
        if (IsPeerLost)
        {
            return;
        }

        TimeSpan silence = _timeProvider.GetElapsedTime(Volatile.Read(ref _lastHeardTimestamp));
        TimeSpan timeout = Timeout;
        if (silence >= timeout)
        {
            DeclareLost($"no heartbeat for {silence.TotalMilliseconds:F0} ms");
            return;
        }

        lock (_gate)
        {
            if (!_disposed && !IsPeerLost)
            {
                _checkTimer?.Change(timeout - silence, System.Threading.Timeout.InfiniteTimeSpan);
            }
        }
    }

    private void OnSendDue()
    {
        if (IsPeerLost || Interlocked.CompareExchange(ref _sendInFlight, 1, 0) != 0)
        {
            return;
        }

        lock (_gate)
        {
            if (_disposed)
            {
                Volatile.Write(ref _sendInFlight, 0);
                return;
            }
        }

        // Started outside the lock so that a synchronous failure can run the peer-lost callback lock-free.
        Task send = SendOnceAsync();
        lock (_gate)
        {
            _currentSend = send;
        }
    }

    private async Task SendOnceAsync()
    {
        try
        {
            await _sendHeartbeat(_stopping.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested)
        {
            // Disposed while sending.
        }
        catch (Exception ex)
        {
            DeclareLost("heartbeat send failed: " + ex.Message);
        }
        finally
        {
            Volatile.Write(ref _sendInFlight, 0);
        }
    }

    private void DeclareLost(string reason)
    {
        lock (_gate)
        {
            if (_disposed || _lost != 0)
            {
                return;
            }

            Volatile.Write(ref _lost, 1);
            _peerLostReason = reason;
            _peerLostAt = _timeProvider.GetUtcNow();
            StopTimers();
        }

        Log.PeerLost(_logger, reason);
        try
        {
            _onPeerLost(reason);
        }
        catch (Exception ex)
        {
            Log.CallbackFailed(_logger, ex);
        }
    }

    private void StopTimers()
    {
        _sendTimer?.Dispose();
        _checkTimer?.Dispose();
        _sendTimer = null;
        _checkTimer = null;
    }
}
