using System.CommandLine;
using Colo.Demo;
using Colo.Image;
using Colo.Node;
using Microsoft.Extensions.Logging;

namespace Colo.Cli;

/// <summary>
/// <c>colo demo</c>: builds the namespace topology, protects the guest with a primary and a
/// secondary daemon, runs the client workload, kills the primary's QEMU half-way and reports.
/// <c>--scenario disk</c> instead checks that no acknowledged write is lost when the primary dies at a seeded
/// random moment, then checks the surviving disk image (e2fsck, cold boot).
/// </summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var duration = new Option<int>("--duration") { Description = "Seconds of client load after protection starts", DefaultValueFactory = _ => 40 };
        var killAt = new Option<double?>("--kill-primary-at") { Description = "Seconds into the load at which the host chosen by --kill is killed (default: half the duration; negative: never)" };
        var json = new Option<string?>("--json") { Description = "Write the JSON report here" };
        var benchRequests = new Option<int>("--bench-requests") { Description = "redis-benchmark -n (per test: set, get, incr)", DefaultValueFactory = _ => 2000 };
        var benchClients = new Option<int>("--bench-clients") { Description = "redis-benchmark -c", DefaultValueFactory = _ => 10 };
        var compareTimeout = new Option<int>("--compare-timeout-ms") { Description = "Compare timeout in ms", DefaultValueFactory = _ => 1000 };
        var maxEpoch = new Option<int>("--max-epoch-ms") { Description = "Periodic checkpoint interval in ms (0 = only on demand)", DefaultValueFactory = _ => 5000 };
        var memory = new Option<int>("--memory-mib") { Description = "Guest RAM in MiB", DefaultValueFactory = _ => 256 };
        var keep = new Option<bool>("--keep-logs") { Description = "Keep the run directory with daemon and console logs even on success" };
        var verbose = new Option<bool>("--verbose") { Description = "Debug logging in the daemons" };
        var kill = new Option<string>("--kill") { Description = "What fails at --kill-primary-at: primary (the PVM's QEMU is SIGKILLed), primary-host (the primary daemon and its QEMU are SIGKILLed), primary-hang (both are frozen with SIGSTOP: no goodbye, no TCP reset, only missing heartbeats), secondary (its daemon and QEMUs are SIGKILLed), or primary-stall / secondary-stall (that host is frozen for 1.5 s, then runs again: exactly one of the two VMs must serve afterwards)", DefaultValueFactory = _ => "primary" };
        kill.AcceptOnlyFromAmong("primary", "primary-host", "primary-hang", "secondary", "primary-stall", "secondary-stall");
        var scenario = new Option<string>("--scenario") { Description = "service: Redis INCR, HTTP and redis-benchmark keep being served through the failure; disk: SET k<i> v<i> on one connection, the primary's QEMU is SIGKILLed at a seeded random moment, then every acknowledged key must be readable, the surviving disk must pass e2fsck and reload every key in a cold boot", DefaultValueFactory = _ => DemoReport.ServiceScenario };
        scenario.AcceptOnlyFromAmong(DemoReport.ServiceScenario, DemoReport.DiskScenarioName);
        var seed = new Option<int?>("--seed") { Description = "Disk scenario: seed of the kill moment, uniform in 20%..80% of --duration (default: random; printed and in the report)" };
        var cmd = new Command("demo", "End-to-end demo: Redis and HTTP keep serving through the primary's death.")
        {
            duration, killAt, json, benchRequests, benchClients, compareTimeout, maxEpoch, memory, keep, verbose, kill, scenario, seed,
        };
        cmd.SetAction(async (pr, _) =>
        {
            using var loggers = Logging.Create();
            bool disk = pr.GetValue(scenario) == DemoReport.DiskScenarioName;
            int? chosenSeed = disk ? pr.GetValue(seed) ?? DiskScenario.NewSeed() : null;
            double defaultKillAt = disk && pr.GetValue(duration) > 0 ? DiskScenario.KillMomentS(chosenSeed!.Value, pr.GetValue(duration)) : pr.GetValue(duration) / 2.0;
            var options = new DemoOptions
            {
                Scenario = pr.GetValue(scenario)!,
                Seed = chosenSeed,
                DurationS = pr.GetValue(duration),
                KillAtS = pr.GetValue(killAt) ?? defaultKillAt,
                JsonPath = pr.GetValue(json),
                BenchRequests = pr.GetValue(benchRequests),
                BenchClients = pr.GetValue(benchClients),
                CompareTimeoutMs = pr.GetValue(compareTimeout),
                MaxEpochMs = pr.GetValue(maxEpoch),
                MemoryMiB = pr.GetValue(memory),
                KeepLogs = pr.GetValue(keep),
                Verbose = pr.GetValue(verbose),
                Kill = pr.GetValue(kill)!,
            };
            if (options.DurationS < 5)
            {
                Console.Error.WriteLine("colo demo: --duration must be at least 5 s");
                return 64;
            }
            string? bad = options switch
            {
                { MemoryMiB: < 128 or > 16384 } => "--memory-mib must be 128..16384 (the guest needs at least 128 MiB)",
                { CompareTimeoutMs: < 10 or > 600_000 } => "--compare-timeout-ms must be 10..600000",
                { MaxEpochMs: < 0 } => "--max-epoch-ms must be >= 0",
                { BenchRequests: < 1 } => "--bench-requests must be >= 1",
                { BenchClients: < 1 or > 1000 } => "--bench-clients must be 1..1000",
                _ when double.IsNaN(options.KillAtS) || double.IsInfinity(options.KillAtS) => "--kill-primary-at must be a number of seconds",
                { Disk: true, Kill: not "primary" } => $"--scenario disk always kills the primary's QEMU; --kill {options.Kill} is not supported with it",
                { Disk: true, KillAtS: < 0 } => "--scenario disk needs the kill: --kill-primary-at must not be negative",
                { Disk: false } when pr.GetValue(seed) != null => "--seed applies to --scenario disk only",
                _ => null,
            };
            if (bad == null && options.JsonPath is { } jp && !Directory.Exists(Path.GetDirectoryName(Path.GetFullPath(jp))))
                bad = $"--json {jp}: directory does not exist";
            if (bad != null)
            {
                Console.Error.WriteLine("colo demo: " + bad);
                return 64;
            }
            if (options.KillAtS >= options.DurationS)
            {
                Console.Error.WriteLine("colo demo: --kill-primary-at must be less than --duration (negative: never kill)");
                return 64;
            }
            if (options.Disk)
                Console.WriteLine(FormattableString.Invariant($"colo demo: disk scenario, seed {options.Seed}: the primary's QEMU is SIGKILLed at {options.KillAtS:0.000} s of {options.DurationS} s"));
            return await new DemoRunner(options, loggers).RunAsync(Lifetime.Token);
        });
        return cmd;
    }
}

/// <summary>Settings of one demo run.</summary>
internal sealed record DemoOptions
{
    public int DurationS { get; init; } = 40;
    public double KillAtS { get; init; } = 20;
    public string? JsonPath { get; init; }
    public int BenchRequests { get; init; } = 2000;
    public int BenchClients { get; init; } = 10;
    public int CompareTimeoutMs { get; init; } = 1000;
    public int MaxEpochMs { get; init; } = 5000;
    public int MemoryMiB { get; init; } = 256;
    public bool KeepLogs { get; init; }
    public bool Verbose { get; init; }
    /// <summary>primary, primary-host, primary-hang, secondary, primary-stall or secondary-stall.</summary>
    public string Kill { get; init; } = "primary";

    /// <summary>service (default) or disk.</summary>
    public string Scenario { get; init; } = DemoReport.ServiceScenario;

    /// <summary>The disk scenario's seed; null in the service scenario.</summary>
    public int? Seed { get; init; }

    public bool Disk => Scenario == DemoReport.DiskScenarioName;

    public bool KillSecondary => Kill is "secondary" or "secondary-stall";
}
