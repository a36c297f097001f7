using System.Text.Json;
using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>
/// What <see cref="ClientWorkload"/> measured; serialised as
/// <c>{"redis":{...},"http":{...},"redis_benchmark":{...},"wire":{...}}</c> with snake_case names (<c>wire</c> only with the wire probe).
/// </summary>
public sealed class ClientWorkloadResult
{
    /// <summary>Redis INCR loop results.</summary>
    [JsonPropertyName("redis")]
    public RedisWorkloadResult Redis { get; set; } = new();

    /// <summary>HTTP loop results.</summary>
    [JsonPropertyName("http")]
    public HttpWorkloadResult Http { get; set; } = new();

    /// <summary>redis-benchmark results.</summary>
    [JsonPropertyName("redis_benchmark")]
    public RedisBenchmarkResult RedisBenchmark { get; set; } = new();

    /// <summary>The wire probe's findings; null (omitted) when no probe ran (<see cref="ClientWorkloadOptions.WireInterface"/> not set).</summary>
    [JsonPropertyName("wire")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public WireProbeResult? Wire { get; set; }

    /// <summary>The serializer options used by <see cref="ToJson"/>/<see cref="FromJson"/> (indented; names come from attributes).</summary>
    public static JsonSerializerOptions JsonOptions => DemoJson.Options;

    /// <summary>Serialises to indented JSON.</summary>
    /// <returns>The JSON text.</returns>
    public string ToJson() => JsonSerializer.Serialize(this, DemoJson.Options);

    /// <summary>Parses JSON written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The result.</returns>
    /// <exception cref="JsonException">Malformed JSON or the literal <c>null</c>.</exception>
    public static ClientWorkloadResult FromJson(string json) =>
        JsonSerializer.Deserialize<ClientWorkloadResult>(json, DemoJson.Options) ?? throw new JsonException("null workload result");

    /// <summary>Reads a result file written by the workload.</summary>
    /// <param name="path">Path of the JSON file.</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    /// <returns>The result.</returns>
    /// <exception cref="IOException">The file cannot be read.</exception>
    /// <exception cref="JsonException">The file is not a valid result.</exception>
    public static async Task<ClientWorkloadResult> ReadAsync(string path, CancellationToken cancellationToken = default) =>
        FromJson(await File.ReadAllTextAsync(path, cancellationToken).ConfigureAwait(false));
}

/// <summary>Results of the long-lived-connection Redis <c>INCR</c> loop.</summary>
public sealed class RedisWorkloadResult
{
    /// <summary>Successful INCR replies.</summary>
    [JsonPropertyName("ops")]
    public long Ops { get; set; }

    /// <summary>Failed operations: connect failures, reply timeouts, protocol/error replies, disconnects.</summary>
    [JsonPropertyName("errors")]
    public long Errors { get; set; }

    /// <summary>True when every reply after the first was exactly the previous reply + 1.</summary>
    [JsonPropertyName("continuous")]
    public bool Continuous { get; set; } = true;

    /// <summary>Connections re-established after an error (the first connection is not counted).</summary>
    [JsonPropertyName("reconnects")]
    public long Reconnects { get; set; }

    /// <summary>
    /// Largest gap, in milliseconds, between consecutive successful replies; the loop start counts as the first
    /// reference point and the run end as the last (so a stall at the very end, or no reply at all, is visible).
    /// </summary>
    [JsonPropertyName("max_stall_ms")]
    public long MaxStallMs { get; set; }

    /// <summary>Every reply gap longer than the gap threshold (default 200 ms), in time order.</summary>
    [JsonPropertyName("gaps")]
    public List<RedisGap> Gaps { get; set; } = [];
}

/// <summary>One long pause between two successful Redis replies.</summary>
public sealed class RedisGap
{
    /// <summary>Start of the gap: Unix time in milliseconds of the last reply before it (or of the loop start).</summary>
    [JsonPropertyName("at_ms")]
    public long AtMs { get; set; }

    /// <summary>Length of the gap in milliseconds; the gap covers [<see cref="AtMs"/>, <see cref="AtMs"/> + GapMs].</summary>
    [JsonPropertyName("gap_ms")]
    public long GapMs { get; set; }
}

/// <summary>Results of the HTTP loop (one new TCP connection per request).</summary>
public sealed class HttpWorkloadResult
{
    /// <summary>Successful requests (status 200 and a body matching <c>counter=\d+</c>).</summary>
    [JsonPropertyName("requests")]
    public long Requests { get; set; }

    /// <summary>Failed requests: connect/read failures, timeouts, non-200 status, body mismatch.</summary>
    [JsonPropertyName("errors")]
    public long Errors { get; set; }

    /// <summary>Largest gap in milliseconds between consecutive successes (loop start and run end included as reference points).</summary>
    [JsonPropertyName("max_stall_ms")]
    public long MaxStallMs { get; set; }
}

/// <summary>Results of the redis-benchmark run.</summary>
public sealed class RedisBenchmarkResult
{
    /// <summary>Average over the tests found in the CSV of their requests per second; 0 if none.</summary>
    [JsonPropertyName("requests_per_s")]
    public double RequestsPerS { get; set; }

    /// <summary>Errors: 1 for a non-zero exit, 1 for a timeout or start failure, plus 1 per requested test missing from the CSV.</summary>
    [JsonPropertyName("errors")]
    public long Errors { get; set; }

    /// <summary>True when redis-benchmark was started.</summary>
    [JsonPropertyName("ran")]
    public bool Ran { get; set; }
}

internal static class DemoJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static readonly JsonSerializerOptions Compact = new()
    {
        WriteIndented = false,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };
}
