using System.Globalization;
using System.Text;

namespace Colo.Demo;

/// <summary>The disk scenario's parts of the report.</summary>
public sealed partial class DemoReport
{
    /// <summary><see cref="Scenario"/> of the default demo (Redis INCR, HTTP, redis-benchmark).</summary>
    public const string ServiceScenario = "service";

    /// <summary><see cref="Scenario"/> of the disk integrity demo.</summary>
    public const string DiskScenarioName = "disk";

    /// <summary>
    /// Starts a disk-scenario report from the disk client's result and the orchestrator's measurements. The file
    /// system check and the cold boot are not known yet: fill <see cref="DemoDiskSummary.FsckClean"/>,
    /// <see cref="DemoDiskSummary.ColdBootKeysOk"/> (and the replication figures), then call <see cref="UpdateOk"/>.
    /// </summary>
    /// <param name="durationS">Demo duration in seconds.</param>
    /// <param name="seed">The seed that chose the kill moment.</param>
    /// <param name="client">The disk client's result.</param>
    /// <param name="checkpointCount">Completed checkpoints before the kill.</param>
    /// <param name="pausesMs">Guest pause per checkpoint in milliseconds.</param>
    /// <param name="killedAtS">Kill moment, seconds after the client started; negative when not killed.</param>
    /// <param name="killedAtUnixMs">Kill time, Unix ms; 0 when not killed.</param>
    /// <param name="detectedAtUnixMs">When the secondary declared the primary lost, Unix ms; 0 when it did not.</param>
    /// <exception cref="ArgumentNullException">A reference argument is null.</exception>
    public static DemoReport ForDisk(double durationS, int seed, DiskWorkloadResult client, long checkpointCount,
        IReadOnlyCollection<double> pausesMs, double killedAtS, long killedAtUnixMs, long detectedAtUnixMs)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(pausesMs);
        var failover = new DemoFailoverSummary { KilledAtS = killedAtS };
        if (killedAtUnixMs > 0)
        {
            failover.DetectedMs = detectedAtUnixMs > 0 ? detectedAtUnixMs - killedAtUnixMs : -1;
            failover.ClientGapMs = ComputeClientGapMs(client.Gaps, killedAtUnixMs);
        }
        var report = new DemoReport
        {
            Scenario = DiskScenarioName,
            Seed = seed,
            DurationS = durationS,
            Redis = null,
            Http = null,
            RedisBenchmark = null,
            Checkpoints = new DemoCheckpointSummary
            {
                Count = checkpointCount,
                PauseMsP50 = Percentile(pausesMs, 50),
                PauseMsP99 = Percentile(pausesMs, 99),
            },
            Failover = failover,
            Disk = new DemoDiskSummary
            {
                AckedWrites = client.Acked,
                UnknownWrites = client.Unknown,
                RejectedWrites = client.Rejected,
                LostWrites = client.Verify.Lost,
                VerifiedWrites = client.Verify.Checked,
                Reconnects = client.Reconnects,
            },
        };
        report.UpdateOk();
        return report;
    }

    /// <summary>
    /// Disk scenario rules: the primary was killed and the secondary detected it (failover.detected_ms &gt;= 0),
    /// disk.acked_writes &gt; 0, every acknowledged key was read back after the failover (verified_writes ==
    /// acked_writes), disk.lost_writes == 0, disk.fsck_clean, disk.cold_boot_keys_ok. Exactly one VM serving at the end
    /// is checked by the orchestrator (<see cref="RunFailures"/>).
    /// </summary>
    private void FailedDiskRules(List<string> failed)
    {
        if (Failover.KilledAtS < 0) failed.Add("the primary was killed");
        else if (Failover.DetectedMs < 0) failed.Add(Failover.DetectedMs == -1 ? "failover detected (secondary never declared the primary lost)" : $"failover.detected_ms >= 0 (was {Failover.DetectedMs})");
        if (Disk is not { } d)
        {
            failed.Add("disk section present");
            return;
        }
        if (d.AckedWrites is not > 0) failed.Add($"disk.acked_writes > 0 (was {d.AckedWrites})");
        if (d.VerifiedWrites != d.AckedWrites) failed.Add($"every acknowledged key read back after the failover ({d.VerifiedWrites} of {d.AckedWrites})");
        if (d.LostWrites != 0) failed.Add($"disk.lost_writes == 0 (was {d.LostWrites?.ToString(CultureInfo.InvariantCulture) ?? "unknown"})");
        if (d.FsckClean != true) failed.Add("disk.fsck_clean" + (d.FsckClean is null ? " (not checked)" : ""));
        if (d.ColdBootKeysOk != true) failed.Add("disk.cold_boot_keys_ok" + (d.ColdBootKeysOk is null ? " (not checked)" : d.ColdBootLostWrites is { } n ? $" ({n} acknowledged keys missing or wrong)" : ""));
    }

    private void AppendDiskSummary(StringBuilder sb)
    {
        var ci = CultureInfo.InvariantCulture;
        DemoDiskSummary d = Disk!;
        if (d.AckedWrites is { } acked)
        {
            sb.AppendLine(ci, $"  writes:          {acked} acked, {d.UnknownWrites} unknown, {d.RejectedWrites} rejected, {d.Reconnects} reconnects; after the failover {d.VerifiedWrites} read back, {d.LostWrites} lost");
        }
        if (d.FsckClean is { } clean)
            sb.AppendLine(ci, $"  surviving disk:  e2fsck {(clean ? "clean" : "NOT clean")}{(d.FsckJournalReplayed == true ? " (after journal replay)" : "")}");
        if (d.ColdBootKeysOk is { } keysOk)
            sb.AppendLine(ci, $"  cold boot:       {(keysOk ? "every acknowledged key reloaded" : $"FAILED ({d.ColdBootLostWrites?.ToString(ci) ?? "?"} keys missing or wrong)")}{(d.ColdBootMs is { } ms ? $", {ms / 1000.0:0.0} s" : "")}");
        if (d.OverlayBytesMax != null || d.BufferBytesMax != null || d.SyncMs != null)
            sb.AppendLine(ci, $"  disk replication: initial sync {d.SyncMs:0} ms ({Mib(d.SyncBytes)}), SVM overlay max {Mib(d.OverlayBytesMax)}, PVM write buffer max {Mib(d.BufferBytesMax)}");
    }

    private static string Mib(long? bytes) => bytes is { } b ? (b / 1048576.0).ToString("0.0", CultureInfo.InvariantCulture) + " MiB" : "?";
}
