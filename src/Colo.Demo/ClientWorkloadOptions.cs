using System.Net;

namespace Colo.Demo;

/// <summary>Settings of one <see cref="ClientWorkload"/> run (the hidden <c>colo demo-client</c> subcommand).</summary>
public sealed class ClientWorkloadOptions
{
    /// <summary>The guest's address (the demo uses 198.18.0.10). Required.</summary>
    public required IPAddress GuestIp { get; init; }

    /// <summary>Guest Redis TCP port. Default 6379.</summary>
    public int RedisPort { get; init; } = 6379;

    /// <summary>Guest HTTP TCP port. Default 80.</summary>
    public int HttpPort { get; init; } = 80;

    /// <summary>HTTP path requested by the HTTP loop. Default <c>/cgi-bin/counter</c>; the body must match <c>counter=\d+</c>.</summary>
    public string HttpPath { get; init; } = "/cgi-bin/counter";

    /// <summary>How long the Redis and HTTP loops run. Default 30 s.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Run the Redis INCR loop (a). Default true.</summary>
    public bool EnableRedis { get; init; } = true;

    /// <summary>Run the HTTP loop (b). Default true.</summary>
    public bool EnableHttp { get; init; } = true;

    /// <summary>
    /// When (after the workload starts) to launch <c>redis-benchmark</c> (c); null = never (result has <c>ran=false</c>).
    /// Default null. The workload waits for a running benchmark to finish (at most <see cref="BenchmarkTimeout"/>) before returning.
    /// </summary>
    public TimeSpan? BenchmarkStart { get; init; }

    /// <summary>redis-benchmark <c>-n</c>: total requests per test. Default 10000.</summary>
    public int BenchmarkRequests { get; init; } = 10000;

    /// <summary>redis-benchmark <c>-c</c>: parallel connections. Default 10.</summary>
    public int BenchmarkClients { get; init; } = 10;

    /// <summary>redis-benchmark <c>-t</c>: comma-separated tests. Default <c>set,get,incr</c>.</summary>
    public string BenchmarkTests { get; init; } = "set,get,incr";

    /// <summary>Longest time redis-benchmark may run before it is killed (counted as an error). Default 120 s.</summary>
    public TimeSpan BenchmarkTimeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>The redis-benchmark executable (name on PATH or full path). Default <c>redis-benchmark</c>.</summary>
    public string BenchmarkExecutable { get; init; } = "redis-benchmark";

    /// <summary>Timeout of one operation (connect, one INCR reply, one whole HTTP exchange). Default 10 s.</summary>
    public TimeSpan OperationTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Pause between HTTP requests. Default 50 ms.</summary>
    public TimeSpan HttpPause { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Pause before a Redis reconnect attempt after an error. Default 100 ms.</summary>
    public TimeSpan ReconnectDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Redis reply gaps longer than this are recorded in <see cref="RedisWorkloadResult.Gaps"/> and the events file.
    /// Default 20 ms: short enough that the failover gap is measured even when the secondary takes over in tens of ms
    /// (a reply takes ~4 ms here), at the cost of an event per checkpoint pause.
    /// </summary>
    public TimeSpan GapThreshold { get; init; } = TimeSpan.FromMilliseconds(20);

    /// <summary>Redis key incremented by the INCR loop. Default <c>demo</c>.</summary>
    public string RedisKey { get; init; } = "demo";

    /// <summary>Where to write the result JSON when the run ends; null = do not write.</summary>
    public string? ResultPath { get; init; }

    /// <summary>File to which one JSON line per notable event is appended (with <c>at_ms</c>, Unix ms); null = none.</summary>
    public string? EventsPath { get; init; }

    /// <summary>
    /// The client's LAN interface to run the wire probe on (<see cref="WireCapture"/>: sequence numbers of the INCR
    /// connection on the wire, ICMP echo and ARP to the guest); null (the default) runs no probe. Needs CAP_NET_RAW.
    /// </summary>
    public string? WireInterface { get; init; }

    /// <summary>The guest's MAC (replies must come from it); required with <see cref="WireInterface"/>.</summary>
    public string? GuestMac { get; init; }

    /// <summary>Time between two echo requests of the wire probe. Default 250 ms.</summary>
    public TimeSpan PingInterval { get; init; } = TimeSpan.FromMilliseconds(250);

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">A value is out of range (non-positive duration/timeouts/counts, bad port, empty strings).</exception>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(GuestIp);
        if (RedisPort is <= 0 or > 65535) throw new ArgumentException($"RedisPort {RedisPort} out of range", nameof(RedisPort));
        if (HttpPort is <= 0 or > 65535) throw new ArgumentException($"HttpPort {HttpPort} out of range", nameof(HttpPort));
        if (Duration <= TimeSpan.Zero) throw new ArgumentException("Duration must be positive", nameof(Duration));
        if (OperationTimeout <= TimeSpan.Zero) throw new ArgumentException("OperationTimeout must be positive", nameof(OperationTimeout));
        if (BenchmarkTimeout <= TimeSpan.Zero) throw new ArgumentException("BenchmarkTimeout must be positive", nameof(BenchmarkTimeout));
        if (BenchmarkStart is { } s && s < TimeSpan.Zero) throw new ArgumentException("BenchmarkStart must not be negative", nameof(BenchmarkStart));
        if (BenchmarkRequests <= 0) throw new ArgumentException("BenchmarkRequests must be positive", nameof(BenchmarkRequests));
        if (BenchmarkClients <= 0) throw new ArgumentException("BenchmarkClients must be positive", nameof(BenchmarkClients));
        if (HttpPause < TimeSpan.Zero || ReconnectDelay < TimeSpan.Zero || GapThreshold < TimeSpan.Zero)
            throw new ArgumentException("pauses and thresholds must not be negative");
        ArgumentException.ThrowIfNullOrWhiteSpace(BenchmarkTests);
        ArgumentException.ThrowIfNullOrWhiteSpace(BenchmarkExecutable);
        ArgumentException.ThrowIfNullOrWhiteSpace(RedisKey);
        if (WireInterface is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(WireInterface);
            ArgumentException.ThrowIfNullOrWhiteSpace(GuestMac);
            if (PingInterval <= TimeSpan.Zero) throw new ArgumentException("PingInterval must be positive", nameof(PingInterval));
        }
        if (string.IsNullOrEmpty(HttpPath) || HttpPath[0] != '/') throw new ArgumentException("HttpPath must start with '/'", nameof(HttpPath));
    }
}
