using System.Diagnostics;
using Colo.Demo;
using Colo.Image;
using Colo.Node;
using Microsoft.Extensions.Logging;

namespace Colo.Cli;

/// <summary>
/// The disk scenario (<c>colo demo --scenario disk</c>): SET k&lt;i&gt; v&lt;i&gt; on one connection, the primary's QEMU
/// SIGKILLed at the seeded moment, every acknowledged key read back after the failover; then the daemons are stopped
/// (the SVM dies like a power cut), the secondary's surviving disk image is checked with e2fsck and booted cold in a
/// fresh unprotected VM whose Redis must reload every acknowledged key from its append-only file.
/// </summary>
internal sealed partial class DemoRunner
{
    /// <summary>Grace for a daemon to stop on SIGTERM in the disk scenario before it is SIGKILLed.</summary>
    private static readonly TimeSpan DiskStopGrace = TimeSpan.FromSeconds(30);

    private async Task<(DemoReport Report, string? StateLine)> RunDiskScenarioAsync(CancellationToken ct)
    {
        int seed = _o.Seed ?? 0;
        _log.LogInformation("disk scenario, seed {Seed}: SET k<i> v<i> for {D} s, the primary's QEMU is SIGKILLed at {At:F3} s", seed, _o.DurationS, _o.KillAtS);
        string clientOut = Path.Combine(_runDir, "disk-client.json");
        var client = StartClient("--scenario", DemoReport.DiskScenarioName, "--out", clientOut, "--events", Path.Combine(_runDir, "client-events.jsonl"));
        var (killedAtUnixMs, priBeforeKill) = await InjectFailureAsync(client, DateTimeOffset.UtcNow, ct);

        // The read-back after the SET loop may take a while (all acknowledged keys, pipelined, retried on failure).
        await client.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(_o.DurationS + 300), ct);
        var priEnd = NodeStatus.TryRead(PriStatus);
        var secEnd = NodeStatus.TryRead(SecStatus);
        var workload = DiskWorkloadResult.FromJson(await File.ReadAllTextAsync(clientOut, ct));
        var before = priBeforeKill ?? priEnd;
        var report = DemoReport.ForDisk(_o.DurationS, seed, workload, before?.Checkpoints ?? 0, before?.PauseMs ?? [],
            killedAtUnixMs > 0 ? _o.KillAtS : -1, killedAtUnixMs, secEnd?.PeerLostAtUnixMs ?? 0);
        report.CheckpointsByReason = before?.CheckpointsByReason ?? new();
        report.KilledWhat = "primary's QEMU";
        CheckOneVmServes(report, priEnd, secEnd);

        // The surviving image is consistent once the secondary daemon has stopped; its SVM dies like a power cut.
        await StopChildrenAsync(DiskStopGrace);
        await KillQemusAndWaitAsync(priEnd, secEnd, NodeStatus.TryRead(PriStatus), NodeStatus.TryRead(SecStatus));
        var d = report.Disk!;
        ReplicationFigures(secEnd?.Disk, NodeStatus.TryRead(SecStatus)?.Disk, d);

        string survivor = _sec!.DiskImage!;
        if (!File.Exists(survivor))
        {
            _log.LogError("the secondary's disk image {Path} does not exist", survivor);
            d.FsckClean = false;
            d.ColdBootKeysOk = false;
        }
        else
        {
            await CheckFileSystemAsync(survivor, d, ct);
            var cold = await DemoColdBoot.RunAsync(ColdGuest.Of(_sec), survivor, DemoColdBoot.NetworkOf(_topo.GuestIp, _topo.LanPrefixLength),
                workload.AckedIds(), _runDir, _ramPrefix, _loggers.CreateLogger("cold-boot"), ct);
            d.ColdBootKeysOk = cold.KeysOk;
            d.ColdBootLostWrites = cold.Error == null ? cold.Lost : null;
            d.ColdBootMs = cold.ElapsedMs;
            if (cold.Error != null)
                _log.LogError("cold boot check incomplete: {Error}", cold.Error);
        }
        report.UpdateOk();
        string? stateLine = secEnd == null ? null
            : $"secondary: state {secEnd.State}, failed over {secEnd.FailedOver}, detection reason: {secEnd.PeerLostReason}";
        return (report, stateLine);
    }

    /// <summary>e2fsck on a copy of <paramref name="image"/> (journal replayed first); the output goes to fsck.log.</summary>
    private async Task CheckFileSystemAsync(string image, DemoDiskSummary d, CancellationToken ct)
    {
        try
        {
            var fsck = await DataDisk.CheckAsync(image, Path.Combine(_runDir, "fsck-scratch.img"), ct);
            d.FsckClean = fsck.Clean;
            d.FsckJournalReplayed = fsck.JournalReplayed;
            await File.WriteAllTextAsync(Path.Combine(_runDir, "fsck.log"), fsck.Output, ct);
            if (fsck.Clean)
                _log.LogInformation("e2fsck: the surviving disk is clean{Replay}", fsck.JournalReplayed ? " (journal replayed)" : "");
            else
                _log.LogError("e2fsck: the surviving disk is NOT clean (exit {Code}); see fsck.log", fsck.ExitCode);
        }
        catch (ImageBuildException e)
        {
            _log.LogError("e2fsck could not run: {Error}", e.Message);
            d.FsckClean = false;
        }
    }

    /// <summary>
    /// The secondary's replication figures (maxima over both readings, sync figures from the first that has them) into
    /// <paramref name="into"/> or a new summary; <paramref name="into"/> (possibly null) when neither reading has a disk.
    /// </summary>
    private static DemoDiskSummary? ReplicationFigures(DiskStatus? earlier, DiskStatus? later, DemoDiskSummary? into)
    {
        if (earlier == null && later == null)
            return into;
        var d = into ?? new DemoDiskSummary();
        d.OverlayBytesMax = Math.Max(earlier?.OverlayBytesMax ?? 0, later?.OverlayBytesMax ?? 0);
        d.BufferBytesMax = Math.Max(earlier?.BufferBytesMax ?? 0, later?.BufferBytesMax ?? 0);
        var sync = earlier is { SyncMs: > 0 } ? earlier : later ?? earlier!;
        d.SyncMs = sync.SyncMs;
        d.SyncBytes = sync.SyncBytes;
        return d;
    }

    /// <summary>SIGKILLs every QEMU the statuses name and waits (up to 5 s each) until they are gone, so no write to a disk image is pending.</summary>
    private static async Task KillQemusAndWaitAsync(params NodeStatus?[] statuses)
    {
        foreach (var st in statuses)
            KillQemus(st);
        var watch = Stopwatch.StartNew();
        foreach (int pid in statuses.SelectMany(s => new[] { s?.VmPid ?? 0, s?.StandbyPid ?? 0 }).Where(p => p > 0).Distinct())
        {
            while (IsQemu(pid) && !IsZombie(pid) && watch.Elapsed < TimeSpan.FromSeconds(5))
                await Task.Delay(50);
        }
    }

    private static bool IsZombie(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            int close = stat.LastIndexOf(')');
            return close > 0 && close + 2 < stat.Length && stat[close + 2] is 'Z' or 'X';
        }
        catch (IOException)
        {
            return true;
        }
    }
}
