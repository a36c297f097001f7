using System.Diagnostics;
using System.Text.Json;
using Xunit.Abstractions;

namespace Colo.Integration.Tests;

/// <summary>
/// Runs the real `colo demo` (QEMU under TCG, network namespaces, TAP devices, Redis and httpd in the
/// guest) in a shortened form and checks the report against the acceptance rules.
/// Needs root, qemu-system-x86_64 and redis-benchmark; `./run-tests` installs them.
/// </summary>
public sealed class DemoEndToEndTests
{
    private readonly ITestOutputHelper _output;

    public DemoEndToEndTests(ITestOutputHelper output) => _output = output;

    [DemoFact]
    public async Task Demo_PrimaryKilled_ClientsKeepServedWithoutLoss()
    {
        var report = await RunDemoAsync("--duration", "24", "--kill-primary-at", "12");
        Assert.True(report.GetProperty("ok").GetBoolean(), "demo reported ok=false");
        var redis = report.GetProperty("redis");
        Assert.Equal(0, redis.GetProperty("errors").GetInt64());
        Assert.True(redis.GetProperty("continuous").GetBoolean());
        Assert.Equal(0, redis.GetProperty("reconnects").GetInt64());
        Assert.True(redis.GetProperty("ops").GetInt64() > 100);
        Assert.Equal(0, report.GetProperty("http").GetProperty("errors").GetInt64());
        Assert.Equal(0, report.GetProperty("redis_benchmark").GetProperty("errors").GetInt64());
        Assert.True(report.GetProperty("checkpoints").GetProperty("count").GetInt64() >= 1);
        var failover = report.GetProperty("failover");
        Assert.InRange(failover.GetProperty("detected_ms").GetInt64(), 0, 1000);
        Assert.InRange(failover.GetProperty("client_gap_ms").GetInt64(), 0, 3000);

        // On the wire (capture on the client's LAN interface): the INCR connection's sequence numbers are continuous
        // across the checkpoints and the failover, the client never reset it, and ICMP echo and ARP were answered by
        // the protected guest and by the SVM after the failover.
        var wire = report.GetProperty("wire");
        Assert.Equal(0, wire.GetProperty("seq_gaps").GetInt64());
        Assert.Equal(0, wire.GetProperty("client_rsts").GetInt64());
        Assert.Equal(0, wire.GetProperty("ack_beyond_sent").GetInt64());
        Assert.True(wire.GetProperty("handshake_seen").GetBoolean());
        Assert.Equal(1, wire.GetProperty("connections").GetInt32());
        long segments = wire.GetProperty("segments").GetInt64();
        Assert.True(segments > 100, $"only {segments} guest segments captured");
        Assert.True(wire.GetProperty("segments_after_failover").GetInt64() > 0, "no guest segment captured after the failover");
        var icmp = report.GetProperty("icmp");
        Assert.Equal(0, icmp.GetProperty("payload_mismatches").GetInt64());
        Assert.True(icmp.GetProperty("answered_before_failover").GetInt64() > 0, "no echo reply before the failover");
        Assert.True(icmp.GetProperty("answered_after_failover").GetInt64() > 0, "no echo reply after the failover");
        var arp = report.GetProperty("arp");
        Assert.Equal(0, arp.GetProperty("wrong_mac").GetInt64());
        Assert.True(arp.GetProperty("replies").GetInt64() > 0, "no ARP reply");
        Assert.True(arp.GetProperty("replies_before_failover").GetInt64() > 0, "no ARP reply before the failover");
        Assert.True(arp.GetProperty("replies_after_failover").GetInt64() > 0, "no ARP reply after the failover");
    }

    [DemoFact]
    public async Task Demo_SecondaryKilled_PrimaryRunsUnprotectedWithoutLoss()
    {
        var report = await RunDemoAsync("--duration", "16", "--kill-primary-at", "8", "--kill", "secondary", "--bench-requests", "500");
        Assert.True(report.GetProperty("ok").GetBoolean(), "demo reported ok=false");
        var redis = report.GetProperty("redis");
        Assert.Equal(0, redis.GetProperty("errors").GetInt64());
        Assert.True(redis.GetProperty("continuous").GetBoolean());
        Assert.Equal(0, redis.GetProperty("reconnects").GetInt64());
        Assert.Equal(0, report.GetProperty("http").GetProperty("errors").GetInt64());
        Assert.InRange(report.GetProperty("failover").GetProperty("detected_ms").GetInt64(), 0, 1000);
    }

    [DemoTheory]
    [InlineData("primary-stall")]
    [InlineData("secondary-stall")]
    public async Task Demo_HostStalls_ExactlyOneVmServesAndClientsLoseNothing(string stall)
    {
        // The demo fails (ok=false, exit 1) if both VMs serve afterwards (split brain) or none does.
        var report = await RunDemoAsync("--duration", "16", "--kill-primary-at", "8", "--kill", stall, "--bench-requests", "500");
        Assert.True(report.GetProperty("ok").GetBoolean(), "demo reported ok=false");
        var redis = report.GetProperty("redis");
        Assert.Equal(0, redis.GetProperty("errors").GetInt64());
        Assert.True(redis.GetProperty("continuous").GetBoolean());
        Assert.Equal(0, redis.GetProperty("reconnects").GetInt64());
    }

    [DemoFact]
    public async Task Demo_DiskScenario_NoAcknowledgedWriteLost_SurvivingDiskCleanAndReloadsEveryKey()
    {
        // Seed 1 kills the primary's QEMU at 54 % of the duration (12.958 s of 24).
        var report = await RunDemoAsync("--scenario", "disk", "--seed", "1", "--duration", "24");
        Assert.True(report.GetProperty("ok").GetBoolean(), "demo reported ok=false");
        Assert.Equal("disk", report.GetProperty("scenario").GetString());
        Assert.Equal(1, report.GetProperty("seed").GetInt32());
        Assert.False(report.TryGetProperty("redis", out _));
        var failover = report.GetProperty("failover");
        Assert.Equal(12.958, failover.GetProperty("killed_at_s").GetDouble());
        Assert.True(failover.GetProperty("detected_ms").GetInt64() >= 0);
        var disk = report.GetProperty("disk");
        long acked = disk.GetProperty("acked_writes").GetInt64();
        Assert.True(acked > 100, $"only {acked} writes acknowledged");
        Assert.Equal(0, disk.GetProperty("lost_writes").GetInt64());
        Assert.Equal(acked, disk.GetProperty("verified_writes").GetInt64());
        Assert.True(disk.GetProperty("fsck_clean").GetBoolean());
        Assert.True(disk.GetProperty("cold_boot_keys_ok").GetBoolean());
        Assert.True(disk.GetProperty("overlay_bytes_max").GetInt64() >= 0);
        Assert.True(disk.GetProperty("buffer_bytes_max").GetInt64() >= 0);
    }

    private async Task<JsonElement> RunDemoAsync(params string[] args)
    {
        string json = Path.Combine(Path.GetTempPath(), $"colo-demo-test-{Guid.NewGuid():N}.json");
        string cli = Path.Combine(AppContext.BaseDirectory, "colo.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(cli);
        psi.ArgumentList.Add("demo");
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        psi.ArgumentList.Add("--json");
        psi.ArgumentList.Add(json);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(8));
        try
        {
            await p.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: false);
            throw new TimeoutException("colo demo did not finish within 8 minutes");
        }
        _output.WriteLine(await stdout);
        _output.WriteLine(await stderr);
        Assert.True(File.Exists(json), $"no report written (exit code {p.ExitCode})");
        string text = await File.ReadAllTextAsync(json);
        File.Delete(json);
        _output.WriteLine(text);
        Assert.Equal(0, p.ExitCode);
        return JsonDocument.Parse(text).RootElement.Clone();
    }
}

/// <summary>A fact skipped (with the reason) unless root, QEMU and redis-benchmark are available.</summary>
public sealed class DemoFactAttribute : FactAttribute
{
    public DemoFactAttribute()
    {
        if (!DemoEnvironment.Ready(out string? why))
            Skip = why;
    }
}

/// <summary>A theory skipped (with the reason) unless root, QEMU and redis-benchmark are available.</summary>
public sealed class DemoTheoryAttribute : TheoryAttribute
{
    public DemoTheoryAttribute()
    {
        if (!DemoEnvironment.Ready(out string? why))
            Skip = why;
    }
}

internal static class DemoEnvironment
{
    public static bool Ready(out string? why)
    {
        why = null;
        if (geteuid() != 0)
            why = "needs root (namespaces, TAP devices)";
        else if (!OnPath("qemu-system-x86_64"))
            why = "qemu-system-x86_64 not installed";
        else if (!OnPath("redis-benchmark"))
            why = "redis-benchmark not installed";
        return why == null;
    }

    private static bool OnPath(string file) =>
        (System.Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, file)));

    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern uint geteuid();
}
