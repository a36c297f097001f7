using System.Diagnostics;
using System.Text.Json;
using Colo.Demo;
using Colo.Image;
using Colo.Node;
using Microsoft.Extensions.Logging;

namespace Colo.Cli;

/// <summary>
/// Runs one demo: topology, daemons, workload, failure, report, teardown (always). The service scenario is here,
/// the disk scenario in DemoRunner.Disk.cs.
/// </summary>
internal sealed partial class DemoRunner
{
    private readonly DemoOptions _o;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _log;
    private readonly List<ChildProcess> _children = [];
    private DemoTopology _topo = null!;
    private GuestImage _image = null!;
    private string _runDir = "";
    private string _ramPrefix = "";
    private NodeConfig? _pri, _sec;
    private ChildProcess _primary = null!, _secondary = null!;
    private (string File, string[] Prefix) _self;

    public DemoRunner(DemoOptions options, ILoggerFactory loggers)
    {
        _o = options;
        _loggers = loggers;
        _log = loggers.CreateLogger("demo");
    }

    private string PriStatus => Path.Combine(_pri!.RunDirectory, "status.json");

    private string SecStatus => Path.Combine(_sec!.RunDirectory, "status.json");

    public async Task<int> RunAsync(CancellationToken ct)
    {
        _image = await new GuestImageBuilder(GuestImageBuilder.DefaultCacheRoot, _loggers.CreateLogger("image")).EnsureAsync(Lifetime.Token);
        StaleRunSweeper.Sweep(_log);
        await using var topo = await DemoTopology.CreateAsync(_loggers.CreateLogger("topology"), null, ct);
        _topo = topo;
        _runDir = Path.Combine("/tmp", $"colo-demo-{topo.Tag}");
        _ramPrefix = $"colo-{topo.Tag}";
        Directory.CreateDirectory(_runDir);
        bool ok = false;
        try
        {
            await StartDaemonsAsync(ct);
            var (report, stateLine) = _o.Disk ? await RunDiskScenarioAsync(ct) : await RunServiceScenarioAsync(ct);
            ok = report.Ok;
            string text = JsonSerializer.Serialize(report, DemoReport.JsonOptions);
            if (_o.JsonPath != null)
                File.WriteAllText(_o.JsonPath, text);
            Console.WriteLine(report.ToHumanSummary());
            if (stateLine != null)
                Console.WriteLine(stateLine);
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
            await StopChildrenAsync();
            foreach (var cfg in new[] { _pri, _sec })
            {
                if (cfg != null)
                    KillQemus(NodeStatus.TryRead(Path.Combine(cfg.RunDirectory, "status.json")));
            }
            foreach (var f in Directory.EnumerateFiles("/dev/shm", _ramPrefix + "-*"))
                File.Delete(f);
            if (ok && !_o.KeepLogs)
                Directory.Delete(_runDir, true);
            else
                _log.LogInformation("logs kept in {Dir}", _runDir);
        }
    }

    /// <summary>Writes the configs, creates the primary's disk, starts both daemons and waits until both report protected.</summary>
    private async Task StartDaemonsAsync(CancellationToken ct)
    {
        var common = new NodeConfig
        {
            VmName = "demo",
            RunDirectory = "",
            KernelPath = _image.KernelPath,
            InitrdPath = _image.InitrdPath,
            KernelCmdline = GuestKernelCmdline.Build($"{_topo.GuestIp}/{_topo.LanPrefixLength}"),
            MemoryMiB = _o.MemoryMiB,
            GuestMac = _topo.GuestMac,
            GuestIp = _topo.GuestIp.ToString(),
            TapName = DemoTopology.TapName,
            LinkAddress = _topo.SecondaryReplicationIp.ToString(),
            CompareTimeoutMs = _o.CompareTimeoutMs,
            MaxEpochMs = _o.MaxEpochMs,
            RamFilePrefix = _ramPrefix,
        };
        string priDir = Path.Combine(_runDir, "pri"), secDir = Path.Combine(_runDir, "sec");
        // The secondary daemon creates (overwrites) its disk image in the initial sync.
        _pri = common with { RunDirectory = priDir, DiskImage = Path.Combine(priDir, "disk.img") };
        _sec = common with { RunDirectory = secDir, DiskImage = Path.Combine(secDir, "disk.img") };
        Directory.CreateDirectory(priDir);
        Directory.CreateDirectory(secDir);
        await DataDisk.CreateAsync(_pri.DiskImage, DataDisk.DefaultSizeMiB, ct);
        _pri.Save(Path.Combine(_runDir, "primary.json"));
        _sec.Save(Path.Combine(_runDir, "secondary.json"));

        _self = ChildProcess.Self();
        string[] Args(params string[] a) => [.. _self.Prefix, .. a, .. (_o.Verbose ? new[] { "--verbose" } : [])];
        _secondary = ChildProcess.Start("secondary", DemoTopology.ExecIn(_topo.SecondaryNamespace, _self.File, Args("secondary", "--config", Path.Combine(_runDir, "secondary.json"))), Path.Combine(_runDir, "secondary.log"));
        _children.Add(_secondary);
        _primary = ChildProcess.Start("primary", DemoTopology.ExecIn(_topo.PrimaryNamespace, _self.File, Args("primary", "--config", Path.Combine(_runDir, "primary.json"))), Path.Combine(_runDir, "primary.log"));
        _children.Add(_primary);
        _log.LogInformation("daemons started (primary pid {P}, secondary pid {S}); booting the guest and synchronising the SVM", _primary.Pid, _secondary.Pid);

        var protectWatch = Stopwatch.StartNew();
        while (true)
        {
            ct.ThrowIfCancellationRequested();
            if (NodeStatus.TryRead(PriStatus)?.State == "protected" && NodeStatus.TryRead(SecStatus)?.State == "protected")
                break;
            if (_primary.HasExited || _secondary.HasExited)
                throw new InvalidOperationException($"a daemon exited before protection started (primary: {(_primary.HasExited ? _primary.ExitCode : "running")}, secondary: {(_secondary.HasExited ? _secondary.ExitCode : "running")}); logs in {_runDir}");
            if (protectWatch.Elapsed > TimeSpan.FromMinutes(5))
                throw new TimeoutException($"the guest was not protected within 5 minutes; logs in {_runDir}");
            await Task.Delay(200, ct);
        }
        var priAtStart = NodeStatus.TryRead(PriStatus)!;
        _log.LogInformation("protected after {S:F1} s (initial sync {Sync:F0} ms); starting the client for {D} s", protectWatch.Elapsed.TotalSeconds, priAtStart.InitialSyncMs, _o.DurationS);
    }

    private async Task<(DemoReport Report, string? StateLine)> RunServiceScenarioAsync(CancellationToken ct)
    {
        string clientOut = Path.Combine(_runDir, "client.json");
        var client = StartClient("--bench-at", "1", "--bench-requests", _o.BenchRequests.ToString(), "--bench-clients", _o.BenchClients.ToString(),
            "--out", clientOut, "--events", Path.Combine(_runDir, "client-events.jsonl"),
            "--wire-interface", DemoTopology.BridgeName, "--guest-mac", _topo.GuestMac);
        var (killedAtUnixMs, priBeforeKill) = await InjectFailureAsync(client, DateTimeOffset.UtcNow, ct);

        await client.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(_o.DurationS + 120), ct);
        var priEnd = NodeStatus.TryRead(PriStatus);
        var secEnd = NodeStatus.TryRead(SecStatus);
        var workload = JsonSerializer.Deserialize<ClientWorkloadResult>(File.ReadAllText(clientOut), ClientWorkloadResult.JsonOptions)
            ?? throw new InvalidDataException("empty client result");

        var report = DemoReport.From(
            durationS: _o.DurationS,
            workload: workload,
            checkpointCount: (priBeforeKill ?? priEnd)?.Checkpoints ?? 0,
            pausesMs: (priBeforeKill ?? priEnd)?.PauseMs ?? [],
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
        report.Disk = ReplicationFigures(secEnd?.Disk, null, null);
        if (workload.Wire is null)
            report.RunFailures.Add("wire probe result present (the client wrote none)");
        CheckOneVmServes(report, priEnd, secEnd);
        string? stateLine = null;
        if (_o.KillSecondary && priEnd != null)
            stateLine = $"primary: state {priEnd.State}, secondary lost: {priEnd.PeerLostReason}";
        else if (secEnd != null)
            stateLine = $"secondary: state {secEnd.State}, failed over {secEnd.FailedOver}, detection reason: {secEnd.PeerLostReason}";
        return (report, stateLine);
    }

    /// <summary>Starts <c>colo demo-client</c> with <paramref name="args"/> in the LAN namespace.</summary>
    private ChildProcess StartClient(params string[] args)
    {
        var client = ChildProcess.Start("client", DemoTopology.ExecIn(_topo.LanNamespace, _self.File, [.. _self.Prefix, "demo-client",
            "--guest-ip", _topo.GuestIp.ToString(), "--duration", _o.DurationS.ToString(), .. args]), Path.Combine(_runDir, "client.log"));
        _children.Add(client);
        return client;
    }

    /// <summary>
    /// Exactly one VM may serve the clients at the end: a failed-over secondary and a primary still serving (protected
    /// or unprotected) would be a split brain; none serving is a failure too. Adds to <see cref="DemoReport.RunFailures"/>.
    /// </summary>
    private void CheckOneVmServes(DemoReport report, NodeStatus? priEnd, NodeStatus? secEnd)
    {
        bool primaryServes = !_primary.HasExited && _o.Kill != "primary-hang" && priEnd?.State is "protected" or "unprotected";
        bool secondaryServes = secEnd?.FailedOver == true && secEnd.State == "failed-over";
        if (primaryServes && secondaryServes)
        {
            _log.LogError("split brain: the primary ({P}) and the failed-over secondary both serve", priEnd!.State);
            report.RunFailures.Add($"exactly one VM serves (split brain: primary {priEnd.State}, secondary failed over)");
        }
        else if (!primaryServes && !secondaryServes)
        {
            _log.LogError("no VM serves at the end (primary {P}, secondary {S})", priEnd?.State, secEnd?.State);
            report.RunFailures.Add($"exactly one VM serves (none does: primary {priEnd?.State ?? "?"}, secondary {secEnd?.State ?? "?"})");
        }
        report.UpdateOk();
    }

    /// <summary>Stops the children by PID: client first, then the secondary (the primary then runs on unprotected
    /// instead of the secondary taking over), then the primary. Idempotent.</summary>
    private async Task StopChildrenAsync(TimeSpan? grace = null)
    {
        foreach (var c in _children.OrderBy(c => c.Name switch { "client" => 0, "secondary" => 1, _ => 2 }))
        {
            ChildProcess.Signal(c.Pid, 18); // SIGCONT: a frozen (primary-hang) daemon must run to handle SIGTERM
            await c.StopAsync(grace ?? TimeSpan.FromSeconds(10));
            c.Dispose();
        }
        _children.Clear();
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
