using Colo.Disk;

namespace Colo.Disk.Tests;

public sealed class SecondaryDiskTests : IDisposable
{
    private const int Bs = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("colo-disk-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private SecondaryDiskOptions Options(long overlayLimit = 1 << 20, long bufferLimit = 1 << 20) =>
        new() { BlockSize = Bs, OverlayMemoryLimit = overlayLimit, BufferMemoryLimit = bufferLimit, SpillDirectory = _dir };

    private static MemoryBaseImage PatternBase(int size)
    {
        var b = new MemoryBaseImage(size);
        for (int i = 0; i < size; i++)
            b.Data[i] = (byte)(i * 7 + 3);
        return b;
    }

    [Fact]
    public void Read_NoOverlay_ReturnsBase()
    {
        var img = PatternBase(4 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        Assert.Equal(img.Data[100..9000], disk.ReadAll(100, 8900));
    }

    [Fact]
    public void Read_AlignedSvmWrite_SeesOverlayOverBase()
    {
        var img = PatternBase(4 * Bs);
        byte[] original = (byte[])img.Data.Clone();
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(Bs, Records.Fill(Bs, 0xEE));
        byte[] all = disk.ReadAll(0, 4 * Bs);
        Assert.Equal(original[..Bs], all[..Bs]);
        Assert.All(all[Bs..(2 * Bs)], b => Assert.Equal(0xEE, b));
        Assert.Equal(original[(2 * Bs)..], all[(2 * Bs)..]);
        Assert.Equal(original, img.Data); // the base is untouched
        Assert.Equal(Bs, disk.OverlayBytes);
    }

    [Fact]
    public void Read_UnalignedSvmWriteSpanningBlocks_SeesExactlyTheWrittenBytes()
    {
        var img = PatternBase(4 * Bs);
        byte[] expected = (byte[])img.Data.Clone();
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(Bs - 10, Records.Fill(Bs + 30, 0x55)); // covers the end of block 0, all of block 1, the start of block 2
        disk.Write(3 * Bs + 1, [1, 2, 3]);
        expected.AsSpan(Bs - 10, Bs + 30).Fill(0x55);
        expected[3 * Bs + 1] = 1;
        expected[3 * Bs + 2] = 2;
        expected[3 * Bs + 3] = 3;
        Assert.Equal(expected, disk.ReadAll(0, 4 * Bs));
        Assert.Equal(expected[(Bs - 20)..(Bs + 5)], disk.ReadAll(Bs - 20, 25)); // read across the overlay boundary
        Assert.Equal(expected[(2 * Bs + 15)..(3 * Bs + 10)], disk.ReadAll(2 * Bs + 15, Bs - 5));
        Assert.Equal(4 * Bs, disk.OverlayBytes);
    }

    [Fact]
    public void Write_SameOverlayBlockTwice_LastWinsAndOneBlockHeld()
    {
        var img = new MemoryBaseImage(2 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(10, Records.Fill(100, 1));
        disk.Write(50, Records.Fill(100, 2));
        byte[] r = disk.ReadAll(0, 200);
        Assert.All(r[10..50], b => Assert.Equal(1, b));
        Assert.All(r[50..150], b => Assert.Equal(2, b));
        Assert.All(r[150..], b => Assert.Equal(0, b));
        Assert.Equal(Bs, disk.OverlayBytes);
    }

    [Fact]
    public async Task WriteZeroesAndTrim_ReadZeroForSvm_BaseUntouched()
    {
        var img = PatternBase(4 * Bs);
        byte[] original = (byte[])img.Data.Clone();
        using var disk = new SecondaryDisk(img, Options());
        disk.WriteZeroes(100, 2 * Bs); // partial, full, partial
        await disk.TrimAsync(3 * Bs, Bs);
        byte[] expected = (byte[])original.Clone();
        expected.AsSpan(100, 2 * Bs).Clear();
        expected.AsSpan(3 * Bs, Bs).Clear();
        Assert.Equal(expected, disk.ReadAll(0, 4 * Bs));
        Assert.Equal(original, img.Data);
    }

    [Fact]
    public void PvmWrite_InvisibleToSvmUntilCommit()
    {
        var img = new MemoryBaseImage(4 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, Records.Fill(Bs, 9));
        Assert.All(disk.ReadAll(0, Bs), b => Assert.Equal(0, b));
        Assert.Equal(Bs, disk.BufferBytes);
        Assert.Equal(1, disk.BufferedRecords);
        disk.PvmBarrier(1);
        Assert.All(disk.ReadAll(0, Bs), b => Assert.Equal(0, b));
        disk.Commit(1);
        Assert.All(disk.ReadAll(0, Bs), b => Assert.Equal(9, b));
        Assert.All(img.Data[..Bs], b => Assert.Equal(9, b));
        Assert.Equal(1ul, disk.CommittedEpoch);
        Assert.Equal(0, disk.BufferBytes);
    }

    [Fact]
    public void Commit_AppliesInOrderUpToTheBarrierOnly()
    {
        var img = new MemoryBaseImage(4 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, Records.Fill(10, 1));
        disk.PvmWrite(Bs, Records.Fill(10, 2));
        disk.PvmBarrier(1);
        disk.PvmWrite(2 * Bs, Records.Fill(10, 3)); // epoch 2
        disk.PvmWrite(0, Records.Fill(5, 4)); // epoch 2, overwrites part of an epoch-1 write
        disk.Commit(1);
        Assert.Equal(Records.Fill(10, 1), disk.ReadAll(0, 10));
        Assert.Equal(Records.Fill(10, 2), disk.ReadAll(Bs, 10));
        Assert.Equal(new byte[10], disk.ReadAll(2 * Bs, 10));
        Assert.Equal(2, disk.BufferedRecords);
        Assert.Equal(15, disk.BufferBytes);
        Assert.Equal(0ul, disk.LastBarrierEpoch);

        disk.PvmBarrier(2);
        disk.Commit(2);
        Assert.Equal([4, 4, 4, 4, 4, 1, 1, 1, 1, 1], disk.ReadAll(0, 10));
        Assert.Equal(Records.Fill(10, 3), disk.ReadAll(2 * Bs, 10));
        Assert.Equal(0, disk.BufferedRecords);
    }

    [Fact]
    public void Commit_SameBlockWrittenTwiceByPvm_LastWins()
    {
        var img = new MemoryBaseImage(2 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(100, Records.Fill(200, 1));
        disk.PvmWrite(150, Records.Fill(100, 2));
        disk.PvmWrite(0, Records.Fill(120, 3));
        disk.ReceivePayload(Records.Range(290, 5, DiskWriteFlags.Zero));
        disk.PvmBarrier(7);
        disk.Commit(7);
        byte[] expected = new byte[400];
        expected.AsSpan(100, 200).Fill(1);
        expected.AsSpan(150, 100).Fill(2);
        expected.AsSpan(0, 120).Fill(3);
        expected.AsSpan(290, 5).Clear();
        Assert.Equal(expected, disk.ReadAll(0, 400));
    }

    [Fact]
    public void Commit_DropsOverlay()
    {
        var img = PatternBase(2 * Bs);
        byte[] original = (byte[])img.Data.Clone();
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(5, Records.Fill(3000, 0xAA));
        disk.WriteZeroes(Bs, Bs);
        disk.PvmWrite(2 * Bs - 4, [1, 2, 3, 4]);
        disk.PvmBarrier(1);
        disk.Commit(1);
        original[2 * Bs - 4] = 1;
        original[2 * Bs - 3] = 2;
        original[2 * Bs - 2] = 3;
        original[2 * Bs - 1] = 4;
        Assert.Equal(original, disk.ReadAll(0, 2 * Bs));
        Assert.Equal(0, disk.OverlayBytes);
        Assert.Equal(Bs, disk.OverlayBytesMax);
    }

    [Fact]
    public void Commit_EpochWithoutBarrier_ThrowsAndChangesNothing()
    {
        var img = new MemoryBaseImage(Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, [1]);
        Assert.Throws<InvalidOperationException>(() => disk.Commit(1));
        disk.PvmBarrier(1);
        Assert.Throws<InvalidOperationException>(() => disk.Commit(2));
        Assert.Equal(0, img.Data[0]);
        disk.Commit(1);
        Assert.Throws<InvalidOperationException>(() => disk.Commit(1)); // already committed
        Assert.Equal(0ul, disk.PendingCommitEpoch);
    }

    [Fact]
    public void Commit_LaterEpoch_PassesOverAnUncommittedEarlierBarrier()
    {
        var img = new MemoryBaseImage(Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, [1]);
        disk.PvmBarrier(1);
        disk.PvmWrite(1, [2]);
        disk.PvmBarrier(2);
        disk.PvmWrite(2, [3]);
        disk.Commit(2);
        Assert.Equal(new byte[] { 1, 2, 0 }, disk.ReadAll(0, 3));
        Assert.Equal(1, disk.BufferedRecords);
        Assert.Throws<InvalidOperationException>(() => disk.Commit(1));
    }

    [Fact]
    public void Receive_BarrierNotIncreasing_Throws()
    {
        using var disk = new SecondaryDisk(new MemoryBaseImage(Bs), Options());
        disk.PvmBarrier(3);
        Assert.Throws<InvalidDataException>(() => disk.PvmBarrier(3));
        disk.Commit(3);
        Assert.Throws<InvalidDataException>(() => disk.PvmBarrier(2));
        disk.PvmBarrier(4);
    }

    [Fact]
    public void Receive_WriteOutsideDiskOrTruncatedPayload_Throws()
    {
        using var disk = new SecondaryDisk(new MemoryBaseImage(Bs), Options());
        Assert.Throws<InvalidDataException>(() => disk.PvmWrite(Bs - 1, [1, 2]));
        Assert.Throws<InvalidDataException>(() => disk.ReceivePayload(Records.Range(0, Bs + 1, DiskWriteFlags.Trim)));
        byte[] rec = Records.Write(0, [1, 2, 3]);
        Assert.Throws<InvalidDataException>(() => disk.ReceivePayload(rec[..^1]));
        rec[17] ^= 1;
        Assert.Throws<InvalidDataException>(() => disk.ReceivePayload(rec));
        Assert.Equal(0, disk.BufferedRecords);
    }

    private sealed class Segment : System.Buffers.ReadOnlySequenceSegment<byte>
    {
        public Segment(byte[] data, Segment? previous)
        {
            Memory = data;
            if (previous != null)
            {
                RunningIndex = previous.RunningIndex + previous.Memory.Length;
                previous.Next = this;
            }
        }
    }

    [Fact]
    public void ReceivePayload_MultiSegmentSequenceSplittingRecords_BuffersAll()
    {
        var img = new MemoryBaseImage(Bs);
        using var disk = new SecondaryDisk(img, Options());
        byte[] stream = [.. Records.Write(0, [1, 2, 3]), .. Records.Write(3, [4]), .. Records.Barrier(1)];
        var first = new Segment(stream[..10], null);
        var middle = new Segment(stream[10..30], first);
        var last = new Segment(stream[30..], middle);
        Assert.Equal(3, disk.ReceivePayload(new System.Buffers.ReadOnlySequence<byte>(first, 0, last, last.Memory.Length)));
        disk.Commit(1);
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, img.Data[..4]);
    }

    [Fact]
    public void SvmIo_OutsideDisk_ThrowsArgumentOutOfRange()
    {
        using var disk = new SecondaryDisk(new MemoryBaseImage(Bs), Options());
        Assert.Throws<ArgumentOutOfRangeException>(() => disk.Read(Bs - 1, new byte[2]));
        Assert.Throws<ArgumentOutOfRangeException>(() => disk.Write(-1, new byte[1]));
        Assert.Throws<ArgumentOutOfRangeException>(() => disk.WriteZeroes(0, Bs + 1));
        Assert.True(disk.ReadAsync(Bs, new byte[1]).AsTask().IsFaulted);
    }

    [Fact]
    public void Failover_KeepsOverlayMergedIntoBase_DropsPvmWritesAfterLastCommit()
    {
        var img = PatternBase(4 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, Records.Fill(100, 1));
        disk.PvmBarrier(1);
        disk.Commit(1);
        byte[] expected = disk.ReadAll(0, 4 * Bs);

        disk.Write(50, Records.Fill(100, 2)); // SVM, speculative
        disk.WriteZeroes(2 * Bs, Bs);
        disk.PvmWrite(3 * Bs, Records.Fill(100, 3)); // PVM, epoch 2, never committed
        disk.PvmWrite(60, Records.Fill(10, 4));
        expected.AsSpan(50, 100).Fill(2);
        expected.AsSpan(2 * Bs, Bs).Clear();

        DiskFailoverResult r = disk.Failover();
        Assert.Equal(2, r.DroppedRecords);
        Assert.Equal(110, r.DroppedBytes);
        Assert.Equal(0, r.DroppedBarriers);
        Assert.Equal(Bs, r.MergedOverlayBytes);
        Assert.Equal(expected, img.Data);
        Assert.Equal(expected, disk.ReadAll(0, 4 * Bs));
        Assert.True(disk.IsFailedOver);
        Assert.Equal(0, disk.OverlayBytes);
        Assert.Equal(0, disk.BufferBytes);
        Assert.True(img.Flushes > 0);
    }

    [Fact]
    public void Failover_PartialCheckpoint_DiscardedWhole()
    {
        var img = new MemoryBaseImage(2 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, [1]);
        disk.PvmBarrier(1);
        disk.Commit(1);
        // Checkpoint 2's writes and barrier arrive but its commit never happens (primary died before End);
        // checkpoint 3's writes arrive without a barrier.
        disk.PvmWrite(1, [2]);
        disk.PvmBarrier(2);
        disk.PvmWrite(2, [3]);
        DiskFailoverResult r = disk.Failover();
        Assert.Equal(2, r.DroppedRecords);
        Assert.Equal(1, r.DroppedBarriers);
        Assert.Equal(new byte[] { 1, 0, 0 }, img.Data[..3]);
    }

    [Fact]
    public void AfterFailover_SvmWritesGoToBase_RecordsAndCommitsRefused_SecondFailoverNoOp()
    {
        var img = new MemoryBaseImage(2 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.Failover();
        disk.Write(10, [5, 6], fua: true);
        disk.WriteZeroes(11, 1);
        Assert.Equal(new byte[] { 5, 0 }, img.Data[10..12]);
        Assert.Equal(0, disk.OverlayBytes);
        Assert.Throws<InvalidOperationException>(() => disk.PvmWrite(0, [1]));
        Assert.Throws<InvalidOperationException>(() => disk.Commit(1));
        Assert.Equal(default, disk.Failover());
        int flushes = img.Flushes;
        disk.Flush();
        Assert.Equal(flushes + 1, img.Flushes);
    }

    [Fact]
    public void Commit_BaseWriteFailsHalfway_SvmIoRefused_RetryCompletesCorrectly()
    {
        var img = PatternBase(4 * Bs);
        byte[] expected = (byte[])img.Data.Clone();
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(0, Records.Fill(Bs, 0xEE)); // overlay, to be dropped
        disk.PvmWrite(0, Records.Fill(300, 1));
        disk.PvmWrite(100, Records.Fill(300, 2));
        disk.PvmWrite(200, Records.Fill(300, 3));
        disk.PvmBarrier(1);
        disk.PvmWrite(Bs, Records.Fill(10, 4)); // epoch 2
        expected.AsSpan(0, 300).Fill(1);
        expected.AsSpan(100, 300).Fill(2);
        expected.AsSpan(200, 300).Fill(3);

        img.FailWriteAt = 2;
        var e = Assert.Throws<DiskCommitException>(() => disk.Commit(1));
        Assert.Equal("apply", e.Step);
        Assert.Equal(1, e.RecordIndex);
        Assert.Equal(1ul, e.Epoch);
        Assert.Equal(1ul, disk.PendingCommitEpoch);
        Assert.Equal(0ul, disk.CommittedEpoch);
        Assert.Throws<InvalidOperationException>(() => disk.Read(0, new byte[1]));
        Assert.Throws<InvalidOperationException>(() => disk.Write(0, new byte[1]));

        img.FailNextFlush = true;
        e = Assert.Throws<DiskCommitException>(() => disk.Commit(1));
        Assert.Equal("flush", e.Step);

        disk.Commit(1);
        Assert.Equal(0ul, disk.PendingCommitEpoch);
        Assert.Equal(1ul, disk.CommittedEpoch);
        Assert.Equal(expected, disk.ReadAll(0, 4 * Bs));
        Assert.Equal(expected, img.Data);
        Assert.Equal(0, disk.OverlayBytes);
        Assert.Equal(1, disk.BufferedRecords); // the epoch-2 write stays

        disk.PvmBarrier(2);
        disk.Commit(2);
        expected.AsSpan(Bs, 10).Fill(4);
        Assert.Equal(expected, img.Data);
    }

    [Fact]
    public void Commit_FailedThenLaterEpochCommitted_AppliesBoth_EarlierRefused()
    {
        var img = new MemoryBaseImage(Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, [1, 1]);
        disk.PvmBarrier(1);
        disk.PvmWrite(1, [2]);
        disk.PvmBarrier(2);
        img.FailWriteAt = 1;
        Assert.Throws<DiskCommitException>(() => disk.Commit(2));
        Assert.Throws<InvalidOperationException>(() => disk.Commit(1));
        disk.Commit(2);
        Assert.Equal(new byte[] { 1, 2 }, img.Data[..2]);
    }

    [Fact]
    public void Failover_WithPendingCommit_CompletesTheCommitFirst()
    {
        var img = new MemoryBaseImage(Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.PvmWrite(0, [1, 1, 1]);
        disk.PvmWrite(1, [2]);
        disk.PvmBarrier(1);
        disk.PvmWrite(2, [9]); // after the barrier: dropped
        disk.Write(100, [7]); // SVM overlay: dropped by the completed commit
        img.FailWriteAt = 2;
        Assert.Throws<DiskCommitException>(() => disk.Commit(1));
        DiskFailoverResult r = disk.Failover();
        Assert.Equal(1ul, r.CompletedCommitEpoch);
        Assert.Equal(1, r.DroppedRecords);
        Assert.Equal(new byte[] { 1, 2, 1 }, img.Data[..3]);
        Assert.Equal(0, img.Data[100]);
    }

    [Fact]
    public void Failover_MergeFails_ReadsStayCorrect_RetryCompletes()
    {
        var img = PatternBase(4 * Bs);
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(0, Records.Fill(Bs, 1));
        disk.Write(2 * Bs, Records.Fill(Bs, 2));
        disk.Write(3 * Bs + 7, Records.Fill(9, 3));
        disk.PvmWrite(Bs, Records.Fill(10, 4));
        byte[] view = disk.ReadAll(0, 4 * Bs);

        img.FailWriteAt = 2;
        var e = Assert.Throws<DiskFailoverException>(() => disk.Failover());
        Assert.Equal("merge", e.Step);
        Assert.False(disk.IsFailedOver);
        Assert.Equal(0, disk.BufferedRecords);
        Assert.Equal(view, disk.ReadAll(0, 4 * Bs));

        disk.Failover();
        Assert.Equal(view, img.Data);
        Assert.Equal(view, disk.ReadAll(0, 4 * Bs));
    }

    [Fact]
    public void Sizes_CurrentAndPeak_ReportedAndResetByCommit()
    {
        using var disk = new SecondaryDisk(new MemoryBaseImage(8 * Bs), Options());
        disk.Write(0, new byte[3 * Bs]);
        disk.PvmWrite(0, new byte[5000]);
        disk.ReceivePayload(Records.Range(0, 8 * Bs, DiskWriteFlags.Trim));
        Assert.Equal(3 * Bs, disk.OverlayBytes);
        Assert.Equal(5000, disk.BufferBytes);
        Assert.Equal(2, disk.BufferedRecords);
        disk.PvmBarrier(1);
        disk.Commit(1);
        Assert.Equal(0, disk.OverlayBytes);
        Assert.Equal(0, disk.BufferBytes);
        Assert.Equal(3 * Bs, disk.OverlayBytesMax);
        Assert.Equal(5000, disk.BufferBytesMax);
        disk.ResetPeaks();
        Assert.Equal(0, disk.OverlayBytesMax);
        Assert.Equal(0, disk.BufferBytesMax);
    }

    [Fact]
    public void Spill_LimitZero_EverythingInFiles_SameResults_FilesTruncatedAtCommit()
    {
        var img = PatternBase(8 * Bs);
        var memImg = PatternBase(8 * Bs);
        using var spill = new SecondaryDisk(img, Options(overlayLimit: 0, bufferLimit: 0));
        using var mem = new SecondaryDisk(memImg, Options());
        foreach (SecondaryDisk d in new[] { spill, mem })
        {
            d.Write(100, Records.Fill(2 * Bs, 1));
            d.PvmWrite(Bs + 3, Records.Fill(Bs, 2));
            d.PvmBarrier(1);
            d.PvmWrite(5 * Bs, Records.Fill(10, 3));
        }
        Assert.Equal(3 * Bs, spill.OverlaySpilledBytes);
        Assert.Equal(Bs + 10, spill.BufferSpilledBytes);
        Assert.Equal(0, mem.OverlaySpilledBytes);
        Assert.True(File.Exists(spill.SpillPaths.Overlay));
        Assert.Equal(mem.ReadAll(0, 8 * Bs), spill.ReadAll(0, 8 * Bs));
        spill.Commit(1);
        mem.Commit(1);
        Assert.Equal(0, spill.OverlaySpilledBytes);
        Assert.Equal(10, spill.BufferSpilledBytes);
        Assert.Equal(mem.ReadAll(0, 8 * Bs), spill.ReadAll(0, 8 * Bs));
        spill.PvmBarrier(2);
        mem.PvmBarrier(2);
        spill.Commit(2);
        mem.Commit(2);
        Assert.Equal(memImg.Data, img.Data);
        string path = spill.SpillPaths.Overlay!;
        spill.Dispose();
        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Spill_LimitInsideABlock_SplitsBlockBetweenMemoryAndFile()
    {
        var img = new MemoryBaseImage(4 * Bs);
        using var disk = new SecondaryDisk(img, Options(overlayLimit: Bs + 100, bufferLimit: 50));
        var data = new byte[3 * Bs];
        new Random(3).NextBytes(data);
        disk.Write(0, data);
        disk.PvmWrite(0, data[..200]);
        Assert.Equal(data, disk.ReadAll(0, 3 * Bs));
        Assert.Equal(2 * Bs - 100, disk.OverlaySpilledBytes);
        Assert.Equal(150, disk.BufferSpilledBytes);
        disk.PvmBarrier(1);
        disk.Commit(1);
        Assert.Equal(data[..200], img.Data[..200]);
    }

    [Fact]
    public void DiskSizeNotAMultipleOfTheBlock_LastPartialBlockWorks()
    {
        var img = PatternBase(2 * Bs + 100);
        byte[] expected = (byte[])img.Data.Clone();
        using var disk = new SecondaryDisk(img, Options());
        disk.Write(2 * Bs + 90, Records.Fill(10, 1));
        disk.WriteZeroes(2 * Bs, 5);
        expected.AsSpan(2 * Bs + 90, 10).Fill(1);
        expected.AsSpan(2 * Bs, 5).Clear();
        Assert.Equal(expected, disk.ReadAll(0, 2 * Bs + 100));
        disk.Failover();
        Assert.Equal(expected, img.Data);
    }

    [Fact]
    public async Task RawFile_CommitAndFailover_LandInTheImageFile()
    {
        string path = Path.Combine(_dir, "base.raw");
        RawFileImage.Create(path, 3 * Bs).Dispose();
        using (SecondaryDisk disk = SecondaryDisk.Open(path, Options(overlayLimit: 0, bufferLimit: 0)))
        {
            disk.PvmWrite(10, [1, 2, 3]);
            disk.ReceivePayload(Records.Range(Bs, Bs, DiskWriteFlags.Zero));
            disk.PvmBarrier(1);
            disk.Commit(1);
            await disk.WriteAsync(2 * Bs + 1, new byte[] { 7 }, fua: false);
            disk.PvmWrite(11, [9]);
            disk.Failover();
        }
        byte[] file = File.ReadAllBytes(path);
        Assert.Equal(3 * Bs, file.Length);
        Assert.Equal(new byte[] { 1, 2, 3 }, file[10..13]);
        Assert.Equal(7, file[2 * Bs + 1]);
    }

    [Fact]
    public async Task Concurrent_SvmReadsAndWrites_WithRecordsAndCommits_SeeWholeBlocks()
    {
        // Every write fills a whole block with one value, so a torn read would show two values in a block.
        const int Blocks = 16;
        using var disk = new SecondaryDisk(new MemoryBaseImage(Blocks * Bs), Options(overlayLimit: 4 * Bs, bufferLimit: 4 * Bs));
        // Fixed amounts of work rather than a time window, so a loaded machine only makes it slower.
        Task reader = Task.Run(async () =>
        {
            var rnd = new Random(1);
            var buf = new byte[Bs];
            for (int i = 0; i < 3000; i++)
            {
                await disk.ReadAsync((long)rnd.Next(Blocks) * Bs, buf);
                Assert.All(buf, b => Assert.Equal(buf[0], b));
            }
        });
        Task svm = Task.Run(async () =>
        {
            var rnd = new Random(2);
            var block = new byte[Bs];
            for (int i = 0; i < 2000; i++)
            {
                Array.Fill(block, (byte)rnd.Next(1, 255));
                await disk.WriteAsync((long)rnd.Next(Blocks) * Bs, block, false);
            }
        });
        Task pvm = Task.Run(() =>
        {
            var rnd = new Random(3);
            ulong epoch = 0;
            for (int i = 0; i < 1000; i++)
            {
                disk.PvmWrite((long)rnd.Next(Blocks) * Bs, Records.Fill(Bs, (byte)rnd.Next(1, 255)));
                if (rnd.Next(4) == 0)
                {
                    disk.PvmBarrier(++epoch);
                    disk.Commit(epoch);
                }
            }
        });
        await Task.WhenAll(reader, svm, pvm).WaitAsync(TimeSpan.FromSeconds(60));
    }
}
