using Colo.Disk;

namespace Colo.Disk.Tests;

public sealed class DiskWriteForwarderTests
{
    private sealed record Rec(DiskRecordKind Kind, DiskWriteFlags Flags, long Offset, int Length, ulong Epoch, byte[] Data);

    private static List<Rec> Decode(ReadOnlySpan<byte> payload)
    {
        var list = new List<Rec>();
        int pos = 0;
        while (pos < payload.Length)
        {
            Assert.True(DiskRecordCodec.TryRead(payload, ref pos, out DiskRecord r));
            list.Add(new Rec(r.Kind, r.Flags, r.Offset, r.Length, r.Epoch, r.Data.ToArray()));
        }
        return list;
    }

    private static List<Rec> Drain(DiskWriteForwarder f)
    {
        var all = new List<Rec>();
        while (f.TryTakePayload(out DiskPayload? p))
        {
            using (p)
                all.AddRange(Decode(p!.Memory.Span));
        }
        return all;
    }

    [Fact]
    public void Forward_WritesRangesAndBarrier_ComeOutInOrder()
    {
        using var f = new DiskWriteForwarder();
        Assert.True(f.TryForwardWrite(4096, [1, 2, 3], fua: false));
        Assert.True(f.TryForwardWriteZeroes(0, 512, fua: true, noHole: true));
        f.MarkBarrier(1);
        Assert.True(f.TryForwardTrim(8192, 4096));
        Assert.True(f.TryForwardWrite(10, [9], fua: true));
        f.MarkBarrier(2);
        Assert.Equal(2ul, f.LastBarrierEpoch);

        Assert.True(f.TryTakePayload(out DiskPayload? p));
        using (p)
        {
            Assert.Equal(6, p!.RecordCount);
            Assert.Equal(2ul, p.BarrierEpoch);
            List<Rec> recs = Decode(p.Memory.Span);
            Assert.Equal(DiskRecordKind.Write, recs[0].Kind);
            Assert.Equal(4096, recs[0].Offset);
            Assert.Equal([1, 2, 3], recs[0].Data);
            Assert.Equal(DiskWriteFlags.Zero | DiskWriteFlags.Fua | DiskWriteFlags.NoHole, recs[1].Flags);
            Assert.Equal(512, recs[1].Length);
            Assert.Equal((DiskRecordKind.Barrier, 1ul), (recs[2].Kind, recs[2].Epoch));
            Assert.Equal((DiskWriteFlags.Trim, 8192L, 4096), (recs[3].Flags, recs[3].Offset, recs[3].Length));
            Assert.Equal((DiskWriteFlags.Fua, 10L), (recs[4].Flags, recs[4].Offset));
            Assert.Equal((DiskRecordKind.Barrier, 2ul), (recs[5].Kind, recs[5].Epoch));
        }
        Assert.False(f.TryTakePayload(out _));
        Assert.Equal(0, f.QueuedBytes);
    }

    [Fact]
    public void Forward_WriteLargerThanAPayload_SplitIntoContiguousRecordsAcrossPayloads()
    {
        using var f = new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 4096, CapacityBytes = 1 << 20 });
        var data = new byte[10_000];
        new Random(5).NextBytes(data);
        Assert.True(f.TryForwardWrite(1000, data, fua: false));
        Assert.Equal(f.GetEncodedWriteSize(10_000), f.QueuedBytes);
        List<Rec> recs = Drain(f);
        Assert.Equal(3, recs.Count);
        long expectedOffset = 1000;
        var joined = new List<byte>();
        foreach (Rec r in recs)
        {
            Assert.Equal(expectedOffset, r.Offset);
            Assert.True(r.Length <= 4096 - DiskRecordCodec.Overhead);
            expectedOffset += r.Length;
            joined.AddRange(r.Data);
        }
        Assert.Equal(data, joined.ToArray());
    }

    [Fact]
    public void Forward_QueueFull_RefusedWithNothingAppended_RoomFreedWhenPayloadDisposed()
    {
        using var f = new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 1024, CapacityBytes = 2048 });
        Assert.True(f.TryForwardWrite(0, new byte[1000], false)); // 1020
        Assert.True(f.TryForwardWrite(0, new byte[900], false)); // 920 -> 1940
        Assert.False(f.TryForwardWrite(0, new byte[100], false)); // 120 would exceed 2048
        int trims = 0;
        while (f.TryForwardTrim(0, 1 << 20))
            trims++;
        Assert.Equal(5, trims); // 20 bytes each: 1940 + 5 * 20 = 2040, a sixth would exceed 2048
        long queued = f.QueuedBytes;
        Assert.Equal(2040, queued);
        Assert.True(f.RefusedWrites >= 2);
        f.MarkBarrier(1); // barriers are always accepted
        Assert.Equal(queued + DiskRecordCodec.BarrierSize, f.QueuedBytes);
        Assert.Equal(f.QueuedBytes, f.PeakQueuedBytes);

        Assert.True(f.TryTakePayload(out DiskPayload? p));
        Assert.False(f.TryForwardWrite(0, new byte[100], false)); // taken but not yet sent still counts
        p!.Dispose();
        p.Dispose(); // idempotent
        Assert.True(f.TryForwardWrite(0, new byte[100], false));
        List<Rec> rest = Drain(f);
        Assert.Equal(DiskRecordKind.Write, rest[^1].Kind);
        Assert.Equal(0, f.QueuedBytes);
    }

    [Fact]
    public async Task ForwardWriteAsync_WhenFull_WaitsUntilAPayloadIsDisposed()
    {
        using var f = new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 1024, CapacityBytes = 1024 });
        Assert.True(f.TryForwardWrite(0, new byte[900], false));
        ValueTask pending = f.ForwardWriteAsync(4096, new byte[500], fua: false);
        await Task.Delay(50);
        Assert.False(pending.IsCompleted);
        DiskPayload first = await f.TakePayloadAsync();
        Assert.False(pending.IsCompleted);
        first.Dispose();
        await pending.AsTask().WaitAsync(TimeSpan.FromSeconds(5));
        DiskPayload second = await f.TakePayloadAsync();
        Assert.Equal(4096, Decode(second.Memory.Span).Single().Offset);
        second.Dispose();
    }

    [Fact]
    public async Task TakePayloadAsync_Empty_WaitsForARecord_CancelThrows()
    {
        using var f = new DiskWriteForwarder();
        Task<DiskPayload> take = f.TakePayloadAsync().AsTask();
        await Task.Delay(20);
        Assert.False(take.IsCompleted);
        f.MarkBarrier(9);
        using DiskPayload p = await take.WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal(9ul, p.BarrierEpoch);

        using var cts = new CancellationTokenSource(20);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await f.TakePayloadAsync(cts.Token));
    }

    [Fact]
    public void Forward_BadArguments_Throw()
    {
        using var f = new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 1024, CapacityBytes = 4096 });
        Assert.Throws<ArgumentOutOfRangeException>(() => f.TryForwardWrite(-1, new byte[1], false));
        Assert.Throws<ArgumentOutOfRangeException>(() => f.TryForwardWrite(0, new byte[5000], false)); // can never fit
        Assert.Throws<ArgumentOutOfRangeException>(() => f.TryForwardTrim(0, -1));
        Assert.True(f.TryForwardWrite(0, ReadOnlySpan<byte>.Empty, false));
        Assert.Equal(0, f.QueuedBytes);
        f.MarkBarrier(5);
        Assert.Throws<ArgumentOutOfRangeException>(() => f.MarkBarrier(5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 100 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 4096, CapacityBytes = 1000 }));
    }

    [Fact]
    public async Task Clear_DropsQueuedPayloads_KeepsTakenOnes_Dispose_FailsWaiters()
    {
        var f = new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 1024, CapacityBytes = 2048 });
        Assert.True(f.TryForwardWrite(0, new byte[1000], false));
        Assert.True(f.TryTakePayload(out DiskPayload? taken));
        Assert.True(f.TryForwardWrite(0, new byte[1000], false));
        Assert.Equal(1020, f.Clear());
        Assert.Equal(1020, f.QueuedBytes); // the taken one
        Assert.False(f.HasPayload);
        Assert.Single(Decode(taken!.Memory.Span));
        taken.Dispose();
        Assert.Equal(0, f.QueuedBytes);

        Assert.True(f.TryForwardWrite(0, new byte[1000], false));
        Assert.True(f.TryForwardWrite(0, new byte[1000], false));
        ValueTask wait = f.WaitForSpaceAsync(1000);
        f.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await wait);
        Assert.Throws<ObjectDisposedException>(() => f.TryForwardWrite(0, new byte[1], false));
    }

    [Fact]
    public void EndToEnd_ForwarderPayloadsIntoSecondary_CommitMakesBaseEqualThePrimaryAtTheBarrier()
    {
        const int Size = 64 * 1024;
        var rnd = new Random(11);
        var primary = new byte[Size];
        var secondaryImage = new MemoryBaseImage((byte[])primary.Clone());
        using var f = new DiskWriteForwarder(new DiskWriteForwarderOptions { PayloadBytes = 2048, CapacityBytes = 1 << 20 });
        using var disk = new SecondaryDisk(secondaryImage, new SecondaryDiskOptions { BufferMemoryLimit = 3000, SpillDirectory = Path.GetTempPath() });
        byte[]? atBarrier = null;
        for (int i = 0; i < 200; i++)
        {
            int off = rnd.Next(Size - 5000);
            if (i % 17 == 0)
            {
                int len = rnd.Next(1, 5000);
                primary.AsSpan(off, len).Clear();
                Assert.True(f.TryForwardWriteZeroes(off, len, false, false));
            }
            else
            {
                var data = new byte[rnd.Next(1, 5000)];
                rnd.NextBytes(data);
                data.CopyTo(primary, off);
                Assert.True(f.TryForwardWrite(off, data, false));
            }
            if (i == 150)
            {
                f.MarkBarrier(1);
                atBarrier = (byte[])primary.Clone();
            }
            if (rnd.Next(5) == 0 && f.TryTakePayload(out DiskPayload? p))
            {
                using (p)
                    disk.ReceivePayload(p!.Memory.Span);
            }
        }
        while (f.TryTakePayload(out DiskPayload? p))
        {
            using (p)
                disk.ReceivePayload(new System.Buffers.ReadOnlySequence<byte>(p!.Memory));
        }
        disk.Commit(1);
        Assert.Equal(atBarrier, secondaryImage.Data);
        f.MarkBarrier(2);
        while (f.TryTakePayload(out DiskPayload? p))
        {
            using (p)
                disk.ReceivePayload(p!.Memory.Span);
        }
        disk.Commit(2);
        Assert.Equal(primary, secondaryImage.Data);
    }
}
