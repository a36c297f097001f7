using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Colo.Demo;

/// <summary>
/// The final record of <c>colo demo --json PATH</c>:
/// <c>{"ok","scenario","duration_s","redis":{...},"http":{...},"redis_benchmark":{...},"checkpoints":{...},"failover":{...},"wire":{...},"icmp":{...},"arp":{...},"disk":{...}}</c>.
/// The disk scenario (<see cref="ForDisk"/>) has <c>"seed"</c> and no <c>redis</c>, <c>http</c> or <c>redis_benchmark</c>;
/// <c>disk</c> is omitted when nothing about the disk was measured, <c>wire</c>, <c>icmp</c> and <c>arp</c> when the client ran no wire probe.
/// </summary>
public sealed partial class DemoReport
{
    /// <summary>Acceptance limit for <see cref="DemoFailoverSummary.DetectedMs"/> (milliseconds).</summary>
    public const long MaxDetectedMs = 1000;

    /// <summary>Acceptance limit for <see cref="DemoFailoverSummary.ClientGapMs"/> (milliseconds).</summary>
    public const long MaxClientGapMs = 3000;

    /// <summary>
    /// Length of the window after the kill in which a Redis reply gap counts as the failover gap (milliseconds): the gap
    /// in progress at the kill, or one starting within this window after it (a reply released just before the kill
    /// starts the gap a moment later). Kept short so that an unrelated stall later in the run is not taken for it.
    /// </summary>
    public const long DefaultFailoverWindowMs = 1_000;

    /// <summary>The serializer options used by <see cref="ToJson"/>/<see cref="FromJson"/> (indented; names come from attributes).</summary>
    public static JsonSerializerOptions JsonOptions => DemoJson.Options;

    /// <summary>
    /// Checkpoints by trigger (mismatch, timeout, queue_full, operator, periodic); the same dictionary as
    /// <see cref="DemoCheckpointSummary.ByReason"/> (JSON <c>checkpoints.by_reason</c>). Setting it fills in every reason.
    /// </summary>
    [JsonIgnore]
    public Dictionary<string, int> CheckpointsByReason
    {
        get => Checkpoints.ByReason;
        set => Checkpoints.ByReason = DemoCheckpointSummary.AllReasons(value);
    }

    /// <summary>What was killed at <see cref="DemoFailoverSummary.KilledAtS"/>, for the human summary (e.g. "primary's QEMU"); not in the JSON.</summary>
    [JsonIgnore]
    public string KilledWhat { get; set; } = "primary";

    /// <summary>
    /// Failures found by the orchestrator rather than by a field rule (e.g. a split brain at the end); listed by
    /// <see cref="FailedRules"/>. Not in the JSON.
    /// </summary>
    [JsonIgnore]
    public List<string> RunFailures { get; } = [];

    /// <summary>True when every acceptance rule holds; set it with <see cref="UpdateOk"/>.</summary>
    [JsonPropertyName("ok")]
    public bool Ok { get; set; }

    /// <summary>Which demo ran: <see cref="ServiceScenario"/> (default) or <see cref="DiskScenarioName"/>.</summary>
    [JsonPropertyName("scenario")]
    public string Scenario { get; set; } = ServiceScenario;

    /// <summary>The disk scenario's seed (it fixes the kill moment); null (omitted) in the service scenario.</summary>
    [JsonPropertyName("seed")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public int? Seed { get; set; }

    /// <summary>Wall-clock length of the demo run in seconds.</summary>
    [JsonPropertyName("duration_s")]
    public double DurationS { get; set; }

    /// <summary>Redis INCR loop summary.</summary>
    [JsonPropertyName("redis")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoRedisSummary? Redis { get; set; }

    /// <summary>HTTP loop summary.</summary>
    [JsonPropertyName("http")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoHttpSummary? Http { get; set; }

    /// <summary>redis-benchmark summary.</summary>
    [JsonPropertyName("redis_benchmark")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoBenchmarkSummary? RedisBenchmark { get; set; }

    /// <summary>Checkpoint statistics.</summary>
    [JsonPropertyName("checkpoints")]
    public DemoCheckpointSummary Checkpoints { get; set; } = new();

    /// <summary>Failover measurements.</summary>
    [JsonPropertyName("failover")]
    public DemoFailoverSummary Failover { get; set; } = new();

    /// <summary>The INCR connection's sequence numbers as captured on the client's LAN interface; null (omitted) without the wire probe.</summary>
    [JsonPropertyName("wire")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoWireSummary? Wire { get; set; }

    /// <summary>The client's ICMP echo probe; null (omitted) without the wire probe.</summary>
    [JsonPropertyName("icmp")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoIcmpSummary? Icmp { get; set; }

    /// <summary>The client's ARP probe; null (omitted) without the wire probe.</summary>
    [JsonPropertyName("arp")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoArpSummary? Arp { get; set; }

    /// <summary>Disk figures (see <see cref="DemoDiskSummary"/>); null (omitted) when nothing was measured.</summary>
    [JsonPropertyName("disk")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public DemoDiskSummary? Disk { get; set; }

    /// <summary>
    /// Assembles a report (with <see cref="Ok"/> already computed) from the client's result and the orchestrator's measurements.
    /// </summary>
    /// <param name="client">The client workload's result (its Redis gaps are not copied; compute the failover gap with <see cref="ComputeClientGapMs"/>).</param>
    /// <param name="durationS">Demo wall-clock duration in seconds.</param>
    /// <param name="checkpointPausesMs">Guest pause of each checkpoint in milliseconds (count, p50 and p99 are derived).</param>
    /// <param name="failover">Kill time, detection time and client gap.</param>
    /// <returns>The report.</returns>
    /// <exception cref="ArgumentNullException">A reference argument is null.</exception>
    public static DemoReport Create(ClientWorkloadResult client, double durationS, IReadOnlyCollection<double> checkpointPausesMs, DemoFailoverSummary failover)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(checkpointPausesMs);
        ArgumentNullException.ThrowIfNull(failover);
        var report = new DemoReport
        {
            DurationS = durationS,
            Redis = new DemoRedisSummary
            {
                Ops = client.Redis.Ops,
                Errors = client.Redis.Errors,
                Continuous = client.Redis.Continuous,
                Reconnects = client.Redis.Reconnects,
                MaxStallMs = client.Redis.MaxStallMs,
            },
            Http = new DemoHttpSummary
            {
                Requests = client.Http.Requests,
                Errors = client.Http.Errors,
                MaxStallMs = client.Http.MaxStallMs,
            },
            RedisBenchmark = new DemoBenchmarkSummary
            {
                RequestsPerS = client.RedisBenchmark.RequestsPerS,
                Errors = client.RedisBenchmark.Errors,
            },
            Checkpoints = new DemoCheckpointSummary
            {
                Count = checkpointPausesMs.Count,
                PauseMsP50 = Percentile(checkpointPausesMs, 50),
                PauseMsP99 = Percentile(checkpointPausesMs, 99),
            },
            Failover = failover,
        };
        report.UpdateOk();
        return report;
    }

    /// <summary>
    /// Assembles a report (with <see cref="Ok"/> computed) from the orchestrator's raw measurements.
    /// With a kill (<paramref name="killedAtUnixMs"/> &gt; 0): detected_ms = <paramref name="detectedAtUnixMs"/> − kill time,
    /// or −1 when the secondary never detected the loss (<paramref name="detectedAtUnixMs"/> ≤ 0), which fails the rules;
    /// client_gap_ms from <see cref="ComputeClientGapMs"/>. Without a kill both are 0. The wire probe's sections come
    /// from <see cref="ClientWorkloadResult.Wire"/> (see <see cref="ApplyWireProbe"/>).
    /// </summary>
    /// <param name="durationS">Demo duration in seconds.</param>
    /// <param name="workload">The client workload's result.</param>
    /// <param name="checkpointCount">Completed checkpoints (may exceed the number of pause samples).</param>
    /// <param name="pausesMs">Guest pause per checkpoint in milliseconds (for p50/p99).</param>
    /// <param name="killedAtS">When the primary was killed, seconds after the clients started; negative when not killed.</param>
    /// <param name="killedAtUnixMs">Kill time, Unix milliseconds; 0 when not killed.</param>
    /// <param name="detectedAtUnixMs">When the secondary declared the primary lost, Unix milliseconds; 0 when it did not.</param>
    /// <param name="failoverWindowMs">Window after the kill for the client gap, milliseconds; default 1 000.</param>
    /// <returns>The report.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="workload"/> or <paramref name="pausesMs"/> is null.</exception>
    public static DemoReport From(double durationS, ClientWorkloadResult workload, long checkpointCount, IReadOnlyCollection<double> pausesMs,
        double killedAtS, long killedAtUnixMs, long detectedAtUnixMs, long failoverWindowMs = DefaultFailoverWindowMs)
    {
        ArgumentNullException.ThrowIfNull(workload);
        ArgumentNullException.ThrowIfNull(pausesMs);
        var failover = new DemoFailoverSummary { KilledAtS = killedAtS };
        if (killedAtUnixMs > 0)
        {
            failover.DetectedMs = detectedAtUnixMs > 0 ? detectedAtUnixMs - killedAtUnixMs : -1;
            failover.ClientGapMs = ComputeClientGapMs(workload.Redis.Gaps, killedAtUnixMs, failoverWindowMs);
        }
        DemoReport report = Create(workload, durationS, pausesMs, failover);
        report.Checkpoints.Count = checkpointCount;
        report.ApplyWireProbe(workload.Wire, killedAtUnixMs, detectedAtUnixMs);
        report.UpdateOk();
        return report;
    }

    /// <summary>
    /// The acceptance rules that fail, plus <see cref="RunFailures"/>. Service scenario: redis.errors==0,
    /// redis.continuous, redis.reconnects==0, http.errors==0, redis_benchmark.errors==0, checkpoints.count&gt;=1,
    /// failover.detected_ms&lt;=1000 (and not negative: −1 means "never detected", another negative value "detected
    /// before the kill"), failover.client_gap_ms&lt;=3000, and the wire probe's rules when its sections are present
    /// (see <see cref="FailedWireRules"/>). Disk scenario: see <see cref="FailedDiskRules"/>.
    /// </summary>
    /// <returns>One description per failed rule; empty when all hold.</returns>
    public IReadOnlyList<string> FailedRules()
    {
        var failed = new List<string>();
        if (Scenario == DiskScenarioName)
            FailedDiskRules(failed);
        else
            FailedServiceRules(failed);
        failed.AddRange(RunFailures);
        return failed;
    }

    private void FailedServiceRules(List<string> failed)
    {
        if (Redis is null || Http is null || RedisBenchmark is null)
        {
            failed.Add("redis, http and redis_benchmark sections present");
            return;
        }
        if (Redis.Errors != 0) failed.Add($"redis.errors == 0 (was {Redis.Errors})");
        if (!Redis.Continuous) failed.Add("redis.continuous (counter skipped or repeated)");
        if (Redis.Reconnects != 0) failed.Add($"redis.reconnects == 0 (was {Redis.Reconnects})");
        if (Http.Errors != 0) failed.Add($"http.errors == 0 (was {Http.Errors})");
        if (RedisBenchmark.Errors != 0) failed.Add($"redis_benchmark.errors == 0 (was {RedisBenchmark.Errors})");
        if (Checkpoints.Count < 1) failed.Add($"checkpoints.count >= 1 (was {Checkpoints.Count})");
        if (Failover.DetectedMs > MaxDetectedMs) failed.Add($"failover.detected_ms <= {MaxDetectedMs} (was {Failover.DetectedMs})");
        if (Failover.DetectedMs < 0) failed.Add(Failover.DetectedMs == -1 ? "failover detected (secondary never declared the primary lost)" : $"failover.detected_ms >= 0 (was {Failover.DetectedMs}: detected before the kill)");
        if (Failover.ClientGapMs > MaxClientGapMs) failed.Add($"failover.client_gap_ms <= {MaxClientGapMs} (was {Failover.ClientGapMs})");
        FailedWireRules(failed);
    }

    /// <summary>Evaluates the acceptance rules (see <see cref="FailedRules"/>) without changing <see cref="Ok"/>.</summary>
    /// <returns>True when all rules hold.</returns>
    public bool ComputeOk() => FailedRules().Count == 0;

    /// <summary>Sets <see cref="Ok"/> from the acceptance rules.</summary>
    /// <returns>The new value of <see cref="Ok"/>.</returns>
    public bool UpdateOk() => Ok = ComputeOk();

    /// <summary>
    /// Percentile by linear interpolation between closest ranks (NumPy's default): p=0 is the minimum, p=100 the maximum.
    /// </summary>
    /// <param name="values">Samples in any order (not modified).</param>
    /// <param name="percentile">0 to 100.</param>
    /// <returns>The percentile, or 0 for no samples.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="percentile"/> is outside [0, 100] or NaN.</exception>
    /// <exception cref="ArgumentNullException"><paramref name="values"/> is null.</exception>
    public static double Percentile(IEnumerable<double> values, double percentile)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (double.IsNaN(percentile) || percentile < 0 || percentile > 100)
            throw new ArgumentOutOfRangeException(nameof(percentile), percentile, "percentile must be within [0, 100]");
        double[] sorted = values.ToArray();
        if (sorted.Length == 0)
            return 0;
        Array.Sort(sorted);
        double rank = percentile / 100.0 * (sorted.Length - 1);
        int lo = (int)Math.Floor(rank);
        int hi = (int)Math.Ceiling(rank);
        return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
    }

    /// <summary>
    /// The failover's client-visible gap: the largest Redis reply gap (interval [at_ms, at_ms + gap_ms]) that overlaps
    /// [<paramref name="killedAtUnixMs"/>, <paramref name="killedAtUnixMs"/> + <paramref name="windowMs"/>].
    /// </summary>
    /// <param name="gaps">Gaps from <see cref="RedisWorkloadResult.Gaps"/>.</param>
    /// <param name="killedAtUnixMs">When the primary was killed, Unix time in milliseconds.</param>
    /// <param name="windowMs">Window length after the kill in milliseconds; default 1 000.</param>
    /// <returns>The gap in milliseconds, or 0 when no gap overlaps the window.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="gaps"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="windowMs"/> is negative.</exception>
    public static long ComputeClientGapMs(IEnumerable<RedisGap> gaps, long killedAtUnixMs, long windowMs = DefaultFailoverWindowMs)
    {
        ArgumentNullException.ThrowIfNull(gaps);
        ArgumentOutOfRangeException.ThrowIfNegative(windowMs);
        long windowEnd = killedAtUnixMs + windowMs;
        long best = 0;
        foreach (RedisGap g in gaps)
        {
            long start = g.AtMs, end = g.AtMs + g.GapMs;
            if (start <= windowEnd && end >= killedAtUnixMs && g.GapMs > best)
                best = g.GapMs;
        }
        return best;
    }

    /// <summary>Multi-line human-readable summary (verdict, each section, and the failed rules).</summary>
    /// <returns>The text, ending with a newline.</returns>
    public string ToHumanSummary()
    {
        var ci = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        string scenario = Scenario == DiskScenarioName ? $" ({Scenario} scenario, seed {Seed})" : "";
        sb.AppendLine(ci, $"COLO demo{scenario}: {(Ok ? "PASS" : "FAIL")} ({DurationS:0.0} s)");
        if (Redis != null)
            sb.AppendLine(ci, $"  redis INCR:      {Redis.Ops} ops, {Redis.Errors} errors, {(Redis.Continuous ? "continuous" : "NOT continuous")}, {Redis.Reconnects} reconnects, max stall {Redis.MaxStallMs} ms");
        if (Http != null)
            sb.AppendLine(ci, $"  http:            {Http.Requests} requests, {Http.Errors} errors, max stall {Http.MaxStallMs} ms");
        if (RedisBenchmark != null)
            sb.AppendLine(ci, $"  redis-benchmark: {RedisBenchmark.RequestsPerS:0} requests/s, {RedisBenchmark.Errors} errors");
        if (Disk != null)
            AppendDiskSummary(sb);
        AppendWireSummary(sb);
        sb.AppendLine(ci, $"  checkpoints:     {Checkpoints.Count}, pause p50 {Checkpoints.PauseMsP50:0.0} ms, p99 {Checkpoints.PauseMsP99:0.0} ms");
        if (CheckpointsByReason.Values.Any(v => v > 0))
            sb.AppendLine(ci, $"                   by trigger: {string.Join(", ", CheckpointsByReason.Where(kv => kv.Value > 0).OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key} {kv.Value}"))}");
        if (Failover.KilledAtS < 0)
            sb.AppendLine("  failover:        primary not killed");
        else
            sb.AppendLine(ci, $"  failover:        {KilledWhat} killed at {Failover.KilledAtS:0.0} s, detected in {(Failover.DetectedMs == -1 ? "(never)" : Failover.DetectedMs + " ms")}, client gap {Failover.ClientGapMs} ms");
        foreach (string rule in FailedRules())
            sb.AppendLine(ci, $"  FAILED: {rule}");
        return sb.ToString();
    }

    /// <summary>Serialises to indented JSON with the snake_case names above.</summary>
    /// <returns>The JSON text.</returns>
    public string ToJson() => JsonSerializer.Serialize(this, DemoJson.Options);

    /// <summary>Parses JSON written by <see cref="ToJson"/>.</summary>
    /// <param name="json">The JSON text.</param>
    /// <returns>The report.</returns>
    /// <exception cref="JsonException">Malformed JSON or the literal <c>null</c>.</exception>
    public static DemoReport FromJson(string json) =>
        JsonSerializer.Deserialize<DemoReport>(json, DemoJson.Options) ?? throw new JsonException("null demo report");

    /// <summary>Writes <see cref="ToJson"/> to <paramref name="path"/> atomically (temporary file + rename).</summary>
    /// <param name="path">Destination file.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    /// <returns>A task completing when the file is in place.</returns>
    /// <exception cref="IOException">The file cannot be written.</exception>
    /// <exception cref="UnauthorizedAccessException">The file cannot be written.</exception>
    public async Task WriteAsync(string path, CancellationToken cancellationToken = default)
    {
        string tmp = path + ".tmp";
        await File.WriteAllTextAsync(tmp, ToJson(), cancellationToken).ConfigureAwait(false);
        File.Move(tmp, path, overwrite: true);
    }
}

/// <summary>Report section <c>redis</c>.</summary>
public sealed class DemoRedisSummary
{
    /// <summary>Successful INCR replies.</summary>
    [JsonPropertyName("ops")]
    public long Ops { get; set; }

    /// <summary>Failed INCR operations.</summary>
    [JsonPropertyName("errors")]
    public long Errors { get; set; }

    /// <summary>Every reply was the previous + 1.</summary>
    [JsonPropertyName("continuous")]
    public bool Continuous { get; set; }

    /// <summary>Reconnections after errors.</summary>
    [JsonPropertyName("reconnects")]
    public long Reconnects { get; set; }

    /// <summary>Largest gap between consecutive replies, milliseconds.</summary>
    [JsonPropertyName("max_stall_ms")]
    public long MaxStallMs { get; set; }
}

/// <summary>Report section <c>http</c>.</summary>
public sealed class DemoHttpSummary
{
    /// <summary>Successful requests.</summary>
    [JsonPropertyName("requests")]
    public long Requests { get; set; }

    /// <summary>Failed requests.</summary>
    [JsonPropertyName("errors")]
    public long Errors { get; set; }

    /// <summary>Largest gap between consecutive successes, milliseconds.</summary>
    [JsonPropertyName("max_stall_ms")]
    public long MaxStallMs { get; set; }
}

/// <summary>Report section <c>redis_benchmark</c>.</summary>
public sealed class DemoBenchmarkSummary
{
    /// <summary>Mean requests per second over the benchmark's tests.</summary>
    [JsonPropertyName("requests_per_s")]
    public double RequestsPerS { get; set; }

    /// <summary>Benchmark errors (non-zero exit, timeout, missing tests).</summary>
    [JsonPropertyName("errors")]
    public long Errors { get; set; }
}

/// <summary>Report section <c>checkpoints</c>.</summary>
public sealed class DemoCheckpointSummary
{
    /// <summary>Number of completed checkpoints.</summary>
    [JsonPropertyName("count")]
    public long Count { get; set; }

    /// <summary>Median guest pause per checkpoint, milliseconds.</summary>
    [JsonPropertyName("pause_ms_p50")]
    public double PauseMsP50 { get; set; }

    /// <summary>99th-percentile guest pause per checkpoint, milliseconds.</summary>
    [JsonPropertyName("pause_ms_p99")]
    public double PauseMsP99 { get; set; }

    /// <summary>
    /// <see cref="Count"/> by trigger: <c>mismatch</c> (PVM and SVM output differed), <c>timeout</c> (output held longer
    /// than the compare timeout), <c>queue_full</c> (a held-bytes bound reached), <c>operator</c> (<c>colo checkpoint</c>),
    /// <c>periodic</c> (maximum epoch length). Every key is present.
    /// </summary>
    [JsonPropertyName("by_reason")]
    public Dictionary<string, int> ByReason { get; set; } = AllReasons(null);

    /// <summary>The trigger names, in report order.</summary>
    public static readonly string[] Reasons = ["mismatch", "timeout", "queue_full", "operator", "periodic"];

    /// <summary>A dictionary with every reason of <see cref="Reasons"/> (0 where <paramref name="counts"/> has none) plus any other key it has.</summary>
    public static Dictionary<string, int> AllReasons(IReadOnlyDictionary<string, int>? counts)
    {
        var d = new Dictionary<string, int>();
        foreach (var r in Reasons)
            d[r] = counts?.GetValueOrDefault(r) ?? 0;
        if (counts != null)
        {
            foreach (var (k, v) in counts)
                d[k] = v;
        }
        return d;
    }
}

/// <summary>Report section <c>failover</c>.</summary>
public sealed class DemoFailoverSummary
{
    /// <summary>When the primary was killed, seconds after the clients started; negative when it was not killed.</summary>
    [JsonPropertyName("killed_at_s")]
    public double KilledAtS { get; set; }

    /// <summary>Time from the kill until the secondary declared the primary lost, milliseconds; −1 when it never did; 0 without a kill.</summary>
    [JsonPropertyName("detected_ms")]
    public long DetectedMs { get; set; }

    /// <summary>Client-visible Redis reply gap around the failover (see <see cref="DemoReport.ComputeClientGapMs"/>), milliseconds.</summary>
    [JsonPropertyName("client_gap_ms")]
    public long ClientGapMs { get; set; }
}
