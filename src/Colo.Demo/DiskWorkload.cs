using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Demo;

/// <summary>
/// The disk scenario's client (<c>colo demo --scenario disk</c>), run inside the LAN namespace as its own process
/// (<c>colo demo-client --scenario disk</c>). On one TCP connection it issues <c>SET k&lt;i&gt; v&lt;i&gt;</c> for
/// i = 1, 2, 3, ... with one request outstanding: <c>+OK</c> means acknowledged (the guest's Redis fsyncs its
/// append-only file before replying), an error reply means rejected, no reply within the timeout (or a broken
/// connection) means unknown, and the connection is replaced. After the duration it reads every acknowledged key
/// back (<see cref="VerifyKeysAsync"/>):
/// an acknowledged key that is missing or wrong is a lost write.
/// </summary>
public sealed class DiskWorkload
{
    private readonly ILogger _logger;

    /// <summary>Creates a workload runner.</summary>
    /// <param name="logger">Receives progress and error messages; null for none.</param>
    public DiskWorkload(ILogger? logger = null) => _logger = logger ?? NullLogger.Instance;

    /// <summary>The key of write <paramref name="id"/>: <c>k&lt;id&gt;</c>.</summary>
    public static string Key(long id) => "k" + id.ToString(CultureInfo.InvariantCulture);

    /// <summary>The value of write <paramref name="id"/>: <c>v&lt;id&gt;</c>.</summary>
    public static string Value(long id) => "v" + id.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// Runs the <c>SET</c> loop for <see cref="DiskWorkloadOptions.Duration"/> (plus at most one request timeout),
    /// then the read-back, then writes <see cref="DiskWorkloadOptions.ResultPath"/> (atomically) if set. Service
    /// failures are counted, never thrown. Cancelling ends the run early (no read-back) and still returns the result.
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options.</exception>
    /// <exception cref="IOException">The events or result file cannot be written.</exception>
    public async Task<DiskWorkloadResult> RunAsync(DiskWorkloadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var r = new DiskWorkloadResult();
        using var events = new ClientWorkload.EventLog(options.EventsPath);
        var clock = new ClientWorkload.Clock();
        var endPoint = new IPEndPoint(options.GuestIp, options.RedisPort);
        events.Write(clock.UnixMs, "start", $"guest={endPoint} duration_s={options.Duration.TotalSeconds.ToString(CultureInfo.InvariantCulture)}");
        _logger.LogInformation("disk client: SET k<i> v<i> against {EndPoint} for {Duration}", endPoint, options.Duration);

        RespConnection? conn = null;
        try
        {
            conn = await WriteLoopAsync(options, endPoint, r, clock, events, cancellationToken).ConfigureAwait(false);
            if (cancellationToken.IsCancellationRequested)
            {
                r.Verify.Error = "cancelled before the read-back";
            }
            else
            {
                events.Write(clock.UnixMs, "verify_start", $"acked={r.Acked}");
                r.Verify = await VerifyCoreAsync(endPoint, r.AckedIds(), options.Verify, conn, _logger, cancellationToken).ConfigureAwait(false);
                conn = null; // owned and disposed by the read-back
                events.Write(clock.UnixMs, "verify_end", $"complete={r.Verify.Complete} checked={r.Verify.Checked} lost={r.Verify.Lost} {r.Verify.Error}");
            }
        }
        finally
        {
            conn?.Dispose();
        }

        _logger.LogInformation("disk client done: {Attempted} writes, {Acked} acked, {Unknown} unknown, {Rejected} rejected, {Reconnects} reconnects, max stall {Stall} ms; read-back {Checked} checked, {Lost} lost{Error}",
            r.Attempted, r.Acked, r.Unknown, r.Rejected, r.Reconnects, r.MaxStallMs, r.Verify.Checked, r.Verify.Lost, r.Verify.Error is null ? "" : " (" + r.Verify.Error + ")");
        if (options.ResultPath is { } path)
        {
            string tmp = path + ".tmp";
            await File.WriteAllTextAsync(tmp, r.ToJson(), CancellationToken.None).ConfigureAwait(false);
            File.Move(tmp, path, overwrite: true);
        }
        return r;
    }

    /// <summary>The SET loop; returns the open connection (or null) for the read-back.</summary>
    private async Task<RespConnection?> WriteLoopAsync(DiskWorkloadOptions o, IPEndPoint endPoint, DiskWorkloadResult r,
        ClientWorkload.Clock clock, ClientWorkload.EventLog events, CancellationToken ct)
    {
        long gapThresholdMs = (long)o.GapThreshold.TotalMilliseconds;
        long lastAckMs = clock.ElapsedMs;
        bool everConnected = false;
        RespConnection? conn = null;
        while (clock.Elapsed < o.Duration && !ct.IsCancellationRequested)
        {
            string failure;
            long id = 0;
            try
            {
                if (conn is null)
                {
                    conn = await RespConnection.ConnectAsync(endPoint, o.RequestTimeout, ct).ConfigureAwait(false);
                    if (everConnected)
                    {
                        r.Reconnects++;
                        _logger.LogWarning("disk client reconnected");
                    }
                    events.Write(clock.UnixMs, everConnected ? "redis_reconnected" : "redis_connected");
                    everConnected = true;
                }

                id = r.Attempted + 1;
                r.Attempted = id;
                RespReply reply = await conn.RoundTripAsync(RespConnection.Command("SET", Key(id), Value(id)), o.RequestTimeout, ct).ConfigureAwait(false);
                if (reply.IsOk)
                {
                    r.RecordAcked(id);
                    long now = clock.ElapsedMs;
                    TrackGap(r, clock, events, lastAckMs, now, gapThresholdMs, null);
                    lastAckMs = now;
                    continue;
                }
                if (reply.IsError)
                {
                    // An error reply is in step with the request: the write was not applied, the connection stays usable.
                    r.Rejected++;
                    events.Write(clock.UnixMs, "redis_rejected", $"SET {Key(id)}: {reply}");
                    _logger.LogWarning("SET {Key} rejected: {Reply}", Key(id), reply);
                    continue;
                }
                failure = $"unexpected reply {reply}";
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                if (id > 0)
                    r.RecordUnknown(id);
                break;
            }
            catch (Exception e) when (e is TimeoutException or SocketException or IOException or ObjectDisposedException)
            {
                failure = e is SocketException se ? $"socket error: {se.SocketErrorCode}" : e.Message;
            }

            if (id > 0)
                r.RecordUnknown(id);
            events.Write(clock.UnixMs, "redis_error", id > 0 ? $"SET {Key(id)} unknown: {failure}" : $"connect: {failure}");
            _logger.LogWarning("disk client: {What}: {Failure}", id > 0 ? $"SET {Key(id)} without reply" : "connect failed", failure);
            conn?.Dispose();
            conn = null;
            if (clock.Elapsed >= o.Duration)
                break;
            if (!await Pause.TryDelayAsync(o.ReconnectDelay, ct).ConfigureAwait(false))
                break;
        }
        TrackGap(r, clock, events, lastAckMs, clock.ElapsedMs, gapThresholdMs, "until end of run");
        return conn;
    }

    private static void TrackGap(DiskWorkloadResult r, ClientWorkload.Clock clock, ClientWorkload.EventLog events, long fromMs, long toMs, long thresholdMs, string? detail)
    {
        long gap = toMs - fromMs;
        if (gap > r.MaxStallMs)
            r.MaxStallMs = gap;
        if (gap > thresholdMs)
        {
            long at = clock.StartUnixMs + fromMs;
            r.Gaps.Add(new RedisGap { AtMs = at, GapMs = gap });
            events.Write(clock.StartUnixMs + toMs, "redis_gap", detail, gap, at);
        }
    }

    /// <summary>
    /// Reads <c>k&lt;i&gt;</c> for every id in <paramref name="ids"/> with pipelined <c>GET</c> batches and counts the
    /// keys that are missing or do not hold <c>v&lt;i&gt;</c>. A batch that fails (timeout, connection lost, an error
    /// reply such as <c>-LOADING</c>) is retried on a new connection, up to <see cref="DiskVerifyOptions.MaxAttempts"/>
    /// times; then the result is incomplete (<see cref="DiskVerifyResult.Error"/> says why). Never throws for service
    /// failures.
    /// </summary>
    /// <param name="endPoint">The Redis server.</param>
    /// <param name="ids">Write ids to check.</param>
    /// <param name="options">Batch size, timeouts, attempts.</param>
    /// <param name="logger">Receives retry messages; null for none.</param>
    /// <param name="cancellationToken">Ends the check early (incomplete result).</param>
    public static Task<DiskVerifyResult> VerifyKeysAsync(IPEndPoint endPoint, IReadOnlyList<long> ids, DiskVerifyOptions options,
        ILogger? logger = null, CancellationToken cancellationToken = default) =>
        VerifyCoreAsync(endPoint, ids, options, null, logger ?? NullLogger.Instance, cancellationToken);

    /// <summary>As <see cref="VerifyKeysAsync"/>, starting on <paramref name="conn"/> if given (it is disposed in any case).</summary>
    private static async Task<DiskVerifyResult> VerifyCoreAsync(IPEndPoint endPoint, IReadOnlyList<long> ids, DiskVerifyOptions options,
        RespConnection? conn, ILogger logger, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(endPoint);
        ArgumentNullException.ThrowIfNull(ids);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var result = new DiskVerifyResult();
        int next = 0, attempts = 0;
        try
        {
            while (next < ids.Count)
            {
                int count = Math.Min(options.BatchSize, ids.Count - next);
                string? failure;
                try
                {
                    conn ??= await RespConnection.ConnectAsync(endPoint, options.BatchTimeout, ct).ConfigureAwait(false);
                    var lost = await CheckBatchAsync(conn, ids, next, count, options.BatchTimeout, ct).ConfigureAwait(false);
                    result.Checked += count;
                    result.Lost += lost.Count;
                    result.LostSample.AddRange(lost.Take(DiskVerifyResult.MaxSample - result.LostSample.Count));
                    next += count;
                    attempts = 0;
                    continue;
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    result.Error = "cancelled";
                    return result;
                }
                catch (Exception e) when (e is TimeoutException or SocketException or IOException or ObjectDisposedException)
                {
                    failure = e is SocketException se ? $"socket error: {se.SocketErrorCode}" : e.Message;
                }

                conn?.Dispose();
                conn = null;
                if (++attempts >= options.MaxAttempts)
                {
                    result.Error = $"read-back stopped at key {next + 1} of {ids.Count} after {attempts} failed attempts: {failure}";
                    logger.LogWarning("{Error}", result.Error);
                    return result;
                }
                result.Retries++;
                logger.LogWarning("read-back batch failed ({Failure}); retrying", failure);
                if (!await Pause.TryDelayAsync(options.RetryDelay, ct).ConfigureAwait(false))
                {
                    result.Error = "cancelled";
                    return result;
                }
            }
            result.Complete = true;
            return result;
        }
        finally
        {
            conn?.Dispose();
        }
    }

    /// <summary>One pipelined batch; returns the lost ids. An error reply fails the whole batch (IOException).</summary>
    private static async Task<List<long>> CheckBatchAsync(RespConnection conn, IReadOnlyList<long> ids, int first, int count, TimeSpan timeout, CancellationToken ct)
    {
        using var op = CancellationTokenSource.CreateLinkedTokenSource(ct);
        op.CancelAfter(timeout);
        try
        {
            var request = new MemoryStream();
            for (int k = 0; k < count; k++)
                request.Write(RespConnection.Command("GET", Key(ids[first + k])));
            await conn.SendAsync(request.GetBuffer().AsMemory(0, (int)request.Length), op.Token).ConfigureAwait(false);
            var lost = new List<long>();
            string? error = null;
            for (int k = 0; k < count; k++)
            {
                long id = ids[first + k];
                RespReply reply = await conn.ReadReplyAsync(op.Token).ConfigureAwait(false);
                if (reply.IsError)
                    error ??= $"GET {Key(id)}: {reply}";
                else if (reply.Kind != '$')
                    throw new IOException($"protocol error: GET {Key(id)} answered {reply}");
                else if (reply.Text != Value(id))
                    lost.Add(id);
            }
            if (error != null)
                throw new IOException($"error reply, batch to be retried: {error}");
            return lost;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new TimeoutException($"read-back batch of {count} GETs not answered within {timeout.TotalMilliseconds:0} ms");
        }
    }
}
