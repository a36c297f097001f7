using System.Diagnostics;

namespace Colo.Nbd.Internal;

/// <summary>
/// Bounds one connection's requests in flight (from admission until their reply is sent or dropped) by count and by
/// payload bytes. One waiter at a time (the connection's reader loop); releases come from any thread.
/// </summary>
internal sealed class InFlightLimiter(int maxCount, long maxBytes)
{
    private readonly Lock _lock = new();
    private int _count;
    private long _bytes;
    private TaskCompletionSource<bool>? _waiter;
    private long _waiterBytes;
    private TaskCompletionSource? _idle;
    private bool _closed;

    /// <summary>Requests in flight.</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    /// <summary>Admits a request carrying <paramref name="bytes"/> of payload, waiting while the limits are reached.
    /// A request is always admitted when nothing is in flight.</summary>
    /// <returns>False when the limiter was closed (the connection is going away).</returns>
    public ValueTask<bool> AcquireAsync(long bytes)
    {
        lock (_lock)
        {
            if (_closed)
            {
                return new ValueTask<bool>(false);
            }

            if (Fits(bytes))
            {
                _count++;
                _bytes += bytes;
                return new ValueTask<bool>(true);
            }

            Debug.Assert(_waiter is null, "one waiter at a time");
            _waiter = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiterBytes = bytes;
            return new ValueTask<bool>(_waiter.Task);
        }
    }

    /// <summary>Ends one admitted request.</summary>
    public void Release(long bytes)
    {
        TaskCompletionSource<bool>? wake = null;
        TaskCompletionSource? idle = null;
        lock (_lock)
        {
            _count--;
            _bytes -= bytes;
            Debug.Assert(_count >= 0 && _bytes >= 0, "released more than acquired");
            if (_waiter is not null && Fits(_waiterBytes))
            {
                _count++;
                _bytes += _waiterBytes;
                wake = _waiter;
                _waiter = null;
            }

            if (_count == 0 && _idle is not null)
            {
                idle = _idle;
                _idle = null;
            }
        }

        wake?.SetResult(true);
        idle?.SetResult();
    }

    /// <summary>Completes when nothing is in flight.</summary>
    public Task WaitIdleAsync()
    {
        lock (_lock)
        {
            if (_count == 0)
            {
                return Task.CompletedTask;
            }

            _idle ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _idle.Task;
        }
    }

    /// <summary>Refuses further admissions and wakes a waiting one with false.</summary>
    public void Close()
    {
        TaskCompletionSource<bool>? waiter;
        lock (_lock)
        {
            _closed = true;
            waiter = _waiter;
            _waiter = null;
        }

        waiter?.SetResult(false);
    }

    private bool Fits(long bytes) => _count == 0 || (_count < maxCount && _bytes + bytes <= maxBytes);
}
