using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Colo.Demo;
using Colo.Image;
using Colo.Node;
using Colo.Vm;
using Microsoft.Extensions.Logging;

[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("Colo.Integration.Tests")]

namespace Colo.Cli;

/// <summary>Outcome of <see cref="DemoColdBoot.RunAsync"/>.</summary>
/// <param name="KeysOk">The guest came up with the data disk mounted and every key read back with its value.</param>
/// <param name="Checked">Keys read back.</param>
/// <param name="Lost">Keys missing or wrong.</param>
/// <param name="ElapsedMs">From starting QEMU until the read-back ended (or failed).</param>
/// <param name="Error">Why the check failed before reading every key; null otherwise.</param>
internal sealed record ColdBootResult(bool KeysOk, long Checked, long Lost, long ElapsedMs, string? Error);

/// <summary>What a cold VM runs: the protected guest's kernel, initrd, command line (with its static IP), memory and MAC.</summary>
internal sealed record ColdGuest(string KernelPath, string InitrdPath, string KernelCmdline, int MemoryMiB, string Mac, string GuestIp)
{
    /// <summary>The guest of a daemon configuration.</summary>
    public static ColdGuest Of(NodeConfig c) => new(c.KernelPath, c.InitrdPath, c.KernelCmdline, c.MemoryMiB, c.GuestMac, c.GuestIp);
}

/// <summary>
/// Boots a disk image cold in a fresh, unprotected VM (the guest's kernel, initrd, command line, MAC and memory; no
/// COLO, QEMU user-mode network with Redis forwarded to a loopback port) and reads keys back from its Redis, which
/// reloads them from the append-only file on the disk. The VM is killed and its RAM file deleted on every path.
/// </summary>
internal static class DemoColdBoot
{
    /// <summary>
    /// Boots <paramref name="diskPath"/> (see <see cref="DemoColdVm.StartAsync"/>) and checks that
    /// <c>k&lt;i&gt;</c> = <c>v&lt;i&gt;</c> for every id in <paramref name="ids"/>. Service failures are reported in
    /// the result, not thrown.
    /// </summary>
    /// <param name="guest">Kernel, initrd, command line, MAC and memory.</param>
    /// <param name="diskPath">The raw disk image (changed by the boot: journal replay, Redis).</param>
    /// <param name="userNetwork">The user-mode network, containing the guest's IP (e.g. 198.18.0.0/24).</param>
    /// <param name="ids">Write ids to read back.</param>
    /// <param name="workDir">Directory for the console log and sockets.</param>
    /// <param name="ramPrefix">Prefix of the RAM file in /dev/shm.</param>
    /// <param name="logger">Progress and QEMU messages.</param>
    /// <param name="ct">Cancels the check (the VM is still killed).</param>
    public static async Task<ColdBootResult> RunAsync(ColdGuest guest, string diskPath, string userNetwork, IReadOnlyList<long> ids,
        string workDir, string ramPrefix, ILogger logger, CancellationToken ct)
    {
        var watch = Stopwatch.StartNew();
        try
        {
            await using var vm = await DemoColdVm.StartAsync(guest, diskPath, userNetwork, workDir, ramPrefix, logger, ct);
            if (!vm.DiskMounted)
                return new ColdBootResult(false, 0, 0, watch.ElapsedMilliseconds, $"the guest did not mount the data disk (see {vm.ConsoleLogPath})");
            var verify = await DiskWorkload.VerifyKeysAsync(vm.Redis, ids, new DiskVerifyOptions(), logger, ct);
            logger.LogInformation("cold boot: {Checked} of {Total} keys read back, {Lost} missing or wrong, in {Ms} ms", verify.Checked, ids.Count, verify.Lost, watch.ElapsedMilliseconds);
            return new ColdBootResult(verify.Complete && verify.Lost == 0, verify.Checked, verify.Lost, watch.ElapsedMilliseconds, verify.Error);
        }
        catch (Exception e) when (e is QemuStartException or TimeoutException or InvalidOperationException or IOException or ArgumentException)
        {
            logger.LogError("cold boot failed: {Error}", e.Message);
            return new ColdBootResult(false, 0, 0, watch.ElapsedMilliseconds, e.Message);
        }
    }

    /// <summary>The network (e.g. 198.18.0.0/24) of <paramref name="ip"/> with <paramref name="prefixLength"/>.</summary>
    public static string NetworkOf(IPAddress ip, int prefixLength)
    {
        byte[] b = ip.GetAddressBytes();
        uint v = (uint)(b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3]);
        uint mask = prefixLength == 0 ? 0 : uint.MaxValue << (32 - prefixLength);
        v &= mask;
        return $"{v >> 24}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}/{prefixLength}";
    }
}

/// <summary>
/// A running unprotected VM booted from a data disk image, its Redis forwarded to <see cref="Redis"/> on loopback.
/// Disposing SIGKILLs QEMU (a power cut for the guest) and deletes its RAM file.
/// </summary>
internal sealed class DemoColdVm : IAsyncDisposable
{
    /// <summary>Longest wait for the guest's ready marker.</summary>
    public static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(120);

    /// <summary>Console line the guest prints once the data disk is mounted.</summary>
    public const string DiskMountedMarker = "COLO-DATA-DISK mounted";

    private readonly QemuProcess _vm;

    private DemoColdVm(QemuProcess vm, IPEndPoint redis, bool diskMounted)
    {
        _vm = vm;
        Redis = redis;
        DiskMounted = diskMounted;
    }

    /// <summary>The guest's Redis, forwarded to 127.0.0.1.</summary>
    public IPEndPoint Redis { get; }

    /// <summary>The guest printed <see cref="DiskMountedMarker"/> (Redis keeps its append-only file on the disk).</summary>
    public bool DiskMounted { get; }

    /// <summary>QEMU's PID.</summary>
    public int Pid => _vm.Pid;

    /// <summary>The guest's serial console file.</summary>
    public string ConsoleLogPath => _vm.Spec.ConsoleLogPath;

    /// <summary>
    /// Starts QEMU with <paramref name="diskPath"/> as a raw virtio-blk disk and QEMU user-mode networking on
    /// <paramref name="userNetwork"/> (restricted; Redis forwarded from a free loopback port) and waits up to
    /// <see cref="ReadyTimeout"/> for <c>COLO-GUEST-READY</c> on the console (<c>WORKDIR/cold-console.log</c>).
    /// The RAM file is <c>/dev/shm/RAMPREFIX-cold.ram</c>. On failure QEMU is killed and the RAM file deleted.
    /// </summary>
    /// <exception cref="QemuStartException">QEMU did not start.</exception>
    /// <exception cref="InvalidOperationException">The guest printed COLO-GUEST-FAILED, or QEMU exited.</exception>
    /// <exception cref="TimeoutException">The guest was not ready in time.</exception>
    public static async Task<DemoColdVm> StartAsync(ColdGuest guest, string diskPath, string userNetwork, string workDir, string ramPrefix, ILogger logger, CancellationToken ct)
    {
        int port = FreeLoopbackPort();
        var spec = new VmSpec
        {
            Name = "cold",
            KernelPath = guest.KernelPath,
            InitrdPath = guest.InitrdPath,
            KernelCmdline = guest.KernelCmdline,
            MemoryMiB = guest.MemoryMiB,
            MacAddress = guest.Mac,
            RamFilePath = Path.Combine("/dev/shm", $"{ramPrefix}-cold.ram"),
            NetSocketPath = Path.Combine(workDir, "cold-net.sock"), // unused with UserNetwork, required by validation
            QmpSocketPath = Path.Combine(workDir, "cold-qmp.sock"),
            ConsoleLogPath = Path.Combine(workDir, "cold-console.log"),
            DiskFilePath = diskPath,
            UserNetwork = userNetwork,
            HostForwards = [(port, guest.GuestIp, 6379)],
        };
        File.Delete(spec.ConsoleLogPath);
        QemuProcess? vm = null;
        bool started = false;
        try
        {
            vm = await QemuProcess.StartAsync(spec, logger, TimeSpan.FromSeconds(30), ct);
            logger.LogInformation("cold boot of {Disk} (pid {Pid}); Redis forwarded to 127.0.0.1:{Port}", diskPath, vm.Pid, port);
            string console = await WaitForGuestAsync(spec.ConsoleLogPath, vm, ReadyTimeout, ct);
            started = true;
            return new DemoColdVm(vm, new IPEndPoint(IPAddress.Loopback, port), console.Contains(DiskMountedMarker, StringComparison.Ordinal));
        }
        finally
        {
            if (!started)
            {
                if (vm != null)
                    await vm.DisposeAsync();
                File.Delete(spec.RamFilePath);
            }
        }
    }

    /// <summary>Polls the console until the ready marker (returns the console text) or the failed marker, exit or timeout (throws).</summary>
    private static async Task<string> WaitForGuestAsync(string consolePath, QemuProcess vm, TimeSpan timeout, CancellationToken ct)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            string text = File.Exists(consolePath) ? await File.ReadAllTextAsync(consolePath, ct) : "";
            if (text.Contains(GuestImageBuilder.ReadyMarker, StringComparison.Ordinal))
                return text;
            if (text.Contains(GuestImageBuilder.FailedMarker, StringComparison.Ordinal))
                throw new InvalidOperationException($"the cold-booted guest printed {GuestImageBuilder.FailedMarker} (see {consolePath})");
            if (vm.HasExited)
                throw new InvalidOperationException($"the cold-booted VM exited (code {await vm.Exited}): {vm.StderrTail}");
            if (deadline.Elapsed > timeout)
                throw new TimeoutException($"the cold-booted guest was not ready within {timeout.TotalSeconds:0} s (see {consolePath})");
            await Task.Delay(200, ct);
        }
    }

    private static int FreeLoopbackPort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    /// <summary>SIGKILLs QEMU (power cut), waits for it, deletes the RAM file.</summary>
    public async ValueTask DisposeAsync()
    {
        await _vm.DisposeAsync();
        File.Delete(_vm.Spec.RamFilePath);
    }
}
