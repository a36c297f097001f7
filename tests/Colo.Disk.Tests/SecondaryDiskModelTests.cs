using Colo.Disk;

namespace Colo.Disk.Tests;

/// <summary>
/// Property-style: random interleavings of SVM writes, PVM writes, barriers, commits and a failover, checked
/// against a reference model that knows nothing about overlays or logs: the SVM's view is a byte array, the base
/// is the PVM's disk as it was at the barrier of the committed epoch.
/// </summary>
public sealed class SecondaryDiskModelTests : IDisposable
{
    private const int DiskSize = 48 * 1024 + 300; // not a multiple of the block size
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-disk-model-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    public static TheoryData<int> Seeds => new() { 1, 2, 3, 4, 5, 6 };

    [Theory]
    [MemberData(nameof(Seeds))]
    public void RandomOps_InMemoryAndSpilled_MatchTheModelAndEachOther(int seed)
    {
        byte[] inMemory = Run(seed, overlayLimit: 1 << 20, bufferLimit: 1 << 20, blockSize: 4096, faultRate: 0);
        byte[] allSpilled = Run(seed, overlayLimit: 0, bufferLimit: 0, blockSize: 4096, faultRate: 0);
        byte[] partlySpilled = Run(seed, overlayLimit: 3 * 4096 + 512, bufferLimit: 2000, blockSize: 4096, faultRate: 0);
        byte[] smallBlocks = Run(seed, overlayLimit: 5000, bufferLimit: 1 << 20, blockSize: 512, faultRate: 0);
        Assert.Equal(inMemory, allSpilled);
        Assert.Equal(inMemory, partlySpilled);
        Assert.Equal(inMemory, smallBlocks);
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void RandomOps_WithBaseFailures_RetriedCommitsAndFailoverMatchTheModel(int seed)
    {
        Run(seed, overlayLimit: 6000, bufferLimit: 3000, blockSize: 1024, faultRate: 0.05);
    }

    /// <returns>The base image after the final failover.</returns>
    private byte[] Run(int seed, long overlayLimit, long bufferLimit, int blockSize, double faultRate)
    {
        var rnd = new Random(seed);
        var initial = new byte[DiskSize];
        rnd.NextBytes(initial);
        var img = new MemoryBaseImage((byte[])initial.Clone());
        if (faultRate > 0)
        {
            img.FaultRandom = new Random(seed * 31);
            img.FaultRate = faultRate;
        }
        var options = new SecondaryDiskOptions { BlockSize = blockSize, OverlayMemoryLimit = overlayLimit, BufferMemoryLimit = bufferLimit, SpillDirectory = _dir };
        using var disk = new SecondaryDisk(img, options);

        // The model.
        byte[] primary = (byte[])initial.Clone(); // the PVM's disk
        byte[] svmView = (byte[])initial.Clone(); // what the SVM must read
        var snapshots = new SortedDictionary<ulong, byte[]>(); // primary at each uncommitted barrier
        ulong epoch = 0;
        bool failedOver = false;
        int failures = 0;
        int commits = 0, commitsLeavingTail = 0;
        bool overlaySpilled = false, bufferSpilled = false;
        var buf = new byte[3 * 4096 + 100]; // independent of the block size so every configuration sees the same operations

        for (int step = 0; step < 1500; step++)
        {
            int op = rnd.Next(100);
            (int off, int len) = RandomRange(rnd, buf.Length);
            if (op < 22)
            {
                // SVM write
                rnd.NextBytes(buf.AsSpan(0, len));
                Retry(() => disk.Write(off, buf.AsSpan(0, len)), ref failures, failedOver);
                buf.AsSpan(0, len).CopyTo(svmView.AsSpan(off));
            }
            else if (op < 26)
            {
                Retry(() => disk.WriteZeroes(off, len), ref failures, failedOver);
                svmView.AsSpan(off, len).Clear();
            }
            else if (op < 50)
            {
                // PVM write, zero or trim
                if (failedOver)
                {
                    Assert.Throws<InvalidOperationException>(() => disk.PvmWrite(off, new byte[len]));
                    continue;
                }
                int kind = rnd.Next(10);
                if (kind == 0)
                {
                    disk.ReceivePayload(Records.Range(off, len, rnd.Next(2) == 0 ? DiskWriteFlags.Zero : DiskWriteFlags.Trim));
                    primary.AsSpan(off, len).Clear();
                }
                else
                {
                    var data = new byte[len];
                    rnd.NextBytes(data);
                    disk.PvmWrite(off, data);
                    data.CopyTo(primary, off);
                }
            }
            else if (op < 58 && !failedOver)
            {
                epoch++;
                disk.PvmBarrier(epoch);
                snapshots[epoch] = (byte[])primary.Clone();
            }
            else if (op < 66 && !failedOver && snapshots.Count > 0)
            {
                // Commit a random buffered epoch (usually the latest); earlier ones are passed over.
                ulong e = rnd.Next(3) == 0 ? snapshots.Keys.First() : snapshots.Keys.Last();
                while (true)
                {
                    try
                    {
                        disk.Commit(e);
                        break;
                    }
                    catch (DiskCommitException)
                    {
                        failures++;
                        Assert.Equal(e, disk.PendingCommitEpoch);
                    }
                }
                byte[] committed = snapshots[e];
                foreach (ulong k in snapshots.Keys.Where(k => k <= e).ToList())
                    snapshots.Remove(k);
                commits++;
                if (disk.BufferedRecords > 0)
                    commitsLeavingTail++;
                committed.CopyTo(svmView, 0);
                Assert.Equal(committed, img.Data);
            }
            else if (op < 67 && !failedOver && step > 500)
            {
                DoFailover(disk, ref failures);
                failedOver = true;
                Assert.Equal(svmView, img.Data);
            }
            else
            {
                var got = new byte[len];
                Retry(() => disk.Read(off, got), ref failures, failedOver);
                Assert.True(svmView.AsSpan(off, len).SequenceEqual(got), $"seed {seed} step {step}: read {off}+{len} differs");
            }
            overlaySpilled |= disk.OverlaySpilledBytes > 0;
            bufferSpilled |= disk.BufferSpilledBytes > 0;
        }

        if (!failedOver)
            DoFailover(disk, ref failures);
        Assert.Equal(svmView, img.Data);
        Assert.Equal(svmView, disk.ReadAll(0, DiskSize));
        if (faultRate > 0)
            Assert.True(failures > 0, "the fault injection never fired");
        Assert.True(commits > 10 && commitsLeavingTail > 0, $"{commits} commits, {commitsLeavingTail} leaving writes of the next epoch");
        Assert.Equal(overlayLimit < 20_000, overlaySpilled);
        Assert.Equal(bufferLimit < 20_000, bufferSpilled);
        return img.Data;
    }

    private static void DoFailover(SecondaryDisk disk, ref int failures)
    {
        while (true)
        {
            try
            {
                disk.Failover();
                return;
            }
            catch (IOException e) when (e is DiskFailoverException or DiskCommitException)
            {
                failures++;
            }
        }
    }

    /// <summary>SVM I/O before failover never touches the base's write path; after failover it may fail and is retried.</summary>
    private static void Retry(Action action, ref int failures, bool failedOver)
    {
        while (true)
        {
            try
            {
                action();
                return;
            }
            catch (IOException) when (failedOver)
            {
                failures++;
            }
        }
    }

    private static (int Offset, int Length) RandomRange(Random rnd, int maxLength)
    {
        int len = rnd.Next(4) == 0 ? rnd.Next(1, 16) : rnd.Next(1, maxLength);
        int off = rnd.Next(0, DiskSize - len + 1);
        if (rnd.Next(3) == 0)
            off &= ~511; // sometimes aligned
        return (off, len);
    }
}
