using System.Diagnostics;
using System.Text.Json;
using Colo.Demo;
using Colo.Image;
using Colo.Node;
using Microsoft.Extensions.Logging;

namespace Colo.Cli;

/// <summary>Runs one demo: topology, daemons, workload, primary kill, report, teardown (always).</summary>
internal sealed class DemoRunner
{
    private readonly DemoOptions _o;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _log;

    public DemoRunner(DemoOptions options, ILoggerFactory loggers)
    {
        _o = options;
        _loggers = loggers;
        _log = loggers.CreateLogger("demo");
    }

    public async Task<int> RunAsync(CancellationToken ct)
    {
        var image = await new GuestImageBuilder(GuestImageBuilder.DefaultCacheRoot, _loggers.CreateLogger("image")).EnsureAsync(Lifetime.Token);
        StaleRunSweeper.Sweep(_log);
        await using var topo = await DemoTopology.CreateAsync(_loggers.CreateLogger("topology"), null, ct);
        string runDir = Path.Combine("/tmp", $"colo-demo-{topo.Tag}");
        string ramPrefix = $"colo-{topo.Tag}";
        Directory.CreateDirectory(runDir);
        var children = new List<ChildProcess>();
        NodeConfig? pri = null, sec = null;
        bool ok = false;
        try
        {
            var common = new NodeConfig
            {
                VmName = "demo",
                RunDirectory = "",
                KernelPath = image.KernelPath,
                InitrdPath = image.InitrdPath,
                KernelCmdline = GuestKernelCmdline.Build($"{topo.GuestIp}/{topo.LanPrefixLength}"),
                MemoryMiB = _o.MemoryMiB,
                GuestMac = topo.GuestMac,
                GuestIp = topo.GuestIp.ToString(),
                TapName = DemoTopology.TapName,
                LinkAddress = topo.SecondaryReplicationIp.ToString(),
                CompareTimeoutMs = _o.CompareTimeoutMs,
                MaxEpochMs = _o.MaxEpochMs,
                RamFilePrefix = ramPrefix,
            };
            pri = common with { RunDirectory = Path.Combine(runDir, "pri") };
            sec = common with { RunDirectory = Path.Combine(runDir, "sec") };
            Directory.CreateDirectory(pri.RunDirectory);
            Directory.CreateDirectory(sec.RunDirectory);
            pri.Save(Path.Combine(runDir, "primary.json"));
            sec.Save(Path.Combine(runDir, "secondary.json"));

            var (self, prefix) = ChildProcess.Self();
            string[] Args(params string[] a) => [.. prefix, .. a, .. (_o.Verbose ? new[] { "--verbose" } : [])];
            var secondary = ChildProcess.Start("secondary", DemoTopology.ExecIn(topo.SecondaryNamespace, self, Args("secondary", "--config", Path.Combine(runDir, "secondary.json"))), Path.Combine(runDir, "secondary.log"));
            children.Add(secondary);
            var primary = ChildProcess.Start("primary", DemoTopology.ExecIn(topo.PrimaryNamespace, self, Args("primary", "--config", Path.Combine(runDir, "primary.json"))), Path.Combine(runDir, "primary.log"));
            children.Add(primary);
            _log.LogInformation("daemons started (primary pid {P}, secondary pid {S}); booting the guest and synchronising the SVM", primary.Pid, secondary.Pid);

            string priStatus = Path.Combine(pri.RunDirectory, "status.json");
            string secStatus = Path.Combine(sec.RunDirectory, "status.json");
            var protectWatch = Stopwatch.StartNew();
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                var s = NodeStatus.TryRead(priStatus);
                var ss = NodeStatus.TryRead(secStatus);
                if (s?.State == "protected" && ss?.State == "protected")
                    break;
                if (primary.HasExited || secondary.HasExited)
                    throw new InvalidOperationException($"a daemon exited before protection started (primary: {(primary.HasExited ? primary.ExitCode : "running")}, secondary: {(secondary.HasExited ? secondary.ExitCode : "running")}); logs in {runDir}");
                if (protectWatch.Elapsed > TimeSpan.FromMinutes(5))
                    throw new TimeoutException($"the guest was not protected within 5 minutes; logs in {runDir}");
                await Task.Delay(200, ct);
            }
            var priAtStart = NodeStatus.TryRead(priStatus)!;
            _log.LogInformation("protected after {S:F1} s (initial sync {Sync:F0} ms); starting the clients for {D} s", protectWatch.Elapsed.TotalSeconds, priAtStart.InitialSyncMs, _o.DurationS);

            string clientOut = Path.Combine(runDir, "client.json");
            string events = Path.Combine(runDir, "client-events.jsonl");
            var client = ChildProcess.Start("client", DemoTopology.ExecIn(topo.LanNamespace, self, [.. prefix, "demo-client",
                "--guest-ip", topo.GuestIp.ToString(), "--duration", _o.DurationS.ToString(),
                "--bench-at", "1", "--bench-requests", _o.BenchRequests.ToString(), "--bench-clients", _o.BenchClients.ToString(),
                "--out", clientOut, "--events", events]), Path.Combine(runDir, "client.log"));
            children.Add(client);
            var clientStart = DateTimeOffset.UtcNow;

            long killedAtUnixMs = 0;
            NodeStatus? priBeforeKill = null;
            if (_o.KillAtS >= 0)
            {
                var killTime = clientStart + TimeSpan.FromSeconds(_o.KillAtS);
                while (DateTimeOffset.UtcNow < killTime && !client.HasExited)
                    await Task.Delay(50, ct);
                priBeforeKill = NodeStatus.TryRead(priStatus);
                if (_o.Kill is "primary-stall" or "secondary-stall")
                {
                    var st = NodeStatus.TryRead(_o.Kill == "primary-stall" ? priStatus : secStatus);
                    int daemon = _o.Kill == "primary-stall" ? primary.Pid : secondary.Pid;
                    int[] pids = [daemon, st?.VmPid ?? 0, st?.StandbyPid ?? 0];
                    foreach (int pid in pids)
                        ChildProcess.Signal(pid, 19);
                    killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                    _log.LogWarning("froze the {Host} (daemon pid {Pid}) for 1.5 s at {S:F1} s", _o.Kill[..^6], daemon, _o.KillAtS);
                    await Task.Delay(1500, ct);
                    foreach (int pid in pids)
                        ChildProcess.Signal(pid, 18);
                }
                else if (_o.KillSecondary)
                {
                    var secBefore = NodeStatus.TryRead(secStatus);
                    if (ChildProcess.Signal(secondary.Pid, 9))
                    {
                        killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                        KillQemus(secBefore);
                        _log.LogWarning("SIGKILLed the secondary daemon (pid {Pid}) and its QEMUs at {S:F1} s", secondary.Pid, _o.KillAtS);
                    }
                }
                else
                {
                    int pvmPid = priBeforeKill?.VmPid ?? 0;
                    if (_o.Kill == "primary-hang" && pvmPid > 0 && ChildProcess.Signal(primary.Pid, 19) && ChildProcess.Signal(pvmPid, 19))
                    {
                        killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                        _log.LogWarning("froze the primary daemon (pid {Pid}) and its QEMU (pid {Qemu}) with SIGSTOP at {S:F1} s", primary.Pid, pvmPid, _o.KillAtS);
                    }
                    else if (_o.Kill == "primary-host" && pvmPid > 0 && ChildProcess.Signal(primary.Pid, 9) && ChildProcess.Signal(pvmPid, 9))
                    {
                        killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                        _log.LogWarning("SIGKILLed the primary daemon (pid {Pid}) and its QEMU (pid {Qemu}) at {S:F1} s", primary.Pid, pvmPid, _o.KillAtS);
                    }
                    else if (_o.Kill == "primary" && pvmPid > 0 && ChildProcess.Signal(pvmPid, 9))
                    {
                        killedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                        _log.LogWarning("SIGKILLed the primary's QEMU (pid {Pid}) at {S:F1} s", pvmPid, _o.KillAtS);
                    }
                    else
                    {
                        _log.LogError("could not kill the PVM (pid {Pid})", pvmPid);
                    }
                }
            }

            await client.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(_o.DurationS + 120), ct);
            var priEnd = NodeStatus.TryRead(priStatus);
            var secEnd = NodeStatus.TryRead(secStatus);
            var workload = JsonSerializer.Deserialize<ClientWorkloadResult>(File.ReadAllText(clientOut), ClientWorkloadResult.JsonOptions)
                ?? throw new InvalidDataException("empty client result");

            var pauses = (priBeforeKill ?? priEnd)?.PauseMs ?? [];
            var report = DemoReport.From(
                durationS: _o.DurationS,
                workload: workload,
                checkpointCount: (priBeforeKill ?? priEnd)?.Checkpoints ?? 0,
                pausesMs: pauses,
                killedAtS: killedAtUnixMs > 0 ? _o.KillAtS : -1,
                killedAtUnixMs: killedAtUnixMs,
                detectedAtUnixMs: (_o.KillSecondary ? priEnd?.PeerLostAtUnixMs : secEnd?.PeerLostAtUnixMs) ?? 0);
            report.CheckpointsByReason = (priBeforeKill ?? priEnd)?.CheckpointsByReason ?? new();
            report.KilledWhat = _o.Kill switch
            {
                "secondary" => "secondary host",
                "primary-host" => "primary host",
                "primary-hang" => "primary host (frozen)",
                "primary-stall" => "primary host (frozen 1.5 s)",
                "secondary-stall" => "secondary host (frozen 1.5 s)",
                _ => "primary's QEMU",
            };
            // Exactly one VM may serve the clients at the end: a failed-over secondary and a primary still serving
            // (protected or unprotected) would be a split brain.
            bool primaryServes = !primary.HasExited && _o.Kill != "primary-hang" && priEnd?.State is "protected" or "unprotected";
            bool secondaryServes = secEnd?.FailedOver == true && secEnd.State == "failed-over";
            if (primaryServes && secondaryServes)
            {
                _log.LogError("split brain: the primary ({P}) and the failed-over secondary both serve", priEnd!.State);
                report.Ok = false;
            }
            else if (!primaryServes && !secondaryServes)
            {
                _log.LogError("no VM serves at the end (primary {P}, secondary {S})", priEnd?.State, secEnd?.State);
                report.Ok = false;
            }
            ok = report.Ok;
            string text = JsonSerializer.Serialize(report, DemoReport.JsonOptions);
            if (_o.JsonPath != null)
                File.WriteAllText(_o.JsonPath, text);
            Console.WriteLine(report.ToHumanSummary());
            if (_o.KillSecondary && priEnd != null)
                Console.WriteLine($"primary: state {priEnd.State}, secondary lost: {priEnd.PeerLostReason}");
            else if (secEnd != null)
                Console.WriteLine($"secondary: state {secEnd.State}, failed over {secEnd.FailedOver}, detection reason: {secEnd.PeerLostReason}");
            return ok ? 0 : 1;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            _log.LogWarning("demo interrupted; tearing down");
            return 130;
        }
        catch (Exception e)
        {
            _log.LogError("demo failed: {Error}", e.Message);
            return 1;
        }
        finally
        {
            // Client first, then the secondary (the primary then runs on unprotected instead of the secondary
            // taking over), then the primary.
            foreach (var c in children.OrderBy(c => c.Name switch { "client" => 0, "secondary" => 1, _ => 2 }))
            {
                ChildProcess.Signal(c.Pid, 18); // SIGCONT: a frozen (primary-hang) daemon must run to handle SIGTERM
                await c.StopAsync(TimeSpan.FromSeconds(10));
                c.Dispose();
            }
            foreach (var cfg in new[] { pri, sec })
            {
                if (cfg == null)
                    continue;
                var st = NodeStatus.TryRead(Path.Combine(cfg.RunDirectory, "status.json"));
                KillQemus(st);
            }
            foreach (var f in Directory.EnumerateFiles("/dev/shm", ramPrefix + "-*"))
                File.Delete(f);
            if (ok && !_o.KeepLogs)
                Directory.Delete(runDir, true);
            else
                _log.LogInformation("logs kept in {Dir}", runDir);
        }
    }

    /// <summary>SIGKILLs the QEMUs a daemon reported (VM and standby), by PID, if they are still QEMUs.</summary>
    private static void KillQemus(NodeStatus? status)
    {
        foreach (int pid in new[] { status?.VmPid ?? 0, status?.StandbyPid ?? 0 })
        {
            if (pid > 0 && IsQemu(pid))
                ChildProcess.Signal(pid, 9);
        }
    }

    private static bool IsQemu(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/comm").StartsWith("qemu", StringComparison.Ordinal);
        }
        catch (IOException)
        {
            return false;
        }
    }
}
