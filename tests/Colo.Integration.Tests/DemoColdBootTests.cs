using System.Net;
using Colo.Cli;
using Colo.Demo;
using Colo.Image;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

// QEMU-heavy tests must not overlap (2 cores; the demo tests measure failover times).
[assembly: CollectionBehavior(DisableTestParallelization = true)]

namespace Colo.Integration.Tests;

/// <summary>
/// The disk scenario's checks without COLO: a guest on a fresh data disk (unprotected, QEMU user-mode network) takes
/// acknowledged writes, QEMU is SIGKILLed, the image passes e2fsck and a cold boot reloads every acknowledged key.
/// </summary>
public sealed class DemoColdBootTests(ITestOutputHelper output)
{
    [DemoFact]
    public async Task PowerCut_FsckClean_ColdBootReloadsEveryAcknowledgedKey()
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(6));
        var ct = timeout.Token;
        var image = await new GuestImageBuilder(GuestImageBuilder.DefaultCacheRoot, NullLogger.Instance).EnsureAsync(ct);
        string dir = Directory.CreateTempSubdirectory("colo-coldboot-").FullName;
        string ramPrefix = "colo-it" + Path.GetFileName(dir).Replace("colo-coldboot-", "", StringComparison.Ordinal);
        string disk = Path.Combine(dir, "disk.img");
        var guest = new ColdGuest(image.KernelPath, image.InitrdPath, GuestKernelCmdline.Build("198.18.0.10/24"), 256, "52:54:00:c0:10:01", "198.18.0.10");
        try
        {
            await DataDisk.CreateAsync(disk, DataDisk.DefaultSizeMiB, ct);
            DiskWorkloadResult w;
            await using (var vm = await DemoColdVm.StartAsync(guest, disk, "198.18.0.0/24", dir, ramPrefix, NullLogger.Instance, ct))
            {
                Assert.True(vm.DiskMounted, "the guest did not mount its data disk");
                w = await new DiskWorkload().RunAsync(new DiskWorkloadOptions { GuestIp = IPAddress.Loopback, RedisPort = vm.Redis.Port, Duration = TimeSpan.FromSeconds(5) }, ct);
                output.WriteLine($"acked {w.Acked}, unknown {w.Unknown}, rejected {w.Rejected}, read back {w.Verify.Checked}, lost {w.Verify.Lost}");
            } // SIGKILL: the guest's power is cut
            Assert.True(w.Acked > 20, $"only {w.Acked} writes acknowledged");
            Assert.Equal(0, w.Unknown + w.Rejected);
            Assert.True(w.Verify.Complete, w.Verify.Error);
            Assert.Equal(0, w.Verify.Lost);

            var fsck = await DataDisk.CheckAsync(disk, Path.Combine(dir, "scratch.img"), ct);
            output.WriteLine(fsck.Output);
            Assert.True(fsck.Clean, $"e2fsck exit {fsck.ExitCode}");

            var cold = await DemoColdBoot.RunAsync(guest, disk, DemoColdBoot.NetworkOf(IPAddress.Parse("198.18.0.10"), 24), w.AckedIds(), dir, ramPrefix, NullLogger.Instance, ct);
            output.WriteLine($"cold boot: ok {cold.KeysOk}, checked {cold.Checked}, lost {cold.Lost}, {cold.ElapsedMs} ms, error {cold.Error}");
            Assert.True(cold.KeysOk, cold.Error);
            Assert.Equal(w.Acked, cold.Checked);
            Assert.False(File.Exists($"/dev/shm/{ramPrefix}-cold.ram"));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void NetworkOfMasksTheHostBits()
    {
        Assert.Equal("198.18.0.0/24", DemoColdBoot.NetworkOf(IPAddress.Parse("198.18.0.10"), 24));
        Assert.Equal("10.0.0.0/8", DemoColdBoot.NetworkOf(IPAddress.Parse("10.1.2.3"), 8));
        Assert.Equal("192.168.1.128/25", DemoColdBoot.NetworkOf(IPAddress.Parse("192.168.1.200"), 25));
    }
}
