using System.Text.Json;

namespace Colo.Demo.Tests;

public class DemoReportTests
{
    private static DemoReport Passing() => new()
    {
        DurationS = 60,
        Redis = new DemoRedisSummary { Ops = 1000, Errors = 0, Continuous = true, Reconnects = 0, MaxStallMs = 1500 },
        Http = new DemoHttpSummary { Requests = 100, Errors = 0, MaxStallMs = 1600 },
        RedisBenchmark = new DemoBenchmarkSummary { RequestsPerS = 5000, Errors = 0 },
        Checkpoints = new DemoCheckpointSummary { Count = 10, PauseMsP50 = 20, PauseMsP99 = 40 },
        Failover = new DemoFailoverSummary { KilledAtS = 30, DetectedMs = 900, ClientGapMs = 2500 },
    };

    [Fact]
    public void PassingReportIsOk()
    {
        DemoReport r = Passing();
        Assert.True(r.ComputeOk());
        Assert.False(r.Ok);
        Assert.True(r.UpdateOk());
        Assert.True(r.Ok);
        Assert.Empty(r.FailedRules());
        Assert.StartsWith("COLO demo: PASS", r.ToHumanSummary());
    }

    public static TheoryData<string> Breakers => new() { "redis.errors", "continuous", "reconnects", "http.errors", "bench", "checkpoints", "detected", "gap" };

    [Theory]
    [MemberData(nameof(Breakers))]
    public void EachRuleCanFail(string which)
    {
        DemoReport r = Passing();
        switch (which)
        {
            case "redis.errors": r.Redis!.Errors = 1; break;
            case "continuous": r.Redis!.Continuous = false; break;
            case "reconnects": r.Redis!.Reconnects = 1; break;
            case "http.errors": r.Http!.Errors = 2; break;
            case "bench": r.RedisBenchmark!.Errors = 1; break;
            case "checkpoints": r.Checkpoints.Count = 0; break;
            case "detected": r.Failover.DetectedMs = 1001; break;
            case "gap": r.Failover.ClientGapMs = 3001; break;
        }
        Assert.False(r.UpdateOk());
        Assert.Single(r.FailedRules());
        string summary = r.ToHumanSummary();
        Assert.StartsWith("COLO demo: FAIL", summary);
        Assert.Contains("FAILED:", summary);
    }

    [Fact]
    public void LimitsAreInclusive()
    {
        DemoReport r = Passing();
        r.Failover.DetectedMs = 1000;
        r.Failover.ClientGapMs = 3000;
        r.Checkpoints.Count = 1;
        Assert.True(r.ComputeOk());
    }

    [Fact]
    public void JsonHasExactShape()
    {
        DemoReport r = Passing();
        r.UpdateOk();
        using var doc = JsonDocument.Parse(r.ToJson());
        var root = doc.RootElement;
        Assert.Equal(["ok", "scenario", "duration_s", "redis", "http", "redis_benchmark", "checkpoints", "failover"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("service", root.GetProperty("scenario").GetString());
        Assert.Equal(["ops", "errors", "continuous", "reconnects", "max_stall_ms"], root.GetProperty("redis").EnumerateObject().Select(p => p.Name));
        Assert.Equal(["requests", "errors", "max_stall_ms"], root.GetProperty("http").EnumerateObject().Select(p => p.Name));
        Assert.Equal(["requests_per_s", "errors"], root.GetProperty("redis_benchmark").EnumerateObject().Select(p => p.Name));
        Assert.Equal(["count", "pause_ms_p50", "pause_ms_p99", "by_reason"], root.GetProperty("checkpoints").EnumerateObject().Select(p => p.Name));
        Assert.Equal(["mismatch", "timeout", "queue_full", "operator", "periodic"], root.GetProperty("checkpoints").GetProperty("by_reason").EnumerateObject().Select(p => p.Name));
        Assert.Equal(["killed_at_s", "detected_ms", "client_gap_ms"], root.GetProperty("failover").EnumerateObject().Select(p => p.Name));
        Assert.True(root.GetProperty("ok").GetBoolean());
        Assert.Equal(2500, root.GetProperty("failover").GetProperty("client_gap_ms").GetInt64());

        DemoReport back = DemoReport.FromJson(r.ToJson());
        Assert.Equal(r.ToJson(), back.ToJson());
    }

    [Fact]
    public void PercentileInterpolates()
    {
        Assert.Equal(0, DemoReport.Percentile([], 50));
        Assert.Equal(7, DemoReport.Percentile([7], 99));
        Assert.Equal(2.5, DemoReport.Percentile([4, 1, 3, 2], 50));
        Assert.Equal(1, DemoReport.Percentile([4, 1, 3, 2], 0));
        Assert.Equal(4, DemoReport.Percentile([4, 1, 3, 2], 100));
        double[] hundred = Enumerable.Range(1, 100).Select(i => (double)i).ToArray();
        Assert.Equal(50.5, DemoReport.Percentile(hundred, 50), 9);
        Assert.Equal(99.01, DemoReport.Percentile(hundred, 99), 9);
        Assert.Throws<ArgumentOutOfRangeException>(() => DemoReport.Percentile([1], 101));
        Assert.Throws<ArgumentOutOfRangeException>(() => DemoReport.Percentile([1], -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => DemoReport.Percentile([1], double.NaN));
    }

    [Fact]
    public void ClientGapPicksLargestOverlappingGap()
    {
        const long kill = 1_000_000;
        var gaps = new List<RedisGap>
        {
            new() { AtMs = kill - 20_000, GapMs = 5_000 },   // long before: ignored
            new() { AtMs = kill - 100, GapMs = 1_800 },      // spans the kill
            new() { AtMs = kill + 5_000, GapMs = 900 },      // inside the window
            new() { AtMs = kill + 10_001, GapMs = 9_000 },   // starts after the window: ignored
        };
        Assert.Equal(1_800, DemoReport.ComputeClientGapMs(gaps, kill, windowMs: 10_000));
        Assert.Equal(0, DemoReport.ComputeClientGapMs([], kill));
        Assert.Equal(0, DemoReport.ComputeClientGapMs([new RedisGap { AtMs = kill - 500, GapMs = 499 }], kill));
        Assert.Equal(499, DemoReport.ComputeClientGapMs([new RedisGap { AtMs = kill - 499, GapMs = 499 }], kill)); // touches the kill
        Assert.Equal(300, DemoReport.ComputeClientGapMs([new RedisGap { AtMs = kill + 10_000, GapMs = 300 }], kill, windowMs: 10_000)); // touches the end
        // The default window is 1 s: a stall starting later is not the failover's.
        Assert.Equal(0, DemoReport.ComputeClientGapMs([new RedisGap { AtMs = kill + 1_001, GapMs = 300 }], kill));
        Assert.Equal(45, DemoReport.ComputeClientGapMs([new RedisGap { AtMs = kill - 5, GapMs = 45 }, new RedisGap { AtMs = kill + 1_500, GapMs = 90 }], kill));
        Assert.Equal(9_000, DemoReport.ComputeClientGapMs(gaps, kill, windowMs: 20_000));
    }

    [Fact]
    public void CreateCopiesAndEvaluates()
    {
        var client = new ClientWorkloadResult
        {
            Redis = { Ops = 10, Continuous = true, MaxStallMs = 5, Gaps = { new RedisGap { AtMs = 1, GapMs = 2 } } },
            Http = { Requests = 3, MaxStallMs = 60 },
            RedisBenchmark = { RequestsPerS = 1234.5, Ran = true },
        };
        var report = DemoReport.Create(client, 12.5, [10, 20, 30], new DemoFailoverSummary { KilledAtS = 5, DetectedMs = 400, ClientGapMs = 1200 });
        Assert.True(report.Ok);
        Assert.Equal(3, report.Checkpoints.Count);
        Assert.Equal(20, report.Checkpoints.PauseMsP50);
        Assert.Equal(29.8, report.Checkpoints.PauseMsP99, 9);
        Assert.Equal(10, report.Redis!.Ops);
        Assert.Equal(1234.5, report.RedisBenchmark!.RequestsPerS);

        var none = DemoReport.Create(client, 1, [], new DemoFailoverSummary());
        Assert.False(none.Ok); // no checkpoints
    }
}

public class DemoReportFromTests
{
    private static ClientWorkloadResult Client(params RedisGap[] gaps) => new()
    {
        Redis = { Ops = 500, Continuous = true, MaxStallMs = 1700, Gaps = [.. gaps] },
        Http = { Requests = 40, MaxStallMs = 1800 },
        RedisBenchmark = { RequestsPerS = 900, Ran = true },
    };

    [Fact]
    public void FromComputesFailoverFields()
    {
        const long kill = 1_800_000_000_000;
        var r = DemoReport.From(durationS: 40, workload: Client(new RedisGap { AtMs = kill - 30, GapMs = 1700 }),
            checkpointCount: 25, pausesMs: new List<double> { 10, 12, 30 }, killedAtS: 20, killedAtUnixMs: kill, detectedAtUnixMs: kill + 640);
        Assert.True(r.Ok, string.Join("; ", r.FailedRules()));
        Assert.Equal(25, r.Checkpoints.Count);
        Assert.Equal(12, r.Checkpoints.PauseMsP50);
        Assert.Equal(640, r.Failover.DetectedMs);
        Assert.Equal(1700, r.Failover.ClientGapMs);
        Assert.Equal(20, r.Failover.KilledAtS);
        r.CheckpointsByReason = new() { ["mismatch"] = 20, ["periodic"] = 5 };
        Assert.Contains("mismatch 20", r.ToHumanSummary());
        var byReason = System.Text.Json.JsonDocument.Parse(r.ToJson()).RootElement.GetProperty("checkpoints").GetProperty("by_reason");
        Assert.Equal(20, byReason.GetProperty("mismatch").GetInt32());
        Assert.Equal(5, byReason.GetProperty("periodic").GetInt32());
        Assert.Equal(0, byReason.GetProperty("timeout").GetInt32());
    }

    [Fact]
    public void UndetectedOrEarlyDetectionFails()
    {
        const long kill = 1_800_000_000_000;
        var never = DemoReport.From(40, Client(), 5, [1.0], 20, kill, 0);
        Assert.Equal(-1, never.Failover.DetectedMs);
        Assert.False(never.Ok);
        Assert.Contains("(never)", never.ToHumanSummary());
        var early = DemoReport.From(40, Client(), 5, [1.0], 20, kill, kill - 5000);
        Assert.False(early.Ok);
    }

    [Fact]
    public void WithoutKillFailoverIsZero()
    {
        var r = DemoReport.From(40, Client(new RedisGap { AtMs = 5, GapMs = 9000 }), 5, [1.0], -1, 0, 0);
        Assert.Equal(0, r.Failover.DetectedMs);
        Assert.Equal(0, r.Failover.ClientGapMs);
        Assert.True(r.Ok);
        Assert.Contains("not killed", r.ToHumanSummary());
    }
}
