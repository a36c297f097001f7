using System.Text.Json;

namespace Colo.Demo.Tests;

public class DiskScenarioTests
{
    [Fact]
    public void KillMomentIsDeterministicAndInsideTheWindow()
    {
        foreach (int duration in new[] { 5, 24, 40, 600 })
        {
            foreach (int seed in Enumerable.Range(-50, 2000).Append(int.MinValue).Append(int.MaxValue))
            {
                double at = DiskScenario.KillMomentS(seed, duration);
                Assert.Equal(at, DiskScenario.KillMomentS(seed, duration));
                Assert.InRange(at, DiskScenario.KillWindowStart * duration, DiskScenario.KillWindowEnd * duration);
            }
        }
        // Pinned: the mapping is ours (SplitMix64), the same on every machine and runtime.
        Assert.Equal(21.597, DiskScenario.KillMomentS(1, 40));
        Assert.Equal(10.723, DiskScenario.KillMomentS(3, 40));
        Assert.Equal(8.799, DiskScenario.KillMomentS(10, 40));
    }

    [Fact]
    public void SeedsSpreadOverTheWindow()
    {
        double[] u = [.. Enumerable.Range(1, 1000).Select(DiskScenario.Unit)];
        Assert.All(u, x => Assert.InRange(x, 0.0, 1.0 - 1e-12));
        Assert.True(u.Distinct().Count() > 990);
        // Each tenth of the window gets a fair share.
        Assert.All(Enumerable.Range(0, 10), b => Assert.InRange(u.Count(x => (int)(x * 10) == b), 60, 140));
        Assert.Throws<ArgumentOutOfRangeException>(() => DiskScenario.KillMomentS(1, 0));
        Assert.InRange(DiskScenario.NewSeed(), 1, int.MaxValue);
    }
}

public class DiskReportTests
{
    private static DiskWorkloadResult Client()
    {
        var c = new DiskWorkloadResult { Attempted = 1002, Unknown = 1, Rejected = 1, Reconnects = 1, MaxStallMs = 900 };
        for (long id = 1; id <= 1000; id++)
            c.RecordAcked(id);
        c.Verify = new DiskVerifyResult { Complete = true, Checked = 1000, Lost = 0 };
        c.Gaps.Add(new RedisGap { AtMs = 1_800_000_000_000 - 10, GapMs = 700 });
        return c;
    }

    private static DemoReport Passing()
    {
        const long kill = 1_800_000_000_000;
        var r = DemoReport.ForDisk(40, 7, Client(), 3, [10, 20, 30], 17.356, kill, kill + 15);
        r.Disk!.FsckClean = true;
        r.Disk.FsckJournalReplayed = true;
        r.Disk.ColdBootKeysOk = true;
        r.Disk.ColdBootLostWrites = 0;
        r.Disk.ColdBootMs = 7000;
        r.Disk.OverlayBytesMax = 1 << 20;
        r.Disk.BufferBytesMax = 3 << 20;
        r.Disk.SyncMs = 120;
        r.Disk.SyncBytes = 9 << 20;
        r.UpdateOk();
        return r;
    }

    [Fact]
    public void DiskJsonHasExactShape()
    {
        DemoReport r = Passing();
        Assert.True(r.Ok, string.Join("; ", r.FailedRules()));
        using var doc = JsonDocument.Parse(r.ToJson());
        var root = doc.RootElement;
        Assert.Equal(["ok", "scenario", "seed", "duration_s", "checkpoints", "failover", "disk"], root.EnumerateObject().Select(p => p.Name));
        Assert.Equal("disk", root.GetProperty("scenario").GetString());
        Assert.Equal(7, root.GetProperty("seed").GetInt32());
        var disk = root.GetProperty("disk");
        string[] required = ["acked_writes", "lost_writes", "fsck_clean", "cold_boot_keys_ok", "overlay_bytes_max", "buffer_bytes_max"];
        Assert.Equal(required, disk.EnumerateObject().Select(p => p.Name).Take(required.Length));
        Assert.Equal([.. required, "unknown_writes", "rejected_writes", "verified_writes", "reconnects", "fsck_journal_replayed", "cold_boot_lost_writes", "cold_boot_ms", "sync_ms", "sync_bytes"],
            disk.EnumerateObject().Select(p => p.Name));
        Assert.Equal(1000, disk.GetProperty("acked_writes").GetInt64());
        Assert.Equal(0, disk.GetProperty("lost_writes").GetInt64());
        Assert.True(disk.GetProperty("fsck_clean").GetBoolean());
        Assert.True(disk.GetProperty("cold_boot_keys_ok").GetBoolean());
        Assert.Equal(15, root.GetProperty("failover").GetProperty("detected_ms").GetInt64());
        Assert.Equal(700, root.GetProperty("failover").GetProperty("client_gap_ms").GetInt64());
        Assert.Equal(17.356, root.GetProperty("failover").GetProperty("killed_at_s").GetDouble());
        Assert.Equal(r.ToJson(), DemoReport.FromJson(r.ToJson()).ToJson());
        string summary = r.ToHumanSummary();
        Assert.StartsWith("COLO demo (disk scenario, seed 7): PASS", summary);
        Assert.Contains("1000 acked", summary);
        Assert.Contains("every acknowledged key reloaded", summary);
    }

    public static TheoryData<string> Breakers => new() { "lost", "fsck", "cold", "acked", "unverified", "undetected", "notkilled", "splitbrain", "fsck-missing" };

    [Theory]
    [MemberData(nameof(Breakers))]
    public void EachDiskRuleCanFail(string which)
    {
        DemoReport r = Passing();
        switch (which)
        {
            case "lost": r.Disk!.LostWrites = 1; break;
            case "fsck": r.Disk!.FsckClean = false; break;
            case "fsck-missing": r.Disk!.FsckClean = null; break;
            case "cold": r.Disk!.ColdBootKeysOk = false; break;
            case "acked": r.Disk!.AckedWrites = 0; r.Disk.VerifiedWrites = 0; break;
            case "unverified": r.Disk!.VerifiedWrites = 999; break;
            case "undetected": r.Failover.DetectedMs = -1; break;
            case "notkilled": r.Failover.KilledAtS = -1; break;
            case "splitbrain": r.RunFailures.Add("exactly one VM serves"); break;
        }
        Assert.False(r.UpdateOk());
        Assert.Single(r.FailedRules());
        Assert.Contains("FAILED:", r.ToHumanSummary());
    }

    [Fact]
    public void ServiceRulesIgnoreDiskFiguresAndDiskRulesIgnoreMissingServiceSections()
    {
        // A disk report has no redis/http/benchmark and no checkpoint or detection-time limits.
        DemoReport r = Passing();
        r.Checkpoints.Count = 0;
        r.Failover.DetectedMs = 5000;
        r.Failover.ClientGapMs = 9000;
        Assert.True(r.UpdateOk(), string.Join("; ", r.FailedRules()));

        // A service report may carry only the replication figures.
        var client = new ClientWorkloadResult { Redis = { Ops = 10, Continuous = true }, RedisBenchmark = { Ran = true } };
        var service = DemoReport.Create(client, 20, [5.0], new DemoFailoverSummary { KilledAtS = 10, DetectedMs = 20 });
        service.Disk = new DemoDiskSummary { OverlayBytesMax = 4096, BufferBytesMax = 8192, SyncMs = 12.5, SyncBytes = 1 << 20 };
        Assert.True(service.UpdateOk(), string.Join("; ", service.FailedRules()));
        using var doc = JsonDocument.Parse(service.ToJson());
        Assert.False(doc.RootElement.TryGetProperty("seed", out _));
        Assert.Equal(["overlay_bytes_max", "buffer_bytes_max", "sync_ms", "sync_bytes"], doc.RootElement.GetProperty("disk").EnumerateObject().Select(p => p.Name));
        Assert.Contains("disk replication", service.ToHumanSummary());
        service.RunFailures.Add("exactly one VM serves (none does)");
        Assert.False(service.UpdateOk());
    }
}
