using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Colo.Demo;

/// <summary>
/// The demo's client: runs inside the LAN namespace (as its own process, e.g. the hidden
/// <c>colo demo-client</c> subcommand started with <c>ip netns exec colo-TAG-lan ...</c>) and drives the guest with
/// (a) a Redis <c>INCR</c> loop over one long-lived TCP connection (checks the counter is continuous),
/// (b) an HTTP loop with one new TCP connection per request, and
/// (c) one <c>redis-benchmark</c> run at a configured offset, and optionally
/// (d) the wire probe (<see cref="WireCapture"/>, with <see cref="ClientWorkloadOptions.WireInterface"/>): a capture on the
/// client's LAN interface that checks the INCR connection's sequence numbers, plus ICMP echo and ARP requests to the guest.
/// All run concurrently; timestamps are Unix milliseconds of the wall clock.
/// </summary>
public sealed partial class ClientWorkload
{
    private readonly ILogger _logger;

    /// <summary>Creates a workload runner.</summary>
    /// <param name="logger">Receives progress and error messages; null for none.</param>
    public ClientWorkload(ILogger? logger = null)
    {
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>
    /// Runs the workload for <see cref="ClientWorkloadOptions.Duration"/> (plus at most one operation timeout for the
    /// last outstanding request, plus any still-running benchmark), then writes
    /// <see cref="ClientWorkloadOptions.ResultPath"/> (atomically, via a temporary file) if set.
    /// Service errors (refused connections, timeouts, bad replies) are counted in the result, never thrown.
    /// Cancelling <paramref name="cancellationToken"/> ends the run early; the partial result is still returned and written.
    /// </summary>
    /// <param name="options">What to run; validated first.</param>
    /// <param name="cancellationToken">Ends the run early.</param>
    /// <returns>The counters of all three workloads.</returns>
    /// <exception cref="ArgumentException">Invalid options.</exception>
    /// <exception cref="IOException">The events or result file cannot be written.</exception>
    /// <exception cref="UnauthorizedAccessException">The events or result file cannot be written.</exception>
    public async Task<ClientWorkloadResult> RunAsync(ClientWorkloadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();

        var result = new ClientWorkloadResult();
        using var events = new EventLog(options.EventsPath);
        var clock = new Clock();
        events.Write(clock.UnixMs, "start", $"guest={options.GuestIp} duration_s={options.Duration.TotalSeconds.ToString(CultureInfo.InvariantCulture)}");
        _logger.LogInformation("client workload against {Guest} for {Duration}", options.GuestIp, options.Duration);

        WireCapture? wire = StartWireProbe(options, result, clock, events);
        try
        {
            var tasks = new List<Task>();
            if (options.EnableRedis)
                tasks.Add(Task.Run(() => RunRedisAsync(options, result.Redis, clock, events, wire, cancellationToken), CancellationToken.None));
            if (options.EnableHttp)
                tasks.Add(Task.Run(() => RunHttpAsync(options, result.Http, clock, events, cancellationToken), CancellationToken.None));
            if (options.BenchmarkStart is { } start)
                tasks.Add(Task.Run(() => RunBenchmarkAsync(options, start, result.RedisBenchmark, clock, events, cancellationToken), CancellationToken.None));

            await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        finally
        {
            if (wire is not null)
                result.Wire = await wire.StopAsync().ConfigureAwait(false);
        }
        if (result.Wire is { } w)
        {
            events.Write(clock.UnixMs, w.Error is null ? "wire_end" : "wire_error",
                $"guest_segments={w.Tcp.Guest.Segments} gaps_and_jumps={w.Tcp.Guest.SeqGaps} client_rsts={w.Tcp.Client.Rsts} pings={w.Icmp.Sent} arp_replies={w.Arp.Replies} drops={w.CaptureDrops}" +
                (w.Error is null ? "" : " error=" + w.Error));
        }

        events.Write(clock.UnixMs, "end",
            $"redis_ops={result.Redis.Ops} redis_errors={result.Redis.Errors} http_requests={result.Http.Requests} http_errors={result.Http.Errors}");
        _logger.LogInformation("client workload done: redis ops {Ops} errors {Errors} continuous {Cont} reconnects {Rec} max stall {Stall} ms; http {Req} requests {HErr} errors; benchmark {Rps:0} req/s {BErr} errors",
            result.Redis.Ops, result.Redis.Errors, result.Redis.Continuous, result.Redis.Reconnects, result.Redis.MaxStallMs,
            result.Http.Requests, result.Http.Errors, result.RedisBenchmark.RequestsPerS, result.RedisBenchmark.Errors);

        if (options.ResultPath is { } path)
        {
            string tmp = path + ".tmp";
            await File.WriteAllTextAsync(tmp, result.ToJson(), CancellationToken.None).ConfigureAwait(false);
            File.Move(tmp, path, overwrite: true);
        }
        return result;
    }

    /// <summary>Starts the wire probe when <see cref="ClientWorkloadOptions.WireInterface"/> is set; a probe that cannot start is recorded in <paramref name="result"/>.</summary>
    private WireCapture? StartWireProbe(ClientWorkloadOptions o, ClientWorkloadResult result, Clock clock, EventLog events)
    {
        if (o.WireInterface is not { } name)
            return null;
        try
        {
            WireCapture wire = WireCapture.Start(new WireCaptureOptions
            {
                InterfaceName = name,
                GuestIp = o.GuestIp,
                GuestMac = o.GuestMac!,
                PingInterval = o.PingInterval,
            }, _logger);
            events.Write(clock.UnixMs, "wire_start", wire.ToString());
            return wire;
        }
        catch (Exception e) when (e is IOException or SocketException or UnauthorizedAccessException or ArgumentException)
        {
            result.Wire = new WireProbeResult { Interface = name, Error = e.Message };
            events.Write(clock.UnixMs, "wire_error", e.Message);
            _logger.LogWarning("wire probe could not start: {Error}", e.Message);
            return null;
        }
    }

    // ---------------------------------------------------------------- (a) Redis

    private async Task RunRedisAsync(ClientWorkloadOptions o, RedisWorkloadResult r, Clock clock, EventLog events, WireCapture? wire, CancellationToken ct)
    {
        byte[] request = BuildIncrRequest(o.RedisKey);
        var endPoint = new IPEndPoint(o.GuestIp, o.RedisPort);
        long gapThresholdMs = (long)o.GapThreshold.TotalMilliseconds;
        long lastSuccessMs = clock.ElapsedMs;
        long? previous = null;
        bool everConnected = false;
        Socket? socket = null;
        var reader = new LineReader();

        try
        {
            while (clock.Elapsed < o.Duration && !ct.IsCancellationRequested)
            {
                string? failure;
                try
                {
                    using var op = CancellationTokenSource.CreateLinkedTokenSource(ct);
                    op.CancelAfter(o.OperationTimeout);
                    if (socket is null)
                    {
                        socket = await ConnectAsync(endPoint, op.Token, wire).ConfigureAwait(false);
                        reader.Reset();
                        if (everConnected)
                        {
                            r.Reconnects++;
                            events.Write(clock.UnixMs, "redis_reconnected");
                            _logger.LogWarning("redis reconnected");
                        }
                        else
                        {
                            events.Write(clock.UnixMs, "redis_connected");
                        }
                        everConnected = true;
                    }

                    await socket.SendAsync(request, SocketFlags.None, op.Token).ConfigureAwait(false);
                    string line = await reader.ReadLineAsync(socket, op.Token).ConfigureAwait(false);
                    if (TryParseRespInteger(line, out long value))
                    {
                        long now = clock.ElapsedMs;
                        long gap = now - lastSuccessMs;
                        if (gap > r.MaxStallMs)
                            r.MaxStallMs = gap;
                        if (gap > gapThresholdMs)
                        {
                            long at = clock.StartUnixMs + lastSuccessMs;
                            r.Gaps.Add(new RedisGap { AtMs = at, GapMs = gap });
                            events.Write(clock.StartUnixMs + now, "redis_gap", null, gap, at);
                        }
                        lastSuccessMs = now;
                        r.Ops++;
                        if (previous is { } p && value != p + 1)
                        {
                            r.Continuous = false;
                            events.Write(clock.UnixMs, "redis_discontinuity", $"expected {p + 1}, got {value}");
                            _logger.LogWarning("redis counter discontinuity: expected {Expected}, got {Value}", p + 1, value);
                        }
                        previous = value;
                        continue;
                    }
                    failure = line.StartsWith('-') ? $"error reply: {line}" : $"protocol error: unexpected reply '{Truncate(line, 80)}'";
                }
                catch (OperationCanceledException) when (ct.IsCancellationRequested)
                {
                    break;
                }
                catch (OperationCanceledException)
                {
                    failure = $"timeout after {o.OperationTimeout.TotalMilliseconds:0} ms";
                }
                catch (SocketException ex)
                {
                    failure = $"socket error: {ex.SocketErrorCode}";
                }
                catch (IOException ex)
                {
                    failure = ex.Message;
                }
                catch (ObjectDisposedException ex)
                {
                    failure = ex.Message;
                }

                r.Errors++;
                events.Write(clock.UnixMs, "redis_error", failure);
                _logger.LogWarning("redis operation failed: {Failure}", failure);
                socket?.Dispose();
                socket = null;
                if (clock.Elapsed >= o.Duration)
                    break;
                if (!await Pause.TryDelayAsync(o.ReconnectDelay, ct).ConfigureAwait(false))
                    break;
            }
        }
        finally
        {
            socket?.Dispose();
        }

        long tail = clock.ElapsedMs - lastSuccessMs;
        if (tail > r.MaxStallMs)
            r.MaxStallMs = tail;
        if (tail > gapThresholdMs)
        {
            long at = clock.StartUnixMs + lastSuccessMs;
            r.Gaps.Add(new RedisGap { AtMs = at, GapMs = tail });
            events.Write(clock.UnixMs, "redis_gap", "until end of run", tail, at);
        }
    }

    /// <summary>Builds the RESP array for <c>INCR key</c>.</summary>
    internal static byte[] BuildIncrRequest(string key)
    {
        int keyBytes = Encoding.UTF8.GetByteCount(key);
        return Encoding.UTF8.GetBytes($"*2\r\n$4\r\nINCR\r\n${keyBytes}\r\n{key}\r\n");
    }

    /// <summary>Parses a RESP integer reply line (without CRLF), e.g. <c>:42</c>.</summary>
    internal static bool TryParseRespInteger(string line, out long value)
    {
        value = 0;
        return line.Length > 1 && line[0] == ':' &&
               long.TryParse(line.AsSpan(1), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out value);
    }

    // ---------------------------------------------------------------- (b) HTTP

    private async Task RunHttpAsync(ClientWorkloadOptions o, HttpWorkloadResult r, Clock clock, EventLog events, CancellationToken ct)
    {
        var endPoint = new IPEndPoint(o.GuestIp, o.HttpPort);
        byte[] request = Encoding.ASCII.GetBytes(
            $"GET {o.HttpPath} HTTP/1.0\r\nHost: {FormatHost(o.GuestIp, o.HttpPort)}\r\nUser-Agent: colo-demo\r\nConnection: close\r\n\r\n");
        long lastSuccessMs = clock.ElapsedMs;

        while (clock.Elapsed < o.Duration && !ct.IsCancellationRequested)
        {
            string? failure;
            try
            {
                using var op = CancellationTokenSource.CreateLinkedTokenSource(ct);
                op.CancelAfter(o.OperationTimeout);
                failure = await HttpGetOnceAsync(endPoint, request, op.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                break;
            }
            catch (OperationCanceledException)
            {
                failure = $"timeout after {o.OperationTimeout.TotalMilliseconds:0} ms";
            }
            catch (SocketException ex)
            {
                failure = $"socket error: {ex.SocketErrorCode}";
            }
            catch (IOException ex)
            {
                failure = ex.Message;
            }

            if (failure is null)
            {
                long now = clock.ElapsedMs;
                r.MaxStallMs = Math.Max(r.MaxStallMs, now - lastSuccessMs);
                lastSuccessMs = now;
                r.Requests++;
            }
            else
            {
                r.Errors++;
                events.Write(clock.UnixMs, "http_error", failure);
                _logger.LogWarning("http request failed: {Failure}", failure);
            }

            if (clock.Elapsed >= o.Duration)
                break;
            if (!await Pause.TryDelayAsync(o.HttpPause, ct).ConfigureAwait(false))
                break;
        }

        r.MaxStallMs = Math.Max(r.MaxStallMs, clock.ElapsedMs - lastSuccessMs);
    }

    /// <summary>One GET over a fresh connection; returns null on success or a failure description.</summary>
    private static async Task<string?> HttpGetOnceAsync(IPEndPoint endPoint, byte[] request, CancellationToken ct)
    {
        using Socket socket = await ConnectAsync(endPoint, ct).ConfigureAwait(false);
        await socket.SendAsync(request, SocketFlags.None, ct).ConfigureAwait(false);
        var response = new MemoryStream();
        byte[] buffer = new byte[4096];
        while (true)
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, ct).ConfigureAwait(false);
            if (n == 0)
                break;
            response.Write(buffer, 0, n);
            if (response.Length > 1 << 20)
                return "response larger than 1 MiB";
        }
        return CheckHttpResponse(Encoding.ASCII.GetString(response.GetBuffer(), 0, (int)response.Length));
    }

    /// <summary>Checks a complete HTTP response: status 200 and a body matching <c>counter=\d+</c>. Null when fine, else why not.</summary>
    internal static string? CheckHttpResponse(string response)
    {
        if (response.Length == 0)
            return "empty response (connection closed)";
        int eol = response.IndexOf("\r\n", StringComparison.Ordinal);
        string statusLine = eol >= 0 ? response[..eol] : response;
        string[] parts = statusLine.Split(' ', 3);
        if (parts.Length < 2 || !parts[0].StartsWith("HTTP/", StringComparison.Ordinal))
            return $"malformed status line '{Truncate(statusLine, 80)}'";
        if (parts[1] != "200")
            return $"status {Truncate(statusLine, 80)}";
        int bodyStart = response.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (bodyStart < 0)
            return "response without end of headers";
        string body = response[(bodyStart + 4)..];
        return CounterRegex().IsMatch(body) ? null : $"body does not match counter=\\d+: '{Truncate(body.Trim(), 80)}'";
    }

    [GeneratedRegex(@"counter=\d+")]
    private static partial Regex CounterRegex();

    // ---------------------------------------------------------------- (c) redis-benchmark

    private async Task RunBenchmarkAsync(ClientWorkloadOptions o, TimeSpan start, RedisBenchmarkResult r, Clock clock, EventLog events, CancellationToken ct)
    {
        TimeSpan wait = start - clock.Elapsed;
        if (wait > TimeSpan.Zero && !await Pause.TryDelayAsync(wait, ct).ConfigureAwait(false))
            return;

        var psi = new ProcessStartInfo(o.BenchmarkExecutable);
        foreach (string a in new[]
                 {
                     "-h", o.GuestIp.ToString(), "-p", o.RedisPort.ToString(CultureInfo.InvariantCulture),
                     "-t", o.BenchmarkTests, "-n", o.BenchmarkRequests.ToString(CultureInfo.InvariantCulture),
                     "-c", o.BenchmarkClients.ToString(CultureInfo.InvariantCulture), "--csv",
                 })
            psi.ArgumentList.Add(a);

        events.Write(clock.UnixMs, "benchmark_start", DemoProcess.Describe(psi));
        _logger.LogInformation("starting {Command}", DemoProcess.Describe(psi));
        ProcessResult pr;
        try
        {
            r.Ran = true;
            pr = await DemoProcess.RunAsync(psi, o.BenchmarkTimeout, ct).ConfigureAwait(false);
        }
        catch (InvalidOperationException ex)
        {
            r.Ran = false;
            r.Errors = 1;
            events.Write(clock.UnixMs, "benchmark_error", ex.Message);
            _logger.LogWarning("redis-benchmark could not start: {Message}", ex.Message);
            return;
        }
        catch (OperationCanceledException)
        {
            r.Errors = 1;
            events.Write(clock.UnixMs, "benchmark_error", "cancelled");
            return;
        }

        RedisBenchmarkResult parsed = ParseBenchmarkCsv(pr.StdOut, o.BenchmarkTests);
        r.RequestsPerS = parsed.RequestsPerS;
        r.Errors = parsed.Errors + (pr.TimedOut ? 1 : 0) + (!pr.TimedOut && pr.ExitCode != 0 ? 1 : 0);
        string detail = pr.TimedOut
            ? $"timed out after {o.BenchmarkTimeout.TotalSeconds:0} s; killed"
            : $"exit {pr.ExitCode}, {r.RequestsPerS:0} req/s, {r.Errors} errors";
        if (r.Errors != 0 && pr.StdErr.Length > 0)
            detail += "; stderr: " + Truncate(pr.StdErr.Trim(), 300);
        events.Write(clock.UnixMs, r.Errors == 0 ? "benchmark_end" : "benchmark_error", detail);
        if (r.Errors != 0)
            _logger.LogWarning("redis-benchmark: {Detail}", detail);
    }

    /// <summary>
    /// Parses <c>redis-benchmark --csv</c> output (header <c>"test","rps",...</c>, then one row per test).
    /// <c>RequestsPerS</c> is the mean rps of the requested tests found; <c>Errors</c> counts requested tests that are missing.
    /// </summary>
    /// <param name="csv">Standard output of redis-benchmark.</param>
    /// <param name="tests">The <c>-t</c> list, e.g. <c>set,get,incr</c>.</param>
    /// <returns>A result with <c>Ran</c> = true.</returns>
    public static RedisBenchmarkResult ParseBenchmarkCsv(string csv, string tests)
    {
        ArgumentNullException.ThrowIfNull(csv);
        ArgumentNullException.ThrowIfNull(tests);
        var rps = new Dictionary<string, double>(StringComparer.OrdinalIgnoreCase);
        foreach (string raw in csv.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0)
                continue;
            string[] fields = line.Split(',').Select(f => f.Trim().Trim('"')).ToArray();
            if (fields.Length < 2)
                continue;
            if (double.TryParse(fields[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double value))
                rps[fields[0]] = value;
        }

        var wanted = tests.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var found = wanted.Where(rps.ContainsKey).Select(t => rps[t]).ToList();
        return new RedisBenchmarkResult
        {
            Ran = true,
            RequestsPerS = found.Count > 0 ? found.Average() : 0,
            Errors = wanted.Length - found.Count,
        };
    }

    // ---------------------------------------------------------------- helpers

    /// <summary>Connects a new TCP socket; with <paramref name="wire"/>, binds it first and has the probe follow the connection from its SYN.</summary>
    private static async Task<Socket> ConnectAsync(IPEndPoint endPoint, CancellationToken ct, WireCapture? wire = null)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            if (wire is not null)
            {
                socket.Bind(new IPEndPoint(endPoint.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0));
                wire.Track((IPEndPoint)socket.LocalEndPoint!, endPoint);
            }
            await socket.ConnectAsync(endPoint, ct).ConfigureAwait(false);
            // TCP simultaneous open can connect a socket to itself when nothing listens on a local ephemeral port.
            if (socket.LocalEndPoint is IPEndPoint local && local.Equals(endPoint))
                throw new SocketException((int)SocketError.ConnectionRefused);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private static string FormatHost(IPAddress ip, int port) =>
        port == 80 ? ip.ToString() : $"{ip}:{port.ToString(CultureInfo.InvariantCulture)}";

    private static string Truncate(string s, int max) => s.Length <= max ? s : s[..max] + "...";

    /// <summary>Buffered reader of CRLF-terminated lines from a socket.</summary>
    private sealed class LineReader
    {
        private readonly byte[] _buffer = new byte[4096];
        private int _count;

        public void Reset() => _count = 0;

        public async Task<string> ReadLineAsync(Socket socket, CancellationToken ct)
        {
            while (true)
            {
                int idx = _buffer.AsSpan(0, _count).IndexOf("\r\n"u8);
                if (idx >= 0)
                {
                    string line = Encoding.UTF8.GetString(_buffer, 0, idx);
                    int rest = _count - idx - 2;
                    Buffer.BlockCopy(_buffer, idx + 2, _buffer, 0, rest);
                    _count = rest;
                    return line;
                }
                if (_count == _buffer.Length)
                    throw new IOException("reply line longer than 4096 bytes");
                int n = await socket.ReceiveAsync(_buffer.AsMemory(_count), SocketFlags.None, ct).ConfigureAwait(false);
                if (n == 0)
                    throw new IOException("connection closed by server");
                _count += n;
            }
        }
    }

    /// <summary>Wall-clock start plus a monotonic stopwatch.</summary>
    internal sealed class Clock
    {
        private readonly Stopwatch _watch = Stopwatch.StartNew();

        public long StartUnixMs { get; } = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

        public TimeSpan Elapsed => _watch.Elapsed;

        public long ElapsedMs => _watch.ElapsedMilliseconds;

        public long UnixMs => StartUnixMs + _watch.ElapsedMilliseconds;
    }

    /// <summary>Appends one JSON object per line; thread-safe; flushed per line so other processes can tail it.</summary>
    internal sealed class EventLog : IDisposable
    {
        private readonly StreamWriter? _writer;
        private readonly Lock _gate = new();

        public EventLog(string? path)
        {
            if (path is null)
                return;
            var stream = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite);
            _writer = new StreamWriter(stream, new UTF8Encoding(false)) { AutoFlush = true };
        }

        public void Write(long atMs, string name, string? detail = null, long? gapMs = null, long? gapStartMs = null)
        {
            if (_writer is null)
                return;
            string line = JsonSerializer.Serialize(new WorkloadEvent
            {
                AtMs = atMs,
                Event = name,
                Detail = detail,
                GapMs = gapMs,
                GapStartMs = gapStartMs,
            }, EventJson);
            lock (_gate)
                _writer.WriteLine(line);
        }

        public void Dispose()
        {
            lock (_gate)
                _writer?.Dispose();
        }

        private static readonly JsonSerializerOptions EventJson = new()
        {
            WriteIndented = false,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        };
    }
}

/// <summary>
/// One line of the workload's events file, e.g.
/// <c>{"at_ms":1764526800123,"event":"redis_gap","gap_ms":1840,"gap_start_ms":1764526798283}</c>.
/// Events: <c>start</c>, <c>redis_connected</c>, <c>redis_error</c>, <c>redis_reconnected</c>, <c>redis_gap</c>,
/// <c>redis_discontinuity</c>, <c>http_error</c>, <c>benchmark_start</c>, <c>benchmark_end</c>, <c>benchmark_error</c>,
/// <c>wire_start</c>, <c>wire_end</c>, <c>wire_error</c>, <c>end</c>.
/// </summary>
public sealed class WorkloadEvent
{
    /// <summary>When it happened, Unix time in milliseconds (for <c>redis_gap</c>: when the gap ended).</summary>
    [JsonPropertyName("at_ms")]
    public long AtMs { get; set; }

    /// <summary>Event name.</summary>
    [JsonPropertyName("event")]
    public string Event { get; set; } = "";

    /// <summary>Human-readable detail, if any.</summary>
    [JsonPropertyName("detail")]
    public string? Detail { get; set; }

    /// <summary>For <c>redis_gap</c>: gap length in milliseconds.</summary>
    [JsonPropertyName("gap_ms")]
    public long? GapMs { get; set; }

    /// <summary>For <c>redis_gap</c>: gap start, Unix time in milliseconds.</summary>
    [JsonPropertyName("gap_start_ms")]
    public long? GapStartMs { get; set; }
}
