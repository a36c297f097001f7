using Colo.Failover;
using Colo.Link.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Link.Tests;

public sealed class HeartbeatMonitorTests
{
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan Timeout = TimeSpan.FromMilliseconds(500);

    private readonly ManualTimeProvider _time = new();
    private readonly List<string> _lost = [];
    private int _sends;

    private HeartbeatMonitor Create(Func<CancellationToken, ValueTask>? send = null)
        => new(Interval, Timeout, send ?? (_ => { _sends++; return default; }), reason => _lost.Add(reason), _time, NullLogger.Instance);

    private static TimeSpan Ms(double ms) => TimeSpan.FromMilliseconds(ms);

    [Fact]
    public void Silence_LosesPeerAtTimeoutNotBefore()
    {
        HeartbeatMonitor monitor = Create();
        DateTimeOffset started = _time.GetUtcNow();
        monitor.Start();

        _time.Advance(Ms(499));
        Assert.Empty(_lost);
        Assert.Null(monitor.PeerLostAt);
        Assert.False(monitor.IsPeerLost);

        _time.Advance(Ms(1));
        Assert.Equal(["no heartbeat for 500 ms"], _lost);
        Assert.Equal(started + Timeout, monitor.PeerLostAt);
        Assert.Equal("no heartbeat for 500 ms", monitor.PeerLostReason);
    }

    [Fact]
    public void HeartbeatsReceived_KeepPeerAliveThenSilenceLosesIt()
    {
        HeartbeatMonitor monitor = Create();
        monitor.Start();

        for (int i = 0; i < 50; i++)
        {
            _time.Advance(Interval);
            monitor.HeartbeatReceived();
        }

        Assert.Empty(_lost);
        DateTimeOffset lastHeard = _time.GetUtcNow();

        _time.Advance(Ms(499));
        Assert.Empty(_lost);
        _time.Advance(Ms(1));
        Assert.Single(_lost);
        Assert.Equal(lastHeard + Timeout, monitor.PeerLostAt);
    }

    [Fact]
    public void IrregularTraffic_WithinTimeout_KeepsPeerAlive()
    {
        HeartbeatMonitor monitor = Create();
        monitor.Start();

        foreach (int gap in new[] { 450, 10, 499, 300, 480, 1, 499 })
        {
            _time.Advance(Ms(gap));
            monitor.HeartbeatReceived();
        }

        Assert.Empty(_lost);
    }

    [Fact]
    public void Start_SendsAtOnceThenEveryInterval()
    {
        HeartbeatMonitor monitor = Create();
        monitor.Start();

        _time.Advance(TimeSpan.Zero);
        Assert.Equal(1, _sends);
        for (int i = 0; i < 10; i++)
        {
            _time.Advance(Interval);
            monitor.HeartbeatReceived();
        }

        Assert.Equal(11, _sends);
        Assert.Empty(_lost);
    }

    [Fact]
    public void PeerLost_FiresOnceAndStopsTimers()
    {
        HeartbeatMonitor monitor = Create();
        monitor.Start();

        _time.Advance(TimeSpan.FromSeconds(5));
        monitor.PeerLost("link closed");
        int sendsAtLoss = _sends;
        _time.Advance(TimeSpan.FromSeconds(5));

        Assert.Equal(["no heartbeat for 500 ms"], _lost);
        Assert.InRange(sendsAtLoss, 5, 6); // t = 0, 100, ..., 400 (and 500 if that send precedes the check)
        Assert.Equal(sendsAtLoss, _sends);
        Assert.Equal(0, _time.ActiveTimers);
    }

    [Fact]
    public void PeerLost_External_FiresOnceWithGivenReason()
    {
        HeartbeatMonitor monitor = Create();
        DateTimeOffset started = _time.GetUtcNow();
        monitor.Start();
        _time.Advance(Ms(200));

        monitor.PeerLost("link closed: peer closed the connection");
        monitor.PeerLost("again");
        _time.Advance(TimeSpan.FromSeconds(5));

        Assert.Equal(["link closed: peer closed the connection"], _lost);
        Assert.Equal(started + Ms(200), monitor.PeerLostAt);
    }

    [Fact]
    public void PeerLost_BeforeStart_Fires()
    {
        HeartbeatMonitor monitor = Create();
        monitor.PeerLost("never connected");
        monitor.Start();
        _time.Advance(TimeSpan.FromSeconds(1));

        Assert.Equal(["never connected"], _lost);
        Assert.Equal(0, _sends);
    }

    [Fact]
    public void SendThrows_LosesPeerWithReason()
    {
        HeartbeatMonitor monitor = Create(_ => throw new IOException("broken pipe"));
        monitor.Start();

        _time.Advance(TimeSpan.Zero);

        Assert.Equal(["heartbeat send failed: broken pipe"], _lost);
    }

    [Fact]
    public void SendFaultsAsynchronously_LosesPeerWithReason()
    {
        var pending = new TaskCompletionSource();
        HeartbeatMonitor monitor = Create(_ => new ValueTask(pending.Task));
        monitor.Start();
        _time.Advance(TimeSpan.Zero);
        Assert.Empty(_lost);

        // The continuation may run on the thread pool (the test thread has a synchronization context).
        pending.SetException(new InvalidOperationException("link closed"));
        Assert.True(SpinWait.SpinUntil(() => monitor.IsPeerLost, TimeSpan.FromSeconds(5)));

        Assert.Equal(["heartbeat send failed: link closed"], _lost);
    }

    [Fact]
    public void SlowSend_NextSendsSkippedUntilItCompletes()
    {
        var pending = new TaskCompletionSource();
        HeartbeatMonitor monitor = Create(_ =>
        {
            _sends++;
            return _sends == 1 ? new ValueTask(pending.Task) : default;
        });
        monitor.Start();

        for (int i = 0; i < 3; i++)
        {
            _time.Advance(Interval);
            monitor.HeartbeatReceived();
        }

        Assert.Equal(1, _sends);
        pending.SetResult();
        Assert.True(SpinWait.SpinUntil(
            () =>
            {
                _time.Advance(Interval);
                monitor.HeartbeatReceived();
                return _sends == 2;
            },
            TimeSpan.FromSeconds(5)));
        Assert.Empty(_lost);
    }

    [Fact]
    public async Task Dispose_StopsWithoutFiringAndCancelsSend()
    {
        CancellationToken seen = default;
        var pending = new TaskCompletionSource();
        HeartbeatMonitor monitor = Create(ct =>
        {
            seen = ct;
            ct.Register(() => pending.TrySetCanceled(ct));
            return new ValueTask(pending.Task);
        });
        monitor.Start();
        _time.Advance(TimeSpan.Zero);

        await monitor.DisposeAsync();
        _time.Advance(TimeSpan.FromSeconds(5));

        Assert.True(seen.IsCancellationRequested);
        Assert.Empty(_lost);
        Assert.Equal(0, _time.ActiveTimers);
        Assert.Throws<ObjectDisposedException>(monitor.Start);
        monitor.PeerLost("link closed after shutdown");
        Assert.Empty(_lost);
    }

    [Fact]
    public void Start_Twice_Throws()
    {
        HeartbeatMonitor monitor = Create();
        monitor.Start();
        Assert.Throws<InvalidOperationException>(monitor.Start);
    }

    [Fact]
    public void Constructor_InvalidTimes_Throw()
    {
        Func<CancellationToken, ValueTask> send = _ => default;
        Assert.Throws<ArgumentOutOfRangeException>(() => new HeartbeatMonitor(TimeSpan.Zero, Timeout, send, _ => { }, _time, NullLogger.Instance));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HeartbeatMonitor(Interval, Interval, send, _ => { }, _time, NullLogger.Instance));
        var defaults = new HeartbeatMonitor(send, _ => { }, _time, NullLogger.Instance);
        Assert.Equal(HeartbeatMonitor.DefaultInterval, defaults.Interval);
        Assert.Equal(HeartbeatMonitor.DefaultTimeout, defaults.Timeout);
    }

    [Fact]
    public async Task SystemTimeProvider_SilentPeer_LostAfterRoughlyTimeout()
    {
        var lost = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        int sends = 0;
        await using var monitor = new HeartbeatMonitor(
            Ms(20), Ms(150), _ => { Interlocked.Increment(ref sends); return default; }, r => lost.TrySetResult(r), TimeProvider.System, NullLogger.Instance);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        monitor.Start();

        string reason = await lost.Task.Within(5);

        Assert.StartsWith("no heartbeat for", reason);
        Assert.InRange(clock.Elapsed, Ms(140), TimeSpan.FromSeconds(3));
        Assert.True(Volatile.Read(ref sends) >= 1);
    }

    [Fact]
    public void Timeout_ChangedWhileRunning_AppliesFromTheNextCheck()
    {
        HeartbeatMonitor monitor = Create();
        monitor.Timeout = Ms(2000); // still synchronising: tolerate longer silence
        monitor.Start();
        _time.Advance(Ms(1500));
        Assert.Empty(_lost);
        monitor.HeartbeatReceived();
        monitor.Timeout = Ms(500); // protected: back to the normal timeout
        _time.Advance(Ms(499));
        Assert.Empty(_lost);
        _time.Advance(Ms(600));
        Assert.Single(_lost);
        Assert.Throws<ArgumentOutOfRangeException>(() => monitor.Timeout = Interval);
    }
}
