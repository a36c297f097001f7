using System.Net;

namespace Colo.Demo;

/// <summary>Settings of one <see cref="DiskWorkload"/> run (<c>colo demo-client --scenario disk</c>).</summary>
public sealed class DiskWorkloadOptions
{
    /// <summary>The guest's address (the demo uses 198.18.0.10). Required.</summary>
    public required IPAddress GuestIp { get; init; }

    /// <summary>Guest Redis TCP port. Default 6379.</summary>
    public int RedisPort { get; init; } = 6379;

    /// <summary>How long the <c>SET</c> loop runs; the read-back check follows. Default 30 s.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Timeout of one <c>SET</c> (and of a connect). A <c>SET</c> without a reply in time is "unknown". Default 5 s.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>Pause before a reconnect attempt after an error. Default 200 ms.</summary>
    public TimeSpan ReconnectDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Reply gaps longer than this are recorded in <see cref="DiskWorkloadResult.Gaps"/>. Default 200 ms.</summary>
    public TimeSpan GapThreshold { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>How the acknowledged keys are read back after the loop.</summary>
    public DiskVerifyOptions Verify { get; init; } = new();

    /// <summary>Where to write the result JSON when the run ends; null = do not write.</summary>
    public string? ResultPath { get; init; }

    /// <summary>File to which one JSON line per notable event is appended; null = none.</summary>
    public string? EventsPath { get; init; }

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">A value is out of range.</exception>
    public void Validate()
    {
        ArgumentNullException.ThrowIfNull(GuestIp);
        ArgumentNullException.ThrowIfNull(Verify);
        if (RedisPort is <= 0 or > 65535) throw new ArgumentException($"RedisPort {RedisPort} out of range", nameof(RedisPort));
        if (Duration <= TimeSpan.Zero) throw new ArgumentException("Duration must be positive", nameof(Duration));
        if (RequestTimeout <= TimeSpan.Zero) throw new ArgumentException("RequestTimeout must be positive", nameof(RequestTimeout));
        if (ReconnectDelay < TimeSpan.Zero || GapThreshold < TimeSpan.Zero)
            throw new ArgumentException("pauses and thresholds must not be negative");
        Verify.Validate();
    }
}

/// <summary>How <see cref="DiskWorkload.VerifyKeysAsync"/> reads keys back: pipelined <c>GET</c> batches, retried on failure.</summary>
public sealed class DiskVerifyOptions
{
    /// <summary>GETs per pipelined batch. Default 500.</summary>
    public int BatchSize { get; init; } = 500;

    /// <summary>Time allowed for one batch (send and all replies) and for a connect. Default 10 s.</summary>
    public TimeSpan BatchTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Attempts per batch (a failed batch is retried on a new connection) before the check gives up. Default 10.</summary>
    public int MaxAttempts { get; init; } = 10;

    /// <summary>Pause before retrying a failed batch. Default 500 ms.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Checks the values.</summary>
    /// <exception cref="ArgumentException">A value is out of range.</exception>
    public void Validate()
    {
        if (BatchSize is < 1 or > 100_000) throw new ArgumentException("BatchSize must be 1..100000", nameof(BatchSize));
        if (BatchTimeout <= TimeSpan.Zero) throw new ArgumentException("BatchTimeout must be positive", nameof(BatchTimeout));
        if (MaxAttempts < 1) throw new ArgumentException("MaxAttempts must be >= 1", nameof(MaxAttempts));
        if (RetryDelay < TimeSpan.Zero) throw new ArgumentException("RetryDelay must not be negative", nameof(RetryDelay));
    }
}
