using System.Buffers;
using System.Net;
using Colo.Link;
using Colo.Node.Primary;
using Colo.Node.Secondary;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Colo.Node.Tests;

/// <summary>
/// The primary's and secondary's disk managers over a real replication link (loopback TCP): live initial sync while
/// the guest writes, ordered forwarding, barrier, commit, failover.
/// </summary>
public sealed class DiskReplicationTests : IDisposable
{
    private const int Mib = 1024 * 1024;
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-disk-repl-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private sealed class Pair : IAsyncDisposable
    {
        public required PrimaryDisk Primary { get; init; }
        public required ReplicaDisk Replica { get; init; }
        public required LinkConnection PrimaryLink { get; init; }
        public required LinkConnection SecondaryLink { get; init; }
        public required Task Receive { get; init; }
        public ulong BarrierSeen;
        public string? Error;

        public async ValueTask DisposeAsync()
        {
            await Primary.DisposeAsync();
            PrimaryLink.Close("test end");
            SecondaryLink.Close("test end");
            await Receive.WaitAsync(TimeSpan.FromSeconds(5)).ContinueWith(_ => { }, TaskScheduler.Default);
            await Replica.DisposeAsync();
            await PrimaryLink.DisposeAsync();
            await SecondaryLink.DisposeAsync();
        }
    }

    /// <summary>A secondary's config with only what <see cref="ReplicaDisk"/> reads filled in meaningfully.</summary>
    private NodeConfig ReplicaConfig(string diskImage) => new()
    {
        VmName = "t",
        RunDirectory = _dir,
        KernelPath = "/k",
        InitrdPath = "/i",
        KernelCmdline = "c",
        GuestMac = "52:54:00:00:00:01",
        GuestIp = "10.0.0.1",
        LinkAddress = "127.0.0.1",
        DiskImage = diskImage,
    };

    private async Task<Pair> StartAsync(string primaryImage)
    {
        var cfg = ReplicaConfig(Path.Combine(_dir, "replica.img")) with { DiskBufferMemoryMib = 1, DiskOverlayMemoryMib = 1 };
        using var listener = new LinkListener(new IPEndPoint(IPAddress.Loopback, 0), NullLogger.Instance);
        var accept = listener.AcceptAsync(TimeSpan.FromSeconds(10));
        var pLink = await LinkConnection.ConnectAsync(listener.LocalEndPoint, TimeSpan.FromSeconds(10), NullLogger.Instance);
        var sLink = await accept;
        var primary = PrimaryDisk.Start(primaryImage, Path.Combine(_dir, "p.sock"), 4 * Mib, NullLoggerFactory.Instance);
        var replica = new ReplicaDisk(cfg, Path.Combine(_dir, "s.sock"), NullLoggerFactory.Instance);
        Pair? pair = null;
        var receive = Task.Run(() => sLink.RunReceiveLoopAsync((type, epoch, payload) =>
        {
            try
            {
                switch (type)
                {
                    case MessageType.DiskSyncBegin: replica.BeginSync(payload); break;
                    case MessageType.DiskSyncData: replica.SyncData(payload); break;
                    case MessageType.DiskSyncEnd: replica.EndSync(payload); break;
                    case MessageType.DiskWrites:
                        replica.Receive(payload);
                        Volatile.Write(ref pair!.BarrierSeen, replica.Device!.LastBarrierEpoch);
                        break;
                }
            }
            catch (Exception e)
            {
                pair!.Error = e.Message;
            }
            return ValueTask.CompletedTask;
        }));
        pair = new Pair { Primary = primary, Replica = replica, PrimaryLink = pLink, SecondaryLink = sLink, Receive = receive };
        return pair;
    }

    private string MakeImage(int mib, int seed)
    {
        string path = Path.Combine(_dir, "primary.img");
        var rnd = new Random(seed);
        var data = new byte[mib * Mib];
        // Every other MiB random, the rest zero: the sync skips all-zero chunks.
        for (int m = 0; m < mib; m += 2)
            rnd.NextBytes(data.AsSpan(m * Mib, Mib));
        File.WriteAllBytes(path, data);
        return path;
    }

    private static async Task WaitForAsync(Func<bool> condition, string what)
    {
        for (int i = 0; i < 1000 && !condition(); i++)
            await Task.Delay(10);
        Assert.True(condition(), "timed out waiting for " + what);
    }

    [Fact]
    public async Task LiveSync_WithConcurrentWrites_CommitsAnExactCopy()
    {
        string image = MakeImage(16, 1);
        await using var pair = await StartAsync(image);
        var status = new DiskStatus();
        using var stopWriters = new CancellationTokenSource();
        var rnd = new Random(2);
        // Four writers, random overlapping offsets and lengths in the lower half, FUA on some, plus zeroes and trims.
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            var r = new Random(100 + w);
            var buf = new byte[64 * 1024];
            while (!stopWriters.IsCancellationRequested)
            {
                long off = r.NextInt64(0, 8L * Mib - buf.Length); // the upper half keeps its zero MiBs
                int len = r.Next(1, buf.Length);
                r.NextBytes(buf.AsSpan(0, len));
                int kind = r.Next(10);
                if (kind == 0)
                    await pair.Primary.Device.WriteZeroesAsync(off, len, noHole: false);
                else if (kind == 1)
                    await pair.Primary.Device.TrimAsync(off & ~4095L, 4096);
                else
                    await pair.Primary.Device.WriteAsync(off, buf.AsMemory(0, len), fua: kind == 2);
            }
        })).ToArray();
        await Task.Delay(50);
        long sent = await pair.Primary.InitialSyncAsync(pair.PrimaryLink, status, CancellationToken.None);
        await Task.Delay(100);
        stopWriters.Cancel();
        await Task.WhenAll(writers);
        pair.Primary.MarkBarrier(1);
        await pair.Primary.WaitBarrierSentAsync(1, TimeSpan.FromSeconds(10), CancellationToken.None);
        await WaitForAsync(() => Volatile.Read(ref pair.BarrierSeen) >= 1, "barrier 1");
        Assert.Null(pair.Error);
        Assert.True(pair.Replica.Synced);
        Assert.True(sent > 0 && sent <= 12L * Mib, $"sent {sent}: the four zero MiBs of the upper half must be skipped");
        Assert.Equal(sent, status.SyncBytes);

        pair.Replica.Commit(1);
        // The primary holds its image under an exclusive lock: read it through the device.
        var expected = new byte[16 * Mib];
        await pair.Primary.Device.ReadAsync(0, expected);
        var actual = new byte[expected.Length];
        await pair.Replica.Device!.ReadAsync(0, actual);
        Assert.True(expected.AsSpan().SequenceEqual(actual), "replica differs from the primary after commit");
    }

    [Fact]
    public async Task Failover_KeepsSvmWrites_AndDropsPvmWritesAfterTheLastCheckpoint()
    {
        string image = MakeImage(4, 3);
        await using var pair = await StartAsync(image);
        await pair.Primary.InitialSyncAsync(pair.PrimaryLink, new DiskStatus(), CancellationToken.None);
        pair.Primary.MarkBarrier(1);
        await pair.Primary.WaitBarrierSentAsync(1, TimeSpan.FromSeconds(10), CancellationToken.None);
        await WaitForAsync(() => Volatile.Read(ref pair.BarrierSeen) >= 1, "barrier 1");
        pair.Replica.Commit(1);

        // Epoch 2: the PVM writes A at 0 (never checkpointed); the SVM writes B at 8192.
        await pair.Primary.Device.WriteAsync(0, new byte[] { 0xAA, 0xAA }, fua: false);
        await pair.Replica.Device!.WriteAsync(8192, new byte[] { 0xBB, 0xBB }, fua: false);
        byte[] before = new byte[2];
        await pair.Replica.Device.ReadAsync(0, before);
        var original = new byte[2];
        await pair.Primary.Device.ReadAsync(0, original); // the primary image now has AA AA at 0
        Assert.Equal(new byte[] { 0xAA, 0xAA }, original);
        await Task.Delay(200); // let the PVM write reach the buffer

        pair.Replica.Failover();
        var status = new DiskStatus();
        pair.Replica.Report(status);
        Assert.True(status.FailoverMergedBytes > 0);
        Assert.True(status.FailoverDroppedBytes >= 2);
        byte[] at0 = new byte[2], at8192 = new byte[2];
        await pair.Replica.Device.ReadAsync(0, at0);
        await pair.Replica.Device.ReadAsync(8192, at8192);
        Assert.Equal(before, at0); // the PVM's uncheckpointed write is not there
        Assert.Equal(new byte[] { 0xBB, 0xBB }, at8192);
        // ...and the base file itself holds the SVM's write after failover.
        await pair.Replica.DisposeAsync();
        using var f = File.OpenRead(Path.Combine(_dir, "replica.img"));
        f.Position = 8192;
        Assert.Equal(0xBB, f.ReadByte());
    }

    [Fact]
    public async Task ReplicaRejectsProtocolViolations()
    {
        var cfg = ReplicaConfig(Path.Combine(_dir, "r.img"));
        await using var replica = new ReplicaDisk(cfg, Path.Combine(_dir, "r.sock"), NullLoggerFactory.Instance);
        static ReadOnlySequence<byte> U64(ulong v)
        {
            var b = new byte[8];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(b, v);
            return new ReadOnlySequence<byte>(b);
        }
        Assert.Throws<InvalidDataException>(() => replica.Receive(new ReadOnlySequence<byte>(new byte[20])));
        Assert.Throws<InvalidDataException>(() => replica.SyncData(U64(0)));
        Assert.Throws<InvalidDataException>(() => replica.Commit(1));
        Assert.Throws<InvalidDataException>(() => replica.BeginSync(new ReadOnlySequence<byte>(new byte[3])));
        replica.BeginSync(U64(1 << 20));
        var outside = new byte[8 + 16];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(outside, (1 << 20) - 8);
        Assert.Throws<InvalidDataException>(() => replica.SyncData(new ReadOnlySequence<byte>(outside)));
        Assert.Throws<InvalidDataException>(() => replica.EndSync(U64(5)));
        Assert.Throws<InvalidDataException>(() => replica.Commit(1));
        Assert.Throws<InvalidDataException>(() => replica.BeginSync(U64(1 << 20)));
    }

    [Fact]
    public async Task OneImageForBothDaemons_TheSecondaryRefusesIt_AndLeavesItUntouched()
    {
        string image = MakeImage(2, 5);
        byte[] before = File.ReadAllBytes(image);
        await using var primary = PrimaryDisk.Start(image, Path.Combine(_dir, "p2.sock"), 4 * Mib, NullLoggerFactory.Instance);
        Assert.Throws<IOException>(() => PrimaryDisk.Start(image, Path.Combine(_dir, "p3.sock"), 4 * Mib, NullLoggerFactory.Instance));
        var cfg = ReplicaConfig(image);
        await using var replica = new ReplicaDisk(cfg, Path.Combine(_dir, "r2.sock"), NullLoggerFactory.Instance);
        var size = new byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(size, 1 << 20);
        Assert.ThrowsAny<IOException>(() => replica.BeginSync(new ReadOnlySequence<byte>(size)));
        await primary.DisposeAsync(); // releases its lock
        Assert.True(before.AsSpan().SequenceEqual(File.ReadAllBytes(image)), "the primary's image was changed");
    }
}
