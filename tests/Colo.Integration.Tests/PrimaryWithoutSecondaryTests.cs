using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Colo.Demo;
using Colo.Image;
using Colo.Node;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Colo.Integration.Tests;

/// <summary>
/// The real <c>colo primary</c> (QEMU under TCG, its TAP in a network namespace, a data disk) whose secondary never
/// answers: after <c>link_wait_ms</c> its VM serves on unprotected instead of dying with the daemon, and SIGTERM still
/// stops the daemon and its QEMU cleanly.
/// </summary>
public sealed class PrimaryWithoutSecondaryTests(ITestOutputHelper output)
{
    [DemoFact]
    public async Task SecondaryNeverConnects_PvmServesUnprotected_SigtermStopsDaemonAndQemu()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(6));
        var ct = timeout.Token;
        var image = await new GuestImageBuilder(GuestImageBuilder.DefaultCacheRoot, NullLogger.Instance).EnsureAsync(ct);
        // Only the primary namespace (TAP tap0 on a bridge) is used; disposed last, after the processes are gone.
        await using var topo = await DemoTopology.CreateAsync(null, null, ct);
        string dir = Directory.CreateTempSubdirectory("colo-nosec-").FullName;
        string ramPrefix = $"colo-{topo.Tag}";
        string statusPath = Path.Combine(dir, "status.json");
        var log = new ConcurrentQueue<string>();
        Process? daemon = null;
        try
        {
            var cfg = new NodeConfig
            {
                VmName = "nosec",
                RunDirectory = dir,
                KernelPath = image.KernelPath,
                InitrdPath = image.InitrdPath,
                KernelCmdline = GuestKernelCmdline.Build($"{topo.GuestIp}/{topo.LanPrefixLength}"),
                MemoryMiB = 256,
                GuestMac = topo.GuestMac,
                GuestIp = topo.GuestIp.ToString(),
                TapName = DemoTopology.TapName,
                LinkAddress = "127.0.0.1", // nothing listens in the fresh primary namespace: every attempt is refused
                LinkPort = 7070,
                LinkWaitMs = 3000,
                RamFilePrefix = ramPrefix,
                DiskImage = Path.Combine(dir, "disk.img"),
            };
            await DataDisk.CreateAsync(cfg.DiskImage, DataDisk.DefaultSizeMiB, ct);
            cfg.Save(Path.Combine(dir, "primary.json"));
            // `ip netns exec` execs the command: the process started is the daemon itself.
            var psi = DemoTopology.ExecIn(topo.PrimaryNamespace, "dotnet", Path.Combine(AppContext.BaseDirectory, "colo.dll"), "primary", "--config", Path.Combine(dir, "primary.json"));
            psi.RedirectStandardOutput = psi.RedirectStandardError = true;
            psi.Environment["DOTNET_EnableDiagnostics"] = "0";
            daemon = new Process { StartInfo = psi };
            daemon.OutputDataReceived += (_, e) => { if (e.Data != null) log.Enqueue(e.Data); };
            daemon.ErrorDataReceived += (_, e) => { if (e.Data != null) log.Enqueue(e.Data); };
            daemon.Start();
            daemon.BeginOutputReadLine();
            daemon.BeginErrorReadLine();

            NodeStatus? status;
            while ((status = NodeStatus.TryRead(statusPath))?.State != "unprotected")
            {
                Assert.False(daemon.HasExited, $"the primary exited ({(daemon.HasExited ? daemon.ExitCode : 0)}) in state {status?.State}: {status?.Error}");
                await Task.Delay(200, ct); // throws when the test's timeout passes
            }
            Assert.StartsWith("secondary never connected: ", status.PeerLostReason);
            Assert.Equal(daemon.Id, status.DaemonPid);
            int qemuPid = status.VmPid;
            Assert.True(IsQemuRunning(qemuPid), $"QEMU {qemuPid} is not running");

            // Still serving a few seconds later, and the status loop keeps status.json fresh.
            DateTime written = File.GetLastWriteTimeUtc(statusPath);
            await Task.Delay(TimeSpan.FromSeconds(5), ct);
            Assert.False(daemon.HasExited, "the primary exited while unprotected");
            Assert.True(IsQemuRunning(qemuPid), $"QEMU {qemuPid} died while unprotected");
            Assert.Equal("unprotected", NodeStatus.TryRead(statusPath)?.State);
            Assert.True(File.GetLastWriteTimeUtc(statusPath) > written, "status.json was not rewritten while unprotected");

            Assert.Equal(0, kill(daemon.Id, SigTerm));
            await daemon.WaitForExitAsync(ct).WaitAsync(TimeSpan.FromSeconds(30), ct);
            Assert.Equal(0, daemon.ExitCode);
            Assert.Equal("stopped", NodeStatus.TryRead(statusPath)?.State);
            var gone = Stopwatch.StartNew();
            while (IsQemuRunning(qemuPid) && gone.Elapsed < TimeSpan.FromSeconds(10))
                await Task.Delay(100, ct);
            Assert.False(IsQemuRunning(qemuPid), $"QEMU {qemuPid} outlived the daemon");
        }
        finally
        {
            if (daemon is { HasExited: false })
            {
                kill(daemon.Id, SigKill);
                daemon.WaitForExit(10_000);
            }
            daemon?.Dispose();
            int leftover = NodeStatus.TryRead(statusPath)?.VmPid ?? 0;
            if (IsQemuRunning(leftover))
                kill(leftover, SigKill);
            foreach (string line in log)
                output.WriteLine(line);
            foreach (string f in Directory.EnumerateFiles("/dev/shm", ramPrefix + "-*"))
                File.Delete(f);
            Directory.Delete(dir, recursive: true);
        }
    }

    private const int SigTerm = 15;
    private const int SigKill = 9;

    /// <summary>True while <paramref name="pid"/> is a QEMU that has not exited (a zombie counts as gone).</summary>
    private static bool IsQemuRunning(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat"); // "PID (comm) STATE ..."
            int close = stat.LastIndexOf(')');
            return pid > 0 && stat.Contains("(qemu", StringComparison.Ordinal) && stat[close + 2] != 'Z';
        }
        catch (IOException)
        {
            return false;
        }
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);
}
